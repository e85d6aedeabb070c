//! Normalisation, grouping, duplicates, sensitive flags and filters, from a fixture holding
//! each resource type and the awkward cases (no date, period only, text-only concepts,
//! several codings, contained resources, references to resources that are not there).
#![allow(clippy::unwrap_used)]

use pdex::dedupe::{mark_duplicates, ChartIndex};
use pdex::filter::{Filter, Own};
use pdex::normalise::{flatten, normalise};
use pdex::ReviewRow;
use pdex::{Category, HistoryItem, Sensitivity};
use serde_json::{json, Value};

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/history.json")).unwrap()
}

fn items() -> Vec<HistoryItem> {
    normalise(flatten([fixture()]))
}

fn item<'a>(items: &'a [HistoryItem], key: &str) -> &'a HistoryItem {
    items.iter().find(|i| i.key == key).unwrap_or_else(|| panic!("{key} missing"))
}

#[test]
fn flatten_takes_nested_bundles_and_drops_repeats() {
    let resources = flatten([fixture()]);
    assert!(
        resources.iter().any(|r| r["id"] == "claim-nested"),
        "nested Bundle entries are included"
    );
    assert_eq!(
        resources.iter().filter(|r| r["id"] == "imm-1").count(),
        1,
        "a repeated Type/id appears once"
    );
    assert!(resources.iter().all(|r| r["resourceType"] != "Bundle"));
}

#[test]
fn every_type_lands_in_its_group() {
    let items = items();
    let group = |key: &str| item(&items, key).category;
    assert_eq!(group("Encounter/enc-1"), Category::Encounters);
    assert_eq!(group("Condition/cond-two-codings"), Category::Conditions);
    assert_eq!(group("Procedure/proc-period"), Category::Procedures);
    assert_eq!(group("MedicationDispense/disp-contained"), Category::Medications);
    assert_eq!(group("MedicationRequest/req-ref"), Category::Medications);
    assert_eq!(group("MedicationStatement/stmt-missing"), Category::Medications);
    assert_eq!(group("Immunization/imm-1"), Category::Immunizations);
    assert_eq!(group("Observation/obs-a1c"), Category::LabsAndVitals);
    assert_eq!(group("DiagnosticReport/dr-1"), Category::LabsAndVitals);
    assert_eq!(group("AllergyIntolerance/alg-1"), Category::Allergies);
    assert_eq!(group("ExplanationOfBenefit/eob-1"), Category::Claims);
    assert_eq!(group("Claim/claim-nested"), Category::Claims);
    // Context resources are not items.
    assert!(!items
        .iter()
        .any(|i| i.resource_type == "Patient" || i.resource_type == "Organization"));
    let counts: Vec<usize> =
        Category::ALL.iter().map(|c| items.iter().filter(|i| i.category == *c).count()).collect();
    assert_eq!(counts, vec![2, 4, 1, 3, 1, 3, 1, 2]);
}

#[test]
fn display_text_codes_dates_and_sources() {
    let items = items();
    let enc = item(&items, "Encounter/enc-1");
    assert_eq!(enc.display, "Office or other outpatient visit");
    assert_eq!(enc.organization.as_ref().unwrap().name.as_deref(), Some("Lakeside Cardiology"));
    assert_eq!(enc.practitioner.as_ref().unwrap().name.as_deref(), Some("Dr. Jonas Berg"));
    assert_eq!(
        enc.when.as_ref().unwrap().end.as_ref().map(fhir::FhirDate::as_str),
        Some("2025-06-01T10:30:00Z")
    );
    // An encounter with no type falls back to its class.
    assert_eq!(item(&items, "Encounter/enc-2").display, "emergency encounter");

    let two = item(&items, "Condition/cond-two-codings");
    assert_eq!(two.display, "Essential (primary) hypertension");
    assert_eq!(two.codes.len(), 2);
    assert_eq!(two.codes[0].system_name.as_deref(), Some("ICD-10-CM"));
    assert_eq!(two.codes[1].system_name.as_deref(), Some("SNOMED CT"));
    assert_eq!(two.status.as_deref(), Some("Active"));

    // Text-only concept; the source comes from the encounter it belongs to.
    let text = item(&items, "Condition/cond-text-only");
    assert_eq!(text.display, "Chest pain, atypical");
    assert!(text.codes.is_empty());
    assert_eq!(text.organization.as_ref().unwrap().name.as_deref(), Some("Lakeside Cardiology"));

    // No date at all.
    assert!(item(&items, "Condition/cond-no-date").when.is_none());
    // Period only.
    let proc = item(&items, "Procedure/proc-period");
    assert_eq!(proc.when.as_ref().unwrap().day(), Some("2025-03-03"));
    assert_eq!(proc.organization.as_ref().unwrap().name.as_deref(), Some("Lakeside Cardiology"));
    assert_eq!(
        proc.practitioner.as_ref().unwrap().name.as_deref(),
        None.or(Some("Dr. Jonas Berg"))
    );

    // Contained Medication; Medication elsewhere in the Bundle; a Medication that is not there.
    let disp = item(&items, "MedicationDispense/disp-contained");
    assert_eq!(disp.display, "lisinopril 10 MG Oral Tablet");
    assert_eq!(disp.codes[0].system_name.as_deref(), Some("RxNorm"));
    assert_eq!(disp.detail.as_deref(), Some("30 tablet"));
    assert_eq!(item(&items, "MedicationRequest/req-ref").display, "amlodipine 5 MG Oral Tablet");
    assert_eq!(item(&items, "MedicationStatement/stmt-missing").display, "Vitamin D3 1000 IU");

    assert_eq!(item(&items, "Observation/obs-a1c").detail.as_deref(), Some("7.1 %"));
    assert_eq!(
        item(&items, "Observation/obs-bp").detail.as_deref(),
        Some("Systolic: 132 mm[Hg], Diastolic: 84 mm[Hg]")
    );
    assert_eq!(item(&items, "AllergyIntolerance/alg-1").detail.as_deref(), Some("Reaction: Hives"));

    // A claim whose provider is not in the answer keeps the reference's display.
    let eob = item(&items, "ExplanationOfBenefit/eob-1");
    assert_eq!(eob.display, "Professional claim: Office visit");
    assert_eq!(eob.organization.as_ref().unwrap().name.as_deref(), Some("Northside Urgent Care"));
    assert_eq!(eob.detail.as_deref(), Some("Northside Urgent Care · 125 USD"));
}

#[test]
fn sensitive_items_are_flagged_and_not_selected() {
    let items = items();
    let dep = item(&items, "Condition/cond-sensitive");
    assert_eq!(dep.sensitive, vec![Sensitivity::BehaviouralHealth]);
    assert!(!dep.selected_by_default());
    let labelled = item(&items, "Claim/claim-nested");
    assert_eq!(labelled.sensitive, vec![Sensitivity::SecurityLabel("R".into())]);
    assert!(item(&items, "Condition/cond-two-codings").selected_by_default());
}

#[test]
fn duplicates_by_identifier_then_code_and_date() {
    let mut items = items();
    let chart = vec![
        // Same identifier (written back earlier).
        json!({"resourceType": "Condition", "id": "emr-1", "identifier": [{"system": "http://plan.example/record", "value": "c-2"}],
               "code": {"text": "HTN"}}),
        // Same code and day, different time of day.
        json!({"resourceType": "Immunization", "id": "emr-2", "occurrenceDateTime": "2024-10-03T09:00:00Z",
               "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]}}),
        // Same code, another day: not a duplicate.
        json!({"resourceType": "Observation", "id": "emr-3", "effectiveDateTime": "2024-01-01",
               "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}}),
        // Same code and day but another type: not a duplicate.
        json!({"resourceType": "Procedure", "id": "emr-4", "performedDateTime": "2024-04-11",
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]}}),
    ];
    let index = ChartIndex::new(&chart);
    assert_eq!(mark_duplicates(&mut items, &index), 2);
    assert_eq!(
        item(&items, "Condition/cond-two-codings").duplicate_of.as_deref(),
        Some("Condition/emr-1")
    );
    assert_eq!(
        item(&items, "Immunization/imm-1").duplicate_of.as_deref(),
        Some("Immunization/emr-2")
    );
    assert!(item(&items, "Observation/obs-a1c").duplicate_of.is_none());
    assert!(!item(&items, "Immunization/imm-1").selected_by_default());
}

#[test]
fn filters_by_period_own_organisation_and_practitioner_and_text() {
    let mut items = items();
    let index = ChartIndex::new(&[
        json!({"resourceType": "Immunization", "id": "e", "occurrenceDateTime": "2024-10-03",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]}}),
    ]);
    mark_duplicates(&mut items, &index);
    let own = Own {
        organization_identifiers: vec!["http://hl7.org/fhir/sid/us-npi|1407993356".into()],
        organization_names: vec![],
        practitioner_identifiers: vec!["http://hl7.org/fhir/sid/us-npi|1295634120".into()],
        practitioner_names: vec![],
    };
    let rows: Vec<ReviewRow> = items.iter().map(|i| ReviewRow::new(i, &own)).collect();
    let count = |f: &Filter| f.apply(&rows).count();
    let all = count(&Filter::default());
    assert_eq!(all, items.len());
    let period = Filter {
        from: Some("2025-01-01".into()),
        to: Some("2025-06-01".into()),
        ..Default::default()
    };
    let kept: Vec<&str> = period.apply(&rows).map(|i| rows[i].key.as_str()).collect();
    assert!(kept.contains(&"Procedure/proc-period"));
    assert!(kept.contains(&"Condition/cond-no-date"), "undated items stay visible");
    assert!(!kept.contains(&"Immunization/imm-1"));
    assert!(!kept.contains(&"MedicationDispense/disp-contained"), "2025-06-02 is after the period");
    let no_clinic = Filter { exclude_own_organization: true, ..Default::default() };
    assert_eq!(count(&no_clinic), all - 2, "the clinic's encounter and immunization are hidden");
    let not_me = Filter { exclude_own_practitioner: true, ..Default::default() };
    assert_eq!(count(&not_me), all - 3, "Dr. Berg's encounter, procedure and order are hidden");
    assert_eq!(count(&Filter { hide_duplicates: true, ..Default::default() }), all - 1);
    assert_eq!(count(&Filter { hide_sensitive: true, ..Default::default() }), all - 2);
    assert_eq!(count(&Filter { text: Some("LISINOPRIL".into()), ..Default::default() }), 1);
    assert_eq!(count(&Filter { text: Some("4548-4".into()), ..Default::default() }), 1);
    assert_eq!(count(&Filter { category: Some(Category::Medications), ..Default::default() }), 3);
}

#[test]
fn review_items_are_newest_first() {
    let items = pdex::review_items(vec![fixture()], &ChartIndex::default());
    let dates: Vec<&str> = items.iter().map(|i| i.sort_date()).filter(|d| !d.is_empty()).collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted);
}

#[test]
fn items_serialise_without_the_raw_resource() {
    let items = items();
    let json = serde_json::to_string(&items[0]).unwrap();
    assert!(!json.contains("\"resource\""));
    let back: HistoryItem = serde_json::from_str(&json).unwrap();
    assert_eq!(back.key, items[0].key);
}
