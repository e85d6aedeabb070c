//! The handle every use case works on: a launch this browser session owns, with its EHR and
//! (once asked) its plan. Resolved once at the edge, where the server function checks the
//! session; the use cases never see the session.

use std::sync::Arc;

use api::LaunchId;
use pdex::HistoryItem;
use tokio::sync::Mutex;
use tower_sessions::Session;

use crate::emr::Emr;
use crate::error::{Refusal, ServiceError};
use crate::launch_state::{HistoryState, Launch, PlanState};
use crate::launches::Versioned;
use crate::session;
use crate::state::{AppState, EhrRuntime, PayerRuntime};

/// A launch checked to belong to the caller, as this request read it from the store.
#[derive(Debug)]
pub struct OwnedLaunch {
    state: AppState,
    id: String,
    current: Mutex<Versioned>,
    ehr: Arc<EhrRuntime>,
}

impl OwnedLaunch {
    /// The launch `id`, if this browser session started it: a launch id seen elsewhere (a
    /// copied URL, another user's browser) opens nothing.
    pub async fn resolve(
        state: &AppState,
        session: &Session,
        id: &LaunchId,
    ) -> Result<Self, ServiceError> {
        session::require_launch(session, id.as_str()).await?;
        Self::load(state, id.as_str()).await
    }

    /// The launch `id` for work the server does on its own (a background job): no browser
    /// session is involved, so only the server may call this.
    pub async fn load(state: &AppState, id: &str) -> Result<Self, ServiceError> {
        let current = state.launches.load(id).await?.ok_or(ServiceError::NotInSession)?;
        let ehr =
            state.ehr(&current.launch.ehr_id).cloned().ok_or(ServiceError::NotConfigured("EHR"))?;
        Ok(Self { state: state.clone(), id: id.to_owned(), current: Mutex::new(current), ehr })
    }

    /// The launch's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn ehr(&self) -> &EhrRuntime {
        &self.ehr
    }

    /// The launch's EMR, with its token kept current.
    pub fn emr(&self) -> Emr<'_> {
        Emr { state: &self.state, ehr: &self.ehr, current: &self.current }
    }

    /// The launch as it is now (a copy: nothing is held across calls out).
    pub async fn snapshot(&self) -> Launch {
        self.current.lock().await.launch.clone()
    }

    /// Changes the launch and saves it (see [`crate::launches::Launches::update`]: `change`
    /// may run again on what another request saved first).
    pub async fn update<T>(
        &self,
        change: impl FnMut(&mut Launch) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let mut current = self.current.lock().await;
        self.state.launches.update(&mut current, change).await
    }

    /// Reads the launch again from the store (after work done on it elsewhere, by a task).
    pub async fn reload(&self) -> Result<(), ServiceError> {
        let mut current = self.current.lock().await;
        self.state.launches.reload(&mut current).await
    }

    /// The items of a history snapshot of this launch.
    pub async fn items(
        &self,
        history: &HistoryState,
    ) -> Result<Arc<Vec<HistoryItem>>, ServiceError> {
        self.state.launches.items(&self.id, &history.items_id).await
    }

    /// The plan's answer so far and the plan's runtime; fails until the plan has been asked
    /// (or the launch came from one of its card links).
    pub async fn plan(&self) -> Result<(PlanState, Arc<PayerRuntime>), ServiceError> {
        let plan = self.current.lock().await.launch.plan.clone().ok_or(Refusal::AskPlanFirst)?;
        let payer = self.payer(&plan.payer_id)?;
        Ok((plan, payer))
    }

    /// A configured plan by id.
    pub fn payer(&self, id: &str) -> Result<Arc<PayerRuntime>, ServiceError> {
        self.state.payer(id).cloned().ok_or(ServiceError::NotConfigured("plan"))
    }
}
