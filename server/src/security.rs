//! Security headers on every response, and the CSRF rule for server function calls.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The headers, computed once from the configuration.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    csp: HeaderValue,
    hsts: bool,
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

/// Why a state-changing request was refused before it reached any server function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRefusal {
    /// `Sec-Fetch-Site` names another origin, or `Origin` is not ours.
    CrossOrigin,
    /// Neither `Sec-Fetch-Site` nor `Origin`: a browser sends one of them on every POST, so
    /// the caller is not our page.
    NoOriginHeaders,
    /// A body type our server functions do not take (`text/plain` is what a cross-site form
    /// can send without asking).
    ContentType,
}

impl CsrfRefusal {
    pub fn response(self) -> Response {
        let (status, message) = match self {
            CsrfRefusal::CrossOrigin => {
                (StatusCode::FORBIDDEN, "Cross-origin request refused: open Member History from its own address.")
            }
            CsrfRefusal::NoOriginHeaders => (
                StatusCode::FORBIDDEN,
                "Request refused: it carries neither Sec-Fetch-Site nor Origin. Use Member History from a current browser.",
            ),
            CsrfRefusal::ContentType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Request refused: send application/json or application/x-www-form-urlencoded.",
            ),
        };
        (status, message).into_response()
    }
}

/// The CSRF rule, by Fetch Metadata and Origin: a state-changing request must say it comes
/// from our own origin, by `Sec-Fetch-Site: same-origin` or (browsers without Fetch
/// Metadata) an `Origin` equal to the public URL's; and it must carry a body type our server
/// functions read.
pub fn check_csrf(
    method: &Method,
    headers: &axum::http::HeaderMap,
    own_origin: &str,
) -> Result<(), CsrfRefusal> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    match (text(HeaderName::from_static("sec-fetch-site")), text(header::ORIGIN)) {
        (Some(site), _) if !site.eq_ignore_ascii_case("same-origin") => {
            return Err(CsrfRefusal::CrossOrigin)
        }
        (Some(_), origin) | (None, origin @ Some(_)) => {
            if origin.is_some_and(|o| o != own_origin) {
                return Err(CsrfRefusal::CrossOrigin);
            }
        }
        (None, None) => return Err(CsrfRefusal::NoOriginHeaders),
    }
    let media_type = text(header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json" | "application/x-www-form-urlencoded") => Ok(()),
        _ => Err(CsrfRefusal::ContentType),
    }
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

    fn headers(pairs: &[(&'static str, &str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap_or_else(|_| unreachable!()));
        }
        h
    }

    #[test]
    fn csrf_needs_fetch_metadata_or_our_origin_and_a_known_body_type() {
        const OURS: &str = "https://mh.example";
        let form = ("content-type", "application/x-www-form-urlencoded");
        let json = ("content-type", "application/json; charset=utf-8");
        let check =
            |pairs: &[(&'static str, &str)]| check_csrf(&Method::POST, &headers(pairs), OURS);
        assert_eq!(check(&[("sec-fetch-site", "same-origin"), form]), Ok(()));
        assert_eq!(check(&[("sec-fetch-site", "same-origin"), json]), Ok(()));
        assert_eq!(check(&[("origin", OURS), form]), Ok(()));
        assert_eq!(check(&[("sec-fetch-site", "same-origin"), ("origin", OURS), json]), Ok(()));
        for site in ["same-site", "cross-site", "none"] {
            assert_eq!(
                check(&[("sec-fetch-site", site), ("origin", OURS), form]),
                Err(CsrfRefusal::CrossOrigin)
            );
        }
        assert_eq!(
            check(&[("origin", "https://mh.example.evil"), form]),
            Err(CsrfRefusal::CrossOrigin)
        );
        assert_eq!(check(&[("origin", "null"), form]), Err(CsrfRefusal::CrossOrigin));
        assert_eq!(
            check(&[("sec-fetch-site", "same-origin"), ("origin", "https://evil.example"), form]),
            Err(CsrfRefusal::CrossOrigin)
        );
        assert_eq!(check(&[form]), Err(CsrfRefusal::NoOriginHeaders));
        assert_eq!(
            check(&[("origin", OURS), ("content-type", "text/plain")]),
            Err(CsrfRefusal::ContentType)
        );
        assert_eq!(check(&[("origin", OURS)]), Err(CsrfRefusal::ContentType));
        assert_eq!(check_csrf(&Method::GET, &headers(&[]), OURS), Ok(()));
    }
}
