//! Writing the clinician's selection into the EMR as one FHIR transaction:
//!
//! - the EMR's CapabilityStatement decides what can be written as resources (create and
//!   conditional create per type, transactions at all);
//! - each item gets a new `urn:uuid` fullUrl, its subject rewritten to the EMR patient,
//!   references between selected items rewritten, references to anything else reduced to
//!   their display text, plan ids removed, an identifier with the plan's system and id, and
//!   `ifNoneExist` on it so a retry never duplicates;
//! - `meta.source` and a `meta.tag` say where it came from; security labels are kept;
//! - the rest goes into one DocumentReference (FHIR Bundle + PDF, else PDF, HTML, text);
//! - one Provenance names the plan as transmitter and source of every written resource.

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use fhir::bundle::{Bundle, BundleEntry, BundleRequest};
use fhir::resource::Reference;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::document::{self, DocumentHeading};
use crate::model::HistoryItem;

/// Our code system for the origin tag on written resources.
pub const ORIGIN_TAG_SYSTEM: &str = "https://member-history.dev/fhir/CodeSystem/data-origin";
/// Identifier system of our Provenance and DocumentReference records (their idempotency keys).
pub const WRITE_IDENTIFIER_SYSTEM: &str = "https://member-history.dev/fhir/write";
const TRANSMITTER: &str =
    "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type";
const PARTICIPANT: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";

/// What the EMR's CapabilityStatement allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteCapabilities {
    pub transaction: bool,
    /// type → (create, conditional create)
    pub types: HashMap<String, (bool, bool)>,
}

impl WriteCapabilities {
    pub fn from_capability_statement(statement: &Value) -> Self {
        let mut caps = WriteCapabilities::default();
        for rest in statement.get("rest").and_then(Value::as_array).into_iter().flatten() {
            if rest.get("mode").and_then(Value::as_str).is_some_and(|m| m != "server") {
                continue;
            }
            caps.transaction |=
                rest.get("interaction").and_then(Value::as_array).is_some_and(|i| {
                    i.iter().any(|x| x.get("code").and_then(Value::as_str) == Some("transaction"))
                });
            for resource in rest.get("resource").and_then(Value::as_array).into_iter().flatten() {
                let Some(resource_type) = resource.get("type").and_then(Value::as_str) else {
                    continue;
                };
                let create =
                    resource.get("interaction").and_then(Value::as_array).is_some_and(|i| {
                        i.iter().any(|x| x.get("code").and_then(Value::as_str) == Some("create"))
                    });
                let conditional =
                    resource.get("conditionalCreate").and_then(Value::as_bool).unwrap_or(false);
                caps.types.insert(resource_type.to_owned(), (create, conditional));
            }
        }
        caps
    }

    /// Creatable with `If-None-Exist`: safe to retry.
    pub fn writes_idempotently(&self, resource_type: &str) -> bool {
        self.types.get(resource_type).is_some_and(|(create, conditional)| *create && *conditional)
    }
}

/// The plan the data came from.
#[derive(Debug, Clone)]
pub struct PlanSource {
    pub name: String,
    pub fhir_base: String,
    /// The member's Patient id at the plan (references to it become the EMR patient).
    pub member_patient: String,
    /// The identifier system for the plan's records; `None` means `{fhir_base}/{Type}`.
    pub record_system: Option<String>,
    /// The plan's own identifier (`system`, `value`), for its Organization in the EMR.
    pub payer_identifier: Option<(String, String)>,
}

/// Where it goes.
#[derive(Debug, Clone)]
pub struct EmrTarget {
    pub patient: String,
    pub patient_name: String,
    /// The signed-in user (`Practitioner/x`), recorded as the enterer.
    pub user: Option<String>,
}

/// What a DocumentReference carries, in PDex's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    BundleAndPdf,
    PdfOnly,
    Html,
    Text,
}

impl DocumentFormat {
    pub const CHAIN: [DocumentFormat; 4] = [
        DocumentFormat::BundleAndPdf,
        DocumentFormat::PdfOnly,
        DocumentFormat::Html,
        DocumentFormat::Text,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DocumentFormat::BundleAndPdf => "FHIR Bundle and PDF",
            DocumentFormat::PdfOnly => "PDF",
            DocumentFormat::Html => "HTML",
            DocumentFormat::Text => "plain text",
        }
    }
}

/// What each entry of the transaction is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryRole {
    Item(String),
    PlanOrganization,
    Document(Vec<String>),
    Provenance,
}

/// A transaction ready to send, with the role of each entry.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub bundle: Bundle,
    pub roles: Vec<EntryRole>,
}

/// How the selection splits between resources and the document.
pub fn split<'a>(
    items: &[&'a HistoryItem],
    caps: &WriteCapabilities,
) -> (Vec<&'a HistoryItem>, Vec<&'a HistoryItem>) {
    items.iter().partition(|i| caps.writes_idempotently(&i.resource_type))
}

fn uuid_url() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn query(system: &str, value: &str) -> String {
    search("identifier", system, value)
}

/// A token search query, `name=system|value`, encoded.
fn search(name: &str, system: &str, value: &str) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair(name, &format!("{system}|{value}"));
    s.finish()
}

/// The plan-record identifier of an item: (system, value).
pub fn plan_identifier(item: &HistoryItem, plan: &PlanSource) -> (String, String) {
    let system = plan.record_system.clone().unwrap_or_else(|| {
        format!("{}/{}", plan.fhir_base.trim_end_matches('/'), item.resource_type)
    });
    let id = item.key.split_once('/').map(|(_, id)| id).unwrap_or(&item.key).to_owned();
    (system, id)
}

/// A stable key for a set of items from a plan: the same selection gives the same key.
fn selection_key(plan: &PlanSource, keys: &BTreeSet<&str>, what: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(plan.fhir_base.as_bytes());
    hash.update(what.as_bytes());
    for k in keys {
        hash.update(b"\0");
        hash.update(k.as_bytes());
    }
    hash.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

struct Rewriter<'a> {
    plan: &'a PlanSource,
    emr_patient: String,
    /// `Type/id` at the plan → fullUrl in the transaction.
    targets: HashMap<String, String>,
    /// `Type/id` at the plan → a name for references that cannot follow.
    names: &'a HashMap<String, String>,
}

impl Rewriter<'_> {
    fn rewrite(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("reference").cloned() {
                    self.reference(map, &reference);
                }
                for (key, child) in map.iter_mut() {
                    if key != "contained" {
                        self.rewrite(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.rewrite(v)),
            _ => {}
        }
    }

    fn reference(&self, map: &mut Map<String, Value>, reference: &str) {
        if reference.starts_with('#') {
            return;
        }
        let local = match Reference::parse(reference) {
            Reference::Local { resource_type, id } => {
                let absolute = reference.contains("://");
                if absolute && !reference.starts_with(self.plan.fhir_base.trim_end_matches('/')) {
                    None
                } else {
                    Some(format!("{resource_type}/{id}"))
                }
            }
            _ => None,
        };
        match local {
            Some(l) if l == format!("Patient/{}", self.plan.member_patient) => {
                map.insert("reference".into(), json!(self.emr_patient));
            }
            Some(l) if self.targets.contains_key(&l) => {
                map.insert("reference".into(), json!(self.targets[&l]));
            }
            other => {
                // Not coming along: keep what a reader needs, the name.
                map.remove("reference");
                if !map.contains_key("display") {
                    let name = other
                        .as_ref()
                        .and_then(|l| self.names.get(l).cloned())
                        .unwrap_or_else(|| {
                            format!(
                                "{} record {}",
                                self.plan.name,
                                other.unwrap_or_else(|| reference.to_owned())
                            )
                        });
                    map.insert("display".into(), json!(name));
                }
            }
        }
    }
}

/// The resource as it is written: plan id and version gone, references rewritten, the plan
/// identifier present, `meta.source` and the origin tag set (security labels kept).
fn prepare(item: &HistoryItem, rewriter: &Rewriter<'_>, plan: &PlanSource) -> (Value, String) {
    let mut resource = item.resource.clone();
    let (system, value) = plan_identifier(item, plan);
    if let Some(map) = resource.as_object_mut() {
        map.remove("id");
        map.remove("text");
        let identifiers = map.entry("identifier").or_insert_with(|| json!([]));
        if let Some(list) = identifiers.as_array_mut() {
            let present = list.iter().any(|i| {
                i.get("system").and_then(Value::as_str) == Some(system.as_str())
                    && i.get("value").and_then(Value::as_str) == Some(value.as_str())
            });
            if !present {
                list.push(json!({"system": system, "value": value}));
            }
        }
        let meta = map.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.remove("versionId");
            meta.remove("lastUpdated");
            meta.insert("source".into(), json!(plan.fhir_base));
            let tags = meta.entry("tag").or_insert_with(|| json!([]));
            if let Some(tags) = tags.as_array_mut() {
                tags.push(origin_tag(plan));
            }
        }
    }
    rewriter.rewrite(&mut resource);
    (resource, query(&system, &value))
}

fn origin_tag(plan: &PlanSource) -> Value {
    json!({"system": ORIGIN_TAG_SYSTEM, "code": "health-plan", "display": format!("From {}", plan.name)})
}

fn post(full_url: String, resource: Value, if_none_exist: Option<String>) -> BundleEntry {
    let resource_type =
        resource.get("resourceType").and_then(Value::as_str).unwrap_or("").to_owned();
    BundleEntry {
        full_url: Some(full_url),
        resource: Some(resource),
        request: Some(BundleRequest {
            method: "POST".into(),
            url: resource_type,
            if_none_exist,
            if_match: None,
        }),
        ..Default::default()
    }
}

/// Builds the transaction for `direct` items (as resources) and `document` items (in one
/// DocumentReference of `format`). `names` maps plan `Type/id` to display names (for
/// references that cannot follow); `now` is the recorded time (RFC 3339).
pub fn build_transaction(
    direct: &[&HistoryItem],
    document: &[&HistoryItem],
    format: DocumentFormat,
    plan: &PlanSource,
    emr: &EmrTarget,
    names: &HashMap<String, String>,
    now: &str,
) -> Transaction {
    let targets: HashMap<String, String> =
        direct.iter().map(|i| (i.key.clone(), uuid_url())).collect();
    let rewriter = Rewriter {
        plan,
        emr_patient: format!("Patient/{}", emr.patient),
        targets: targets.clone(),
        names,
    };
    let mut bundle = Bundle::new("transaction");
    let mut roles = Vec::new();
    let mut written: Vec<String> = Vec::new();

    for item in direct {
        let (resource, if_none_exist) = prepare(item, &rewriter, plan);
        let full_url = targets[&item.key].clone();
        written.push(full_url.clone());
        bundle.entry.push(post(full_url, resource, Some(if_none_exist)));
        roles.push(EntryRole::Item(item.key.clone()));
    }

    if !document.is_empty() {
        let keys: BTreeSet<&str> = document.iter().map(|i| i.key.as_str()).collect();
        let key = selection_key(plan, &keys, "document");
        let heading = DocumentHeading {
            title: format!("Member history from {}", plan.name),
            lines: vec![
                format!("Patient: {}", emr.patient_name),
                format!("Received {now} from {} ({} items)", plan.fhir_base, document.len()),
                "Items the EHR could not take as structured records.".into(),
            ],
        };
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut content = Vec::new();
        if format == DocumentFormat::BundleAndPdf {
            // Inside the document nothing points at the transaction's entries.
            let no_targets = rewriter_for(plan, emr, names);
            let entries: Vec<Value> = document
                .iter()
                .map(
                    |i| json!({"fullUrl": uuid_url(), "resource": prepare(i, &no_targets, plan).0}),
                )
                .collect();
            let collection = json!({"resourceType": "Bundle", "type": "collection", "timestamp": now, "entry": entries});
            content.push(attachment(
                "application/fhir+json",
                &b64(&serde_json::to_vec(&collection).unwrap_or_default()),
                "Member history (FHIR Bundle)",
                now,
            ));
        }
        match format {
            DocumentFormat::BundleAndPdf | DocumentFormat::PdfOnly => content.push(attachment(
                "application/pdf",
                &b64(&document::pdf(&heading, document)),
                "Member history (PDF)",
                now,
            )),
            DocumentFormat::Html => content.push(attachment(
                "text/html",
                &b64(document::html(&heading, document).as_bytes()),
                "Member history (HTML)",
                now,
            )),
            DocumentFormat::Text => content.push(attachment(
                "text/plain",
                &b64(document::text(&heading, document).as_bytes()),
                "Member history (text)",
                now,
            )),
        }
        let security: Vec<Value> = {
            let mut labels: Vec<Value> = document
                .iter()
                .filter_map(|i| i.resource.pointer("/meta/security").and_then(Value::as_array))
                .flatten()
                .cloned()
                .collect();
            labels.sort_by_key(|l| l.to_string());
            labels.dedup();
            labels
        };
        let mut reference = json!({
            "resourceType": "DocumentReference",
            "identifier": [{"system": WRITE_IDENTIFIER_SYSTEM, "value": format!("document-{key}")}],
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11503-0", "display": "Medical records"}]},
            "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note", "display": "Clinical Note"}]}],
            "subject": {"reference": format!("Patient/{}", emr.patient)},
            "date": now,
            "author": [{"display": plan.name}],
            "description": format!("Member history from {}: {} items", plan.name, document.len()),
            "content": content,
            "meta": {"source": plan.fhir_base, "tag": [origin_tag(plan)]},
        });
        if !security.is_empty() {
            reference["meta"]["security"] = json!(security);
        }
        let full_url = uuid_url();
        written.push(full_url.clone());
        bundle.entry.push(post(
            full_url,
            reference,
            Some(query(WRITE_IDENTIFIER_SYSTEM, &format!("document-{key}"))),
        ));
        roles.push(EntryRole::Document(keys.iter().map(|k| (*k).to_owned()).collect()));
    }

    // The plan as an Organization in the EMR (found by its identifier, created once).
    let organization = plan.payer_identifier.as_ref().map(|(system, value)| {
        let full_url = uuid_url();
        let org = json!({
            "resourceType": "Organization",
            "identifier": [{"system": system, "value": value}],
            "active": true,
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "pay", "display": "Payer"}]}],
            "name": plan.name,
        });
        bundle.entry.push(post(full_url.clone(), org, Some(query(system, value))));
        roles.push(EntryRole::PlanOrganization);
        full_url
    });

    let all_keys: BTreeSet<&str> =
        direct.iter().chain(document.iter()).map(|i| i.key.as_str()).collect();
    let provenance_key = selection_key(plan, &all_keys, "provenance");
    let mut agents = vec![json!({
        "type": {"coding": [{"system": TRANSMITTER, "code": "transmitter", "display": "Transmitter"}]},
        "who": match &organization {
            Some(url) => json!({"reference": url, "display": plan.name}),
            None => json!({"display": plan.name}),
        },
    })];
    if let Some(user) = &emr.user {
        agents.push(json!({
            "type": {"coding": [{"system": PARTICIPANT, "code": "enterer", "display": "Enterer"}]},
            "who": {"reference": user},
        }));
    }
    // R4 has no `identifier` search parameter for Provenance: its idempotency key is also a
    // tag, and the conditional create searches `_tag`.
    let provenance_tag =
        json!({"system": WRITE_IDENTIFIER_SYSTEM, "code": format!("provenance-{provenance_key}")});
    let provenance = json!({
        "resourceType": "Provenance",
        "identifier": [{"system": WRITE_IDENTIFIER_SYSTEM, "value": format!("provenance-{provenance_key}")}],
        "target": written.iter().map(|u| json!({"reference": u})).collect::<Vec<_>>(),
        "recorded": now,
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE", "display": "create"}]},
        "agent": agents,
        "entity": [{
            "role": "source",
            "what": {
                "identifier": {"system": plan.fhir_base, "value": format!("Patient/{}", plan.member_patient)},
                "display": format!("{} member history", plan.name),
            },
        }],
        "meta": {"source": plan.fhir_base, "tag": [origin_tag(plan), provenance_tag]},
    });
    bundle.entry.push(post(
        uuid_url(),
        provenance,
        Some(search("_tag", WRITE_IDENTIFIER_SYSTEM, &format!("provenance-{provenance_key}"))),
    ));
    roles.push(EntryRole::Provenance);
    Transaction { bundle, roles }
}

fn rewriter_for<'a>(
    plan: &'a PlanSource,
    emr: &EmrTarget,
    names: &'a HashMap<String, String>,
) -> Rewriter<'a> {
    Rewriter {
        plan,
        emr_patient: format!("Patient/{}", emr.patient),
        targets: HashMap::new(),
        names,
    }
}

fn attachment(content_type: &str, data: &str, title: &str, now: &str) -> Value {
    json!({"attachment": {"contentType": content_type, "data": data, "title": title, "creation": now}})
}

/// What happened to one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryStatus {
    Created,
    /// A conditional create matched: the EMR already had it.
    AlreadyPresent,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryOutcome {
    pub role: EntryRole,
    pub status: EntryStatus,
    /// `Type/id` in the EMR.
    pub reference: Option<String>,
}

/// Reads a transaction-response against the transaction's entries.
pub fn outcomes(transaction: &Transaction, response: &Bundle) -> Vec<EntryOutcome> {
    transaction
        .roles
        .iter()
        .enumerate()
        .map(|(i, role)| {
            let entry = response.entry.get(i);
            let status_text = entry
                .and_then(|e| e.response.as_ref())
                .map(|r| r.status.clone())
                .unwrap_or_default();
            let status = match status_text.split_whitespace().next() {
                Some("201") => EntryStatus::Created,
                Some("200") => EntryStatus::AlreadyPresent,
                _ => EntryStatus::Other(status_text),
            };
            let reference = entry
                .and_then(|e| e.response.as_ref()?.location.clone())
                .and_then(|l| Reference::parse(&l).local())
                .or_else(|| {
                    entry.and_then(|e| fhir::ResourceExt::local_reference(e.resource.as_ref()?))
                });
            EntryOutcome { role: role.clone(), status, reference }
        })
        .collect()
}
