//! A round-robin load balancer in front of several app servers, as a deployment puts one:
//! each request goes to the next server in turn, with no session affinity.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

pub struct Balancer {
    upstreams: Vec<String>,
    next: AtomicUsize,
    /// Requests each upstream served.
    pub served: Vec<AtomicUsize>,
    http: reqwest::Client,
}

impl Balancer {
    /// Listens on `listener`, forwarding to `upstreams` (`http://host:port`) in turn.
    pub fn start(listener: std::net::TcpListener, upstreams: Vec<String>) -> Arc<Balancer> {
        listener.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
        let listener =
            tokio::net::TcpListener::from_std(listener).unwrap_or_else(|e| panic!("{e}"));
        let balancer = Arc::new(Balancer {
            served: upstreams.iter().map(|_| AtomicUsize::new(0)).collect(),
            upstreams,
            next: AtomicUsize::new(0),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        });
        let router = axum::Router::new().fallback(forward).with_state(balancer.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        balancer
    }

    pub fn served(&self) -> Vec<usize> {
        self.served.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }
}

async fn forward(State(balancer): State<Arc<Balancer>>, request: Request) -> Response {
    let turn = balancer.next.fetch_add(1, Ordering::Relaxed) % balancer.upstreams.len();
    balancer.served[turn].fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path}", balancer.upstreams[turn]);
    let mut outbound = balancer.http.request(parts.method.clone(), url).body(body);
    for (name, value) in &parts.headers {
        // The Host the browser sent is kept, as a reverse proxy does.
        if !matches!(name.as_str(), "content-length" | "connection" | "transfer-encoding") {
            outbound = outbound.header(name, value);
        }
    }
    let Ok(answer) = outbound.send().await else {
        return (StatusCode::BAD_GATEWAY, "upstream unreachable").into_response();
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !matches!(name.as_str(), "content-length" | "connection" | "transfer-encoding") {
            headers.append(name.clone(), value.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    (status, headers, bytes).into_response()
}
