//! The in-memory session store. Like tower-sessions' `MemoryStore`, but expired sessions are
//! dropped as new ones are created, so memory does not grow with every browser that ever
//! visited.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tower_sessions::cookie::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

#[derive(Debug, Clone, Default)]
pub struct PrunedMemoryStore(Arc<Mutex<HashMap<Id, Record>>>);

impl PrunedMemoryStore {
    pub async fn len(&self) -> usize {
        self.0.lock().await.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

#[async_trait::async_trait]
impl SessionStore for PrunedMemoryStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let mut map = self.0.lock().await;
        let now = OffsetDateTime::now_utc();
        map.retain(|_, r| r.expiry_date > now);
        while map.contains_key(&record.id) {
            record.id = Id::default();
        }
        map.insert(record.id, record.clone());
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.0.lock().await.insert(record.id, record.clone());
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self.0.lock().await.get(id).filter(|r| r.expiry_date > now).cloned())
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.0.lock().await.remove(id);
        Ok(())
    }
}
