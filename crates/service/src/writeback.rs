//! "Add to chart": the selection written into the EMR as one transaction (with Provenance, and
//! a DocumentReference for what the EMR cannot take as resources), all or nothing, safe to
//! retry. The outcome is kept with the launch for the printable summary.

use std::collections::HashMap;
use std::sync::Arc;

use api::{ItemOutcome, OutcomeStatus, WritePreview, WriteResult};
use pdex::writeback::{
    self as wb, EmrTarget, EntryRole, EntryStatus, PlanSource, WriteCapabilities,
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

/// The EMR behind the launch's token (refreshed, and retried once on 401, by `with_emr`).
struct LaunchEmr<'a> {
    state: &'a AppState,
    launch: &'a Arc<Mutex<Launch>>,
}

impl wb::EmrWriter for LaunchEmr<'_> {
    async fn post_bundle(&self, bundle: &fhir::Bundle) -> Result<fhir::Bundle, fhir::FhirError> {
        unwrap_ehr(
            with_emr(self.state, self.launch, |client, token| async move {
                client.transaction(Some(token.expose()), bundle).await
            })
            .await,
        )
    }

    async fn create(
        &self,
        resource: &serde_json::Value,
        if_none_exist: Option<&str>,
    ) -> Result<fhir::client::Created, fhir::FhirError> {
        unwrap_ehr(
            with_emr(self.state, self.launch, |client, token| async move {
                client.create(Some(token.expose()), resource, if_none_exist).await
            })
            .await,
        )
    }
}

/// The EMR's own error back out of `with_emr` (a failed token refresh reads as a 401).
fn unwrap_ehr<T>(result: Result<T, ServiceError>) -> Result<T, fhir::FhirError> {
    result.map_err(|e| match e {
        ServiceError::Ehr(e) => e,
        other => {
            tracing::warn!(error = %other, "EHR access failed during the write");
            fhir::FhirError::Unauthorized { outcome: None }
        }
    })
}

/// Writes the selection the way the EHR takes it (one transaction, parts, batch or single
/// creates; see `pdex::writeback`). Nothing is half-written within a part, the selection of
/// what was not written is kept, and a retry finds what a lost answer had already written.
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
    let access = match (&plan_state.access, &plan_state.member, &plan_state.mismatch) {
        (_, _, Some(mismatch)) => {
            return Err(ServiceError::MemberMismatch(mismatch.message.clone()))
        }
        (Some(access), Some(_), None) => access.clone(),
        _ => return Err(ServiceError::BadRequest("The plan's data is not available.".into())),
    };
    if snapshot.history.as_ref().is_some_and(|h| h.member_patient != access.patient) {
        return Err(ServiceError::BadRequest(
            "The plan's answer changed since the history was loaded. Reload the history and select again.".into(),
        ));
    }
    let (items, chosen) = selection(&snapshot)?;
    let caps = capabilities(state, ehr, &launch).await?;
    let write_plan = plan_write(&items, &chosen, &caps);
    if write_plan.direct.is_empty() && write_plan.document.is_empty() {
        return Err(ServiceError::Write(format!(
            "{} accepts none of the selected kinds of record.",
            ehr.config.name
        )));
    }
    // Whatever the browser sent: the plan's member must still be this patient.
    let patient = crate::plan::emr_patient(state, &launch).await?;
    crate::plan::recheck_member(state, payer, &access, &patient).await?;
    let source = plan_source(payer, &access);
    let target = EmrTarget {
        patient: snapshot.patient_id.clone(),
        patient_name: fhir::display_name(&patient).unwrap_or_else(|| "the patient".into()),
        user: snapshot.fhir_user.as_deref().and_then(|u| fhir::Reference::parse(u).local()),
    };
    let names = names(&items);
    let now = crate::plan::now_rfc3339();
    let ctx = wb::WriteContext { plan: &source, emr: &target, names: &names, now: &now };
    let learned = *ehr.learned_write_limit.lock().unwrap_or_else(|p| p.into_inner());
    let options = wb::WriteOptions {
        mode: caps.mode(),
        max_entries: ehr.config.max_entries_per_request.or(learned),
        ..Default::default()
    };
    let selection = wb::WriteSelection {
        direct: write_plan.direct.clone(),
        document: write_plan.document.clone(),
    };
    let report = wb::write(&LaunchEmr { state, launch: &launch }, &ctx, &selection, options).await;
    if let Some(limit) = report.learned_limit {
        *ehr.learned_write_limit.lock().unwrap_or_else(|p| p.into_inner()) = Some(limit);
    }
    let written_any = report.outcomes.iter().any(|o| o.written());
    if let (Some(failure), false) = (&report.failure, written_any) {
        return Err(write_failure(ehr, &failure.error));
    }
    let notes = write_notes(&ehr.config.name, options, &report, &caps);
    Ok(record(&launch, ehr, payer, &items, &write_plan, &report, notes, &target, &now).await)
}

/// What the clinician should know about how the write went.
fn write_notes(
    ehr: &str,
    options: wb::WriteOptions,
    report: &wb::WriteReport,
    caps: &WriteCapabilities,
) -> Vec<String> {
    let mut notes: Vec<String> = report
        .refused_formats
        .iter()
        .map(|f| format!("{ehr} refused a document with {}; a simpler format was used.", f.label()))
        .collect();
    match options.mode {
        wb::WriteMode::Transaction if report.parts > 1 => notes.push(format!(
            "Written in {} transactions of at most {} entries{}; each part is complete on its own and has its own Provenance.",
            report.parts,
            report.learned_limit.or(options.max_entries).unwrap_or_default(),
            if report.learned_limit.is_some() {
                format!(", because {ehr} refused a larger one")
            } else {
                String::new()
            }
        )),
        wb::WriteMode::Batch | wb::WriteMode::Single => notes.push(format!(
            "{ehr} {}, so each record was written on its own ({}); the Provenance was written after them.",
            if caps.batch { "accepts FHIR batches but not transactions" } else { "accepts neither FHIR transactions nor batches" },
            options.mode.label()
        )),
        _ => {}
    }
    if let Some(failure) = &report.failure {
        let covered = if report.provenance_missing {
            "What is marked written is in the chart, but its Provenance could not be written yet"
        } else {
            "What is marked written is in the chart with its Provenance"
        };
        notes.push(format!(
            "{ehr} stopped answering at request {} ({}). {covered}; the rest stays selected: add it to the chart again, nothing is duplicated.",
            failure.request,
            write_failure_message(ehr, &failure.error)
        ));
    }
    notes
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
    report: &wb::WriteReport,
    notes: Vec<String>,
    target: &EmrTarget,
    now: &str,
) -> WriteResult {
    let base = ehr.config.issuer.as_str().trim_end_matches('/');
    let link = |reference: &Option<String>| reference.as_ref().map(|r| format!("{base}/{r}"));
    let by_key: HashMap<&str, &HistoryItem> = items.iter().map(|i| (i.key.as_str(), i)).collect();
    let mut outcomes = Vec::new();
    let mut provenance = Vec::new();
    let mut document = None;
    let mut answered = std::collections::HashSet::new();
    for entry in report.outcomes.iter().cloned() {
        match entry.role {
            EntryRole::Item(key) => {
                let Some(item) = by_key.get(key.as_str()) else { continue };
                answered.insert(key.clone());
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
            EntryRole::Document(keys) if entry.written() => {
                document = entry.reference.clone();
                for key in keys {
                    let Some(item) = by_key.get(key.as_str()) else { continue };
                    answered.insert(key.clone());
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
            EntryRole::Provenance => provenance.extend(entry.reference),
            _ => {}
        }
    }
    // Items the write never reached (it stopped, or the document was refused in every format).
    for item in plan.direct.iter().chain(&plan.document).filter(|i| !answered.contains(&i.key)) {
        outcomes.push(ItemOutcome {
            key: item.key.clone(),
            display: item.display.clone(),
            category: item.category,
            status: OutcomeStatus::Failed,
            reference: None,
            link: None,
            reason: Some(format!(
                "Not written: {} did not take it this time. It stays selected; try again.",
                ehr.config.name
            )),
        });
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
        document_format: document
            .as_ref()
            .and(report.document_format)
            .map(|f| f.label().to_owned()),
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
