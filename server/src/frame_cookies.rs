//! The session cookie inside an EHR that frames the app from another site.
//!
//! A `SameSite=Lax` cookie is not sent in a cross-site frame, so there the launch could keep
//! no session. When the launch itself arrives as a cross-site frame navigation (Fetch
//! Metadata says so), the session is marked framed, and its cookie is set from then on as
//! `SameSite=None; Secure; Partitioned`: sent in that frame, and (CHIPS) kept in a jar of the
//! EHR's site only, so it works where third-party cookies are blocked and is no use to any
//! other site. Top-level and same-site use keep `Lax`.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tower_sessions::Session;

/// Session key of the mark.
const FRAMED: &str = "framed_cross_site";

/// Set by [`mark`] on a response whose session is framed; read (and removed) by [`rewrite`].
#[derive(Debug, Clone, Copy)]
struct Framed;

/// Whether the request is a navigation of a frame embedded by another site.
pub fn is_cross_site_frame(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    matches!(text("sec-fetch-dest"), "iframe" | "frame")
        && text("sec-fetch-site").eq_ignore_ascii_case("cross-site")
}

/// Inside the session layer: marks the session framed when a launch comes in a cross-site
/// frame, and tells [`rewrite`] which responses belong to a framed session.
pub async fn mark(session: Session, request: Request, next: Next) -> Response {
    let launching = request.uri().path() == "/launch" && is_cross_site_frame(request.headers());
    let mut response = next.run(request).await;
    // Only a session the launch really started (it holds a pending authorization) is marked.
    if launching && !session.is_empty().await {
        if let Err(e) = session.insert(FRAMED, true).await {
            tracing::warn!(error = %e, "could not mark the session framed");
        }
    }
    if session.get::<bool>(FRAMED).await.ok().flatten() == Some(true) {
        response.extensions_mut().insert(Framed);
    }
    response
}

/// Outside the session layer: the framed session's cookie as a partitioned cross-site one.
pub async fn rewrite(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.extensions_mut().remove::<Framed>().is_none() {
        return response;
    }
    let all: Vec<HeaderValue> =
        response.headers().get_all(header::SET_COOKIE).iter().cloned().collect();
    response.headers_mut().remove(header::SET_COOKIE);
    for value in all {
        let rewritten = value
            .to_str()
            .ok()
            .filter(|c| c.starts_with("mh_session="))
            .and_then(|c| HeaderValue::from_str(&partitioned(c)).ok())
            .unwrap_or(value);
        response.headers_mut().append(header::SET_COOKIE, rewritten);
    }
    response
}

/// `Set-Cookie` with `SameSite=None; Secure; Partitioned` in place of its SameSite.
fn partitioned(cookie: &str) -> String {
    let kept: Vec<&str> = cookie
        .split(';')
        .map(str::trim)
        .filter(|a| {
            let name = a.split('=').next().unwrap_or_default();
            !["samesite", "secure", "partitioned"].contains(&name.to_ascii_lowercase().as_str())
        })
        .collect();
    format!("{}; SameSite=None; Secure; Partitioned", kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_made_partitioned_and_cross_site() {
        let c = partitioned("mh_session=abc; HttpOnly; SameSite=Lax; Path=/; Max-Age=3600");
        assert_eq!(
            c,
            "mh_session=abc; HttpOnly; Path=/; Max-Age=3600; SameSite=None; Secure; Partitioned"
        );
        let c = partitioned("mh_session=abc; Secure; SameSite=Lax");
        assert_eq!(c.matches("Secure").count(), 1);
    }

    #[test]
    fn only_cross_site_frame_navigations_count() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(is_cross_site_frame(&headers(&[
            ("sec-fetch-dest", "iframe"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!is_cross_site_frame(&headers(&[
            ("sec-fetch-dest", "iframe"),
            ("sec-fetch-site", "same-site")
        ])));
        assert!(!is_cross_site_frame(&headers(&[
            ("sec-fetch-dest", "document"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!is_cross_site_frame(&HeaderMap::new()));
    }
}
