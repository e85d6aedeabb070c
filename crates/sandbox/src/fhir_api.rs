//! A FHIR R4 REST API over a [`FhirStore`], enforcing bearer tokens and SMART scopes.
//! Used for both the sandbox EHR and the sandbox plan.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use smart::scopes::{Permission, ScopeContext, ScopeSet};

use crate::search;
use crate::store::FhirStore;

/// Verifies the access tokens a sandbox authorization server issued.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    pub jwks: jose::jwk::JwkSet,
    pub issuer: String,
    pub audience: String,
    /// Access tokens (by `jti`) the EHR no longer honours before their expiry.
    pub revoked: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Tokens already verified, until they expire: the signature check is the costly part.
    pub verified: Arc<std::sync::Mutex<HashMap<String, AccessClaims>>>,
}

/// The claims of a sandbox access token.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub jti: String,
    pub exp: u64,
    pub scope: String,
    #[serde(default)]
    pub patient: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
}

/// What a verified token allows.
#[derive(Debug, Clone)]
pub struct Grant {
    pub scopes: ScopeSet,
    pub patient: Option<String>,
    pub client_id: Option<String>,
}

/// How far a granted permission reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    All,
    Patient(String),
}

impl Grant {
    /// `user/` and `system/` scopes reach every record; `patient/` scopes only the patient in
    /// context.
    pub fn reach(&self, resource_type: &str, permission: Permission) -> Result<Reach, ApiError> {
        let contexts = self.scopes.grants(resource_type, permission);
        if contexts.iter().any(|c| matches!(c, ScopeContext::User | ScopeContext::System)) {
            return Ok(Reach::All);
        }
        if contexts.contains(&ScopeContext::Patient) {
            return self.patient.clone().map(Reach::Patient).ok_or_else(|| {
                ApiError::forbidden("a patient/ scope was granted without a patient in context")
            });
        }
        Err(ApiError::forbidden(format!(
            "the access token's scopes do not allow this on {resource_type}"
        )))
    }
}

impl TokenVerifier {
    pub fn verify(&self, headers: &HeaderMap) -> Result<Grant, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("no bearer token"))?;
        let cached = self.verified.lock().ok().and_then(|c| c.get(token).cloned());
        let claims = match cached {
            Some(claims) if claims.exp > jose::now() => claims,
            _ => self.verify_signature(token)?,
        };
        if self.revoked.lock().map(|r| r.contains(&claims.jti)).unwrap_or(true) {
            return Err(ApiError::unauthorized("the access token was revoked"));
        }
        Ok(Grant {
            scopes: ScopeSet::parse(&claims.scope),
            patient: claims.patient,
            client_id: claims.client_id,
        })
    }

    fn verify_signature(&self, token: &str) -> Result<AccessClaims, ApiError> {
        let claims: AccessClaims = jose::verify(
            token,
            &self.jwks,
            &jose::Expectations {
                issuers: &[self.issuer.as_str()],
                audiences: &[self.audience.as_str()],
                required: &["sub", "iss", "aud", "jti"],
                leeway: Some(0),
                ..Default::default()
            },
        )
        .map_err(|_| ApiError::unauthorized("the access token is invalid or expired"))?;
        if let Ok(mut cache) = self.verified.lock() {
            let now = jose::now();
            if cache.len() > 1000 {
                cache.retain(|_, c| c.exp > now);
            }
            cache.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }
}

/// A FHIR error answered as an OperationOutcome.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "login", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", m)
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", m)
    }
}

/// An OperationOutcome with one issue.
pub fn operation_outcome(severity: &str, code: &str, text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "details": {"text": text}}]
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, fhir_json(&operation_outcome("error", self.code, &self.message)))
                .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON body with the FHIR media type.
pub fn fhir_json(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+json"))],
        serde_json::to_vec(value).unwrap_or_default(),
    )
        .into_response()
}

/// A failure the EHR is told to produce on the next write request — transaction, batch or
/// create — (tests of what the app does when the EMR fails).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Handle this request normally (to fail a later one: `[Pass, Fail500]` fails the second).
    Pass,
    /// Answer 500 without writing anything.
    Fail500,
    /// Write, then answer only after this long (the app has stopped waiting by then).
    SlowAfterCommit(std::time::Duration),
    /// Write, then drop the connection halfway through the answer.
    DropAfterCommit,
}

/// What the API accepts for writing.
#[derive(Debug, Default)]
pub struct WriteRules {
    /// Resource types that can be created (with conditional create). Empty: read-only.
    pub writable: std::collections::HashSet<String>,
    pub transactions: bool,
    pub batch: bool,
    /// The most entries with `ifNoneExist` one transaction may hold; more is refused with
    /// `too-costly`, as servers that resolve conditional entries under one lock do.
    pub max_conditional_entries: Option<usize>,
    /// Attachment content types a DocumentReference may carry; `None` accepts any.
    pub attachment_types: Option<Vec<String>>,
    pub faults: std::sync::Mutex<std::collections::VecDeque<Fault>>,
}

/// State of one FHIR API.
#[derive(Debug, Clone)]
pub struct FhirApi {
    pub store: Arc<FhirStore>,
    /// Absolute base URL, without a trailing slash.
    pub base_url: String,
    pub tokens: Arc<TokenVerifier>,
    pub capability: Arc<std::sync::RwLock<Value>>,
    pub default_page_size: usize,
    pub writes: Arc<WriteRules>,
}

impl FhirApi {
    pub fn capability_statement(&self) -> Value {
        self.capability.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// Routes of a FHIR API, relative to its base.
pub fn router(api: FhirApi) -> Router {
    Router::new()
        .route("/", axum::routing::post(transaction))
        .route("/metadata", get(metadata))
        .route("/{resource_type}", get(search_type).post(create))
        .route("/{resource_type}/{id}", get(read))
        .route("/Patient/{id}/$everything", get(everything))
        // axum's default of 2 MB would refuse a write-back of more than about 1,500 items.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(api)
}

async fn metadata(State(api): State<FhirApi>) -> Response {
    fhir_json(&api.capability_statement())
}

async fn read(
    State(api): State<FhirApi>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = api.tokens.verify(&headers)?;
    let reach = grant.reach(&resource_type, Permission::Read)?;
    let resource = api
        .store
        .read(&resource_type, &id)
        .ok_or_else(|| ApiError::not_found(format!("{resource_type}/{id} is not known")))?;
    check_reach(&reach, &resource)?;
    Ok(fhir_json(&resource))
}

/// Under a patient reach, a resource in the patient compartment must belong to that patient;
/// resources outside the compartment (Practitioner, Organization…) stay readable.
pub fn check_reach(reach: &Reach, resource: &Value) -> Result<(), ApiError> {
    let Reach::Patient(patient) = reach else { return Ok(()) };
    let resource_type = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
    let in_compartment =
        resource_type == "Patient" || search::compartment_paths(resource_type).is_some();
    if in_compartment && !search::patients_of(resource).iter().any(|p| p == patient) {
        return Err(ApiError::forbidden("the resource is outside the patient in context"));
    }
    Ok(())
}

async fn search_type(
    State(api): State<FhirApi>,
    Path(resource_type): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !fhir::resource::is_resource_type(&resource_type) {
        return Err(ApiError::not_found(format!("`{resource_type}` is not a resource type")));
    }
    let grant = api.tokens.verify(&headers)?;
    let reach = grant.reach(&resource_type, Permission::Search)?;
    let mut params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let revinclude = take_revinclude(&mut params)?;
    let mut filters = search::parse_filters(&resource_type, &params).map_err(ApiError::invalid)?;
    if let Reach::Patient(patient) = &reach {
        let confine = if resource_type == "Patient" {
            Some(("_id", patient.clone()))
        } else {
            search::compartment_paths(&resource_type).map(|_| ("patient", patient.clone()))
        };
        if let Some((name, value)) = confine {
            filters.extend(
                search::parse_filters(&resource_type, &[(name.into(), value)])
                    .map_err(ApiError::invalid)?,
            );
        }
    }
    let results = api.store.search(&resource_type, &filters);
    if revinclude {
        params.push(("_revinclude".into(), "Provenance:target".into()));
    }
    let mut page = searchset(&api, &format!("{}/{resource_type}", api.base_url), &params, results)?;
    if revinclude {
        include_provenance(&api, &mut page);
    }
    Ok(fhir_json(&page))
}

/// `_revinclude`: only `Provenance:target` is understood (anything else is refused, as a
/// strict server does).
fn take_revinclude(params: &mut Vec<(String, String)>) -> Result<bool, ApiError> {
    let mut wanted = false;
    for (_, value) in params.iter().filter(|(k, _)| k == "_revinclude") {
        if value != "Provenance:target" {
            return Err(ApiError::invalid(format!(
                "_revinclude={value} is not supported by this server (only Provenance:target)"
            )));
        }
        wanted = true;
    }
    params.retain(|(k, _)| k != "_revinclude");
    Ok(wanted)
}

/// Adds to a searchset page the Provenance records that target its matches (`search.mode`
/// `include`).
fn include_provenance(api: &FhirApi, page: &mut Value) {
    let Some(entries) = page.get_mut("entry").and_then(Value::as_array_mut) else { return };
    let matched: std::collections::HashSet<String> = entries
        .iter()
        .filter_map(|e| e.get("resource").and_then(fhir::ResourceExt::local_reference))
        .collect();
    let included: Vec<Value> = provenance_for(&api.store, &matched)
        .into_iter()
        .map(|r| {
            let full_url = format!(
                "{}/Provenance/{}",
                api.base_url,
                r.get("id").and_then(Value::as_str).unwrap_or("")
            );
            json!({"fullUrl": full_url, "resource": r, "search": {"mode": "include"}})
        })
        .collect();
    entries.extend(included);
}

/// The Provenance records in `store` that target any of `targets` (`Type/id`).
fn provenance_for(store: &FhirStore, targets: &std::collections::HashSet<String>) -> Vec<Value> {
    store
        .search("Provenance", &[])
        .into_iter()
        .filter(|p| {
            p.get("target").and_then(Value::as_array).into_iter().flatten().any(|t| {
                t.get("reference")
                    .and_then(Value::as_str)
                    .and_then(|r| fhir::Reference::parse(r).local())
                    .is_some_and(|local| targets.contains(&local))
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct Paging {
    #[serde(rename = "_count")]
    count: Option<usize>,
    #[serde(rename = "_offset")]
    offset: Option<usize>,
}

/// A searchset Bundle holding one page of `results`, with `self` and `next` links that repeat
/// the original parameters.
pub fn searchset(
    api: &FhirApi,
    endpoint: &str,
    params: &[(String, String)],
    results: Vec<Value>,
) -> Result<Value, ApiError> {
    let map: HashMap<String, String> = params.iter().cloned().collect();
    let paging: Paging = serde_json::from_value(json!({
        "_count": map.get("_count").map(|c| c.parse::<usize>()).transpose().map_err(|_| ApiError::invalid("_count must be a whole number"))?,
        "_offset": map.get("_offset").map(|c| c.parse::<usize>()).transpose().map_err(|_| ApiError::invalid("_offset must be a whole number"))?,
    }))
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    let count = paging.count.unwrap_or(api.default_page_size).clamp(1, 1000);
    let offset = paging.offset.unwrap_or(0);
    let total = results.len();
    let link = |offset: usize| {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params.iter().filter(|(k, _)| k != "_offset" && k != "_count") {
            url.append_pair(k, v);
        }
        url.append_pair("_count", &count.to_string());
        url.append_pair("_offset", &offset.to_string());
        format!("{endpoint}?{}", url.finish())
    };
    let mut links = vec![json!({"relation": "self", "url": link(offset)})];
    if offset + count < total {
        links.push(json!({"relation": "next", "url": link(offset + count)}));
    }
    let entries: Vec<Value> = results
        .into_iter()
        .skip(offset)
        .take(count)
        .map(|r| {
            let full_url = format!(
                "{}/{}/{}",
                api.base_url,
                r.get("resourceType").and_then(Value::as_str).unwrap_or(""),
                r.get("id").and_then(Value::as_str).unwrap_or("")
            );
            json!({"fullUrl": full_url, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    Ok(json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entries,
    }))
}

/// A CapabilityStatement for a server holding `resource_types` with read and search, and
/// create (with conditional create) for the writable ones; `transaction` at system level.
pub fn capability_statement(
    base_url: &str,
    name: &str,
    resource_types: &[&str],
    smart: Option<&str>,
    writes: &WriteRules,
) -> Value {
    let resources: Vec<Value> = resource_types
        .iter()
        .map(|t| {
            let mut interactions = vec![json!({"code": "read"}), json!({"code": "search-type"})];
            let writable = writes.writable.contains(*t);
            if writable {
                interactions.push(json!({"code": "create"}));
            }
            json!({"type": t, "interaction": interactions, "conditionalCreate": writable})
        })
        .collect();
    let mut rest = json!({"mode": "server", "resource": resources});
    let system: Vec<Value> = [("transaction", writes.transactions), ("batch", writes.batch)]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(code, _)| json!({"code": code}))
        .collect();
    if !system.is_empty() {
        rest["interaction"] = Value::Array(system);
    }
    if let Some(auth_base) = smart {
        rest["security"] = json!({
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": format!("{auth_base}/authorize")},
                    {"url": "token", "valueUri": format!("{auth_base}/token")}
                ]
            }]
        });
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "software": {"name": name},
        "implementation": {"description": name, "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    })
}

/// The clinical date of a resource for `$everything`'s `start`/`end` ("care dates").
fn care_date(resource: &Value) -> Option<&str> {
    const PATHS: [&str; 12] = [
        "/period/start",
        "/onsetDateTime",
        "/recordedDate",
        "/performedDateTime",
        "/performedPeriod/start",
        "/effectiveDateTime",
        "/effectivePeriod/start",
        "/whenHandedOver",
        "/occurrenceDateTime",
        "/billablePeriod/start",
        "/created",
        "/issued",
    ];
    PATHS.iter().find_map(|p| resource.pointer(p).and_then(Value::as_str))
}

const EVERYTHING_PARAMS: [&str; 6] = ["start", "end", "_since", "_type", "_count", "_offset"];

/// `Patient/{id}/$everything` (FHIR R4): the patient's compartment plus the practitioners and
/// organisations it refers to, filtered by `start`/`end` (care dates), `_since`
/// (`meta.lastUpdated`) and `_type`, paged through `Bundle.link[next]`.
async fn everything(
    State(api): State<FhirApi>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = api.tokens.verify(&headers)?;
    let reach = grant.reach("Patient", Permission::Read)?;
    if let Reach::Patient(patient) = &reach {
        if patient != &id {
            return Err(ApiError::forbidden("$everything is limited to the patient in context"));
        }
    }
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if let Some((unknown, _)) =
        params.iter().find(|(k, _)| !EVERYTHING_PARAMS.contains(&k.as_str()))
    {
        return Err(ApiError::invalid(format!("unknown parameter `{unknown}` for $everything")));
    }
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if api.store.read("Patient", &id).is_none() {
        return Err(ApiError::not_found(format!("Patient/{id} is not known")));
    }
    let types: Option<Vec<&str>> = get("_type").map(|t| t.split(',').map(str::trim).collect());
    let (start, end, since) = (get("start"), get("end"), get("_since"));
    let without_psy = grant
        .scopes
        .raw
        .iter()
        .any(|s| s.contains("_security:not=") && s.ends_with(BEHAVIOURAL_HEALTH_LABEL));
    let results: Vec<Value> = everything_of(&api.store, &id)
        .into_iter()
        // What the token's scopes leave out is not sent (a member may withhold categories).
        .filter(|r| {
            let resource_type = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
            grant.reach(resource_type, Permission::Read).is_ok()
                && !(without_psy && labelled(r, "PSY"))
        })
        .filter(|r| {
            let resource_type = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
            types.as_ref().is_none_or(|t| t.contains(&resource_type) || resource_type == "Patient")
        })
        .filter(|r| match care_date(r) {
            Some(date) => {
                start.is_none_or(|s| fhir::date::prefix(date, s.chars().count()) >= s)
                    && end.is_none_or(|e| fhir::date::prefix(date, e.chars().count()) <= e)
            }
            None => true,
        })
        .filter(|r| {
            since.is_none_or(|s| {
                r.pointer("/meta/lastUpdated").and_then(Value::as_str).is_some_and(|u| u >= s)
            })
        })
        .collect();
    Ok(fhir_json(&searchset(
        &api,
        &format!("{}/Patient/{id}/$everything", api.base_url),
        &params,
        results,
    )?))
}

/// The security label behavioural-health records carry (HL7 v3 ActCode `PSY`): a scope
/// narrowed with `_security:not=` it leaves them out.
pub const BEHAVIOURAL_HEALTH_LABEL: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY";

/// Whether `resource` carries the security label `code` (`meta.security`).
fn labelled(resource: &Value, code: &str) -> bool {
    resource.pointer("/meta/security").and_then(Value::as_array).is_some_and(|labels| {
        labels.iter().any(|l| l.get("code").and_then(Value::as_str) == Some(code))
    })
}

/// Everything about Patient `id`, unfiltered: its compartment, the practitioners and
/// organisations it refers to, and the Provenance of its resources.
pub fn everything_of(store: &FhirStore, id: &str) -> Vec<Value> {
    let mut resources = store.compartment(id);
    resources.extend(referenced_directory(store, &resources));
    // Provenance belongs to the compartment through its targets: the records about this
    // patient's resources come too (and not twice, when one also targets the Patient).
    let keys: std::collections::HashSet<String> =
        resources.iter().filter_map(fhir::ResourceExt::local_reference).collect();
    resources.extend(provenance_for(store, &keys).into_iter().filter(|p| {
        p.get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| !keys.contains(&format!("Provenance/{id}")))
    }));
    resources
}

/// The Practitioner and Organization resources the given resources refer to.
fn referenced_directory(store: &FhirStore, resources: &[Value]) -> Vec<Value> {
    let mut wanted = std::collections::BTreeSet::new();
    fn walk(v: &Value, wanted: &mut std::collections::BTreeSet<(String, String)>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("reference") {
                    if let fhir::Reference::Local { resource_type, id } = fhir::Reference::parse(r)
                    {
                        if matches!(
                            resource_type.as_str(),
                            "Practitioner" | "Organization" | "Location"
                        ) {
                            wanted.insert((resource_type, id));
                        }
                    }
                }
                map.values().for_each(|v| walk(v, wanted));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, wanted)),
            _ => {}
        }
    }
    resources.iter().for_each(|r| walk(r, &mut wanted));
    wanted.into_iter().filter_map(|(t, id)| store.read(&t, &id)).collect()
}

/// Checks one resource to be written: the token's scopes, the patient in context, what the
/// server accepts (type, attachment formats).
fn check_write(
    api: &FhirApi,
    grant: &Grant,
    resource: &Value,
    entry: Option<usize>,
) -> Result<(), ApiError> {
    let at = entry.map(|i| format!("Bundle.entry[{i}]: ")).unwrap_or_default();
    let resource_type = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
    if !api.writes.writable.contains(resource_type) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not-supported",
            format!("{at}this EHR does not accept {resource_type} records"),
        ));
    }
    let reach = grant
        .reach(resource_type, Permission::Create)
        .map_err(|e| ApiError { message: format!("{at}{}", e.message), ..e })?;
    check_reach(&reach, resource)?;
    if let (Some(accepted), "DocumentReference") = (&api.writes.attachment_types, resource_type) {
        for content in resource.get("content").and_then(Value::as_array).into_iter().flatten() {
            let content_type =
                content.pointer("/attachment/contentType").and_then(Value::as_str).unwrap_or("");
            if !accepted.iter().any(|a| a == content_type) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "not-supported",
                    format!("{at}this EHR does not accept attachments of type {content_type}"),
                ));
            }
        }
    }
    Ok(())
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let code =
        if status == StatusCode::PRECONDITION_FAILED { "multiple-matches" } else { "invalid" };
    ApiError::new(status, code, e.to_string())
}

impl WriteRules {
    fn next_fault(&self) -> Option<Fault> {
        self.faults.lock().ok().and_then(|mut f| f.pop_front())
    }
}

fn injected_failure() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "the EHR failed (injected fault)")
}

/// `POST [base]` with a transaction or batch Bundle.
async fn transaction(
    State(api): State<FhirApi>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let grant = api.tokens.verify(&headers)?;
    let bundle: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?;
    let entries = bundle.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => {}
        Some("batch") => return batch(&api, &grant, entries),
        _ => {
            return Err(ApiError::invalid(
                "POST [base] takes a Bundle of type transaction or batch",
            ))
        }
    }
    if !api.writes.transactions {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "this EHR does not accept transactions",
        ));
    }
    let conditional =
        entries.iter().filter(|e| e.pointer("/request/ifNoneExist").is_some()).count();
    if let Some(cap) = api.writes.max_conditional_entries.filter(|cap| conditional > *cap) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too-costly",
            format!(
                "This server accepts at most {cap} conditional entries in a transaction; the bundle has {conditional}."
            ),
        ));
    }
    for (i, entry) in entries.iter().enumerate() {
        if let Some(resource) = entry.get("resource") {
            check_write(&api, &grant, resource, Some(i))?;
        }
    }
    let fault = api.writes.next_fault();
    if matches!(fault, Some(Fault::Fail500)) {
        return Err(injected_failure());
    }
    let response = api.store.transaction(bundle).map_err(store_error)?;
    match fault {
        Some(Fault::SlowAfterCommit(delay)) => {
            tokio::time::sleep(delay).await;
            Ok(fhir_json(&response))
        }
        Some(Fault::DropAfterCommit) => {
            let bytes = serde_json::to_vec(&response).unwrap_or_default();
            let half = bytes[..bytes.len() / 2].to_vec();
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
                Ok(bytes::Bytes::from(half)),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped")),
            ];
            Ok((
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+json"))],
                axum::body::Body::from_stream(futures::stream::iter(chunks)),
            )
                .into_response())
        }
        _ => Ok(fhir_json(&response)),
    }
}

/// A batch: each entry (a create, conditional with `ifNoneExist`) on its own, each with its
/// own `response` in a `batch-response` (a refused entry carries its OperationOutcome).
fn batch(api: &FhirApi, grant: &Grant, entries: &[Value]) -> Result<Response, ApiError> {
    if !api.writes.batch {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "this EHR does not accept batches",
        ));
    }
    if matches!(api.writes.next_fault(), Some(Fault::Fail500)) {
        return Err(injected_failure());
    }
    let responses: Vec<Value> = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| match batch_entry(api, grant, entry, i) {
            Ok((status, stored)) => json!({"response": {
                "status": status,
                "location": format!(
                    "{}/{}",
                    stored.get("resourceType").and_then(Value::as_str).unwrap_or(""),
                    stored.get("id").and_then(Value::as_str).unwrap_or("")
                ),
            }}),
            Err(e) => json!({"response": {
                "status": e.status.as_u16().to_string(),
                "outcome": operation_outcome("error", e.code, &e.message),
            }}),
        })
        .collect();
    Ok(fhir_json(&json!({"resourceType": "Bundle", "type": "batch-response", "entry": responses})))
}

fn batch_entry(
    api: &FhirApi,
    grant: &Grant,
    entry: &Value,
    i: usize,
) -> Result<(&'static str, Value), ApiError> {
    let resource = entry
        .get("resource")
        .ok_or_else(|| ApiError::invalid(format!("entry[{i}] has no resource")))?;
    let method = entry.pointer("/request/method").and_then(Value::as_str);
    let url = entry.pointer("/request/url").and_then(Value::as_str);
    let kind = resource.get("resourceType").and_then(Value::as_str);
    if method != Some("POST") || url.is_none() || url != kind {
        return Err(ApiError::invalid(format!(
            "entry[{i}]: this EHR takes only creates (POST [type]) in a batch"
        )));
    }
    check_write(api, grant, resource, Some(i))?;
    let if_none_exist = entry.pointer("/request/ifNoneExist").and_then(Value::as_str);
    match api.store.create(resource.clone(), if_none_exist).map_err(store_error)? {
        crate::store::Created::New(r) => Ok(("201 Created", r)),
        crate::store::Created::Existing(r) => Ok(("200 OK", r)),
    }
}

/// `POST [base]/{type}`, with `If-None-Exist` for a conditional create.
async fn create(
    State(api): State<FhirApi>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let grant = api.tokens.verify(&headers)?;
    let resource: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?;
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type.as_str()) {
        return Err(ApiError::invalid("the resource type does not match the URL"));
    }
    check_write(&api, &grant, &resource, None)?;
    if matches!(api.writes.next_fault(), Some(Fault::Fail500)) {
        return Err(injected_failure());
    }
    let if_none_exist = headers.get("if-none-exist").and_then(|v| v.to_str().ok());
    let (status, stored) = match api.store.create(resource, if_none_exist).map_err(store_error)? {
        crate::store::Created::New(r) => (StatusCode::CREATED, r),
        crate::store::Created::Existing(r) => (StatusCode::OK, r),
    };
    let location = format!(
        "{}/{resource_type}/{}",
        api.base_url,
        stored.get("id").and_then(Value::as_str).unwrap_or("")
    );
    let mut response = (status, fhir_json(&stored)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}
