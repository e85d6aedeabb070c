//! Server functions: public endpoints under `/api/…`. Each one resolves the launch it
//! touches against the browser session itself (`ssr::owned`), whatever page called it; its
//! arguments are typed, so a malformed id is refused before any use case runs.

use api::{
    ApiError, CardView, EhrChoice, ExportPurpose, HistoryView, ItemDetail, LaunchId,
    MemberAccessView, PayerId, PlanAnswer, PlanStatus, ProviderAccessView, PushedHistoryView,
    ReviewContext, SelectionSummary, WritePreview, WriteResult,
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
pub async fn load_review_context(launch: LaunchId) -> Result<ReviewContext, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::context::review_context(&owned).await?)
}

/// Which plan Member History will ask for the launched patient, and its answer so far.
#[server(endpoint = "plan_status")]
pub async fn load_plan_status(launch: LaunchId) -> Result<PlanStatus, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::plan::status(&owned).await?)
}

/// Asks the patient's plan for their history (the `appointment-book` hook, in place of the
/// EMR). `payer` and `member_id` are set when the clinician typed the member id; the member
/// id is read here rather than by the decoder so a mistyped one is answered with what a
/// member id may hold, not "not understood".
#[server(endpoint = "request_plan_history")]
pub async fn request_plan_history(
    launch: LaunchId,
    payer: Option<PayerId>,
    member_id: Option<String>,
) -> Result<PlanAnswer, ApiError> {
    let member_id = member_id.as_deref().map(api::MemberId::parse).transpose()?;
    let owned = ssr::owned(&launch).await?;
    let ask = service::plan::HistoryRequest { payer_id: payer, member_id };
    Ok(service::plan::request_history(&owned, ask).await?)
}

/// Asks the patient's plan by its Provider Access API (member match with the signed-in
/// clinician's treatment attestation, then an export for `purpose`). A request already
/// running is shown, not made again; it goes on when the app is closed.
#[server(endpoint = "provider_access_ask")]
pub async fn provider_access_ask(
    launch: LaunchId,
    purpose: ExportPurpose,
) -> Result<ProviderAccessView, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::provider_access::ask(&owned, purpose).await?)
}

/// The latest Provider Access request about the launched patient at their plan (made in
/// this launch or an earlier one), with how far it is.
#[server(endpoint = "provider_access_status")]
pub async fn provider_access_status(
    launch: LaunchId,
) -> Result<Option<ProviderAccessView>, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::provider_access::status(&owned).await?)
}

/// Opens the newest finished Provider Access export of the launched patient for review,
/// after the identity check.
#[server(endpoint = "provider_access_open")]
pub async fn provider_access_open(launch: LaunchId) -> Result<HistoryView, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::provider_access::open(&owned).await?)
}

/// The newest history the launched patient's plan pushed for them (a `$everything` Bundle
/// it sent on its own), if any.
#[server(endpoint = "pushed_history_status")]
pub async fn pushed_history_status(
    launch: LaunchId,
) -> Result<Option<PushedHistoryView>, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::push::status(&owned).await?)
}

/// Opens the newest pushed history of the launched patient for review, after the identity
/// check.
#[server(endpoint = "pushed_history_open")]
pub async fn pushed_history_open(launch: LaunchId) -> Result<HistoryView, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::push::open(&owned).await?)
}

/// Starts a member sign-in at the launched patient's plan: the link the patient opens (on
/// this device or theirs) to sign in there and share their records.
#[server(endpoint = "member_access_start")]
pub async fn member_access_start(launch: LaunchId) -> Result<MemberAccessView, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::member_access::start(&owned).await?)
}

/// The launch's member sign-in and how far it is (once the member signed in, checked against
/// the patient).
#[server(endpoint = "member_access_status")]
pub async fn member_access_status(launch: LaunchId) -> Result<Option<MemberAccessView>, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::member_access::status(&owned).await?)
}

/// Tells the plan what the clinician did with card `card`: accepted `suggestion`, or
/// dismissed it (with one of the card's override reasons and an optional comment).
#[server(endpoint = "card_feedback")]
pub async fn card_feedback(
    launch: LaunchId,
    card: usize,
    suggestion: Option<String>,
    reason: Option<String>,
    comment: Option<String>,
) -> Result<CardView, ApiError> {
    let owned = ssr::owned(&launch).await?;
    let input = match suggestion {
        Some(suggestion) => service::plan::FeedbackInput::Accept { suggestion },
        None => service::plan::FeedbackInput::Dismiss { reason, comment },
    };
    Ok(service::plan::send_feedback(&owned, card, input).await?)
}

/// The plan's member history for review, with the current selection. Read from the plan the
/// first time (or again with `refresh`), then from the launch.
#[server(endpoint = "history")]
pub async fn load_history(launch: LaunchId, refresh: bool) -> Result<HistoryView, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::history::load(&owned, refresh).await?)
}

/// Selects (or deselects) history items by key; the selection is kept server side.
#[server(endpoint = "selection", input = Json)]
pub async fn set_selection(
    launch: LaunchId,
    keys: Vec<String>,
    selected: bool,
) -> Result<SelectionSummary, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::history::set_selection(&owned, &keys, selected).await?)
}

/// One history item in full, raw resource included.
#[server(endpoint = "history_item")]
pub async fn load_history_item(launch: LaunchId, key: String) -> Result<ItemDetail, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::history::item_detail(&owned, &key).await?)
}

/// What "Add to chart" would write, as resources or in a document.
#[server(endpoint = "write_preview")]
pub async fn load_write_preview(launch: LaunchId) -> Result<WritePreview, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::writeback::preview(&owned).await?)
}

/// Writes the selection into the EHR (one transaction with Provenance).
#[server(endpoint = "add_to_chart")]
pub async fn add_to_chart(launch: LaunchId) -> Result<WriteResult, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::writeback::write(&owned).await?)
}

/// The writes of this launch so far (for the summary after a reload).
#[server(endpoint = "write_results")]
pub async fn load_write_results(launch: LaunchId) -> Result<Vec<WriteResult>, ApiError> {
    let owned = ssr::owned(&launch).await?;
    Ok(service::writeback::results(&owned).await)
}

#[cfg(feature = "ssr")]
mod ssr {
    use api::{ApiError, ErrorCode, LaunchId};
    use leptos::prelude::use_context;
    use service::{AppState, OwnedLaunch};
    use tower_sessions::Session;

    /// The edge of every launch's server function: the launch, checked to belong to this
    /// browser session, with its EHR (the use case behind it never sees the session).
    pub async fn owned(launch: &LaunchId) -> Result<OwnedLaunch, ApiError> {
        let state = state()?;
        let session = session().await?;
        Ok(OwnedLaunch::resolve(&state, &session, launch).await?)
    }

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
