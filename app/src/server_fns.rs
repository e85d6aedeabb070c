//! Server functions: public endpoints under `/api/…`. Each one checks the browser session
//! and the launch it touches itself (in `service`), whatever page called it.

use api::{ApiError, EhrChoice, ReviewContext};
use leptos::prelude::*;

/// The EHRs a clinician can start a standalone launch with.
#[server(endpoint = "ehrs")]
pub async fn configured_ehrs() -> Result<Vec<EhrChoice>, ApiError> {
    let state = ssr::state()?;
    Ok(service::configured_ehrs(&state))
}

/// The patient, user and look of a launch this browser owns.
#[server(endpoint = "review_context")]
pub async fn load_review_context(launch: String) -> Result<ReviewContext, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    service::context::review_context(&state, &session, &launch).await.map_err(ApiError::from)
}

#[cfg(feature = "ssr")]
mod ssr {
    use api::{ApiError, ErrorCode};
    use leptos::prelude::use_context;
    use service::AppState;
    use tower_sessions::Session;

    /// The state the server provides to every server function.
    pub fn state() -> Result<AppState, ApiError> {
        use_context::<AppState>().ok_or_else(|| {
            tracing::error!("server function called without AppState in context");
            ApiError::new(ErrorCode::Internal, "Member History's server is not set up correctly.")
        })
    }

    /// The caller's session (from the session layer).
    pub async fn session() -> Result<Session, ApiError> {
        leptos_axum::extract::<Session>().await.map_err(|e| {
            tracing::error!(error = %e, "no session layer");
            ApiError::new(ErrorCode::Internal, "Member History's server is not set up correctly.")
        })
    }
}
