//! The Trunk-built app: static files, `index.html` for every app route (deep links), and
//! launch error pages (the app's page, told the error code by a meta tag).

use std::path::{Path, PathBuf};

use api::LaunchErrorCode;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use tower::Layer;
use tower_http::compression::{Compression, CompressionLayer};
use tower_http::services::{ServeDir, ServeFile};

#[derive(Debug, Clone)]
pub struct Frontend {
    dir: PathBuf,
    index: Option<String>,
}

impl Frontend {
    /// Reads `dir/index.html` once. A missing build is reported but not fatal: the server
    /// routes and the API still work (the tests without a browser use that).
    pub fn load(dir: &Path) -> Self {
        let index = std::fs::read_to_string(dir.join("index.html")).ok();
        if index.is_none() {
            tracing::warn!(dir = %dir.display(), "no built app found (run `trunk build --release`); pages will say so");
        }
        Self { dir: dir.to_owned(), index }
    }

    pub fn is_built(&self) -> bool {
        self.index.is_some()
    }

    /// Static files with `index.html` for anything else (app routes such as `/review/…`),
    /// gzipped for browsers that accept it (the WASM shrinks to about 40 %).
    pub fn service(&self) -> Compression<ServeDir<ServeFile>> {
        CompressionLayer::new()
            .layer(ServeDir::new(&self.dir).fallback(ServeFile::new(self.dir.join("index.html"))))
    }

    /// The launch error page for `code`, with its HTTP status.
    pub fn launch_error(&self, code: LaunchErrorCode) -> Response {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        let meta = format!(r#"<meta name="mh-launch-error" content="{}">"#, code.as_str());
        let body = match &self.index {
            Some(index) => index.replacen("</head>", &format!("{meta}</head>"), 1),
            None => fallback_page(code, &meta),
        };
        let mut response = (status, Html(body)).into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Whether `path` names a file Trunk fingerprinted (`app-0123456789abcdef_bg.wasm`,
/// `main-0123456789abcdef.css`): its content never changes under that name, so browsers may
/// keep it for good.
pub fn is_fingerprinted(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or_default();
    let stem = file.split('.').next().unwrap_or_default();
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    file.contains('.')
        && stem.rsplit_once('-').is_some_and(|(name, hash)| {
            !name.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// A plain page with the same words, for when the app is not built.
fn fallback_page(code: LaunchErrorCode, meta: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>{meta}</head>\
         <body><h1>{title}</h1><p>{what}</p><p>What to do: {todo}</p></body></html>",
        title = code.title(),
        what = code.what_happened(),
        todo = code.what_to_do(),
    )
}

#[cfg(test)]
mod tests {
    use super::is_fingerprinted;

    #[test]
    fn trunk_fingerprints_are_recognised() {
        assert!(is_fingerprinted("/app-c4048cf648318e39_bg.wasm"));
        assert!(is_fingerprinted("/app-c4048cf648318e39.js"));
        assert!(is_fingerprinted("/main-fb0017324368d284.css"));
        assert!(!is_fingerprinted("/boot.js"));
        assert!(!is_fingerprinted("/index.html"));
        assert!(!is_fingerprinted("/review/launch-0123456789abcdef"));
        assert!(!is_fingerprinted("/-0123456789abcdef.js"));
        assert!(!is_fingerprinted("/app-c4048cf648318e3g.js"));
    }
}
