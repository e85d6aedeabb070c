//! Launches in the store: one sealed record per launch (with the plan's answer, the selection
//! and what was written), its history's items in a record of their own. Nothing of a launch
//! stays in memory between requests except the items of recent reviews, in a cache bounded
//! by bytes: a server's memory does not grow with the launches it has served, a restart loses
//! nothing, and several servers on one database serve the same launch.

use std::collections::HashMap;
use std::sync::Arc;

use pdex::HistoryItem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{Store, StoreError};

use crate::error::ServiceError;
use crate::launch_state::{new_launch_id, Launch};

/// A launch as read, with the version its next update must name.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: i64,
    pub launch: Launch,
}

/// The launches of every server on the store.
#[derive(Debug)]
pub struct Launches {
    store: Arc<dyn Store>,
    /// Items by (launch, snapshot), weighed by their stored size.
    items: moka::sync::Cache<(String, String), Snapshot>,
    /// One token refresh at a time per launch in this process (the store's versions order
    /// the servers).
    refreshing: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Launches {
    /// `cache_bytes`: how much of recent histories' items to keep parsed in memory.
    pub fn new(store: Arc<dyn Store>, cache_bytes: u64) -> Self {
        let items = moka::sync::Cache::builder()
            .weigher(|_, snapshot: &Snapshot| snapshot.weight)
            .max_capacity(cache_bytes)
            .time_to_idle(std::time::Duration::from_secs(15 * 60))
            .build();
        let refreshing = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_idle(std::time::Duration::from_secs(600))
            .build();
        Self { store, items, refreshing }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn insert(&self, launch: &Launch) -> Result<(), StoreError> {
        let data = encode(launch);
        self.store.insert_launch(&launch.id, &data, store::now()).await
    }

    /// The launch, if it exists (and has not been purged).
    pub async fn load(&self, id: &str) -> Result<Option<Versioned>, ServiceError> {
        let Some(stored) = self.store.load_launch(id, store::now()).await? else {
            return Ok(None);
        };
        let launch = decode(&stored.data, "launch")?;
        Ok(Some(Versioned { version: stored.version, launch }))
    }

    /// Saves `launch` over version `expected`: the new version, or `None` when another request
    /// saved first.
    pub async fn save(&self, expected: i64, launch: &Launch) -> Result<Option<i64>, ServiceError> {
        let data = encode(launch);
        Ok(self.store.update_launch(&launch.id, expected, &data, store::now()).await?)
    }

    /// Applies `change` to the launch and saves it. When another request (in this server or
    /// another) saved first, reloads and applies `change` again to what it saved: no change
    /// is ever lost, none made on a stale copy. `change` failing saves nothing.
    pub async fn update<T>(
        &self,
        current: &mut Versioned,
        mut change: impl FnMut(&mut Launch) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        loop {
            let mut launch = current.launch.clone();
            let out = change(&mut launch)?;
            if let Some(version) = self.save(current.version, &launch).await? {
                *current = Versioned { version, launch };
                return Ok(out);
            }
            self.reload(current).await?;
        }
    }

    /// Reads the launch again into `current` (what another request saved since).
    pub async fn reload(&self, current: &mut Versioned) -> Result<(), ServiceError> {
        *current = self.load(&current.launch.id).await?.ok_or(ServiceError::NotInSession)?;
        Ok(())
    }

    /// Stores a new history snapshot for a launch; its id and the items.
    pub async fn put_items(
        &self,
        launch_id: &str,
        items: Vec<HistoryItem>,
    ) -> Result<(String, Arc<Vec<HistoryItem>>), ServiceError> {
        let id = new_launch_id();
        let data = encode_items(&items);
        self.store.put_history(launch_id, &id, &data, store::now()).await?;
        let items = Arc::new(items);
        self.items.insert((launch_id.to_owned(), id.clone()), Snapshot::new(&items, data.len()));
        Ok((id, items))
    }

    /// A launch's history snapshot, from the cache or the store.
    pub async fn items(
        &self,
        launch_id: &str,
        items_id: &str,
    ) -> Result<Arc<Vec<HistoryItem>>, ServiceError> {
        let key = (launch_id.to_owned(), items_id.to_owned());
        if let Some(snapshot) = self.items.get(&key) {
            return Ok(snapshot.items);
        }
        let data = self.store.load_history(launch_id, items_id).await?.ok_or_else(|| {
            StoreError::Seal("the history snapshot is gone (purged or replaced)".into())
        })?;
        let stored: StoredItems = decode(&data, "history")?;
        let items = Arc::new(stored.into_items());
        self.items.insert(key, Snapshot::new(&items, data.len()));
        Ok(items)
    }

    /// The lock under which this process refreshes the launch's EMR token.
    pub fn refresh_lock(&self, launch_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.refreshing.get_with(launch_id.to_owned(), Default::default)
    }
}

/// Parsed items weigh about this many times their stored JSON (strings, maps, vectors).
const PARSED_PER_STORED_BYTE: usize = 6;

/// A history's items in the cache, weighed by the memory they take.
#[derive(Debug, Clone)]
struct Snapshot {
    items: Arc<Vec<HistoryItem>>,
    weight: u32,
}

impl Snapshot {
    fn new(items: &Arc<Vec<HistoryItem>>, stored_bytes: usize) -> Self {
        let weight = stored_bytes.saturating_mul(PARSED_PER_STORED_BYTE);
        Self { items: items.clone(), weight: u32::try_from(weight).unwrap_or(u32::MAX) }
    }
}

fn encode(launch: &Launch) -> Vec<u8> {
    serde_json::to_vec(launch).expect("a launch serialises")
}

fn decode<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T, ServiceError> {
    // A record from an older release, or damaged: the clinician starts the launch again.
    serde_json::from_slice(data)
        .map_err(|e| StoreError::Seal(format!("{what} record unreadable: {e}")).into())
}

/// Items as stored: the parts the wire form leaves out (the plan's resource, its
/// Provenance) kept, and each Provenance record stored once however many items it covers.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredItems {
    items: Vec<StoredItem>,
    provenance: Vec<Arc<Value>>,
}

#[derive(Serialize, Deserialize)]
struct StoredItem {
    #[serde(flatten)]
    item: HistoryItem,
    resource: Value,
    provenance: Vec<usize>,
}

/// An item written as [`StoredItem`] is read, borrowing the item (no copy of the plan's data).
#[derive(Serialize)]
struct StoredItemRef<'a> {
    #[serde(flatten)]
    item: &'a HistoryItem,
    resource: &'a Value,
    provenance: Vec<usize>,
}

/// Each Provenance record once, however many items it covers: items name them by position.
#[derive(Default)]
struct ProvenanceTable {
    index: HashMap<*const Value, usize>,
    records: Vec<Arc<Value>>,
}

impl ProvenanceTable {
    fn positions(&mut self, records: &[Arc<Value>]) -> Vec<usize> {
        records
            .iter()
            .map(|p| {
                *self.index.entry(Arc::as_ptr(p)).or_insert_with(|| {
                    self.records.push(p.clone());
                    self.records.len() - 1
                })
            })
            .collect()
    }
}

/// `items` in the stored form [`StoredItems`] reads.
pub(crate) fn encode_items(items: &[HistoryItem]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Stored<'a> {
        items: Vec<StoredItemRef<'a>>,
        provenance: Vec<Arc<Value>>,
    }
    let mut table = ProvenanceTable::default();
    let items = items
        .iter()
        .map(|item| StoredItemRef {
            item,
            resource: &item.resource,
            provenance: table.positions(&item.provenance),
        })
        .collect();
    serde_json::to_vec(&Stored { items, provenance: table.records })
        .expect("history items serialise")
}

impl From<Vec<HistoryItem>> for StoredItems {
    /// Moves each resource into its stored item (no copy of the plan's data).
    fn from(items: Vec<HistoryItem>) -> Self {
        let mut table = ProvenanceTable::default();
        let items = items
            .into_iter()
            .map(|mut item| {
                let provenance = table.positions(&std::mem::take(&mut item.provenance));
                let resource = std::mem::take(&mut item.resource);
                StoredItem { item, resource, provenance }
            })
            .collect();
        StoredItems { items, provenance: table.records }
    }
}

impl StoredItems {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The items' keys (`Type/id` at the plan).
    pub(crate) fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.items.iter().map(|i| i.item.key.clone())
    }

    pub(crate) fn into_items(self) -> Vec<HistoryItem> {
        let provenance = self.provenance;
        self.items
            .into_iter()
            .map(|stored| {
                let mut item = stored.item;
                item.resource = stored.resource;
                item.provenance =
                    stored.provenance.iter().filter_map(|&i| provenance.get(i).cloned()).collect();
                item
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stored_items_keep_the_resource_and_share_provenance() {
        let shared = Arc::new(serde_json::json!({"resourceType": "Provenance", "id": "p1"}));
        let item = |key: &str| {
            let mut item: HistoryItem = serde_json::from_value(serde_json::json!({
                "key": key, "resource_type": "Condition", "category": "Conditions",
                "display": "Asthma", "detail": null, "codes": [], "when": null, "status": null,
                "organization": null, "practitioner": null, "sensitive": [],
                "duplicate_of": null, "identifiers": []
            }))
            .unwrap();
            item.resource = serde_json::json!({"resourceType": "Condition", "id": key});
            item.provenance = vec![shared.clone()];
            item
        };
        let items = vec![item("Condition/1"), item("Condition/2")];
        let bytes = encode_items(&items);
        let back: StoredItems = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.provenance.len(), 1);
        assert_eq!(back.into_items(), items);
        let moved = StoredItems::from(items.clone());
        assert_eq!(moved.provenance.len(), 1);
        assert_eq!(moved.into_items(), items);
    }
}
