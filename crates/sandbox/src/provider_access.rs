//! The plan's side of the Da Vinci PDex Provider Access API: `$provider-member-match` and
//! `$davinci-data-export`, both asynchronous (Bulk Data status URLs, a configurable delay,
//! `X-Progress`, `Retry-After`), manifests with several NDJSON files behind the token, members
//! who do not match or who opted out (reported as such, or folded into the non-matched), a
//! `_since` that filters on `meta.lastUpdated`, manifests paged by `link` `next`, and an
//! export that fails half-way.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use smart::scopes::Permission;

use crate::access_requests::{lock, Answer, MatchedGroup};
use crate::fhir_api::{fhir_json, ApiError};
use crate::plan::{MatchFailure, Plan};

/// The operations and their status and file URLs, under the plan's FHIR base.
pub fn router(plan: Arc<Plan>) -> Router {
    Router::new()
        .route("/Group/$provider-member-match", post(member_match))
        .route("/Group/{id}/$davinci-data-export", post(export))
        .route("/bulkstatus/{id}", get(status).delete(cancel))
        .route("/bulkfiles/{id}/{n}", get(file))
        .with_state(plan)
}

/// The caller must hold a token with system (or user) read access.
fn authorize(plan: &Plan, headers: &HeaderMap, resource_type: &str) -> Result<(), ApiError> {
    let grant = plan.api.tokens.verify(headers)?;
    match grant.reach(resource_type, Permission::Read)? {
        crate::fhir_api::Reach::All => Ok(()),
        crate::fhir_api::Reach::Patient(_) => Err(ApiError::forbidden(
            "Provider Access needs a system/ scope (SMART Backend Services)",
        )),
    }
}

fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("respond-async")))
}

fn accepted(plan: &Plan, id: &str) -> Response {
    let location = format!("{}/bulkstatus/{id}", plan.fhir_base);
    (StatusCode::ACCEPTED, [(header::CONTENT_LOCATION, location)]).into_response()
}

fn parameters(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::invalid("the body is not JSON"))?;
    if value.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(ApiError::invalid("the body must be a Parameters resource"));
    }
    Ok(value)
}

fn parts<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn named<'a>(parameters: &'a Value, key: &str, names: &[&str]) -> Vec<&'a Value> {
    parts(parameters, key)
        .filter(|p| p.get("name").and_then(Value::as_str).is_some_and(|n| names.contains(&n)))
        .collect()
}

/// One MemberBundle's three resources, checked as a strict plan checks them.
fn member_bundle(bundle: &Value) -> Result<(&Value, &Value), ApiError> {
    let resource =
        |names: &[&str]| named(bundle, "part", names).first().and_then(|p| p.get("resource"));
    let patient = resource(&["MemberPatient"])
        .ok_or_else(|| ApiError::invalid("MemberBundle needs a MemberPatient"))?;
    let coverage = resource(&["CoverageToMatch"])
        .ok_or_else(|| ApiError::invalid("MemberBundle needs a CoverageToMatch"))?;
    let consent = resource(&["Consent", "TreatmentAttestation"]).ok_or_else(|| {
        ApiError::invalid("MemberBundle needs the treatment attestation (Consent)")
    })?;
    let npi = consent
        .get("performer")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("identifier"))
        .any(|i| i.get("system").and_then(Value::as_str) == Some(pdex_npi()));
    if !npi {
        return Err(ApiError::invalid(
            "the attestation's performer must carry the clinician's NPI",
        ));
    }
    if consent.pointer("/provision/period/start").is_none() {
        return Err(ApiError::invalid("the attestation needs provision.period"));
    }
    if consent.pointer("/scope/coding/0/code").and_then(Value::as_str) != Some("patient-privacy") {
        return Err(ApiError::invalid("the attestation's scope must be patient-privacy"));
    }
    Ok((patient, coverage))
}

fn pdex_npi() -> &'static str {
    crate::synthetic::systems::NPI
}

fn group(id: &str, code: &str, members: Vec<Value>, contained: Vec<Value>) -> Value {
    let mut group = json!({
        "resourceType": "Group",
        "id": id,
        "meta": {"profile": [format!("http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-{code}-group")]},
        "type": "person",
        "actual": true,
        "code": {"coding": [{"system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMultiMemberMatchResultCS", "code": code}]},
        "quantity": members.len(),
        "member": members,
    });
    if !contained.is_empty() {
        group["contained"] = json!(contained);
    }
    group
}

async fn member_match(
    State(plan): State<Arc<Plan>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&plan, &headers, "Group")?;
    let request = parameters(&body)?;
    lock(&plan.provider_access.received).push(("member-match".into(), request.clone()));
    // STU 2.2 names the part MemberBundle; STU 2.1 named it MembersToMatch.
    let bundles = named(&request, "parameter", &["MemberBundle", "MembersToMatch"]);
    if bundles.is_empty() {
        return Err(ApiError::invalid("no MemberBundle parameter"));
    }
    let behaviour = plan.provider_access.behaviour();
    let opted_out = lock(&plan.provider_access.opted_out).clone();
    let (mut matched, mut constrained, mut unmatched, mut contained) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (n, bundle) in bundles.iter().enumerate() {
        let (patient, coverage) = member_bundle(bundle)?;
        match plan.match_member_bundle(patient, coverage) {
            Ok(member) if !opted_out.contains(&member.patient_id) => matched
                .push(json!({"entity": {"reference": format!("Patient/{}", member.patient_id)}})),
            found => {
                let mut submitted = patient.clone();
                submitted["id"] = json!(format!("submitted-{n}"));
                let entry = json!({"entity": {"reference": format!("#submitted-{n}")}});
                contained.push(submitted);
                match found {
                    Ok(_) if behaviour.report_opt_outs => constrained.push(entry),
                    Ok(_)
                    | Err(
                        MatchFailure::NoMatch
                        | MatchFailure::Several(_)
                        | MatchFailure::NoIdentifiers,
                    ) => unmatched.push(entry),
                }
            }
        }
    }
    let group_id = uuid::Uuid::new_v4().simple().to_string();
    let members: Vec<String> = matched
        .iter()
        .filter_map(|m| m.pointer("/entity/reference").and_then(Value::as_str))
        .filter_map(|r| r.strip_prefix("Patient/").map(str::to_owned))
        .collect();
    if !members.is_empty() {
        lock(&plan.provider_access.groups).insert(
            group_id.clone(),
            MatchedGroup { members, expires: Instant::now() + behaviour.group_lifetime },
        );
    }
    let answer = json!({"resourceType": "Parameters", "parameter": [
        {"name": "MatchedMembers", "resource": group(&group_id, "match", matched, Vec::new())},
        {"name": "NonMatchedMembers", "resource": group(&format!("{group_id}-nomatch"), "nomatch", unmatched, contained.clone())},
        {"name": "ConsentConstrainedMembers", "resource": group(&format!("{group_id}-consent"), "consentconstraint", constrained, contained)},
    ]});
    if !wants_async(&headers) {
        return Ok(fhir_json(&answer));
    }
    let id = plan.provider_access.start(Answer::Match(answer));
    Ok(accepted(&plan, &id))
}

/// The `valueX` of a named parameter.
fn value_of<'a>(request: &'a Value, name: &str) -> Vec<&'a Value> {
    named(request, "parameter", &[name])
        .into_iter()
        .filter_map(|p| p.as_object()?.iter().find(|(k, _)| k.starts_with("value")).map(|(_, v)| v))
        .collect()
}

async fn export(
    State(plan): State<Arc<Plan>>,
    Path(group_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&plan, &headers, "Group")?;
    if !wants_async(&headers) {
        return Err(ApiError::invalid("Bulk Data needs Prefer: respond-async"));
    }
    let request = parameters(&body)?;
    lock(&plan.provider_access.received).push(("export".into(), request.clone()));
    let members = {
        let groups = lock(&plan.provider_access.groups);
        match groups.get(&group_id) {
            Some(g) if g.expires > Instant::now() => g.members.clone(),
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "expired",
                    "the matched Group has expired: match the members again",
                ))
            }
            None => return Err(ApiError::not_found("no such Group: match the members first")),
        }
    };
    let export_type =
        value_of(&request, "exportType").first().and_then(|v| v.as_str()).map(str::to_owned);
    if !export_type.as_deref().is_some_and(|t| t.starts_with("hl7.fhir.us.davinci-pdex#provider-"))
    {
        return Err(ApiError::invalid("exportType must be one of hl7.fhir.us.davinci-pdex#provider-download, #provider-snapshot or #provider-delta"));
    }
    // The strictest reading: the types are always named.
    let types: Vec<String> = value_of(&request, "_type")
        .iter()
        .filter_map(|v| v.as_str())
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if types.is_empty() {
        return Err(ApiError::invalid("_type is required by this plan"));
    }
    let since = value_of(&request, "_since").first().and_then(|v| v.as_str()).map(str::to_owned);
    let until = value_of(&request, "_until").first().and_then(|v| v.as_str()).map(str::to_owned);
    let wanted: Vec<String> = value_of(&request, "patient")
        .iter()
        .filter_map(|v| v.get("reference").and_then(Value::as_str))
        .filter_map(|r| r.rsplit('/').next().map(str::to_owned))
        .collect();
    if wanted.iter().any(|p| !members.contains(p)) {
        return Err(ApiError::invalid("a patient asked for is not in the matched Group"));
    }
    let patients = if wanted.is_empty() { members } else { wanted };
    let behaviour = plan.provider_access.behaviour();
    let files = export_files(
        &plan,
        &patients,
        &types,
        since.as_deref(),
        until.as_deref(),
        behaviour.lines_per_file,
    );
    let transaction_time = crate::store::now_instant();
    let id = plan.provider_access.start(Answer::Export {
        files,
        transaction_time,
        fail: behaviour.fail_exports,
    });
    Ok(accepted(&plan, &id))
}

/// The members' resources of `types`, changed in `[since, until)`, as files of at most
/// `per_file` lines; the people and places they refer to come whole.
fn export_files(
    plan: &Plan,
    patients: &[String],
    types: &[String],
    since: Option<&str>,
    until: Option<&str>,
    per_file: usize,
) -> Vec<(String, Vec<Value>)> {
    let instant = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    let (since, until) = (since.and_then(instant), until.and_then(instant));
    let changed = |r: &Value| {
        let at = r.pointer("/meta/lastUpdated").and_then(Value::as_str).and_then(instant);
        since.is_none_or(|s| at.is_some_and(|at| at > s))
            && until.is_none_or(|u| at.is_some_and(|at| at <= u))
    };
    let mut by_type: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for patient in patients {
        for resource in plan.store.compartment(patient) {
            let resource_type =
                resource.get("resourceType").and_then(Value::as_str).unwrap_or("").to_owned();
            if types.contains(&resource_type) && changed(&resource) {
                by_type.entry(resource_type).or_default().push(resource);
            }
        }
    }
    for shared in ["Organization", "Practitioner", "Location", "Medication"] {
        if types.iter().any(|t| t == shared) {
            let all = plan.store.search(shared, &[]);
            by_type
                .entry(shared.to_owned())
                .or_default()
                .extend(all.into_iter().filter(|r| changed(r)));
        }
    }
    let per_file = per_file.max(1);
    by_type
        .into_iter()
        .filter(|(_, resources)| !resources.is_empty())
        .flat_map(|(resource_type, resources)| {
            resources
                .chunks(per_file)
                .map(|chunk| (resource_type.clone(), chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `?page=` of a paged manifest (1 when absent).
#[derive(Debug, serde::Deserialize)]
struct ManifestPage {
    page: Option<usize>,
}

async fn status(
    State(plan): State<Arc<Plan>>,
    Path(id): Path<String>,
    Query(ManifestPage { page }): Query<ManifestPage>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&plan, &headers, "Group")?;
    let requests = lock(&plan.provider_access.requests);
    let request = requests.get(&id).ok_or_else(|| ApiError::not_found("no such request"))?;
    let now = Instant::now();
    let total = request.ready_at.saturating_duration_since(request.started).as_secs_f64();
    let done = now.saturating_duration_since(request.started).as_secs_f64();
    let failing = matches!(request.answer, Answer::Export { fail: true, .. });
    if failing && done >= total / 2.0 {
        let outcome = crate::fhir_api::operation_outcome(
            "error",
            "exception",
            "The export stopped half-way: the plan's claims store did not answer. Ask again later.",
        );
        return Ok((StatusCode::INTERNAL_SERVER_ERROR, fhir_json(&outcome)).into_response());
    }
    if now < request.ready_at {
        let percent = if total > 0.0 { (done / total * 100.0).min(99.0) as u32 } else { 0 };
        let what = match request.answer {
            Answer::Match(_) => "matching members",
            Answer::Export { .. } => "exporting",
        };
        let wait = request.ready_at.saturating_duration_since(now).as_secs().clamp(1, 120);
        return Ok((
            StatusCode::ACCEPTED,
            [("x-progress", format!("{what}: {percent}%")), ("retry-after", wait.to_string())],
        )
            .into_response());
    }
    let behaviour = plan.provider_access.behaviour();
    Ok(match &request.answer {
        Answer::Match(_) if behaviour.match_as_manifest => {
            // The three Groups as NDJSON files of one manifest, one file each.
            let groups = vec![("Group".to_owned(), 1); 3];
            fhir_json(&manifest(&plan, &id, &groups, &crate::store::now_instant(), 1))
        }
        Answer::Match(answer) => fhir_json(answer),
        Answer::Export { files, transaction_time, .. } => {
            let listed: Vec<(String, usize)> =
                files.iter().map(|(t, r)| (t.clone(), r.len())).collect();
            fhir_json(&manifest(&plan, &id, &listed, transaction_time, page.unwrap_or(1)))
        }
    })
}

/// Page `page` (from 1) of the manifest of `files`, with a `next` link while more are left.
fn manifest(
    plan: &Plan,
    id: &str,
    files: &[(String, usize)],
    transaction_time: &str,
    page: usize,
) -> Value {
    let base = &plan.fhir_base;
    let per_page = match plan.provider_access.behaviour().files_per_manifest {
        0 => files.len().max(1),
        n => n,
    };
    let first = page.saturating_sub(1).saturating_mul(per_page);
    let output: Vec<Value> = files
        .iter()
        .enumerate()
        .skip(first)
        .take(per_page)
        .map(|(n, (resource_type, count))| {
            json!({"type": resource_type, "url": format!("{base}/bulkfiles/{id}/{n}"), "count": count})
        })
        .collect();
    let mut manifest = json!({
        "transactionTime": transaction_time,
        "request": format!("{base}/bulkstatus/{id}"),
        "requiresAccessToken": true,
        "output": output,
        "error": [],
    });
    if first.saturating_add(per_page) < files.len() {
        let next = format!("{base}/bulkstatus/{id}?page={}", page + 1);
        manifest["link"] = json!([{"relation": "next", "url": next}]);
    }
    manifest
}

async fn file(
    State(plan): State<Arc<Plan>>,
    Path((id, n)): Path<(String, usize)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&plan, &headers, "Group")?;
    let requests = lock(&plan.provider_access.requests);
    let request = requests.get(&id).ok_or_else(|| ApiError::not_found("no such request"))?;
    let lines: Vec<&Value> = match &request.answer {
        Answer::Export { files, .. } => files.get(n).map(|(_, r)| r.iter().collect()),
        Answer::Match(answer) => answer
            .get("parameter")
            .and_then(Value::as_array)
            .and_then(|p| p.get(n))
            .and_then(|p| p.get("resource"))
            .map(|g| vec![g]),
    }
    .ok_or_else(|| ApiError::not_found("no such file"))?;
    let mut body = Vec::new();
    for line in lines {
        serde_json::to_writer(&mut body, line).unwrap_or_default();
        body.push(b'\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/fhir+ndjson")], body).into_response())
}

async fn cancel(
    State(plan): State<Arc<Plan>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&plan, &headers, "Group")?;
    match lock(&plan.provider_access.requests).remove(&id) {
        Some(_) => Ok(StatusCode::ACCEPTED.into_response()),
        None => Err(ApiError::not_found("no such request")),
    }
}
