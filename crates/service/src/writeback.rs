//! "Add to chart": the selection written into the EMR as one transaction (with Provenance, and
//! a DocumentReference for what the EMR cannot take as resources), all or nothing, safe to
//! retry. The outcome is kept with the launch for the printable summary.

use std::collections::{HashMap, HashSet};

use api::{ItemOutcome, OutcomeStatus, WritePreview, WriteResult};
use pdex::writeback::{
    self as wb, EmrTarget, EntryRole, EntryStatus, PlanSource, WriteCapabilities,
};
use pdex::{Category, HistoryItem};
use store::AuditOutcome;

use crate::clock::now_rfc3339;
use crate::emr::Emr;
use crate::error::{write_failure_message, Refusal, ServiceError, WriteFailure};
use crate::launch_state::{Launch, PlanAccess};
use crate::owned::OwnedLaunch;
use crate::plan::access::{confirmed_access, recheck_member};
use crate::plan::feedback::{feedback_for_launch, FeedbackInput};
use crate::state::{EhrRuntime, PayerRuntime};

const CAPABILITY_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the EHR accepts from this launch: its CapabilityStatement (read once an hour), narrowed
/// to the types the launch's granted scopes allow creating.
async fn capabilities(owned: &OwnedLaunch) -> Result<WriteCapabilities, ServiceError> {
    let ehr = owned.ehr();
    let cached = ehr.write_capabilities.lock().await.clone();
    let mut caps = match cached {
        Some((at, caps)) if at.elapsed() < CAPABILITY_TTL => caps,
        _ => {
            let statement = owned
                .emr()
                .call(|c, t| async move { c.capabilities(Some(t.expose())).await })
                .await?;
            let caps = WriteCapabilities::from_capability_statement(&statement);
            *ehr.write_capabilities.lock().await = Some((std::time::Instant::now(), caps.clone()));
            caps
        }
    };
    let granted = smart::scopes::ScopeSet::parse(&owned.snapshot().await.tokens.scope);
    caps.types.retain(|resource_type, _| {
        !granted.grants(resource_type, smart::scopes::Permission::Create).is_empty()
    });
    Ok(caps)
}

/// The items `keys` names (all the selection, without), as the review shows them now, in
/// list order; their indexes in that list.
async fn selection(
    owned: &OwnedLaunch,
    launch: &Launch,
    keys: Option<&WriteJob>,
) -> Result<(Vec<HistoryItem>, Vec<usize>), ServiceError> {
    let history = launch.history.as_ref().ok_or(Refusal::LoadHistoryFirst)?;
    if history.view_only {
        return Err(Refusal::ViewOnly.into());
    }
    let chosen: HashSet<&str> = match keys {
        // The history was read again since the write was asked for: its keys are not these.
        Some(job) if job.items_id != history.items_id => return Err(Refusal::AnswerChanged.into()),
        Some(job) => job.keys.iter().map(String::as_str).collect(),
        None => history.selected.iter().map(String::as_str).collect(),
    };
    let items: Vec<HistoryItem> = owned
        .items(history)
        .await?
        .iter()
        .filter(|i| chosen.contains(i.key.as_str()))
        .map(|i| history.current(i))
        .collect();
    if items.is_empty() {
        return Err(Refusal::SelectSomething.into());
    }
    let indexes = (0..items.len()).collect();
    Ok((items, indexes))
}

/// What a write-back job writes: the keys of one history snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WriteJob {
    pub items_id: String,
    pub keys: Vec<String>,
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
pub async fn preview(owned: &OwnedLaunch) -> Result<WritePreview, ServiceError> {
    let snapshot = owned.snapshot().await;
    let (items, chosen) = selection(owned, &snapshot, None).await?;
    let caps = capabilities(owned).await?;
    let plan = plan_write(&items, &chosen, &caps);
    Ok(WritePreview {
        ehr: owned.ehr().config.name.clone(),
        total: chosen.len(),
        as_records: per_group(&plan.direct),
        in_document: per_group(&plan.document),
        not_writable: per_group(&plan.not_writable),
    })
}

/// The launch's EMR as the write-back engine uses it (token refreshed, and retried once on
/// 401, by [`Emr::call`]).
impl wb::EmrWriter for Emr<'_> {
    async fn post_bundle(&self, bundle: &fhir::Bundle) -> Result<fhir::Bundle, fhir::FhirError> {
        unwrap_ehr(
            self.call(|c, t| async move { c.transaction(Some(t.expose()), bundle).await }).await,
        )
    }

    async fn create(
        &self,
        resource: &serde_json::Value,
        if_none_exist: Option<&str>,
    ) -> Result<fhir::client::Created, fhir::FhirError> {
        unwrap_ehr(
            self.call(
                |c, t| async move { c.create(Some(t.expose()), resource, if_none_exist).await },
            )
            .await,
        )
    }
}

/// The EMR's own error back out of [`Emr::call`] (a failed token refresh reads as a 401).
fn unwrap_ehr<T>(result: Result<T, ServiceError>) -> Result<T, fhir::FhirError> {
    result.map_err(|e| match e {
        ServiceError::Ehr(e) => e,
        other => {
            tracing::warn!(error = %other, "EHR access failed during the write");
            fhir::FhirError::Unauthorized { outcome: None }
        }
    })
}

/// Writes the selection into the EMR, as a job in the store held by this request: a second
/// "Add to chart" while one runs (another tab, another server) is refused, and a write cut
/// off by a crash is taken over by the next server to start ([`resume`]).
pub async fn write(owned: &OwnedLaunch) -> Result<WriteResult, ServiceError> {
    let snapshot = owned.snapshot().await;
    let history = snapshot.history.as_ref().ok_or(Refusal::LoadHistoryFirst)?;
    if history.view_only {
        return Err(Refusal::ViewOnly.into());
    }
    let mut keys: Vec<String> = history.selected.iter().cloned().collect();
    if keys.is_empty() {
        return Err(Refusal::SelectSomething.into());
    }
    keys.sort();
    let job = WriteJob { items_id: history.items_id.clone(), keys };
    let state = owned.state();
    let store = state.launches.store();
    let now = store::now();
    let queued = store
        .enqueue(
            store::NewJob {
                kind: store::JobKind::WriteBack,
                dedupe_key: Some(format!("write-back:{}", owned.id())),
                launch_id: Some(owned.id().to_owned()),
                subject: None,
                payload: serde_json::to_vec(&job).expect("a write job serialises"),
                run_after: now,
                leased_to: Some((state.worker_id.clone(), state.job_lease_secs())),
            },
            now,
        )
        .await?;
    if !queued.new {
        return Err(Refusal::WriteInProgress.into());
    }
    // The write runs in a task of its own: a browser that goes away mid-write (a closed tab,
    // a dropped connection) does not cut it off, and the job is closed as soon as it ends
    // rather than when its lease runs out.
    let (state, launch_id) = (state.clone(), owned.id().to_owned());
    let task = tokio::spawn(async move {
        let result = match OwnedLaunch::load(&state, &launch_id).await {
            Ok(owned) => write_selection(&owned, &job).await,
            Err(e) => Err(e),
        };
        let (outcome, body) = match &result {
            Ok(done) => (store::JobOutcome::Done, serde_json::to_vec(done).unwrap_or_default()),
            Err(_) => (store::JobOutcome::Failed, Vec::new()),
        };
        let store = state.launches.store();
        if let Err(e) =
            store.finish(&queued.id, &state.worker_id, outcome, &body, store::now()).await
        {
            tracing::error!(error = %e, "write-back job not closed");
        }
        result
    });
    let result = task.await.map_err(|e| ServiceError::Task(e.to_string()))?;
    // This request's copy of the launch predates the write: read what the task saved.
    owned.reload().await?;
    result
}

/// Finishes a write-back job whose server stopped before it ended: runs it again (what was
/// written is recognised and not duplicated) or, when it cannot be, records with the launch
/// that it was cut off, so the clinician sees it. Never leaves it without a record.
pub async fn resume(owned: &OwnedLaunch, job: &WriteJob) -> Result<WriteResult, ServiceError> {
    match write_selection(owned, job).await {
        Ok(mut result) => {
            result.notes.push("This write was interrupted (Member History's server stopped) and was finished when it started again.".into());
            owned
                .update(|launch| {
                    if let Some(last) = launch.writes.last_mut() {
                        last.notes.clone_from(&result.notes);
                    }
                    Ok(())
                })
                .await?;
            Ok(result)
        }
        Err(e) => {
            let ehr = owned.ehr().config.name.clone();
            let note = format!("A write of {} selected items into {ehr} was interrupted (Member History's server stopped) and could not be finished. Some may be in the chart: reload the history, which marks what the chart holds, and add the rest again.", job.keys.len());
            let snapshot = owned.snapshot().await;
            let interrupted = WriteResult {
                ehr,
                plan: snapshot.plan.as_ref().map(|p| p.payer_id.clone()).unwrap_or_default(),
                patient: String::new(),
                written_at: now_rfc3339(),
                outcomes: Vec::new(),
                provenance: Vec::new(),
                document_format: None,
                document: None,
                notes: vec![note],
            };
            owned
                .update(|launch| {
                    launch.writes.push(interrupted.clone());
                    Ok(())
                })
                .await?;
            Err(e)
        }
    }
}

/// Writes the chosen items the way the EHR takes them (one transaction, parts, batch or single
/// creates; see `pdex::writeback`). Nothing is half-written within a part, the selection of
/// what was not written is kept, and a retry finds what a lost answer had already written.
async fn write_selection(owned: &OwnedLaunch, job: &WriteJob) -> Result<WriteResult, ServiceError> {
    let ehr = owned.ehr();
    let (plan_state, payer) = owned.plan().await?;
    let access = confirmed_access(&payer, &plan_state)?;
    let snapshot = owned.snapshot().await;
    if snapshot.history.as_ref().is_some_and(|h| h.member_patient != access.patient) {
        return Err(Refusal::AnswerChanged.into());
    }
    let (items, chosen) = selection(owned, &snapshot, Some(job)).await?;
    let caps = capabilities(owned).await?;
    let write_plan = plan_write(&items, &chosen, &caps);
    let failed = |cause| ServiceError::Write { ehr: ehr.config.name.clone(), cause };
    if write_plan.direct.is_empty() && write_plan.document.is_empty() {
        return Err(failed(WriteFailure::NothingAccepted));
    }
    // Whatever the browser sent: the plan's member must still be this patient.
    let patient = owned.emr().patient().await?;
    recheck_member(owned.state(), &payer, &access, &patient).await?;
    let source = plan_source(&payer, &access);
    let target = EmrTarget {
        patient: snapshot.patient_id.clone(),
        patient_name: fhir::display_name(&patient).unwrap_or_else(|| "the patient".into()),
        user: snapshot.fhir_user.as_deref().and_then(|u| fhir::Reference::parse(u).local()),
    };
    let names = names(&items);
    let now = now_rfc3339();
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
    let mut report = wb::write(&owned.emr(), &ctx, &selection, options).await;
    if let Some(limit) = report.learned_limit {
        *ehr.learned_write_limit.lock().unwrap_or_else(|p| p.into_inner()) = Some(limit);
    }
    if !report.outcomes.iter().any(|o| o.written()) {
        if let Some(failure) = report.failure.take() {
            return Err(failed(WriteFailure::Refused(failure.error)));
        }
    }
    let notes = write_notes(&ehr.config.name, options, &report, &caps);
    let result = WriteResult {
        ehr: ehr.config.name.clone(),
        plan: payer.config.name.clone(),
        patient: target.patient_name.clone(),
        written_at: now.clone(),
        outcomes: outcomes(ehr, &items, &write_plan, &report),
        provenance: report
            .outcomes
            .iter()
            .filter(|o| matches!(o.role, EntryRole::Provenance))
            .filter_map(|o| o.reference.clone())
            .collect(),
        document_format: document(&report)
            .and(report.document_format)
            .map(|f| f.label().to_owned()),
        document: document(&report),
        notes,
    };
    tracing::info!(ehr = %ehr.config.id, written = result.outcomes.len(), "write-back done");
    record(owned, &payer, &result).await?;
    Ok(result)
}

/// The DocumentReference written, if one was.
fn document(report: &wb::WriteReport) -> Option<String> {
    report
        .outcomes
        .iter()
        .filter(|o| matches!(o.role, EntryRole::Document(_)) && o.written())
        .find_map(|o| o.reference.clone())
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

fn plan_source(payer: &PayerRuntime, access: &PlanAccess) -> PlanSource {
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

/// One line of the outcome.
fn outcome(
    item: &HistoryItem,
    status: OutcomeStatus,
    reference: Option<String>,
    link: Option<String>,
    reason: Option<String>,
) -> ItemOutcome {
    ItemOutcome {
        key: item.key.clone(),
        display: item.display.clone(),
        category: item.category,
        status,
        link,
        reference,
        reason,
    }
}

/// What happened to each selected item: as the EHR answered, or why it was not written.
fn outcomes(
    ehr: &EhrRuntime,
    items: &[HistoryItem],
    plan: &Plan<'_>,
    report: &wb::WriteReport,
) -> Vec<ItemOutcome> {
    let base = ehr.config.issuer.as_str().trim_end_matches('/');
    let link = |reference: &Option<String>| reference.as_ref().map(|r| format!("{base}/{r}"));
    let by_key: HashMap<&str, &HistoryItem> = items.iter().map(|i| (i.key.as_str(), i)).collect();
    let mut outcomes = Vec::new();
    for entry in &report.outcomes {
        match &entry.role {
            EntryRole::Item(key) => {
                let Some(item) = by_key.get(key.as_str()) else { continue };
                let (status, reason) = match &entry.status {
                    EntryStatus::Created => (OutcomeStatus::Created, None),
                    EntryStatus::AlreadyPresent => (OutcomeStatus::AlreadyPresent, None),
                    EntryStatus::Other(s) => {
                        (OutcomeStatus::Failed, Some(format!("The EHR answered {s}")))
                    }
                };
                let reference = entry.reference.clone();
                outcomes.push(outcome(item, status, reference.clone(), link(&reference), reason));
            }
            EntryRole::Document(keys) if entry.written() => {
                for item in keys.iter().filter_map(|k| by_key.get(k.as_str())) {
                    let reference = entry.reference.clone();
                    let status = OutcomeStatus::InDocument;
                    outcomes.push(outcome(item, status, reference.clone(), link(&reference), None));
                }
            }
            _ => {}
        }
    }
    // Items the write never reached (it stopped, or the document was refused in every format).
    let answered: HashSet<String> = outcomes.iter().map(|o| o.key.clone()).collect();
    let name = &ehr.config.name;
    for item in plan.direct.iter().chain(&plan.document).filter(|i| !answered.contains(&i.key)) {
        let why =
            format!("Not written: {name} did not take it this time. It stays selected; try again.");
        outcomes.push(outcome(item, OutcomeStatus::Failed, None, None, Some(why)));
    }
    for item in &plan.not_writable {
        let why = format!("{name} accepts neither {} records nor documents.", item.resource_type);
        outcomes.push(outcome(item, OutcomeStatus::Failed, None, None, Some(why)));
    }
    outcomes
}

/// Keeps the outcome with the launch: what is now in the chart is marked so and no longer
/// selected; audited. Then tells the plan its suggestion was taken up (best effort: the
/// write has happened).
async fn record(
    owned: &OwnedLaunch,
    payer: &PayerRuntime,
    result: &WriteResult,
) -> Result<(), ServiceError> {
    let written: Vec<(&str, &Option<String>)> = result
        .outcomes
        .iter()
        .filter(|o| o.status != OutcomeStatus::Failed)
        .map(|o| (o.key.as_str(), &o.reference))
        .collect();
    let mut references: Vec<String> =
        written.iter().filter_map(|(_, r)| r.as_ref().cloned()).collect();
    references.extend(result.provenance.iter().cloned());
    references.extend(result.document.iter().cloned());
    let failed = result.outcomes.iter().any(|o| o.status == OutcomeStatus::Failed);
    crate::audit::record_done(
        owned,
        crate::audit::Access {
            action: store::AuditAction::EmrWrite,
            outcome: if failed { AuditOutcome::MinorFailure } else { AuditOutcome::Success },
            plan: Some(&payer.config.id),
            count: written.len(),
            references,
            note: failed.then(|| "some selected items were not written".into()),
        },
    )
    .await;
    let feedback_card = owned
        .update(|launch| {
            if let Some(history) = launch.history.as_mut() {
                for (key, reference) in &written {
                    history.written.insert((*key).to_owned(), (*reference).clone());
                    history.selected.remove(*key);
                }
            }
            launch.writes.push(result.clone());
            Ok(launch.plan.as_ref().and_then(|p| {
                let index = p.cards.iter().position(|c| {
                    c.feedback_allowed && c.card.suggestions.iter().any(|s| s.uuid.is_some())
                })?;
                (!p.feedback.contains_key(&index)).then(|| {
                    (index, p.cards[index].card.suggestions.iter().find_map(|s| s.uuid.clone()))
                })
            }))
        })
        .await?;
    if let Some((index, Some(suggestion))) = feedback_card {
        let accept = FeedbackInput::Accept { suggestion };
        if let Err(e) = feedback_for_launch(owned, payer, index, accept).await {
            tracing::warn!(error = %e, "feedback after write-back failed");
        }
    }
    Ok(())
}

/// The writes of a launch, newest last (for the printable summary after a reload).
pub async fn results(owned: &OwnedLaunch) -> Vec<WriteResult> {
    owned.snapshot().await.writes
}
