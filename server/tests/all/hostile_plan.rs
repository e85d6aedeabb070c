//! What a misbehaving plan can do to Member History: nothing worse than a clear message.
//! Each case points the configured plan at a hostile CDS service and asks it once.
#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::StatusCode;
use common::hostile::{self, card, Mode};
use common::Driver;
use serde_json::{json, Value};

/// Asks a plan that answers with `mode`; returns the server function's status and body.
async fn ask_hostile(mode: Mode) -> (StatusCode, Value) {
    let (base, _task) = hostile::start(mode).await;
    let mut driver = Driver::with(
        3600,
        |_| {},
        |config| {
            let payer = &mut config.payers[0];
            payer.cds_base = url::Url::parse(&base).unwrap();
            payer.timeout_seconds = 2;
        },
    )
    .await;
    let launch = driver.launch("pat-001").await;
    driver.server_fn("request_plan_history", &[("launch", &launch)]).await
}

fn assert_plan_error(status: StatusCode, body: &Value, expect: &str) {
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["code"], "plan_unavailable", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("Sandbox Health Plan"), "the message names the plan: {message}");
    assert!(message.contains(expect), "{message}");
}

fn notes(body: &Value) -> String {
    body["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn invalid_json() {
    let (status, body) =
        ask_hostile(Mode::Raw("application/json", "{\"cards\": [ {\"summary\": ".into())).await;
    assert_plan_error(status, &body, "cannot read");
}

#[tokio::test]
async fn wrong_content_type() {
    let (status, body) =
        ask_hostile(Mode::Raw("text/html", "<html><body>Service unavailable</body></html>".into()))
            .await;
    assert_plan_error(status, &body, "text/html");
}

#[tokio::test]
async fn text_json_is_tolerated() {
    let body = json!({"cards": [card(json!({"summary": "Served as text/json"}))]}).to_string();
    let (status, body) = ask_hostile(Mode::Raw("text/json", body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cards"][0]["summary"], "Served as text/json");
}

#[tokio::test]
async fn a_20_mb_body() {
    let (status, body) = ask_hostile(Mode::Huge(20 * 1024 * 1024)).await;
    assert_plan_error(status, &body, "too large");
}

#[tokio::test]
async fn a_30_second_stall() {
    let started = std::time::Instant::now();
    let (status, body) = ask_hostile(Mode::Stall).await;
    assert_plan_error(status, &body, "did not answer within 2 seconds");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

#[tokio::test]
async fn missing_required_card_fields() {
    let (status, body) = ask_hostile(Mode::Json(json!({"cards": [
        {"uuid": "a", "indicator": "info", "source": {"label": "P"}},
        {"uuid": "b", "summary": "No source", "indicator": "info"},
        {"uuid": "c", "summary": "", "indicator": "info", "source": {"label": "P"}},
        card(json!({"summary": "The good one"}))
    ]})))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cards"].as_array().unwrap().len(), 1);
    let notes = notes(&body);
    assert!(notes.contains("missing field `summary`"), "{notes}");
    assert!(notes.contains("missing field `source`"), "{notes}");
    assert!(notes.contains("summary is empty"), "{notes}");
}

#[tokio::test]
async fn an_unknown_indicator() {
    let (status, body) =
        ask_hostile(Mode::Json(json!({"cards": [card(json!({"indicator": "success"}))]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cards"][0]["indicator"], "info");
    assert!(notes(&body).contains("unknown indicator `success`"));
}

#[tokio::test]
async fn duplicate_uuids() {
    let (status, body) = ask_hostile(Mode::Json(
        json!({"cards": [card(json!({"uuid": "same"})), card(json!({"uuid": "same"}))]}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["cards"].as_array().unwrap().iter().all(|c| c["feedback_allowed"] == false));
    assert!(notes(&body).contains("share a uuid"));
}

#[tokio::test]
async fn five_thousand_cards() {
    let cards: Vec<Value> =
        (0..5000).map(|i| card(json!({"summary": format!("Card {i}")}))).collect();
    let (status, body) = ask_hostile(Mode::Json(json!({"cards": cards}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cards"].as_array().unwrap().len(), 50);
    assert!(notes(&body).contains("5000 cards"));
}

#[tokio::test]
async fn javascript_and_data_links_are_removed() {
    let (status, body) = ask_hostile(Mode::Json(json!({"cards": [hostile::xss_card()]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body.to_string();
    assert!(!text.contains("\"url\":\"javascript:"), "{text}");
    assert!(!text.contains("\"url\":\"data:"), "{text}");
    assert!(body["cards"][0]["source_url"].is_null());
    assert!(notes(&body).contains("only http and https links"));
}

#[tokio::test]
async fn script_in_detail_is_sanitised() {
    let (status, body) = ask_hostile(Mode::Json(json!({"cards": [hostile::xss_card()]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let detail = body["cards"][0]["detail_html"].as_str().unwrap();
    assert!(!detail.contains("<script"), "{detail}");
    assert!(!detail.contains("<img"), "{detail}");
    assert!(!detail.contains("href=\"javascript"), "{detail}");
    // Summary, labels and reasons go to the page as text (escaped by the renderer); the
    // browser test checks that nothing runs.
    assert!(body["cards"][0]["summary"].as_str().unwrap().contains("<script>"));
}

#[tokio::test]
async fn http_404_with_cards_is_shown() {
    let (status, body) = ask_hostile(Mode::Status(
        404,
        json!({"cards": [card(json!({"summary": "Member not found"}))]}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "NotMatched");
    assert_eq!(body["cards"][0]["summary"], "Member not found");
}

#[tokio::test]
async fn http_422_with_cards_is_shown() {
    let (status, body) = ask_hostile(Mode::Status(
        422,
        json!({"cards": [card(json!({"summary": "Several members match"}))]}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "NotMatched");
}

#[tokio::test]
async fn http_500() {
    let (status, body) = ask_hostile(Mode::Status(500, json!({"error": "boom"}))).await;
    assert_plan_error(status, &body, "HTTP 500");
}

#[tokio::test]
async fn http_401() {
    let (status, body) = ask_hostile(Mode::Status(401, json!({}))).await;
    assert_plan_error(status, &body, "credentials");
}

#[tokio::test]
async fn no_cards_list() {
    let (status, body) = ask_hostile(Mode::Json(json!({"cards": "none", "message": "ok"}))).await;
    assert_plan_error(status, &body, "no `cards` list");
}

#[tokio::test]
async fn an_empty_200() {
    let (status, body) = ask_hostile(Mode::Raw("application/json", String::new())).await;
    assert_plan_error(status, &body, "empty answer");
}

#[tokio::test]
async fn no_appointment_book_service() {
    let (status, body) = ask_hostile(Mode::NoService).await;
    assert_plan_error(status, &body, "does not offer a appointment-book service");
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (status, body) = ask_hostile(Mode::Redirect).await;
    assert_plan_error(status, &body, "HTTP 302");
}

#[tokio::test]
async fn a_pointer_to_an_unconfigured_fhir_server_is_not_followed() {
    let app_context =
        json!({"fhirServer": "https://evil.example/fhir", "patient": "m1", "accessToken": "t"})
            .to_string();
    let (status, body) = ask_hostile(Mode::Json(json!({"cards": [card(json!({
        "links": [{"label": "Open", "url": "https://app.example/launch", "type": "smart", "appContext": app_context}]
    }))]})))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["data_problem"].as_str().unwrap().contains("not configured"), "{body}");
    assert_eq!(body["cards"][0]["links"][0]["kind"], "OtherApp");
}

/// Feedback on a card that another tab replaced meanwhile (by asking the plan again) is not
/// recorded on the new answer's card: 409, and a message that says to reload.
#[tokio::test]
async fn feedback_on_a_card_replaced_meanwhile_is_refused() {
    use tower::ServiceExt;
    let (base, _task) = hostile::start(Mode::NewCardEachAnswer).await;
    let mut driver = Driver::with(
        3600,
        |_| {},
        |config| config.payers[0].cds_base = url::Url::parse(&base).unwrap(),
    )
    .await;
    let launch = driver.launch("pat-001").await;
    let (status, first) = driver.server_fn("request_plan_history", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // Feedback on card 0 is sent (the plan takes two seconds to answer it) …
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/card_feedback")
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", driver.cookie().unwrap())
        .body(axum::body::Body::from(format!("launch={launch}&card=0")))
        .unwrap();
    let feedback = tokio::spawn(driver.router.clone().oneshot(request));
    let arrived = || hostile::FEEDBACK_RECEIVED.load(std::sync::atomic::Ordering::SeqCst) > 0;
    for _ in 0..100 {
        if arrived() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(arrived(), "the feedback did not reach the plan");
    // … while another tab asks the plan again and gets a new card 0.
    let (status, _) = driver.server_fn("request_plan_history", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK);
    let response = feedback.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "stale", "{body}");
    assert!(body["message"].as_str().unwrap().contains("Reload"), "{body}");
    // The new card carries no feedback.
    let (_, status) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert!(!status.to_string().contains("Dismissed"), "{status}");
}
