//! "Add to chart": the selection written into the EMR as one transaction (with Provenance, and
//! a DocumentReference for what the EMR cannot take as resources), all or nothing, safe to
//! retry. The outcome is kept with the launch for the printable summary.

use std::collections::HashMap;
use std::sync::Arc;

use api::{ItemOutcome, OutcomeStatus, WritePreview, WriteResult};
use pdex::writeback::{
    self as wb, DocumentFormat, EmrTarget, EntryRole, EntryStatus, PlanSource, WriteCapabilities,
};
use pdex::{Category, HistoryItem};
use tokio::sync::Mutex;
use tower_sessions::Session;

use crate::context::owned_launch;
use crate::emr::with_emr;
use crate::error::ServiceError;
use crate::launches::Launch;
use crate::state::{AppState, EhrRuntime, PayerRuntime};

const CAPABILITY_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the EHR accepts from this launch: its CapabilityStatement (read once an hour), narrowed
/// to the types the launch's granted scopes allow creating.
async fn capabilities(
    state: &AppState,
    ehr: &EhrRuntime,
    launch: &Arc<Mutex<Launch>>,
) -> Result<WriteCapabilities, ServiceError> {
    let cached = ehr.write_capabilities.lock().await.clone();
    let mut caps = match cached {
        Some((at, caps)) if at.elapsed() < CAPABILITY_TTL => caps,
        _ => {
            let statement = with_emr(state, launch, |client, token| async move {
                client.capabilities(Some(token.expose())).await
            })
            .await?;
            let caps = WriteCapabilities::from_capability_statement(&statement);
            *ehr.write_capabilities.lock().await = Some((std::time::Instant::now(), caps.clone()));
            caps
        }
    };
    let granted = smart::scopes::ScopeSet::parse(&launch.lock().await.tokens.scope);
    caps.types.retain(|resource_type, _| {
        !granted.grants(resource_type, smart::scopes::Permission::Create).is_empty()
    });
    Ok(caps)
}

/// The selected items, in list order.
fn selection(launch: &Launch) -> Result<(Arc<Vec<HistoryItem>>, Vec<usize>), ServiceError> {
    let history = launch
        .history
        .as_ref()
        .ok_or_else(|| ServiceError::BadRequest("Load the plan's history first.".into()))?;
    let chosen: Vec<usize> = history
        .items
        .iter()
        .enumerate()
        .filter(|(_, i)| history.selected.contains(&i.key))
        .map(|(n, _)| n)
        .collect();
    if chosen.is_empty() {
        return Err(ServiceError::BadRequest(
            "Select at least one item to add to the chart.".into(),
        ));
    }
    Ok((history.items.clone(), chosen))
}

fn per_group(items: &[&HistoryItem]) -> Vec<(Category, usize)> {
    Category::ALL
        .into_iter()
        .map(|c| (c, items.iter().filter(|i| i.category == c).count()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// How the selection would be written.
struct Plan<'a> {
    direct: Vec<&'a HistoryItem>,
    document: Vec<&'a HistoryItem>,
    not_writable: Vec<&'a HistoryItem>,
}

fn plan_write<'a>(
    items: &'a [HistoryItem],
    chosen: &[usize],
    caps: &WriteCapabilities,
) -> Plan<'a> {
    let chosen: Vec<&HistoryItem> = chosen.iter().map(|&i| &items[i]).collect();
    let (direct, rest) = wb::split(&chosen, caps);
    let (document, not_writable) = if caps.writes_idempotently("DocumentReference") {
        (rest, Vec::new())
    } else {
        (Vec::new(), rest)
    };
    Plan { direct, document, not_writable }
}

/// What "Add to chart" will do.
pub async fn preview(
    state: &AppState,
    session: &Session,
    launch_id: &str,
) -> Result<WritePreview, ServiceError> {
    let launch = owned_launch(state, session, launch_id).await?;
    let snapshot = launch.lock().await.clone();
    let ehr = state
        .ehr(&snapshot.ehr_id)
        .ok_or_else(|| ServiceError::Internal("EHR no longer configured".into()))?;
    let (items, chosen) = selection(&snapshot)?;
    let caps = capabilities(state, ehr, &launch).await?;
    let plan = plan_write(&items, &chosen, &caps);
    Ok(WritePreview {
        ehr: ehr.config.name.clone(),
        total: chosen.len(),
        as_records: per_group(&plan.direct),
        in_document: per_group(&plan.document),
        not_writable: per_group(&plan.not_writable),
    })
}

/// Writes the selection. On failure nothing is half-written (one transaction) and the
/// selection is untouched; a retry finds what a lost answer had already written.
pub async fn write(
    state: &AppState,
    session: &Session,
    launch_id: &str,
) -> Result<WriteResult, ServiceError> {
    let launch = owned_launch(state, session, launch_id).await?;
    let snapshot = launch.lock().await.clone();
    let ehr = state
        .ehr(&snapshot.ehr_id)
        .ok_or_else(|| ServiceError::Internal("EHR no longer configured".into()))?;
    let plan_state = snapshot
        .plan
        .clone()
        .ok_or_else(|| ServiceError::BadRequest("Ask the plan first.".into()))?;
    let payer = state
        .payer(&plan_state.payer_id)
        .ok_or_else(|| ServiceError::Internal("payer no longer configured".into()))?;
    let access = plan_state
        .access
        .clone()
        .ok_or_else(|| ServiceError::BadRequest("The plan's data is not available.".into()))?;
    let (items, chosen) = selection(&snapshot)?;
    let caps = capabilities(state, ehr, &launch).await?;
    if !caps.transaction {
        return Err(ServiceError::Write(format!(
            "{} does not accept FHIR transactions, so Member History cannot write all-or-nothing. Ask your EHR administrator.",
            ehr.config.name
        )));
    }
    let write_plan = plan_write(&items, &chosen, &caps);
    if write_plan.direct.is_empty() && write_plan.document.is_empty() {
        return Err(ServiceError::Write(format!(
            "{} accepts none of the selected kinds of record.",
            ehr.config.name
        )));
    }
    let patient_id = snapshot.patient_id.clone();
    let patient = with_emr(state, &launch, |client, token| {
        let id = patient_id.clone();
        async move { client.read(Some(token.expose()), "Patient", &id).await }
    })
    .await?;
    let source = plan_source(payer, &access);
    let target = EmrTarget {
        patient: snapshot.patient_id.clone(),
        patient_name: fhir::display_name(&patient).unwrap_or_else(|| "the patient".into()),
        user: snapshot.fhir_user.as_deref().and_then(|u| fhir::Reference::parse(u).local()),
    };
    let names = names(&items);
    let now = crate::plan::now_rfc3339();
    let formats: &[DocumentFormat] = if write_plan.document.is_empty() {
        &DocumentFormat::CHAIN[..1]
    } else {
        &DocumentFormat::CHAIN
    };
    let mut notes = Vec::new();
    for (attempt, format) in formats.iter().enumerate() {
        let transaction = wb::build_transaction(
            &write_plan.direct,
            &write_plan.document,
            *format,
            &source,
            &target,
            &names,
            &now,
        );
        let sent = with_emr(state, &launch, |client, token| {
            let bundle = transaction.bundle.clone();
            async move { client.transaction(Some(token.expose()), &bundle).await }
        })
        .await;
        match sent {
            Ok(response) => {
                let result = record(
                    &launch,
                    ehr,
                    payer,
                    &items,
                    &write_plan,
                    &transaction,
                    &response,
                    *format,
                    notes,
                    &target,
                    &now,
                )
                .await;
                return Ok(result);
            }
            // The EHR refused the content (likely the document's format): try the next one.
            Err(ServiceError::Ehr(e))
                if matches!(e.status(), Some(400 | 415 | 422)) && attempt + 1 < formats.len() =>
            {
                tracing::info!(format = format.label(), error = %e, "EHR refused the document format; trying the next");
                notes.push(format!(
                    "{} refused a document with {}; a simpler format was used.",
                    ehr.config.name,
                    format.label()
                ));
            }
            Err(ServiceError::Ehr(e)) => return Err(write_failure(ehr, &e)),
            Err(other) => return Err(other),
        }
    }
    Err(ServiceError::Write(format!("{} refused every document format.", ehr.config.name)))
}

fn plan_source(payer: &PayerRuntime, access: &crate::plan::PlanAccess) -> PlanSource {
    PlanSource {
        name: payer.config.name.clone(),
        fhir_base: access.fhir_base.as_str().trim_end_matches('/').to_owned(),
        member_patient: access.patient.clone(),
        record_system: payer.config.record_identifier_system.clone(),
        payer_identifier: payer
            .config
            .payor_identifiers
            .first()
            .and_then(|p| p.split_once('|'))
            .map(|(s, v)| (s.to_owned(), v.to_owned())),
    }
}

/// Names for references that cannot follow their items into the EMR.
fn names(items: &[HistoryItem]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for item in items {
        names.insert(item.key.clone(), item.display.clone());
        for party in [item.organization.as_ref(), item.practitioner.as_ref()].into_iter().flatten()
        {
            if let (Some(reference), Some(name)) = (&party.reference, &party.name) {
                names.insert(reference.clone(), name.clone());
            }
        }
    }
    names
}

/// A clear message for a failed write: what happened and that retrying is safe.
fn write_failure(ehr: &EhrRuntime, e: &fhir::FhirError) -> ServiceError {
    tracing::warn!(ehr = %ehr.config.id, error = %e, "write-back failed");
    ServiceError::Write(write_failure_message(&ehr.config.name, e))
}

fn write_failure_message(name: &str, e: &fhir::FhirError) -> String {
    match e {
        fhir::FhirError::Timeout | fhir::FhirError::Transport(_) => format!(
            "{name} did not confirm the write. Your selection is kept: try again. Anything {name} did write is recognised and not duplicated."
        ),
        e if e.status() == Some(413) => format!(
            "{name} refused the write as too large (HTTP 413). Nothing was written and your selection is kept: add it to the chart in smaller parts."
        ),
        e if e.is_transient() => format!(
            "{name} could not write right now ({e}). Nothing was written and your selection is kept: try again."
        ),
        e => format!(
            "{name} refused the write ({}){}. Nothing was written and your selection is kept.",
            e.status().map(|s| format!("HTTP {s}")).unwrap_or_else(|| e.to_string()),
            e.outcome_text().map(|t| format!(": {t}")).unwrap_or_default()
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn record(
    launch: &Arc<Mutex<Launch>>,
    ehr: &EhrRuntime,
    payer: &PayerRuntime,
    items: &[HistoryItem],
    plan: &Plan<'_>,
    transaction: &wb::Transaction,
    response: &fhir::Bundle,
    format: DocumentFormat,
    notes: Vec<String>,
    target: &EmrTarget,
    now: &str,
) -> WriteResult {
    let base = ehr.config.issuer.as_str().trim_end_matches('/');
    let link = |reference: &Option<String>| reference.as_ref().map(|r| format!("{base}/{r}"));
    let by_key: HashMap<&str, &HistoryItem> = items.iter().map(|i| (i.key.as_str(), i)).collect();
    let mut outcomes = Vec::new();
    let mut provenance = None;
    let mut document = None;
    for entry in wb::outcomes(transaction, response) {
        match entry.role {
            EntryRole::Item(key) => {
                let Some(item) = by_key.get(key.as_str()) else { continue };
                let (status, reason) = match &entry.status {
                    EntryStatus::Created => (OutcomeStatus::Created, None),
                    EntryStatus::AlreadyPresent => (OutcomeStatus::AlreadyPresent, None),
                    EntryStatus::Other(s) => {
                        (OutcomeStatus::Failed, Some(format!("The EHR answered {s}")))
                    }
                };
                outcomes.push(ItemOutcome {
                    key,
                    display: item.display.clone(),
                    category: item.category,
                    status,
                    link: link(&entry.reference),
                    reference: entry.reference,
                    reason,
                });
            }
            EntryRole::Document(keys) => {
                document = entry.reference.clone();
                for key in keys {
                    let Some(item) = by_key.get(key.as_str()) else { continue };
                    outcomes.push(ItemOutcome {
                        key,
                        display: item.display.clone(),
                        category: item.category,
                        status: OutcomeStatus::InDocument,
                        link: link(&entry.reference),
                        reference: entry.reference.clone(),
                        reason: None,
                    });
                }
            }
            EntryRole::Provenance => provenance = entry.reference,
            EntryRole::PlanOrganization => {}
        }
    }
    for item in &plan.not_writable {
        outcomes.push(ItemOutcome {
            key: item.key.clone(),
            display: item.display.clone(),
            category: item.category,
            status: OutcomeStatus::Failed,
            reference: None,
            link: None,
            reason: Some(format!(
                "{} accepts neither {} records nor documents.",
                ehr.config.name, item.resource_type
            )),
        });
    }
    let result = WriteResult {
        ehr: ehr.config.name.clone(),
        plan: payer.config.name.clone(),
        patient: target.patient_name.clone(),
        written_at: now.to_owned(),
        outcomes,
        provenance,
        document_format: document.as_ref().map(|_| format.label().to_owned()),
        document,
        notes,
    };
    tracing::info!(ehr = %ehr.config.id, written = result.outcomes.len(), "write-back done");

    // What is now in the chart is marked so and no longer selected.
    let feedback_card = {
        let mut guard = launch.lock().await;
        if let Some(history) = guard.history.as_mut() {
            let written: HashMap<&str, &Option<String>> = result
                .outcomes
                .iter()
                .filter(|o| o.status != OutcomeStatus::Failed)
                .map(|o| (o.key.as_str(), &o.reference))
                .collect();
            let items = Arc::make_mut(&mut history.items);
            for item in items.iter_mut() {
                if let Some(reference) = written.get(item.key.as_str()) {
                    item.duplicate_of =
                        reference.as_ref().cloned().or_else(|| Some("written".into()));
                    history.selected.remove(&item.key);
                }
            }
        }
        guard.writes.push(result.clone());
        guard.plan.as_ref().and_then(|p| {
            let index = p.cards.iter().position(|c| {
                c.feedback_allowed && c.card.suggestions.iter().any(|s| s.uuid.is_some())
            })?;
            (!p.feedback.contains_key(&index)).then(|| {
                (index, p.cards[index].card.suggestions.iter().find_map(|s| s.uuid.clone()))
            })
        })
    };
    // Tell the plan its suggestion was taken up (best effort: the write has happened).
    if let Some((index, Some(suggestion))) = feedback_card {
        if let Err(e) = crate::plan::feedback_for_launch(
            launch,
            payer,
            index,
            crate::plan::FeedbackInput::Accept { suggestion },
        )
        .await
        {
            tracing::warn!(error = %e, "feedback after write-back failed");
        }
    }
    result
}

/// The writes of a launch, newest last (for the printable summary after a reload).
pub async fn results(
    state: &AppState,
    session: &Session,
    launch_id: &str,
) -> Result<Vec<WriteResult>, ServiceError> {
    let launch = owned_launch(state, session, launch_id).await?;
    let writes = launch.lock().await.writes.clone();
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_failures_say_what_happened_and_what_to_do() {
        let status = |status: u16| fhir::FhirError::Status { status, outcome: None };
        let too_large = write_failure_message("Sandbox EHR", &status(413));
        assert!(too_large.contains("too large") && too_large.contains("smaller parts"));
        assert!(write_failure_message("Sandbox EHR", &status(503)).contains("try again"));
        let timeout = write_failure_message("Sandbox EHR", &fhir::FhirError::Timeout);
        assert!(timeout.contains("not duplicated"));
        let refused = write_failure_message("Sandbox EHR", &status(422));
        assert!(refused.contains("HTTP 422") && refused.contains("selection is kept"));
    }
}
