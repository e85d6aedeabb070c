//! Sending a write-back the way the EMR's FHIR server takes it.
//!
//! - **Transaction** (preferred): one transaction for everything while no limit is known.
//!   When the server refuses it for its size (or a limit is configured), the items go in
//!   parts of at most that many entries, in dependency order, each part self-contained: its
//!   items, the plan's Provenance for them, the plan's Organization (conditional) and one
//!   Provenance of ours over the part. A part is all or nothing and every entry is a
//!   conditional create, so a failure leaves whole parts written and a retry completes the
//!   rest without duplicates. The document goes in a part of its own, so a refusal of it is
//!   told apart from a refusal of the records.
//! - **Batch**: the same entries in requests a level at a time (a batch cannot refer to its
//!   own entries), then the plan's Provenance, then ours over everything; an outcome per
//!   entry.
//! - **Single**: the same order, one conditional create per resource.

use std::collections::HashMap;
use std::future::Future;

use fhir::bundle::Bundle;
use fhir::FhirError;
use futures::StreamExt;
use serde_json::Value;

use super::build::{
    build_part, dependency_order, levels, partition, BundleKind, PartContent, WriteContext,
};
use super::{
    blames_document, outcomes, size_refusal, DocumentFormat, EntryOutcome, EntryRole, EntryStatus,
    WriteMode,
};
use crate::model::HistoryItem;

/// How requests reach the EMR (the app refreshes its token behind this; tests and benches
/// use a plain client).
pub trait EmrWriter: Sync {
    /// `POST [base]` with a transaction or batch Bundle.
    fn post_bundle(
        &self,
        bundle: &Bundle,
    ) -> impl Future<Output = Result<Bundle, FhirError>> + Send;
    /// `POST [base]/{type}` with `If-None-Exist`.
    fn create(
        &self,
        resource: &Value,
        if_none_exist: Option<&str>,
    ) -> impl Future<Output = Result<fhir::client::Created, FhirError>> + Send;
}

impl EmrWriter for (fhir::FhirClient, Option<String>) {
    fn post_bundle(
        &self,
        bundle: &Bundle,
    ) -> impl Future<Output = Result<Bundle, FhirError>> + Send {
        self.0.transaction(self.1.as_deref(), bundle)
    }
    fn create(
        &self,
        resource: &Value,
        if_none_exist: Option<&str>,
    ) -> impl Future<Output = Result<fhir::client::Created, FhirError>> + Send {
        self.0.create(self.1.as_deref(), resource, if_none_exist)
    }
}

/// What to write: items as resources, and items for the document.
#[derive(Debug, Clone, Default)]
pub struct WriteSelection<'a> {
    pub direct: Vec<&'a HistoryItem>,
    pub document: Vec<&'a HistoryItem>,
}

#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub mode: WriteMode,
    /// Most entries per request, when configured or learned earlier; `None`: try everything
    /// at once.
    pub max_entries: Option<usize>,
    /// Single creates sent at once.
    pub concurrency: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self { mode: WriteMode::Transaction, max_entries: None, concurrency: 4 }
    }
}

/// Where a write stopped.
#[derive(Debug)]
pub struct PartFailure {
    /// 1-based number of the request that failed.
    pub request: usize,
    pub error: FhirError,
}

/// What a write did.
#[derive(Debug, Default)]
pub struct WriteReport {
    /// Every entry sent and answered, in order.
    pub outcomes: Vec<EntryOutcome>,
    /// Requests that wrote (transactions, batches or creates).
    pub requests: usize,
    /// Transaction parts written.
    pub parts: usize,
    /// The entry limit learned from a refusal in this write.
    pub learned_limit: Option<usize>,
    /// The format the document was written in.
    pub document_format: Option<DocumentFormat>,
    /// Formats the EMR refused for the document, in order.
    pub refused_formats: Vec<DocumentFormat>,
    /// Set when the write stopped before the end.
    pub failure: Option<PartFailure>,
    /// Written records not yet covered by our Provenance (a batch or single-create write that
    /// stopped, and whose Provenance could not be written either): the retry covers them.
    pub provenance_missing: bool,
}

impl WriteReport {
    fn record(&mut self, outcomes: Vec<EntryOutcome>, written: &mut HashMap<String, String>) {
        for o in &outcomes {
            if let (true, Some(reference)) = (o.written(), &o.reference) {
                written.insert(o.role.written_key(), reference.clone());
            }
        }
        self.outcomes.extend(outcomes);
    }

    fn document_written(&self) -> bool {
        self.outcomes.iter().any(|o| matches!(o.role, EntryRole::Document(_)) && o.written())
    }
}

/// Writes the selection by `options.mode`.
pub async fn write<E: EmrWriter>(
    emr: &E,
    ctx: &WriteContext<'_>,
    selection: &WriteSelection<'_>,
    options: WriteOptions,
) -> WriteReport {
    match options.mode {
        WriteMode::Transaction => transactions(emr, ctx, selection, options).await,
        WriteMode::Batch | WriteMode::Single => stepwise(emr, ctx, selection, options).await,
    }
}

async fn transactions<E: EmrWriter>(
    emr: &E,
    ctx: &WriteContext<'_>,
    selection: &WriteSelection<'_>,
    options: WriteOptions,
) -> WriteReport {
    let mut report = WriteReport::default();
    let mut written = HashMap::new();
    let mut remaining = dependency_order(ctx.plan, &selection.direct);
    let mut limit = options.max_entries;
    let mut format = DocumentFormat::CHAIN[0];
    let mut document_pending = !selection.document.is_empty();
    while !remaining.is_empty() || document_pending {
        // Everything at once while no limit is known; else the next part, the document last.
        let (items, with_document) = match limit {
            None => (remaining.clone(), document_pending),
            Some(_) if !remaining.is_empty() => {
                (partition(ctx.plan, &remaining, limit).swap_remove(0), false)
            }
            Some(_) => (Vec::new(), true),
        };
        let document = with_document.then(|| selection.document.clone());
        let content = PartContent {
            items: items.clone(),
            document: document.clone().map(|d| (d, format)),
            organization: true,
            plan_provenance: true,
            provenance: true,
            covers: items.clone(),
            covers_document: document.unwrap_or_default(),
        };
        let request = build_part(ctx, &content, &written, BundleKind::Transaction);
        match emr.post_bundle(&request.bundle).await {
            Ok(response) => {
                report.record(outcomes(&request, &response), &mut written);
                report.requests += 1;
                report.parts += 1;
                let done: std::collections::HashSet<&str> =
                    items.iter().map(|i| i.key.as_str()).collect();
                remaining.retain(|i| !done.contains(i.key.as_str()));
                if with_document {
                    document_pending = false;
                    report.document_format = Some(format);
                }
            }
            Err(error) => {
                let entries = request.bundle.entry.len();
                if let Some(stated) = size_refusal(&error) {
                    // Smaller parts, unless this was already the smallest possible.
                    if items.len() > 1 {
                        let next = stated.filter(|n| *n < entries).unwrap_or(entries / 2);
                        limit = Some(next.max(1));
                        report.learned_limit = limit;
                        tracing::info!(
                            entries,
                            limit = next,
                            "the EMR refused a transaction for its size; splitting"
                        );
                        continue;
                    }
                }
                let document_at =
                    request.roles.iter().position(|r| matches!(r, EntryRole::Document(_)));
                let document_refused = document_at.is_some_and(|at| {
                    (items.is_empty() && matches!(error.status(), Some(400 | 415 | 422)))
                        || blames_document(&error, at)
                });
                if let (true, Some(next)) = (document_refused, format.next()) {
                    report.refused_formats.push(format);
                    format = next;
                    continue;
                }
                report.failure = Some(PartFailure { request: report.requests + 1, error });
                return report;
            }
        }
    }
    report
}

/// Batch or single creates: the Organization, the items a level at a time (the document
/// with the first), the plan's Provenance, then ours.
async fn stepwise<E: EmrWriter>(
    emr: &E,
    ctx: &WriteContext<'_>,
    selection: &WriteSelection<'_>,
    options: WriteOptions,
) -> WriteReport {
    let mut report = WriteReport::default();
    let mut written = HashMap::new();
    let ordered = dependency_order(ctx.plan, &selection.direct);
    let mut steps: Vec<PartContent<'_>> =
        vec![PartContent { organization: true, ..Default::default() }];
    let mut document = (!selection.document.is_empty()).then(|| selection.document.clone());
    for level in levels(ctx.plan, &ordered) {
        let chunk = options.max_entries.unwrap_or(usize::MAX).max(1);
        for items in level.chunks(chunk) {
            steps.push(PartContent { items: items.to_vec(), ..Default::default() });
        }
    }
    if let Some(items) = document.take() {
        steps.push(PartContent {
            document: Some((items, DocumentFormat::CHAIN[0])),
            ..Default::default()
        });
    }
    for step in steps {
        if let Err(error) = send_step(emr, ctx, step, &options, &mut report, &mut written).await {
            report.failure = Some(PartFailure { request: report.requests + 1, error });
            // What did get written gets its Provenance now, if the EMR still answers.
            let covered = provenance_steps(
                emr,
                ctx,
                selection,
                &ordered,
                &options,
                &mut report,
                &mut written,
            )
            .await;
            report.provenance_missing =
                covered.is_err() && report.outcomes.iter().any(EntryOutcome::written);
            return report;
        }
    }
    if let Err(error) =
        provenance_steps(emr, ctx, selection, &ordered, &options, &mut report, &mut written).await
    {
        report.failure = Some(PartFailure { request: report.requests + 1, error });
        report.provenance_missing = true;
    }
    report
}

/// The Provenance records of a stepwise write, once everything they point at has an id in
/// the EMR: copies of the plan's, then ours over what was written.
async fn provenance_steps<E: EmrWriter>(
    emr: &E,
    ctx: &WriteContext<'_>,
    selection: &WriteSelection<'_>,
    ordered: &[&HistoryItem],
    options: &WriteOptions,
    report: &mut WriteReport,
    written: &mut HashMap<String, String>,
) -> Result<(), FhirError> {
    let covers: Vec<&HistoryItem> =
        ordered.iter().copied().filter(|i| written.contains_key(&i.key)).collect();
    let covers_document =
        if report.document_written() { selection.document.clone() } else { Vec::new() };
    if covers.is_empty() && covers_document.is_empty() {
        return Ok(());
    }
    for content in [
        PartContent { plan_provenance: true, covers: covers.clone(), ..Default::default() },
        PartContent { provenance: true, covers, covers_document, ..Default::default() },
    ] {
        send_step(emr, ctx, content, options, report, written).await?;
    }
    Ok(())
}

/// Sends one step as a batch (halved when refused for its size) or as single creates; a
/// refused document is sent again in the next format.
async fn send_step<E: EmrWriter>(
    emr: &E,
    ctx: &WriteContext<'_>,
    content: PartContent<'_>,
    options: &WriteOptions,
    report: &mut WriteReport,
    written: &mut HashMap<String, String>,
) -> Result<(), FhirError> {
    let mut pending = vec![content];
    while let Some(content) = pending.pop() {
        let request = build_part(ctx, &content, written, BundleKind::Batch);
        if request.bundle.entry.is_empty() {
            continue;
        }
        let answered = match options.mode {
            WriteMode::Single => {
                let (answered, failure) = creates(emr, &request, options.concurrency).await;
                if let Some(error) = failure {
                    // What did get written is remembered; the rest is for the retry.
                    report.record(answered, written);
                    return Err(error);
                }
                Ok(answered)
            }
            _ => match emr.post_bundle(&request.bundle).await {
                Ok(response) => Ok(outcomes(&request, &response)),
                Err(e) if size_refusal(&e).is_some() && content.items.len() > 1 => {
                    let (first, second) = content.items.split_at(content.items.len() / 2);
                    report.learned_limit = Some(first.len());
                    pending.push(PartContent { items: second.to_vec(), ..content.clone() });
                    pending.push(PartContent { items: first.to_vec(), ..content });
                    continue;
                }
                Err(e) => Err(e),
            },
        }?;
        // One bundle, or one create per entry.
        report.requests += if options.mode == WriteMode::Single { answered.len() } else { 1 };
        // A refused document: the next simpler format, alone.
        let refused = answered.iter().any(|o| {
            matches!(o.role, EntryRole::Document(_))
                && matches!(&o.status, EntryStatus::Other(s) if ["400", "415", "422"].iter().any(|c| s.starts_with(c)))
        });
        let format = content.document.as_ref().map(|(_, f)| *f);
        let kept: Vec<EntryOutcome> = answered
            .into_iter()
            .filter(|o| !(refused && matches!(o.role, EntryRole::Document(_))))
            .collect();
        report.record(kept, written);
        match (refused, content.document, format.and_then(DocumentFormat::next)) {
            (true, Some((items, format)), Some(next)) => {
                report.refused_formats.push(format);
                pending.push(PartContent { document: Some((items, next)), ..Default::default() });
            }
            (false, Some(_), _) => report.document_format = format,
            _ => {}
        }
    }
    Ok(())
}

/// One conditional create per entry, a few at a time, outcomes in entry order. A refused
/// entry is an outcome; a failure of the server stops the write (the outcomes so far are
/// returned with it).
async fn creates<E: EmrWriter>(
    emr: &E,
    request: &super::Transaction,
    concurrency: usize,
) -> (Vec<EntryOutcome>, Option<FhirError>) {
    // Futures from a named `async fn`, collected first: a lazily mapped closure here trips
    // rustc's higher-ranked `Send` check in the server function's future.
    let sends: Vec<_> = request
        .bundle
        .entry
        .iter()
        .zip(&request.roles)
        .map(|(entry, role)| create_one(emr, entry, role))
        .collect();
    let results: Vec<Result<EntryOutcome, FhirError>> =
        futures::stream::iter(sends).buffered(concurrency.max(1)).collect().await;
    let mut answered = Vec::with_capacity(results.len());
    let mut failure = None;
    for result in results {
        match result {
            Ok(outcome) => answered.push(outcome),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    (answered, failure)
}

/// One conditional create; a refusal of this resource is its outcome, a transport or server
/// failure stops the run (the caller reports it).
async fn create_one<E: EmrWriter>(
    emr: &E,
    entry: &fhir::bundle::BundleEntry,
    role: &EntryRole,
) -> Result<EntryOutcome, FhirError> {
    let resource = entry.resource.as_ref().unwrap_or(&Value::Null);
    let if_none_exist = entry.request.as_ref().and_then(|r| r.if_none_exist.as_deref());
    match emr.create(resource, if_none_exist).await {
        Ok(created) => Ok(EntryOutcome {
            role: role.clone(),
            status: if created.status == 201 {
                EntryStatus::Created
            } else {
                EntryStatus::AlreadyPresent
            },
            reference: created
                .location
                .as_deref()
                .and_then(|l| fhir::Reference::parse(l).local())
                .or_else(|| created.resource.as_ref().and_then(fhir::ResourceExt::local_reference)),
        }),
        Err(e) if matches!(e.status(), Some(400 | 403 | 404 | 409 | 412 | 415 | 422)) => {
            Ok(EntryOutcome {
                role: role.clone(),
                status: EntryStatus::Other(format!(
                    "{}{}",
                    e.status().unwrap_or_default(),
                    e.outcome_text().map(|t| format!(" {t}")).unwrap_or_default()
                )),
                reference: None,
            })
        }
        Err(e) => Err(e),
    }
}
