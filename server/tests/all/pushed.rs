//! A plan pushing a member's history (PDex §3-4-3) to `/pdex/push`: stored once by member,
//! offered at the member's next launch, opened after the identity check; and everything a
//! push must not get away with, answered 4xx with nothing stored.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use sandbox::push::Push;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::common::writeback::{add, choose, select_only};
use crate::common::{Driver, APP};

fn push_url() -> String {
    format!("{APP}/pdex/push")
}

async fn send(driver: &Driver, push: &Push) -> (StatusCode, Value) {
    send_raw(driver, Some(&push.token), "application/fhir+json", push.body.clone()).await
}

async fn send_raw(
    driver: &Driver,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = Request::post("/pdex/push").header(header::CONTENT_TYPE, content_type);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = driver.router.clone().oneshot(request.body(Body::from(body)).unwrap()).await;
    let response = response.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The plan's Patient id and member id of the EHR's patient.
fn member_of(driver: &Driver, patient: &str) -> (String, String) {
    let person = driver.sandbox().ehr.person(patient).unwrap().clone();
    let plan = &driver.sandbox().plan;
    let member = plan.members.iter().find(|m| m.member_id == person.member_id).unwrap();
    (member.patient_id.clone(), member.member_id.clone())
}

async fn stored(driver: &Driver, member_id: &str) -> usize {
    let store = driver.prepared.state.launches.store();
    let subject = format!("sandbox-plan|{member_id}");
    store.jobs_about(store::JobKind::PushedHistory, &subject, 10).await.unwrap().len()
}

fn diagnostics(outcome: &Value) -> String {
    outcome["issue"][0]["diagnostics"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_pushed_history_is_kept_once_and_offered_at_the_members_next_launch() {
    let mut driver = Driver::new(3600).await;
    let (plan_patient, member_id) = member_of(&driver, "pat-001");
    let plan = driver.sandbox().plan.clone();
    let bundle = plan.everything_bundle(&plan_patient);
    let (status, outcome) = send(&driver, &plan.push_of(&bundle, &push_url())).await;
    assert_eq!(status, StatusCode::CREATED, "{outcome}");
    // The same Bundle again, with a new token: kept once.
    let (status, outcome) = send(&driver, &plan.push_of(&bundle, &push_url())).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(stored(&driver, &member_id).await, 1);

    let launch = driver.launch("pat-001").await;
    let (status, offered) = driver.server_fn("pushed_history_status", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{offered}");
    let resources = offered["resources"].as_u64().unwrap();
    assert!(resources > 10, "{offered}");
    assert_eq!(offered["payer"]["id"], "sandbox-plan");
    let (status, view) = driver.server_fn("pushed_history_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["items"].as_array().unwrap().len() as u64, resources);
    let (_, plan_status) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert!(plan_status["answer"]["member"].is_object(), "{plan_status}");
    // Written like any route's items, the plan's Provenance kept.
    let rows = view["items"].as_array().unwrap().clone();
    let keys = choose(&rows, 3, 0);
    select_only(&mut driver, &launch, &rows, &keys).await;
    let (status, result) = add(&mut driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert!(!result["provenance"].as_array().unwrap().is_empty(), "{result}");

    // Another patient is offered nothing of it.
    let other = driver.launch("pat-002").await;
    let (status, none) = driver.server_fn("pushed_history_status", &[("launch", &other)]).await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert!(none.is_null(), "{none}");
    let (status, refused) = driver.server_fn("pushed_history_open", &[("launch", &other)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
}

#[tokio::test]
async fn a_push_naming_the_member_but_about_someone_else_is_never_shown() {
    let mut driver = Driver::new(3600).await;
    let (plan_patient, _) = member_of(&driver, "pat-001");
    let plan = driver.sandbox().plan.clone();
    let mut bundle = plan.everything_bundle(&plan_patient);
    for entry in bundle["entry"].as_array_mut().unwrap() {
        if entry["resource"]["resourceType"] == "Patient" {
            entry["resource"]["name"] = json!([{"family": "Someoneelse", "given": ["Other"]}]);
            entry["resource"]["birthDate"] = json!("1901-01-01");
        }
    }
    let (status, outcome) = send(&driver, &plan.push_of(&bundle, &push_url())).await;
    assert_eq!(status, StatusCode::CREATED, "{outcome}");
    let launch = driver.launch("pat-001").await;
    let (status, refused) = driver.server_fn("pushed_history_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["code"], "member_mismatch", "{refused}");
    let (status, history) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    assert_ne!(status, StatusCode::OK, "nothing to show: {history}");
}

#[tokio::test]
async fn what_a_push_must_not_get_away_with_is_refused_and_nothing_is_stored() {
    let driver = Driver::with(3600, |_| {}, |config| config.limits.max_push_bytes = 400_000).await;
    let (plan_patient, member_id) = member_of(&driver, "pat-003");
    let plan = driver.sandbox().plan.clone();
    let bundle = plan.everything_bundle(&plan_patient);
    let body = serde_json::to_vec(&bundle).unwrap();
    let sign = |body: &[u8]| plan.push_token(body, &push_url(), 300);
    let fhir = "application/fhir+json";
    let refused = |status: StatusCode, outcome: &Value, expected: StatusCode, says: &str| {
        assert_eq!(status, expected, "{outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert!(diagnostics(outcome).contains(says), "{says}: {outcome}");
    };

    let (s, o) = send_raw(&driver, None, fhir, body.clone()).await;
    refused(s, &o, StatusCode::UNAUTHORIZED, "Bearer");
    // Signed by a key the plan never registered, as the plan, or as a plan nobody knows.
    let stranger = jose::SigningKey::generate_es384().unwrap();
    let claims = |iss: &str| {
        let now = jose::now();
        json!({"iss": iss, "aud": push_url(), "iat": now, "exp": now + 300, "jti": jose::new_jti(),
               "bundle_sha256": "x"})
    };
    let forged = stranger.sign(&claims(plan.push_issuer()), None).unwrap();
    let (s, o) = send_raw(&driver, Some(&forged), fhir, body.clone()).await;
    refused(s, &o, StatusCode::UNAUTHORIZED, "refused");
    let unknown = stranger.sign(&claims("https://unknown-plan.example"), None).unwrap();
    let (s, o) = send_raw(&driver, Some(&unknown), fhir, body.clone()).await;
    refused(s, &o, StatusCode::UNAUTHORIZED, "not a plan registered");
    // Another endpoint's audience, a long-lived token, another body than the one signed.
    let elsewhere = plan.push_token(&body, "https://other-app.example/pdex/push", 300);
    let (s, o) = send_raw(&driver, Some(&elsewhere), fhir, body.clone()).await;
    refused(s, &o, StatusCode::UNAUTHORIZED, "aud");
    let long = plan.push_token(&body, &push_url(), 3600);
    let (s, o) = send_raw(&driver, Some(&long), fhir, body.clone()).await;
    refused(s, &o, StatusCode::UNAUTHORIZED, "5 minutes");
    let mut other_body = body.clone();
    other_body.push(b' ');
    let (s, o) = send_raw(&driver, Some(&sign(&body)), fhir, other_body).await;
    refused(s, &o, StatusCode::UNAUTHORIZED, "bundle_sha256");
    // Not JSON, not a Bundle, nobody's, two people's, not FHIR JSON, too large.
    for (bad, expected, says) in [
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, "not JSON"),
        (br#"{"resourceType":"Patient","id":"x"}"#.to_vec(), StatusCode::BAD_REQUEST, "Bundle"),
        (
            br#"{"resourceType":"Bundle","type":"collection","entry":[]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no Patient",
        ),
        (
            serde_json::to_vec(&json!({"resourceType": "Bundle", "type": "collection", "entry": [
                {"resource": {"resourceType": "Patient", "id": "a"}},
                {"resource": {"resourceType": "Patient", "id": "b"}}]}))
            .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "more than one Patient",
        ),
    ] {
        let (s, o) = send_raw(&driver, Some(&sign(&bad)), fhir, bad).await;
        refused(s, &o, expected, says);
    }
    let (s, o) = send_raw(&driver, Some(&sign(&body)), "text/plain", body.clone()).await;
    refused(s, &o, StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/fhir+json");
    let big = vec![b' '; 400_001];
    let (s, o) = send_raw(&driver, Some(&sign(&big)), fhir, big).await;
    refused(s, &o, StatusCode::PAYLOAD_TOO_LARGE, "larger than");
    assert_eq!(stored(&driver, &member_id).await, 0, "nothing stored");

    // A token used twice: the first push is kept, the replay refused.
    let token = sign(&body);
    let (s, o) = send_raw(&driver, Some(&token), fhir, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    let (s, o) = send_raw(&driver, Some(&token), fhir, body.clone()).await;
    refused(s, &o, StatusCode::CONFLICT, "used before");
    assert_eq!(stored(&driver, &member_id).await, 1);
}

#[tokio::test]
async fn a_chart_naming_the_member_by_subscriber_id_only_is_offered_the_push_too() {
    let mut driver = Driver::new(3600).await;
    let people = &driver.sandbox().ehr.people;
    let person =
        people.iter().find(|p| p.coverage == sandbox::synthetic::CoverageKind::SubscriberOnly);
    let person = person.unwrap().clone();
    let plan = driver.sandbox().plan.clone();
    let member = plan.members.iter().find(|m| m.subscriber_id == person.subscriber_id).unwrap();
    let bundle = plan.everything_bundle(&member.patient_id);
    let (status, outcome) = send(&driver, &plan.push_of(&bundle, &push_url())).await;
    assert_eq!(status, StatusCode::CREATED, "{outcome}");
    let launch = driver.launch(&person.patient_id).await;
    let (status, offered) = driver.server_fn("pushed_history_status", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{offered}");
    assert!(offered["resources"].as_u64().unwrap() > 0, "{offered}");
    let (status, view) = driver.server_fn("pushed_history_open", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
}
