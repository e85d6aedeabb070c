//! Reading the common elements of FHIR resources held as JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Accessors for the elements every resource has.
pub trait ResourceExt {
    fn resource_type(&self) -> Option<&str>;
    fn id(&self) -> Option<&str>;
    /// `Type/id`, when both are present.
    fn local_reference(&self) -> Option<String> {
        Some(format!("{}/{}", self.resource_type()?, self.id()?))
    }
    /// A string element at a dotted path of object keys (`"meta.source"`).
    fn str_at(&self, path: &str) -> Option<&str>;
}

impl ResourceExt for Value {
    fn resource_type(&self) -> Option<&str> {
        self.get("resourceType")?.as_str()
    }

    fn id(&self) -> Option<&str> {
        self.get("id")?.as_str()
    }

    fn str_at(&self, path: &str) -> Option<&str> {
        path.split('.').try_fold(self, |v, key| v.get(key))?.as_str()
    }
}

/// A FHIR Coding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Coding {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// A parsed FHIR reference string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `Type/id` (possibly the tail of an absolute URL).
    Local { resource_type: String, id: String },
    /// `#id` into `contained`.
    Contained(String),
    /// `urn:uuid:…` / `urn:oid:…` within a Bundle.
    Urn(String),
    /// Anything else (a URL we cannot split, a logical reference only).
    Other(String),
}

impl Reference {
    /// Parses `reference` strings such as `Patient/123`, `https://x/fhir/Patient/123`,
    /// `Patient/123/_history/2`, `#c1` or `urn:uuid:…`.
    pub fn parse(reference: &str) -> Self {
        if let Some(id) = reference.strip_prefix('#') {
            return Reference::Contained(id.to_owned());
        }
        if reference.starts_with("urn:") {
            return Reference::Urn(reference.to_owned());
        }
        let path = reference.split(['?', '#']).next().unwrap_or(reference);
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        // Strip a trailing `_history/{vid}`.
        let parts = match parts.as_slice() {
            [head @ .., "_history", _] => head,
            all => all,
        };
        match parts {
            [.., ty, id] if is_resource_type(ty) && is_fhir_id(id) => {
                Reference::Local { resource_type: (*ty).to_owned(), id: (*id).to_owned() }
            }
            _ => Reference::Other(reference.to_owned()),
        }
    }

    /// `Type/id` for local references.
    pub fn local(&self) -> Option<String> {
        match self {
            Reference::Local { resource_type, id } => Some(format!("{resource_type}/{id}")),
            _ => None,
        }
    }
}

/// A resource type name: starts with an upper-case ASCII letter, letters only.
pub fn is_resource_type(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphabetic())
}

/// FHIR id syntax: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The id in a reference to a resource of type `resource_type` (`Patient/1` → `1`).
pub fn reference_id<'a>(reference: &'a str, resource_type: &str) -> Option<&'a str> {
    let rest = reference.rsplit_once(&format!("{resource_type}/"))?.1;
    let id = rest.split(['/', '?', '#']).next()?;
    is_fhir_id(id).then_some(id)
}

/// A person's name for display: the `official` (else `usual`, else first) HumanName, using
/// `text` when present, else `prefix given family suffix`.
pub fn display_name(resource: &Value) -> Option<String> {
    let names = resource.get("name")?.as_array()?;
    let pick =
        |wanted: &str| names.iter().find(|n| n.get("use").and_then(Value::as_str) == Some(wanted));
    let name = pick("official").or_else(|| pick("usual")).or_else(|| names.first())?;
    if let Some(text) = name.get("text").and_then(Value::as_str) {
        if !text.trim().is_empty() {
            return Some(text.trim().to_owned());
        }
    }
    let strings = |key: &str| -> Vec<&str> {
        name.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let mut parts = strings("prefix");
    parts.extend(strings("given"));
    if let Some(family) = name.get("family").and_then(Value::as_str) {
        parts.push(family);
    }
    parts.extend(strings("suffix"));
    let joined = parts.join(" ");
    (!joined.trim().is_empty()).then(|| joined.trim().to_owned())
}

/// The first identifier whose `type` has a coding with `code` in the v2-0203 table
/// (e.g. `MR` for medical record number, `MB` for member number).
pub fn first_identifier_of_type<'a>(resource: &'a Value, code: &str) -> Option<&'a Value> {
    resource.get("identifier")?.as_array()?.iter().find(|identifier| {
        identifier.pointer("/type/coding").and_then(Value::as_array).is_some_and(|codings| {
            codings.iter().any(|c| c.get("code").and_then(Value::as_str) == Some(code))
        })
    })
}

/// Codings of a CodeableConcept (read in place: this runs for every item of a history).
pub fn codings(concept: &Value) -> Vec<Coding> {
    let text = |c: &Value, key: &str| c.get(key).and_then(Value::as_str).map(str::to_owned);
    concept
        .get("coding")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|c| c.is_object())
                .map(|c| Coding {
                    system: text(c, "system"),
                    code: text(c, "code"),
                    display: text(c, "display"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Text for a CodeableConcept: `text`, else the first coding's display, else its code.
pub fn concept_text(concept: &Value) -> Option<String> {
    if let Some(text) = concept.get("text").and_then(Value::as_str) {
        return Some(text.to_owned());
    }
    let codings = codings(concept);
    codings
        .iter()
        .find_map(|c| c.display.clone())
        .or_else(|| codings.iter().find_map(|c| c.code.clone()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_references() {
        assert_eq!(Reference::parse("Patient/123").local().as_deref(), Some("Patient/123"));
        assert_eq!(
            Reference::parse("https://ehr.example/fhir/Patient/123/_history/4").local().as_deref(),
            Some("Patient/123")
        );
        assert_eq!(Reference::parse("#c1"), Reference::Contained("c1".into()));
        assert!(matches!(Reference::parse("urn:uuid:1234"), Reference::Urn(_)));
        assert!(matches!(Reference::parse("not a reference"), Reference::Other(_)));
        assert_eq!(reference_id("Patient/abc", "Patient"), Some("abc"));
        assert_eq!(reference_id("Practitioner/abc", "Patient"), None);
    }

    #[test]
    fn display_name_prefers_official_and_text() {
        let p = json!({"name": [
            {"use": "nickname", "given": ["Bob"]},
            {"use": "official", "given": ["Robert", "J"], "family": "Smith", "prefix": ["Mr."]}
        ]});
        assert_eq!(display_name(&p).unwrap(), "Mr. Robert J Smith");
        let p = json!({"name": [{"text": "Ana María López"}]});
        assert_eq!(display_name(&p).unwrap(), "Ana María López");
        assert_eq!(display_name(&json!({})), None);
    }

    #[test]
    fn finds_identifier_by_type() {
        let p = json!({"identifier": [
            {"system": "urn:ssn", "value": "1"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "value": "MRN-9"}
        ]});
        assert_eq!(first_identifier_of_type(&p, "MR").unwrap()["value"], "MRN-9");
        assert!(first_identifier_of_type(&p, "MB").is_none());
    }

    #[test]
    fn concept_text_falls_back_to_codings() {
        assert_eq!(concept_text(&json!({"text": "Asthma"})).unwrap(), "Asthma");
        assert_eq!(
            concept_text(&json!({"coding": [{"code": "J45"}, {"code": "x", "display": "Asthma"}]}))
                .unwrap(),
            "Asthma"
        );
    }
}
