//! The SMART launch driven through the server's router and the in-process sandbox EHR, with
//! an HTTP client that keeps cookies and follows redirects by hand. No browser.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use common::{launch_error_code, Driver, APP};

#[tokio::test]
async fn ehr_launch_ends_at_the_app_with_patient_and_user_in_session() {
    let mut driver = Driver::new(3600).await;
    let url = driver.ehr_launch("pat-001");
    let hops = driver.follow(&url).await;
    // /launch → EHR authorize → /callback → /review/{id}
    assert_eq!(hops.len(), 4, "{:#?}", hops.iter().map(|(u, r)| (u, r.status)).collect::<Vec<_>>());
    let authorize = url::Url::parse(&hops[1].0).unwrap();
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["aud"], driver.sandbox().ehr_fhir_base().as_str().trim_end_matches('/'));
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["scope"].split(' ').any(|s| s == "launch"));
    assert!(hops[2].0.starts_with(&format!("{APP}/callback?")));
    let launch_id = hops[3].0.rsplit('/').next().unwrap().to_owned();

    let (status, ctx) = driver.server_fn("review_context", &[("launch", &launch_id)]).await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    let person = &driver.sandbox().ehr.people[0];
    assert_eq!(ctx["patient"]["name"], person.display_name());
    assert_eq!(ctx["patient"]["mrn"], person.mrn);
    assert_eq!(ctx["patient"]["birth_date"], person.birth_date);
    assert_eq!(ctx["user"]["name"], "Dr. Maria Alvarez");
    assert_eq!(ctx["need_patient_banner"], true);
    assert_eq!(ctx["launch_kind"], "Ehr");
    // The EHR's SMART style reached the app, filtered to CSS custom properties.
    assert!(ctx["style"]["properties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p[0] == "--smart-color-highlight"));
    // Nothing token-like reached the browser.
    let text = ctx.to_string();
    assert!(!text.contains("eyJ"), "a JWT leaked to the browser: {text}");
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_lax() {
    let driver = Driver::new(3600).await;
    let url = driver.ehr_launch("pat-001");
    let request = axum::http::Request::builder()
        .uri(url.strip_prefix(APP).unwrap())
        .body(axum::body::Body::empty())
        .unwrap();
    use tower::ServiceExt;
    let response = driver.router.clone().oneshot(request).await.unwrap();
    let cookie = response.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.starts_with("mh_session="));
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"));
    // http public URL here; `Secure` is set when the public URL is https.
    assert!(!cookie.contains("Secure"));
}

#[tokio::test]
async fn a_launch_is_visible_only_to_the_session_that_made_it() {
    let mut driver = Driver::new(3600).await;
    let id = driver.launch("pat-002").await;
    driver.clear_cookies();
    let (status, body) = driver.server_fn("review_context", &[("launch", &id)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "session_expired");
    let (_, body) = driver.server_fn("review_context", &[("launch", "made-up")]).await;
    assert_eq!(body["code"], "session_expired");
}

#[tokio::test]
async fn two_launches_in_one_browser_keep_their_own_patients() {
    let mut driver = Driver::new(3600).await;
    let first = driver.launch("pat-001").await;
    let second = driver.launch("pat-003").await;
    let (_, a) = driver.server_fn("review_context", &[("launch", &first)]).await;
    let (_, b) = driver.server_fn("review_context", &[("launch", &second)]).await;
    assert_eq!(a["patient"]["name"], driver.sandbox().ehr.people[0].display_name());
    assert_eq!(b["patient"]["name"], driver.sandbox().ehr.people[2].display_name());
}

/// A TCP listener that counts the connections made to it.
async fn connection_counter() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (format!("http://{addr}/fhir"), count)
}

#[tokio::test]
async fn an_unconfigured_issuer_gets_a_400_page_and_no_request() {
    let mut driver = Driver::new(3600).await;
    let (iss, connections) = connection_counter().await;
    let reply = driver.get(&format!("{APP}/launch?iss={iss}&launch=abc")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(launch_error_code(&reply.body).as_deref(), Some("unknown_issuer"));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 0, "the unknown issuer was contacted");
    let reply = driver.get(&format!("{APP}/launch")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(launch_error_code(&reply.body).as_deref(), Some("missing_issuer"));
}

#[tokio::test]
async fn callback_with_missing_wrong_or_replayed_state_shows_the_error_page() {
    let mut driver = Driver::new(3600).await;
    // Start a launch so the session has an authorization in flight.
    let url = driver.ehr_launch("pat-001");
    let start = driver.get(&url).await;
    let authorize = start.location.unwrap();
    let to_callback = driver.get(&authorize).await.location.unwrap();
    let callback = url::Url::parse(&to_callback).unwrap();
    let code = callback.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();

    let missing = driver.get(&format!("{APP}/callback?code={code}")).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(launch_error_code(&missing.body).as_deref(), Some("state_mismatch"));

    let wrong = driver.get(&format!("{APP}/callback?code={code}&state=not-our-state")).await;
    assert_eq!(launch_error_code(&wrong.body).as_deref(), Some("state_mismatch"));

    // The real callback works once…
    let ok = driver.get(&to_callback).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert!(ok.location.unwrap().starts_with("/review/"));
    // …and replaying it finds no authorization in flight.
    let replayed = driver.get(&to_callback).await;
    assert_eq!(launch_error_code(&replayed.body).as_deref(), Some("state_mismatch"));
}

#[tokio::test]
async fn a_replayed_authorization_code_is_refused_by_the_ehr() {
    let mut driver = Driver::new(3600).await;
    // Two authorizations in flight in one session.
    let first = driver.get(&driver.ehr_launch("pat-001")).await.location.unwrap();
    let second = driver.get(&driver.ehr_launch("pat-001")).await.location.unwrap();
    let first_callback = driver.get(&first).await.location.unwrap();
    let second_callback = driver.get(&second).await.location.unwrap();
    let used_code = url::Url::parse(&first_callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let second_state = url::Url::parse(&second_callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();

    assert_eq!(driver.get(&first_callback).await.status, StatusCode::SEE_OTHER);
    let refused_before = driver.sandbox().ehr.auth.stats.refused.load(Ordering::SeqCst);
    // The first code again, under the second authorization's state.
    let mut replay = url::Url::parse(&format!("{APP}/callback")).unwrap();
    replay.query_pairs_mut().append_pair("code", &used_code).append_pair("state", &second_state);
    let reply = driver.get(replay.as_str()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(launch_error_code(&reply.body).as_deref(), Some("token_refused"));
    assert_eq!(driver.sandbox().ehr.auth.stats.refused.load(Ordering::SeqCst), refused_before + 1);
}

#[tokio::test]
async fn consent_denied_in_the_standalone_picker_shows_the_error_page() {
    let mut driver = Driver::new(3600).await;
    let iss = driver.sandbox().ehr_fhir_base().to_string();
    let start = driver.get(&format!("{APP}/launch?iss={iss}")).await;
    let picker = driver.get(&start.location.unwrap()).await;
    assert_eq!(picker.status, StatusCode::OK);
    let request_id = picker
        .body
        .split(r#"name="request_id" value=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let decide = format!("{}/auth/authorize/decide", driver.sandbox().ehr_url());
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let denied = http
        .post(&decide)
        .form(&[
            ("request_id", request_id.as_str()),
            ("practitioner", "prac-chen"),
            ("decision", "deny"),
        ])
        .send()
        .await
        .unwrap();
    let callback = denied.headers()["location"].to_str().unwrap().to_owned();
    assert!(callback.contains("error=access_denied"));
    let reply = driver.get(&callback).await;
    assert_eq!(launch_error_code(&reply.body).as_deref(), Some("consent_denied"));
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_without_the_user_noticing() {
    // Access tokens live 2 s; the EHR's FHIR API allows no clock leeway.
    let mut driver = Driver::new(2).await;
    let id = driver.launch("pat-001").await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let refreshes = driver.sandbox().ehr.auth.stats.refreshes.load(Ordering::SeqCst);
    let (status, ctx) = driver.server_fn("review_context", &[("launch", &id)]).await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["patient"]["name"], driver.sandbox().ehr.people[0].display_name());
    assert!(driver.sandbox().ehr.auth.stats.refreshes.load(Ordering::SeqCst) > refreshes);
}

#[tokio::test]
async fn a_revoked_access_token_is_refreshed_and_the_call_retried() {
    let mut driver = Driver::new(3600).await;
    let id = driver.launch("pat-001").await;
    // The EHR stops honouring every token issued so far, long before they expire.
    driver.sandbox().ehr.revoke_issued_access_tokens();
    let refreshes = driver.sandbox().ehr.auth.stats.refreshes.load(Ordering::SeqCst);
    let (status, ctx) = driver.server_fn("review_context", &[("launch", &id)]).await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    assert_eq!(driver.sandbox().ehr.auth.stats.refreshes.load(Ordering::SeqCst), refreshes + 1);
}

#[tokio::test]
async fn jwks_and_health_are_served() {
    let mut driver = Driver::new(3600).await;
    let jwks = driver.get(&format!("{APP}/.well-known/jwks.json")).await;
    assert_eq!(jwks.status, StatusCode::OK);
    let set: serde_json::Value = serde_json::from_str(&jwks.body).unwrap();
    assert_eq!(set["keys"][0]["alg"], "ES384");
    assert!(set["keys"][0].get("d").is_none());
    assert_eq!(driver.get(&format!("{APP}/healthz")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_app_is_served_gzipped_and_fingerprinted_files_cached_for_good() {
    use axum::http::{header, Request};
    use tower::ServiceExt;

    let dist = tempfile::tempdir().unwrap();
    std::fs::write(dist.path().join("index.html"), "<!DOCTYPE html><title>app</title>").unwrap();
    let wasm = vec![0u8; 64 * 1024];
    std::fs::write(dist.path().join("app-0123456789abcdef_bg.wasm"), &wasm).unwrap();
    let dir = dist.path().to_owned();
    let driver = Driver::with(3600, |args| args.app.dist_dir = dir, |_| {}).await;
    let get = |path: &str| {
        Request::get(path)
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(axum::body::Body::empty())
            .unwrap()
    };

    let answer = driver.router.clone().oneshot(get("/app-0123456789abcdef_bg.wasm")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/wasm");
    assert_eq!(answer.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    let body = axum::body::to_bytes(answer.into_body(), usize::MAX).await.unwrap();
    assert!(body.len() < wasm.len() / 10, "gzipped to {} bytes", body.len());

    // The page itself (and deep links to it) is revalidated every time.
    let answer = driver.router.clone().oneshot(get("/review/some-launch")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()[header::CACHE_CONTROL], "no-cache");
}
