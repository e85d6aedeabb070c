//! The member's side of member-authorized access (see `service::member_access`), on the
//! member's own device: no session, no app; the link starts the plan's sign-in, the plan
//! sends the member back to the callback, and a short page says what to do next.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use service::AppState;
use smart::CallbackParams;

/// `GET /member-access/{handle}`: on to the plan's sign-in.
pub async fn handoff(State(state): State<AppState>, Path(handle): Path<String>) -> Response {
    match service::member_access::handoff(&state, &handle).await {
        Ok(url) => Redirect::to(url.as_str()).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "member sign-in link refused");
            page(StatusCode::NOT_FOUND, e.message())
        }
    }
}

/// `GET /member-access/{handle}/qr.svg`: the link as a QR code, for the patient's phone
/// (only while the link is valid).
pub async fn qr(State(state): State<AppState>, Path(handle): Path<String>) -> Response {
    if service::member_access::handoff(&state, &handle).await.is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let link = service::member_access::link(&state, &handle);
    match qrcode::QrCode::new(link.as_str().as_bytes()) {
        Ok(code) => {
            let svg =
                code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build();
            ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg)
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /member-callback?code&state`: back from the plan's sign-in.
pub async fn callback(
    State(state): State<AppState>,
    Query(params): Query<CallbackParams>,
) -> Response {
    match service::member_access::callback(&state, &params).await {
        Ok(()) => page(
            StatusCode::OK,
            "Thank you. You can give the device back to your clinician, or close this page.",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "member sign-in callback refused");
            page(StatusCode::BAD_REQUEST, e.message())
        }
    }
}

fn page(status: StatusCode, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Member History</title></head><body><main><h1>Member History</h1><p data-testid=\"member-access-said\">{}</p></main></body></html>",
        html_escape(text)
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
