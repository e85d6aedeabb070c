//! `POST /pdex/push`: a configured plan pushes a member's history (a `Patient/$everything`
//! Bundle, signed; see `service::push`). Answers are OperationOutcomes: 201 stored, 200
//! already held, a 4xx saying what to fix (nothing stored), 503 to push again later.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use service::push::PushRefusal;
use service::AppState;

pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let limit = state.config.limits.max_push_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return refused(&PushRefusal::TooLarge(limit));
    }
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    // The token first: nobody unauthenticated makes the server read a large body.
    let authorized = match service::push::authorize(
        &state,
        text(header::AUTHORIZATION),
        text(header::CONTENT_TYPE),
    )
    .await
    {
        Ok(authorized) => authorized,
        Err(refusal) => return refused(&refusal),
    };
    let timeout = Duration::from_secs(state.config.limits.body_timeout_seconds);
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if crate::edge::is_length_limit(&e) => {
            return refused(&PushRefusal::TooLarge(limit))
        }
        Ok(Err(_)) | Err(_) => {
            return outcome(
                StatusCode::BAD_REQUEST,
                "error",
                "incomplete",
                "The Bundle arrived incomplete or too slowly. Push it again.",
            )
        }
    };
    match service::push::accept(&state, authorized, &bytes).await {
        Ok(received) => {
            let (status, said) = if received.new {
                (StatusCode::CREATED, format!("Stored {} records for review when a clinician next opens this member's chart.", received.resources))
            } else {
                (StatusCode::OK, "This Bundle was already received; it is kept once.".to_owned())
            };
            let mut response = outcome(status, "information", "informational", &said);
            if let Ok(id) = HeaderValue::from_str(&received.id) {
                response.headers_mut().insert("x-push-id", id);
            }
            response
        }
        Err(refusal) => refused(&refusal),
    }
}

fn refused(refusal: &PushRefusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    // The detail stays here, once; the plan reads what to fix.
    tracing::warn!(status = status.as_u16(), error = %refusal, "push refused");
    let code = match status.as_u16() {
        401 => "login",
        409 => "duplicate",
        413 => "too-costly",
        503 => "transient",
        _ => "invalid",
    };
    let mut response = outcome(status, "error", code, &refusal.message());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    response
}

fn outcome(status: StatusCode, severity: &str, code: &str, text: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    });
    (status, [(header::CONTENT_TYPE, "application/fhir+json")], body.to_string()).into_response()
}
