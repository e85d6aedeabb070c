//! The write-back scenarios, run against the sandbox EHR's store and against a real FHIR
//! server (Helios) behind the sandbox's authorization server.

use std::collections::HashMap;

use axum::http::StatusCode;
use sandbox::fhir_api::Fault;
use serde_json::{json, Value};

use super::Driver;

/// Makes the EMR fail on its next transaction.
pub trait FaultInjector {
    fn inject(&self, fault: Fault);
}

impl FaultInjector for super::proxy::Proxy {
    fn inject(&self, fault: Fault) {
        super::proxy::Proxy::inject(self, fault);
    }
}

impl FaultInjector for sandbox::Ehr {
    fn inject(&self, fault: Fault) {
        self.inject_fault(fault);
    }
}

/// Reads the EMR back with a system token (as an auditor would).
pub struct EmrReader {
    pub client: fhir::FhirClient,
    pub token: String,
}

impl EmrReader {
    /// A client-credentials token from the sandbox authorization server, for the app's own client.
    pub async fn new(driver: &Driver) -> Self {
        let token = driver
            .sandbox()
            .ehr
            .auth
            .backend_services_token(
                driver.prepared.state.signing_key.clone(),
                "member-history",
                "system/*.cruds",
            )
            .await
            .unwrap_or_else(|e| panic!("no system token: {e}"));
        let base = url::Url::parse(&driver.sandbox().ehr.fhir_base()).unwrap();
        EmrReader {
            client: fhir::FhirClient::new(
                reqwest::Client::new(),
                base,
                &fhir::http::HttpLimits::default(),
            ),
            token,
        }
    }

    pub async fn all(&self, resource_type: &str) -> Vec<Value> {
        self.client
            .search_all(Some(&self.token), resource_type, &[("_count", "200")], 100)
            .await
            .unwrap()
    }

    pub async fn read(&self, reference: &str) -> Value {
        self.client.read_reference(Some(&self.token), reference).await.unwrap()
    }

    /// How many resources of each type the EMR holds.
    pub async fn counts(&self, types: &[&str]) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for t in types {
            out.insert((*t).to_owned(), self.all(t).await.len());
        }
        out
    }
}

/// How many clinical resources (not the plan's Organization, the document or the
/// Provenance) were added between two counts.
fn clinical_growth(before: &HashMap<String, usize>, after: &HashMap<String, usize>) -> usize {
    const NOT_CLINICAL: [&str; 3] = ["DocumentReference", "Provenance", "Organization"];
    WRITTEN_TYPES.iter().filter(|t| !NOT_CLINICAL.contains(t)).map(|t| after[*t] - before[*t]).sum()
}

pub const WRITTEN_TYPES: &[&str] = &[
    "Encounter",
    "Condition",
    "Procedure",
    "Observation",
    "MedicationDispense",
    "Immunization",
    "AllergyIntolerance",
    "DocumentReference",
    "Provenance",
    "Organization",
];

/// Launches `patient`, asks the plan, loads the history; returns the launch id and the rows.
pub async fn review(driver: &mut Driver, patient: &str) -> (String, Vec<Value>) {
    let (launch, view) = driver.plan_history(patient).await;
    (launch, view["items"].as_array().unwrap().clone())
}

/// Makes exactly `keys` the selection.
pub async fn select_only(driver: &mut Driver, launch: &str, rows: &[Value], keys: &[String]) {
    let all: Vec<String> = rows.iter().map(|r| r["key"].as_str().unwrap().to_owned()).collect();
    let (status, _) = driver
        .server_fn_json(
            "selection",
            &json!({"launch": launch, "keys": all, "selected": false}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, summary) = driver
        .server_fn_json(
            "selection",
            &json!({"launch": launch, "keys": keys, "selected": true}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["selected"].as_u64().unwrap() as usize, keys.len());
}

/// `n` items of the groups the EHR takes as records, plus `claims` claims (they go into a document).
pub fn choose(rows: &[Value], n: usize, claims: usize) -> Vec<String> {
    let record = |r: &&Value| r["category"] != "Claims" && r["in_chart"] == false;
    let mut keys: Vec<String> =
        rows.iter().filter(record).take(n).map(|r| r["key"].as_str().unwrap().to_owned()).collect();
    keys.extend(
        rows.iter()
            .filter(|r| r["category"] == "Claims")
            .take(claims)
            .map(|r| r["key"].as_str().unwrap().to_owned()),
    );
    keys
}

pub async fn add(driver: &mut Driver, launch: &str) -> (StatusCode, Value) {
    driver.server_fn("add_to_chart", &[("launch", launch)]).await
}

/// The EMR's Provenance records written by Member History: ours (one per written part), and
/// the copies of the plan's own records.
pub async fn provenance_in(emr: &EmrReader) -> (Vec<Value>, Vec<Value>) {
    let tagged = |p: &Value, prefix: &str| {
        p.pointer("/meta/tag").and_then(Value::as_array).into_iter().flatten().any(|t| {
            t["system"] == pdex::writeback::WRITE_IDENTIFIER_SYSTEM
                && t["code"].as_str().is_some_and(|c| c.starts_with(prefix))
        })
    };
    let all = emr.all("Provenance").await;
    let ours = all.iter().filter(|p| tagged(p, "provenance-")).cloned().collect();
    let copies = all.iter().filter(|p| tagged(p, "plan-provenance-")).cloned().collect();
    (ours, copies)
}

/// Every written resource is covered by our Provenance (the plan as transmitter, the plan's
/// Provenance copies as sources) and by a copy of the plan's Provenance for it.
pub async fn check_provenance(emr: &EmrReader, result: &Value, written: &[String]) {
    let mut targets: Vec<String> = Vec::new();
    let mut copy_targets: Vec<String> = Vec::new();
    let ours = result["provenance"].as_array().unwrap();
    assert!(!ours.is_empty(), "{result}");
    for reference in ours {
        let provenance = emr.read(reference.as_str().unwrap()).await;
        targets.extend(
            provenance["target"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["reference"].as_str().unwrap().to_owned()),
        );
        assert_eq!(provenance["agent"][0]["type"]["coding"][0]["code"], "transmitter");
        let org = emr.read(provenance["agent"][0]["who"]["reference"].as_str().unwrap()).await;
        assert_eq!(org["name"], "Sandbox Health Plan");
        let entities = provenance["entity"].as_array().unwrap();
        assert!(entities.iter().all(|e| e["role"] == "source"));
        // The plan's own Provenance, carried into the chart, is what ours points at.
        let sources: Vec<&str> = entities
            .iter()
            .filter_map(|e| e.pointer("/what/reference"))
            .filter_map(Value::as_str)
            .collect();
        let only_document = provenance["target"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["reference"].as_str().unwrap().starts_with("DocumentReference/"));
        assert!(
            only_document || !sources.is_empty(),
            "our Provenance points at the plan's: {provenance}"
        );
        for source in sources {
            let copy = emr.read(source).await;
            assert_eq!(copy["agent"][0]["type"]["coding"][0]["code"], "transmitter");
            assert!(copy["identifier"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["system"].as_str().unwrap().ends_with("/Provenance")));
            copy_targets.extend(
                copy["target"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["reference"].as_str().unwrap().to_owned()),
            );
        }
    }
    targets.sort();
    targets.dedup();
    let mut expected = written.to_vec();
    expected.sort();
    assert_eq!(targets, expected, "our Provenance covers exactly what was written");
    let clinical: Vec<&String> =
        written.iter().filter(|r| !r.starts_with("DocumentReference/")).collect();
    assert!(
        clinical.iter().all(|r| copy_targets.contains(r)),
        "the plan's Provenance covers every record"
    );
}

/// Write 50 items (45 as records, 5 claims in a document), read them back, check subject and
/// Provenance; write the same selection again and find nothing duplicated. Returns the write.
pub async fn write_read_back_and_rewrite(driver: &mut Driver, emr: &EmrReader) -> Value {
    let (launch, rows) = review(driver, "pat-001").await;
    let keys = choose(&rows, 45, 5);
    assert_eq!(keys.len(), 50);
    select_only(driver, &launch, &rows, &keys).await;
    let before = emr.counts(WRITTEN_TYPES).await;
    let (ours_before, copies_before) = provenance_in(emr).await;
    let (status, result) = add(driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let outcomes = result["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 50);
    let created = outcomes.iter().filter(|o| o["status"] == "Created").count();
    let in_document = outcomes.iter().filter(|o| o["status"] == "InDocument").count();
    assert_eq!((created, in_document), (45, 5), "{result}");

    // Read every written record back: it is the EMR patient's and says where it came from.
    let plan_base = driver.sandbox().plan_fhir_base().to_owned();
    let mut references = Vec::new();
    for o in outcomes.iter().filter(|o| o["status"] == "Created") {
        let reference = o["reference"].as_str().unwrap();
        let resource = emr.read(reference).await;
        let subject = resource.get("subject").or_else(|| resource.get("patient")).unwrap();
        assert_eq!(subject["reference"], "Patient/pat-001", "{reference}");
        assert_eq!(resource["meta"]["source"], plan_base.as_str());
        let plan_id = o["key"].as_str().unwrap().split_once('/').unwrap().1;
        assert!(
            resource["identifier"].as_array().unwrap().iter().any(|i| i["value"] == plan_id),
            "{resource}"
        );
        references.push(reference.to_owned());
    }
    let document = result["document"].as_str().unwrap().to_owned();
    let doc = emr.read(&document).await;
    assert_eq!(doc["subject"]["reference"], "Patient/pat-001");
    let types: Vec<&str> = doc["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attachment"]["contentType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["application/fhir+json", "application/pdf"]);
    references.push(document.clone());
    check_provenance(emr, &result, &references).await;

    let after = emr.counts(WRITTEN_TYPES).await;
    let (ours_after, copies_after) = provenance_in(emr).await;
    let ours_written = result["provenance"].as_array().unwrap().len();
    assert_eq!(ours_after.len(), ours_before.len() + ours_written);
    assert!(copies_after.len() > copies_before.len());
    assert_eq!(after["DocumentReference"], before["DocumentReference"] + 1);
    let grew = clinical_growth(&before, &after);
    assert_eq!(grew, 45);

    // The same selection again: everything is found, nothing is added.
    select_only(driver, &launch, &rows, &keys).await;
    let (status, again) = add(driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let outcomes = again["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.iter().filter(|o| o["status"] == "AlreadyPresent").count(), 45, "{again}");
    assert_eq!(
        again["provenance"], result["provenance"],
        "the same Provenance is found, not a second one"
    );
    assert_eq!(emr.counts(WRITTEN_TYPES).await, after);
    result
}

/// The EMR fails after `passes` write requests went through (a split write, a batch, single
/// creates): what was written is whole and reported, what was not stays selected, and a
/// retry writes every item exactly once, each covered by Provenance.
pub async fn half_way_failure_then_retry(
    driver: &mut Driver,
    emr: &EmrReader,
    injector: &dyn FaultInjector,
    passes: usize,
) {
    let (launch, rows) = review(driver, "pat-004").await;
    let keys = choose(&rows, 20, 0);
    select_only(driver, &launch, &rows, &keys).await;
    let before = emr.counts(WRITTEN_TYPES).await;
    for _ in 0..passes {
        injector.inject(Fault::Pass);
    }
    injector.inject(Fault::Fail500);
    let (status, first) = add(driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "part was written: {first}");
    let outcomes = first["outcomes"].as_array().unwrap();
    let written = outcomes.iter().filter(|o| o["status"] == "Created").count();
    let failed = outcomes.iter().filter(|o| o["status"] == "Failed").count();
    assert!(written > 0 && failed > 0 && written + failed == 20, "{first}");
    assert!(first["notes"].to_string().contains("nothing is duplicated"), "{first}");
    // What failed is still selected; what was written is not.
    let (_, view) = driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    assert_eq!(view["selected"].as_array().unwrap().len(), failed, "{view}");
    let mid = emr.counts(WRITTEN_TYPES).await;
    assert_eq!(clinical_growth(&before, &mid), written, "whole parts, nothing half-written");

    // The retry: the rest is written, nothing twice.
    select_only(driver, &launch, &rows, &keys).await;
    let (status, retry) = add(driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    let outcomes = retry["outcomes"].as_array().unwrap();
    assert_eq!(
        outcomes.iter().filter(|o| o["status"] == "AlreadyPresent").count(),
        written,
        "{retry}"
    );
    assert_eq!(outcomes.iter().filter(|o| o["status"] == "Created").count(), failed, "{retry}");
    let after = emr.counts(WRITTEN_TYPES).await;
    assert_eq!(clinical_growth(&before, &after), 20, "every item exactly once");
    let references: Vec<String> =
        outcomes.iter().map(|o| o["reference"].as_str().unwrap().to_owned()).collect();
    check_provenance(emr, &retry, &references).await;
    // A third time adds nothing at all.
    select_only(driver, &launch, &rows, &keys).await;
    let (status, _) = add(driver, &launch).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(emr.counts(WRITTEN_TYPES).await, after);
}

/// The EMR fails as `fault` says: a clear message, nothing half-written, the selection kept,
/// and a retry that succeeds without duplicates.
pub async fn failure_then_retry(
    driver: &mut Driver,
    emr: &EmrReader,
    injector: &dyn FaultInjector,
    fault: Fault,
    commits: bool,
) {
    let (launch, rows) = review(driver, "pat-002").await;
    let keys = choose(&rows, 10, 0);
    select_only(driver, &launch, &rows, &keys).await;
    let before = emr.counts(WRITTEN_TYPES).await;
    injector.inject(fault);
    let (status, error) = add(driver, &launch).await;
    assert_ne!(status, StatusCode::OK, "{error}");
    assert_eq!(error["code"], "ehr_unavailable", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("selection is kept"), "{message}");
    assert!(message.contains("Sandbox EHR") || message.contains("EHR"), "{message}");
    let during = emr.counts(WRITTEN_TYPES).await;
    if commits {
        // The EMR wrote everything before its answer was lost: all of it, not part.
        assert_eq!(clinical_growth(&before, &during), 10);
        assert!(during["Provenance"] > before["Provenance"]);
    } else {
        assert_eq!(during, before, "nothing half-written");
    }
    // The selection is still there.
    let (_, view) = driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    assert_eq!(view["selected"].as_array().unwrap().len(), 10);
    // Retry: success, and exactly one copy of everything.
    let (status, result) = add(driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let after = emr.counts(WRITTEN_TYPES).await;
    if commits {
        assert_eq!(after["Provenance"], during["Provenance"], "no second Provenance");
    }
    let grew = clinical_growth(&before, &after);
    assert_eq!(grew, 10);
    let expected = if commits { "AlreadyPresent" } else { "Created" };
    assert!(
        result["outcomes"].as_array().unwrap().iter().all(|o| o["status"] == expected),
        "{result}"
    );
}
