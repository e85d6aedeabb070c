//! Member History's server: thin axum glue around `service`.
//!
//! - [`router`] builds every route from a [`ServerState`], so tests drive it without a socket.
//! - [`startup`] reads the configuration file and serves.

pub mod audit_export;
pub mod cli;
pub mod edge;
pub mod frame_cookies;
pub mod frontend;
pub mod logging;
pub mod member_access;
pub mod push;
pub mod routes;
pub mod security;
pub mod serve;
pub mod startup;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use leptos::prelude::provide_context;
use service::AppState;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::time::Duration as CookieDuration;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::edge::ApiEdge;
use crate::frontend::Frontend;
use crate::routes::LaunchLimiter;
use crate::security::SecurityHeaders;
use store::StoreSessions;

/// What the routes share: the one `AppState`, the built app, the session store (a launch
/// checks it has room) and the per-client launch rate limit.
#[derive(Debug, Clone, FromRef)]
pub struct ServerState {
    pub app: AppState,
    pub frontend: Arc<Frontend>,
    pub sessions: StoreSessions,
    pub launch_limiter: Arc<LaunchLimiter>,
}

/// Every route of the server.
pub fn router(state: AppState, frontend: Frontend) -> Router {
    let config = &state.config;
    let limits = &config.limits;
    // In the store: sessions survive a restart and are shared by every server on it.
    let sessions = StoreSessions::new(state.launches.store().clone(), limits.max_sessions);
    let security = Arc::new(SecurityHeaders::new(&config.public_url, &state.frame_ancestors()));
    // Saved on every request, so the idle timeout counts from the last use; a session is
    // only ever created when a launch writes into it.
    let session_layer = SessionManagerLayer::new(sessions.clone())
        .with_name("mh_session")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(config.public_url.scheme() == "https")
        .with_always_save(true)
        .with_expiry(Expiry::OnInactivity(CookieDuration::minutes(
            config.session_idle_minutes.max(1) as i64,
        )));
    let edge = Arc::new(ApiEdge::new(
        config.public_url.origin().ascii_serialization(),
        limits.max_body_bytes,
        Duration::from_secs(limits.body_timeout_seconds),
    ));
    let in_progress = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests));
    let request_timeout = Duration::from_secs(limits.request_timeout_seconds);
    let frontend = Arc::new(frontend);
    let server = ServerState {
        launch_limiter: Arc::new(LaunchLimiter::new(limits.launches_per_minute_per_client)),
        app: state.clone(),
        frontend: frontend.clone(),
        sessions,
    };

    let api = Router::new()
        .route("/api/{*fn_name}", post(server_fns))
        .layer(axum::middleware::from_fn_with_state(edge, edge::api_edge));
    // Only the launch, the callback and the server functions touch the session: the app's
    // files (cached publicly for a year) and the JWKS never carry a Set-Cookie that a shared
    // cache could hand to someone else.
    let with_session = Router::new()
        .route("/launch", get(routes::launch))
        .route("/callback", get(routes::callback))
        .merge(api)
        .layer(axum::middleware::from_fn(frame_cookies::mark))
        .layer(session_layer)
        .layer(axum::middleware::from_fn(frame_cookies::rewrite));

    Router::new()
        .merge(with_session)
        .route("/.well-known/jwks.json", get(routes::jwks))
        .route("/healthz", get(routes::healthz))
        // The member's own device: no session, no app.
        .route("/member-access/{handle}", get(member_access::handoff))
        .route("/member-access/{handle}/qr.svg", get(member_access::qr))
        .route("/member-callback", get(member_access::callback))
        .fallback_service(frontend.service())
        .with_state(server)
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        // Pushed Bundles are larger than any browser request: read within their own limit.
        .merge(Router::new().route("/pdex/push", post(push::receive)).with_state(state.clone()))
        .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, request_timeout))
        .layer(axum::middleware::from_fn_with_state(in_progress, shed_load))
        .layer(axum::middleware::from_fn_with_state(security, security::headers))
        // Spans carry the method and path only: query strings hold launch ids, codes and state.
        // Only our own faults (500) are errors; an EHR or plan that failed was logged where
        // its error was read.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    tracing::info_span!("request", method = %request.method(), path = %loggable_path(request.uri().path()))
                })
                .on_failure(|class: ServerErrorsFailureClass, latency: Duration, _: &tracing::Span| {
                    match class {
                        ServerErrorsFailureClass::StatusCode(StatusCode::INTERNAL_SERVER_ERROR) => {
                            tracing::error!(latency_ms = latency.as_millis() as u64, "request failed (500)")
                        }
                        other => tracing::debug!(%other, latency_ms = latency.as_millis() as u64, "request failed"),
                    }
                }),
        )
}

/// More requests in progress than configured: 503 at once, rather than a queue that grows.
async fn shed_load(
    State(in_progress): State<Arc<tokio::sync::Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = in_progress.try_acquire() else {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            "Member History is busy. Try again in a few seconds.",
        )
            .into_response();
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return response;
    };
    next.run(request).await
}

async fn server_fns(State(state): State<AppState>, request: Request<Body>) -> impl IntoResponse {
    leptos_axum::handle_server_fns_with_context(move || provide_context(state.clone()), request)
        .await
}

/// Makes sure the app crate (and so its server functions) is linked in.
pub fn register_server_fns() {
    app::register_server_fns();
}

/// The path as logged: launch ids in `/review/{id}` are capabilities, so they are cut off.
fn loggable_path(path: &str) -> &str {
    match path.strip_prefix("/review/") {
        Some(_) => "/review/…",
        None => path,
    }
}
