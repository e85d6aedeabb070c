//! Durable, shared state through the router: a restart mid-review, two servers on one
//! PostgreSQL, a write-back cut off by a crash, the audit log and its FHIR export.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::http::StatusCode;
use sandbox::fhir_api::Fault;
use serde_json::Value;

use crate::common::writeback::{add, choose, review, select_only, FaultInjector};
use crate::common::Driver;

fn selected(view: &Value) -> Vec<String> {
    let mut keys: Vec<String> =
        view["selected"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_restart_mid_review_keeps_the_page_the_selection_and_the_answer() {
    let mut driver = Driver::new(3600).await;
    let (launch, rows) = review(&mut driver, "pat-002").await;
    let keys = choose(&rows, 3, 0);
    select_only(&mut driver, &launch, &rows, &keys).await;
    let (_, before) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    let asked = driver.sandbox().plan.received().len();

    driver.restart(|_| {}).await;

    // The same browser (its cookie) finds its patient, the plan's answer and its selection.
    let (status, context) = driver.server_fn("review_context", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{context}");
    let (status, after) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(selected(&after), expected);
    assert_eq!(after["items"], before["items"]);
    assert_eq!(driver.sandbox().plan.received().len(), asked, "the plan is not asked again");
    // And can go on to write.
    let (status, result) = add(&mut driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{result}");
}

#[tokio::test]
async fn two_servers_on_one_postgresql_serve_one_review_in_turn() {
    let Some(pg) = store::testing::Postgres::start() else {
        eprintln!("PostgreSQL is not installed here; skipped (CI installs it)");
        return;
    };
    let url = pg.url.clone();
    let on_pg = |c: &mut service::AppConfig| c.store.database_url = Some(url.clone());
    let mut driver = Driver::with(3600, |_| {}, on_pg).await;
    driver.add_instance(on_pg).await;
    let (launch, rows) = review(&mut driver, "pat-001").await;
    let keys = choose(&rows, 4, 1);
    select_only(&mut driver, &launch, &rows, &keys).await;
    let (status, result) = add(&mut driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let (_, results) = driver.server_fn("write_results", &[("launch", &launch)]).await;
    assert_eq!(results.as_array().unwrap().len(), 1, "{results}");
    assert!(driver.served.iter().all(|&n| n >= 4), "both servers served: {:?}", driver.served);
}

#[tokio::test]
async fn a_write_back_cut_off_by_a_crash_is_finished_by_the_next_server() {
    let mut driver = Driver::new(3600).await;
    let (launch, rows) = review(&mut driver, "pat-001").await;
    let keys = choose(&rows, 3, 0);
    select_only(&mut driver, &launch, &rows, &keys).await;
    // A server took the write and died: its lease on the job has run out.
    let state = driver.prepared.state.clone();
    let stored = state.launches.load(&launch).await.unwrap().unwrap();
    let history = stored.launch.history.unwrap();
    let job = service::writeback::WriteJob { items_id: history.items_id, keys: keys.clone() };
    let now = store::now();
    state
        .launches
        .store()
        .enqueue(
            store::NewJob {
                kind: store::JobKind::WriteBack,
                dedupe_key: Some(format!("write-back:{launch}")),
                launch_id: Some(launch.clone()),
                subject: None,
                payload: serde_json::to_vec(&job).unwrap(),
                run_after: now - 600,
                leased_to: Some(("a-server-that-died".into(), 1)),
            },
            now - 600,
        )
        .await
        .unwrap();
    // While the job is held, the clinician's own "Add to chart" is refused, not run twice.
    let (status, refused) = add(&mut driver, &launch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    driver.restart(|_| {}).await;
    let state = driver.prepared.state.clone();
    assert_eq!(service::jobs::resume_interrupted(&state).await.unwrap(), 1);
    assert_eq!(service::jobs::resume_interrupted(&state).await.unwrap(), 0, "taken once");
    let (_, results) = driver.server_fn("write_results", &[("launch", &launch)]).await;
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    let written: Vec<&str> = results[0]["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["status"] != "Failed")
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(written.len(), keys.len(), "{:?}", results[0]);
    assert!(results[0]["notes"].to_string().contains("interrupted"), "{:?}", results[0]["notes"]);
}

#[tokio::test]
async fn a_write_back_whose_browser_went_away_still_ends_and_frees_the_next() {
    let mut driver = Driver::with(3600, |_| {}, |c| c.ehrs[0].timeout_seconds = 10).await;
    let (launch, rows) = review(&mut driver, "pat-001").await;
    let keys = choose(&rows, 3, 0);
    select_only(&mut driver, &launch, &rows, &keys).await;
    let ehr = driver.sandbox().ehr.clone();
    ehr.inject(Fault::SlowAfterCommit(Duration::from_millis(1500)));
    // The browser gives up (a closed tab): the request is dropped mid-write.
    let gone = tokio::time::timeout(Duration::from_millis(300), add(&mut driver, &launch)).await;
    assert!(gone.is_err(), "the write should still have been running");
    // The write ends on its own and its job is closed at once, not at the lease's end.
    let mut results = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, r) = driver.server_fn("write_results", &[("launch", &launch)]).await;
        results = r.as_array().cloned().unwrap_or_default();
        if !results.is_empty() {
            break;
        }
    }
    assert_eq!(results.len(), 1, "{results:?}");
    let written = results[0]["outcomes"].as_array().unwrap();
    assert_eq!(written.iter().filter(|o| o["status"] != "Failed").count(), keys.len());
    // The next "Add to chart" is taken within moments (the job closes right after the
    // outcome is saved), not refused as in progress until the 300 s lease runs out.
    let more = choose(&rows, 2, 5);
    select_only(&mut driver, &launch, &rows, &more).await;
    let mut answer = add(&mut driver, &launch).await;
    for _ in 0..20 {
        if answer.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = add(&mut driver, &launch).await;
    }
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}

#[tokio::test]
async fn every_access_is_audited_and_exported_as_r4_audit_events() {
    let mut driver = Driver::new(3600).await;
    let since = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let (launch, rows) = review(&mut driver, "pat-001").await;
    let keys = choose(&rows, 2, 0);
    select_only(&mut driver, &launch, &rows, &keys).await;
    let (status, _) = add(&mut driver, &launch).await;
    assert_eq!(status, StatusCode::OK);

    let mut out = Vec::new();
    let format = server::cli::AuditFormat::Ndjson;
    let n = server::audit_export::export(driver.cli(), since, format, &mut out).await.unwrap();
    let events: Vec<Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), n);
    let kinds: Vec<&str> =
        events.iter().map(|e| e["type"]["code"].as_str().unwrap()).collect::<Vec<_>>();
    assert!(kinds.iter().all(|k| *k == "rest"), "{kinds:?}");
    for event in &events {
        check_audit_event(event);
    }
    let by_action = |action: &str| {
        let code = format!("\"valueCode\":\"{action}\"");
        events
            .iter()
            .find(|e| e["extension"].to_string().contains(&code))
            .unwrap_or_else(|| panic!("no {action} event: {events:?}"))
    };
    by_action("plan-asked");
    let read = by_action("plan-history-read");
    // The patient, each resource read, and the plan.
    let items = read["entity"].as_array().unwrap().len() - 2;
    assert_eq!(items, rows.len(), "every plan resource read is named");
    let write = by_action("emr-write");
    assert_eq!(write["action"], "C");
    assert!(write["entity"].to_string().contains("Patient/pat-001"));
    // The user is the launch's fhirUser.
    assert!(read["agent"][0]["who"]["reference"].as_str().unwrap().contains("Practitioner/"));
}

/// The R4 AuditEvent elements of cardinality 1..1 or 1..*, and the codes' value sets.
fn check_audit_event(event: &Value) {
    assert_eq!(event["resourceType"], "AuditEvent");
    assert!(event["type"]["system"].is_string() && event["type"]["code"].is_string());
    assert!(["C", "R", "U", "D", "E"].contains(&event["action"].as_str().unwrap()));
    let recorded = event["recorded"].as_str().unwrap();
    time::OffsetDateTime::parse(recorded, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("recorded {recorded}: {e}"));
    assert!(["0", "4", "8", "12"].contains(&event["outcome"].as_str().unwrap()));
    let agents = event["agent"].as_array().unwrap();
    assert!(!agents.is_empty());
    for agent in agents {
        assert!(agent["requestor"].is_boolean(), "agent.requestor is 1..1: {agent}");
    }
    assert!(event["source"]["observer"].is_object(), "source.observer is 1..1");
    for entity in event["entity"].as_array().unwrap() {
        assert!(entity["what"].is_object(), "{entity}");
    }
}
