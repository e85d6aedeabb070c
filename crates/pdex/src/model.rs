//! One reviewable item per clinical resource from the plan, in the clinician's terms.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::kinds::Category;

/// Every resource type the review shows.
pub fn history_resource_types() -> Vec<&'static str> {
    crate::kinds::KINDS.iter().map(|k| k.resource_type).collect()
}

/// Who "my organisation" and "me" are, to exclude what the clinician already has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Own {
    /// `system|value` identifiers (NPI…) and names of the clinician's organisation(s).
    pub organization_identifiers: Vec<String>,
    pub organization_names: Vec<String>,
    /// The signed-in clinician's identifiers and name.
    pub practitioner_identifiers: Vec<String>,
    pub practitioner_names: Vec<String>,
}

/// A code with the name of its system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub system: Option<String>,
    /// `ICD-10-CM`, `SNOMED CT`, …; `None` for systems without a common name.
    pub system_name: Option<Cow<'static, str>>,
    pub code: Option<String>,
    pub display: Option<String>,
}

/// When the item happened: a date(time), or a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    pub start: Option<String>,
    pub end: Option<String>,
}

impl When {
    /// The day it happened (or started), `YYYY-MM-DD` or shorter when the source was.
    pub fn day(&self) -> Option<&str> {
        let s = self.start.as_deref().or(self.end.as_deref())?;
        fhir::date::day_of(s)
    }
}

/// Who did or recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Party {
    /// `Organization/x` or `Practitioner/x` as the plan names it.
    pub reference: Option<String>,
    pub name: Option<String>,
    /// `system|value` identifiers (NPI…), when the plan sent the resource.
    pub identifiers: Vec<String>,
}

/// Why an item is sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sensitivity {
    BehaviouralHealth,
    SubstanceUse,
    SexualAndReproductiveHealth,
    /// A `meta.security` label (the code, e.g. `R`, `PSY`).
    SecurityLabel(String),
}

impl Sensitivity {
    pub fn label(&self) -> String {
        match self {
            Sensitivity::BehaviouralHealth => "Behavioural health".into(),
            Sensitivity::SubstanceUse => "Substance use".into(),
            Sensitivity::SexualAndReproductiveHealth => "Sexual and reproductive health".into(),
            Sensitivity::SecurityLabel(code) => format!("Security label {code}"),
        }
    }
}

/// One item of the plan's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// `Type/id` at the plan: the item's key.
    pub key: String,
    pub resource_type: String,
    pub category: Category,
    pub display: String,
    /// A second line: value, dose, provider…
    pub detail: Option<String>,
    pub codes: Vec<Code>,
    pub when: Option<When>,
    pub status: Option<String>,
    /// Shared: many items name the same organisation or practitioner.
    pub organization: Option<Arc<Party>>,
    pub practitioner: Option<Arc<Party>>,
    pub sensitive: Vec<Sensitivity>,
    /// The EMR resource this item matches (`Type/id`), when already in the chart.
    pub duplicate_of: Option<String>,
    /// Identifiers (`system|value`) of the resource, for matching.
    pub identifiers: Vec<String>,
    /// The resource as the plan sent it (with contained resources resolved for display only:
    /// this is the original). Not sent to the browser with the list.
    #[serde(skip)]
    pub resource: Value,
    /// The plan's own Provenance records that target this resource (PDex), carried into the
    /// chart with it. Shared: one record may cover many items.
    #[serde(skip)]
    pub provenance: Vec<Arc<Value>>,
}

impl HistoryItem {
    /// New, not sensitive and not already in the chart: selected when the review opens.
    pub fn selected_by_default(&self) -> bool {
        self.duplicate_of.is_none() && self.sensitive.is_empty()
    }

    /// The sort key (newest first sorts on this descending).
    pub fn sort_date(&self) -> &str {
        self.when.as_ref().and_then(|w| w.start.as_deref().or(w.end.as_deref())).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::When;

    #[test]
    fn the_day_of_an_outside_date_never_cuts_a_character() {
        let when = |s: &str| When { start: Some(s.to_owned()), end: None };
        assert_eq!(when("2024-03-07T10:00:00Z").day(), Some("2024-03-07"));
        assert_eq!(when("2024-03").day(), Some("2024-03"));
        for odd in ["2024-03-0é", "ééééééééééé", "202", "yesterday", ""] {
            assert_eq!(when(odd).day(), None, "{odd}");
        }
    }
}
