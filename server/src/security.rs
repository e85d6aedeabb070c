//! Security headers on every response, and the same-origin check on server function calls.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The headers, computed once from the configuration.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    csp: HeaderValue,
    hsts: bool,
    /// Our own origin (`scheme://host:port`), for the server-function origin check.
    origin: String,
}

impl SecurityHeaders {
    /// `frame_ancestors`: the configured EHR origins allowed to frame the app.
    pub fn new(public_url: &url::Url, frame_ancestors: &[String]) -> Self {
        let ancestors = if frame_ancestors.is_empty() {
            "'none'".to_owned()
        } else {
            // Origins come from our own configuration; keep only characters an origin has.
            frame_ancestors
                .iter()
                .filter(|o| o.chars().all(|c| c.is_ascii_alphanumeric() || ":/.-_[]*".contains(c)))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let csp = format!(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}"
        );
        Self {
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
            hsts: public_url.scheme() == "https",
            origin: public_url.origin().ascii_serialization(),
        }
    }
}

/// Adds CSP, `nosniff`, `no-referrer` (launch and callback URLs carry codes and state),
/// HSTS on https, `no-store` on anything that is not a static asset, and long-lived caching
/// for fingerprinted assets.
pub async fn headers(
    State(config): State<Arc<SecurityHeaders>>,
    request: Request,
    next: Next,
) -> Response {
    let dynamic = is_dynamic(request.uri().path());
    let fingerprinted = crate::frontend::is_fingerprinted(request.uri().path());
    let mut response = next.run(request).await;
    let immutable = fingerprinted && response.status().is_success();
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, config.csp.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    if config.hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    if dynamic {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    } else if immutable {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
    } else if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

fn is_dynamic(path: &str) -> bool {
    path.starts_with("/api/") || path == "/launch" || path == "/callback"
}

/// Server functions accept only same-origin calls: a POST carrying another site's `Origin`
/// is refused before it reaches any function.
pub async fn same_origin(
    State(config): State<Arc<SecurityHeaders>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    if request.method() == Method::POST {
        let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if origin.is_some_and(|o| o != config.origin) {
            return (StatusCode::FORBIDDEN, "cross-origin request refused").into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_has_the_required_directives() {
        let url = url::Url::parse("https://mh.example").unwrap_or_else(|_| unreachable!());
        let h = SecurityHeaders::new(
            &url,
            &["https://ehr.example".into(), "bad\"; script-src *".into()],
        );
        let csp = h.csp.to_str().unwrap_or_default().to_owned();
        assert!(csp.starts_with("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'"));
        assert!(csp.ends_with("frame-ancestors https://ehr.example"));
        assert!(h.hsts);
        let none = SecurityHeaders::new(&url, &[]);
        assert!(none.csp.to_str().unwrap_or_default().ends_with("frame-ancestors 'none'"));
    }
}
