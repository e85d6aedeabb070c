//! Building the write-back transaction: reference rewriting, identifiers, `ifNoneExist`, the
//! Provenance, and the DocumentReference fallback chain.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use base64::Engine;
use pdex::normalise::{flatten, normalise};
use pdex::writeback::{
    build_transaction, outcomes, split, DocumentFormat, EmrTarget, EntryRole, EntryStatus,
    PlanSource, WriteCapabilities,
};
use pdex::HistoryItem;
use serde_json::{json, Value};

fn items() -> Vec<HistoryItem> {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/history.json")).unwrap();
    normalise(flatten([fixture]))
}

fn plan() -> PlanSource {
    PlanSource {
        name: "Sandbox Health Plan".into(),
        fhir_base: "https://plan.example/fhir".into(),
        member_patient: "m1".into(),
        record_system: None,
        payer_identifier: Some(("http://plan.example/payer-id".into(), "SBXHP".into())),
    }
}

fn emr() -> EmrTarget {
    EmrTarget {
        patient: "pat-001".into(),
        patient_name: "Ada Okafor".into(),
        user: Some("Practitioner/prac-1".into()),
    }
}

fn pick<'a>(items: &'a [HistoryItem], keys: &[&str]) -> Vec<&'a HistoryItem> {
    keys.iter().map(|k| items.iter().find(|i| i.key == *k).unwrap()).collect()
}

/// The transaction for the fixture plan and EMR, at a fixed time.
fn write(
    items: &[HistoryItem],
    direct: &[&HistoryItem],
    document: &[&HistoryItem],
    format: DocumentFormat,
) -> pdex::writeback::Transaction {
    build_transaction(
        direct,
        document,
        format,
        &plan(),
        &emr(),
        &names(items),
        "2026-11-21T10:00:00Z",
    )
}

fn names(items: &[HistoryItem]) -> HashMap<String, String> {
    let mut names: HashMap<String, String> =
        items.iter().map(|i| (i.key.clone(), i.display.clone())).collect();
    names.insert("Organization/lakeside".into(), "Lakeside Cardiology".into());
    names.insert("Practitioner/dr-berg".into(), "Dr. Jonas Berg".into());
    names
}

fn entry<'a>(tx: &'a pdex::writeback::Transaction, role: &EntryRole) -> &'a fhir::BundleEntry {
    let i = tx.roles.iter().position(|r| r == role).unwrap();
    &tx.bundle.entry[i]
}

#[test]
fn items_are_rewritten_for_the_emr() {
    let items = items();
    let direct = pick(
        &items,
        &[
            "Encounter/enc-1",
            "Condition/cond-text-only",
            "Claim/claim-nested",
            "Procedure/proc-period",
        ],
    );
    let tx = write(&items, &direct, &[], DocumentFormat::BundleAndPdf);
    assert_eq!(tx.bundle.bundle_type, "transaction");
    let encounter = entry(&tx, &EntryRole::Item("Encounter/enc-1".into()));
    let encounter_url = encounter.full_url.clone().unwrap();
    assert!(encounter_url.starts_with("urn:uuid:"));
    let r = encounter.resource.as_ref().unwrap();
    assert!(r.get("id").is_none(), "plan ids are removed");
    assert_eq!(r["subject"]["reference"], "Patient/pat-001");
    // Organisation and practitioner are not written: their names stay, their references go.
    assert_eq!(r["serviceProvider"], json!({"display": "Lakeside Cardiology"}));
    assert_eq!(r["participant"][0]["individual"], json!({"display": "Dr. Jonas Berg"}));
    assert_eq!(r["meta"]["source"], "https://plan.example/fhir");
    assert_eq!(r["meta"]["tag"][0]["code"], "health-plan");
    let identifier = r["identifier"].as_array().unwrap().last().unwrap();
    assert_eq!(
        identifier,
        &json!({"system": "https://plan.example/fhir/Encounter", "value": "enc-1"})
    );
    let request = encounter.request.as_ref().unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.url, "Encounter");
    assert_eq!(
        request.if_none_exist.as_deref(),
        Some("identifier=https%3A%2F%2Fplan.example%2Ffhir%2FEncounter%7Cenc-1")
    );

    // A reference to another selected item points at its fullUrl.
    let condition =
        entry(&tx, &EntryRole::Item("Condition/cond-text-only".into())).resource.as_ref().unwrap();
    assert_eq!(condition["encounter"]["reference"], encounter_url.as_str());
    // Security labels travel with the data.
    let claim =
        entry(&tx, &EntryRole::Item("Claim/claim-nested".into())).resource.as_ref().unwrap();
    assert_eq!(claim["meta"]["security"][0]["code"], "R");
    assert_eq!(claim["patient"]["reference"], "Patient/pat-001");
}

#[test]
fn a_reference_to_an_unselected_item_keeps_its_name() {
    let items = items();
    let direct = pick(&items, &["Condition/cond-text-only"]);
    let tx = write(&items, &direct, &[], DocumentFormat::BundleAndPdf);
    let condition = tx.bundle.entry[0].resource.as_ref().unwrap();
    assert_eq!(condition["encounter"], json!({"display": "Office or other outpatient visit"}));
}

#[test]
fn an_existing_plan_identifier_is_not_repeated() {
    let items = items();
    let mut plan = plan();
    plan.record_system = Some("http://plan.example/record".into());
    let direct = pick(&items, &["Condition/cond-two-codings"]);
    let tx = build_transaction(
        &direct,
        &[],
        DocumentFormat::BundleAndPdf,
        &plan,
        &emr(),
        &names(&items),
        "t",
    );
    let ids =
        tx.bundle.entry[0].resource.as_ref().unwrap()["identifier"].as_array().unwrap().clone();
    // The fixture's own identifier has that system but the value c-2, not the id: both are kept.
    assert_eq!(ids.len(), 2);
    assert!(
        ids.contains(&json!({"system": "http://plan.example/record", "value": "cond-two-codings"}))
    );
}

#[test]
fn one_provenance_names_the_plan_as_transmitter_and_source() {
    let items = items();
    let direct = pick(&items, &["Encounter/enc-1", "Immunization/imm-1"]);
    let document = pick(&items, &["ExplanationOfBenefit/eob-1"]);
    let tx = write(&items, &direct, &document, DocumentFormat::BundleAndPdf);
    assert_eq!(tx.roles.iter().filter(|r| **r == EntryRole::Provenance).count(), 1);
    let provenance = entry(&tx, &EntryRole::Provenance).resource.as_ref().unwrap();
    let targets: Vec<&str> = provenance["target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reference"].as_str().unwrap())
        .collect();
    let written: Vec<String> = tx
        .roles
        .iter()
        .zip(&tx.bundle.entry)
        .filter(|(r, _)| matches!(r, EntryRole::Item(_) | EntryRole::Document(_)))
        .map(|(_, e)| e.full_url.clone().unwrap())
        .collect();
    assert_eq!(targets.len(), 3);
    assert!(written.iter().all(|w| targets.contains(&w.as_str())));
    assert_eq!(provenance["recorded"], "2026-11-21T10:00:00Z");
    let transmitter = &provenance["agent"][0];
    assert_eq!(transmitter["type"]["coding"][0]["code"], "transmitter");
    assert_eq!(
        transmitter["type"]["coding"][0]["system"],
        "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type"
    );
    let org_url = entry(&tx, &EntryRole::PlanOrganization).full_url.clone().unwrap();
    assert_eq!(transmitter["who"]["reference"], org_url.as_str());
    assert_eq!(provenance["agent"][1]["who"]["reference"], "Practitioner/prac-1");
    assert_eq!(provenance["entity"][0]["role"], "source");
    assert_eq!(provenance["meta"]["tag"][0]["system"], pdex::writeback::ORIGIN_TAG_SYSTEM);
    // R4 has no Provenance `identifier` search parameter: the retry key is a tag.
    let request = entry(&tx, &EntryRole::Provenance).request.as_ref().unwrap();
    assert!(request.if_none_exist.as_deref().unwrap().starts_with("_tag="), "{request:?}");
    // The plan's Organization is created once, found by its identifier afterwards.
    let org = entry(&tx, &EntryRole::PlanOrganization);
    assert_eq!(
        org.request.as_ref().unwrap().if_none_exist.as_deref(),
        Some("identifier=http%3A%2F%2Fplan.example%2Fpayer-id%7CSBXHP")
    );

    // The same selection again gives the same idempotency keys.
    let again = build_transaction(
        &direct,
        &document,
        DocumentFormat::BundleAndPdf,
        &plan(),
        &emr(),
        &names(&items),
        "2026-11-22T10:00:00Z",
    );
    let key = |t: &pdex::writeback::Transaction, role: &EntryRole| {
        entry(t, role).request.as_ref().unwrap().if_none_exist.clone()
    };
    assert_eq!(key(&tx, &EntryRole::Provenance), key(&again, &EntryRole::Provenance));
}

#[test]
fn the_document_fallback_chain() {
    let items = items();
    let document = pick(&items, &["ExplanationOfBenefit/eob-1", "Claim/claim-nested"]);
    let content_types = |format| {
        let tx = write(&items, &[], &document, format);
        let doc = entry(
            &tx,
            &EntryRole::Document(vec![
                "Claim/claim-nested".into(),
                "ExplanationOfBenefit/eob-1".into(),
            ]),
        )
        .resource
        .clone()
        .unwrap();
        assert_eq!(doc["subject"]["reference"], "Patient/pat-001");
        assert_eq!(doc["status"], "current");
        assert_eq!(
            doc["meta"]["security"][0]["code"], "R",
            "the document carries its items' labels"
        );
        doc["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["attachment"]["contentType"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        DocumentFormat::CHAIN.map(content_types),
        [
            vec!["application/fhir+json".to_owned(), "application/pdf".to_owned()],
            vec!["application/pdf".to_owned()],
            vec!["text/html".to_owned()],
            vec!["text/plain".to_owned()],
        ]
    );
    // The FHIR Bundle inside holds the rewritten resources.
    let tx = write(&items, &[], &document, DocumentFormat::BundleAndPdf);
    let doc = tx.bundle.entry[0].resource.as_ref().unwrap();
    let data = base64::engine::general_purpose::STANDARD
        .decode(doc["content"][0]["attachment"]["data"].as_str().unwrap())
        .unwrap();
    let bundle: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(bundle["type"], "collection");
    assert_eq!(bundle["entry"][0]["resource"]["patient"]["reference"], "Patient/pat-001");
    let pdf = base64::engine::general_purpose::STANDARD
        .decode(doc["content"][1]["attachment"]["data"].as_str().unwrap())
        .unwrap();
    assert!(pdf.starts_with(b"%PDF"));
}

#[test]
fn the_capability_statement_decides_what_is_written() {
    let statement = json!({"rest": [{"mode": "server", "interaction": [{"code": "transaction"}], "resource": [
        {"type": "Condition", "interaction": [{"code": "read"}, {"code": "create"}], "conditionalCreate": true},
        {"type": "Encounter", "interaction": [{"code": "create"}]},
        {"type": "Claim", "interaction": [{"code": "read"}], "conditionalCreate": true}
    ]}]});
    let caps = WriteCapabilities::from_capability_statement(&statement);
    assert!(caps.transaction);
    assert!(caps.writes_idempotently("Condition"));
    assert!(
        !caps.writes_idempotently("Encounter"),
        "no conditional create: a retry could duplicate"
    );
    assert!(!caps.writes_idempotently("Claim"));
    let items = items();
    let chosen = pick(&items, &["Condition/cond-no-date", "Encounter/enc-1", "Claim/claim-nested"]);
    let (direct, document) = split(&chosen, &caps);
    assert_eq!(direct.len(), 1);
    assert_eq!(document.len(), 2);
}

#[test]
fn transaction_responses_are_read_per_entry() {
    let items = items();
    let direct = pick(&items, &["Condition/cond-no-date", "Immunization/imm-1"]);
    let tx = write(&items, &direct, &[], DocumentFormat::BundleAndPdf);
    let response: fhir::Bundle = serde_json::from_value(json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {"status": "201 Created", "location": "Condition/9/_history/1"}},
        {"response": {"status": "200 OK", "location": "Immunization/4/_history/2"}},
        {"response": {"status": "200 OK", "location": "Organization/1/_history/1"}},
        {"response": {"status": "201 Created", "location": "https://ehr.example/fhir/Provenance/77/_history/1"}}
    ]}))
    .unwrap();
    let out = outcomes(&tx, &response);
    assert_eq!(out[0].status, EntryStatus::Created);
    assert_eq!(out[0].reference.as_deref(), Some("Condition/9"));
    assert_eq!(out[1].status, EntryStatus::AlreadyPresent);
    assert_eq!(out[3].reference.as_deref(), Some("Provenance/77"));
}
