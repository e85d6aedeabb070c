//! The handle every use case works on: a launch this browser session owns, with its EHR and
//! (once asked) its plan. Resolved once at the edge, where the server function checks the
//! session; the use cases never see the session.

use std::sync::Arc;

use api::LaunchId;
use tokio::sync::{Mutex, MutexGuard};
use tower_sessions::Session;

use crate::emr::Emr;
use crate::error::{Refusal, ServiceError};
use crate::launch_state::{Launch, PlanState};
use crate::session;
use crate::state::{AppState, EhrRuntime, PayerRuntime};

/// A launch checked to belong to the caller.
#[derive(Debug)]
pub struct OwnedLaunch {
    state: AppState,
    launch: Arc<Mutex<Launch>>,
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
        let launch = state.launches.get(id.as_str()).await.ok_or(ServiceError::NotInSession)?;
        let ehr_id = launch.lock().await.ehr_id.clone();
        let ehr = state.ehr(&ehr_id).cloned().ok_or(ServiceError::NotConfigured("EHR"))?;
        Ok(Self { state: state.clone(), launch, ehr })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn ehr(&self) -> &EhrRuntime {
        &self.ehr
    }

    /// The launch's EMR, with its token kept current.
    pub fn emr(&self) -> Emr<'_> {
        Emr { state: &self.state, ehr: &self.ehr, launch: &self.launch }
    }

    /// The launch as it is now (a copy: the lock is not held across calls out).
    pub async fn snapshot(&self) -> Launch {
        self.launch.lock().await.clone()
    }

    /// The launch itself, for a change made under its lock.
    pub async fn lock(&self) -> MutexGuard<'_, Launch> {
        self.launch.lock().await
    }

    /// The plan's answer so far and the plan's runtime; fails until the plan has been asked
    /// (or the launch came from one of its card links).
    pub async fn plan(&self) -> Result<(PlanState, Arc<PayerRuntime>), ServiceError> {
        let plan = self.launch.lock().await.plan.clone().ok_or(Refusal::AskPlanFirst)?;
        let payer = self.payer(&plan.payer_id)?;
        Ok((plan, payer))
    }

    /// A configured plan by id.
    pub fn payer(&self, id: &str) -> Result<Arc<PayerRuntime>, ServiceError> {
        self.state.payer(id).cloned().ok_or(ServiceError::NotConfigured("plan"))
    }
}
