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

/// Records `access` by the launch's user on the launch's patient.
pub async fn record(owned: &OwnedLaunch, access: Access<'_>) -> Result<(), ServiceError> {
    let launch = owned.snapshot().await;
    let entry = AuditEntry {
        at_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        action: access.action,
        outcome: access.outcome,
        user: launch.fhir_user.clone(),
        ehr: owned.ehr().config.id.clone(),
        ehr_base: owned.ehr().config.issuer.to_string(),
        patient: launch.patient_id.clone(),
        plan: access.plan.map(str::to_owned),
        count: access.count as u64,
        references: access.references,
        note: access.note,
    };
    owned.state().launches.store().audit(&entry).await.map_err(ServiceError::from)
}

/// [`record`] where the access has already happened (a write, a refusal): a failure to
/// record is logged, without the entry, and does not undo it.
pub async fn record_done(owned: &OwnedLaunch, access: Access<'_>) {
    let action = access.action;
    if let Err(e) = record(owned, access).await {
        tracing::error!(error = %e, action = action.as_str(), "audit entry not stored");
    }
}
