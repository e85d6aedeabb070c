//! The `appointment-book` hook call made in place of the EMR: the plan's service from its
//! discovery document, the request with prefetch and the PDex member extension, and the
//! answer kept with the launch.

use std::collections::HashMap;

use api::{MemberIdSource, PlanAnswer};
use cds_hooks::{appointment_book, pdex, CdsError, HookAnswer, HookRequest, Service};
use serde_json::Value;

use super::access::{access_for, follow_if_needed};
use super::identify::{choose_member, identify, HistoryRequest};
use super::views::answer_view;
use crate::error::{DataProblem, PlanFailure, Refusal, ServiceError};
use crate::launch_state::{Identified, Launch, MemberState, PlanState};
use crate::owned::OwnedLaunch;
use crate::state::PayerRuntime;

/// How long a plan's discovery document is reused.
const DISCOVERY_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Calls the plan's `appointment-book` service for the launched patient, keeps the answer
/// with the launch, and follows it to the plan's FHIR API.
pub async fn request_history(
    owned: &OwnedLaunch,
    ask: HistoryRequest,
) -> Result<PlanAnswer, ServiceError> {
    let snapshot = owned.snapshot().await;
    let (_, found) = identify(owned, &snapshot).await?;
    let who = choose_member(owned, found, ask)?;
    let payer = owned.payer(&who.payer_id)?;
    let mut plan = ask_plan(owned, &snapshot, &payer, &who).await?;
    reuse_token(&mut plan, snapshot.plan.as_ref());
    let matched = !matches!(plan.member, MemberState::NotMatched);
    let asked = |action, outcome, note: Option<&str>| crate::audit::Access {
        action,
        outcome,
        plan: Some(&who.payer_id),
        count: plan.cards.len(),
        references: Vec::new(),
        note: note.map(str::to_owned),
    };
    use store::{AuditAction as A, AuditOutcome as O};
    crate::audit::record_done(owned, asked(A::PlanAsked, O::Success, None)).await;
    if !matched {
        let note = Some("the plan did not match the member");
        crate::audit::record_done(owned, asked(A::MemberMatchRefused, O::MinorFailure, note)).await;
    }
    let plan = follow_if_needed(owned, &payer, plan).await;
    owned
        .update(|launch| {
            // A history read for another member (or none confirmed) does not stay under review.
            let member = plan.member.confirmed().map(|a| a.patient.as_str());
            if launch
                .history
                .as_ref()
                .is_some_and(|h| !member.is_some_and(|m| h.is_for(&plan.payer_id, m)))
            {
                launch.history = None;
            }
            launch.plan = Some(plan.clone());
            Ok(())
        })
        .await?;
    Ok(answer_view(&payer, &plan))
}

/// A token the plan already granted for this member is reused, not asked for again.
fn reuse_token(plan: &mut PlanState, previous: Option<&PlanState>) {
    let previous = previous.and_then(|p| p.member.access());
    if let (Some(access), Some(previous)) = (plan.member.access_mut(), previous) {
        if access.token.is_none()
            && previous.patient == access.patient
            && previous.fhir_base == access.fhir_base
        {
            access.token = previous.token.clone();
            access.expires_at = previous.expires_at;
        }
    }
}

async fn discover(payer: &PayerRuntime) -> Result<cds_hooks::DiscoveryResponse, CdsError> {
    let mut cached = payer.discovery.lock().await;
    if let Some((at, discovery)) = cached.as_ref() {
        if at.elapsed() < DISCOVERY_TTL {
            return Ok(discovery.clone());
        }
    }
    let discovery = payer.cds.discover(&payer.config.cds_base).await?;
    *cached = Some((std::time::Instant::now(), discovery.clone()));
    Ok(discovery)
}

/// The plan's `appointment-book` service (the configured one, if the plan offers several).
async fn service(payer: &PayerRuntime) -> Result<Service, CdsError> {
    discover(payer)
        .await?
        .services
        .into_iter()
        .find(|s| {
            s.hook == appointment_book::HOOK
                && payer.config.service_id.as_deref().is_none_or(|id| id == s.id)
        })
        .ok_or_else(|| CdsError::NoService(appointment_book::HOOK.into()))
}

async fn ask_plan(
    owned: &OwnedLaunch,
    snapshot: &Launch,
    payer: &PayerRuntime,
    who: &Identified,
) -> Result<PlanState, ServiceError> {
    let failed = |e: CdsError| ServiceError::Plan {
        plan: payer.config.name.clone(),
        cause: PlanFailure::Hook(e),
    };
    let service = service(payer).await.map_err(failed)?;
    let request = hook_request(owned, snapshot, &service, who).await?;
    let answer = payer
        .cds
        .call_for_tenant(&payer.config.cds_base, &service.id, &request, snapshot.tenant.as_deref())
        .await
        .map_err(failed)?;
    tracing::info!(
        payer = %payer.config.id,
        hook_instance = %request.hook_instance,
        status = answer.status,
        cards = answer.response.cards.len(),
        "plan answered"
    );
    Ok(answer_state(payer, service.id, request.hook_instance, answer))
}

/// The request: context for the launched patient and user, the service's prefetch fulfilled
/// from the EMR with the launch's own access, and the PDex member extension.
async fn hook_request(
    owned: &OwnedLaunch,
    snapshot: &Launch,
    service: &Service,
    who: &Identified,
) -> Result<HookRequest, ServiceError> {
    let user_id = snapshot
        .fhir_user
        .as_deref()
        .and_then(|u| fhir::Reference::parse(u).local())
        .ok_or(Refusal::NoFhirUser)?;
    let appointment = hook_appointment(owned, snapshot, &user_id).await;
    let context = appointment_book::context(
        &user_id,
        &snapshot.patient_id,
        snapshot.encounter_id.as_deref(),
        vec![appointment],
    );
    let context = described_context(context, service, who);
    let issuer = owned.ehr().config.issuer.as_str().trim_end_matches('/');
    let mut request = appointment_book::request(issuer, context.clone());
    let (client, token) = owned.emr().current_token(None).await?;
    let prefetcher = cds_hooks::prefetch::FhirPrefetcher {
        client,
        token: Some(token.expose().to_owned()),
        max_pages: 10,
    };
    let prefetch =
        cds_hooks::prefetch::fulfill(&service.prefetch, &context, |q| prefetcher.fetch(q)).await;
    if !prefetch.is_empty() {
        request.prefetch = Some(prefetch);
    }
    let patient = match who.source {
        MemberIdSource::SubscriberAndDemographics => Some(owned.emr().patient().await?),
        _ => None,
    };
    request.extension = Some(pdex::request_extension(
        who.member_id.as_deref(),
        who.coverage.as_ref(),
        patient.as_ref(),
    ));
    if let Some(declared) = cds_hooks::phr::declared_sources(service) {
        cds_hooks::phr::into_sources(&mut request, &declared);
    }
    Ok(request)
}

/// The context as the service's discovery describes it, when it does (seed 003's context
/// descriptors): the member's ids at this plan are what Member History knows beyond the hook.
fn described_context(context: Value, service: &Service, who: &Identified) -> Value {
    let subscriber = who.coverage.as_ref().and_then(pdex::subscriber_id).map(Value::from);
    let extras =
        [("memberId", who.member_id.clone().map(Value::from)), ("subscriberId", subscriber)];
    let (context, unfilled) = cds_hooks::phr::described_context(
        context,
        &extras,
        service,
        &appointment_book::REQUIRED_CONTEXT,
    );
    if !unfilled.is_empty() {
        tracing::info!(service = %service.id, fields = ?unfilled, "the plan describes context fields Member History cannot fill");
    }
    context
}

/// What the plan's answer means: matched with a pointer to the member's data (not yet
/// checked), matched without one, or not matched.
fn answer_state(
    payer: &PayerRuntime,
    service_id: String,
    hook_instance: String,
    answer: HookAnswer,
) -> PlanState {
    let mut notes = answer.response.notes;
    if !answer.response.system_actions.is_empty() {
        notes.push(format!(
            "The plan proposed {} automatic change(s); Member History never applies them without review.",
            answer.response.system_actions.len()
        ));
    }
    let cards = answer.response.cards;
    let member = if answer.status != 200 {
        MemberState::NotMatched
    } else {
        match cards
            .iter()
            .find_map(|c| pdex::pointer_from_card(&c.card))
            .map(|p| access_for(payer, p))
        {
            Some(Ok(access)) => MemberState::Unchecked(access),
            Some(Err(problem)) => MemberState::NoData { problem, access: None },
            None => MemberState::NoData { problem: DataProblem::NoPointer, access: None },
        }
    };
    PlanState {
        payer_id: payer.config.id.clone(),
        service_id: Some(service_id),
        hook_instance: Some(hook_instance),
        cards,
        notes,
        member,
        feedback: HashMap::new(),
    }
}

/// The appointment the `appointment-book` request carries: the EHR's own Appointment when it
/// launched us for one (SMART `fhirContext`) and it is this patient's, else a proposed one
/// for this request.
async fn hook_appointment(owned: &OwnedLaunch, snapshot: &Launch, user_id: &str) -> Value {
    if let Some(id) = snapshot.appointment_id.as_deref() {
        let patient = format!("Patient/{}", snapshot.patient_id);
        match owned.emr().read("Appointment", id).await {
            Ok(appointment) if names_patient(&appointment, &patient) => return appointment,
            // Never send the plan an appointment of someone else.
            Ok(_) => tracing::warn!("the launch's Appointment does not name the launched patient; a proposed one is sent"),
            Err(e) => tracing::warn!(error = %e, "could not read the launch's Appointment; a proposed one is sent"),
        }
    }
    appointment_book::proposed_appointment(
        &uuid::Uuid::new_v4().to_string(),
        &snapshot.patient_id,
        user_id,
        "Member history request",
    )
}

/// Whether an Appointment has `patient` (`Patient/{id}`) among its participants.
fn names_patient(appointment: &Value, patient: &str) -> bool {
    appointment.get("resourceType").and_then(Value::as_str) == Some("Appointment")
        && appointment
            .get("participant")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.pointer("/actor/reference").and_then(Value::as_str))
            .any(|r| fhir::Reference::parse(r).local().as_deref() == Some(patient))
}
