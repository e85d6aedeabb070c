//! The plan's member history as the review page receives it.

use serde::{Deserialize, Serialize};

pub use pdex::filter::Filter;
pub use pdex::{Category, HistoryItem, ReviewRow};

/// The review list: a row per item (what the page shows and filters on), and what is
/// selected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryView {
    pub payer: String,
    pub items: Vec<ReviewRow>,
    /// Keys of the selected items.
    pub selected: Vec<String>,
    /// Whether the clinician's own organisation is known (offers the "hide my organisation's" filter).
    pub own_organization_known: bool,
    /// What could not be read or checked, in plain words.
    pub notes: Vec<String>,
    /// When the plan's data was read (RFC 3339).
    pub fetched_at: String,
    /// The plan gave it to view only (a Provider Access snapshot): nothing can be added to
    /// the chart from it.
    #[serde(default)]
    pub view_only: bool,
}

/// One item with everything the detail view shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemDetail {
    pub item: HistoryItem,
    /// The resource as the plan sent it, pretty-printed.
    pub raw_json: String,
}

/// The selection after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectionSummary {
    pub selected: usize,
}
