//! The web edge: CSRF, status codes, body limits, sessions (created by launches only, capped,
//! rate-limited, renewed on use) and the connection-level limits on a real socket.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{launch_error_code, Driver, TestServer, APP};
use tower::ServiceExt;

fn post(uri: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut request = Request::builder().method("POST").uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).unwrap()
}

const SAME_ORIGIN: (&str, &str) = ("sec-fetch-site", "same-origin");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[tokio::test]
async fn cross_origin_server_function_calls_are_refused() {
    let driver = Driver::new(3600).await;
    let request = post("/api/ehrs", &[("origin", "https://evil.example"), FORM], Body::empty());
    let response = driver.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

/// CSRF by Fetch Metadata and Origin: a POST that names no origin at all, or carries a body
/// type a cross-site form could send (`text/plain`), is refused before any server function.
#[tokio::test]
async fn server_function_posts_need_an_origin_and_a_json_or_form_body() {
    let driver = Driver::new(3600).await;
    let cases = [
        (vec![FORM], StatusCode::FORBIDDEN),
        (vec![("sec-fetch-site", "cross-site"), FORM], StatusCode::FORBIDDEN),
        (vec![("sec-fetch-site", "same-site"), FORM], StatusCode::FORBIDDEN),
        (vec![SAME_ORIGIN, ("content-type", "text/plain")], StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (vec![SAME_ORIGIN, FORM], StatusCode::OK),
        (vec![("origin", APP), FORM], StatusCode::OK),
    ];
    for (headers, expected) in cases {
        let response =
            driver.router.clone().oneshot(post("/api/ehrs", &headers, Body::empty())).await;
        assert_eq!(response.unwrap().status(), expected, "{headers:?}");
    }
}

#[tokio::test]
async fn server_function_errors_answer_with_the_status_their_code_means() {
    let mut driver = Driver::new(3600).await;
    let (status, body) = driver.server_fn("no_such_function", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "bad_request");
    let (status, body) = driver.server_fn("review_context", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "bad_request");
    let (status, body) = driver.server_fn("review_context", &[("launch", "made-up")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "session_expired");
    assert_eq!(api::ErrorCode::Internal.http_status(), 500);
    assert_eq!(api::ErrorCode::PlanUnavailable.http_status(), 502);
    assert_eq!(api::ErrorCode::UpstreamTimeout.http_status(), 504);
}

#[tokio::test]
async fn an_oversized_body_gets_413_with_or_without_a_length() {
    let driver = Driver::with(3600, |_| {}, |c| c.limits.max_body_bytes = 1024).await;
    let big = "launch=".to_owned() + &"x".repeat(4096);
    let sized = post("/api/review_context", &[SAME_ORIGIN, FORM], Body::from(big.clone()));
    let response = driver.router.clone().oneshot(sized).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked: no Content-Length, the limit is found while reading.
    let chunks = futures::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = post("/api/review_context", &[SAME_ORIGIN, FORM], Body::from_stream(chunks));
    let response = driver.router.clone().oneshot(chunked).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// Only a launch creates a session; anonymous visits leave nothing behind.
#[tokio::test]
async fn anonymous_visits_create_no_session() {
    let mut driver = Driver::new(3600).await;
    for path in ["/", "/launch", "/launch?iss=https://unknown.example/fhir", "/healthz"] {
        driver.get(&format!("{APP}{path}")).await;
    }
    let _ = driver.server_fn("ehrs", &[]).await;
    assert!(driver.cookie().is_none());
    assert!(driver.sessions.is_empty().await);
    driver.launch("pat-001").await;
    assert_eq!(driver.sessions.len().await, 1);
}

/// The idle timeout counts from the last use: every answer renews the session's cookie.
#[tokio::test]
async fn each_use_renews_the_session() {
    let mut driver = Driver::new(3600).await;
    let launch = driver.launch("pat-001").await;
    let cookie = driver.cookie().unwrap().to_owned();
    let request = post(
        "/api/review_context",
        &[SAME_ORIGIN, FORM, ("cookie", &cookie)],
        Body::from(format!("launch={launch}")),
    );
    let response = driver.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let renewed = response.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(renewed.starts_with("mh_session=") && renewed.contains("Max-Age="), "{renewed}");
}

#[tokio::test]
async fn sessions_are_capped() {
    let mut driver = Driver::with(3600, |_| {}, |c| c.limits.max_sessions = 2).await;
    for patient in ["pat-001", "pat-002"] {
        driver.clear_cookies();
        driver.launch(patient).await;
    }
    driver.clear_cookies();
    let url = driver.ehr_launch("pat-003");
    let reply = driver.get(&url).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(launch_error_code(&reply.body).as_deref(), Some("busy"));
    assert_eq!(driver.sessions.len().await, 2);
}

#[tokio::test]
async fn launches_are_rate_limited_per_client() {
    let mut driver =
        Driver::with(3600, |_| {}, |c| c.limits.launches_per_minute_per_client = 2).await;
    let iss = driver.sandbox().ehr_fhir_base().to_string();
    let launch = format!("{APP}/launch?iss={iss}");
    for _ in 0..2 {
        assert_eq!(driver.get(&launch).await.status, StatusCode::SEE_OTHER);
    }
    let reply = driver.get(&launch).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(launch_error_code(&reply.body).as_deref(), Some("busy"));
}

/// A raw connection to the test server.
fn connect(server: &TestServer) -> TcpStream {
    let url = url::Url::parse(&server.url("")).unwrap();
    let stream = TcpStream::connect((url.host_str().unwrap(), url.port().unwrap())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Reads until the peer closes or `timeout`; returns what came and whether it closed.
fn read_for(stream: &mut TcpStream, timeout: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    return (String::from_utf8_lossy(&out).into_owned(), false);
                }
            }
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

const PARTIAL_POST: &str = "POST /api/ehrs HTTP/1.1\r\nHost: x\r\nSec-Fetch-Site: same-origin\r\n\
     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\nab";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let server = TestServer::start_with(|_| {}, |c| c.limits.header_read_timeout_seconds = 1).await;
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut stream = connect(&server);
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
        let (_, closed) = read_for(&mut stream, Duration::from_secs(8));
        closed
    })
    .await
    .unwrap();
    assert!(closed, "the connection was held open");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
}

/// The head of the answer to a POST whose body never finishes.
async fn answer_to_a_partial_body(server: TestServer) -> String {
    tokio::task::spawn_blocking(move || {
        let mut stream = connect(&server);
        stream.write_all(PARTIAL_POST.as_bytes()).unwrap();
        read_for(&mut stream, Duration::from_secs(8)).0
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408() {
    let server = TestServer::start_with(|_| {}, |c| c.limits.body_timeout_seconds = 1).await;
    let head = answer_to_a_partial_body(server).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_time_gets_504() {
    let server = TestServer::start_with(|_| {}, |c| c.limits.request_timeout_seconds = 1).await;
    let head = answer_to_a_partial_body(server).await;
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_get_503() {
    let driver = Driver::with(3600, |_| {}, |c| c.limits.max_concurrent_requests = 1).await;
    let probe = || async {
        let next = Request::builder().uri("/healthz").body(Body::empty()).unwrap();
        driver.router.clone().oneshot(next).await.unwrap()
    };
    // One request in progress: its body never ends …
    let endless = || futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
    let held = tokio::spawn(driver.router.clone().oneshot(post(
        "/api/ehrs",
        &[SAME_ORIGIN, FORM],
        Body::from_stream(endless()),
    )));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the held request was answered");
    // … so the next one is turned away at once.
    let response = probe().await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "5");
    // When it ends, requests are served again.
    held.abort();
    let _ = held.await;
    assert_eq!(probe().await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait_for_a_free_one() {
    let server = TestServer::start_with(|_| {}, |c| c.limits.max_connections = 1).await;
    let (waited, served) = tokio::task::spawn_blocking(move || {
        let mut first = connect(&server);
        first.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, _) = read_for(&mut first, Duration::from_secs(5));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // `first` is still open (keep-alive): a second connection is not served meanwhile.
        let mut second = connect(&server);
        second.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (early, _) = read_for(&mut second, Duration::from_millis(800));
        drop(first);
        let (late, _) = read_for(&mut second, Duration::from_secs(5));
        (early, late)
    })
    .await
    .unwrap();
    assert!(waited.is_empty(), "served past the connection limit: {waited}");
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

/// In an EHR that frames the app from another site, the session cookie is partitioned and
/// cross-site (and stays so on every renewal); at the top level it is `Lax`.
#[tokio::test]
async fn a_launch_in_a_cross_site_frame_gets_a_partitioned_cookie() {
    let driver = Driver::new(3600).await;
    let get = |uri: String, framed: bool, cookie: Option<String>| {
        let mut request = Request::builder().uri(uri);
        if framed {
            request =
                request.header("sec-fetch-dest", "iframe").header("sec-fetch-site", "cross-site");
        }
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        request.body(Body::empty()).unwrap()
    };
    let set_cookie = |response: &axum::response::Response| {
        response.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned()
    };
    let uri = |driver: &Driver| driver.ehr_launch("pat-001").strip_prefix(APP).unwrap().to_owned();

    let top = driver.router.clone().oneshot(get(uri(&driver), false, None)).await.unwrap();
    assert!(set_cookie(&top).contains("SameSite=Lax"), "{}", set_cookie(&top));

    let framed = driver.router.clone().oneshot(get(uri(&driver), true, None)).await.unwrap();
    let cookie = set_cookie(&framed);
    assert!(cookie.ends_with("SameSite=None; Secure; Partitioned"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    // Later requests in the frame are same-origin; the renewed cookie keeps the attributes.
    let pair = cookie.split(';').next().unwrap().to_owned();
    let later = post("/api/ehrs", &[SAME_ORIGIN, FORM, ("cookie", &pair)], Body::empty());
    let later = driver.router.clone().oneshot(later).await.unwrap();
    assert!(set_cookie(&later).ends_with("SameSite=None; Secure; Partitioned"));
    // The app's files never carry the cookie (they are cached publicly).
    let page = driver.router.clone().oneshot(get("/".into(), false, Some(pair))).await.unwrap();
    assert!(page.headers().get(header::SET_COOKIE).is_none());
}
