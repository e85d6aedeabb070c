//! Writing the selection into the EMR, as the page shows it.

use serde::{Deserialize, Serialize};

use pdex::Category;

/// What "Add to chart" will do, before it does it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritePreview {
    pub ehr: String,
    pub total: usize,
    /// Written as FHIR resources, per group.
    pub as_records: Vec<(Category, usize)>,
    /// Kept in one document (the EHR does not take these as resources), per group.
    pub in_document: Vec<(Category, usize)>,
    /// Cannot be written at all (the EHR takes neither the resources nor documents).
    pub not_writable: Vec<(Category, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeStatus {
    Created,
    AlreadyPresent,
    InDocument,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemOutcome {
    pub key: String,
    pub display: String,
    pub category: Category,
    pub status: OutcomeStatus,
    /// `Type/id` in the EHR.
    pub reference: Option<String>,
    /// The EHR resource's URL.
    pub link: Option<String>,
    pub reason: Option<String>,
}

/// One completed write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    pub ehr: String,
    pub plan: String,
    pub patient: String,
    pub written_at: String,
    pub outcomes: Vec<ItemOutcome>,
    /// Our Provenance records (`Type/id`): one per transaction part, or one over everything.
    pub provenance: Vec<String>,
    pub document: Option<String>,
    /// What the document holds (`FHIR Bundle and PDF`, `PDF`, …).
    pub document_format: Option<String>,
    pub notes: Vec<String>,
}
