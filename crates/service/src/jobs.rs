//! Work the server does on its own, between requests: write-backs whose server stopped
//! before they ended, and the purge of patient data past retention. Every server on the store
//! runs both; the store's leases make sure one job runs on one server at a time.

use store::{Job, JobKind, JobOutcome, Purged};

use crate::error::ServiceError;
use crate::owned::OwnedLaunch;
use crate::state::AppState;
use crate::writeback::{self, WriteJob};

/// Takes over every write-back whose lease ran out (its server stopped mid-write) and
/// finishes or reports it; how many were taken.
pub async fn resume_interrupted(state: &AppState) -> Result<usize, ServiceError> {
    let store = state.launches.store();
    let mut taken = 0;
    while let Some(job) = store
        .claim(JobKind::WriteBack, &state.worker_id, state.job_lease_secs(), store::now())
        .await?
    {
        taken += 1;
        let (outcome, body) = match resume(state, &job).await {
            Ok(result) => (JobOutcome::Done, serde_json::to_vec(&result).unwrap_or_default()),
            Err(e) => {
                tracing::warn!(error = %e, attempts = job.attempts, "interrupted write-back not finished");
                (JobOutcome::Failed, Vec::new())
            }
        };
        if !store.finish(&job.id, &state.worker_id, outcome, &body, store::now()).await? {
            tracing::warn!("an interrupted write-back's lease was lost to another server");
        }
    }
    Ok(taken)
}

async fn resume(state: &AppState, job: &Job) -> Result<api::WriteResult, ServiceError> {
    let payload: WriteJob = serde_json::from_slice(&job.payload)
        .map_err(|e| store::StoreError::Seal(format!("write-back job unreadable: {e}")))?;
    // A launch purged since has nothing left to write from (nor anyone to tell).
    let launch_id = job.launch_id.as_deref().ok_or(ServiceError::NotInSession)?;
    let owned = OwnedLaunch::load(state, launch_id).await?;
    writeback::resume(&owned, &payload).await
}

/// Deletes launches idle past `retention_hours` and expired sessions.
pub async fn purge(state: &AppState) -> Result<Purged, ServiceError> {
    let now = store::now();
    let retention =
        i64::try_from(state.config.store.retention_hours.saturating_mul(3600)).unwrap_or(i64::MAX);
    Ok(state.launches.store().purge(now, now.saturating_sub(retention)).await?)
}
