//! A bulk export read into review items one resource at a time, in memory that does not grow
//! with the export: the newest `capacity` items are kept (a later copy of the same `Type/id`
//! replaces the earlier), the context they are resolved against is capped, and what was left
//! out is counted so the clinician can be told.
//!
//! Read the files in [`read_order`](crate::normalise::read_order): a reference to a party,
//! a medication or an encounter read later shows only its own `display`, and a Provenance
//! record read before its target waits for it in a capped table.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::model::HistoryItem;
use crate::normalise::{item_of, provenance_targets, Directory};

/// Provenance records kept waiting for a target not read yet.
const MAX_WAITING_PROVENANCE: usize = 20_000;

/// Where an item sits: newest date last is evicted last; on one date the greater key goes
/// first (the review lists a date's items by key).
type Slot = (String, Reverse<String>);

/// The review items of an export being read.
#[derive(Debug)]
pub struct ExportItems {
    capacity: usize,
    directory: Directory,
    kept: BTreeMap<Slot, HistoryItem>,
    /// `Type/id` → its slot in `kept`.
    slots: HashMap<String, Slot>,
    waiting: HashMap<String, Vec<Arc<Value>>>,
    left_out: usize,
}

/// What an export held for review.
#[derive(Debug)]
pub struct Collected {
    /// Newest first (undated last), then by key, as [`crate::newest_first`] orders them.
    pub items: Vec<HistoryItem>,
    /// Items older than the ones kept, not kept.
    pub left_out: usize,
}

impl ExportItems {
    /// Keeps the newest `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            directory: Directory::default(),
            kept: BTreeMap::new(),
            slots: HashMap::new(),
            waiting: HashMap::new(),
            left_out: 0,
        }
    }

    /// Takes one resource of the export.
    pub fn add(&mut self, resource: Value) {
        if resource.get("resourceType").and_then(Value::as_str) == Some("Provenance") {
            self.add_provenance(resource);
            return;
        }
        self.directory.learn(&resource);
        let Some(mut item) = item_of(&self.directory, resource) else { return };
        if let Some(records) = self.waiting.remove(&item.key) {
            item.provenance = records;
        }
        if let Some(earlier) = self.slots.remove(&item.key) {
            // Kept, but the later copy replaces it; its Provenance stays with it.
            if let Some(old) = self.kept.remove(&earlier) {
                if item.provenance.is_empty() {
                    item.provenance = old.provenance;
                }
            }
        }
        let slot = (item.sort_date().to_owned(), Reverse(item.key.clone()));
        // Oldest first in the map: full, an item older than all kept is left out at once.
        if self.kept.len() >= self.capacity {
            match self.kept.first_key_value() {
                Some((oldest, _)) if &slot < oldest => {
                    self.left_out += 1;
                    return;
                }
                _ => {}
            }
        }
        self.slots.insert(item.key.clone(), slot.clone());
        self.kept.insert(slot, item);
        while self.kept.len() > self.capacity {
            if let Some((_, evicted)) = self.kept.pop_first() {
                self.slots.remove(&evicted.key);
                self.left_out += 1;
            }
        }
    }

    fn add_provenance(&mut self, record: Value) {
        let targets = provenance_targets(&record);
        let shared = Arc::new(record);
        for key in targets {
            match self.slots.get(&key).and_then(|slot| self.kept.get_mut(slot)) {
                Some(item) => item.provenance.push(shared.clone()),
                None if self.waiting.len() < MAX_WAITING_PROVENANCE
                    || self.waiting.contains_key(&key) =>
                {
                    self.waiting.entry(key).or_default().push(shared.clone());
                }
                // A target left out, or too many waiting: the item (if any) has no Provenance.
                None => {}
            }
        }
    }

    pub fn finish(self) -> Collected {
        let mut items: Vec<HistoryItem> = self.kept.into_values().collect();
        items.reverse();
        Collected { items, left_out: self.left_out }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn condition(id: &str, date: &str) -> Value {
        json!({"resourceType": "Condition", "id": id, "recordedDate": date,
               "code": {"text": format!("Condition {id}")},
               "asserter": {"reference": "Organization/o1"}})
    }

    #[test]
    fn keeps_the_newest_in_the_order_the_review_lists_them() {
        let mut export = ExportItems::new(3);
        export.add(json!({"resourceType": "Organization", "id": "o1", "name": "Clinic"}));
        for (id, date) in [
            ("a", "2020-01-01"),
            ("b", "2024-01-01"),
            ("c", "2019-01-01"),
            ("d", "2023-01-01"),
            ("e", "2024-01-01"),
        ] {
            export.add(condition(id, date));
        }
        export.add(json!({"resourceType": "Provenance", "id": "p", "target": [{"reference": "Condition/b"}]}));
        let collected = export.finish();
        let keys: Vec<&str> = collected.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["Condition/b", "Condition/e", "Condition/d"]);
        assert_eq!(collected.left_out, 2);
        assert_eq!(collected.items[0].provenance.len(), 1);
        assert_eq!(
            collected.items[0].organization.as_ref().unwrap().name.as_deref(),
            Some("Clinic")
        );
        let all = crate::newest_first(collected.items.clone());
        assert_eq!(all, collected.items);
    }

    #[test]
    fn a_later_copy_replaces_the_earlier_and_provenance_may_come_first() {
        let mut export = ExportItems::new(10);
        export.add(json!({"resourceType": "Provenance", "id": "p", "target": [{"reference": "Condition/a"}]}));
        export.add(condition("a", "2020-01-01"));
        export.add(condition("a", "2021-01-01"));
        let collected = export.finish();
        assert_eq!(collected.items.len(), 1);
        assert_eq!(collected.left_out, 0);
        assert_eq!(collected.items[0].sort_date(), "2021-01-01");
        assert_eq!(collected.items[0].provenance.len(), 1);
    }

    #[test]
    fn reads_the_same_items_as_a_whole_answer_does() {
        let resources = vec![
            json!({"resourceType": "Organization", "id": "o1", "name": "Clinic"}),
            condition("a", "2020-01-01"),
            condition("b", "2022-05-01"),
            json!({"resourceType": "Observation", "id": "x", "effectiveDateTime": "2021-03-04",
                   "code": {"text": "HbA1c"}, "valueQuantity": {"value": 7.1, "unit": "%"}}),
        ];
        let whole = crate::newest_first(crate::normalise::normalise(resources.clone()));
        let mut export = ExportItems::new(100);
        resources.into_iter().for_each(|r| export.add(r));
        assert_eq!(export.finish().items, whole);
    }
}
