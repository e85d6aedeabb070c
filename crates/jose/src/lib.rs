//! Signing keys and JWTs for Member History.
//!
//! One small place for the JOSE work every other crate needs: our ES384 (or RS384)
//! signing key (generated on first start and persisted), the public JWKS we publish at
//! `/.well-known/jwks.json`, signing JWTs with `kid`/`typ`/`jku`, and verifying JWTs
//! against a peer's JWKS with an algorithm allow-list. It wraps `jsonwebtoken`; nothing
//! cryptographic is written here.

use std::path::Path;

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use jsonwebtoken::jwk;
pub use jsonwebtoken::Algorithm as JwsAlgorithm;

/// Errors from key handling and JWT processing. Messages never include key material or token contents.
#[derive(Debug, thiserror::Error)]
pub enum JoseError {
    #[error("the signing key file {path} could not be read or written: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the signing key is not a valid {expected} private key in PKCS#8 PEM form")]
    InvalidKey { expected: &'static str },
    #[error("JWT algorithm {0:?} is not accepted here")]
    AlgorithmNotAllowed(Algorithm),
    #[error("the token header has no `kid` and the issuer publishes no {0:?} verification key")]
    NoMatchingKey(Algorithm),
    #[error("no key with kid `{0}` in the issuer's JWKS")]
    UnknownKid(String),
    #[error("the key with kid `{0}` cannot be used for verification")]
    UnusableKey(String),
    #[error("the token is not a valid JWT: {0}")]
    Malformed(String),
    #[error("the token was rejected: {0}")]
    Rejected(String),
}

/// The algorithms Member History signs with and accepts. SMART App Launch and CDS Hooks both
/// name ES384 and RS384; HMAC and `none` are never accepted.
pub const ACCEPTED_ALGORITHMS: [Algorithm; 2] = [Algorithm::ES384, Algorithm::RS384];

/// What an OpenID Connect id_token may be signed with: SMART requires EHRs to support RS256.
pub const ID_TOKEN_ALGORITHMS: [Algorithm; 4] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::ES256, Algorithm::ES384];

/// A private signing key with its public JWK and key id (the RFC 7638 thumbprint).
#[derive(Clone)]
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    public: Jwk,
    pem: String,
}

impl std::fmt::Debug for SigningKey {
    // The private key is deliberately not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("alg", &self.alg).field("kid", &self.kid).finish()
    }
}

impl SigningKey {
    /// A fresh P-384 key for ES384.
    pub fn generate_es384() -> Result<Self, JoseError> {
        use p384::pkcs8::{EncodePrivateKey, LineEnding};
        let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| JoseError::InvalidKey { expected: "P-384 EC" })?;
        Self::from_pem(&pem, Algorithm::ES384)
    }

    /// A fresh 2048-bit RSA key for RS384.
    pub fn generate_rs384() -> Result<Self, JoseError> {
        Self::generate_rsa(Algorithm::RS384)
    }

    /// A fresh 2048-bit RSA key for `alg` (RS256 or RS384).
    fn generate_rsa(alg: Algorithm) -> Result<Self, JoseError> {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let pem = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .ok()
            .and_then(|k| k.to_pkcs8_pem(LineEnding::LF).ok())
            .ok_or(JoseError::InvalidKey { expected: "RSA" })?;
        Self::from_pem(&pem, alg)
    }

    /// A fresh key for `alg` (ES384, RS384, or RS256 — the OpenID Connect default, which
    /// EHRs sign id_tokens with).
    pub fn generate(alg: Algorithm) -> Result<Self, JoseError> {
        match alg {
            Algorithm::ES384 => Self::generate_es384(),
            Algorithm::RS384 | Algorithm::RS256 => Self::generate_rsa(alg),
            other => Err(JoseError::AlgorithmNotAllowed(other)),
        }
    }

    /// Loads a PKCS#8 PEM private key for `alg` (ES384, RS384 or RS256).
    pub fn from_pem(pem: &str, alg: Algorithm) -> Result<Self, JoseError> {
        let encoding = match alg {
            Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes())
                .map_err(|_| JoseError::InvalidKey { expected: "P-384 EC" })?,
            Algorithm::RS384 | Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|_| JoseError::InvalidKey { expected: "RSA" })?,
            other => return Err(JoseError::AlgorithmNotAllowed(other)),
        };
        let mut public = Jwk::from_encoding_key(&encoding, alg)
            .map_err(|_| JoseError::InvalidKey { expected: "EC or RSA" })?;
        let kid = public
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| JoseError::InvalidKey { expected: "EC or RSA" })?;
        public.common.key_id = Some(kid.clone());
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        public.common.key_algorithm = Some(alg.into());
        Ok(Self { alg, kid, encoding, public, pem: pem.to_owned() })
    }

    /// Reads the key at `path`, or generates one and writes it there (mode 0600) when the file
    /// does not exist yet, so the published JWKS stays stable across restarts.
    pub fn load_or_generate(path: &Path, alg: Algorithm) -> Result<Self, JoseError> {
        let io_err = |source| JoseError::KeyFile { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_pem(&pem, alg),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate(alg)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io_err)?;
                }
                write_private(path, key.pem.as_bytes()).map_err(io_err)?;
                Ok(key)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK (`kid`, `use: sig`, `alg`).
    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }

    /// A JWKS holding only this key's public half.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.public.clone()] }
    }

    /// Signs `claims` as a JWT with header `alg`, `kid`, `typ: JWT` and, when given, `jku`.
    pub fn sign<C: Serialize>(&self, claims: &C, jku: Option<&str>) -> Result<String, JoseError> {
        self.sign_with(claims, jku, true)
    }

    /// Signs `claims` with a header that has no `kid`, as an OpenID Connect issuer with a
    /// single signing key may (the sandbox EHR does so on request).
    pub fn sign_without_kid<C: Serialize>(&self, claims: &C) -> Result<String, JoseError> {
        self.sign_with(claims, None, false)
    }

    fn sign_with<C: Serialize>(
        &self,
        claims: &C,
        jku: Option<&str>,
        kid: bool,
    ) -> Result<String, JoseError> {
        let mut header = Header::new(self.alg);
        header.typ = Some("JWT".into());
        header.kid = kid.then(|| self.kid.clone());
        header.jku = jku.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| JoseError::Malformed(e.to_string()))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A JWKS publication built from our keys: what `/.well-known/jwks.json` serves.
pub fn publish(keys: &[&SigningKey]) -> JwkSet {
    JwkSet { keys: keys.iter().map(|k| k.public.clone()).collect() }
}

/// The header of a JWT, read without verifying it (to find `kid`, `alg`, `jku` before verification).
pub fn peek_header(token: &str) -> Result<Header, JoseError> {
    jsonwebtoken::decode_header(token).map_err(|e| JoseError::Malformed(e.to_string()))
}

/// The claims of a JWT, read WITHOUT verifying it: only to find out who claims to have signed
/// it (`iss`) before looking up that party's keys. Never trust what this returns.
pub fn peek_claims<C: DeserializeOwned>(token: &str) -> Result<C, JoseError> {
    jsonwebtoken::dangerous::insecure_decode::<C>(token)
        .map(|d| d.claims)
        .map_err(|e| JoseError::Malformed(e.to_string()))
}

/// What a verifier expects of a JWT besides a good signature.
#[derive(Debug, Clone, Default)]
pub struct Expectations<'a> {
    /// Accepted `iss` values; empty accepts any (the caller checks).
    pub issuers: &'a [&'a str],
    /// Accepted `aud` values; empty skips the audience check.
    pub audiences: &'a [&'a str],
    /// Claims that must be present (`exp` is always required).
    pub required: &'a [&'a str],
    /// Accepted algorithms; empty means [`ACCEPTED_ALGORITHMS`]. HMAC and `none` never pass.
    pub algorithms: &'a [Algorithm],
    /// Clock skew allowed on `exp`, in seconds; `None` means 30.
    pub leeway: Option<u64>,
}

/// Verifies `token` against `jwks`: an allowed asymmetric algorithm, the key named by `kid`
/// or, when the header has none (OpenID Connect allows that for an issuer with one signing
/// key), each of the issuer's keys that fits the algorithm in turn; `exp` (30 s leeway unless
/// told otherwise), and the expectations. Returns the claims.
pub fn verify<C: DeserializeOwned>(
    token: &str,
    jwks: &JwkSet,
    expect: &Expectations<'_>,
) -> Result<C, JoseError> {
    let header = peek_header(token)?;
    let allowed: &[Algorithm] =
        if expect.algorithms.is_empty() { &ACCEPTED_ALGORITHMS } else { expect.algorithms };
    let asymmetric = !matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    if !asymmetric || !allowed.contains(&header.alg) {
        return Err(JoseError::AlgorithmNotAllowed(header.alg));
    }
    let validation = validation(header.alg, expect);
    if let Some(kid) = header.kid.as_deref() {
        let jwk = jwks.find(kid).ok_or_else(|| JoseError::UnknownKid(kid.to_owned()))?;
        if !fits(jwk, header.alg) {
            return Err(JoseError::UnusableKey(kid.to_owned()));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| JoseError::UnusableKey(kid.to_owned()))?;
        return decode(token, &key, &validation);
    }
    let mut tried = false;
    for key in jwks.keys.iter().filter(|k| fits(k, header.alg)) {
        let Ok(key) = DecodingKey::from_jwk(key) else { continue };
        tried = true;
        match jsonwebtoken::decode::<C>(token, &key, &validation) {
            Ok(data) => return Ok(data.claims),
            // Another key may have signed it: only a bad signature moves on to the next key.
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {}
            Err(e) => return Err(JoseError::Rejected(e.to_string())),
        }
    }
    if tried {
        Err(JoseError::Rejected("InvalidSignature".into()))
    } else {
        Err(JoseError::NoMatchingKey(header.alg))
    }
}

/// Reads a JWKS document tolerantly: a key this library cannot parse (an unknown `kty`, a
/// curve it lacks) is skipped rather than failing the set, as JWKS consumers must.
pub fn parse_jwks(body: &[u8]) -> Result<JwkSet, JoseError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| JoseError::Malformed(format!("not a JWKS document: {e}")))?;
    let keys = raw
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .filter(|k| !matches!(k.algorithm, jsonwebtoken::jwk::AlgorithmParameters::Other(_)))
        .collect();
    Ok(JwkSet { keys })
}

/// Whether `jwk` may verify a signature made with `alg`: its type (and curve) fit, its `alg`
/// when given is that algorithm (a key without `alg` is used by `kty`), and it is not an
/// encryption-only key.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyOperations};
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        _ => false,
    };
    let alg_ok = jwk.common.key_algorithm.is_none_or(|a| a == alg.into());
    let use_ok = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
    let ops_ok =
        jwk.common.key_operations.as_ref().is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    kind && alg_ok && use_ok && ops_ok
}

fn validation(alg: Algorithm, expect: &Expectations<'_>) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = expect.leeway.unwrap_or(30);
    let mut required = vec!["exp"];
    required.extend_from_slice(expect.required);
    validation.set_required_spec_claims(&required);
    if expect.issuers.is_empty() {
        validation.iss = None;
    } else {
        validation.set_issuer(expect.issuers);
    }
    if expect.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(expect.audiences);
    }
    validation
}

fn decode<C: DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<C, JoseError> {
    jsonwebtoken::decode::<C>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| JoseError::Rejected(e.to_string()))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A fresh random JWT id.
pub fn new_jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Claims {
        iss: String,
        aud: String,
        exp: u64,
        jti: String,
    }

    fn claims() -> Claims {
        Claims { iss: "me".into(), aud: "you".into(), exp: now() + 60, jti: new_jti() }
    }

    #[test]
    fn es384_round_trip_with_kid_typ_jku() {
        let key = SigningKey::generate_es384().unwrap();
        let token = key.sign(&claims(), Some("https://app.example/.well-known/jwks.json")).unwrap();
        let header = peek_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES384);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(header.jku.as_deref(), Some("https://app.example/.well-known/jwks.json"));
        let got: Claims = verify(
            &token,
            &key.jwks(),
            &Expectations {
                issuers: &["me"],
                audiences: &["you"],
                required: &["jti"],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(got.iss, "me");
    }

    fn id_token_expectations() -> Expectations<'static> {
        Expectations { algorithms: &ID_TOKEN_ALGORITHMS, ..Default::default() }
    }

    /// A JWKS as a loose issuer publishes it: no `kid`, no `alg`, no `use`.
    fn bare(key: &SigningKey) -> JwkSet {
        let mut jwk = key.public_jwk().clone();
        jwk.common = Default::default();
        JwkSet { keys: vec![jwk] }
    }

    #[test]
    fn token_without_kid_is_checked_against_each_fitting_key() {
        let signer = SigningKey::generate(Algorithm::RS256).unwrap();
        let other_rsa = SigningKey::generate_rs384().unwrap();
        let ec = SigningKey::generate_es384().unwrap();
        let token = signer.sign_without_kid(&claims()).unwrap();
        assert!(peek_header(&token).unwrap().kid.is_none());
        // One key, without kid or alg: used by its type.
        assert!(verify::<Claims>(&token, &bare(&signer), &id_token_expectations()).is_ok());
        // Several keys: the EC key is skipped, the wrong RSA key fails, the right one passes.
        let mut set = bare(&ec);
        set.keys.extend(bare(&other_rsa).keys);
        set.keys.extend(signer.jwks().keys);
        assert!(verify::<Claims>(&token, &set, &id_token_expectations()).is_ok());
        // No key of the right type at all.
        assert!(matches!(
            verify::<Claims>(&token, &ec.jwks(), &id_token_expectations()),
            Err(JoseError::NoMatchingKey(Algorithm::RS256))
        ));
        // Keys of the right type that did not sign it.
        assert!(matches!(
            verify::<Claims>(&token, &bare(&other_rsa), &id_token_expectations()),
            Err(JoseError::Rejected(_))
        ));
    }

    #[test]
    fn key_with_another_alg_or_for_encryption_is_not_used() {
        let signer = SigningKey::generate(Algorithm::RS256).unwrap();
        let token = signer.sign(&claims(), None).unwrap();
        // The published JWK says RS256; a token claiming RS384 with that kid is refused.
        let mut relabelled = signer.jwks();
        relabelled.keys[0].common.key_algorithm = Some(Algorithm::RS384.into());
        assert!(matches!(
            verify::<Claims>(&token, &relabelled, &id_token_expectations()),
            Err(JoseError::UnusableKey(_))
        ));
        let mut encryption = bare(&signer);
        encryption.keys[0].common.public_key_use = Some(PublicKeyUse::Encryption);
        let token = signer.sign_without_kid(&claims()).unwrap();
        assert!(matches!(
            verify::<Claims>(&token, &encryption, &id_token_expectations()),
            Err(JoseError::NoMatchingKey(_))
        ));
    }

    #[test]
    fn jwks_with_unknown_keys_is_read_tolerantly() {
        let key = SigningKey::generate_es384().unwrap();
        let mut doc = serde_json::to_value(key.jwks()).unwrap();
        doc["keys"].as_array_mut().unwrap().insert(0, serde_json::json!({"kty": "weird", "x": 1}));
        let set = parse_jwks(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert!(parse_jwks(b"[]").is_err());
    }

    #[test]
    fn rs384_round_trip() {
        let key = SigningKey::generate_rs384().unwrap();
        let token = key.sign(&claims(), None).unwrap();
        let got: Result<Claims, _> = verify(&token, &key.jwks(), &Expectations::default());
        assert!(got.is_ok());
    }

    #[test]
    fn published_jwk_is_public_only_and_marked_for_signing() {
        let key = SigningKey::generate_es384().unwrap();
        let json = serde_json::to_value(key.jwks()).unwrap();
        let jwk = &json["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-384");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], "ES384");
        assert_eq!(jwk["kid"], key.kid());
        assert!(jwk.get("d").is_none(), "private part must never be published");
    }

    #[test]
    fn wrong_key_audience_and_expiry_are_refused() {
        let key = SigningKey::generate_es384().unwrap();
        let other = SigningKey::generate_es384().unwrap();
        let token = key.sign(&claims(), None).unwrap();
        assert!(matches!(
            verify::<Claims>(&token, &other.jwks(), &Expectations::default()),
            Err(JoseError::UnknownKid(_))
        ));
        assert!(verify::<Claims>(
            &token,
            &key.jwks(),
            &Expectations { audiences: &["someone-else"], ..Default::default() }
        )
        .is_err());
        let expired = Claims { exp: now() - 3600, ..claims() };
        let token = key.sign(&expired, None).unwrap();
        assert!(verify::<Claims>(&token, &key.jwks(), &Expectations::default()).is_err());
    }

    #[test]
    fn hmac_tokens_are_refused() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        let key = SigningKey::generate_es384().unwrap();
        assert!(matches!(
            verify::<Claims>(&token, &key.jwks(), &Expectations::default()),
            Err(JoseError::AlgorithmNotAllowed(Algorithm::HS256))
        ));
    }

    #[test]
    fn key_is_persisted_and_reloaded_with_the_same_kid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.pem");
        let first = SigningKey::load_or_generate(&path, Algorithm::ES384).unwrap();
        let second = SigningKey::load_or_generate(&path, Algorithm::ES384).unwrap();
        assert_eq!(first.kid(), second.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
