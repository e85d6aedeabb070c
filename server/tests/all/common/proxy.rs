//! A pass-through HTTP proxy in front of a FHIR server that can fail on purpose (the real
//! FHIR server suite injects EMR failures this way) or add a network round trip (the
//! write-back benchmark).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sandbox::fhir_api::Fault;

#[derive(Default)]
pub struct Proxy {
    pub upstream: Mutex<String>,
    faults: Mutex<VecDeque<Fault>>,
    round_trip: Mutex<Duration>,
    http: reqwest::Client,
}

impl Proxy {
    /// Listens on a free loopback port; returns the proxy and its URL. Set `upstream` before use.
    pub async fn start() -> (Arc<Proxy>, String) {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let proxy = Arc::new(Proxy {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            ..Default::default()
        });
        let router = axum::Router::new().fallback(forward).with_state(proxy.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (proxy, url)
    }
}

impl Proxy {
    /// Queues a fault for the next transaction (`POST [base]`).
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut f) = self.faults.lock() {
            f.push_back(fault);
        }
    }

    /// Delays every request by `round_trip`, as a network between the app and the EMR would.
    pub fn set_round_trip(&self, round_trip: Duration) {
        if let Ok(mut d) = self.round_trip.lock() {
            *d = round_trip;
        }
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let round_trip = proxy.round_trip.lock().map(|d| *d).unwrap_or_default();
    if !round_trip.is_zero() {
        // tokio's timer rounds up to whole milliseconds (a "1 ms" sleep is nearer 2 ms); a
        // thread sleep keeps the simulated network at the round trip asked for.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(round_trip)).await;
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 256 * 1024 * 1024).await.unwrap_or_default();
    let transaction = parts.method == axum::http::Method::POST && parts.uri.path() == "/";
    let fault =
        if transaction { proxy.faults.lock().ok().and_then(|mut f| f.pop_front()) } else { None };
    if matches!(fault, Some(Fault::Fail500)) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    let upstream = proxy.upstream.lock().map(|u| u.clone()).unwrap_or_default();
    // `POST [base]` is the base itself, without a trailing slash.
    let url = match parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/") {
        "/" => upstream,
        path => format!("{upstream}{path}"),
    };
    let mut outbound = proxy.http.request(parts.method.clone(), url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            outbound = outbound.header(name, value);
        }
    }
    let Ok(answer) = outbound.send().await else {
        return (StatusCode::BAD_GATEWAY, "upstream unreachable").into_response();
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if matches!(
            name.as_str(),
            "content-type" | "location" | "etag" | "last-modified" | "www-authenticate"
        ) {
            headers.insert(name.clone(), value.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    match fault {
        Some(Fault::SlowAfterCommit(delay)) => {
            tokio::time::sleep(delay).await;
            (status, headers, bytes).into_response()
        }
        Some(Fault::DropAfterCommit) => {
            let half = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped")),
            ];
            headers.insert("content-type", HeaderValue::from_static("application/fhir+json"));
            (status, headers, Body::from_stream(futures::stream::iter(chunks))).into_response()
        }
        _ => (status, headers, bytes).into_response(),
    }
}

/// Waits for `url` to answer 200.
pub async fn wait_ready(url: &str, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    let http = reqwest::Client::new();
    while std::time::Instant::now() < deadline {
        if http.get(url).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} did not come up within {within:?}");
}
