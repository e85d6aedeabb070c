//! The requests of a write-back, as data: which entries, rewritten how, in what order and
//! what parts. Nothing here talks to a server.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;
use fhir::bundle::{Bundle, BundleEntry, BundleRequest};
use fhir::resource::Reference;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{
    DocumentFormat, EmrTarget, EntryRole, PlanSource, WriteCapabilities, DOCUMENT_KEY,
    ORGANIZATION_KEY, ORIGIN_TAG_SYSTEM, WRITE_IDENTIFIER_SYSTEM,
};
use crate::document::{self, DocumentHeading};
use crate::model::HistoryItem;

const TRANSMITTER: &str =
    "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type";
const PARTICIPANT: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";

/// A request ready to send, with the role of each entry.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub bundle: Bundle,
    pub roles: Vec<EntryRole>,
}

/// The Bundle type of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Transaction,
    Batch,
}

/// What every request of one write-back shares.
#[derive(Debug, Clone, Copy)]
pub struct WriteContext<'a> {
    pub plan: &'a PlanSource,
    pub emr: &'a EmrTarget,
    /// Plan `Type/id` → a display name, for references that cannot follow their item.
    pub names: &'a HashMap<String, String>,
    /// The recorded time (RFC 3339).
    pub now: &'a str,
}

/// What one request carries.
#[derive(Debug, Clone, Default)]
pub struct PartContent<'a> {
    /// Items written as resources by this request.
    pub items: Vec<&'a HistoryItem>,
    /// The DocumentReference's items and format, when it goes in this request.
    pub document: Option<(Vec<&'a HistoryItem>, DocumentFormat)>,
    /// The plan as an Organization (conditional: created once, found after).
    pub organization: bool,
    /// Copies of the plan's own Provenance for `covers`.
    pub plan_provenance: bool,
    /// Our Provenance over `covers` (and the document).
    pub provenance: bool,
    /// The items the Provenance records are about: `items`, or items written earlier.
    pub covers: Vec<&'a HistoryItem>,
    /// The document's items the Provenance covers (written here or earlier).
    pub covers_document: Vec<&'a HistoryItem>,
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

/// A stable key for a set of keys from a plan: the same set gives the same key.
fn selection_key<'k>(
    plan: &PlanSource,
    keys: impl IntoIterator<Item = &'k str>,
    what: &str,
) -> String {
    let sorted: BTreeSet<&str> = keys.into_iter().collect();
    let mut hash = Sha256::new();
    hash.update(plan.fhir_base.as_bytes());
    hash.update(what.as_bytes());
    for k in sorted {
        hash.update(b"\0");
        hash.update(k.as_bytes());
    }
    hash.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The plan-local `Type/id` a reference names, if it names one at this plan.
fn plan_local(plan: &PlanSource, reference: &str) -> Option<String> {
    match Reference::parse(reference) {
        Reference::Local { resource_type, id } => {
            let absolute = reference.contains("://");
            let at_plan = || {
                fhir::base::FhirBase::parse(&plan.fhir_base).is_ok_and(|b| b.contains(reference))
            };
            (!absolute || at_plan()).then(|| format!("{resource_type}/{id}"))
        }
        _ => None,
    }
}

/// Every plan-local reference in `value` (contained resources left out).
fn references(plan: &PlanSource, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("reference") {
                out.extend(plan_local(plan, r));
            }
            for (key, child) in map {
                if key != "contained" {
                    references(plan, child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(plan, v, out)),
        _ => {}
    }
}

/// The items in an order where an item comes after the selected items it refers to (an
/// Encounter before its Observations), so a later part can point at an earlier one. Cycles
/// keep the list order.
pub fn dependency_order<'a>(plan: &PlanSource, items: &[&'a HistoryItem]) -> Vec<&'a HistoryItem> {
    let index: HashMap<&str, usize> =
        items.iter().enumerate().map(|(i, item)| (item.key.as_str(), i)).collect();
    let deps: Vec<Vec<usize>> = items
        .iter()
        .map(|item| {
            let mut refs = Vec::new();
            references(plan, &item.resource, &mut refs);
            refs.iter().filter_map(|r| index.get(r.as_str()).copied()).collect()
        })
        .collect();
    let mut state = vec![0u8; items.len()]; // 0 new, 1 in progress, 2 done
    let mut order = Vec::with_capacity(items.len());
    for start in 0..items.len() {
        // Iterative depth-first post-order: no recursion depth to worry about.
        let mut stack = vec![(start, 0usize)];
        while let Some((node, next)) = stack.pop() {
            if next == 0 {
                if state[node] != 0 {
                    continue;
                }
                state[node] = 1;
            }
            match deps[node].get(next) {
                Some(&dep) => {
                    stack.push((node, next + 1));
                    if state[dep] == 0 {
                        stack.push((dep, 0));
                    }
                }
                None => {
                    state[node] = 2;
                    order.push(items[node]);
                }
            }
        }
    }
    order
}

/// The items in levels: level 0 refers to no other selected item, level n only to items of
/// lower levels. For batch and single creates, where one request cannot refer to an entry
/// of the same request.
pub fn levels<'a>(plan: &PlanSource, ordered: &[&'a HistoryItem]) -> Vec<Vec<&'a HistoryItem>> {
    let mut level_of: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Vec<&HistoryItem>> = Vec::new();
    for item in ordered {
        let mut refs = Vec::new();
        references(plan, &item.resource, &mut refs);
        let level = refs
            .iter()
            .filter(|r| **r != item.key)
            .filter_map(|r| level_of.get(r.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        level_of.insert(item.key.as_str(), level);
        if out.len() <= level {
            out.resize_with(level + 1, Vec::new);
        }
        out[level].push(item);
    }
    out
}

/// The plan Provenance records of `items`, each with the covered items it targets, in a
/// stable order.
fn plan_provenance<'a>(items: &[&'a HistoryItem]) -> Vec<(Arc<Value>, Vec<&'a HistoryItem>)> {
    let mut groups: BTreeMap<String, (Arc<Value>, Vec<&HistoryItem>)> = BTreeMap::new();
    for item in items {
        for provenance in &item.provenance {
            let id = provenance.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
            groups.entry(id).or_insert_with(|| (provenance.clone(), Vec::new())).1.push(item);
        }
    }
    groups.into_values().collect()
}

/// Entries a transaction part of `items` holds: the items, the plan's Provenance for them,
/// the plan Organization and our Provenance.
fn part_entries(plan: &PlanSource, items: &[&HistoryItem]) -> usize {
    let provenance: HashSet<&str> = items
        .iter()
        .flat_map(|i| i.provenance.iter())
        .filter_map(|p| p.get("id").and_then(Value::as_str))
        .collect();
    items.len() + provenance.len() + usize::from(plan.payer_identifier.is_some()) + 1
}

/// Cuts dependency-ordered items into transaction parts of at most `max_entries` entries
/// each (all of them in one part without a limit). The same items and limit always give the
/// same parts, so a retry finds the same Provenance keys.
pub fn partition<'a>(
    plan: &PlanSource,
    ordered: &[&'a HistoryItem],
    max_entries: Option<usize>,
) -> Vec<Vec<&'a HistoryItem>> {
    let Some(max) = max_entries else { return vec![ordered.to_vec()] };
    let mut parts: Vec<Vec<&HistoryItem>> = Vec::new();
    let mut current: Vec<&HistoryItem> = Vec::new();
    for item in ordered {
        current.push(item);
        if current.len() > 1 && part_entries(plan, &current) > max {
            current.pop();
            parts.push(std::mem::take(&mut current));
            current.push(item);
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

struct Rewriter<'a> {
    plan: &'a PlanSource,
    emr_patient: String,
    /// `Type/id` at the plan → the reference in the EMR request (`urn:uuid:` in this
    /// transaction, or `Type/id` written earlier).
    targets: &'a HashMap<String, String>,
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
        let local = plan_local(self.plan, reference);
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

/// Removes what only made sense at the plan (id, version, narrative) and marks the origin.
fn strip_and_mark(map: &mut Map<String, Value>, plan: &PlanSource, extra_tag: Option<Value>) {
    map.remove("id");
    map.remove("text");
    let meta = map.entry("meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        meta.insert("source".into(), json!(plan.fhir_base));
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(origin_tag(plan));
            tags.extend(extra_tag);
        }
    }
}

/// The resource as it is written: plan id and version gone, references rewritten, the plan
/// identifier present, `meta.source` and the origin tag set (security labels kept).
fn prepare(item: &HistoryItem, rewriter: &Rewriter<'_>, plan: &PlanSource) -> (Value, String) {
    let mut resource = item.resource.clone();
    let (system, value) = plan_identifier(item, plan);
    if let Some(map) = resource.as_object_mut() {
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
        strip_and_mark(map, plan, None);
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

/// One request being assembled.
struct Builder {
    bundle: Bundle,
    roles: Vec<EntryRole>,
    /// Written-key → reference for what this request writes (fullUrls; usable inside the
    /// request only in a transaction).
    here: HashMap<String, String>,
}

impl Builder {
    fn push(&mut self, role: EntryRole, resource: Value, if_none_exist: String) {
        let url = uuid_url();
        self.here.insert(role.written_key(), url.clone());
        self.bundle.entry.push(post(url, resource, Some(if_none_exist)));
        self.roles.push(role);
    }
}

/// Builds one request. `written` maps written-keys (item keys, the document, the plan's
/// Organization and Provenance copies) to their `Type/id` in the EMR from earlier requests.
/// In a transaction, entries of the same request are referred to by their fullUrl; in a
/// batch they cannot be (FHIR leaves that undefined), so [`super::run`] sends what is
/// referred to first. Long on purpose: the part's entries, their references and its two
/// Provenance resources are built in one pass so they cannot disagree.
pub fn build_part(
    ctx: &WriteContext<'_>,
    content: &PartContent<'_>,
    written: &HashMap<String, String>,
    kind: BundleKind,
) -> Transaction {
    let code = match kind {
        BundleKind::Transaction => "transaction",
        BundleKind::Batch => "batch",
    };
    let mut b = Builder { bundle: Bundle::new(code), roles: Vec::new(), here: HashMap::new() };
    let intra = kind == BundleKind::Transaction;
    let item_urls: HashMap<String, String> =
        content.items.iter().map(|i| (i.key.clone(), uuid_url())).collect();
    let mut targets = written.clone();
    if intra {
        targets.extend(item_urls.clone());
    }
    let rewriter = Rewriter {
        plan: ctx.plan,
        emr_patient: format!("Patient/{}", ctx.emr.patient),
        targets: &targets,
        names: ctx.names,
    };
    for item in &content.items {
        let (resource, if_none_exist) = prepare(item, &rewriter, ctx.plan);
        let url = item_urls[&item.key].clone();
        b.here.insert(item.key.clone(), url.clone());
        b.bundle.entry.push(post(url, resource, Some(if_none_exist)));
        b.roles.push(EntryRole::Item(item.key.clone()));
    }
    if let Some((items, format)) = &content.document {
        let (resource, if_none_exist) = document_reference(ctx, items, *format);
        let mut keys: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
        keys.sort();
        b.push(EntryRole::Document(keys), resource, if_none_exist);
    }
    if content.organization {
        if let Some((resource, if_none_exist)) = organization(ctx.plan) {
            b.push(EntryRole::PlanOrganization, resource, if_none_exist);
        }
    }
    // What the Provenance records may point at: this request's entries (in a transaction)
    // and what earlier requests wrote.
    let resolve = |b: &Builder, key: &str| -> Option<String> {
        intra.then(|| b.here.get(key).cloned()).flatten().or_else(|| written.get(key).cloned())
    };
    let mut plan_copies = Vec::new();
    if content.plan_provenance {
        for (provenance, covered) in plan_provenance(&content.covers) {
            let refs: Vec<String> = covered.iter().filter_map(|i| resolve(&b, &i.key)).collect();
            if refs.is_empty() {
                continue;
            }
            let (key, resource, if_none_exist) =
                plan_provenance_copy(ctx, &rewriter, &provenance, &covered, refs);
            b.push(EntryRole::PlanProvenance(key.clone()), resource, if_none_exist);
            plan_copies.push(key);
        }
    } else {
        // Copies written by an earlier request.
        plan_copies.extend(
            plan_provenance(&content.covers)
                .into_iter()
                .map(|(p, covered)| plan_copy_key(ctx.plan, &p, &covered))
                .filter(|k| written.contains_key(k)),
        );
    }
    if content.provenance {
        let mut target_keys: Vec<String> = content.covers.iter().map(|i| i.key.clone()).collect();
        if !content.covers_document.is_empty() {
            target_keys.push(DOCUMENT_KEY.into());
        }
        let targets: Vec<String> = target_keys.iter().filter_map(|k| resolve(&b, k)).collect();
        let sources: Vec<String> = plan_copies.iter().filter_map(|k| resolve(&b, k)).collect();
        let organization = resolve(&b, ORGANIZATION_KEY);
        let keys = content.covers.iter().chain(&content.covers_document).map(|i| i.key.as_str());
        let (resource, if_none_exist) = our_provenance(
            ctx,
            selection_key(ctx.plan, keys, "provenance"),
            targets,
            sources,
            organization,
        );
        b.push(EntryRole::Provenance, resource, if_none_exist);
    }
    Transaction { bundle: b.bundle, roles: b.roles }
}

/// Builds the whole write as one transaction: the items, the document, the plan's
/// Organization and Provenance, and ours.
pub fn build_transaction(
    direct: &[&HistoryItem],
    document: &[&HistoryItem],
    format: DocumentFormat,
    plan: &PlanSource,
    emr: &EmrTarget,
    names: &HashMap<String, String>,
    now: &str,
) -> Transaction {
    let ctx = WriteContext { plan, emr, names, now };
    let content = PartContent {
        items: direct.to_vec(),
        document: (!document.is_empty()).then(|| (document.to_vec(), format)),
        organization: true,
        plan_provenance: true,
        provenance: true,
        covers: direct.to_vec(),
        covers_document: document.to_vec(),
    };
    build_part(&ctx, &content, &HashMap::new(), BundleKind::Transaction)
}

/// The plan as an Organization in the EMR (found by its identifier, created once).
fn organization(plan: &PlanSource) -> Option<(Value, String)> {
    let (system, value) = plan.payer_identifier.as_ref()?;
    let org = json!({
        "resourceType": "Organization",
        "identifier": [{"system": system, "value": value}],
        "active": true,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "pay", "display": "Payer"}]}],
        "name": plan.name,
    });
    Some((org, query(system, value)))
}

fn plan_copy_key(plan: &PlanSource, provenance: &Value, covered: &[&HistoryItem]) -> String {
    let id = provenance.get("id").and_then(Value::as_str).unwrap_or("");
    let keys = std::iter::once(id).chain(covered.iter().map(|i| i.key.as_str()));
    format!("plan-provenance-{}", selection_key(plan, keys, "plan-provenance"))
}

/// A copy of the plan's Provenance, targeting the written copies of the items it covers.
/// R4 has no `identifier` search on Provenance: its idempotency key is a tag.
fn plan_provenance_copy(
    ctx: &WriteContext<'_>,
    rewriter: &Rewriter<'_>,
    provenance: &Value,
    covered: &[&HistoryItem],
    targets: Vec<String>,
) -> (String, Value, String) {
    let key = plan_copy_key(ctx.plan, provenance, covered);
    let mut copy = provenance.clone();
    let plan_id = provenance.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    if let Some(map) = copy.as_object_mut() {
        map.remove("target");
        let tag = json!({"system": WRITE_IDENTIFIER_SYSTEM, "code": key});
        strip_and_mark(map, ctx.plan, Some(tag));
        let identifiers = map.entry("identifier").or_insert_with(|| json!([]));
        if let Some(list) = identifiers.as_array_mut() {
            let system = format!("{}/Provenance", ctx.plan.fhir_base.trim_end_matches('/'));
            list.push(json!({"system": system, "value": plan_id}));
        }
    }
    rewriter.rewrite(&mut copy);
    copy["target"] = targets.iter().map(|t| json!({"reference": t})).collect();
    let if_none_exist = search("_tag", WRITE_IDENTIFIER_SYSTEM, &key);
    (key, copy, if_none_exist)
}

/// Our Provenance: the plan as transmitter (PDex), the clinician as enterer, the plan's own
/// Provenance records as sources, every written resource as a target.
fn our_provenance(
    ctx: &WriteContext<'_>,
    key: String,
    targets: Vec<String>,
    sources: Vec<String>,
    organization: Option<String>,
) -> (Value, String) {
    let plan = ctx.plan;
    let mut agents = vec![json!({
        "type": {"coding": [{"system": TRANSMITTER, "code": "transmitter", "display": "Transmitter"}]},
        "who": match &organization {
            Some(url) => json!({"reference": url, "display": plan.name}),
            None => json!({"display": plan.name}),
        },
    })];
    if let Some(user) = &ctx.emr.user {
        agents.push(json!({
            "type": {"coding": [{"system": PARTICIPANT, "code": "enterer", "display": "Enterer"}]},
            "who": {"reference": user},
        }));
    }
    let mut entity = vec![json!({
        "role": "source",
        "what": {
            "identifier": {"system": plan.fhir_base, "value": format!("Patient/{}", plan.member_patient)},
            "display": format!("{} member history", plan.name),
        },
    })];
    entity.extend(sources.iter().map(|s| {
        json!({"role": "source", "what": {"reference": s, "display": format!("{}'s Provenance", plan.name)}})
    }));
    // R4 has no `identifier` search parameter for Provenance: its idempotency key is also a
    // tag, and the conditional create searches `_tag`.
    let code = format!("provenance-{key}");
    let provenance = json!({
        "resourceType": "Provenance",
        "identifier": [{"system": WRITE_IDENTIFIER_SYSTEM, "value": code}],
        "target": targets.iter().map(|u| json!({"reference": u})).collect::<Vec<_>>(),
        "recorded": ctx.now,
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE", "display": "create"}]},
        "agent": agents,
        "entity": entity,
        "meta": {"source": plan.fhir_base, "tag": [origin_tag(plan), {"system": WRITE_IDENTIFIER_SYSTEM, "code": code}]},
    });
    (provenance, search("_tag", WRITE_IDENTIFIER_SYSTEM, &code))
}

/// The DocumentReference holding `items` in `format`.
fn document_reference(
    ctx: &WriteContext<'_>,
    items: &[&HistoryItem],
    format: DocumentFormat,
) -> (Value, String) {
    let (plan, emr, now) = (ctx.plan, ctx.emr, ctx.now);
    let key = selection_key(plan, items.iter().map(|i| i.key.as_str()), "document");
    let heading = DocumentHeading {
        title: format!("Member history from {}", plan.name),
        lines: vec![
            format!("Patient: {}", emr.patient_name),
            format!("Received {now} from {} ({} items)", plan.fhir_base, items.len()),
            "Items the EHR could not take as structured records.".into(),
        ],
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut content = Vec::new();
    if format == DocumentFormat::BundleAndPdf {
        // Inside the document nothing points at other entries.
        let none = HashMap::new();
        let rewriter = Rewriter {
            plan,
            emr_patient: format!("Patient/{}", emr.patient),
            targets: &none,
            names: ctx.names,
        };
        let entries: Vec<Value> = items
            .iter()
            .map(|i| json!({"fullUrl": uuid_url(), "resource": prepare(i, &rewriter, plan).0}))
            .collect();
        let collection = json!({"resourceType": "Bundle", "type": "collection", "timestamp": now, "entry": entries});
        content.push(attachment(
            "application/fhir+json",
            &b64(&serde_json::to_vec(&collection).unwrap_or_default()),
            "Member history (FHIR Bundle)",
            now,
        ));
    }
    let (content_type, bytes, title) = match format {
        DocumentFormat::BundleAndPdf | DocumentFormat::PdfOnly => {
            ("application/pdf", document::pdf(&heading, items), "Member history (PDF)")
        }
        DocumentFormat::Html => {
            ("text/html", document::html(&heading, items).into_bytes(), "Member history (HTML)")
        }
        DocumentFormat::Text => {
            ("text/plain", document::text(&heading, items).into_bytes(), "Member history (text)")
        }
    };
    content.push(attachment(content_type, &b64(&bytes), title, now));
    let mut labels: Vec<Value> = items
        .iter()
        .filter_map(|i| i.resource.pointer("/meta/security").and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect();
    labels.sort_by_key(|l| l.to_string());
    labels.dedup();
    let mut reference = json!({
        "resourceType": "DocumentReference",
        "identifier": [{"system": WRITE_IDENTIFIER_SYSTEM, "value": format!("document-{key}")}],
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11503-0", "display": "Medical records"}]},
        "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note", "display": "Clinical Note"}]}],
        "subject": {"reference": format!("Patient/{}", emr.patient)},
        "date": now,
        "author": [{"display": plan.name}],
        "description": format!("Member history from {}: {} items", plan.name, items.len()),
        "content": content,
        "meta": {"source": plan.fhir_base, "tag": [origin_tag(plan)]},
    });
    if !labels.is_empty() {
        reference["meta"]["security"] = json!(labels);
    }
    (reference, query(WRITE_IDENTIFIER_SYSTEM, &format!("document-{key}")))
}

fn attachment(content_type: &str, data: &str, title: &str, now: &str) -> Value {
    json!({"attachment": {"contentType": content_type, "data": data, "title": title, "creation": now}})
}
