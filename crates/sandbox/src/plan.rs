//! The sandbox health plan: a CDS Hooks service (`appointment-book`, Da Vinci PDex member
//! history), a FHIR API with `Patient/{id}/$everything`, an authorization server for its
//! FHIR API (SMART Backend Services), and synthetic member histories.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::{AuthServer, TokenParams};
use crate::cds_trust::{CdsTrust, SeenJwt};
use crate::fhir_api::FhirApi;
use crate::store::FhirStore;
use crate::synthetic::{self, CoverageKind, Person};

/// The plan's CDS service id.
pub const SERVICE_ID: &str = "pdex-member-history";
/// The code system of the plan's override reasons.
pub const OVERRIDE_SYSTEM: &str = "http://sandbox-plan.member-history.example/override-reason";

/// How the plan tells the app where the member's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerStyle {
    /// PDex 2.x: a `smart` link whose `appContext` names the plan's FHIR base and member.
    #[default]
    Pdex2AppContext,
    /// PDex STU1: a card carrying the plan's FHIR base and an access token.
    Stu1Token,
}

/// One member of the plan.
#[derive(Debug, Clone)]
pub struct Member {
    /// The plan's Patient id.
    pub patient_id: String,
    pub member_id: String,
    pub subscriber_id: String,
    pub family: String,
    pub given: Vec<String>,
    pub birth_date: String,
    pub gender: &'static str,
    /// Index of the synthetic person.
    pub person: usize,
    /// How many resources the plan holds for the member.
    pub records: usize,
}

/// A request the plan received, as tests inspect it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub path: String,
    pub jwt: SeenJwt,
    pub body: Option<Value>,
}

#[derive(Debug)]
pub struct Plan {
    pub base_url: String,
    pub fhir_base: String,
    pub store: Arc<FhirStore>,
    pub members: Vec<Member>,
    pub auth: AuthServer,
    pub api: FhirApi,
    pub trust: CdsTrust,
    pub style: Mutex<AnswerStyle>,
    /// Where the PDex 2.x `smart` link points (the app's launch URL).
    pub app_launch_url: Option<String>,
    /// Every request to the CDS endpoints, verified or not.
    pub received: Mutex<Vec<ReceivedRequest>>,
    /// The Provider Access API's requests and behaviour.
    pub provider_access: crate::access_requests::ProviderAccess,
    /// Discovery advertises the proposed extensions of seed 003 (`cds_hooks::phr`): context
    /// descriptors naming `memberId` and not `encounterId`, and `fhirSources` with `contexts`.
    pub proposed_extensions: std::sync::atomic::AtomicBool,
}

/// The plan's members: everyone whose EHR coverage names the plan. One person covered by
/// subscriber id only has a second, duplicate record, so matching by demographics finds two.
pub fn members(people: &[Person]) -> Vec<Member> {
    let mut out = Vec::new();
    let mut ambiguous_done = false;
    for p in people {
        if !matches!(p.coverage, CoverageKind::MemberId | CoverageKind::SubscriberOnly) {
            continue;
        }
        let member = Member {
            patient_id: format!("mbr-{:03}", p.index + 1),
            member_id: p.member_id.clone(),
            subscriber_id: p.subscriber_id.clone(),
            family: p.family.clone(),
            given: p.given.clone(),
            birth_date: p.birth_date.clone(),
            gender: p.gender,
            person: p.index,
            records: 0,
        };
        // The second subscriber-only person has a duplicate record at the plan.
        if p.coverage == CoverageKind::SubscriberOnly && p.index >= 6 && !ambiguous_done {
            ambiguous_done = true;
            out.push(Member {
                patient_id: format!("mbr-{:03}-dup", p.index + 1),
                member_id: format!("{}D", p.member_id),
                ..member.clone()
            });
        }
        out.push(member);
    }
    out
}

/// Everything the plan holds at start.
pub fn plan_resources(
    people: &[Person],
    members: &[Member],
    history_size: usize,
    seed: u64,
) -> Vec<Value> {
    let mut out = vec![synthetic::organization(
        "payer-sbx",
        synthetic::PLAN_NAME,
        json!({"system": synthetic::systems::PAYER_ID, "value": synthetic::PLAN_PAYER_ID}),
        true,
    )];
    out.extend(crate::history::directory());
    for m in members {
        let person = &people[m.person];
        let identifier = json!({
            "type": {"coding": [{"system": synthetic::systems::V2_0203, "code": "MB", "display": "Member Number"}]},
            "system": synthetic::systems::MEMBER_ID,
            "value": m.member_id,
        });
        let mut patient = synthetic::patient_resource(person, &m.patient_id, identifier);
        if let Some(ids) = patient["identifier"].as_array_mut() {
            ids.push(
                json!({"system": synthetic::systems::SUBSCRIBER_ID, "value": m.subscriber_id}),
            );
        }
        out.push(patient);
        out.push(json!({
            "resourceType": "Coverage",
            "id": format!("{}-cov", m.patient_id),
            "status": "active",
            "subscriberId": m.subscriber_id,
            "beneficiary": {"reference": format!("Patient/{}", m.patient_id)},
            "payor": [{"reference": "Organization/payer-sbx"}],
            "period": {"start": "2021-01-01"},
        }));
        if !m.patient_id.ends_with("-dup") {
            let history = crate::history::HistoryBuilder::new(person, &m.patient_id, seed)
                .build(history_size);
            out.extend(plan_provenance(&m.patient_id, &history));
            out.extend(history);
        }
    }
    out
}

/// Resources one plan Provenance record covers: a claim load or a clinical feed, as plans
/// record them (PDex asks plans to keep and pass on the Provenance of what they received).
const PROVENANCE_BATCH: usize = 25;

/// The plan's Provenance for a member's history: one record per batch of resources, the
/// plan as transmitter and the recorded load date.
pub fn plan_provenance(member_patient_id: &str, history: &[Value]) -> Vec<Value> {
    history
        .chunks(PROVENANCE_BATCH)
        .enumerate()
        .map(|(n, batch)| {
            let targets: Vec<Value> = batch
                .iter()
                .filter_map(fhir::ResourceExt::local_reference)
                .map(|r| json!({"reference": r}))
                .collect();
            json!({
                "resourceType": "Provenance",
                "id": format!("{member_patient_id}-prov-{:03}", n + 1),
                "target": targets,
                "recorded": "2026-01-15T08:00:00Z",
                "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}]},
                "agent": [{
                    "type": {"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type", "code": "transmitter"}]},
                    "who": {"reference": "Organization/payer-sbx"},
                }],
            })
        })
        .collect()
}

/// The plan FHIR API's CapabilityStatement: read/search and `$everything`.
pub fn capability_statement(fhir_base: &str, auth_base: &str) -> Value {
    let mut statement = crate::fhir_api::capability_statement(
        fhir_base,
        "Sandbox Health Plan",
        &[
            "Patient",
            "Coverage",
            "Organization",
            "Practitioner",
            "Encounter",
            "Condition",
            "Procedure",
            "Observation",
            "MedicationDispense",
            "Immunization",
            "AllergyIntolerance",
            "ExplanationOfBenefit",
            "Provenance",
        ],
        Some(auth_base),
        &crate::fhir_api::WriteRules::default(),
    );
    if let Some(patient) = statement.pointer_mut("/rest/0/resource/0") {
        patient["operation"] = json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]);
    }
    // The Provider Access API's two operations, on Group, as PDex's provider-access server
    // CapabilityStatement names them.
    if let Some(resources) = statement.pointer_mut("/rest/0/resource").and_then(Value::as_array_mut)
    {
        resources.push(json!({
            "type": "Group",
            "operation": [
                {"name": "provider-member-match", "definition": "http://hl7.org/fhir/us/davinci-pdex/OperationDefinition/ProviderMemberMatch"},
                {"name": "davinci-data-export", "definition": "http://hl7.org/fhir/us/davinci-atr/OperationDefinition/davinci-data-export"},
            ],
        }));
    }
    statement["instantiates"] = json!([
        "http://hl7.org/fhir/us/davinci-pdex/CapabilityStatement/pdex-provider-access-server"
    ]);
    statement
}

/// Why the member could not be matched, as the plan explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchFailure {
    NoIdentifiers,
    NoMatch,
    Several(usize),
}

impl Plan {
    /// Matches the member named by a hook request: member id (`extension.memberId`), else
    /// subscriber id plus the beneficiary's demographics (from the Coverage in the extension,
    /// or the prefetched Patient).
    pub fn match_member(&self, request: &Value) -> Result<&Member, MatchFailure> {
        let extension = request.get("extension").cloned().unwrap_or(Value::Null);
        let member_id = ["memberId", "davinci-pdex.memberId"]
            .iter()
            .find_map(|k| extension.get(*k).and_then(Value::as_str))
            .filter(|s| !s.is_empty());
        if let Some(member_id) = member_id {
            let found: Vec<&Member> =
                self.members.iter().filter(|m| m.member_id == member_id).collect();
            return one(found);
        }
        let coverage = extension.get("coverage").cloned().unwrap_or(Value::Null);
        let subscriber = coverage
            .get("subscriberId")
            .and_then(Value::as_str)
            .or_else(|| extension.get("subscriberId").and_then(Value::as_str));
        let Some(subscriber) = subscriber else { return Err(MatchFailure::NoIdentifiers) };
        // The beneficiary: contained in the Coverage, else the prefetched Patient.
        let contained = coverage.get("contained").and_then(Value::as_array).and_then(|c| {
            c.iter().find(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
        });
        let patient = contained
            .or_else(|| request.pointer("/prefetch/patient"))
            .ok_or(MatchFailure::NoIdentifiers)?;
        self.by_subscriber(subscriber, patient)
    }

    /// Matches a Provider Access `MemberBundle`: the member id on the Coverage (identifier
    /// typed MB), else its subscriber id plus the MemberPatient's family name and birth date.
    pub fn match_member_bundle(
        &self,
        patient: &Value,
        coverage: &Value,
    ) -> Result<&Member, MatchFailure> {
        let member_id = coverage
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| {
                i.pointer("/type/coding").and_then(Value::as_array).is_some_and(|codings| {
                    codings.iter().any(|c| c.get("code").and_then(Value::as_str) == Some("MB"))
                })
            })
            .and_then(|i| i.get("value").and_then(Value::as_str));
        if let Some(member_id) = member_id {
            return one(self.members.iter().filter(|m| m.member_id == member_id).collect());
        }
        let subscriber = coverage.get("subscriberId").and_then(Value::as_str);
        let Some(subscriber) = subscriber else { return Err(MatchFailure::NoIdentifiers) };
        self.by_subscriber(subscriber, patient)
    }

    /// Members with this subscriber id, family name and birth date.
    fn by_subscriber(&self, subscriber: &str, patient: &Value) -> Result<&Member, MatchFailure> {
        let family =
            patient.pointer("/name/0/family").and_then(Value::as_str).unwrap_or("").to_lowercase();
        let birth_date = patient.get("birthDate").and_then(Value::as_str).unwrap_or("");
        let found: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| {
                m.subscriber_id == subscriber
                    && m.family.to_lowercase() == family
                    && m.birth_date == birth_date
            })
            .collect();
        one(found)
    }

    pub fn style(&self) -> AnswerStyle {
        *self.style.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Switches the answer style (PDex 2.x or STU1).
    pub fn set_style(&self, style: AnswerStyle) {
        *self.style.lock().unwrap_or_else(|p| p.into_inner()) = style;
    }

    fn record(&self, path: &str, jwt: SeenJwt, body: Option<Value>) {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).push(ReceivedRequest {
            path: path.to_owned(),
            jwt,
            body,
        });
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The latest call of the member-history hook service.
    pub fn last_hook_request(&self) -> Option<ReceivedRequest> {
        let path = format!("/{SERVICE_ID}");
        self.received().into_iter().rev().find(|r| r.path.ends_with(&path))
    }

    /// The feedback items received so far.
    pub fn feedback(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.path.ends_with("/feedback") && r.jwt.accepted)
            .filter_map(|r| r.body?.get("feedback")?.as_array().cloned())
            .flatten()
            .collect()
    }

    pub fn discovery(&self) -> Value {
        let descriptor = |n: &str, text: &str| json!({"coding": [{"system": "https://cds-hooks.org/hooks/appointment-book/#context", "code": n, "display": text}], "text": text});
        let mut discovery = json!({"services": [{
            "hook": "appointment-book",
            "id": SERVICE_ID,
            "title": "Member history (Da Vinci PDex)",
            "description": "Tells the provider what the plan knows of the member's care elsewhere, and where to fetch it.",
            "prefetch": {
                "patient": "Patient/{{context.patientId}}",
                "coverage": "Coverage?patient={{context.patientId}}"
            },
            "usageRequirements": "Send the member id (extension.memberId), or the member's Coverage with the subscriber id and beneficiary demographics (extension.coverage).",
            "context": {
                "userId": descriptor("1", "The id of the current user. Must be in the format [ResourceType]/[id]"),
                "patientId": descriptor("2", "The FHIR Patient.id of the current patient in context"),
                "encounterId": descriptor("3", "The FHIR Encounter.id of the current encounter in context"),
                "appointments": descriptor("4", "A Bundle of the proposed Appointment resources")
            }
        }]});
        if self.proposed_extensions.load(std::sync::atomic::Ordering::Relaxed) {
            let service = &mut discovery["services"][0];
            if let Some(context) = service["context"].as_object_mut() {
                context.remove("encounterId");
                context.insert(
                    "memberId".into(),
                    descriptor("5", "The member's id at the plan (Coverage identifier of type MB)"),
                );
            }
            service["extension"] = json!({"fhirSources": true, "contexts": true});
        }
        discovery
    }

    fn answer(&self, member: &Member) -> Value {
        let count = member.records;
        let name = format!("{} {}", member.given.join(" "), member.family);
        let detail = format!(
            "**{name}** (member {id}) is a member of {plan}.\n\n\
             The plan holds **{count}** records of care elsewhere: visits, diagnoses, procedures, \
             dispensed medications, immunizations, lab results, allergies and claims.\n\n\
             Open Member History to review them and add what matters to the chart.",
            id = member.member_id,
            plan = synthetic::PLAN_NAME,
        );
        let reasons = json!([
            {"code": "already-reviewed", "system": OVERRIDE_SYSTEM, "display": "History already reviewed"},
            {"code": "not-relevant", "system": OVERRIDE_SYSTEM, "display": "Not relevant to this visit"},
            {"code": "patient-declined", "system": OVERRIDE_SYSTEM, "display": "Patient declined"}
        ]);
        let suggestion = json!({
            "label": "Review the plan's history and add it to the chart",
            "uuid": uuid::Uuid::new_v4().to_string(),
            "isRecommended": true,
        });
        let mut card = json!({
            "uuid": uuid::Uuid::new_v4().to_string(),
            "summary": format!("{} has {count} records for this member", synthetic::PLAN_NAME),
            "detail": detail,
            "indicator": "info",
            "source": {"label": synthetic::PLAN_NAME, "url": self.base_url},
            "suggestions": [suggestion],
            "selectionBehavior": "at-most-one",
            "overrideReasons": reasons,
        });
        match self.style() {
            AnswerStyle::Pdex2AppContext => {
                let app_context = json!({"fhirServer": self.fhir_base, "patient": member.patient_id, "memberId": member.member_id});
                if let Some(url) = &self.app_launch_url {
                    card["links"] = json!([{
                        "label": "Review in Member History",
                        "url": url,
                        "type": "smart",
                        "appContext": app_context.to_string(),
                    }]);
                }
            }
            AnswerStyle::Stu1Token => {
                let token = self
                    .auth
                    .mint_access_token("member-history", "patient/*.rs", Some(&member.patient_id))
                    .unwrap_or_default();
                card["source"]["url"] = json!(self.fhir_base);
                card["extension"] = json!({
                    "davinci-pdex.fhirServer": self.fhir_base,
                    "davinci-pdex.accessToken": token,
                    "davinci-pdex.tokenExpiresIn": self.auth.access_token_ttl,
                    "davinci-pdex.patient": member.patient_id,
                    "davinci-pdex.memberSearchResult": "match",
                });
            }
        }
        let reminder = json!({
            "uuid": uuid::Uuid::new_v4().to_string(),
            "summary": "Preventive care: check the member's influenza vaccination",
            "detail": "The plan has no claim for a seasonal influenza vaccine this season.",
            "indicator": "warning",
            "source": {"label": synthetic::PLAN_NAME},
            "overrideReasons": [{"code": "given-elsewhere", "system": OVERRIDE_SYSTEM, "display": "Given elsewhere"}],
        });
        json!({"cards": [card, reminder]})
    }

    fn no_match_answer(&self, failure: &MatchFailure) -> Value {
        let (summary, detail, code) = match failure {
            MatchFailure::NoIdentifiers => (
                "The plan could not identify the member",
                "The request carried neither a member id nor a Coverage with subscriber id and beneficiary demographics. Enter the member id from the patient's insurance card and try again.",
                "no-identifiers",
            ),
            MatchFailure::NoMatch => (
                "No member of the plan matches this patient",
                "No member matches the member id, or the subscriber id with the patient's name and birth date. Check the patient's insurance card and enter the member id.",
                "no-match",
            ),
            MatchFailure::Several(_) => (
                "Several members of the plan match this patient",
                "More than one member matches the subscriber id, name and birth date. Enter the member id from the patient's insurance card to choose one.",
                "multiple-matches",
            ),
        };
        json!({"cards": [{
            "uuid": uuid::Uuid::new_v4().to_string(),
            "summary": summary,
            "detail": detail,
            "indicator": "warning",
            "source": {"label": synthetic::PLAN_NAME},
            "extension": {"davinci-pdex.memberSearchResult": code},
        }]})
    }
}

fn one(found: Vec<&Member>) -> Result<&Member, MatchFailure> {
    match found.as_slice() {
        [m] => Ok(m),
        [] => Err(MatchFailure::NoMatch),
        many => Err(MatchFailure::Several(many.len())),
    }
}

/// The plan's endpoints; `operations` are more FHIR routes (the Provider Access API).
pub fn router(plan: Arc<Plan>, operations: Router) -> Router {
    let smart_config = {
        let plan = plan.clone();
        move || async move { Json(plan.auth.smart_configuration()) }
    };
    let fhir = crate::fhir_api::router(plan.api.clone())
        .route("/.well-known/smart-configuration", get(smart_config))
        .merge(operations);
    Router::new()
        .route("/", get(home))
        .route("/cds-services", get(discovery))
        .route("/cds-services/{id}", post(hook))
        .route("/cds-services/{id}/feedback", post(feedback))
        .route("/auth/token", post(token))
        .route("/auth/jwks", get(jwks))
        .with_state(plan)
        .nest("/fhir", fhir)
}

async fn home(State(plan): State<Arc<Plan>>) -> axum::response::Html<String> {
    crate::pages::layout(
        synthetic::PLAN_NAME,
        "Sandbox health plan",
        maud::html! {
            p { "CDS Hooks discovery: " code { (plan.base_url) "/cds-services" } }
            p { "FHIR API: " code { (plan.fhir_base) } }
            p { (plan.members.len()) " members." }
            details {
                summary { "Members' sign-in (member id and date of birth, for member-authorized access)" }
                ul {
                    @for member in &plan.members {
                        li { (member.family) ", " (member.given.join(" ")) ": " code { (member.member_id) } " · " (member.birth_date) }
                    }
                }
            }
            @if let Some(push_url) = plan.push_url() {
                h2 { "Push a member's history" }
                p { "Sends the member's " code { "Patient/$everything" } " Bundle to Member History (" code { (push_url) } "), signed with the plan's key. The next launch of that patient offers it for review." }
                form method="post" action="/push" {
                    label { "Member " select name="member" {
                        @for member in &plan.members {
                            option value=(member.patient_id) { (member.family) ", " (member.given.join(" ")) " (" (member.member_id) ")" }
                        }
                    } }
                    " " button type="submit" { "Push history" }
                }
            }
        },
    )
}

fn refused(message: String) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": message}))).into_response()
}

/// Every CDS request: its JWT checked against the request URL, and the request (with its
/// JSON body, when it has one) recorded for the tests. A refusal is the answer to send.
async fn receive(
    plan: &Plan,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Value>, Response> {
    let audience = format!("{}{}", plan.base_url, uri.path());
    let (result, seen) = plan.trust.verify(headers, &audience).await;
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    plan.record(uri.path(), seen, parsed.clone());
    result.map(|()| parsed).map_err(refused)
}

async fn discovery(State(plan): State<Arc<Plan>>, uri: Uri, headers: HeaderMap) -> Response {
    match receive(&plan, &uri, &headers, b"").await {
        Ok(_) => Json(plan.discovery()).into_response(),
        Err(refusal) => refusal,
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    error: &'a str,
}

async fn hook(
    State(plan): State<Arc<Plan>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let parsed = match receive(&plan, &uri, &headers, &body).await {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal,
    };
    if id != SERVICE_ID {
        return (StatusCode::NOT_FOUND, Json(Problem { error: "no such service" })).into_response();
    }
    let Some(request) = parsed else {
        return (StatusCode::BAD_REQUEST, Json(Problem { error: "the body is not JSON" }))
            .into_response();
    };
    if request.get("hook").and_then(Value::as_str) != Some("appointment-book") {
        return (
            StatusCode::BAD_REQUEST,
            Json(Problem { error: "this service answers appointment-book" }),
        )
            .into_response();
    }
    match plan.match_member(&request) {
        Ok(member) => Json(plan.answer(member)).into_response(),
        Err(failure) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(plan.no_match_answer(&failure))).into_response()
        }
    }
}

async fn feedback(
    State(plan): State<Arc<Plan>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let parsed = match receive(&plan, &uri, &headers, &body).await {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal,
    };
    match parsed.as_ref().and_then(|b| b.get("feedback")).and_then(Value::as_array) {
        Some(_) => Json(json!({})).into_response(),
        None => {
            (StatusCode::BAD_REQUEST, Json(Problem { error: "expected {\"feedback\": [...]}" }))
                .into_response()
        }
    }
}

async fn token(
    State(plan): State<Arc<Plan>>,
    headers: HeaderMap,
    Form(params): Form<TokenParams>,
) -> Response {
    match plan.auth.token(&headers, &params).await {
        Ok(body) => crate::auth::token_response(body),
        Err(e) => e.into_response(),
    }
}

async fn jwks(State(plan): State<Arc<Plan>>) -> Json<jose::jwk::JwkSet> {
    Json(plan.auth.key.jwks())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_capability_statement_names_both_provider_access_operations() {
        let statement =
            super::capability_statement("http://plan.test/fhir", "http://plan.test/auth");
        let group = statement["rest"][0]["resource"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["type"] == "Group"))
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = group["operation"]
            .as_array()
            .map(|o| o.iter().filter_map(|o| o["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["provider-member-match", "davinci-data-export"]);
    }
}
