//! From what the plan sent (Bundles, pages, contained resources) to reviewable items: one
//! `HistoryItem` per clinical resource, with display text, codes, dates, status and source
//! resolved from the resources around it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use fhir::resource::{codings, concept_text, Reference};
use serde_json::Value;

use crate::model::{Category, Code, HistoryItem, Party, When};
use crate::sensitive;

/// The resources of one or more Bundles (entries of nested Bundles included), each once
/// (a later copy of the same `Type/id` replaces an earlier one, as paging may repeat).
pub fn flatten(bundles: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut stack: Vec<Value> = bundles.into_iter().collect();
    stack.reverse();
    while let Some(value) = stack.pop() {
        if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            let entries: Vec<Value> = match value {
                Value::Object(mut map) => match map.remove("entry") {
                    Some(Value::Array(entries)) => entries,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let mut resources: Vec<Value> = entries
                .into_iter()
                .filter_map(|e| match e {
                    Value::Object(mut map) => map.remove("resource"),
                    _ => None,
                })
                .collect();
            resources.reverse();
            stack.extend(resources);
            continue;
        }
        match local_key(&value) {
            Some(key) => match seen.entry(key) {
                std::collections::hash_map::Entry::Occupied(slot) => out[*slot.get()] = value,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(out.len());
                    out.push(value);
                }
            },
            None => out.push(value),
        }
    }
    out
}

pub(crate) fn local_key(resource: &Value) -> Option<String> {
    Some(format!("{}/{}", resource.get("resourceType")?.as_str()?, resource.get("id")?.as_str()?))
}

/// The human name of a code system.
pub fn system_name(system: &str) -> Option<&'static str> {
    Some(match system {
        "http://hl7.org/fhir/sid/icd-10-cm" => "ICD-10-CM",
        "http://hl7.org/fhir/sid/icd-10" => "ICD-10",
        "http://snomed.info/sct" => "SNOMED CT",
        "http://loinc.org" => "LOINC",
        "http://www.nlm.nih.gov/research/umls/rxnorm" => "RxNorm",
        "http://hl7.org/fhir/sid/cvx" => "CVX",
        "http://www.ama-assn.org/go/cpt" => "CPT",
        "http://hl7.org/fhir/sid/ndc" => "NDC",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets" => "HCPCS",
        "http://www.cms.gov/Medicare/Coding/ICD10" => "ICD-10-PCS",
        _ => return None,
    })
}

/// Context entries kept at most per kind (parties, medications, encounters): an export of
/// any size resolves references in bounded memory; past the cap a reference shows its own
/// `display`.
const MAX_CONTEXT: usize = 20_000;

/// Everything a resource can be resolved against: the other resources of the answer.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    parties: HashMap<String, Arc<Party>>,
    medications: HashMap<String, Value>,
    /// `Encounter/x` → its service provider.
    encounter_providers: HashMap<String, Arc<Party>>,
}

fn identifiers(resource: &Value) -> Vec<String> {
    resource
        .get("identifier")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|i| {
                    let value = i.get("value")?.as_str()?;
                    Some(format!(
                        "{}|{value}",
                        i.get("system").and_then(Value::as_str).unwrap_or("")
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn party_of(resource: &Value) -> Party {
    let name = match resource.get("resourceType").and_then(Value::as_str) {
        Some("Organization") | Some("Location") => {
            resource.get("name").and_then(Value::as_str).map(str::to_owned)
        }
        _ => fhir::display_name(resource),
    };
    Party { reference: local_key(resource), name, identifiers: identifiers(resource) }
}

/// The order resources are best read in, one at a time: the parties and medications others
/// name, then encounters (whose providers name parties), then the rest, then Provenance
/// (which names the rest).
pub fn read_order(resource_type: &str) -> u8 {
    match resource_type {
        "Patient" | "Organization" | "Practitioner" | "PractitionerRole" | "Location"
        | "Medication" => 0,
        "Encounter" => 1,
        "Provenance" => 3,
        _ => 2,
    }
}

impl Directory {
    fn build(resources: &[Value]) -> Self {
        let mut directory = Directory::default();
        let mut ordered: Vec<&Value> = resources.iter().collect();
        ordered.sort_by_key(|r| {
            read_order(r.get("resourceType").and_then(Value::as_str).unwrap_or(""))
        });
        for r in ordered {
            directory.learn(r);
        }
        directory
    }

    /// Takes in what `r` tells about others: a party, a medication, or an encounter's
    /// provider (resolved against the parties already learnt).
    pub(crate) fn learn(&mut self, r: &Value) {
        let Some(key) = local_key(r) else { return };
        match r.get("resourceType").and_then(Value::as_str) {
            Some("Organization" | "Practitioner" | "PractitionerRole" | "Location")
                if self.parties.len() < MAX_CONTEXT || self.parties.contains_key(&key) =>
            {
                self.parties.insert(key, Arc::new(party_of(r)));
            }
            Some("Medication")
                if self.medications.len() < MAX_CONTEXT || self.medications.contains_key(&key) =>
            {
                self.medications.insert(key, r.clone());
            }
            Some("Encounter") => {
                if let Some(provider) = r.get("serviceProvider") {
                    if self.encounter_providers.len() < MAX_CONTEXT {
                        let party = self.party(r, provider);
                        self.encounter_providers.insert(key, party);
                    }
                }
            }
            _ => {}
        }
    }

    /// The party a Reference names: a contained resource, one in the answer, or just the
    /// reference's own `display` when the plan did not send the resource.
    fn party(&self, resource: &Value, reference: &Value) -> Arc<Party> {
        let text = reference.get("reference").and_then(Value::as_str);
        let display = || reference.get("display").and_then(Value::as_str).map(str::to_owned);
        // Most references are relative `Type/id`: look them up as they are first.
        if let Some(found) = text.and_then(|t| self.parties.get(t)) {
            if found.name.is_some() || display().is_none() {
                return found.clone();
            }
        }
        let parsed = text.map(Reference::parse);
        if let Some(Reference::Local { resource_type, id }) = &parsed {
            if let Some(found) = self.parties.get(&format!("{resource_type}/{id}")) {
                if found.name.is_some() || display().is_none() {
                    return found.clone();
                }
                return Arc::new(Party { name: display(), ..(**found).clone() });
            }
        }
        if let Some(Reference::Contained(id)) = &parsed {
            if let Some(c) = contained(resource, id) {
                let mut party = party_of(c);
                if party.name.is_none() {
                    party.name = display();
                }
                return Arc::new(party);
            }
        }
        Arc::new(Party {
            reference: parsed.and_then(|p| p.local()),
            name: display(),
            identifiers: reference
                .get("identifier")
                .and_then(|i| {
                    Some(format!("{}|{}", i.get("system")?.as_str()?, i.get("value")?.as_str()?))
                })
                .into_iter()
                .collect(),
        })
    }
}

fn contained<'a>(resource: &'a Value, id: &str) -> Option<&'a Value> {
    resource
        .get("contained")?
        .as_array()?
        .iter()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
}

fn when_of(resource: &Value, fields: &[&str]) -> Option<When> {
    for field in fields {
        match resource.get(*field) {
            Some(Value::String(s)) => {
                if let Some(when) = When::parse(Some(s), None) {
                    return Some(when);
                }
            }
            Some(period @ Value::Object(_)) => {
                let text = |k| period.get(k).and_then(Value::as_str);
                if let Some(when) = When::parse(text("start"), text("end")) {
                    return Some(when);
                }
            }
            _ => {}
        }
    }
    None
}

/// What a resource of `kind` is (its concept) and when it happened, read from the kinds
/// table. Plan items (here) and the chart's own resources (dedupe) both go through this, so
/// the same resource is read the same way wherever it comes from. `medication` finds a
/// Medication by local reference (`Medication/1`) outside the resource.
pub(crate) fn what_and_when<'a>(
    kind: &crate::kinds::Kind,
    r: &'a Value,
    medication: impl Fn(&str) -> Option<&'a Value>,
) -> (Option<Cow<'a, Value>>, Option<When>) {
    let concept = if kind.medication {
        let resolved = || {
            let reference = r.pointer("/medicationReference/reference")?.as_str()?;
            match Reference::parse(reference) {
                Reference::Contained(id) => contained(r, &id)?.get("code").map(Cow::Borrowed),
                other => medication(&other.local()?)?.get("code").map(Cow::Borrowed),
            }
        };
        let named = || {
            let text = r.pointer("/medicationReference/display")?.as_str()?;
            Some(Cow::Owned(serde_json::json!({ "text": text })))
        };
        r.get(kind.concept).map(Cow::Borrowed).or_else(resolved).or_else(named)
    } else {
        // `Encounter.type` and `Claim.type`-like arrays: the first says what it is.
        r.get(kind.concept).map(|v| match v {
            Value::Array(items) => items.first().map_or(Cow::Borrowed(v), Cow::Borrowed),
            other => Cow::Borrowed(other),
        })
    };
    (concept, when_of(r, kind.dates))
}

/// The codes of a concept, with their systems' common names.
pub(crate) fn code_list(concept: Option<&Value>) -> Vec<Code> {
    concept
        .map(codings)
        .unwrap_or_default()
        .into_iter()
        .map(|c| Code {
            system_name: c.system.as_deref().and_then(system_name).map(Cow::Borrowed),
            system: c.system,
            code: c.code,
            display: c.display,
        })
        .collect()
}

fn status_of(resource: &Value) -> Option<String> {
    resource
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| resource.get("clinicalStatus").and_then(concept_text))
}

fn quantity(q: &Value) -> Option<String> {
    let value = q.get("value")?;
    let unit = q.get("unit").or_else(|| q.get("code")).and_then(Value::as_str).unwrap_or("");
    Some(format!("{value} {unit}").trim().to_owned())
}

/// An Observation's value in words.
fn observation_value(resource: &Value) -> Option<String> {
    if let Some(q) = resource.get("valueQuantity") {
        return quantity(q);
    }
    if let Some(s) = resource.get("valueString").and_then(Value::as_str) {
        return Some(s.to_owned());
    }
    if let Some(c) = resource.get("valueCodeableConcept") {
        return concept_text(c);
    }
    let components: Vec<String> = resource
        .get("component")?
        .as_array()?
        .iter()
        .filter_map(|c| {
            Some(format!(
                "{}: {}",
                c.get("code").and_then(concept_text)?,
                c.get("valueQuantity").and_then(quantity)?
            ))
        })
        .collect();
    (!components.is_empty()).then(|| components.join(", "))
}

fn first_reference<'a>(resource: &'a Value, paths: &[&str]) -> Option<&'a Value> {
    paths.iter().find_map(|p| {
        let mut v = resource;
        for key in p.split('.') {
            v = match v.get(key)? {
                Value::Array(items) => items.first()?,
                other => other,
            };
        }
        v.get("reference").or_else(|| v.get("display")).map(|_| v)
    })
}

/// Builds the items of an answer. Resources of types the review does not show (Patient,
/// Coverage, Organization…) are context, not items.
pub fn normalise(resources: Vec<Value>) -> Vec<HistoryItem> {
    let directory = Directory::build(&resources);
    let provenance = provenance_by_target(&resources);
    resources
        .into_iter()
        .filter_map(|resource| item_of(&directory, resource))
        .map(|mut item| {
            item.provenance = provenance.get(&item.key).cloned().unwrap_or_default();
            item
        })
        .collect()
}

/// The plan's Provenance records (`_revinclude=Provenance:target`, or inside `$everything`)
/// by the `Type/id` of each resource they target.
fn provenance_by_target(resources: &[Value]) -> HashMap<String, Vec<Arc<Value>>> {
    let mut by_target: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for resource in resources {
        if resource.get("resourceType").and_then(Value::as_str) != Some("Provenance") {
            continue;
        }
        let shared = Arc::new(resource.clone());
        for key in provenance_targets(resource) {
            by_target.entry(key).or_default().push(shared.clone());
        }
    }
    by_target
}

/// The item of a resource the review shows (`None` for context: Patient, Coverage,
/// Organization…).
pub(crate) fn item_of(directory: &Directory, resource: Value) -> Option<HistoryItem> {
    let resource_type = resource.get("resourceType").and_then(Value::as_str)?.to_owned();
    let category = Category::of(&resource_type)?;
    let key = local_key(&resource)?;
    Some(item(directory, key, resource_type, category, resource))
}

/// The local `Type/id`s a Provenance record targets.
pub(crate) fn provenance_targets(provenance: &Value) -> Vec<String> {
    if provenance.get("id").and_then(Value::as_str).is_none() {
        return Vec::new();
    }
    provenance
        .get("target")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("reference").and_then(Value::as_str))
        .filter_map(|r| Reference::parse(r).local())
        .collect()
}

fn item(
    directory: &Directory,
    key: String,
    resource_type: String,
    category: Category,
    resource: Value,
) -> HistoryItem {
    let r = &resource;
    let (concept, when) = match crate::kinds::of(&resource_type) {
        Some(kind) => what_and_when(kind, r, |local| directory.medications.get(local)),
        None => (None, None),
    };
    let concept = concept.as_deref();
    let mut codes = code_list(concept);
    let (organization, practitioner) = parties(directory, r);
    let source = organization.as_ref().or(practitioner.as_ref()).and_then(|p| p.name.clone());
    let (display, detail) = describe(
        &resource_type,
        r,
        concept.and_then(concept_text),
        organization.as_ref().and_then(|o| o.name.clone()),
        source,
        &mut codes,
    );
    let sensitive = sensitive::assess(r, &codes);
    HistoryItem {
        key,
        resource_type,
        category,
        display,
        detail,
        codes,
        when,
        status: status_of(r),
        organization,
        practitioner,
        sensitive,
        duplicate_of: None,
        identifiers: identifiers(r),
        resource,
        provenance: Vec::new(),
    }
}

/// Who the item is from: the organisation and the practitioner, by the first of the
/// reference fields each kind uses (an encounter's provider when the item names none).
fn parties(directory: &Directory, r: &Value) -> (Option<Arc<Party>>, Option<Arc<Party>>) {
    const ORGANIZATION: &[&str] = &[
        "serviceProvider",
        "provider",
        "performer.onBehalfOf",
        "performer.actor",
        "performer",
        "requester",
        "asserter",
        "recorder",
    ];
    const PRACTITIONER: &[&str] = &[
        "participant.individual",
        "performer.actor",
        "performer",
        "requester",
        "asserter",
        "recorder",
        "careTeam.provider",
    ];
    let mut organization = first_reference(r, ORGANIZATION).map(|x| directory.party(r, x));
    // A practitioner in the provider slot is the practitioner, not the organisation.
    let mut practitioner = None;
    if organization
        .as_ref()
        .and_then(|p| p.reference.as_deref())
        .is_some_and(|p| p.starts_with("Practitioner/"))
    {
        practitioner = organization.take();
    }
    if organization.is_none() {
        if let Some(encounter) = r.pointer("/encounter/reference").and_then(Value::as_str) {
            organization = directory.encounter_providers.get(encounter).cloned().or_else(|| {
                Reference::parse(encounter)
                    .local()
                    .and_then(|k| directory.encounter_providers.get(&k).cloned())
            });
        }
    }
    if practitioner.is_none() {
        practitioner = first_reference(r, PRACTITIONER)
            .map(|reference| directory.party(r, reference))
            .filter(|p| {
                p.reference.as_deref().is_none_or(|x| {
                    x.starts_with("Practitioner") || x.starts_with("PractitionerRole")
                })
            });
    }
    (organization, practitioner)
}

/// The row's words: what it is (`display`, from its code unless the kind says better) and a
/// detail line; a claim also adds its service's codes.
fn describe(
    resource_type: &str,
    r: &Value,
    mut display: Option<String>,
    organization: Option<String>,
    source: Option<String>,
    codes: &mut Vec<Code>,
) -> (String, Option<String>) {
    let mut detail = None;
    match resource_type {
        "Encounter" => {
            let class = r
                .pointer("/class/display")
                .or_else(|| r.pointer("/class/code"))
                .and_then(Value::as_str);
            if display.is_none() {
                display = r
                    .get("type")
                    .and_then(Value::as_array)
                    .and_then(|t| t.first())
                    .and_then(concept_text)
                    .or_else(|| class.map(|c| format!("{c} encounter")));
            }
            detail = organization;
        }
        "Observation" => detail = observation_value(r),
        "MedicationDispense" => {
            detail = r.get("quantity").and_then(quantity).map(|q| {
                match r.get("daysSupply").and_then(quantity) {
                    Some(days) => format!("{q}, {days} supply"),
                    None => q,
                }
            })
        }
        "AllergyIntolerance" => {
            detail = r
                .pointer("/reaction/0/manifestation/0")
                .and_then(concept_text)
                .map(|m| format!("Reaction: {m}"))
                .or_else(|| {
                    r.get("criticality")
                        .and_then(Value::as_str)
                        .map(|c| format!("Criticality: {c}"))
                })
        }
        "ExplanationOfBenefit" | "Claim" => {
            let kind = display.clone().unwrap_or_else(|| "Claim".into());
            let service = r.pointer("/item/0/productOrService").and_then(concept_text);
            display = Some(match service {
                Some(s) => format!("{kind} claim: {s}"),
                None => format!("{kind} claim"),
            });
            codes.extend(code_list(r.pointer("/item/0/productOrService")));
            let total = r.pointer("/total/0/amount").map(|a| {
                format!(
                    "{} {}",
                    a.get("value").map(|v| v.to_string()).unwrap_or_default(),
                    a.get("currency").and_then(Value::as_str).unwrap_or("")
                )
            });
            detail = match (source, total) {
                (Some(p), Some(t)) => Some(format!("{p} · {}", t.trim())),
                (p, t) => p.or(t.map(|t| t.trim().to_owned())),
            };
        }
        _ => {}
    }
    (display.unwrap_or_else(|| format!("{resource_type} (no description)")), detail)
}
