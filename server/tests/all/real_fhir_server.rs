//! The write-back suite against a FHIR server we did not write: Helios FHIR Server (`hfs`,
//! crate helios-hfs 0.2.7, SQLite in memory), validating the sandbox EHR's access tokens
//! through its JWKS, behind a pass-through proxy that injects the failures.
//!
//! Not part of the default test command (hfs takes about an hour to build): run
//! `bash scripts/test-real-fhir-server`, or these tests with `--ignored` once `hfs` is on PATH
//! and `scripts/hfs-data` has prepared its data directory.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::hfs::{self, Hfs};
use common::proxy::{wait_ready, Proxy};
use common::writeback::{
    failure_then_retry, half_way_failure_then_retry, write_read_back_and_rewrite, EmrReader,
};
use common::Driver;
use sandbox::fhir_api::Fault;
use serde_json::{json, Value};

/// The app and sandbox, with Helios as the EHR's FHIR server (seeded with the sandbox
/// EHR's chart), reached through a fault-injecting proxy.
async fn setup() -> (Driver, Arc<Proxy>, Hfs) {
    setup_with(None).await
}

/// [`setup`], with a configured limit of entries per write request.
async fn setup_with(max_entries: Option<usize>) -> (Driver, Arc<Proxy>, Hfs) {
    let (proxy, proxy_url) = Proxy::start().await;
    let driver = Driver::with(
        3600,
        |cli| cli.sandbox_ehr_fhir_base = Some(url::Url::parse(&proxy_url).unwrap()),
        |config| {
            config.ehrs[0].timeout_seconds = 5;
            config.ehrs[0].max_entries_per_request = max_entries;
        },
    )
    .await;
    let ehr = driver.sandbox().ehr_url().to_owned();
    let workspace = common::workspace();
    let log = workspace.join(format!("target/hfs-{}.log", std::process::id()));
    let hfs = hfs::start(&ehr, Some(&proxy_url), &workspace.join("target/hfs-data"), &log).await;
    *proxy.upstream.lock().unwrap() = hfs.url.clone();
    wait_ready(&format!("{proxy_url}/metadata"), Duration::from_secs(10)).await;
    seed(&driver).await;
    (driver, proxy, hfs)
}

/// Copies the sandbox EHR's chart into Helios (PUT, keeping ids), in one transaction.
async fn seed(driver: &Driver) {
    let store = &driver.sandbox().ehr.store;
    let mut entries = Vec::new();
    for resource_type in [
        "Organization",
        "Practitioner",
        "Patient",
        "Coverage",
        "Encounter",
        "Condition",
        "Immunization",
    ] {
        for mut resource in store.search(resource_type, &[]) {
            if let Some(map) = resource.as_object_mut() {
                map.remove("meta");
            }
            let id = resource["id"].as_str().unwrap().to_owned();
            entries.push(json!({"resource": resource, "request": {"method": "PUT", "url": format!("{resource_type}/{id}")}}));
        }
    }
    let reader = EmrReader::new(driver).await;
    let bundle: fhir::Bundle = serde_json::from_value(
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
    )
    .unwrap();
    let response = reader.client.transaction(Some(&reader.token), &bundle).await;
    let response =
        response.unwrap_or_else(|e| panic!("seeding hfs failed: {e} {:?}", e.outcome_text()));
    assert!(response
        .entry
        .iter()
        .all(|e| e.response.as_ref().is_some_and(|r| r.status.starts_with('2'))));
    let patient: Value = reader.read("Patient/pat-001").await;
    assert_eq!(patient["id"], "pat-001");
}

#[tokio::test]
#[ignore = "needs hfs: bash scripts/test-real-fhir-server"]
async fn hfs_fifty_items_written_read_back_and_never_duplicated() {
    let (mut driver, _proxy, _hfs) = setup().await;
    let emr = EmrReader::new(&driver).await;
    write_read_back_and_rewrite(&mut driver, &emr).await;
}

#[tokio::test]
#[ignore = "needs hfs: bash scripts/test-real-fhir-server"]
async fn hfs_a_500_writes_nothing_and_a_retry_succeeds() {
    let (mut driver, proxy, _hfs) = setup().await;
    let emr = EmrReader::new(&driver).await;
    failure_then_retry(&mut driver, &emr, proxy.as_ref(), Fault::Fail500, false).await;
}

#[tokio::test]
#[ignore = "needs hfs: bash scripts/test-real-fhir-server"]
async fn hfs_an_answer_too_late_is_retried_without_duplicates() {
    let (mut driver, proxy, _hfs) = setup().await;
    let emr = EmrReader::new(&driver).await;
    failure_then_retry(
        &mut driver,
        &emr,
        proxy.as_ref(),
        Fault::SlowAfterCommit(Duration::from_secs(8)),
        true,
    )
    .await;
}

#[tokio::test]
#[ignore = "needs hfs: bash scripts/test-real-fhir-server"]
async fn hfs_a_dropped_connection_is_retried_without_duplicates() {
    let (mut driver, proxy, _hfs) = setup().await;
    let emr = EmrReader::new(&driver).await;
    failure_then_retry(&mut driver, &emr, proxy.as_ref(), Fault::DropAfterCommit, true).await;
}

#[tokio::test]
#[ignore = "needs hfs: bash scripts/test-real-fhir-server"]
async fn hfs_split_transactions_of_at_most_eight_entries() {
    let (mut driver, _proxy, _hfs) = setup_with(Some(8)).await;
    let emr = EmrReader::new(&driver).await;
    let result = write_read_back_and_rewrite(&mut driver, &emr).await;
    assert!(result["provenance"].as_array().unwrap().len() >= 7, "{result}");
}

#[tokio::test]
#[ignore = "needs hfs: bash scripts/test-real-fhir-server"]
async fn hfs_a_split_write_failing_half_way_is_completed_by_a_retry_exactly_once() {
    let (mut driver, proxy, _hfs) = setup_with(Some(8)).await;
    let emr = EmrReader::new(&driver).await;
    half_way_failure_then_retry(&mut driver, &emr, proxy.as_ref(), 1).await;
}
