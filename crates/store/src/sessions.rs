//! tower-sessions' store on [`Store`]: browser sessions survive a restart and are shared by
//! every server on the database. Bounded: a new session past `max_sessions` live ones is
//! refused (the server answers 503).

use std::sync::Arc;

use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::Store;

#[derive(Debug, Clone)]
pub struct StoreSessions {
    store: Arc<dyn Store>,
    max_sessions: u64,
}

impl StoreSessions {
    pub fn new(store: Arc<dyn Store>, max_sessions: usize) -> Self {
        Self { store, max_sessions: u64::try_from(max_sessions.max(1)).unwrap_or(u64::MAX) }
    }

    /// Sessions not yet expired (0 when the store cannot say).
    pub async fn len(&self) -> u64 {
        self.store.live_sessions(crate::now()).await.unwrap_or(0)
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Whether a new session would be refused.
    pub async fn is_full(&self) -> bool {
        match self.store.live_sessions(crate::now()).await {
            Ok(live) => live >= self.max_sessions,
            Err(e) => {
                tracing::error!(error = %e, "session count unreadable");
                true
            }
        }
    }
}

fn backend(e: crate::StoreError) -> session_store::Error {
    // The detail goes to the log once, here; the session layer only sees that it failed.
    tracing::error!(error = %e, "session store");
    session_store::Error::Backend("the session store failed".into())
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))
}

#[async_trait::async_trait]
impl SessionStore for StoreSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        if self.is_full().await {
            return Err(session_store::Error::Backend("the session limit is reached".into()));
        }
        loop {
            let expires = record.expiry_date.unix_timestamp();
            let created = self
                .store
                .create_session(&record.id.to_string(), &encode(record)?, expires)
                .await
                .map_err(backend)?;
            if created {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let expires = record.expiry_date.unix_timestamp();
        self.store
            .save_session(&record.id.to_string(), &encode(record)?, expires)
            .await
            .map_err(backend)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let data = self.store.load_session(&id.to_string(), crate::now()).await.map_err(backend)?;
        data.map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| session_store::Error::Decode(e.to_string()))
        })
        .transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.store.delete_session(&id.to_string()).await.map_err(backend)
    }
}
