//! The SMART launch routes, the JWKS, and the health check.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
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

/// Launches per client address per minute (`governor`'s keyed GCRA limiter).
#[derive(Debug)]
pub struct LaunchLimiter(
    governor::RateLimiter<
        IpAddr,
        governor::state::keyed::DefaultKeyedStateStore<IpAddr>,
        governor::clock::DefaultClock,
    >,
    /// Calls so far, to prune now and then.
    std::sync::atomic::AtomicU32,
);

impl LaunchLimiter {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self(
            governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute)),
            std::sync::atomic::AtomicU32::new(0),
        )
    }

    /// Whether `client` may start another launch now. Every 1,024th call drops the keys of
    /// clients back to a full allowance (a scan), so the map does not grow with every address
    /// and no single launch pays for the scan each time.
    pub fn allow(&self, client: IpAddr) -> bool {
        let calls = self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if calls % 1024 == 1023 {
            self.0.retain_recent();
        }
        self.0.check_key(&client).is_ok()
    }
}

/// The client's address, when the request came through our listener (not in router tests).
fn client_address(connect: Option<&ConnectInfo<SocketAddr>>) -> IpAddr {
    connect.map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// `GET /launch?iss=…&launch=…` (EHR launch) or `?iss=…` (standalone, from the start page).
/// A launch is what creates a session, so it is where sessions are capped and rate-limited.
pub async fn launch(
    State(server): State<ServerState>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    session: Session,
    Query(q): Query<LaunchQuery>,
) -> Response {
    if !server.launch_limiter.allow(client_address(connect.as_ref().map(|c| &c.0))) {
        tracing::warn!("launch refused: too many from one client");
        return busy(&server, StatusCode::TOO_MANY_REQUESTS);
    }
    if session.id().is_none() && server.sessions.is_full().await {
        tracing::warn!("launch refused: the session limit is reached");
        return busy(&server, StatusCode::SERVICE_UNAVAILABLE);
    }
    match service::launch::start(&server.app, &session, q.iss.as_deref(), q.launch.as_deref()).await
    {
        Ok(url) => Redirect::to(url.as_str()).into_response(),
        Err(e) => {
            tracing::warn!(code = e.code().as_str(), error = %e, "launch refused");
            server.frontend.launch_error(e.code())
        }
    }
}

fn busy(server: &ServerState, status: StatusCode) -> Response {
    let mut response = server.frontend.launch_error(api::LaunchErrorCode::Busy);
    *response.status_mut() = status;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    response
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
