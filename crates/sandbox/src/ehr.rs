//! The sandbox EHR: launcher page, SMART authorization server, and FHIR API over its chart.

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{
    self, AuthServer, AuthorizeOutcome, AuthorizeParams, Decision, LaunchContext, TokenParams,
};
use crate::fhir_api::{self, FhirApi};
use crate::pages;
use crate::store::FhirStore;
use crate::synthetic::{self, CoverageKind, Person};

/// The resource types the EHR's FHIR API serves: every kind of history (`pdex::kinds`, the
/// one table), and what a chart holds around it.
pub fn ehr_resource_types() -> Vec<&'static str> {
    let mut types = vec!["Patient", "Practitioner", "PractitionerRole", "Organization", "Coverage"];
    types.extend(pdex::model::history_resource_types());
    types.extend(["Provenance", "DocumentReference", "Appointment"]);
    types
}

/// What the sandbox EHR accepts for writing unless configured otherwise: every kind of
/// history, and what comes with a write (the Organization, Provenance, the document).
pub fn default_writable() -> Vec<String> {
    pdex::model::history_resource_types()
        .into_iter()
        .filter(|t| !matches!(*t, "ExplanationOfBenefit" | "Claim"))
        .chain(["Organization", "Provenance", "DocumentReference"])
        .map(str::to_owned)
        .collect()
}

#[derive(Debug)]
pub struct Ehr {
    /// `http://host:port`, no trailing slash.
    pub base_url: String,
    pub auth: AuthServer,
    pub store: Arc<FhirStore>,
    pub people: Vec<Person>,
    pub api: FhirApi,
}

impl Ehr {
    /// The FHIR base of the EHR's launches (its own API, or the real server behind it).
    pub fn fhir_base(&self) -> String {
        self.auth.fhir_base.clone()
    }

    /// Makes the next transaction fail as `fault` says.
    pub fn inject_fault(&self, fault: crate::fhir_api::Fault) {
        if let Ok(mut faults) = self.api.writes.faults.lock() {
            faults.push_back(fault);
        }
    }

    /// See [`AuthServer::revoke_issued_access_tokens`].
    pub fn revoke_issued_access_tokens(&self) {
        self.auth.revoke_issued_access_tokens();
    }

    pub fn person(&self, patient_id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.patient_id == patient_id)
    }
}

pub fn router(ehr: Arc<Ehr>) -> Router {
    let smart_config = {
        let ehr = ehr.clone();
        move || async move { Json(ehr.auth.smart_configuration()) }
    };
    let fhir = fhir_api::router(ehr.api.clone())
        .route("/.well-known/smart-configuration", get(smart_config));
    Router::new()
        .route("/", get(launcher))
        .route("/launch", post(launch))
        .route("/chart", get(chart))
        .route("/frame", get(frame))
        .route("/sandbox.css", get(stylesheet))
        .route("/smart-style.json", get(smart_style))
        .route("/auth/authorize", get(authorize))
        .route("/auth/authorize/decide", post(decide))
        .route("/auth/token", post(token))
        .route("/auth/jwks", get(jwks))
        .route("/auth/.well-known/openid-configuration", get(openid_configuration))
        .with_state(ehr)
        .nest("/fhir", fhir)
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], pages::STYLESHEET).into_response()
}

/// The SMART style the EHR asks apps to follow (SMART `smart_style_url`).
async fn smart_style() -> Json<serde_json::Value> {
    Json(json!({
        "color_background": "#f4f6f8",
        "color_error": "#b42318",
        "color_highlight": "#1f6feb",
        "color_modal_backdrop": "rgba(0,0,0,0.4)",
        "color_success": "#1a7f37",
        "color_text": "#1d2733",
        "dim_border_radius": "4px",
        "dim_font_size": "14px",
        "dim_spacing_size": "8px",
        "font_family_body": "system-ui, sans-serif",
        "font_family_heading": "system-ui, sans-serif",
    }))
}

fn coverage_label(p: &Person) -> String {
    match p.coverage {
        CoverageKind::MemberId => format!("{} · member {}", synthetic::PLAN_NAME, p.member_id),
        CoverageKind::SubscriberOnly => {
            format!("{} · subscriber {} (no member id)", synthetic::PLAN_NAME, p.subscriber_id)
        }
        CoverageKind::OtherPlan => {
            format!("{} · member {}", synthetic::OTHER_PLAN_NAME, p.member_id)
        }
        CoverageKind::None => "No coverage on file".into(),
    }
}

async fn launcher(State(ehr): State<Arc<Ehr>>) -> Html<String> {
    let client = ehr.auth.clients.first();
    pages::layout(
        "Sandbox EHR",
        &format!("{} · FHIR base {}", synthetic::CLINIC_NAME, ehr.fhir_base()),
        html! {
            @if let Some(client) = client {
                form method="post" action="/launch" {
                    input type="hidden" name="client_id" value=(client.client_id);
                    fieldset {
                        legend { "Launch options" }
                        label { "Signed-in clinician " (pages::clinician_select()) }
                        label { input type="checkbox" name="need_patient_banner" value="true" checked; " The app shows its own patient banner (need_patient_banner)" }
                        label { input type="checkbox" name="with_encounter" value="true"; " Launch within the patient's latest encounter" }
                        label { input type="checkbox" name="embedded" value="true"; " Open inside the EHR's 800×600 app frame" }
                    }
                    table {
                        thead { tr { th { "Patient" } th { "Sex" } th { "Birth date" } th { "MRN" } th { "Coverage" } th {} th {} th {} } }
                        tbody {
                            @for p in &ehr.people {
                                tr {
                                    td { (p.display_name()) }
                                    td { (p.gender) }
                                    td { (p.birth_date) }
                                    td { (p.mrn) }
                                    td.muted { (coverage_label(p)) }
                                    td { button type="submit" name="patient" value=(p.patient_id) { "Launch " (client.name) } }
                                    td { a.button href={ "/book?patient=" (p.patient_id) } data-book=(p.patient_id) { "Book appointment" } }
                                    td { a href={ "/chart?patient=" (p.patient_id) } data-chart=(p.patient_id) { "Chart" } }
                                }
                            }
                        }
                    }
                }
                p.muted { "App launch URL: " (client.launch_url) }
            } @else {
                p { "No SMART app is registered with this EHR." }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
struct LaunchForm {
    client_id: String,
    patient: String,
    practitioner: String,
    need_patient_banner: Option<String>,
    with_encounter: Option<String>,
    embedded: Option<String>,
}

/// Creates an EHR launch and sends the browser to the app's launch URL with `iss` and `launch`.
async fn launch(State(ehr): State<Arc<Ehr>>, Form(form): Form<LaunchForm>) -> Response {
    let Some(client) = ehr.auth.client(&form.client_id) else {
        return (StatusCode::BAD_REQUEST, pages::message_page("Launch failed", "Unknown app."))
            .into_response();
    };
    if ehr.person(&form.patient).is_none() {
        return (StatusCode::BAD_REQUEST, pages::message_page("Launch failed", "Unknown patient."))
            .into_response();
    }
    let encounter = form.with_encounter.is_some().then(|| format!("{}-enc-2", form.patient));
    let launch_id = ehr.auth.create_launch(LaunchContext {
        patient: Some(form.patient.clone()),
        encounter,
        practitioner: form.practitioner.clone(),
        need_patient_banner: form.need_patient_banner.is_some(),
        ..Default::default()
    });
    let Ok(mut url) = url::Url::parse(&client.launch_url) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "bad launch URL").into_response();
    };
    url.query_pairs_mut().append_pair("iss", &ehr.fhir_base()).append_pair("launch", &launch_id);
    if form.embedded.is_some() {
        let mut frame = url::form_urlencoded::Serializer::new(String::from("/frame?"));
        frame.append_pair("src", url.as_str());
        return Redirect::to(&frame.finish()).into_response();
    }
    Redirect::to(url.as_str()).into_response()
}

#[derive(Debug, Deserialize)]
struct FrameQuery {
    src: String,
}

/// The EHR chrome with the app in an 800×600 frame, as EHRs embed SMART apps.
async fn frame(State(ehr): State<Arc<Ehr>>, Query(q): Query<FrameQuery>) -> Response {
    // Only frame registered apps: the launcher is the only caller.
    let allowed = ehr.auth.clients.iter().any(|c| q.src.starts_with(&c.launch_url));
    if !allowed {
        return (
            StatusCode::BAD_REQUEST,
            pages::message_page("Frame refused", "Not a registered app."),
        )
            .into_response();
    }
    pages::layout(
        "Sandbox EHR",
        "App frame (800×600)",
        html! { iframe id="app-frame" src=(q.src) width="800" height="600" title="SMART app" {} },
    )
    .into_response()
}

async fn authorize(State(ehr): State<Arc<Ehr>>, Query(params): Query<AuthorizeParams>) -> Response {
    match ehr.auth.authorize(&params) {
        Ok(AuthorizeOutcome::Code(code)) => {
            let mut query = vec![("code", code)];
            if let Some(state) = params.state {
                query.push(("state", state));
            }
            auth::redirect_with(params.redirect_uri.as_deref().unwrap_or_default(), &query)
        }
        Ok(AuthorizeOutcome::Picker { request_id, needs_patient }) => {
            picker(&ehr, &request_id, needs_patient).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The standalone-launch sign-in: who is signing in, and (for `launch/patient`) which patient.
fn picker(ehr: &Ehr, request_id: &str, needs_patient: bool) -> Html<String> {
    pages::layout(
        "Sandbox EHR sign-in",
        "An app asks to open a patient's record",
        html! {
            form method="post" action="/auth/authorize/decide" {
                input type="hidden" name="request_id" value=(request_id);
                fieldset {
                    legend { "Signed-in clinician" }
                    select name="practitioner" {
                        @for c in synthetic::clinicians() { option value=(c.id) { "Dr. " (c.given) " " (c.family) } }
                    }
                }
                @if needs_patient {
                    fieldset {
                        legend { "Choose the patient" }
                        @for p in &ehr.people {
                            label { input type="radio" name="patient" value=(p.patient_id) required; " " (p.display_name()) " · " (p.birth_date) " · " (p.mrn) }
                        }
                    }
                }
                button type="submit" name="decision" value="allow" { "Allow access" }
                " "
                button.secondary type="submit" name="decision" value="deny" formnovalidate { "Deny" }
            }
        },
    )
}

async fn decide(State(ehr): State<Arc<Ehr>>, Form(decision): Form<Decision>) -> Response {
    match ehr.auth.decide(&decision) {
        Ok((redirect_uri, params)) => auth::redirect_with(&redirect_uri, &params),
        Err(e) => e.into_response(),
    }
}

async fn token(
    State(ehr): State<Arc<Ehr>>,
    headers: HeaderMap,
    Form(params): Form<TokenParams>,
) -> Response {
    match ehr.auth.token(&headers, &params).await {
        Ok(body) => auth::token_response(body),
        Err(e) => e.into_response(),
    }
}

async fn jwks(State(ehr): State<Arc<Ehr>>) -> Json<jose::jwk::JwkSet> {
    Json(ehr.auth.published_jwks())
}

async fn openid_configuration(State(ehr): State<Arc<Ehr>>) -> Json<serde_json::Value> {
    Json(ehr.auth.openid_configuration())
}

#[derive(Debug, Deserialize)]
struct ChartQuery {
    patient: String,
}

/// The patient's chart as the EHR holds it: every record, with where it came from.
async fn chart(State(ehr): State<Arc<Ehr>>, Query(q): Query<ChartQuery>) -> Response {
    let Some(person) = ehr.person(&q.patient) else {
        return (StatusCode::NOT_FOUND, pages::message_page("Unknown patient", "No such patient."))
            .into_response();
    };
    let mut records = ehr.store.compartment(&q.patient);
    records
        .retain(|r| r.get("resourceType").and_then(serde_json::Value::as_str) != Some("Patient"));
    let provenance = ehr.store.search("Provenance", &[]);
    let text = |r: &serde_json::Value| -> String {
        ["code", "vaccineCode", "medicationCodeableConcept", "type"]
            .iter()
            .filter_map(|k| r.get(*k))
            .map(|c| if let Some(first) = c.as_array().and_then(|a| a.first()) { first } else { c })
            .find_map(fhir::resource::concept_text)
            .or_else(|| r.get("description").and_then(serde_json::Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "(no description)".into())
    };
    pages::layout(
        "Sandbox EHR chart",
        &format!("{} · {} · {}", person.display_name(), person.birth_date, person.mrn),
        html! {
            p.muted { (records.len()) " records · " (provenance.len()) " Provenance records in the EHR" }
            table {
                thead { tr { th { "Record" } th { "What" } th { "From" } } }
                tbody {
                    @for r in &records {
                        tr data-record=(fhir::ResourceExt::local_reference(r).unwrap_or_default()) {
                            td { (r.get("resourceType").and_then(serde_json::Value::as_str).unwrap_or("")) }
                            td.record-text { (text(r)) }
                            td.muted { (r.pointer("/meta/source").and_then(serde_json::Value::as_str).unwrap_or("this EHR")) }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}
