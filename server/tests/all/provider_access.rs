//! The plan's Provider Access API through the router and the sandbox plan: member match with
//! the treatment attestation, bulk export, review, write-back and a delta refresh; a restart
//! while polling; members who do not match or opted out; an export that fails half-way.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::http::StatusCode;
use sandbox::synthetic::CoverageKind;
use serde_json::{json, Value};

use crate::common::writeback::{add, choose, select_only};
use crate::common::Driver;

async fn ask(driver: &mut Driver, launch: &str, purpose: &str) -> (StatusCode, Value) {
    driver.server_fn("provider_access_ask", &[("launch", launch), ("purpose", purpose)]).await
}

/// Polls the request's status until it leaves Matching and Exporting; the stages seen.
async fn finished(driver: &mut Driver, launch: &str) -> (Value, Vec<String>) {
    let mut seen = Vec::new();
    for _ in 0..300 {
        let (status, view) =
            driver.server_fn("provider_access_status", &[("launch", launch)]).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        let stage = match &view["stage"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o.keys().next().unwrap().clone(),
            other => panic!("no stage: {other}"),
        };
        if seen.last() != Some(&stage) {
            seen.push(stage.clone());
        }
        if stage != "Matching" && stage != "Exporting" {
            return (view, seen);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the request did not end: {seen:?}");
}

fn patient_with(driver: &Driver, kind: CoverageKind, nth: usize) -> String {
    let people = &driver.sandbox().ehr.people;
    people.iter().filter(|p| p.coverage == kind).nth(nth).unwrap().patient_id.clone()
}

/// The plan's Patient id of the EHR's patient.
fn member_of(driver: &Driver, patient: &str) -> String {
    let person = driver.sandbox().ehr.person(patient).unwrap().clone();
    let plan = &driver.sandbox().plan;
    plan.members.iter().find(|m| m.member_id == person.member_id).unwrap().patient_id.clone()
}

fn received(driver: &Driver, operation: &str) -> Vec<Value> {
    let received = driver.sandbox().plan.provider_access.received.lock().unwrap();
    received.iter().filter(|(o, _)| o == operation).map(|(_, p)| p.clone()).collect()
}

fn parameter<'a>(parameters: &'a Value, name: &str) -> Option<&'a Value> {
    parameters["parameter"].as_array().unwrap().iter().find(|p| p["name"] == name)
}

async fn audited(driver: &Driver) -> Vec<store::AuditEntry> {
    driver.prepared.state.launches.store().audit_since(0).await.unwrap()
}

#[tokio::test]
async fn match_export_review_write_back_and_a_delta_refresh() {
    let mut driver = Driver::new(3600).await;
    let launch = driver.launch("pat-001").await;
    let (status, plan) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let (status, asked) = ask(&mut driver, &launch, "Download").await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    assert_eq!(asked["stage"], "Matching", "{asked}");
    assert!(asked["asked_by"].as_str().unwrap().ends_with("Practitioner/prac-alvarez"), "{asked}");
    // Asking again while it runs shows the same request.
    let (_, again) = ask(&mut driver, &launch, "Download").await;
    assert_eq!(again["asked_at"], asked["asked_at"]);
    let (done, seen) = finished(&mut driver, &launch).await;
    assert_eq!(seen, ["Matching", "Exporting", "Ready"], "{done}");
    let resources = done["stage"]["Ready"]["resources"].as_u64().unwrap();
    assert!(resources > 10, "{done}");

    // One member match, with the attestation by the clinician's NPI; one export, explicit.
    let matches = received(&driver, "member-match");
    assert_eq!(matches.len(), 1);
    let bundle = parameter(&matches[0], "MemberBundle").unwrap();
    let consent = bundle["part"].as_array().unwrap().iter().find(|p| p["name"] == "Consent");
    let consent = &consent.unwrap()["resource"];
    assert_eq!(consent["scope"]["coding"][0]["code"], "patient-privacy");
    assert!(consent.to_string().contains("1234567893"), "{consent}");
    let exports = received(&driver, "export");
    assert_eq!(exports.len(), 1);
    let export_type = &parameter(&exports[0], "exportType").unwrap()["valueCode"];
    assert_eq!(export_type, "hl7.fhir.us.davinci-pdex#provider-download");
    let types = parameter(&exports[0], "_type").unwrap()["valueString"].as_str().unwrap();
    assert!(types.split(',').any(|t| t == "Coverage"), "{types}");
    assert!(parameter(&exports[0], "_since").is_none());
    assert_eq!(driver.sandbox().plan.provider_access.open_requests(), 0, "cleaned up");

    // The review: the identity check passed, the plan's member is shown, items are rows.
    let (status, view) = driver.server_fn("provider_access_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let rows = view["items"].as_array().unwrap().clone();
    assert_eq!(rows.len() as u64, resources);
    let (_, plan) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert!(plan["answer"]["member"].is_object(), "{plan}");
    let (status, held) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(held["items"], view["items"]);

    // Written with the plan's Provenance kept.
    let keys = choose(&rows, 3, 0);
    select_only(&mut driver, &launch, &rows, &keys).await;
    let (status, result) = add(&mut driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert!(!result["provenance"].as_array().unwrap().is_empty(), "{result}");

    // Something new at the plan; the delta asks only for what changed since the import.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let member = member_of(&driver, "pat-001");
    driver
        .sandbox()
        .plan
        .store
        .put(json!({
            "resourceType": "Condition", "id": "pa-delta-1",
            "subject": {"reference": format!("Patient/{member}")},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}], "text": "Hypertension"},
            "recordedDate": "2026-11-30"
        }))
        .unwrap();
    let (status, delta) = ask(&mut driver, &launch, "Delta").await;
    assert_eq!(status, StatusCode::OK, "{delta}");
    let (done, _) = finished(&mut driver, &launch).await;
    assert_eq!(done["purpose"], "Delta");
    assert_eq!(done["stage"]["Ready"]["resources"], 1, "{done}");
    let exports = received(&driver, "export");
    let since = parameter(&exports[1], "_since").unwrap()["valueInstant"].as_str().unwrap();
    assert!(since.starts_with("20"), "{since}");
    assert_eq!(
        parameter(&exports[1], "exportType").unwrap()["valueCode"],
        "hl7.fhir.us.davinci-pdex#provider-delta"
    );
    assert_eq!(received(&driver, "member-match").len(), 2, "matched again: a Group is short-lived");
    let (status, view) = driver.server_fn("provider_access_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["items"][0]["key"], "Condition/pa-delta-1", "{view}");

    // Audited: the ask, the exports read.
    let entries = audited(&driver).await;
    let count = |action: store::AuditAction| entries.iter().filter(|e| e.action == action).count();
    assert!(count(store::AuditAction::PlanAsked) >= 2);
    assert!(count(store::AuditAction::PlanHistoryRead) >= 2);
}

#[tokio::test]
async fn a_later_launch_finds_the_request_and_another_patient_does_not() {
    let mut driver = Driver::new(3600).await;
    let launch = driver.launch("pat-002").await;
    ask(&mut driver, &launch, "Snapshot").await;
    // The clinician closes the app; a new browser launches the same patient later.
    driver.clear_cookies();
    let later = driver.launch("pat-002").await;
    let (done, _) = finished(&mut driver, &later).await;
    assert_eq!(done["purpose"], "Snapshot");
    assert!(done["stage"]["Ready"].is_object(), "{done}");
    let (status, view) = driver.server_fn("provider_access_open", &[("launch", &later)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    // A snapshot is to view only: nothing of it goes into the chart.
    assert_eq!(view["view_only"], true);
    let rows = view["items"].as_array().unwrap().clone();
    select_only(&mut driver, &later, &rows, &choose(&rows, 2, 0)).await;
    let (status, refused) = add(&mut driver, &later).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("view only"), "{refused}");
    // Another patient's launch sees none of it.
    let other = driver.launch("pat-003").await;
    let (status, none) = driver.server_fn("provider_access_status", &[("launch", &other)]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(none.is_null(), "{none}");
    let (status, refused) = driver.server_fn("provider_access_open", &[("launch", &other)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    // And the first launch's id is not this browser's.
    let (status, _) = driver.server_fn("provider_access_status", &[("launch", &launch)]).await;
    assert_ne!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_restart_while_polling_resumes_from_the_saved_step() {
    let short_lease = |c: &mut service::AppConfig| c.store.job_lease_seconds = 1;
    let mut driver = Driver::with(3600, |_| {}, short_lease).await;
    driver.sandbox().plan.provider_access.set_behaviour(|b| b.delay = Duration::from_secs(3));
    let launch = driver.launch("pat-001").await;
    let (status, asked) = ask(&mut driver, &launch, "Download").await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    driver.restart(short_lease).await;
    // The old server stops at its next step; its lease runs out; the new one takes over.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let state = driver.prepared.state.clone();
    assert_eq!(service::provider_access::resume(&state).await.unwrap(), 1);
    assert_eq!(service::provider_access::resume(&state).await.unwrap(), 0, "taken once");
    let (done, _) = finished(&mut driver, &launch).await;
    assert!(done["stage"]["Ready"].is_object(), "{done}");
    assert_eq!(received(&driver, "member-match").len(), 1, "polled on, not asked again");
    assert_eq!(received(&driver, "export").len(), 1);
    let (status, view) = driver.server_fn("provider_access_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
}

#[tokio::test]
async fn a_member_the_plan_cannot_match_is_not_matched_and_audited() {
    let mut driver = Driver::new(3600).await;
    // Two members share this subscriber id and demographics: the plan matches neither.
    let patient = patient_with(&driver, CoverageKind::SubscriberOnly, 1);
    let launch = driver.launch(&patient).await;
    let (status, asked) = ask(&mut driver, &launch, "Download").await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    let (done, _) = finished(&mut driver, &launch).await;
    assert_eq!(done["stage"], "NotMatched", "{done}");
    assert!(received(&driver, "export").is_empty());
    let (status, refused) = driver.server_fn("provider_access_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let refused = audited(&driver)
        .await
        .into_iter()
        .filter(|e| e.action == store::AuditAction::MemberMatchRefused)
        .count();
    assert_eq!(refused, 1);
}

#[tokio::test]
async fn an_opted_out_member_is_said_so_only_when_the_plan_says_so() {
    let mut driver = Driver::new(3600).await;
    let member = member_of(&driver, "pat-002");
    driver.sandbox().plan.provider_access.opted_out.lock().unwrap().insert(member);
    let launch = driver.launch("pat-002").await;
    ask(&mut driver, &launch, "Download").await;
    let (done, _) = finished(&mut driver, &launch).await;
    assert_eq!(done["stage"], "OptedOut", "{done}");
    // A plan that folds opt-outs into the non-matched is not second-guessed.
    driver.sandbox().plan.provider_access.set_behaviour(|b| b.report_opt_outs = false);
    ask(&mut driver, &launch, "Download").await;
    let (done, _) = finished(&mut driver, &launch).await;
    assert_eq!(done["stage"], "NotMatched", "{done}");
    assert!(received(&driver, "export").is_empty());
}

#[tokio::test]
async fn an_export_that_fails_half_way_says_the_plans_words() {
    let mut driver = Driver::new(3600).await;
    driver.sandbox().plan.provider_access.set_behaviour(|b| {
        b.fail_exports = true;
        b.delay = Duration::from_secs(2);
    });
    let launch = driver.launch("pat-001").await;
    ask(&mut driver, &launch, "Download").await;
    let (done, _) = finished(&mut driver, &launch).await;
    let message = done["stage"]["Failed"]["message"].as_str().unwrap();
    assert!(message.contains("stopped half-way"), "{message}");
    assert!(message.contains("Sandbox Health Plan"), "{message}");
    let (status, _) = driver.server_fn("provider_access_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Asking again works once the plan does.
    driver.sandbox().plan.provider_access.set_behaviour(|b| b.fail_exports = false);
    ask(&mut driver, &launch, "Download").await;
    let (done, _) = finished(&mut driver, &launch).await;
    assert!(done["stage"]["Ready"].is_object(), "{done}");
}

#[tokio::test]
async fn a_match_answered_as_a_manifest_of_groups_and_small_files_read_whole() {
    let mut driver = Driver::new(3600).await;
    driver.sandbox().plan.provider_access.set_behaviour(|b| {
        b.match_as_manifest = true;
        b.lines_per_file = 3;
    });
    let launch = driver.launch("pat-001").await;
    ask(&mut driver, &launch, "Download").await;
    let (done, _) = finished(&mut driver, &launch).await;
    assert!(done["stage"]["Ready"].is_object(), "{done}");
    let (status, view) = driver.server_fn("provider_access_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(
        view["items"].as_array().unwrap().len() as u64,
        done["stage"]["Ready"]["resources"].as_u64().unwrap()
    );
}

/// The export's resources for pat-001 with small files, its manifest paged or not.
async fn exported_with(files_per_manifest: usize) -> (u64, Value) {
    let mut driver = Driver::new(3600).await;
    driver.sandbox().plan.provider_access.set_behaviour(|b| {
        b.lines_per_file = 3;
        b.files_per_manifest = files_per_manifest;
    });
    let launch = driver.launch("pat-001").await;
    ask(&mut driver, &launch, "Download").await;
    let (done, _) = finished(&mut driver, &launch).await;
    let resources = done["stage"]["Ready"]["resources"].as_u64().unwrap();
    let (status, view) = driver.server_fn("provider_access_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    (resources, view)
}

#[tokio::test]
async fn a_paged_manifest_is_read_to_its_last_page() {
    let (whole, _) = exported_with(0).await;
    let (paged, view) = exported_with(2).await;
    assert!(whole > 6, "more than one page of files: {whole}");
    assert_eq!(paged, whole, "every page's files were read");
    assert!(!view.to_string().contains("pages"), "{view}");
}
