//! The SMART launch routes, the JWKS, and the health check.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use service::AppState;
use smart::CallbackParams;
use tower_sessions::Session;

use crate::ServerState;

#[derive(Debug, Deserialize)]
pub struct LaunchQuery {
    pub iss: Option<String>,
    pub launch: Option<String>,
}

/// `GET /launch?iss=…&launch=…` (EHR launch) or `?iss=…` (standalone, from the start page).
pub async fn launch(
    State(server): State<ServerState>,
    session: Session,
    Query(q): Query<LaunchQuery>,
) -> Response {
    match service::launch::start(&server.app, &session, q.iss.as_deref(), q.launch.as_deref()).await
    {
        Ok(url) => Redirect::to(url.as_str()).into_response(),
        Err(e) => {
            tracing::warn!(code = e.code().as_str(), error = %e, "launch refused");
            server.frontend.launch_error(e.code())
        }
    }
}

/// `GET /callback?code=…&state=…` from the EHR's authorization endpoint.
pub async fn callback(
    State(server): State<ServerState>,
    session: Session,
    Query(params): Query<CallbackParams>,
) -> Response {
    match service::launch::complete(&server.app, &session, &params).await {
        Ok(launch_id) => Redirect::to(&format!("/review/{launch_id}")).into_response(),
        Err(e) => {
            tracing::warn!(code = e.code().as_str(), error = %e, "launch callback refused");
            server.frontend.launch_error(e.code())
        }
    }
}

/// Our public signing keys, for EHRs (client assertions) and plans (CDS Hooks JWTs).
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.jwks()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}
