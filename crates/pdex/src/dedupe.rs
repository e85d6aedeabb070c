//! What the chart already holds: plan items matched against the EMR's own resources of the
//! same types, first by identifier, then by code and date. Matches are marked (and so start
//! unselected); nothing is dropped.

use std::collections::HashMap;

use serde_json::Value;

use crate::model::{Code, HistoryItem, When};
use crate::normalise::{code_list, what_and_when};

/// An index of the EMR's resources.
#[derive(Debug, Default)]
pub struct ChartIndex {
    by_identifier: HashMap<String, String>,
    /// `type|system|code|day` → EMR reference.
    by_code_and_day: HashMap<String, String>,
}

/// Calls `each` with `type|system|code|day` for each code of the resource, read as a plan
/// item's are (the kinds table, through `normalise::what_and_when`). The chart's Medications
/// are not fetched: a chart medication's codes come from its own concept or a contained one.
fn for_each_key(resource: &Value, each: impl FnMut(&str) -> bool) -> bool {
    let Some(kind) =
        resource.get("resourceType").and_then(Value::as_str).and_then(crate::kinds::of)
    else {
        return false;
    };
    let (concept, when) = what_and_when(kind, resource, |_| None);
    let Some(day) = when.as_ref().and_then(When::day) else { return false };
    for_each_code_key(kind.resource_type, &code_list(concept.as_deref()), day, each)
}

/// Calls `each` with `type|system|code|day` for each code that has a system and a code, until
/// it returns true; returns whether it did. The one spelling of the key, for both sides.
fn for_each_code_key(
    resource_type: &str,
    codes: &[Code],
    day: &str,
    mut each: impl FnMut(&str) -> bool,
) -> bool {
    let mut key = String::with_capacity(96);
    for code in codes {
        let (Some(system), Some(value)) = (code.system.as_deref(), code.code.as_deref()) else {
            continue;
        };
        key.clear();
        key.push_str(resource_type);
        key.push('|');
        key.push_str(system);
        key.push('|');
        key.push_str(value);
        key.push('|');
        key.push_str(day);
        if each(&key) {
            return true;
        }
    }
    false
}

impl ChartIndex {
    /// Indexes the EMR's resources (any types; only matching types ever meet).
    pub fn new<'a>(chart: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut index = ChartIndex::default();
        for resource in chart {
            let Some(reference) = fhir::ResourceExt::local_reference(resource) else { continue };
            for identifier in
                resource.get("identifier").and_then(Value::as_array).into_iter().flatten()
            {
                if let (Some(system), Some(value)) = (
                    identifier.get("system").and_then(Value::as_str),
                    identifier.get("value").and_then(Value::as_str),
                ) {
                    index
                        .by_identifier
                        .entry(format!("{system}|{value}"))
                        .or_insert_with(|| reference.clone());
                }
            }
            for_each_key(resource, |key| {
                index.by_code_and_day.entry(key.to_owned()).or_insert_with(|| reference.clone());
                false
            });
        }
        index
    }

    /// The chart resource `item` duplicates, if any.
    pub fn find(&self, item: &HistoryItem) -> Option<&String> {
        item.identifiers
            .iter()
            .filter(|i| !i.starts_with('|'))
            .find_map(|i| self.by_identifier.get(i))
            .or_else(|| self.find_by_code_and_day(item))
    }
}

impl ChartIndex {
    /// Matches on the item's own codes and day (already read from the resource).
    fn find_by_code_and_day(&self, item: &HistoryItem) -> Option<&String> {
        if self.by_code_and_day.is_empty() {
            return None;
        }
        let day = item.when.as_ref()?.day()?;
        let mut found = None;
        for_each_code_key(&item.resource_type, &item.codes, day, |key| {
            found = self.by_code_and_day.get(key);
            found.is_some()
        });
        found
    }
}

/// Marks the items the chart already holds; returns how many.
pub fn mark_duplicates(items: &mut [HistoryItem], chart: &ChartIndex) -> usize {
    let mut count = 0;
    for item in items.iter_mut() {
        item.duplicate_of = chart.find(item).cloned();
        count += usize::from(item.duplicate_of.is_some());
    }
    count
}
