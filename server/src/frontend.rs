//! The Trunk-built app: static files, `index.html` for every app route (deep links), and
//! launch error pages (the app's page, told the error code by a meta tag).

use std::path::{Path, PathBuf};

use api::LaunchErrorCode;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
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

    /// Static files with `index.html` for anything else (app routes such as `/review/…`).
    pub fn service(&self) -> ServeDir<ServeFile> {
        ServeDir::new(&self.dir).fallback(ServeFile::new(self.dir.join("index.html")))
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
