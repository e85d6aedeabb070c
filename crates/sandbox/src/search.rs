//! The FHIR search parameters the sandbox servers understand, and the patient compartment.
//!
//! Parameters are evaluated by walking JSON paths (arrays are flattened at every step). A
//! parameter the sandbox does not know is refused with a 400 rather than ignored, so a client
//! bug shows up in the tests instead of as silently unfiltered results.

use fhir::resource::Reference;
use serde_json::Value;

/// How a search parameter is matched.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `[system|]code` against Coding, Identifier, code or string values at the paths.
    Token(&'static [&'static str]),
    /// `Type/id` or `id` against Reference values at the paths.
    Reference(&'static [&'static str]),
    /// Case-insensitive prefix on strings at the paths (HumanName parts).
    Text(&'static [&'static str]),
    /// `[eq|ge|le|gt|lt]YYYY[-MM[-DD]]` on dates/instants at the paths (prefix compare on the string).
    Date(&'static [&'static str]),
}

/// Paths from a resource to the patient it belongs to (the Patient compartment, for the types
/// the sandbox holds). `None`: the type is not in the compartment.
pub fn compartment_paths(resource_type: &str) -> Option<&'static [&'static str]> {
    Some(match resource_type {
        "Coverage" => &["beneficiary", "subscriber"],
        "Encounter"
        | "Condition"
        | "Observation"
        | "Procedure"
        | "MedicationRequest"
        | "MedicationDispense"
        | "MedicationStatement"
        | "DiagnosticReport"
        | "DocumentReference"
        | "CarePlan"
        | "ServiceRequest"
        | "CareTeam"
        | "Goal" => &["subject"],
        "Immunization" | "AllergyIntolerance" | "ExplanationOfBenefit" | "Claim" => &["patient"],
        "Appointment" => &["participant.actor"],
        "Provenance" => &["target"],
        _ => return None,
    })
}

fn kind(resource_type: &str, name: &str) -> Option<Kind> {
    Some(match (resource_type, name) {
        (_, "_id") => Kind::Token(&["id"]),
        (_, "_tag") => Kind::Token(&["meta.tag"]),
        (_, "_security") => Kind::Token(&["meta.security"]),
        // R4 defines no `identifier` search parameter for Provenance.
        ("Provenance", "identifier") => return None,
        (_, "identifier") => Kind::Token(&["identifier"]),
        (_, "status") => Kind::Token(&["status"]),
        ("Patient", "name") => Kind::Text(&["name.text", "name.family", "name.given"]),
        ("Patient", "family") => Kind::Text(&["name.family"]),
        ("Patient", "given") => Kind::Text(&["name.given"]),
        ("Patient", "gender") => Kind::Token(&["gender"]),
        ("Patient", "birthdate") => Kind::Date(&["birthDate"]),
        ("Practitioner", "name") => Kind::Text(&["name.text", "name.family", "name.given"]),
        ("Organization", "name") => Kind::Text(&["name"]),
        ("Coverage", "payor") => Kind::Reference(&["payor"]),
        ("Coverage", "subscriber-id") => Kind::Token(&["subscriberId"]),
        ("Provenance", "target") => Kind::Reference(&["target"]),
        ("Encounter", "date") => Kind::Date(&["period.start"]),
        (_, "code") => {
            Kind::Token(&["code.coding", "vaccineCode.coding", "medicationCodeableConcept.coding"])
        }
        (_, "category") => Kind::Token(&["category.coding"]),
        (ty, "patient") if ty != "Patient" => Kind::Reference(compartment_paths(ty)?),
        (_, "subject") => Kind::Reference(&["subject"]),
        (_, "beneficiary") => Kind::Reference(&["beneficiary"]),
        (_, "encounter") => Kind::Reference(&["encounter"]),
        _ => return None,
    })
}

/// Whether `name` is a token search parameter of `resource_type` (for index lookups).
pub fn known_token(resource_type: &str, name: &str) -> bool {
    matches!(kind(resource_type, name), Some(Kind::Token(_)))
}

/// Parameters that steer paging and formatting rather than filter.
pub const CONTROL_PARAMS: [&str; 6] =
    ["_count", "_offset", "_format", "_pretty", "_sort", "_total"];

/// One parsed filter: all of its comma-separated values are OR'ed.
#[derive(Debug, Clone)]
pub struct Filter {
    kind: Kind,
    values: Vec<String>,
}

/// Parses the filters of a search, refusing unknown parameters and modifiers.
pub fn parse_filters(
    resource_type: &str,
    params: &[(String, String)],
) -> Result<Vec<Filter>, String> {
    let mut filters = Vec::new();
    for (name, value) in params {
        if CONTROL_PARAMS.contains(&name.as_str()) {
            continue;
        }
        let kind = kind(resource_type, name).ok_or_else(|| {
            format!(
                "the search parameter `{name}` is not supported for {resource_type} by this server"
            )
        })?;
        filters.push(Filter { kind, values: value.split(',').map(str::to_owned).collect() });
    }
    Ok(filters)
}

/// Whether `resource` matches every filter.
pub fn matches(resource: &Value, filters: &[Filter]) -> bool {
    filters.iter().all(|f| f.values.iter().any(|v| matches_value(resource, f.kind, v)))
}

fn matches_value(resource: &Value, kind: Kind, wanted: &str) -> bool {
    match kind {
        Kind::Token(paths) => paths
            .iter()
            .any(|p| values_at(resource, p).into_iter().any(|v| token_matches(v, wanted))),
        Kind::Reference(paths) => paths
            .iter()
            .any(|p| values_at(resource, p).into_iter().any(|v| reference_matches(v, wanted))),
        Kind::Text(paths) => {
            let wanted = wanted.to_lowercase();
            paths.iter().any(|p| {
                values_at(resource, p).into_iter().filter_map(Value::as_str).any(|s| {
                    s.to_lowercase().split_whitespace().any(|w| w.starts_with(&wanted))
                        || s.to_lowercase().starts_with(&wanted)
                })
            })
        }
        Kind::Date(paths) => {
            let (op, date) = split_prefix(wanted);
            paths.iter().any(|p| {
                values_at(resource, p)
                    .into_iter()
                    .filter_map(Value::as_str)
                    .any(|s| date_matches(s, op, date))
            })
        }
    }
}

fn split_prefix(v: &str) -> (&str, &str) {
    for op in ["eq", "ne", "ge", "le", "gt", "lt"] {
        if let Some(rest) = v.strip_prefix(op) {
            return (op, rest);
        }
    }
    ("eq", v)
}

fn date_matches(actual: &str, op: &str, wanted: &str) -> bool {
    // Compare on the precision of the query value (FHIR dates are ISO strings).
    let actual = fhir::date::prefix(actual, wanted.chars().count());
    match op {
        "eq" => actual == wanted,
        "ne" => actual != wanted,
        "ge" => actual >= wanted,
        "le" => actual <= wanted,
        "gt" => actual > wanted,
        "lt" => actual < wanted,
        _ => false,
    }
}

fn token_matches(value: &Value, wanted: &str) -> bool {
    let (system, code) = match wanted.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, wanted),
    };
    match value {
        Value::String(s) => system.is_none_or(str::is_empty) && s == code,
        Value::Object(o) => {
            let actual_code = o.get("code").or_else(|| o.get("value")).and_then(Value::as_str);
            let actual_system = o.get("system").and_then(Value::as_str);
            let system_ok = match system {
                None => true,
                Some("") => actual_system.is_none(),
                Some(s) => actual_system == Some(s),
            };
            system_ok && (code.is_empty() || actual_code == Some(code))
        }
        _ => false,
    }
}

fn reference_matches(value: &Value, wanted: &str) -> bool {
    let Some(reference) = value.get("reference").and_then(Value::as_str) else { return false };
    match Reference::parse(reference) {
        Reference::Local { resource_type, id } => {
            wanted == id
                || wanted == format!("{resource_type}/{id}")
                || wanted.ends_with(&format!("/{resource_type}/{id}"))
        }
        _ => reference == wanted,
    }
}

/// Values at a dotted path, flattening arrays at every step.
pub fn values_at<'a>(value: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![value];
    for key in path.split('.') {
        let mut next = Vec::new();
        for v in current {
            match v.get(key) {
                Some(Value::Array(items)) => next.extend(items.iter()),
                Some(item) => next.push(item),
                None => {}
            }
        }
        current = next;
    }
    current
}

/// The patient ids a resource belongs to (for compartment checks): its own id for a
/// Patient, else the Patient references at its compartment paths.
pub fn patients_of(resource: &Value) -> Vec<String> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    if resource_type == "Patient" {
        return resource.get("id").and_then(Value::as_str).map(str::to_owned).into_iter().collect();
    }
    let Some(paths) = compartment_paths(resource_type) else { return Vec::new() };
    paths
        .iter()
        .flat_map(|p| values_at(resource, p))
        .filter_map(|r| r.get("reference").and_then(Value::as_str))
        .filter_map(|r| match Reference::parse(r) {
            Reference::Local { resource_type, id } if resource_type == "Patient" => Some(id),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn identifier_and_reference_search() {
        let cov = json!({"resourceType": "Coverage", "id": "c1", "status": "active",
            "identifier": [{"system": "urn:plan", "value": "M1"}],
            "beneficiary": {"reference": "Patient/p1"}});
        let f =
            parse_filters("Coverage", &params(&[("patient", "p1"), ("status", "active")])).unwrap();
        assert!(matches(&cov, &f));
        let f = parse_filters("Coverage", &params(&[("patient", "Patient/p2")])).unwrap();
        assert!(!matches(&cov, &f));
        let f = parse_filters("Coverage", &params(&[("identifier", "urn:plan|M1")])).unwrap();
        assert!(matches(&cov, &f));
        let f = parse_filters("Coverage", &params(&[("identifier", "urn:other|M1")])).unwrap();
        assert!(!matches(&cov, &f));
        let f = parse_filters("Coverage", &params(&[("identifier", "M1,M2")])).unwrap();
        assert!(matches(&cov, &f));
    }

    #[test]
    fn unknown_parameters_are_refused() {
        assert!(parse_filters("Patient", &params(&[("favourite-colour", "red")])).is_err());
        assert!(parse_filters("Patient", &params(&[("_count", "5")])).unwrap().is_empty());
    }

    #[test]
    fn name_and_date_search() {
        let p = json!({"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-02",
            "name": [{"family": "Okafor", "given": ["Ada"]}]});
        assert!(matches(&p, &parse_filters("Patient", &params(&[("name", "oka")])).unwrap()));
        assert!(matches(
            &p,
            &parse_filters("Patient", &params(&[("birthdate", "1970-05-02")])).unwrap()
        ));
        assert!(matches(
            &p,
            &parse_filters("Patient", &params(&[("birthdate", "ge1970")])).unwrap()
        ));
        assert!(!matches(
            &p,
            &parse_filters("Patient", &params(&[("birthdate", "lt1970")])).unwrap()
        ));
    }

    #[test]
    fn compartment_membership() {
        let obs = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p9"}});
        assert_eq!(patients_of(&obs), vec!["p9".to_owned()]);
        let org = json!({"resourceType": "Organization", "id": "o1"});
        assert!(patients_of(&org).is_empty());
    }
}
