//! Records at rest are compressed, then sealed with AES-256-GCM. The associated data names
//! the record (`launch:{id}`, …), so a sealed value copied into another row fails to open:
//! one patient's record can never be read back as another's.

use std::io::{Read, Write};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

use crate::StoreError;

/// The format byte in front of every sealed value: deflate, then AES-256-GCM, 96-bit nonce.
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;
/// Largest record opened, after decompression: a bound on what a damaged row can cost.
const MAX_PLAIN: u64 = 512 * 1024 * 1024;

/// The store's key, with the cipher built once.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new(key.into()) }
    }

    /// A key given as base64 (standard or URL-safe) of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| StoreError::Key("the store key is not base64".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| StoreError::Key("the store key must be 32 bytes (256 bits)".into()))?;
        Ok(Self::new(&key))
    }

    /// The key in `path`, generated there (readable by the owner only) when the file is
    /// absent.
    pub fn from_file_or_generate(path: &Path) -> Result<Self, StoreError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                write_private(path, &base64::engine::general_purpose::STANDARD.encode(key))?;
                Ok(Self::new(&key))
            }
            Err(e) => Err(StoreError::Key(format!("{}: {e}", path.display()))),
        }
    }

    /// `plain` compressed and sealed for the record named `aad`.
    pub fn seal(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(plain).map_err(|e| StoreError::Seal(e.to_string()))?;
        let packed = encoder.finish().map_err(|e| StoreError::Seal(e.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: &packed, aad: aad.as_bytes() })
            .map_err(|_| StoreError::Seal("encryption failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plain bytes of a value sealed for `aad`; fails on another key, another record's
    /// value, or any change to the bytes.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let unreadable = || StoreError::Seal(format!("the stored record {aad} cannot be opened"));
        let (&format, rest) = sealed.split_first().ok_or_else(unreadable)?;
        if format != FORMAT || rest.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| unreadable())?;
        let packed = self
            .cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: body, aad: aad.as_bytes() })
            .map_err(|_| unreadable())?;
        let mut plain = Vec::new();
        flate2::read::DeflateDecoder::new(packed.as_slice())
            .take(MAX_PLAIN)
            .read_to_end(&mut plain)
            .map_err(|_| unreadable())?;
        Ok(plain)
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), StoreError> {
    let fail = |e: std::io::Error| StoreError::Key(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sealed_record_opens_only_under_its_own_name_and_key() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal("launch:a", b"the patient's record").unwrap();
        assert_eq!(sealer.open("launch:a", &sealed).unwrap(), b"the patient's record");
        assert!(sealer.open("launch:b", &sealed).is_err(), "moved to another row");
        assert!(Sealer::new(&[8; 32]).open("launch:a", &sealed).is_err(), "another key");
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(sealer.open("launch:a", &changed).is_err(), "a changed byte");
        assert!(sealer.open("launch:a", &[]).is_err());
        assert!(!sealed.windows(7).any(|w| w == b"patient"), "nothing in clear");
    }

    #[test]
    fn a_key_file_is_generated_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let first = Sealer::from_file_or_generate(&path).unwrap();
        let sealed = first.seal("x", b"y").unwrap();
        let second = Sealer::from_file_or_generate(&path).unwrap();
        assert_eq!(second.open("x", &sealed).unwrap(), b"y");
        assert!(Sealer::from_base64("c2hvcnQ=").is_err());
    }
}
