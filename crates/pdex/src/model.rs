//! One reviewable item per clinical resource from the plan, in the clinician's terms.

use std::borrow::Cow;
use std::sync::Arc;

use fhir::FhirDate;
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

/// When the item happened: a date(time), or a period. Only checked FHIR dates get here (a
/// value that is not one is left out, and the item shows "No date").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    pub start: Option<FhirDate>,
    pub end: Option<FhirDate>,
}

impl When {
    /// From outside strings; `None` unless at least one is a FHIR date.
    pub fn parse(start: Option<&str>, end: Option<&str>) -> Option<When> {
        let start = start.and_then(|s| FhirDate::parse(s).ok());
        let end = end.and_then(|s| FhirDate::parse(s).ok());
        (start.is_some() || end.is_some()).then_some(When { start, end })
    }

    /// The day it happened (or started), `YYYY-MM-DD` or shorter when the source was.
    pub fn day(&self) -> Option<&str> {
        self.start.as_ref().or(self.end.as_ref()).map(FhirDate::day)
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
        self.when
            .as_ref()
            .and_then(|w| w.start.as_ref().or(w.end.as_ref()))
            .map_or("", FhirDate::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::When;

    #[test]
    fn the_day_of_an_outside_date_never_cuts_a_character() {
        let day = |s: &str| When::parse(Some(s), None).and_then(|w| w.day().map(str::to_owned));
        assert_eq!(day("2024-03-07T10:00:00Z").as_deref(), Some("2024-03-07"));
        assert_eq!(day("2024-03").as_deref(), Some("2024-03"));
        for odd in ["2024-03-0é", "ééééééééééé", "202", "yesterday", ""] {
            assert_eq!(day(odd), None, "{odd}");
        }
        // A period with a bad start still has its end.
        let when = When::parse(Some("soon"), Some("2024-05-01")).unwrap_or_else(|| unreachable!());
        assert_eq!(when.day(), Some("2024-05-01"));
    }
}
