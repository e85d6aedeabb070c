//! Writing the clinician's selection into the EMR, adapted to what its FHIR server accepts:
//!
//! - the EMR's CapabilityStatement decides what can be written as resources (create and
//!   conditional create per type) and how (`rest.interaction`: transaction, batch, or one
//!   create per resource);
//! - each item gets a new `urn:uuid` fullUrl, its subject rewritten to the EMR patient,
//!   references between selected items rewritten, references to anything else reduced to
//!   their display text, plan ids removed, an identifier with the plan's system and id, and
//!   `ifNoneExist` on it so a retry never duplicates;
//! - `meta.source` and a `meta.tag` say where it came from; security labels are kept;
//! - the rest goes into one DocumentReference (FHIR Bundle + PDF, else PDF, HTML, text);
//! - the plan's own Provenance for the items comes along, and our Provenance names the plan
//!   as transmitter, points at the plan's, and targets every written resource.
//!
//! [`build`] makes the requests (pure); [`run`] sends them, splitting a transaction the
//! server refuses for its size into smaller self-contained ones.

mod build;
mod run;

use std::collections::HashMap;

use fhir::resource::Reference;
use serde_json::Value;

pub use build::{
    build_part, build_transaction, dependency_order, levels, partition, plan_identifier, split,
    BundleKind, PartContent, Transaction, WriteContext,
};
pub use run::{write, EmrWriter, PartFailure, WriteOptions, WriteReport, WriteSelection};

/// Our code system for the origin tag on written resources.
pub const ORIGIN_TAG_SYSTEM: &str = "https://member-history.dev/fhir/CodeSystem/data-origin";
/// Identifier system of our Provenance and DocumentReference records (their idempotency keys).
pub const WRITE_IDENTIFIER_SYSTEM: &str = "https://member-history.dev/fhir/write";

/// How the EMR takes a write, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// FHIR transactions: each part all or nothing.
    Transaction,
    /// FHIR batch: one request, an outcome per entry.
    Batch,
    /// One conditional create per resource.
    Single,
}

impl WriteMode {
    pub fn label(self) -> &'static str {
        match self {
            WriteMode::Transaction => "transaction",
            WriteMode::Batch => "batch",
            WriteMode::Single => "one create per record",
        }
    }
}

/// What the EMR's CapabilityStatement allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteCapabilities {
    pub transaction: bool,
    pub batch: bool,
    /// type → (create, conditional create)
    pub types: HashMap<String, (bool, bool)>,
}

fn has_interaction(value: &Value, code: &str) -> bool {
    value
        .get("interaction")
        .and_then(Value::as_array)
        .is_some_and(|i| i.iter().any(|x| x.get("code").and_then(Value::as_str) == Some(code)))
}

impl WriteCapabilities {
    pub fn from_capability_statement(statement: &Value) -> Self {
        let mut caps = WriteCapabilities::default();
        for rest in statement.get("rest").and_then(Value::as_array).into_iter().flatten() {
            if rest.get("mode").and_then(Value::as_str).is_some_and(|m| m != "server") {
                continue;
            }
            caps.transaction |= has_interaction(rest, "transaction");
            caps.batch |= has_interaction(rest, "batch");
            for resource in rest.get("resource").and_then(Value::as_array).into_iter().flatten() {
                let Some(resource_type) = resource.get("type").and_then(Value::as_str) else {
                    continue;
                };
                let create = has_interaction(resource, "create");
                let conditional =
                    resource.get("conditionalCreate").and_then(Value::as_bool).unwrap_or(false);
                caps.types.insert(resource_type.to_owned(), (create, conditional));
            }
        }
        caps
    }

    /// Creatable with `If-None-Exist`: safe to retry.
    pub fn writes_idempotently(&self, resource_type: &str) -> bool {
        self.types.get(resource_type).is_some_and(|(create, conditional)| *create && *conditional)
    }

    /// Transaction if offered, else batch, else one create each.
    pub fn mode(&self) -> WriteMode {
        if self.transaction {
            WriteMode::Transaction
        } else if self.batch {
            WriteMode::Batch
        } else {
            WriteMode::Single
        }
    }
}

/// The plan the data came from.
#[derive(Debug, Clone)]
pub struct PlanSource {
    pub name: String,
    pub fhir_base: String,
    /// The member's Patient id at the plan (references to it become the EMR patient).
    pub member_patient: String,
    /// The identifier system for the plan's records; `None` means `{fhir_base}/{Type}`.
    pub record_system: Option<String>,
    /// The plan's own identifier (`system`, `value`), for its Organization in the EMR.
    pub payer_identifier: Option<(String, String)>,
}

/// Where it goes.
#[derive(Debug, Clone)]
pub struct EmrTarget {
    pub patient: String,
    pub patient_name: String,
    /// The signed-in user (`Practitioner/x`), recorded as the enterer.
    pub user: Option<String>,
}

/// What a DocumentReference carries, in PDex's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    BundleAndPdf,
    PdfOnly,
    Html,
    Text,
}

impl DocumentFormat {
    pub const CHAIN: [DocumentFormat; 4] = [
        DocumentFormat::BundleAndPdf,
        DocumentFormat::PdfOnly,
        DocumentFormat::Html,
        DocumentFormat::Text,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DocumentFormat::BundleAndPdf => "FHIR Bundle and PDF",
            DocumentFormat::PdfOnly => "PDF",
            DocumentFormat::Html => "HTML",
            DocumentFormat::Text => "plain text",
        }
    }

    /// The next simpler format, if any.
    pub fn next(self) -> Option<Self> {
        let at = Self::CHAIN.iter().position(|f| *f == self)?;
        Self::CHAIN.get(at + 1).copied()
    }
}

/// What each entry of a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryRole {
    Item(String),
    PlanOrganization,
    Document(Vec<String>),
    /// A copy of the plan's own Provenance (its key in `written`).
    PlanProvenance(String),
    Provenance,
}

impl EntryRole {
    /// The key under which a written entry's EMR reference is remembered between requests.
    pub fn written_key(&self) -> String {
        match self {
            EntryRole::Item(key) | EntryRole::PlanProvenance(key) => key.clone(),
            EntryRole::PlanOrganization => ORGANIZATION_KEY.into(),
            EntryRole::Document(_) => DOCUMENT_KEY.into(),
            EntryRole::Provenance => PROVENANCE_KEY.into(),
        }
    }
}

const ORGANIZATION_KEY: &str = "#organization";
const DOCUMENT_KEY: &str = "#document";
const PROVENANCE_KEY: &str = "#provenance";

/// What happened to one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryStatus {
    Created,
    /// A conditional create matched: the EMR already had it.
    AlreadyPresent,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryOutcome {
    pub role: EntryRole,
    pub status: EntryStatus,
    /// `Type/id` in the EMR.
    pub reference: Option<String>,
}

impl EntryOutcome {
    pub fn written(&self) -> bool {
        matches!(self.status, EntryStatus::Created | EntryStatus::AlreadyPresent)
    }
}

fn status_of(text: &str) -> EntryStatus {
    match text.split_whitespace().next() {
        Some("201") => EntryStatus::Created,
        Some("200") => EntryStatus::AlreadyPresent,
        _ => EntryStatus::Other(text.to_owned()),
    }
}

/// Reads a transaction- or batch-response against the request's entries.
pub fn outcomes(transaction: &Transaction, response: &fhir::Bundle) -> Vec<EntryOutcome> {
    transaction
        .roles
        .iter()
        .enumerate()
        .map(|(i, role)| {
            let entry = response.entry.get(i);
            let status_text = entry
                .and_then(|e| e.response.as_ref())
                .map(|r| r.status.clone())
                .unwrap_or_default();
            let reference = entry
                .and_then(|e| e.response.as_ref()?.location.clone())
                .and_then(|l| Reference::parse(&l).local())
                .or_else(|| {
                    entry.and_then(|e| fhir::ResourceExt::local_reference(e.resource.as_ref()?))
                });
            EntryOutcome { role: role.clone(), status: status_of(&status_text), reference }
        })
        .collect()
}

/// Whether a refusal is about the request's size, and the limit it names if it names one:
/// HTTP 413, or a 4xx whose OperationOutcome says so ("at most 8 entries", "too many
/// entries", "exceeds the maximum"…). Servers word it differently; these are the words seen.
pub fn size_refusal(error: &fhir::FhirError) -> Option<Option<usize>> {
    let status = error.status()?;
    let text = error.outcome_text().unwrap_or("").to_ascii_lowercase();
    let about_size = status == 413
        || ((400..500).contains(&status)
            && [
                "too many",
                "too large",
                "too-costly",
                "too costly",
                "exceed",
                "at most",
                "maximum",
                "limit",
            ]
            .iter()
            .any(|w| text.contains(w))
            && ["entr", "bundle", "transaction", "batch", "resource", "size", "request"]
                .iter()
                .any(|w| text.contains(w)));
    about_size.then(|| stated_limit(&text))
}

/// The limit a refusal names: the number after "at most", "maximum (of)", "limit (of|is)",
/// "max".
fn stated_limit(text: &str) -> Option<usize> {
    for marker in
        ["at most ", "maximum of ", "maximum is ", "maximum ", "limit of ", "limit is ", "max "]
    {
        if let Some(at) = text.find(marker) {
            let digits: String = text[at + marker.len()..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<usize>() {
                return (n > 0).then_some(n);
            }
        }
    }
    None
}

/// Whether a refusal of a request holding the DocumentReference (entry `index`) blames the
/// document: its entry is named, or its attachment. Anything else is not taken for a refused
/// document format.
pub fn blames_document(error: &fhir::FhirError, index: usize) -> bool {
    if !matches!(error.status(), Some(400 | 415 | 422)) {
        return false;
    }
    let text = error.outcome_text().unwrap_or("").to_ascii_lowercase();
    text.contains(&format!("entry[{index}]"))
        || ["attachment", "contenttype", "content type", "documentreference", "mime"]
            .iter()
            .any(|w| text.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, text: &str) -> fhir::FhirError {
        fhir::FhirError::Status { status, outcome: Some(text.into()) }
    }

    #[test]
    fn size_refusals_are_recognised_with_their_limit() {
        assert_eq!(size_refusal(&refused(413, "")), Some(None));
        assert_eq!(
            size_refusal(&refused(
                400,
                "This server accepts at most 8 conditional entries in a transaction"
            )),
            Some(Some(8))
        );
        assert_eq!(
            size_refusal(&refused(422, "Bundle has 30 entries, which exceeds the maximum of 20")),
            Some(Some(20))
        );
        assert_eq!(size_refusal(&refused(400, "Too many entries in bundle")), Some(None));
        assert_eq!(size_refusal(&refused(400, "Condition.code is required")), None);
        assert_eq!(size_refusal(&refused(500, "too many entries")), None);
    }

    #[test]
    fn only_a_refusal_naming_the_document_blames_its_format() {
        assert!(blames_document(&refused(422, "Bundle.entry[3]: unsupported"), 3));
        assert!(blames_document(
            &refused(400, "attachments of type application/pdf are not accepted"),
            0
        ));
        assert!(!blames_document(&refused(400, "this EHR does not accept transactions"), 3));
        assert!(!blames_document(&refused(400, "Bundle.entry[2]: bad code"), 3));
    }

    #[test]
    fn the_mode_follows_the_capability_statement() {
        let caps = |interactions: &[&str]| {
            let list: Vec<Value> =
                interactions.iter().map(|c| serde_json::json!({"code": c})).collect();
            WriteCapabilities::from_capability_statement(
                &serde_json::json!({"rest": [{"mode": "server", "interaction": list}]}),
            )
        };
        assert_eq!(caps(&["transaction", "batch"]).mode(), WriteMode::Transaction);
        assert_eq!(caps(&["batch"]).mode(), WriteMode::Batch);
        assert_eq!(caps(&[]).mode(), WriteMode::Single);
    }
}
