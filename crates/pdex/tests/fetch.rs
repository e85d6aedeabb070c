//! Fetching from a plan's FHIR API: `$everything` followed through `Bundle.link[next]`, and
//! per-type searches for a plan whose CapabilityStatement has no `$everything`.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery};
use axum::routing::get;
use axum::{Json, Router};
use pdex::fetch::{fetch_history, supports_everything, FetchOptions};
use serde_json::{json, Value};

/// A fake plan: `$everything` pages of 2 resources out of 5; type searches; a log of queries.
async fn fake_plan(log: Arc<Mutex<Vec<String>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fhir", listener.local_addr().unwrap());
    let page_base = base.clone();
    let l1 = log.clone();
    let l2 = log.clone();
    let router = Router::new()
        .route(
            "/fhir/Patient/{id}/$everything",
            get(move |Path(id): Path<String>, RawQuery(q): RawQuery| {
                let base = page_base.clone();
                let log = l1.clone();
                async move {
                    let q = q.unwrap_or_default();
                    log.lock().unwrap().push(format!("everything {id} {q}"));
                    let page: usize = q.split('&').find_map(|p| p.strip_prefix("page=")).and_then(|p| p.parse().ok()).unwrap_or(0);
                    let all: Vec<Value> = (0..5)
                        .map(|i| json!({"resource": {"resourceType": "Condition", "id": format!("c{i}"), "code": {"text": format!("C{i}")}}}))
                        .collect();
                    let entries: Vec<Value> = all.into_iter().skip(page * 2).take(2).collect();
                    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "total": 5, "entry": entries});
                    if page < 2 {
                        bundle["link"] = json!([{"relation": "next", "url": format!("{base}/Patient/{id}/$everything?page={}", page + 1)}]);
                    }
                    Json(bundle)
                }
            }),
        )
        .route(
            "/fhir/{resource_type}",
            get(move |Path(t): Path<String>, RawQuery(q): RawQuery| {
                let log = l2.clone();
                async move {
                    log.lock().unwrap().push(format!("search {t} {}", q.unwrap_or_default()));
                    if t == "Claim" {
                        return (axum::http::StatusCode::FORBIDDEN, Json(json!({"resourceType": "OperationOutcome", "issue": []})));
                    }
                    let entries = if t == "Condition" {
                        vec![json!({"resource": {"resourceType": "Condition", "id": "only", "code": {"text": "X"}}})]
                    } else {
                        vec![]
                    };
                    (axum::http::StatusCode::OK, Json(json!({"resourceType": "Bundle", "type": "searchset", "entry": entries})))
                }
            }),
        )
        .route("/fhir/Patient/{id}", get(|Path(id): Path<String>| async move { Json(json!({"resourceType": "Patient", "id": id})) }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    base
}

fn client(base: &str) -> fhir::FhirClient {
    fhir::FhirClient::new(
        reqwest::Client::new(),
        url::Url::parse(base).unwrap(),
        &fhir::http::HttpLimits::default(),
    )
}

fn with_everything() -> Value {
    json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": [
        {"type": "Patient", "operation": [{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]}]}]})
}

#[test]
fn capability_statement_decides() {
    assert!(supports_everything(&with_everything()));
    assert!(supports_everything(
        &json!({"rest": [{"operation": [{"name": "$everything", "definition": "x"}]}]})
    ));
    assert!(!supports_everything(&json!({"rest": [{"resource": [{"type": "Patient"}]}]})));
}

#[tokio::test]
async fn everything_is_followed_through_next_links_with_parameters() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let base = fake_plan(log.clone()).await;
    let options = FetchOptions {
        since: Some("2025-01-01T00:00:00Z".into()),
        start: Some("2024-01-01".into()),
        ..Default::default()
    };
    let fetched =
        fetch_history(&client(&base), Some("t"), "m1", &with_everything(), &options).await.unwrap();
    assert!(fetched.used_everything);
    assert_eq!(fetched.pages.len(), 3);
    let resources = pdex::normalise::flatten(fetched.pages);
    assert_eq!(resources.len(), 5);
    let first = log.lock().unwrap()[0].clone();
    assert!(
        first.contains("_since=2025-01-01T00%3A00%3A00Z")
            && first.contains("start=2024-01-01")
            && first.contains("_type="),
        "{first}"
    );
}

#[tokio::test]
async fn a_plan_without_everything_is_searched_per_type() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let base = fake_plan(log.clone()).await;
    let capability = json!({"rest": [{"resource": [{"type": "Patient"}, {"type": "Condition"}]}]});
    let fetched = fetch_history(&client(&base), None, "m1", &capability, &FetchOptions::default())
        .await
        .unwrap();
    assert!(!fetched.used_everything);
    let searched: Vec<String> =
        log.lock().unwrap().iter().filter(|l| l.starts_with("search")).cloned().collect();
    assert_eq!(searched.len(), pdex::model::history_resource_types().len());
    assert!(searched.iter().all(|s| s.contains("patient=m1")));
    assert_eq!(fetched.skipped_types.len(), 1, "the forbidden type is reported, not fatal");
    let resources = pdex::normalise::flatten(fetched.pages);
    assert!(resources.iter().any(|r| r["id"] == "only"));
    assert!(resources.iter().any(|r| r["resourceType"] == "Patient"));
}
