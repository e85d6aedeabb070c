//! The client against a small server that answers as real ones do (and as they should not).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bulk::{BulkClient, BulkError, BulkLimits, Manifest, Started, Status};
use serde_json::{json, Value};
use url::Url;

#[derive(Default)]
struct Server {
    base: std::sync::Mutex<String>,
    polls: AtomicUsize,
    deleted: AtomicUsize,
}

async fn start() -> (Arc<Server>, BulkClient) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let server = Arc::new(Server::default());
    *server.base.lock().unwrap() = format!("{origin}/fhir");
    let router = Router::new()
        .route("/fhir/Group/g1/$export", post(kick_off))
        .route("/fhir/Group/none/$export", post(no_location))
        .route("/fhir/Group/away/$export", post(foreign))
        .route(
            "/fhir/Group/sync/$export",
            post(|| async { Json(json!({"resourceType": "Parameters"})) }),
        )
        .route("/fhir/Group/bad/$export", post(refused))
        .route("/fhir/status/1", get(poll).delete(delete))
        .route("/fhir/files/p.ndjson", get(file))
        .route("/fhir/status/pages", get(page))
        .with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = BulkClient::new(
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        Url::parse(&format!("{origin}/fhir")).unwrap(),
        BulkLimits::default(),
    );
    (server, client)
}

async fn kick_off(headers: HeaderMap, body: String) -> Response {
    assert_eq!(headers["prefer"], "respond-async");
    assert_eq!(headers["authorization"], "Bearer t0k");
    let parameters: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parameters["resourceType"], "Parameters");
    // A relative Content-Location, as some servers send.
    (StatusCode::ACCEPTED, [("content-location", "../../status/1")]).into_response()
}

async fn no_location() -> StatusCode {
    StatusCode::ACCEPTED
}

async fn foreign() -> Response {
    (StatusCode::ACCEPTED, [("content-location", "http://elsewhere.example/status/1")])
        .into_response()
}

async fn refused() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": "_type is required"}]})),
    )
        .into_response()
}

async fn poll(State(server): State<Arc<Server>>) -> Response {
    match server.polls.fetch_add(1, Ordering::SeqCst) {
        0 => (StatusCode::ACCEPTED, [("x-progress", "matching members"), ("retry-after", "3")])
            .into_response(),
        1 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "Fri, 01 Jan 2100 00:00:00 GMT")])
            .into_response(),
        _ => {
            let base = server.base.lock().unwrap().clone();
            Json(json!({
                "transactionTime": "2026-12-04T10:00:00Z",
                "request": format!("{base}/Group/g1/$export"),
                "requiresAccessToken": true,
                "output": [{"type": "Patient", "url": format!("{base}/files/p.ndjson"), "count": 2}],
                "error": []
            }))
            .into_response()
        }
    }
}

/// A manifest paged in three: page 3 is relative, page 2 points nowhere else.
async fn page(
    State(server): State<Arc<Server>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    assert_eq!(headers["authorization"], "Bearer t0k");
    let base = server.base.lock().unwrap().clone();
    let n: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let mut manifest = json!({
        "transactionTime": "2026-12-04T10:00:00Z",
        "requiresAccessToken": true,
        "output": [{"type": "Condition", "url": format!("{base}/files/c{n}.ndjson")}],
        "error": [{"type": "OperationOutcome", "url": format!("{base}/files/e{n}.ndjson")}]
    });
    match n {
        1 => {
            manifest["link"] =
                json!([{"relation": "next", "url": format!("{base}/status/pages?page=2")}])
        }
        2 => {
            manifest["link"] = json!([{"relation": "self", "url": "x"}, {"relation": "next", "url": "pages?page=3"}])
        }
        _ => {}
    }
    Json(manifest).into_response()
}

async fn delete(State(server): State<Arc<Server>>) -> StatusCode {
    server.deleted.fetch_add(1, Ordering::SeqCst);
    StatusCode::ACCEPTED
}

async fn file(headers: HeaderMap) -> Response {
    if headers.get("authorization").map(|v| v.as_bytes()) != Some(b"Bearer t0k") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"resourceType\":\"Patient\",\"id\":\"b\"}\n"
        .into_response()
}

#[tokio::test]
async fn kick_off_poll_manifest_stream_and_clean_up() {
    let (server, client) = start().await;
    let started = client
        .kick_off(Some("t0k"), "Group/g1/$export", &json!({"resourceType": "Parameters"}))
        .await
        .unwrap();
    let Started::Accepted(status) = started else { panic!("expected 202") };
    assert!(status.as_str().ends_with("/fhir/status/1"), "{}", status.as_str());
    match client.status(Some("t0k"), &status).await.unwrap() {
        Status::InProgress { progress, retry_after } => {
            assert_eq!(progress.as_deref(), Some("matching members"));
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(3)));
        }
        other => panic!("{other:?}"),
    }
    match client.status(Some("t0k"), &status).await.unwrap() {
        Status::InProgress { retry_after, .. } => assert!(retry_after.unwrap().as_secs() > 86_400),
        other => panic!("{other:?}"),
    }
    let Status::Complete(body) = client.status(Some("t0k"), &status).await.unwrap() else {
        panic!("expected the manifest")
    };
    let manifest = Manifest::parse(&body, &Url::parse(status.as_str()).unwrap()).unwrap();
    let mut reader = client.open(Some("t0k"), &manifest, &manifest.output[0]).await.unwrap();
    let mut ids = Vec::new();
    while let Some(resource) = reader.next().await {
        ids.push(resource.unwrap()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, ["a", "b"]);
    client.cancel(Some("t0k"), &status).await.unwrap();
    assert_eq!(server.deleted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn what_a_server_must_not_do_is_refused_plainly() {
    let (_, client) = start().await;
    let p = json!({"resourceType": "Parameters"});
    assert!(matches!(
        client.kick_off(None, "Group/none/$export", &p).await,
        Err(BulkError::NoStatusUrl)
    ));
    assert!(matches!(
        client.kick_off(None, "Group/away/$export", &p).await,
        Err(BulkError::ForeignUrl { .. })
    ));
    let e = client.kick_off(None, "Group/bad/$export", &p).await.unwrap_err();
    assert_eq!(e.outcome_text(), Some("_type is required"));
    assert!(!e.is_transient());
    assert!(matches!(
        client.kick_off(None, "Group/sync/$export", &p).await,
        Ok(Started::Completed(_))
    ));
    // A file that needs the token, on another origin: never sent there.
    let manifest = Manifest::parse(
        &json!({"requiresAccessToken": true, "output": [{"type": "Patient", "url": "http://elsewhere.example/p.ndjson"}]}),
        &Url::parse("http://127.0.0.1/fhir/status/1").unwrap(),
    )
    .unwrap();
    assert!(matches!(
        client.open(Some("t0k"), &manifest, &manifest.output[0]).await,
        Err(BulkError::ForeignUrl { .. })
    ));
}

#[tokio::test]
async fn a_paged_manifest_is_read_to_its_last_page_or_to_the_cap() {
    let (server, client) = start().await;
    let base = server.base.lock().unwrap().clone();
    let first_page = |url: &str| {
        let url = Url::parse(url).unwrap();
        let next = format!("{base}/status/pages?page=2");
        Manifest::parse(
            &json!({"requiresAccessToken": true, "output": [{"type": "Condition", "url": "files/c1.ndjson"}], "link": [{"relation": "next", "url": next}]}),
            &url,
        )
        .unwrap()
    };
    let mut whole = first_page(&format!("{base}/status/pages"));
    client.follow_pages(Some("t0k"), &mut whole, 10).await.unwrap();
    let files: Vec<&str> = whole.output.iter().map(|f| f.url.path()).collect();
    assert_eq!(
        files,
        ["/fhir/status/files/c1.ndjson", "/fhir/files/c2.ndjson", "/fhir/files/c3.ndjson"]
    );
    assert_eq!(whole.error.len(), 2);
    assert!(whole.next.is_none());

    let mut capped = first_page(&format!("{base}/status/pages"));
    client.follow_pages(Some("t0k"), &mut capped, 2).await.unwrap();
    assert_eq!(capped.output.len(), 2);
    assert!(capped.next.is_some(), "the unread rest is still known");

    let mut away = Manifest::parse(
        &json!({"link": [{"relation": "next", "url": "http://elsewhere.example/status?page=2"}]}),
        &Url::parse(&base).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        client.follow_pages(Some("t0k"), &mut away, 10).await,
        Err(BulkError::ForeignUrl { .. })
    ));
}
