//! No panic from outside input: every parser and transformation of what a plan, an EHR or a
//! browser sends, over arbitrary and mutated JSON. A failure prints the smallest input found.
//!
//! `PROPTEST_CASES` cases per target (the default tests run 256; `scripts/proptest` 100,000).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proptests::{bytes_from, json, mutated};
use serde_json::{json as j, Value};

fn config() -> ProptestConfig {
    // Failures are printed, not saved: the tests run in fresh clones.
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

fn bundle_example() -> Value {
    j!({"resourceType": "Bundle", "type": "searchset", "total": 2,
    "link": [{"relation": "next", "url": "https://plan.example/fhir?page=2"}],
    "entry": [
      {"fullUrl": "https://plan.example/fhir/Condition/c1", "resource": {
        "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/m1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes"}]},
        "onsetDateTime": "2024-03-07", "recorder": {"reference": "Practitioner/p1"},
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}}},
      {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "valueQuantity": {"value": 7.1, "unit": "%"}, "effectivePeriod": {"start": "2024-05-01T10:00:00Z"},
        "performer": [{"reference": "Organization/org1", "display": "Clinic"}]}},
      {"resource": {"resourceType": "MedicationDispense", "id": "d1", "whenHandedOver": "2024-06",
        "medicationReference": {"reference": "#med"},
        "contained": [{"resourceType": "Medication", "id": "med", "code": {"text": "metformin"}}]}},
      {"resource": {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Immunization", "id": "i1", "occurrenceDateTime": "2023",
          "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "208"}]}}}]}},
      {"resource": {"resourceType": "Provenance", "id": "pv1", "target": [{"reference": "Condition/c1"}],
        "recorded": "2024-03-08T00:00:00Z", "agent": [{"who": {"reference": "Organization/plan"}}]}}
    ]})
}

fn cards_example() -> Value {
    j!({"cards": [{"uuid": "c-1", "summary": "History available", "indicator": "info",
        "detail": "**Member** history", "source": {"label": "Plan", "url": "https://plan.example"},
        "links": [{"label": "Open", "url": "https://app.example/launch", "type": "smart",
                   "appContext": "{\"member\":\"m1\"}"}],
        "suggestions": [{"label": "Take it", "uuid": "s-1", "actions": []}],
        "overrideReasons": [{"code": "no", "display": "No"}], "selectionBehavior": "any"}],
        "systemActions": []})
}

fn discovery_example() -> Value {
    j!({"services": [{"hook": "appointment-book", "id": "member-history", "title": "History",
        "description": "PDex", "prefetch": {"patient": "Patient/{{context.patientId}}"}}]})
}

fn smart_example() -> Value {
    j!({"issuer": "https://ehr.example", "jwks_uri": "https://ehr.example/jwks",
        "authorization_endpoint": "https://ehr.example/authorize", "token_endpoint": "https://ehr.example/token",
        "capabilities": ["launch-ehr", "client-confidential-asymmetric"],
        "code_challenge_methods_supported": ["S256"], "grant_types_supported": ["authorization_code"]})
}

fn token_example() -> Value {
    j!({"access_token": "a", "token_type": "Bearer", "expires_in": 3600, "scope": "patient/*.rs openid",
        "patient": "p1", "need_patient_banner": true, "refresh_token": "r", "id_token": "x.y.z",
        "fhirContext": [{"reference": "Appointment/1"}], "smart_style_url": "https://ehr.example/style"})
}

fn outcome_example() -> Value {
    j!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "too-costly",
        "diagnostics": "too many entries", "details": {"text": "limit 8"}, "expression": ["Bundle.entry[9]"]}]})
}

fn patient_example() -> Value {
    j!({"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-02", "gender": "female",
        "name": [{"family": "Müller-Lüdenscheidt", "given": ["Anna", "Maria"]}],
        "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "123"}]})
}

fn resources(value: Value) -> Vec<Value> {
    pdex::normalise::flatten(vec![value])
}

/// Everything the review does with a plan's answer: flatten, normalise, dedupe against a
/// chart made of the same (mutated) input, review rows, the document text.
fn review(plan: Value, chart: Value) {
    let chart = resources(chart);
    let mut items = pdex::normalise::normalise(resources(plan));
    let index = pdex::dedupe::ChartIndex::new(&chart);
    pdex::dedupe::mark_duplicates(&mut items, &index);
    let own = pdex::filter::Own::default();
    for item in &items {
        let row = pdex::ReviewRow::new(item, &own);
        let filter = pdex::filter::Filter {
            from: Some("2024-0é".into()),
            to: Some("2024".into()),
            text: Some("é".into()),
            ..Default::default()
        };
        let _ = filter.keeps(&row);
        let _ = item.when.as_ref().and_then(|w| w.day());
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bundles_through_normalise_and_dedupe(plan in mutated(bundle_example()), chart in json()) {
        let _ = serde_json::from_value::<fhir::Bundle>(plan.clone());
        review(plan, chart);
    }

    #[test]
    fn arbitrary_resources_through_normalise_and_dedupe(plan in json(), chart in mutated(bundle_example())) {
        review(plan, chart);
    }

    /// A bulk export's lines or a pushed Bundle's entries, read one at a time into a few
    /// newest items: never more than asked, every resource either kept or counted.
    #[test]
    fn resources_one_at_a_time_into_the_newest_items(plan in prop_oneof![mutated(bundle_example()), json()]) {
        let mut resources = resources(plan);
        resources.sort_by_key(|r| {
            pdex::normalise::read_order(r.get("resourceType").and_then(Value::as_str).unwrap_or(""))
        });
        let mut export = pdex::export::ExportItems::new(3);
        for resource in resources {
            export.add(resource);
        }
        let collected = export.finish();
        prop_assert!(collected.items.len() <= 3);
    }

    #[test]
    fn cds_hooks_cards(answer in prop_oneof![mutated(cards_example()), json()]) {
        if let Ok(checked) = cds_hooks::cards::check_response(&answer, 50) {
            for card in &checked.cards {
                let _ = cds_hooks::markdown::to_safe_html(card.card.detail.as_deref().unwrap_or_default());
            }
        }
    }

    #[test]
    fn cds_hooks_discovery(doc in prop_oneof![mutated(discovery_example()), json()]) {
        let _ = serde_json::from_value::<cds_hooks::DiscoveryResponse>(doc);
    }

    #[test]
    fn smart_configuration(doc in prop_oneof![mutated(smart_example()), json()]) {
        if let Ok(config) = serde_json::from_value::<smart::SmartConfiguration>(doc) {
            let _ = config.check_for_app_launch();
            let _ = config.has_capability("launch-ehr");
        }
    }

    #[test]
    fn token_responses(body in bytes_from(token_example())) {
        if let Ok(response) = smart::TokenResponse::from_json(&body) {
            let set = smart::TokenSet::from_response(&response, "patient/*.rs", 1_700_000_000);
            let _ = set.should_refresh(1_700_000_000, 60);
        }
    }

    #[test]
    fn id_tokens(parts in proptest::collection::vec(prop_oneof![
            "[A-Za-z0-9_-]{0,64}".boxed(),
            json().prop_map(|v| {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            }).boxed(),
        ], 0..5),
        jwks in bytes_from(j!({"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
                                        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RS256"}]}))) {
        let token = parts.join(".");
        let _ = jose::peek_header(&token);
        let _ = jose::peek_claims::<Value>(&token);
        if let Ok(set) = jose::parse_jwks(&jwks) {
            let _ = jose::verify::<Value>(&token, &set, &jose::Expectations::default());
        }
    }

    #[test]
    fn operation_outcomes(body in bytes_from(outcome_example())) {
        if let Some(text) = fhir::client::outcome_text(&body) {
            prop_assert!(!text.chars().any(char::is_control));
            prop_assert!(text.chars().count() <= 600);
        }
    }

    #[test]
    fn member_identity(emr in mutated(patient_example()), plan in prop_oneof![mutated(patient_example()), json()]) {
        let _ = pdex::identity::check(&emr, &plan);
    }

    #[test]
    fn fhir_dates(s in "\\PC{0,30}") {
        if let Ok(date) = fhir::FhirDate::parse(&s) {
            prop_assert!(s.starts_with(date.day()));
        }
        let _ = fhir::date::prefix(&s, 7);
    }

    #[test]
    fn oauth_errors_reach_logs_without_control_characters(s in "\\PC{0,80}|[\\x00-\\x1f]{0,20}") {
        let code = smart::client::oauth_error_code(&s);
        prop_assert!(!code.chars().any(char::is_control));
        prop_assert!(code.chars().count() <= 80);
    }
}
