//! Strategies for hostile input: arbitrary JSON shaped like what plans, EHRs and browsers
//! send (keys from the FHIR, CDS Hooks, SMART and OAuth vocabularies, strings with multi-byte
//! characters and near-dates), and mutations of real examples. The tests are in `tests/`;
//! `PROPTEST_CASES` sets how many cases each runs (`scripts/proptest` runs 100,000).

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Keys that steer the parsers into their branches.
const KEYS: &[&str] = &[
    "resourceType",
    "id",
    "type",
    "entry",
    "resource",
    "fullUrl",
    "link",
    "relation",
    "url",
    "total",
    "cards",
    "summary",
    "detail",
    "indicator",
    "source",
    "label",
    "links",
    "uuid",
    "suggestions",
    "actions",
    "selectionBehavior",
    "overrideReasons",
    "services",
    "hook",
    "prefetch",
    "code",
    "coding",
    "system",
    "display",
    "text",
    "valueQuantity",
    "value",
    "unit",
    "effectiveDateTime",
    "effectivePeriod",
    "start",
    "end",
    "onsetDateTime",
    "onsetPeriod",
    "recordedDate",
    "performedDateTime",
    "performedPeriod",
    "occurrenceDateTime",
    "authoredOn",
    "whenHandedOver",
    "whenPrepared",
    "period",
    "billablePeriod",
    "issued",
    "created",
    "subject",
    "patient",
    "reference",
    "identifier",
    "meta",
    "security",
    "tag",
    "category",
    "medicationCodeableConcept",
    "medicationReference",
    "vaccineCode",
    "contained",
    "issue",
    "severity",
    "diagnostics",
    "details",
    "expression",
    "location",
    "name",
    "family",
    "given",
    "birthDate",
    "gender",
    "performer",
    "provider",
    "organization",
    "target",
    "agent",
    "who",
    "token_endpoint",
    "authorization_endpoint",
    "capabilities",
    "code_challenge_methods_supported",
    "issuer",
    "jwks_uri",
    "access_token",
    "token_type",
    "expires_in",
    "scope",
    "refresh_token",
    "id_token",
    "need_patient_banner",
    "smart_style_url",
    "fhirContext",
    "error",
    "error_description",
    "keys",
    "kty",
    "kid",
    "alg",
    "use",
    "crv",
    "x",
    "y",
    "n",
    "e",
];

/// Strings a hostile sender might put anywhere.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _./:#|-]{0,24}",
        "\\PC{0,16}",
        "[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,3})?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?",
        "[0-9]{3}[é€\u{10348}][0-9-]{0,8}",
        Just("Patient/1".to_owned()),
        Just("urn:uuid:00000000-0000-0000-0000-000000000000".to_owned()),
        Just("http://loinc.org".to_owned()),
        Just("Observation".to_owned()),
        Just("Condition".to_owned()),
        Just("Bundle".to_owned()),
        Just("OperationOutcome".to_owned()),
        Just("searchset".to_owned()),
        Just("info".to_owned()),
        Just("critical".to_owned()),
        Just("absolute".to_owned()),
        Just("smart".to_owned()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => proptest::sample::select(KEYS).prop_map(str::to_owned), 1 => text()]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ]
}

/// Arbitrary JSON, a few levels deep.
pub fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// `example` with up to four of its values (or keys) replaced by arbitrary JSON or removed.
pub fn mutated(example: Value) -> impl Strategy<Value = Value> {
    proptest::collection::vec((any::<u32>(), json(), any::<bool>()), 1..4).prop_map(
        move |mutations| {
            let mut value = example.clone();
            for (at, replacement, remove) in mutations {
                mutate(&mut value, at, replacement, remove);
            }
            value
        },
    )
}

/// Walks to the `at`-th node (depth first, wrapping) and replaces or removes it.
fn mutate(value: &mut Value, at: u32, replacement: Value, remove: bool) {
    let count = count_nodes(value);
    let mut target = at as usize % count.max(1);
    visit(value, &mut target, replacement, remove);
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn visit(value: &mut Value, target: &mut usize, replacement: Value, remove: bool) -> bool {
    if *target == 0 {
        *value = replacement;
        return true;
    }
    *target -= 1;
    match value {
        Value::Array(items) => {
            for i in 0..items.len() {
                if *target == 0 && remove {
                    items.remove(i);
                    return true;
                }
                if visit(&mut items[i], target, replacement.clone(), remove) {
                    return true;
                }
            }
        }
        Value::Object(fields) => {
            let keys: Vec<String> = fields.keys().cloned().collect();
            for k in keys {
                if *target == 0 && remove {
                    fields.remove(&k);
                    return true;
                }
                if let Some(child) = fields.get_mut(&k) {
                    if visit(child, target, replacement.clone(), remove) {
                        return true;
                    }
                }
            }
        }
        _ => {}
    }
    false
}

/// Bytes: arbitrary, JSON as text, or JSON text cut short or with a byte flipped.
pub fn bytes_from(example: Value) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        json().prop_map(|v| v.to_string().into_bytes()),
        mutated(example.clone()).prop_map(|v| v.to_string().into_bytes()),
        (any::<u16>(), any::<u8>()).prop_map(move |(at, byte)| {
            let mut text = example.to_string().into_bytes();
            let at = at as usize % text.len().max(1);
            if byte % 2 == 0 {
                text.truncate(at);
            } else if let Some(b) = text.get_mut(at) {
                *b = byte;
            }
            text
        }),
    ]
}
