//! What every server-function call passes on its way in and out: the CSRF check, the body
//! read within its size and time limits, an unknown function answered 404, and the error's
//! stable code turned into the HTTP status that means it (the one table is
//! [`api::ErrorCode::http_status`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::security::check_csrf;

/// The server-function edge, configured once.
#[derive(Debug, Clone)]
pub struct ApiEdge {
    /// Our own origin (`scheme://host:port`).
    pub origin: String,
    pub max_body: usize,
    pub body_timeout: Duration,
    /// `/api/…` paths of the registered server functions.
    pub known: HashSet<String>,
}

impl ApiEdge {
    pub fn new(origin: String, max_body: usize, body_timeout: Duration) -> Self {
        let known =
            leptos::server_fn::axum::server_fn_paths().map(|(path, _)| path.to_owned()).collect();
        Self { origin, max_body, body_timeout, known }
    }
}

/// The header server functions set on an error answer (its body is the JSON `ApiError`).
const SERVER_FN_ERROR: HeaderName = HeaderName::from_static("serverfnerror");

/// A plain answer from the edge itself (before any function ran), in the server functions'
/// error shape so the app shows its message.
fn refuse(status: StatusCode, code: api::ErrorCode, message: &str) -> Response {
    let body = api::ApiError::new(code, message);
    (status, axum::Json(body)).into_response()
}

pub async fn api_edge(State(edge): State<Arc<ApiEdge>>, request: Request, next: Next) -> Response {
    if let Err(refusal) = check_csrf(request.method(), request.headers(), &edge.origin) {
        tracing::warn!(?refusal, "server function call refused");
        return refusal.response();
    }
    if !edge.known.contains(request.uri().path()) {
        return refuse(
            StatusCode::NOT_FOUND,
            api::ErrorCode::BadRequest,
            "There is no such server function. Reload the page.",
        );
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(edge.body_timeout, axum::body::to_bytes(body, edge.max_body));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_length_limit(&e) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                api::ErrorCode::BadRequest,
                "The request was too large. Select fewer items at a time.",
            )
        }
        Ok(Err(_)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                api::ErrorCode::BadRequest,
                "The request arrived incomplete. Try again.",
            )
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                api::ErrorCode::BadRequest,
                "The request took too long to arrive. Try again.",
            )
        }
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    with_error_status(response).await
}

/// Whether reading failed on a length limit (ours, or the outer body limit's, which comes
/// wrapped in a body error or two).
pub(crate) fn is_length_limit(e: &axum::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(error) = next {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// Server functions answer every error 500; the body names its code, and the code its status.
async fn with_error_status(response: Response) -> Response {
    if !response.headers().contains_key(SERVER_FN_ERROR) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(error) = serde_json::from_slice::<api::ApiError>(&bytes) {
        parts.status = StatusCode::from_u16(error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    Response::from_parts(parts, Body::from(bytes))
}
