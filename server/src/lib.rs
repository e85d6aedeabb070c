//! Member History's server: thin axum glue around `service`.
//!
//! - [`router`] builds every route from a [`ServerState`], so tests drive it without a socket.
//! - [`startup`] reads configuration (or starts the embedded sandbox) and serves.

pub mod cli;
pub mod frontend;
pub mod routes;
pub mod security;
pub mod session_store;
pub mod startup;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use leptos::prelude::provide_context;
use service::AppState;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::time::Duration;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::frontend::Frontend;
use crate::security::SecurityHeaders;
use crate::session_store::PrunedMemoryStore;

/// What the routes share: the one `AppState` and the built app.
#[derive(Debug, Clone, FromRef)]
pub struct ServerState {
    pub app: AppState,
    pub frontend: Arc<Frontend>,
}

/// Every route of the server.
pub fn router(state: AppState, frontend: Frontend, sessions: PrunedMemoryStore) -> Router {
    let config = &state.config;
    let security = Arc::new(SecurityHeaders::new(&config.public_url, &state.frame_ancestors()));
    let session_layer = SessionManagerLayer::new(sessions)
        .with_name("mh_session")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(config.public_url.scheme() == "https")
        .with_expiry(Expiry::OnInactivity(Duration::minutes(
            config.session_idle_minutes.max(1) as i64
        )));
    let frontend = Arc::new(frontend);
    let server = ServerState { app: state, frontend: frontend.clone() };

    let api = Router::new()
        .route("/api/{*fn_name}", post(server_fns))
        .layer(axum::middleware::from_fn_with_state(security.clone(), security::same_origin))
        .layer(RequestBodyLimitLayer::new(1024 * 1024));

    Router::new()
        .route("/launch", get(routes::launch))
        .route("/callback", get(routes::callback))
        .route("/.well-known/jwks.json", get(routes::jwks))
        .route("/healthz", get(routes::healthz))
        .merge(api)
        .fallback_service(frontend.service())
        .with_state(server)
        .layer(session_layer)
        .layer(axum::middleware::from_fn_with_state(security, security::headers))
        // Spans carry the method and path only: query strings hold launch ids, codes and state.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
            tracing::info_span!("request", method = %request.method(), path = %loggable_path(request.uri().path()))
        }))
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
