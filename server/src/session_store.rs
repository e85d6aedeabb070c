//! The in-memory session store. Like tower-sessions' `MemoryStore`, but bounded: at most
//! `max_sessions` records, and expired ones are dropped oldest-first from an expiry index as
//! new ones are created (no scan of every session under the lock).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::Mutex;
use tower_sessions::cookie::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

#[derive(Debug, Default)]
struct Records {
    by_id: HashMap<Id, Record>,
    /// `(expiry, id)` of every record, so the expired ones are at the front.
    by_expiry: BTreeSet<(OffsetDateTime, i128)>,
}

impl Records {
    fn remove(&mut self, id: &Id) -> Option<Record> {
        let old = self.by_id.remove(id)?;
        self.by_expiry.remove(&(old.expiry_date, id.0));
        Some(old)
    }

    fn insert(&mut self, record: Record) {
        self.remove(&record.id);
        self.by_expiry.insert((record.expiry_date, record.id.0));
        self.by_id.insert(record.id, record);
    }

    /// Drops expired records, oldest first; stops at the first live one.
    fn prune(&mut self, now: OffsetDateTime) {
        while let Some(&(expiry, id)) = self.by_expiry.first() {
            if expiry > now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_id.remove(&Id(id));
        }
    }
}

#[derive(Debug, Clone)]
pub struct PrunedMemoryStore {
    records: Arc<Mutex<Records>>,
    max_sessions: usize,
}

impl Default for PrunedMemoryStore {
    fn default() -> Self {
        Self::new(service::config::Limits::default().max_sessions)
    }
}

impl PrunedMemoryStore {
    pub fn new(max_sessions: usize) -> Self {
        Self { records: Arc::default(), max_sessions: max_sessions.max(1) }
    }

    pub async fn len(&self) -> usize {
        self.records.lock().await.by_id.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Whether a new session would be refused (after dropping the expired ones).
    pub async fn is_full(&self) -> bool {
        let mut records = self.records.lock().await;
        records.prune(OffsetDateTime::now_utc());
        records.by_id.len() >= self.max_sessions
    }
}

#[async_trait::async_trait]
impl SessionStore for PrunedMemoryStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let mut records = self.records.lock().await;
        records.prune(OffsetDateTime::now_utc());
        if records.by_id.len() >= self.max_sessions {
            return Err(session_store::Error::Backend("the session limit is reached".into()));
        }
        while records.by_id.contains_key(&record.id) {
            record.id = Id::default();
        }
        records.insert(record.clone());
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.records.lock().await.insert(record.clone());
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self.records.lock().await.by_id.get(id).filter(|r| r.expiry_date > now).cloned())
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.records.lock().await.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tower_sessions::cookie::time::Duration;

    fn record(expires_in: Duration) -> Record {
        Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: OffsetDateTime::now_utc() + expires_in,
        }
    }

    #[tokio::test]
    async fn expired_sessions_make_room_and_live_ones_are_capped() {
        let store = PrunedMemoryStore::new(2);
        let mut old = record(Duration::milliseconds(-1));
        store.create(&mut old).await.unwrap();
        let mut a = record(Duration::minutes(5));
        store.create(&mut a).await.unwrap();
        // The expired one is dropped to make room.
        let mut b = record(Duration::minutes(5));
        store.create(&mut b).await.unwrap();
        assert_eq!(store.len().await, 2);
        assert!(store.is_full().await);
        let mut c = record(Duration::minutes(5));
        assert!(store.create(&mut c).await.is_err());
        // Saving moves a record in the index: the old expiry no longer prunes it.
        let mut renewed = a.clone();
        renewed.expiry_date = OffsetDateTime::now_utc() + Duration::minutes(10);
        store.save(&renewed).await.unwrap();
        assert_eq!(store.records.lock().await.by_expiry.len(), 2);
        store.delete(&b.id).await.unwrap();
        assert!(!store.is_full().await);
        assert!(store.load(&a.id).await.unwrap().is_some());
        assert!(store.load(&old.id).await.unwrap().is_none());
    }
}
