//! Da Vinci PDex member history, as plain library code (no web framework):
//!
//! - [`fetch`]: from the plan's FHIR API (`$everything` with paging, or per-type searches);
//! - [`normalise`]: Bundles and contained resources into [`HistoryItem`]s with display text,
//!   codes, dates, status and source;
//! - [`export`]: a bulk export read one resource at a time into the newest items, in
//!   bounded memory;
//! - [`dedupe`]: what the EMR's chart already holds (identifier, then code + date);
//! - [`sensitive`]: behavioural health, substance use, sexual and reproductive health, and
//!   security labels;
//! - [`review`]: the compact rows the review page lists;
//! - [`identity`]: whether the plan's member is the patient in the chart;
//! - [`provider_access`]: the Provider Access API's shapes (member match with treatment
//!   attestation, its Groups, the `$davinci-data-export` request);
//! - [`filter`]: PDex filters (period, own organisation or practitioner) and the page's own;
//! - [`writeback`]: the selection as one idempotent transaction with Provenance, and a
//!   DocumentReference ([`document`]) for what the EMR cannot take as resources.

pub mod dedupe;
#[cfg(feature = "client")]
pub mod document;
pub mod export;
#[cfg(feature = "client")]
pub mod fetch;
pub mod filter;
pub mod identity;
pub mod kinds;
pub mod model;
pub mod normalise;
#[cfg(feature = "client")]
pub mod provider_access;
pub mod review;
pub mod sensitive;
#[cfg(feature = "client")]
pub mod writeback;

pub use model::{Category, Code, HistoryItem, Party, Sensitivity, When};
pub use review::ReviewRow;

/// Normalises what the plan sent and marks what the chart already holds: the review's items,
/// newest first.
pub fn review_items(
    plan_pages: Vec<serde_json::Value>,
    chart: &dedupe::ChartIndex,
) -> Vec<HistoryItem> {
    let resources = normalise::flatten(plan_pages);
    let mut items = normalise::normalise(resources);
    dedupe::mark_duplicates(&mut items, chart);
    newest_first(items)
}

/// Sorts by date, newest first (undated last), then key. Sorts positions, not the (large)
/// items, and moves each item once.
pub fn newest_first(items: Vec<HistoryItem>) -> Vec<HistoryItem> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        items[b].sort_date().cmp(items[a].sort_date()).then_with(|| items[a].key.cmp(&items[b].key))
    });
    let mut slots: Vec<Option<HistoryItem>> = items.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}
