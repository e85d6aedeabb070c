//! The review list's rows: what the page shows and filters on, and nothing more (10,000 of
//! them go to the browser at once).

use serde::{Deserialize, Serialize};

use crate::model::{Category, HistoryItem, Own, Party, Sensitivity};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewRow {
    pub key: String,
    pub category: Category,
    pub display: String,
    pub detail: Option<String>,
    /// `YYYY-MM-DD` (or shorter, as the plan sent it).
    pub date: Option<String>,
    /// The organisation's name, or the practitioner's when there is none.
    pub source: Option<String>,
    /// Code values and meanings, for searching.
    pub codes: String,
    /// From the clinician's own organisation / by the clinician (PDex exclusion filters).
    pub own_organization: bool,
    pub own_practitioner: bool,
    /// The chart already holds it.
    pub in_chart: bool,
    pub sensitive: Vec<Sensitivity>,
}

fn is_party(
    party: Option<&std::sync::Arc<Party>>,
    identifiers: &[String],
    names: &[String],
) -> bool {
    let Some(party) = party else { return false };
    party.identifiers.iter().any(|i| identifiers.contains(i))
        || party
            .name
            .as_deref()
            .is_some_and(|n| names.iter().any(|m| m.eq_ignore_ascii_case(n.trim())))
}

impl ReviewRow {
    pub fn new(item: &HistoryItem, own: &Own) -> Self {
        let codes = item
            .codes
            .iter()
            .flat_map(|c| [c.code.as_deref(), c.display.as_deref()])
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        ReviewRow {
            key: item.key.clone(),
            category: item.category,
            display: item.display.clone(),
            detail: item.detail.clone(),
            date: item.when.as_ref().and_then(|w| w.day()).map(str::to_owned),
            source: item
                .organization
                .as_ref()
                .and_then(|o| o.name.clone())
                .or_else(|| item.practitioner.as_ref().and_then(|p| p.name.clone())),
            codes,
            own_organization: is_party(
                item.organization.as_ref(),
                &own.organization_identifiers,
                &own.organization_names,
            ),
            own_practitioner: is_party(
                item.practitioner.as_ref(),
                &own.practitioner_identifiers,
                &own.practitioner_names,
            ),
            in_chart: item.duplicate_of.is_some(),
            sensitive: item.sensitive.clone(),
        }
    }
}
