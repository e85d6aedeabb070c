//! Driving a Provider Access request to its end, away from any browser request: each step
//! sends or polls one call, saves the request's progress with its lease, and waits as the
//! plan asks (`Retry-After`). A server that stops mid-way leaves the lease to run out, and
//! the next server's [`resume`] takes the request on from its last saved step.

use std::time::Duration;

use bulk::{BulkClient, BulkError, Manifest, Started, Status, StatusUrl};
use pdex::provider_access::{self as pa, ExportRequest, MatchAnswer};
use serde_json::Value;
use smart::Secret;

use super::collect::Collector;
use super::{export_type, who, AccessRequest, AccessResult, Stage};
use crate::clock::now_rfc3339;
use crate::error::{DataProblem, ServiceError};
use crate::launch_state::PlanAccess;
use crate::launches::StoredItems;
use crate::state::{AppState, PayerRuntime};

/// Passing failures (a 5xx, a dropped connection) tried again before the request fails.
const MAX_RETRIES: u32 = 6;
/// Lines read from one export at most; the rest are left at the plan (and said so).
const MAX_RESOURCES: usize = 1_000_000;
/// Pages of a paged manifest read at most (Bulk Data 3 `link` `next`).
const MAX_MANIFEST_PAGES: usize = 100;
/// Member matches per request: an expired Group is matched again once.
const MAX_MATCHES: u32 = 2;
/// How long reading an export's files may hold the request.
const READ_LEASE_SECS: i64 = 3600;

/// What one step found.
enum Advance {
    /// On to the next stage.
    To(Stage),
    /// Still running at the plan.
    Poll { progress: Option<String>, retry_after: Option<Duration> },
    /// The export is read.
    Done(Stage, Box<AccessResult>),
}

/// One request's connection to its plan: the Bulk Data client and a token held in memory
/// only (never saved with the request).
struct Plan<'a> {
    state: &'a AppState,
    job_id: &'a str,
    payer: &'a PayerRuntime,
    bulk: BulkClient,
    access: PlanAccess,
}

impl Plan<'_> {
    async fn token(&mut self) -> Result<Option<Secret>, DataProblem> {
        crate::plan::access::plan_token(self.state, self.payer, &mut self.access).await
    }

    /// Holds the lease through a long read of an export's files (a big export takes more
    /// than a lease to read).
    async fn hold(&self, request: &AccessRequest) {
        let payload = serde_json::to_vec(request).expect("a request serialises");
        let until = store::now().saturating_add(READ_LEASE_SECS.max(self.state.job_lease_secs()));
        let store = self.state.launches.store();
        if let Err(e) =
            store.renew(self.job_id, &self.state.worker_id, &payload, until, store::now()).await
        {
            tracing::warn!(error = %e, "Provider Access lease not extended for the read");
        }
    }
}

/// Runs `request` (job `job_id`, leased to this server) until it ends, then closes the job.
pub(super) async fn drive(state: AppState, job_id: String, mut request: AccessRequest) {
    let Some(payer) = state.payer(&request.payer_id).cloned() else {
        request.stage = Stage::Failed { message: "The plan is no longer configured.".into() };
        close(&state, &job_id, &request, None).await;
        return;
    };
    let mut plan = Plan {
        state: &state,
        job_id: &job_id,
        payer: &payer,
        bulk: BulkClient::new(
            state.http.clone(),
            payer.config.fhir_base.clone(),
            bulk::BulkLimits::default(),
        ),
        access: PlanAccess {
            fhir_base: payer.config.fhir_base.clone(),
            patient: String::new(),
            member_id: None,
            token: None,
            expires_at: None,
            member_authorized: false,
        },
    };
    let store = state.launches.store();
    loop {
        let (wait, result) = step(&mut plan, &mut request).await;
        request.updated_at = now_rfc3339();
        if request.stage.is_final() {
            close(&state, &job_id, &request, result).await;
            return;
        }
        let lease_until = store::now()
            .saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2))
            .saturating_add(state.job_lease_secs());
        let payload = serde_json::to_vec(&request).expect("a request serialises");
        match store.renew(&job_id, &state.worker_id, &payload, lease_until, store::now()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("a Provider Access request's lease was lost to another server");
                return;
            }
            // The lease still runs; the next save may work.
            Err(e) => tracing::error!(error = %e, "Provider Access progress not saved"),
        }
        tokio::time::sleep(wait).await;
        if state.stopping() {
            // The next server takes it on from the saved step once the lease runs out.
            return;
        }
    }
}

/// One step: what the stage needs, then the new stage (or the same, polled again) and how
/// long to wait before the next.
async fn step(
    plan: &mut Plan<'_>,
    request: &mut AccessRequest,
) -> (Duration, Option<AccessResult>) {
    match advance(plan, request).await {
        Ok(Advance::To(stage)) => {
            audit_stage(plan.state, request, &stage, None).await;
            request.stage = stage;
            (request.polls, request.progress) = (0, None);
            (Duration::from_millis(200), None)
        }
        Ok(Advance::Poll { progress, retry_after }) => {
            request.polls = request.polls.saturating_add(1);
            request.progress = progress;
            (bulk::next_poll(retry_after, request.polls), None)
        }
        Ok(Advance::Done(stage, result)) => {
            audit_stage(plan.state, request, &stage, Some(&result)).await;
            request.stage = stage;
            request.progress = None;
            (Duration::ZERO, Some(*result))
        }
        Err(Failure::Bulk(BulkError::Unauthorized { .. })) if request.polls < 1 => {
            // The token ran out between calls: once more with a new one.
            plan.access.token = None;
            request.polls += 1;
            (Duration::from_secs(1), None)
        }
        Err(Failure::Bulk(BulkError::Failed { status: 404 | 410, .. }))
            if matches!(request.stage, Stage::Export { .. }) && request.matches < MAX_MATCHES =>
        {
            // The matched Group expired before its export: match again.
            request.stage = Stage::Match;
            request.polls = 0;
            (Duration::from_secs(1), None)
        }
        Err(failure) if failure.is_transient() && request.polls < MAX_RETRIES => {
            tracing::warn!(payer = %plan.payer.config.id, error = %failure, "Provider Access call failed; trying again");
            request.polls += 1;
            (bulk::next_poll(None, request.polls), None)
        }
        Err(failure) => {
            tracing::warn!(payer = %plan.payer.config.id, error = %failure, "Provider Access request failed");
            request.stage = Stage::Failed { message: failure.message(&plan.payer.config.name) };
            (Duration::ZERO, None)
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Bulk(#[from] BulkError),
    #[error("token: {0}")]
    Token(DataProblem),
    #[error("{0}")]
    Shape(#[from] pa::MatchShapeError),
    /// The server's history-read turns were closed (it is stopping).
    #[error("the server is stopping")]
    ShuttingDown,
}

impl Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Bulk(e) => e.is_transient(),
            // The plan's token endpoint or discovery may be down for a moment.
            Failure::Token(DataProblem::SmartConfiguration(_)) | Failure::ShuttingDown => true,
            _ => false,
        }
    }

    /// The clinician's sentence: what happened and what to do.
    fn message(&self, plan: &str) -> String {
        let said = |text: &str| text.chars().take(300).collect::<String>();
        match self {
            Failure::Bulk(e) => match e.outcome_text() {
                Some(text) => format!("{plan} could not complete the request: “{}”. Ask again later; if it keeps failing, contact the plan.", said(text)),
                None => format!("{plan}'s Provider Access API failed ({e}). Ask again later; if it keeps failing, contact the plan."),
            },
            Failure::Token(problem) => problem.message(plan),
            Failure::Shape(e) => format!("{plan} answered the member match in a form Member History cannot read ({e}). Contact the plan."),
            Failure::ShuttingDown => "Member History stopped while reading the export. Ask again.".to_owned(),
        }
    }
}

/// The call the stage needs.
async fn advance(plan: &mut Plan<'_>, request: &mut AccessRequest) -> Result<Advance, Failure> {
    let token = plan.token().await.map_err(Failure::Token)?;
    let token = token.as_ref().map(Secret::expose);
    match request.stage.clone() {
        Stage::Match => {
            request.matches += 1;
            match plan.bulk.kick_off(token, pa::MEMBER_MATCH, &request.match_request).await? {
                Started::Accepted(status) => Ok(Advance::To(Stage::Matching { status })),
                Started::Completed(body) => matched(plan, token, &body, None).await,
            }
        }
        Stage::Matching { status } => match plan.bulk.status(token, &status).await? {
            Status::InProgress { progress, retry_after } => {
                Ok(Advance::Poll { progress, retry_after })
            }
            Status::Complete(body) => matched(plan, token, &body, Some(&status)).await,
        },
        Stage::Export { group_id, member } => {
            let mut export = ExportRequest::new(
                export_type(request.purpose),
                member.as_ref().map(|m| format!("Patient/{m}")),
            );
            export.since.clone_from(&request.since);
            let operation = pa::export_operation(&group_id);
            match plan.bulk.kick_off(token, &operation, &export.parameters()).await? {
                Started::Accepted(status) => {
                    Ok(Advance::To(Stage::Exporting { group_id, member, status }))
                }
                Started::Completed(body) => exported(plan, token, &body, member, None).await,
            }
        }
        Stage::Exporting { member, status, .. } => match plan.bulk.status(token, &status).await? {
            Status::InProgress { progress, retry_after } => {
                Ok(Advance::Poll { progress, retry_after })
            }
            Status::Complete(body) => {
                plan.hold(request).await;
                exported(plan, token, &body, member, Some(&status)).await
            }
        },
        done => Ok(Advance::To(done)),
    }
}

/// The match answer: a Parameters body, or a manifest of Group files.
async fn matched(
    plan: &Plan<'_>,
    token: Option<&str>,
    body: &Value,
    status: Option<&StatusUrl>,
) -> Result<Advance, Failure> {
    let groups = if body.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
        vec![body.clone()]
    } else {
        let mut manifest = Manifest::parse(body, &base(plan, status))?;
        plan.bulk.follow_pages(token, &mut manifest, MAX_MANIFEST_PAGES).await?;
        let mut groups = Vec::new();
        for file in &manifest.output {
            let mut reader = plan.bulk.open(token, &manifest, file).await?;
            while let Some(line) = reader.next().await {
                // A Group file holds a handful of lines; one bad line is not the answer.
                groups.extend(line.ok());
            }
        }
        groups
    };
    clean_up(plan, token, status).await;
    Ok(Advance::To(match pa::read_match_answer(&groups)? {
        MatchAnswer::Matched { group_id, member } => {
            Stage::Export { group_id, member: member.as_deref().and_then(pa::patient_id) }
        }
        MatchAnswer::NotMatched => Stage::NotMatched,
        MatchAnswer::ConsentConstrained => Stage::OptedOut,
    }))
}

/// The export's manifest, read: its files line by line into the review's items.
async fn exported(
    plan: &Plan<'_>,
    token: Option<&str>,
    body: &Value,
    member: Option<String>,
    status: Option<&StatusUrl>,
) -> Result<Advance, Failure> {
    let mut manifest = Manifest::parse(body, &base(plan, status))?;
    plan.bulk.follow_pages(token, &mut manifest, MAX_MANIFEST_PAGES).await?;
    // Reading holds one of the server's history-read turns, as the hook route does: the
    // review items in memory are what bounds its peak.
    let _turn = plan.state.history_reads.acquire().await.map_err(|_| Failure::ShuttingDown)?;
    let read = read_files(plan, token, &manifest, member).await?;
    clean_up(plan, token, status).await;
    let stage = Stage::Ready {
        member: read.member.clone(),
        resources: read.items.len(),
        transaction_time: manifest.transaction_time.clone(),
    };
    let result = AccessResult {
        member: read.member,
        plan_patient: read.plan_patient,
        items: StoredItems::from(read.items),
        notes: read.notes,
    };
    Ok(Advance::Done(stage, Box::new(result)))
}

/// What an export's files held.
struct ReadExport {
    member: Option<String>,
    plan_patient: Option<Value>,
    items: Vec<pdex::HistoryItem>,
    notes: Vec<String>,
}

async fn read_files(
    plan: &Plan<'_>,
    token: Option<&str>,
    manifest: &Manifest,
    member: Option<String>,
) -> Result<ReadExport, Failure> {
    let name = &plan.payer.config.name;
    let mut files: Vec<&bulk::OutputFile> = manifest.output.iter().collect();
    // Context first, Provenance last: each resource is resolved as it is read.
    files.sort_by_key(|f| pdex::normalise::read_order(&f.resource_type));
    let mut collector = Collector::new(member, plan.state.config.limits.review_items);
    let (mut lines, mut bad_lines, mut truncated) = (0usize, 0u64, false);
    for file in files {
        let mut reader = plan.bulk.open(token, manifest, file).await?;
        while let Some(line) = reader.next().await {
            match line {
                Ok(_) if lines >= MAX_RESOURCES => truncated = true,
                Ok(resource) => {
                    lines += 1;
                    collector.add(resource);
                }
                Err(BulkError::BadLine { .. }) => bad_lines += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut notes = plan_errors(plan, token, manifest).await;
    if bad_lines > 0 {
        notes.push(format!(
            "{bad_lines} lines of {name}'s export were not FHIR resources and were left out."
        ));
    }
    if truncated {
        notes.push(format!(
            "{name}'s export has more than {MAX_RESOURCES} records; the rest were not read."
        ));
    }
    if !manifest.deleted.is_empty() {
        notes.push(format!("{name} listed records deleted since the last import; Member History never removes anything from the chart, so check them there."));
    }
    if manifest.next.is_some() {
        notes.push(format!(
            "{name}'s export lists its files on more than {MAX_MANIFEST_PAGES} pages; the files on the later pages were not read."
        ));
    }
    if manifest.skipped > 0 {
        notes.push(format!(
            "{} files of {name}'s export had no address Member History may read, and were left out.",
            manifest.skipped
        ));
    }
    let collected = collector.finish(name, "export");
    notes.extend(collected.notes);
    tracing::info!(payer = %plan.payer.config.id, items = collected.items.len(), "Provider Access export read");
    Ok(ReadExport {
        member: collected.member,
        plan_patient: collected.plan_patient,
        items: collected.items,
        notes,
    })
}

/// The plan's error files (OperationOutcomes), as notes: a few, briefly.
async fn plan_errors(plan: &Plan<'_>, token: Option<&str>, manifest: &Manifest) -> Vec<String> {
    let mut notes = Vec::new();
    for file in manifest.error.iter().take(3) {
        let Ok(mut reader) = plan.bulk.open(token, manifest, file).await else { continue };
        while let Some(Ok(outcome)) = reader.next().await {
            if let Some(text) = fhir::client::outcome_text(outcome.to_string().as_bytes()) {
                if notes.len() < 5 {
                    let text: String = text.chars().take(200).collect();
                    notes.push(format!("{} reported: {text}", plan.payer.config.name));
                }
            }
        }
    }
    notes
}

/// Where relative URLs of a manifest resolve from.
fn base(plan: &Plan<'_>, status: Option<&StatusUrl>) -> url::Url {
    status
        .and_then(|s| url::Url::parse(s.as_str()).ok())
        .unwrap_or_else(|| plan.payer.config.fhir_base.clone())
}

/// Tells the plan a finished request's files may go (Bulk Data `DELETE`); a failure only
/// leaves them to the plan's own expiry.
async fn clean_up(plan: &Plan<'_>, token: Option<&str>, status: Option<&StatusUrl>) {
    if let Some(status) = status {
        if let Err(e) = plan.bulk.cancel(token, status).await {
            tracing::info!(payer = %plan.payer.config.id, error = %e, "finished request not cleaned up at the plan");
        }
    }
}

/// Records what a step learned of the member: the plan's data read, or the member refused.
async fn audit_stage(
    state: &AppState,
    request: &AccessRequest,
    stage: &Stage,
    result: Option<&AccessResult>,
) {
    use store::{AuditAction as A, AuditOutcome as O};
    if matches!(request.stage, Stage::Match) {
        record(
            state,
            request,
            A::PlanAsked,
            O::Success,
            "Provider Access member match",
            1,
            Vec::new(),
        )
        .await;
    }
    let (action, outcome, note, count, references) = match (stage, result) {
        (Stage::NotMatched, _) => (
            A::MemberMatchRefused,
            O::MinorFailure,
            "the plan did not match the member",
            0,
            Vec::new(),
        ),
        (Stage::OptedOut, _) => (
            A::MemberMatchRefused,
            O::MinorFailure,
            "the member opted out of Provider Access",
            0,
            Vec::new(),
        ),
        (Stage::Ready { .. }, Some(result)) => {
            let references: Vec<String> = result.items.keys().take(1000).collect();
            (
                A::PlanHistoryRead,
                O::Success,
                "Provider Access export",
                result.items.len(),
                references,
            )
        }
        _ => return,
    };
    record(state, request, action, outcome, note, count, references).await;
}

async fn record(
    state: &AppState,
    request: &AccessRequest,
    action: store::AuditAction,
    outcome: store::AuditOutcome,
    note: &str,
    count: usize,
    references: Vec<String>,
) {
    let Some(who) = who(state, request) else { return };
    let access = crate::audit::Access {
        action,
        outcome,
        plan: Some(&request.payer_id),
        count,
        references,
        note: Some(note.to_owned()),
    };
    if let Err(e) = crate::audit::record_for(state, who, access).await {
        tracing::error!(error = %e, action = action.as_str(), "audit entry not stored");
    }
}

/// Saves the request's last state and ends its job, with the export's items as its result.
async fn close(
    state: &AppState,
    job_id: &str,
    request: &AccessRequest,
    result: Option<AccessResult>,
) {
    let store = state.launches.store();
    let payload = serde_json::to_vec(request).expect("a request serialises");
    let lease = store::now().saturating_add(state.job_lease_secs());
    let outcome = match request.stage {
        Stage::Failed { .. } => store::JobOutcome::Failed,
        _ => store::JobOutcome::Done,
    };
    let body =
        result.map(|r| serde_json::to_vec(&r).expect("a result serialises")).unwrap_or_default();
    let saved = match store.renew(job_id, &state.worker_id, &payload, lease, store::now()).await {
        Ok(true) => store.finish(job_id, &state.worker_id, outcome, &body, store::now()).await,
        other => other,
    };
    match saved {
        Ok(true) => {}
        Ok(false) => tracing::warn!("a Provider Access request's lease was lost before it ended"),
        Err(e) => tracing::error!(error = %e, "Provider Access request not closed"),
    }
}

/// Takes over every Provider Access request whose server stopped polling it (its lease ran
/// out) and drives it on from its last saved step; how many were taken.
pub async fn resume(state: &AppState) -> Result<usize, ServiceError> {
    let store = state.launches.store();
    let mut taken = 0;
    while let Some(job) = store
        .claim(
            store::JobKind::ProviderAccess,
            &state.worker_id,
            state.job_lease_secs(),
            store::now(),
        )
        .await?
    {
        taken += 1;
        match serde_json::from_slice::<AccessRequest>(&job.payload) {
            Ok(request) => {
                tokio::spawn(drive(state.clone(), job.id, request));
            }
            Err(e) => {
                tracing::error!(error = %e, "a Provider Access request is unreadable; closed");
                store
                    .finish(&job.id, &state.worker_id, store::JobOutcome::Failed, &[], store::now())
                    .await?;
            }
        }
    }
    Ok(taken)
}
