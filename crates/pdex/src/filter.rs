//! PDex filters for the review (the app "MAY be configured with default queries … Period;
//! Excluded Practitioner(s); Excluded Organization(s)"), plus the page's own: group, text,
//! and whether to show items already in the chart or sensitive ones.

use serde::{Deserialize, Serialize};

use crate::model::Category;
pub use crate::model::Own;
use crate::review::ReviewRow;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Inclusive `YYYY-MM-DD` bounds on the item's date; items without a date stay visible.
    pub from: Option<String>,
    pub to: Option<String>,
    pub exclude_own_organization: bool,
    pub exclude_own_practitioner: bool,
    pub hide_duplicates: bool,
    pub hide_sensitive: bool,
    /// Case-insensitive text in the display, detail, codes or source.
    pub text: Option<String>,
    pub category: Option<Category>,
}

impl Filter {
    /// Whether `row` passes every filter that is set.
    pub fn keeps(&self, row: &ReviewRow) -> bool {
        if self.category.is_some_and(|c| c != row.category) {
            return false;
        }
        if let Some(day) = row.date.as_deref() {
            if self.from.as_deref().is_some_and(|from| !from.is_empty() && day < from) {
                return false;
            }
            if self.to.as_deref().is_some_and(|to| {
                !to.is_empty() && fhir::date::prefix(day, to.chars().count()) > to
            }) {
                return false;
            }
        }
        if (self.exclude_own_organization && row.own_organization)
            || (self.exclude_own_practitioner && row.own_practitioner)
            || (self.hide_duplicates && row.in_chart)
            || (self.hide_sensitive && !row.sensitive.is_empty())
        {
            return false;
        }
        if let Some(text) = self.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            let needle = text.to_lowercase();
            let hay = |s: &str| s.to_lowercase().contains(&needle);
            let found = hay(&row.display)
                || row.detail.as_deref().is_some_and(hay)
                || hay(&row.codes)
                || row.source.as_deref().is_some_and(hay);
            if !found {
                return false;
            }
        }
        true
    }

    /// Positions of the rows passing the filter, in order.
    pub fn apply<'a>(&'a self, rows: &'a [ReviewRow]) -> impl Iterator<Item = usize> + 'a {
        rows.iter().enumerate().filter(move |(_, row)| self.keeps(row)).map(|(i, _)| i)
    }
}
