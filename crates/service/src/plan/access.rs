//! Following the plan's answer to its FHIR API: only to the plan's configured server, with
//! the token the plan gave (or SMART Backend Services), and only once the plan's member passed
//! the identity check against the launched patient.

use std::collections::HashMap;

use api::PlanMember;
use cds_hooks::pdex::{self, PlanDataPointer};
use fhir::ResourceExt;
use serde_json::Value;
use smart::Secret;

use crate::config::PlanFhirAuth;
use crate::error::{self, DataProblem, PlanFailure, ServiceError};
use crate::launch_state::{MemberState, PlanAccess, PlanState};
use crate::owned::OwnedLaunch;
use crate::state::{AppState, PayerRuntime};

/// Accepts a pointer only to the payer's configured FHIR API: a card cannot send our
/// requests (or a token) anywhere else.
pub(crate) fn access_for(
    payer: &PayerRuntime,
    pointer: PlanDataPointer,
) -> Result<PlanAccess, DataProblem> {
    if !fhir::base::same_server(payer.config.fhir_base.as_str(), &pointer.fhir_server) {
        return Err(DataProblem::OtherServer);
    }
    if !fhir::resource::is_fhir_id(&pointer.patient) {
        return Err(DataProblem::BadMemberId);
    }
    Ok(PlanAccess {
        fhir_base: payer.config.fhir_base.clone(),
        patient: pointer.patient,
        member_id: pointer.member_id,
        token: pointer.access_token.map(Secret::new),
        expires_at: pointer.expires_in.map(|s| jose::now() + s),
        member_authorized: false,
    })
}

/// The plan state of a card-link launch: the `appContext` the EHR passed through, if it points
/// at a configured plan's FHIR API.
pub fn from_app_context(state: &AppState, app_context: &str) -> Option<PlanState> {
    let pointer = pdex::pointer_from_app_context(app_context)?;
    let payer = state
        .payers
        .iter()
        .find(|p| fhir::base::same_server(p.config.fhir_base.as_str(), &pointer.fhir_server));
    let Some(payer) = payer else {
        tracing::warn!("appContext names a FHIR server no configured plan has; ignored");
        return None;
    };
    let access = access_for(payer, pointer).ok()?;
    Some(PlanState {
        payer_id: payer.config.id.clone(),
        service_id: None,
        hook_instance: None,
        cards: Vec::new(),
        notes: Vec::new(),
        member: MemberState::Unchecked(access),
        feedback: HashMap::new(),
    })
}

/// A token for the plan's FHIR API: the one the plan gave, else SMART Backend Services.
pub(crate) async fn plan_token(
    state: &AppState,
    payer: &PayerRuntime,
    access: &mut PlanAccess,
) -> Result<Option<Secret>, DataProblem> {
    let now = jose::now();
    if let Some(token) = &access.token {
        if access.expires_at.is_none_or(|at| at > now + 30) {
            return Ok(Some(token.clone()));
        }
    }
    if access.member_authorized {
        return Err(DataProblem::AccessRefused("the member's sign-in has expired".into()));
    }
    let (Some(client), PlanFhirAuth::BackendServices { scope, .. }) =
        (&payer.backend, &payer.config.fhir_auth)
    else {
        return Ok(access.token.clone());
    };
    let config = state
        .discovery
        .get(&payer.config.fhir_base)
        .await
        .map_err(|e| DataProblem::SmartConfiguration(e.to_string()))?;
    let response = client
        .client_credentials(&config, scope)
        .await
        .map_err(|e| DataProblem::AccessRefused(e.code().to_owned()))?;
    access.token = Some(response.access_token.clone());
    access.expires_at = response.expires_in.map(|s| now + s);
    Ok(Some(response.access_token))
}

/// Reads the member's record at the plan once and checks it is the launched patient
/// ([`::pdex::identity`]), so the page shows whose data it is about to review, or why it
/// shows none. Only an unchecked answer is followed; the result is kept with the launch when
/// the launch still holds the same answer.
pub(crate) async fn follow_if_needed(
    owned: &OwnedLaunch,
    payer: &PayerRuntime,
    mut plan: PlanState,
) -> PlanState {
    let MemberState::Unchecked(access) = &plan.member else { return plan };
    plan.member = follow(owned, payer, access.clone()).await;
    if let MemberState::Mismatch(mismatch) = &plan.member {
        audit_refused(owned, &plan.payer_id, mismatch).await;
    }
    let kept = owned
        .update(|launch| {
            if let Some(stored) = launch.plan.as_mut() {
                if stored.hook_instance == plan.hook_instance {
                    stored.member = plan.member.clone();
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = kept {
        // The check is made again on the next request; this one goes on with its result.
        tracing::warn!(error = %e, "identity check result not saved");
    }
    plan
}

/// Records that the identity check refused the plan's member.
pub(crate) async fn audit_refused(
    owned: &OwnedLaunch,
    payer_id: &str,
    mismatch: &api::MemberMismatch,
) {
    let fields: Vec<String> = mismatch.fields.iter().map(|f| format!("{f:?}")).collect();
    let refused = crate::audit::Access {
        action: store::AuditAction::MemberMatchRefused,
        outcome: store::AuditOutcome::MinorFailure,
        plan: Some(payer_id),
        count: 0,
        references: Vec::new(),
        note: Some(format!("identity check failed: {} differ", fields.join(", "))),
    };
    crate::audit::record_done(owned, refused).await;
}

/// The member's record at the plan against the EMR's patient.
async fn follow(owned: &OwnedLaunch, payer: &PayerRuntime, mut access: PlanAccess) -> MemberState {
    let no_data = |problem, access| MemberState::NoData { problem, access: Some(access) };
    let token = match plan_token(owned.state(), payer, &mut access).await {
        Ok(token) => token,
        Err(problem) => return no_data(problem, access),
    };
    let client = owned.state().plan_fhir_client(payer, &access.fhir_base);
    let token = token.as_ref().map(Secret::expose);
    let unreadable = |e: fhir::FhirError| {
        tracing::warn!(payer = %payer.config.id, error = %e, "plan FHIR API read failed");
        DataProblem::Unreadable(e.to_string())
    };
    let emr = owned.emr();
    let (plan_patient, emr_patient) =
        tokio::join!(client.read(token, "Patient", &access.patient), emr.patient());
    let plan_patient = match plan_patient {
        Ok(patient) => patient,
        Err(e) => return no_data(unreadable(e), access),
    };
    let emr_patient = match emr_patient {
        Ok(patient) => patient,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the EMR patient for the identity check");
            return no_data(DataProblem::EmrPatientUnreadable, access);
        }
    };
    if let Err(mismatch) = check_identity(payer, &emr_patient, &plan_patient) {
        return MemberState::Mismatch(mismatch);
    }
    let everything_path = format!("Patient/{}/$everything", access.patient);
    let everything = match client.search(token, &everything_path, &[("_count", "1")]).await {
        Ok(bundle) => bundle,
        Err(e) => return no_data(unreadable(e), access),
    };
    let member = PlanMember {
        name: fhir::display_name(&plan_patient).unwrap_or_else(|| "Unnamed member".into()),
        birth_date: plan_patient.str_at("birthDate").map(str::to_owned),
        member_id: access
            .member_id
            .clone()
            .or_else(|| pdex::member_id(&plan_patient).map(str::to_owned)),
        records: everything.total,
    };
    MemberState::Confirmed { access, member }
}

/// The identity check ([`::pdex::identity::check`]); a mismatch is logged (which parts, never
/// names or values) and described for the page.
pub(crate) fn check_identity(
    payer: &PayerRuntime,
    emr_patient: &Value,
    plan_patient: &Value,
) -> Result<(), api::MemberMismatch> {
    let ::pdex::identity::IdentityMatch::Mismatch(fields) =
        ::pdex::identity::check(emr_patient, plan_patient)
    else {
        return Ok(());
    };
    let codes: Vec<&str> = fields.iter().map(|f| f.code()).collect();
    tracing::warn!(
        payer = %payer.config.id,
        mismatched = ?codes,
        "member identity check failed: the plan's member is not the launched patient; nothing shown or written"
    );
    Err(error::mismatch(&payer.config.name, fields))
}

/// Before a write: reads the plan's member again and repeats the identity check against the
/// EMR patient, whatever the browser sent.
pub(crate) async fn recheck_member(
    state: &AppState,
    payer: &PayerRuntime,
    access: &PlanAccess,
    emr_patient: &Value,
) -> Result<(), ServiceError> {
    let plan_patient = read_plan_patient(state, payer, access).await?;
    check_identity(payer, emr_patient, &plan_patient).map_err(ServiceError::MemberMismatch)
}

/// The member's Patient at the plan, read now with a current token.
pub(crate) async fn read_plan_patient(
    state: &AppState,
    payer: &PayerRuntime,
    access: &PlanAccess,
) -> Result<Value, ServiceError> {
    let failed = |cause| ServiceError::Plan { plan: payer.config.name.clone(), cause };
    let mut access = access.clone();
    let token = plan_token(state, payer, &mut access)
        .await
        .map_err(|problem| failed(PlanFailure::Data(problem)))?;
    let client = state.plan_fhir_client(payer, &access.fhir_base);
    client
        .read(token.as_ref().map(Secret::expose), "Patient", &access.patient)
        .await
        .map_err(|e| failed(PlanFailure::Unconfirmed(e)))
}

/// The confirmed member's access, or why there is none: nothing of a plan's is read for
/// review or written until its member is confirmed as this patient.
pub(crate) fn confirmed_access(
    payer: &PayerRuntime,
    plan: &PlanState,
) -> Result<PlanAccess, ServiceError> {
    let no_data = |problem| ServiceError::Plan {
        plan: payer.config.name.clone(),
        cause: PlanFailure::Data(problem),
    };
    match &plan.member {
        MemberState::Confirmed { access, .. } => Ok(access.clone()),
        MemberState::Mismatch(mismatch) => Err(ServiceError::MemberMismatch(mismatch.clone())),
        MemberState::NoData { problem, .. } => Err(no_data(problem.clone())),
        MemberState::NotMatched | MemberState::Unchecked(_) => Err(no_data(DataProblem::NoPointer)),
    }
}
