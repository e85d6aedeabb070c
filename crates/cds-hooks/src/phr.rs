//! Two extensions proposed in "CDS Hooks for personal health records" (a blog post, not a
//! standard), used only with a service that advertises them; every other service gets plain
//! CDS Hooks 2.0.
//!
//! - **Context descriptors**: a discovery service's `context` maps each context key it
//!   expects to a CodeableConcept describing it. A client sends the described keys it can
//!   fill, including ones beyond the hook's own (here `memberId`, `subscriberId`), and leaves
//!   out optional keys the service did not describe. The hook's required keys are always sent
//!   (CDS Hooks 2.0 requires them whatever the service says).
//! - **Several FHIR sources**: instead of `fhirServer` and `fhirAuthorization`, an array of
//!   `{fhirServer, fhirAuthorization}` objects, and `contexts`, an object keyed by each
//!   source's `fhirServer` holding that source's `userId`, `patientId` and `encounterId` (which
//!   override `context`'s). The post names the array `fhirSources` in its text and
//!   `fhirServices` in its example, so a service declares which name it reads, in its
//!   discovery `extension`: `{"fhirSources": true}` or `{"fhirServices": true}`, plus
//!   `{"contexts": true}` for the per-source contexts. The single `fhirServer` and
//!   `fhirAuthorization` are then left out, as the post asks.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::model::{HookRequest, Service};

/// The two spellings of the sources array, in the order they are looked for.
const SOURCE_ARRAY_NAMES: [&str; 2] = ["fhirSources", "fhirServices"];
/// The context keys that belong to one FHIR source.
const PER_SOURCE_KEYS: [&str; 3] = ["userId", "patientId", "encounterId"];

/// What a service declares it reads of the several-sources proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesDeclared {
    /// `fhirSources` or `fhirServices`.
    pub array_name: &'static str,
    /// It reads `contexts` too.
    pub contexts: bool,
}

/// Whether `service` declares the several-sources request properties, and by which names.
pub fn declared_sources(service: &Service) -> Option<SourcesDeclared> {
    let extension = service.extension.as_ref()?.as_object()?;
    let on = |key: &str| {
        extension.get(key).is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false)))
    };
    let array_name = SOURCE_ARRAY_NAMES.into_iter().find(|name| on(name))?;
    Some(SourcesDeclared { array_name, contexts: on("contexts") })
}

/// `context` as `service` describes it: without descriptors, unchanged (plain CDS Hooks);
/// with them, the `required` keys, the described keys of `context`, and the described ones
/// of `extras` (what else the client knows). Also returns the described keys nobody could
/// fill.
pub fn described_context(
    context: Value,
    extras: &[(&str, Option<Value>)],
    service: &Service,
    required: &[&str],
) -> (Value, Vec<String>) {
    if service.context.is_empty() {
        return (context, Vec::new());
    }
    let described = &service.context;
    let mut out = Map::new();
    if let Value::Object(fields) = context {
        for (key, value) in fields {
            if required.contains(&key.as_str()) || described.contains_key(&key) {
                out.insert(key, value);
            }
        }
    }
    for (key, value) in extras {
        if let (true, Some(value)) = (described.contains_key(*key), value) {
            out.entry(key.to_string()).or_insert_with(|| value.clone());
        }
    }
    let unfilled = described.keys().filter(|k| !out.contains_key(*k)).cloned().collect();
    (Value::Object(out), unfilled)
}

/// Moves `request`'s one FHIR source into the declared sources array (and its part of the
/// context into `contexts`, when declared). A request with no `fhirServer` is left as it is.
pub fn into_sources(request: &mut HookRequest, declared: &SourcesDeclared) {
    let Some(server) = request.fhir_server.take() else { return };
    let mut source = json!({"fhirServer": server});
    if let Some(authorization) = request.fhir_authorization.take() {
        source["fhirAuthorization"] = serde_json::to_value(authorization).unwrap_or(Value::Null);
    }
    request.proposed.insert(declared.array_name.to_owned(), json!([source]));
    if declared.contexts {
        let own: Map<String, Value> = PER_SOURCE_KEYS
            .iter()
            .filter_map(|k| request.context.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        let contexts: BTreeMap<String, Value> = [(server, Value::Object(own))].into();
        request.proposed.insert("contexts".into(), json!(contexts));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn service(discovery: Value) -> Service {
        serde_json::from_value(discovery).unwrap()
    }

    fn context() -> Value {
        json!({"userId": "Practitioner/u1", "patientId": "p1", "encounterId": "e1", "appointments": {"resourceType": "Bundle"}})
    }

    #[test]
    fn without_descriptors_the_context_is_plain_cds_hooks() {
        let plain = service(json!({"hook": "appointment-book", "id": "s"}));
        let extras = [("memberId", Some(json!("M1")))];
        let (sent, unfilled) = described_context(context(), &extras, &plain, &["userId"]);
        assert_eq!(sent, context());
        assert!(unfilled.is_empty());
        assert!(declared_sources(&plain).is_none());
    }

    #[test]
    fn descriptors_choose_the_optional_and_extra_keys_and_never_drop_required_ones() {
        let described = service(json!({"hook": "appointment-book", "id": "s", "context": {
            "patientId": {"text": "the patient"}, "memberId": {"text": "the member id"},
            "favouriteColour": {"text": "?"}}}));
        let extras = [("memberId", Some(json!("M1"))), ("subscriberId", Some(json!("S1")))];
        let required = ["userId", "patientId", "appointments"];
        let (sent, unfilled) = described_context(context(), &extras, &described, &required);
        assert_eq!(sent["memberId"], "M1");
        assert!(sent.get("encounterId").is_none(), "optional and not described");
        assert!(sent.get("subscriberId").is_none(), "known but not described");
        assert_eq!(sent["userId"], "Practitioner/u1", "required, though not described");
        assert_eq!(unfilled, ["favouriteColour"]);
    }

    #[test]
    fn a_declared_sources_array_takes_the_one_server_in_the_declared_spelling() {
        for (name, contexts) in [("fhirSources", true), ("fhirServices", false)] {
            let declaring = service(json!({"hook": "appointment-book", "id": "s",
                "extension": {name: true, "contexts": contexts}}));
            let declared = declared_sources(&declaring).unwrap();
            assert_eq!(declared.array_name, name);
            let mut request =
                crate::appointment_book::request("https://ehr.example/fhir", context());
            into_sources(&mut request, &declared);
            let body = serde_json::to_value(&request).unwrap();
            assert!(body.get("fhirServer").is_none(), "{body}");
            assert_eq!(body[name][0]["fhirServer"], "https://ehr.example/fhir");
            assert_eq!(body.get("contexts").is_some(), contexts, "{body}");
            if contexts {
                assert_eq!(body["contexts"]["https://ehr.example/fhir"]["patientId"], "p1");
                assert!(body["contexts"]["https://ehr.example/fhir"].get("appointments").is_none());
            }
        }
        let off = service(
            json!({"hook": "appointment-book", "id": "s", "extension": {"fhirSources": false}}),
        );
        assert!(declared_sources(&off).is_none());
    }
}
