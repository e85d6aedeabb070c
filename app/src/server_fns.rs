//! Server functions: public endpoints under `/api/…`. Each one checks the browser session
//! and the launch it touches itself (in `service`), whatever page called it.

use api::{
    ApiError, CardView, EhrChoice, HistoryView, ItemDetail, PlanAnswer, PlanStatus, ReviewContext,
    SelectionSummary, WritePreview, WriteResult,
};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

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

/// Which plan Member History will ask for the launched patient, and its answer so far.
#[server(endpoint = "plan_status")]
pub async fn load_plan_status(launch: String) -> Result<PlanStatus, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    service::plan::status(&state, &session, &launch).await.map_err(ApiError::from)
}

/// Asks the patient's plan for their history (the `appointment-book` hook, in place of the
/// EMR). `payer` and `member_id` are set when the clinician typed the member id.
#[server(endpoint = "request_plan_history")]
pub async fn request_plan_history(
    launch: String,
    payer: Option<String>,
    member_id: Option<String>,
) -> Result<PlanAnswer, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let ask = service::plan::HistoryRequest { payer_id: payer, member_id };
    service::plan::request_history(&state, &session, &launch, ask).await.map_err(ApiError::from)
}

/// Tells the plan what the clinician did with card `card`: accepted `suggestion`, or
/// dismissed it (with one of the card's override reasons and an optional comment).
#[server(endpoint = "card_feedback")]
pub async fn card_feedback(
    launch: String,
    card: usize,
    suggestion: Option<String>,
    reason: Option<String>,
    comment: Option<String>,
) -> Result<CardView, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let input = match suggestion {
        Some(suggestion) => service::plan::FeedbackInput::Accept { suggestion },
        None => service::plan::FeedbackInput::Dismiss { reason, comment },
    };
    service::plan::send_feedback(&state, &session, &launch, card, input)
        .await
        .map_err(ApiError::from)
}

/// The plan's member history for review, with the current selection. Read from the plan the
/// first time (or again with `refresh`), then from the launch.
#[server(endpoint = "history")]
pub async fn load_history(launch: String, refresh: bool) -> Result<HistoryView, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    service::history::load(&state, &session, &launch, refresh).await.map_err(ApiError::from)
}

/// Selects (or deselects) history items by key; the selection is kept server side.
#[server(endpoint = "selection", input = Json)]
pub async fn set_selection(
    launch: String,
    keys: Vec<String>,
    selected: bool,
) -> Result<SelectionSummary, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    service::history::set_selection(&state, &session, &launch, &keys, selected)
        .await
        .map_err(ApiError::from)
}

/// One history item in full, raw resource included.
#[server(endpoint = "history_item")]
pub async fn load_history_item(launch: String, key: String) -> Result<ItemDetail, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    service::history::item_detail(&state, &session, &launch, &key).await.map_err(ApiError::from)
}

/// What "Add to chart" would write, as resources or in a document.
#[server(endpoint = "write_preview")]
pub async fn load_write_preview(launch: String) -> Result<WritePreview, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    service::writeback::preview(&state, &session, &launch).await.map_err(ApiError::from)
}

/// Writes the selection into the EHR (one transaction with Provenance).
#[server(endpoint = "add_to_chart")]
pub async fn add_to_chart(launch: String) -> Result<WriteResult, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    service::writeback::write(&state, &session, &launch).await.map_err(ApiError::from)
}

/// The writes of this launch so far (for the summary after a reload).
#[server(endpoint = "write_results")]
pub async fn load_write_results(launch: String) -> Result<Vec<WriteResult>, ApiError> {
    let state = ssr::state()?;
    let session = ssr::session().await?;
    service::writeback::results(&state, &session, &launch).await.map_err(ApiError::from)
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
