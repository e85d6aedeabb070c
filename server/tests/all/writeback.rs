//! Writing the selection into the sandbox EHR: one transaction with Provenance, never
//! duplicated, nothing half-written when the EHR fails, and the DocumentReference fallbacks.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use axum::http::StatusCode;
use common::writeback::{
    add, choose, failure_then_retry, half_way_failure_then_retry, review, select_only,
    write_read_back_and_rewrite, EmrReader,
};
use common::Driver;
use sandbox::fhir_api::Fault;

/// The router and sandbox, with the EHR's deadline at 2 seconds.
async fn driver(cli: impl FnOnce(&mut common::Args)) -> Driver {
    Driver::with(3600, cli, |config| config.ehrs[0].timeout_seconds = 2).await
}

#[tokio::test]
async fn fifty_items_written_read_back_and_never_duplicated() {
    let mut driver = driver(|_| {}).await;
    let emr = EmrReader::new(&driver).await;
    write_read_back_and_rewrite(&mut driver, &emr).await;
}

#[tokio::test]
async fn an_ehr_500_writes_nothing_and_a_retry_succeeds() {
    let mut driver = driver(|_| {}).await;
    let emr = EmrReader::new(&driver).await;
    let ehr = driver.sandbox().ehr.clone();
    failure_then_retry(&mut driver, &emr, ehr.as_ref(), Fault::Fail500, false).await;
}

#[tokio::test]
async fn an_ehr_that_answers_too_late_is_retried_without_duplicates() {
    let mut driver = driver(|_| {}).await;
    let emr = EmrReader::new(&driver).await;
    let ehr = driver.sandbox().ehr.clone();
    failure_then_retry(
        &mut driver,
        &emr,
        ehr.as_ref(),
        Fault::SlowAfterCommit(Duration::from_secs(4)),
        true,
    )
    .await;
}

#[tokio::test]
async fn a_connection_dropped_mid_answer_is_retried_without_duplicates() {
    let mut driver = driver(|_| {}).await;
    let emr = EmrReader::new(&driver).await;
    let ehr = driver.sandbox().ehr.clone();
    failure_then_retry(&mut driver, &emr, ehr.as_ref(), Fault::DropAfterCommit, true).await;
}

#[tokio::test]
async fn what_the_capability_statement_refuses_goes_into_a_document_in_the_best_format_accepted() {
    // The EHR takes Conditions only, and documents only as plain text.
    let mut driver = driver(|cli| {
        cli.sandbox_ehr_writable = Some(
            ["Condition", "Organization", "Provenance", "DocumentReference"]
                .map(str::to_owned)
                .to_vec(),
        );
        cli.sandbox_ehr_attachments = Some(vec!["text/plain".into()]);
    })
    .await;
    let emr = EmrReader::new(&driver).await;
    let (launch, rows) = review(&mut driver, "pat-001").await;
    let keys = choose(&rows, 12, 3);
    select_only(&mut driver, &launch, &rows, &keys).await;
    let (status, preview) = driver.server_fn("write_preview", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert!(!preview["in_document"].as_array().unwrap().is_empty());
    let (status, result) = add(&mut driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let outcomes = result["outcomes"].as_array().unwrap();
    let conditions = keys.iter().filter(|k| k.starts_with("Condition/")).count();
    assert_eq!(outcomes.iter().filter(|o| o["status"] == "Created").count(), conditions);
    assert_eq!(
        outcomes.iter().filter(|o| o["status"] == "InDocument").count(),
        keys.len() - conditions
    );
    assert_eq!(result["document_format"], "plain text");
    let notes = result["notes"].to_string();
    assert!(notes.contains("FHIR Bundle and PDF") && notes.contains("HTML"), "{notes}");
    let doc = emr.read(result["document"].as_str().unwrap()).await;
    assert_eq!(doc["content"][0]["attachment"]["contentType"], "text/plain");
    let provenance = result["provenance"].as_array().unwrap();
    assert_eq!(provenance.len(), 1);
    assert_eq!(
        emr.read(provenance[0].as_str().unwrap()).await["target"].as_array().unwrap().len(),
        conditions + 1
    );
}

#[tokio::test]
async fn an_ehr_capping_conditional_entries_gets_split_self_contained_transactions() {
    let mut driver = driver(|cli| cli.sandbox_ehr_max_conditional_entries = Some(8)).await;
    let emr = EmrReader::new(&driver).await;
    let result = write_read_back_and_rewrite(&mut driver, &emr).await;
    let parts = result["provenance"].as_array().unwrap().len();
    assert!(parts >= 7, "50 items in parts of at most 8 entries: {parts} parts");
    let notes = result["notes"].to_string();
    assert!(
        notes.contains("transactions of at most") && notes.contains("refused a larger one"),
        "{notes}"
    );
    // The refused transaction was not taken for a refused document format.
    assert_eq!(result["document_format"], "FHIR Bundle and PDF");
    assert!(!notes.contains("refused a document"), "{notes}");
    // The limit is remembered: the next write splits at once.
    let (launch, rows) = review(&mut driver, "pat-002").await;
    select_only(&mut driver, &launch, &rows, &choose(&rows, 9, 0)).await;
    let (status, next) = add(&mut driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert!(!next["notes"].to_string().contains("refused a larger one"), "{next}");
}

#[tokio::test]
async fn a_configured_entry_limit_splits_without_a_refusal() {
    let mut driver =
        Driver::with(3600, |_| {}, |config| config.ehrs[0].max_entries_per_request = Some(12))
            .await;
    let emr = EmrReader::new(&driver).await;
    let result = write_read_back_and_rewrite(&mut driver, &emr).await;
    assert!(result["provenance"].as_array().unwrap().len() >= 5, "{result}");
    assert!(!result["notes"].to_string().contains("refused a larger one"), "{result}");
}

#[tokio::test]
async fn an_ehr_without_transactions_gets_a_batch() {
    let mut driver = driver(|cli| cli.sandbox_ehr_no_transactions = true).await;
    let emr = EmrReader::new(&driver).await;
    let result = write_read_back_and_rewrite(&mut driver, &emr).await;
    assert!(
        result["notes"].to_string().contains("accepts FHIR batches but not transactions"),
        "{result}"
    );
}

#[tokio::test]
async fn an_ehr_without_transactions_or_batches_gets_single_conditional_creates() {
    let mut driver = driver(|cli| {
        cli.sandbox_ehr_no_transactions = true;
        cli.sandbox_ehr_no_batch = true;
    })
    .await;
    let emr = EmrReader::new(&driver).await;
    let result = write_read_back_and_rewrite(&mut driver, &emr).await;
    assert!(
        result["notes"].to_string().contains("neither FHIR transactions nor batches"),
        "{result}"
    );
}

#[tokio::test]
async fn a_split_write_failing_half_way_is_completed_by_a_retry_exactly_once() {
    let mut driver = driver(|cli| cli.sandbox_ehr_max_conditional_entries = Some(8)).await;
    let emr = EmrReader::new(&driver).await;
    let ehr = driver.sandbox().ehr.clone();
    // The first transaction is refused for its size (no fault used), the first part passes,
    // the second fails.
    half_way_failure_then_retry(&mut driver, &emr, ehr.as_ref(), 1).await;
}

#[tokio::test]
async fn a_batch_write_failing_half_way_is_completed_by_a_retry_exactly_once() {
    let mut driver = driver(|cli| cli.sandbox_ehr_no_transactions = true).await;
    let emr = EmrReader::new(&driver).await;
    let ehr = driver.sandbox().ehr.clone();
    // The plan Organization's batch and the first level pass; the next batch fails.
    half_way_failure_then_retry(&mut driver, &emr, ehr.as_ref(), 2).await;
}

#[tokio::test]
async fn single_creates_failing_half_way_are_completed_by_a_retry_exactly_once() {
    let mut driver = driver(|cli| {
        cli.sandbox_ehr_no_transactions = true;
        cli.sandbox_ehr_no_batch = true;
    })
    .await;
    let emr = EmrReader::new(&driver).await;
    let ehr = driver.sandbox().ehr.clone();
    half_way_failure_then_retry(&mut driver, &emr, ehr.as_ref(), 6).await;
}

#[tokio::test]
async fn written_items_are_marked_in_chart_and_the_plan_hears_of_it() {
    let mut driver = driver(|_| {}).await;
    let (launch, rows) = review(&mut driver, "pat-003").await;
    let keys = choose(&rows, 5, 0);
    select_only(&mut driver, &launch, &rows, &keys).await;
    let (status, body) = add(&mut driver, &launch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, view) = driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    let items = view["items"].as_array().unwrap();
    for key in &keys {
        let row = items.iter().find(|r| r["key"] == key.as_str()).unwrap();
        assert_eq!(row["in_chart"], true);
    }
    assert!(view["selected"].as_array().unwrap().is_empty());
    // The plan was told its suggestion was taken up.
    let feedback = driver.sandbox().plan.feedback();
    assert_eq!(feedback.len(), 1);
    assert_eq!(feedback[0]["outcome"], "accepted");
    // The summary survives a reload.
    let (_, results) = driver.server_fn("write_results", &[("launch", &launch)]).await;
    assert_eq!(results.as_array().unwrap().len(), 1);
}
