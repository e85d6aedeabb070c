//! Asking the patient's health plan, in place of the EMR: which plan (Coverage.payor against
//! the configured payers), who the member is (Da Vinci PDex: member id, else subscriber id
//! plus demographics, else typed by the clinician), the `appointment-book` hook call with
//! prefetch, the cards, feedback, and following the answer to the plan's FHIR API.

use std::collections::HashMap;
use std::sync::Arc;

use api::{
    AnswerOutcome, CardFeedback, CardView, Identification, LinkKind, LinkView, MemberIdSource,
    PayerSummary, PlanAnswer, PlanMember, PlanStatus, ReasonView, SuggestionView,
};
use cds_hooks::pdex::{self, PlanDataPointer};
use cds_hooks::{appointment_book, CheckedCard, LinkType};
use fhir::ResourceExt;
use serde_json::Value;
use smart::Secret;
use tokio::sync::Mutex;
use tower_sessions::Session;
use url::Url;

use crate::context::owned_launch;
use crate::emr::{current_token, with_emr};
use crate::error::ServiceError;
use crate::launches::Launch;
use crate::state::{AppState, PayerRuntime};

/// How long a plan's discovery document is reused.
const DISCOVERY_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Access to the member's data at the plan.
#[derive(Debug, Clone)]
pub struct PlanAccess {
    pub fhir_base: Url,
    /// The member's Patient id at the plan.
    pub patient: String,
    pub member_id: Option<String>,
    pub token: Option<Secret>,
    pub expires_at: Option<u64>,
}

/// What a launch knows of the plan.
#[derive(Debug, Clone)]
pub struct PlanState {
    pub payer_id: String,
    pub service_id: Option<String>,
    pub hook_instance: Option<String>,
    pub outcome: AnswerOutcome,
    pub cards: Vec<CheckedCard>,
    pub notes: Vec<String>,
    pub access: Option<PlanAccess>,
    /// The member, once the identity check confirmed them as the launched patient.
    pub member: Option<PlanMember>,
    pub data_problem: Option<String>,
    /// The identity check failed: nothing of the plan's data is shown or written.
    pub mismatch: Option<api::MemberMismatch>,
    /// Feedback sent, by card index.
    pub feedback: HashMap<usize, CardFeedback>,
}

/// Who the member is, once identified.
#[derive(Debug, Clone)]
pub struct Identified {
    payer: usize,
    coverage: Option<Value>,
    member_id: Option<String>,
    source: MemberIdSource,
}

/// The plan status of a launch: how Member History will ask, and the answer so far.
pub async fn status(
    state: &AppState,
    session: &Session,
    launch_id: &str,
) -> Result<PlanStatus, ServiceError> {
    let launch = owned_launch(state, session, launch_id).await?;
    let snapshot = launch.lock().await.clone();
    if let Some(plan) = &snapshot.plan {
        if let Some(payer) = state.payer(&plan.payer_id) {
            let identification = if plan.hook_instance.is_none() {
                Identification::FromCardLink { payer: payer.summary() }
            } else {
                identify(state, &launch, &snapshot).await?.0
            };
            let plan = follow_if_needed(state, &launch, payer, plan.clone()).await;
            return Ok(PlanStatus { identification, answer: Some(answer_view(payer, &plan)) });
        }
    }
    let (identification, _) = identify(state, &launch, &snapshot).await?;
    Ok(PlanStatus { identification, answer: None })
}

/// The coverage-based identification, read from the EMR once per launch and then reused.
async fn identify(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    snapshot: &Launch,
) -> Result<(Identification, Option<Identified>), ServiceError> {
    if let Some(known) = &snapshot.identification {
        return Ok(known.clone());
    }
    let found = read_identification(state, launch, snapshot).await?;
    launch.lock().await.identification = Some(found.clone());
    Ok(found)
}

/// Reads the patient's coverage from the EMR and matches it to a configured plan.
async fn read_identification(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    snapshot: &Launch,
) -> Result<(Identification, Option<Identified>), ServiceError> {
    let payers: Vec<PayerSummary> = state.payers.iter().map(PayerRuntime::summary).collect();
    let patient_id = snapshot.patient_id.clone();
    let coverages = with_emr(state, launch, |client, token| {
        let patient_id = patient_id.clone();
        async move {
            client
                .search_all(Some(token.expose()), "Coverage", &[("patient", &patient_id)], 5)
                .await
        }
    })
    .await?;
    if coverages.is_empty() {
        return Ok((Identification::NoCoverage { payers }, None));
    }
    let mut ordered: Vec<&Value> = coverages.iter().collect();
    ordered.sort_by_key(|c| c.str_at("status") != Some("active"));
    let mut plan_names = Vec::new();
    for coverage in ordered {
        for payor in coverage.get("payor").and_then(Value::as_array).into_iter().flatten() {
            let organization = resolve_payor(state, launch, coverage, payor).await;
            let name = organization
                .as_ref()
                .and_then(|o| o.str_at("name"))
                .or_else(|| payor.str_at("display"))
                .map(str::to_owned);
            let matched = state
                .payers
                .iter()
                .position(|p| payer_matches(p, organization.as_ref(), name.as_deref()));
            match matched {
                Some(index) => {
                    let payer = &state.payers[index];
                    let member_id = pdex::member_id(coverage).map(str::to_owned);
                    let subscriber_id = pdex::subscriber_id(coverage).map(str::to_owned);
                    let source = if member_id.is_some() {
                        MemberIdSource::Coverage
                    } else {
                        MemberIdSource::SubscriberAndDemographics
                    };
                    let identification = Identification::Ready {
                        payer: payer.summary(),
                        source,
                        member_id: member_id.clone(),
                        subscriber_id,
                    };
                    let identified = Identified {
                        payer: index,
                        coverage: Some(coverage.clone()),
                        member_id,
                        source,
                    };
                    return Ok((identification, Some(identified)));
                }
                None => plan_names.extend(name),
            }
        }
    }
    plan_names.sort();
    plan_names.dedup();
    Ok((Identification::UnconfiguredPlan { plan_names, payers }, None))
}

/// The Organization a `Coverage.payor` names: contained, or read from the EMR.
async fn resolve_payor(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    coverage: &Value,
    payor: &Value,
) -> Option<Value> {
    let reference = payor.str_at("reference")?;
    match fhir::Reference::parse(reference) {
        fhir::Reference::Contained(id) => coverage
            .get("contained")?
            .as_array()?
            .iter()
            .find(|r| r.id() == Some(id.as_str()))
            .cloned(),
        fhir::Reference::Local { resource_type, id } if resource_type == "Organization" => {
            let result = with_emr(state, launch, |client, token| {
                let id = id.clone();
                async move { client.read(Some(token.expose()), "Organization", &id).await }
            })
            .await;
            match result {
                Ok(org) => Some(org),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the payor Organization");
                    None
                }
            }
        }
        _ => None,
    }
}

fn payer_matches(payer: &PayerRuntime, organization: Option<&Value>, name: Option<&str>) -> bool {
    let by_identifier = organization
        .and_then(|o| o.get("identifier"))
        .and_then(Value::as_array)
        .is_some_and(|ids| {
            ids.iter().any(|id| {
                let token = format!(
                    "{}|{}",
                    id.str_at("system").unwrap_or(""),
                    id.str_at("value").unwrap_or("")
                );
                payer.config.payor_identifiers.iter().any(|p| p == &token)
            })
        });
    let by_name = name
        .is_some_and(|n| payer.config.payor_names.iter().any(|p| p.eq_ignore_ascii_case(n.trim())));
    by_identifier || by_name
}

/// What the clinician asked for: a plan and a typed member id override what the coverage says.
#[derive(Debug, Clone, Default)]
pub struct HistoryRequest {
    pub payer_id: Option<String>,
    pub member_id: Option<String>,
}

/// Calls the plan's `appointment-book` service for the launched patient, keeps the answer
/// with the launch, and follows it to the plan's FHIR API.
pub async fn request_history(
    state: &AppState,
    session: &Session,
    launch_id: &str,
    ask: HistoryRequest,
) -> Result<PlanAnswer, ServiceError> {
    let launch = owned_launch(state, session, launch_id).await?;
    let snapshot = launch.lock().await.clone();
    let (_, identified) = identify(state, &launch, &snapshot).await?;
    let typed = ask.member_id.map(|m| m.trim().to_owned()).filter(|m| !m.is_empty());
    if typed.as_ref().is_some_and(|m| {
        m.len() > 64 || !m.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    }) {
        return Err(ServiceError::BadRequest(
            "A member id has only letters, digits, '-', '_' and '.'.".into(),
        ));
    }
    // A typed member id is for a patient whose coverage does not name the member; where it
    // does, the coverage decides (a typed id could name anyone).
    if typed.is_some() && identified.as_ref().is_some_and(|i| i.member_id.is_some()) {
        return Err(ServiceError::BadRequest(
            "The patient's coverage already gives the member id, so Member History asks the plan with it. If it is wrong, correct the coverage in the EHR.".into(),
        ));
    }
    let identified = match (identified, ask.payer_id.as_deref(), typed) {
        (_, Some(payer_id), Some(member_id)) => {
            let payer = state
                .payers
                .iter()
                .position(|p| p.config.id == payer_id)
                .ok_or_else(|| ServiceError::BadRequest("Choose one of the plans offered.".into()))?;
            Identified { payer, coverage: None, member_id: Some(member_id), source: MemberIdSource::Typed }
        }
        (Some(found), _, Some(member_id)) => {
            Identified { member_id: Some(member_id), source: MemberIdSource::Typed, ..found }
        }
        (Some(found), _, None) => found,
        (None, _, _) => {
            return Err(ServiceError::BadRequest(
                "Member History could not tell which plan covers this patient. Choose the plan and enter the member id.".into(),
            ))
        }
    };
    let payer = &state.payers[identified.payer];
    let mut plan = ask_plan(state, &launch, &snapshot, payer, &identified).await?;
    // A token the plan already granted for this member is reused, not asked for again.
    if let (Some(access), Some(previous)) =
        (plan.access.as_mut(), snapshot.plan.as_ref().and_then(|p| p.access.as_ref()))
    {
        if access.token.is_none()
            && previous.patient == access.patient
            && previous.fhir_base == access.fhir_base
        {
            access.token = previous.token.clone();
            access.expires_at = previous.expires_at;
        }
    }
    let plan = follow_if_needed(state, &launch, payer, plan).await;
    {
        let mut guard = launch.lock().await;
        // A history read for another member (or none confirmed) does not stay under review.
        let member = plan.member.as_ref().and(plan.access.as_ref()).map(|a| &a.patient);
        if guard.history.as_ref().is_some_and(|h| Some(&h.member_patient) != member) {
            guard.history = None;
        }
        guard.plan = Some(plan.clone());
    }
    Ok(answer_view(payer, &plan))
}

async fn discover(
    payer: &PayerRuntime,
) -> Result<cds_hooks::DiscoveryResponse, cds_hooks::CdsError> {
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

async fn ask_plan(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    snapshot: &Launch,
    payer: &PayerRuntime,
    who: &Identified,
) -> Result<PlanState, ServiceError> {
    let plan_error = |e: cds_hooks::CdsError| {
        tracing::warn!(payer = %payer.config.id, error = %e, "plan call failed");
        ServiceError::Plan(e.user_message(&payer.config.name))
    };
    let discovery = discover(payer).await.map_err(plan_error)?;
    let service = discovery
        .services
        .into_iter()
        .find(|s| {
            s.hook == appointment_book::HOOK
                && payer.config.service_id.as_deref().is_none_or(|id| id == s.id)
        })
        .ok_or_else(|| plan_error(cds_hooks::CdsError::NoService(appointment_book::HOOK.into())))?;
    let user_id = snapshot
        .fhir_user
        .as_deref()
        .and_then(|u| fhir::Reference::parse(u).local())
        .ok_or_else(|| {
            ServiceError::BadRequest(
                "The EHR did not say who is signed in (fhirUser), which the plan needs. Ask your EHR administrator to grant Member History the openid and fhirUser scopes.".into(),
            )
        })?;
    let appointment = hook_appointment(state, launch, snapshot, &user_id).await?;
    let context = appointment_book::context(
        &user_id,
        &snapshot.patient_id,
        snapshot.encounter_id.as_deref(),
        vec![appointment],
    );
    let ehr = state
        .ehr(&snapshot.ehr_id)
        .ok_or_else(|| ServiceError::Internal("EHR no longer configured".into()))?;
    let mut request = appointment_book::request(
        ehr.config.issuer.as_str().trim_end_matches('/'),
        context.clone(),
    );

    // Prefetch from the EMR, with the launch's own access.
    let (client, token) = current_token(state, launch, false).await?;
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
        MemberIdSource::SubscriberAndDemographics => {
            let patient_id = snapshot.patient_id.clone();
            Some(
                with_emr(state, launch, |client, token| {
                    let id = patient_id.clone();
                    async move { client.read(Some(token.expose()), "Patient", &id).await }
                })
                .await?,
            )
        }
        _ => None,
    };
    request.extension = Some(pdex::request_extension(
        who.member_id.as_deref(),
        who.coverage.as_ref(),
        patient.as_ref(),
    ));

    let answer = payer
        .cds
        .call_for_tenant(&payer.config.cds_base, &service.id, &request, snapshot.tenant.as_deref())
        .await
        .map_err(plan_error)?;
    tracing::info!(
        payer = %payer.config.id,
        hook_instance = %request.hook_instance,
        status = answer.status,
        cards = answer.response.cards.len(),
        "plan answered"
    );
    let outcome =
        if answer.status == 200 { AnswerOutcome::Matched } else { AnswerOutcome::NotMatched };
    let mut notes = answer.response.notes;
    if !answer.response.system_actions.is_empty() {
        notes.push(format!(
            "The plan proposed {} automatic change(s); Member History never applies them without review.",
            answer.response.system_actions.len()
        ));
    }
    let mut plan = PlanState {
        payer_id: payer.config.id.clone(),
        service_id: Some(service.id),
        hook_instance: Some(request.hook_instance),
        outcome,
        cards: answer.response.cards,
        notes,
        access: None,
        member: None,
        data_problem: None,
        mismatch: None,
        feedback: HashMap::new(),
    };
    if outcome == AnswerOutcome::Matched {
        let pointer = plan.cards.iter().find_map(|c| pdex::pointer_from_card(&c.card));
        match pointer.map(|p| access_for(payer, p)) {
            Some(Ok(access)) => plan.access = Some(access),
            Some(Err(problem)) => plan.data_problem = Some(problem),
            None => {
                plan.data_problem =
                    Some(format!("{} did not say where the member's data is.", payer.config.name))
            }
        }
    }
    Ok(plan)
}

/// The appointment the `appointment-book` request carries: the EHR's own Appointment when it
/// launched us for one (SMART `fhirContext`) and it is this patient's, else a proposed one
/// for this request.
async fn hook_appointment(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    snapshot: &Launch,
    user_id: &str,
) -> Result<Value, ServiceError> {
    if let Some(id) = snapshot.appointment_id.clone() {
        let read = with_emr(state, launch, |client, token| {
            let id = id.clone();
            async move { client.read(Some(token.expose()), "Appointment", &id).await }
        })
        .await;
        let patient = format!("Patient/{}", snapshot.patient_id);
        match read {
            Ok(appointment) if names_patient(&appointment, &patient) => return Ok(appointment),
            // Never send the plan an appointment of someone else.
            Ok(_) => tracing::warn!("the launch's Appointment does not name the launched patient; a proposed one is sent"),
            Err(e) => tracing::warn!(error = %e, "could not read the launch's Appointment; a proposed one is sent"),
        }
    }
    Ok(appointment_book::proposed_appointment(
        &uuid::Uuid::new_v4().to_string(),
        &snapshot.patient_id,
        user_id,
        "Member history request",
    ))
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

/// Accepts a pointer only to the payer's configured FHIR API: a card cannot send our
/// requests (or a token) anywhere else.
fn access_for(payer: &PayerRuntime, pointer: PlanDataPointer) -> Result<PlanAccess, String> {
    if !fhir::base::same_server(payer.config.fhir_base.as_str(), &pointer.fhir_server) {
        return Err(format!(
            "{} pointed to a FHIR server that is not configured for it; Member History did not follow it.",
            payer.config.name
        ));
    }
    if !fhir::resource::is_fhir_id(&pointer.patient) {
        return Err(format!(
            "{} named the member with an id that is not valid.",
            payer.config.name
        ));
    }
    Ok(PlanAccess {
        fhir_base: payer.config.fhir_base.clone(),
        patient: pointer.patient,
        member_id: pointer.member_id,
        token: pointer.access_token.map(Secret::new),
        expires_at: pointer.expires_in.map(|s| jose::now() + s),
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
        outcome: AnswerOutcome::Matched,
        cards: Vec::new(),
        notes: Vec::new(),
        access: Some(access),
        member: None,
        data_problem: None,
        mismatch: None,
        feedback: HashMap::new(),
    })
}

/// A token for the plan's FHIR API: the one the plan gave, else SMART Backend Services.
pub async fn plan_token(
    state: &AppState,
    payer: &PayerRuntime,
    access: &mut PlanAccess,
) -> Result<Option<Secret>, String> {
    let now = jose::now();
    if let Some(token) = &access.token {
        if access.expires_at.is_none_or(|at| at > now + 30) {
            return Ok(Some(token.clone()));
        }
    }
    let (Some(client), crate::config::PlanFhirAuth::BackendServices { scope, .. }) =
        (&payer.backend, &payer.config.fhir_auth)
    else {
        return Ok(access.token.clone());
    };
    let config = state.discovery.get(&payer.config.fhir_base).await.map_err(|e| {
        format!("{}'s SMART configuration could not be read ({e}).", payer.config.name)
    })?;
    let response = client.client_credentials(&config, scope).await.map_err(|e| {
        format!("{} refused Member History's request for access ({}).", payer.config.name, e.code())
    })?;
    access.token = Some(response.access_token.clone());
    access.expires_at = response.expires_in.map(|s| now + s);
    Ok(Some(response.access_token))
}

/// Reads the member's record at the plan once and checks it is the launched patient
/// ([`pdex::identity`]), so the page shows whose data it is about to review, or why it
/// shows none.
pub(crate) async fn follow_if_needed(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    payer: &PayerRuntime,
    mut plan: PlanState,
) -> PlanState {
    if plan.member.is_some() || plan.data_problem.is_some() || plan.mismatch.is_some() {
        return plan;
    }
    let Some(mut access) = plan.access.clone() else { return plan };
    match member_summary(state, launch, payer, &mut access).await {
        Ok(Followed::Member(member)) => plan.member = Some(member),
        Ok(Followed::Mismatch(mismatch)) => plan.mismatch = Some(mismatch),
        Err(problem) => plan.data_problem = Some(problem),
    }
    plan.access = Some(access);
    if let Some(stored) = launch.lock().await.plan.as_mut() {
        if stored.hook_instance == plan.hook_instance {
            stored.member = plan.member.clone();
            stored.data_problem = plan.data_problem.clone();
            stored.mismatch = plan.mismatch.clone();
            stored.access = plan.access.clone();
        }
    }
    plan
}

/// What following the plan's answer found.
enum Followed {
    Member(PlanMember),
    Mismatch(api::MemberMismatch),
}

async fn member_summary(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    payer: &PayerRuntime,
    access: &mut PlanAccess,
) -> Result<Followed, String> {
    let token = plan_token(state, payer, access).await?;
    let client = state.plan_fhir_client(payer, &access.fhir_base);
    let token = token.as_ref().map(Secret::expose);
    let unreadable = |e: fhir::FhirError| {
        tracing::warn!(payer = %payer.config.id, error = %e, "plan FHIR API read failed");
        format!("Member History could not read {}'s data: {e}.", payer.config.name)
    };
    let (plan_patient, emr_patient) =
        tokio::join!(client.read(token, "Patient", &access.patient), emr_patient(state, launch));
    let plan_patient = plan_patient.map_err(unreadable)?;
    let emr_patient = emr_patient.map_err(|e| {
        tracing::warn!(error = %e, "could not read the EMR patient for the identity check");
        "Member History could not read the patient's record in the EHR to check it is the plan's member. Try again.".to_owned()
    })?;
    if let Err(mismatch) = check_identity(payer, &emr_patient, &plan_patient) {
        return Ok(Followed::Mismatch(mismatch));
    }
    let everything_path = format!("Patient/{}/$everything", access.patient);
    let everything =
        client.search(token, &everything_path, &[("_count", "1")]).await.map_err(unreadable)?;
    Ok(Followed::Member(PlanMember {
        name: fhir::display_name(&plan_patient).unwrap_or_else(|| "Unnamed member".into()),
        birth_date: plan_patient.str_at("birthDate").map(str::to_owned),
        member_id: access
            .member_id
            .clone()
            .or_else(|| pdex::member_id(&plan_patient).map(str::to_owned)),
        records: everything.total,
    }))
}

/// The launched patient's record in the EMR.
pub async fn emr_patient(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
) -> Result<Value, ServiceError> {
    let patient_id = launch.lock().await.patient_id.clone();
    with_emr(state, launch, |client, token| {
        let id = patient_id.clone();
        async move { client.read(Some(token.expose()), "Patient", &id).await }
    })
    .await
}

/// The identity check ([`::pdex::identity::check`]); a mismatch is logged (which parts, never
/// names or values) and described for the page.
fn check_identity(
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
    Err(mismatch_view(&payer.config.name, fields))
}

fn mismatch_view(plan: &str, fields: Vec<::pdex::identity::IdentityField>) -> api::MemberMismatch {
    let parts: Vec<&str> = fields.iter().map(|f| f.describe()).collect();
    let differ = match parts.as_slice() {
        [one] => format!("the {one} differs"),
        [init @ .., last] => format!("the {} and {last} differ", init.join(", ")),
        [] => "it differs".to_owned(),
    };
    let message = format!(
        "{plan}'s member record does not match this patient: {differ}. Nothing from {plan} is shown or written into this chart. Check the member id on the patient's insurance card and the patient's name, birth date and sex in the EHR, then ask again; if they are right, contact {plan}."
    );
    api::MemberMismatch { fields, message }
}

/// Before a write: reads the plan's member again and repeats the identity check against the
/// EMR patient, whatever the browser sent.
pub async fn recheck_member(
    state: &AppState,
    payer: &PayerRuntime,
    access: &PlanAccess,
    emr_patient: &Value,
) -> Result<(), ServiceError> {
    let mut access = access.clone();
    let token = plan_token(state, payer, &mut access).await.map_err(ServiceError::Plan)?;
    let client = state.plan_fhir_client(payer, &access.fhir_base);
    let plan_patient =
        client.read(token.as_ref().map(Secret::expose), "Patient", &access.patient).await.map_err(
            |e| {
                tracing::warn!(payer = %payer.config.id, error = %e, "plan member re-read failed");
                ServiceError::Plan(format!(
                    "Member History could not confirm with {} that its member is this patient, so nothing was written. Try again.",
                    payer.config.name
                ))
            },
        )?;
    check_identity(payer, emr_patient, &plan_patient)
        .map_err(|m| ServiceError::MemberMismatch(m.message))
}

/// The page's view of a plan state.
pub fn answer_view(payer: &PayerRuntime, plan: &PlanState) -> PlanAnswer {
    if let Some(mismatch) = &plan.mismatch {
        // The plan's cards are about its member, who is someone else: none of it is shown.
        return PlanAnswer {
            payer: payer.summary(),
            outcome: plan.outcome,
            cards: Vec::new(),
            notes: Vec::new(),
            member: None,
            data_problem: None,
            member_mismatch: Some(mismatch.clone()),
        };
    }
    PlanAnswer {
        payer: payer.summary(),
        outcome: plan.outcome,
        cards: plan
            .cards
            .iter()
            .enumerate()
            .map(|(i, c)| card_view(payer, i, c, plan.feedback.get(&i)))
            .collect(),
        notes: plan.notes.clone(),
        member: plan.member.clone(),
        data_problem: plan.data_problem.clone(),
        member_mismatch: plan.mismatch.clone(),
    }
}

fn card_view(
    payer: &PayerRuntime,
    index: usize,
    checked: &CheckedCard,
    feedback: Option<&CardFeedback>,
) -> CardView {
    let card = &checked.card;
    let configured = payer.config.fhir_base.as_str();
    CardView {
        index,
        uuid: card.uuid.clone(),
        summary: card.summary.clone(),
        detail_html: card.detail.as_deref().map(cds_hooks::markdown::to_safe_html),
        indicator: match checked.indicator {
            cds_hooks::Indicator::Info => api::CardIndicator::Info,
            cds_hooks::Indicator::Warning => api::CardIndicator::Warning,
            cds_hooks::Indicator::Critical => api::CardIndicator::Critical,
        },
        source_label: card.source.label.clone(),
        source_url: card.source.url.clone(),
        suggestions: card
            .suggestions
            .iter()
            .map(|s| SuggestionView {
                uuid: s.uuid.clone(),
                label: s.label.clone(),
                recommended: s.is_recommended.unwrap_or(false),
            })
            .collect(),
        override_reasons: card
            .override_reasons
            .iter()
            .map(|r| ReasonView {
                code: r.code.clone(),
                display: r.display.clone().unwrap_or_else(|| r.code.clone()),
            })
            .collect(),
        links: card
            .links
            .iter()
            .map(|l| LinkView {
                label: l.label.clone(),
                url: l.url.clone(),
                kind: match l.link_type {
                    LinkType::Absolute => LinkKind::Web,
                    LinkType::Smart => {
                        let ours = l
                            .app_context
                            .as_deref()
                            .and_then(pdex::pointer_from_app_context)
                            .is_some_and(|p| fhir::base::same_server(configured, &p.fhir_server));
                        if ours {
                            LinkKind::PlanData
                        } else {
                            LinkKind::OtherApp
                        }
                    }
                },
            })
            .collect(),
        feedback_allowed: checked.feedback_allowed,
        feedback: feedback.cloned(),
    }
}

/// What the clinician did with a card.
#[derive(Debug, Clone)]
pub enum FeedbackInput {
    Accept { suggestion: String },
    Dismiss { reason: Option<String>, comment: Option<String> },
}

/// Sends CDS Hooks feedback for card `index` of the launch's answer.
pub async fn send_feedback(
    state: &AppState,
    session: &Session,
    launch_id: &str,
    index: usize,
    input: FeedbackInput,
) -> Result<CardView, ServiceError> {
    let launch = owned_launch(state, session, launch_id).await?;
    let payer_id = launch.lock().await.plan.as_ref().map(|p| p.payer_id.clone());
    let payer = payer_id
        .and_then(|id| state.payer(&id))
        .ok_or_else(|| ServiceError::BadRequest("Ask the plan first.".into()))?;
    feedback_for_launch(&launch, payer, index, input).await
}

/// Feedback for a launch already checked to belong to the caller.
pub async fn feedback_for_launch(
    launch: &Arc<Mutex<Launch>>,
    payer: &PayerRuntime,
    index: usize,
    input: FeedbackInput,
) -> Result<CardView, ServiceError> {
    let plan = launch
        .lock()
        .await
        .plan
        .clone()
        .ok_or_else(|| ServiceError::BadRequest("Ask the plan first.".into()))?;
    let checked =
        plan.cards.get(index).ok_or_else(|| ServiceError::BadRequest("No such card.".into()))?;
    let uuid = match (&checked.card.uuid, checked.feedback_allowed) {
        (Some(uuid), true) => uuid.clone(),
        _ => {
            return Err(ServiceError::BadRequest(
                "The plan did not make this card one it can take feedback on.".into(),
            ))
        }
    };
    let service_id = plan
        .service_id
        .clone()
        .ok_or_else(|| ServiceError::BadRequest("No hook call to give feedback on.".into()))?;
    let (item, recorded) = feedback_item(checked, uuid, &input)?;
    let card_uuid = item.card.clone();
    payer
        .cds
        .feedback(
            &payer.config.cds_base,
            &service_id,
            &cds_hooks::FeedbackRequest { feedback: vec![item] },
        )
        .await
        .map_err(|e| ServiceError::Plan(e.user_message(&payer.config.name)))?;
    // The launch may have changed while the plan was asked (another tab asked the plan again):
    // record the feedback only on the same card of the same plan's answer.
    let mut guard = launch.lock().await;
    let stored = guard
        .plan
        .as_mut()
        .filter(|p| p.payer_id == plan.payer_id && p.service_id.as_deref() == Some(&service_id))
        .ok_or_else(stale_card)?;
    let card = stored
        .cards
        .get(index)
        .filter(|c| c.card.uuid.as_deref() == Some(card_uuid.as_str()))
        .ok_or_else(stale_card)?;
    let view = card_view(payer, index, card, Some(&recorded));
    stored.feedback.insert(index, recorded);
    Ok(view)
}

/// The feedback message for one card, and what the launch records of it. Checks the chosen
/// suggestion or override reason is one the card offers.
fn feedback_item(
    checked: &CheckedCard,
    uuid: String,
    input: &FeedbackInput,
) -> Result<(cds_hooks::Feedback, CardFeedback), ServiceError> {
    Ok(match input {
        FeedbackInput::Accept { suggestion } => {
            let found = checked
                .card
                .suggestions
                .iter()
                .find(|s| s.uuid.as_deref() == Some(suggestion.as_str()));
            let label = found.map(|s| s.label.clone()).ok_or_else(|| {
                ServiceError::BadRequest("No such suggestion on this card.".into())
            })?;
            (
                cds_hooks::Feedback {
                    card: uuid,
                    outcome: cds_hooks::Outcome::Accepted,
                    accepted_suggestions: vec![cds_hooks::AcceptedSuggestion {
                        id: suggestion.clone(),
                    }],
                    override_reason: None,
                    outcome_timestamp: now_rfc3339(),
                },
                CardFeedback::Accepted { suggestion: label },
            )
        }
        FeedbackInput::Dismiss { reason, comment } => {
            let coding = match reason {
                Some(code) => Some(
                    checked
                        .card
                        .override_reasons
                        .iter()
                        .find(|r| &r.code == code)
                        .cloned()
                        .ok_or_else(|| {
                            ServiceError::BadRequest("Choose one of the plan's reasons.".into())
                        })?,
                ),
                None => None,
            };
            let comment = comment
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| c.chars().take(500).collect::<String>());
            let display =
                coding.as_ref().map(|c| c.display.clone().unwrap_or_else(|| c.code.clone()));
            let override_reason = (coding.is_some() || comment.is_some())
                .then_some(cds_hooks::OverrideReason { reason: coding, user_comment: comment });
            (
                cds_hooks::Feedback {
                    card: uuid,
                    outcome: cds_hooks::Outcome::Overridden,
                    accepted_suggestions: Vec::new(),
                    override_reason,
                    outcome_timestamp: now_rfc3339(),
                },
                CardFeedback::Dismissed { reason: display },
            )
        }
    })
}

fn stale_card() -> ServiceError {
    ServiceError::Stale(
        "The plan's answer was replaced in another tab while this was sent, so it is not recorded here. Reload the page to see the current cards."
            .into(),
    )
}

pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use ::pdex::identity::IdentityField;

    #[test]
    fn the_mismatch_message_names_the_parts_and_what_to_do() {
        let m = mismatch_view("Acme Health", vec![IdentityField::BirthDate, IdentityField::Name]);
        assert!(m.message.contains("the birth date and name differ"), "{}", m.message);
        assert!(m.message.contains("Nothing from Acme Health is shown or written"));
        assert!(m.message.contains("insurance card"));
        let one = mismatch_view("Acme Health", vec![IdentityField::Sex]);
        assert!(one.message.contains("the sex differs"));
    }
}
