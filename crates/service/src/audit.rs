//! The audit trail of a launch's accesses to patient data, in the store's audit log (never in
//! the application log). A read of the plan's data is shown only once it is recorded.

use store::{AuditAction, AuditEntry, AuditOutcome};

use crate::error::ServiceError;
use crate::owned::OwnedLaunch;

/// What one audited access concerned.
#[derive(Debug)]
pub struct Access<'a> {
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    pub plan: Option<&'a str>,
    pub count: usize,
    pub references: Vec<String>,
    /// A short reason for a refusal or failure, without patient data.
    pub note: Option<String>,
}

/// Whose data, by whom, through which EHR.
#[derive(Debug)]
pub struct Who<'a> {
    pub user: Option<&'a str>,
    pub ehr: &'a crate::config::EhrConfig,
    pub patient: &'a str,
}

/// Records `access` by the launch's user on the launch's patient.
pub async fn record(owned: &OwnedLaunch, access: Access<'_>) -> Result<(), ServiceError> {
    let launch = owned.snapshot().await;
    let who = Who {
        user: launch.fhir_user.as_deref(),
        ehr: &owned.ehr().config,
        patient: &launch.patient_id,
    };
    record_for(owned.state(), who, access).await
}

/// Records `access` for work done away from a launch (a background request).
pub async fn record_for(
    state: &crate::AppState,
    who: Who<'_>,
    access: Access<'_>,
) -> Result<(), ServiceError> {
    let entry = AuditEntry {
        at_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        action: access.action,
        outcome: access.outcome,
        user: who.user.map(str::to_owned),
        ehr: who.ehr.id.clone(),
        ehr_base: who.ehr.issuer.to_string(),
        patient: who.patient.to_owned(),
        plan: access.plan.map(str::to_owned),
        count: access.count as u64,
        references: access.references,
        note: access.note,
    };
    state.launches.store().audit(&entry).await.map_err(ServiceError::from)
}

/// [`record`] where the access has already happened (a write, a refusal): a failure to
/// record is logged, without the entry, and does not undo it.
pub async fn record_done(owned: &OwnedLaunch, access: Access<'_>) {
    let action = access.action;
    if let Err(e) = record(owned, access).await {
        tracing::error!(error = %e, action = action.as_str(), "audit entry not stored");
    }
}
