//! Member-authorized access to the plan's data (Da Vinci PDex §3-4-2): the clinician hands
//! the patient a link (on a front-desk tablet, or to open on their phone); it starts a SMART
//! standalone launch at the plan's patient-facing API (`launch/patient`, one `patient/`
//! scope per kind of record, PKCE S256, `private_key_jwt`). The member signs in with their
//! plan credentials and approves on the plan's screen, which may withhold categories. The
//! plan sends the member back to `/member-callback`, where the code is exchanged: the token
//! stays server side, with the launch, and is never replaced by a Backend Services token.
//! When the clinician's page next looks, the plan's Patient (read with the member's token)
//! must pass the identity check against the EMR patient before anything is shown; what the
//! granted scopes leave out is said.

use api::{MemberAccessStage, MemberAccessView, PlanMember};
use fhir::ResourceExt;
use sha2::Digest as _;
use smart::{CallbackParams, LaunchRequest};

use crate::error::{Refusal, ServiceError};
use crate::launch_state::{
    MemberAccessOutcome, MemberAccessState, MemberState, PlanAccess, PlanState,
};
use crate::owned::OwnedLaunch;
use crate::plan::identify::covering_plan;
use crate::state::{AppState, PayerRuntime};

/// Why the link or the callback could not be used (shown to the member, on their device).
#[derive(Debug, thiserror::Error)]
pub enum MemberAccessError {
    #[error("unknown or used sign-in")]
    Unknown,
    #[error("the sign-in expired")]
    Expired,
    #[error("the plan: {0}")]
    Smart(#[from] smart::SmartError),
    #[error("service: {0}")]
    Service(#[from] ServiceError),
}

impl MemberAccessError {
    /// What the member reads.
    pub fn message(&self) -> &'static str {
        match self {
            MemberAccessError::Unknown => "This sign-in link is not valid or was already used. Ask the clinician for a new one.",
            MemberAccessError::Expired => "This sign-in link has expired. Ask the clinician for a new one.",
            MemberAccessError::Smart(_) | MemberAccessError::Service(_) => "The sign-in could not be completed. Ask the clinician to start again.",
        }
    }
}

fn hash(handle: &str) -> String {
    sha2::Sha256::digest(handle.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn subject(handle_hash: &str) -> String {
    format!("member-access:{handle_hash}")
}

/// The scopes asked of the member: one `patient/` read scope per kind of record.
fn scope() -> String {
    let mut scope = String::from("launch/patient patient/Patient.rs");
    for resource_type in pdex::model::history_resource_types() {
        scope.push_str(&format!(" patient/{resource_type}.rs"));
    }
    scope
}

/// The plan covering the launched patient, when its members can sign in there.
async fn payer(owned: &OwnedLaunch) -> Result<std::sync::Arc<PayerRuntime>, ServiceError> {
    let (payer, _) = covering_plan(owned).await?.ok_or(Refusal::PlanNotIdentified)?;
    if payer.member.is_none() {
        return Err(Refusal::MemberAccessNotOffered.into());
    }
    Ok(payer)
}

/// Starts a member sign-in for the launched patient (a new link each time).
pub async fn start(owned: &OwnedLaunch) -> Result<MemberAccessView, ServiceError> {
    let payer = payer(owned).await?;
    let client = payer.member.as_ref().ok_or(Refusal::MemberAccessNotOffered)?;
    let state = owned.state();
    let unreadable = |e: smart::SmartError| ServiceError::Plan {
        plan: payer.config.name.clone(),
        cause: crate::error::PlanFailure::Data(crate::error::DataProblem::SmartConfiguration(
            e.to_string(),
        )),
    };
    let config = state.discovery.get(&payer.config.fhir_base).await.map_err(unreadable)?;
    let requested_scope = scope();
    let request =
        LaunchRequest { iss: &payer.config.fhir_base, launch: None, scope: &requested_scope };
    let (url, pending) = client.authorize(&config, request, jose::now()).map_err(unreadable)?;
    let handle = pending.state.expose().to_owned();
    let handle_hash = hash(&handle);
    // The index the member's device finds this launch by (it has no session here).
    state
        .launches
        .store()
        .enqueue(
            store::NewJob {
                kind: store::JobKind::MemberAccess,
                dedupe_key: None,
                launch_id: Some(owned.id().to_owned()),
                subject: Some(subject(&handle_hash)),
                payload: owned.id().as_bytes().to_vec(),
                run_after: store::now(),
                leased_to: None,
            },
            store::now(),
        )
        .await?;
    let kept = MemberAccessState {
        payer_id: payer.config.id.clone(),
        handle_hash,
        authorize_url: url.to_string(),
        pending: Some(pending),
        requested_scope,
        outcome: MemberAccessOutcome::Waiting,
    };
    owned
        .update(|launch| {
            launch.member_access = Some(kept.clone());
            Ok(())
        })
        .await?;
    Ok(view(state, &payer, &handle, &kept))
}

fn view(
    state: &AppState,
    payer: &PayerRuntime,
    handle: &str,
    kept: &MemberAccessState,
) -> MemberAccessView {
    let stage = match &kept.outcome {
        MemberAccessOutcome::Waiting | MemberAccessOutcome::SignedIn { .. } => {
            MemberAccessStage::Waiting
        }
        MemberAccessOutcome::Shared { withheld } => {
            MemberAccessStage::Shared { withheld: withheld.clone() }
        }
        MemberAccessOutcome::Refused { message } => {
            MemberAccessStage::Refused { message: message.clone() }
        }
    };
    MemberAccessView { payer: payer.summary(), link: link(state, handle).to_string(), stage }
}

/// The sign-in link of `handle` (what the clinician hands the patient).
pub fn link(state: &AppState, handle: &str) -> url::Url {
    crate::config::join(&state.config.public_url, &format!("member-access/{handle}"))
}

/// The launch a handle (the OAuth `state`) belongs to, loaded.
async fn launch_of(
    state: &AppState,
    handle: &str,
) -> Result<crate::launches::Versioned, MemberAccessError> {
    let handle_hash = hash(handle);
    let records = state
        .launches
        .store()
        .jobs_about(store::JobKind::MemberAccess, &subject(&handle_hash), 1)
        .await
        .map_err(ServiceError::from)?;
    let launch_id = records
        .into_iter()
        .next()
        .and_then(|r| String::from_utf8(r.payload).ok())
        .ok_or(MemberAccessError::Unknown)?;
    let launch = state.launches.load(&launch_id).await?.ok_or(MemberAccessError::Unknown)?;
    let held = launch.launch.member_access.as_ref().ok_or(MemberAccessError::Unknown)?;
    // Only the newest sign-in of the launch, and only once.
    if held.handle_hash != handle_hash || held.pending.is_none() {
        return Err(MemberAccessError::Unknown);
    }
    Ok(launch)
}

/// `GET /member-access/{handle}`: where the plan's sign-in starts.
pub async fn handoff(state: &AppState, handle: &str) -> Result<url::Url, MemberAccessError> {
    let launch = launch_of(state, handle).await?;
    let held = launch.launch.member_access.as_ref().ok_or(MemberAccessError::Unknown)?;
    let created = held.pending.as_ref().map(|p| p.created_at).unwrap_or_default();
    if jose::now().saturating_sub(created) > smart::client::PENDING_TTL_SECS {
        return Err(MemberAccessError::Expired);
    }
    url::Url::parse(&held.authorize_url).map_err(|_| MemberAccessError::Unknown)
}

/// `GET /member-callback`: the plan sends the member back; the code is exchanged and the
/// token kept with the launch (checked against the patient when the clinician's page looks).
pub async fn callback(state: &AppState, params: &CallbackParams) -> Result<(), MemberAccessError> {
    let handle = params.state.as_deref().ok_or(MemberAccessError::Unknown)?;
    let mut launch = launch_of(state, handle).await?;
    let held = launch.launch.member_access.clone().ok_or(MemberAccessError::Unknown)?;
    let pending = held.pending.clone().ok_or(MemberAccessError::Unknown)?;
    // Spent now, whatever follows: a replayed callback finds nothing.
    state
        .launches
        .update(&mut launch, |l| {
            if let Some(m) = l.member_access.as_mut() {
                m.pending = None;
            }
            Ok(())
        })
        .await?;
    let payer = state.payer(&held.payer_id).cloned().ok_or(MemberAccessError::Unknown)?;
    let client = payer.member.as_ref().ok_or(MemberAccessError::Unknown)?;
    let outcome = match smart::SmartClient::check_callback(
        std::slice::from_ref(&pending),
        params,
        jose::now(),
    ) {
        Err(smart::SmartError::Denied { .. }) => MemberAccessOutcome::Refused {
            message: format!(
                "The member did not allow Member History to read their records at {}.",
                payer.config.name
            ),
        },
        Err(e) => return Err(e.into()),
        Ok((_, code)) => {
            let config = state.discovery.get(&payer.config.fhir_base).await?;
            let response = client.exchange_code(&config, &pending, &code).await?;
            let patient = response.context.patient.clone().ok_or(MemberAccessError::Unknown)?;
            MemberAccessOutcome::SignedIn {
                token: response.access_token.clone(),
                expires_at: response.expires_in.map(|s| jose::now() + s),
                patient,
                granted: response.scope.clone().unwrap_or_else(|| held.requested_scope.clone()),
            }
        }
    };
    state
        .launches
        .update(&mut launch, |l| {
            if let Some(m) = l.member_access.as_mut().filter(|m| m.handle_hash == held.handle_hash)
            {
                m.outcome = outcome.clone();
            }
            Ok(())
        })
        .await?;
    tracing::info!(payer = %payer.config.id, "member sign-in completed");
    Ok(())
}

/// The launch's member sign-in, if any: once the member signed in, their Patient at the plan
/// is checked against the EMR patient here, and on a match the plan's data is this launch's.
pub async fn status(owned: &OwnedLaunch) -> Result<Option<MemberAccessView>, ServiceError> {
    let Some(held) = owned.snapshot().await.member_access else { return Ok(None) };
    let payer = owned.payer(&held.payer_id)?;
    let held = match &held.outcome {
        MemberAccessOutcome::SignedIn { .. } => bind(owned, &payer, held).await?,
        _ => held,
    };
    let handle = held.pending.as_ref().map(|p| p.state.expose().to_owned()).unwrap_or_default();
    Ok(Some(view(owned.state(), &payer, &handle, &held)))
}

/// The signed-in member checked against the EMR patient; the plan's data made this launch's
/// on a match. Returns the sign-in as now kept.
async fn bind(
    owned: &OwnedLaunch,
    payer: &PayerRuntime,
    mut held: MemberAccessState,
) -> Result<MemberAccessState, ServiceError> {
    let MemberAccessOutcome::SignedIn { token, expires_at, patient, granted } =
        held.outcome.clone()
    else {
        return Ok(held);
    };
    let withheld = withheld(&held.requested_scope, &granted);
    let mut access = PlanAccess {
        fhir_base: payer.config.fhir_base.clone(),
        patient: patient.clone(),
        member_id: None,
        token: Some(token),
        expires_at,
        member_authorized: true,
    };
    let shared_patient = smart::scopes::ScopeSet::parse(&granted)
        .grants("Patient", smart::scopes::Permission::Read)
        .contains(&smart::scopes::ScopeContext::Patient);
    let plan_patient = if shared_patient {
        crate::plan::access::read_plan_patient(owned.state(), payer, &access).await.ok()
    } else {
        None
    };
    let emr_patient = owned.emr().patient().await?;
    let mut plan = None;
    held.outcome = match plan_patient.as_ref().map(|p| (p, crate::plan::access::check_identity(payer, &emr_patient, p))) {
        None => MemberAccessOutcome::Refused {
            message: format!("The member did not share their demographics with Member History, so it cannot confirm they are this patient: nothing of {}'s is shown. Ask them to sign in again and share their name and birth date.", payer.config.name),
        },
        Some((_, Err(mismatch))) => {
            crate::plan::access::audit_refused(owned, &payer.config.id, &mismatch).await;
            MemberAccessOutcome::Refused { message: mismatch.message.clone() }
        }
        Some((plan_patient, Ok(()))) => {
            access.member_id = cds_hooks::pdex::member_id(plan_patient).map(str::to_owned);
            plan = Some(confirmed_plan(payer, &held, plan_patient, access, &withheld));
            MemberAccessOutcome::Shared { withheld }
        }
    };
    let (outcome, handle_hash) = (held.outcome.clone(), held.handle_hash.clone());
    owned
        .update(|launch| {
            if let Some(plan) = &plan {
                // The review is now the member's (another member's history is dropped).
                if launch.history.as_ref().is_some_and(|h| !h.is_for(&plan.payer_id, &patient)) {
                    launch.history = None;
                }
                launch.plan = Some(plan.clone());
            }
            if let Some(m) = launch.member_access.as_mut().filter(|m| m.handle_hash == handle_hash)
            {
                m.outcome = outcome.clone();
            }
            Ok(())
        })
        .await?;
    Ok(held)
}

/// The plan's answer once the signed-in member is confirmed as this patient.
fn confirmed_plan(
    payer: &PayerRuntime,
    held: &MemberAccessState,
    plan_patient: &serde_json::Value,
    access: PlanAccess,
    withheld: &[String],
) -> PlanState {
    PlanState {
        payer_id: payer.config.id.clone(),
        service_id: None,
        hook_instance: Some(format!("member-access:{}", &held.handle_hash[..16])),
        cards: Vec::new(),
        notes: withheld.iter().map(|w| format!("The member chose not to share {w}.")).collect(),
        member: MemberState::Confirmed {
            member: PlanMember {
                name: fhir::display_name(plan_patient).unwrap_or_else(|| "Unnamed member".into()),
                birth_date: plan_patient.str_at("birthDate").map(str::to_owned),
                member_id: access.member_id.clone(),
                records: None,
            },
            access,
        },
        feedback: Default::default(),
    }
}

/// What the granted scopes leave out of the requested ones, in the clinician's words: kinds
/// of record not granted, and kinds granted only in part (a narrowed scope).
fn withheld(requested: &str, granted: &str) -> Vec<String> {
    let granted_set = smart::scopes::ScopeSet::parse(granted);
    let mut out = Vec::new();
    for scope in requested.split_whitespace() {
        let Some(resource) = smart::scopes::ResourceScope::parse(scope) else { continue };
        let kind = resource.resource_type.as_str();
        let label = match kind {
            "Patient" => "their demographics".to_owned(),
            other => pdex::Category::of(other)
                .map(|c| c.label().to_lowercase())
                .unwrap_or_else(|| other.to_owned()),
        };
        if granted_set.grants(kind, smart::scopes::Permission::Read).is_empty()
            && !out.contains(&label)
        {
            out.push(label);
        }
    }
    if granted.split_whitespace().any(|s| s.contains("_security:not=") && s.ends_with("|PSY")) {
        out.push("behavioural health records".into());
    } else if granted.split_whitespace().any(|s| s.contains('?')) {
        out.push("some records (the plan narrowed what it shares)".into());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_the_granted_scopes_leave_out_is_named() {
        let requested =
            "launch/patient patient/Patient.rs patient/Condition.rs patient/Observation.rs";
        assert!(super::withheld(requested, requested).is_empty());
        let narrowed = "launch/patient patient/Condition.rs?_security:not=http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY patient/Observation.rs";
        assert_eq!(
            super::withheld(requested, narrowed),
            ["their demographics", "behavioural health records"]
        );
    }
}
