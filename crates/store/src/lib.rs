//! Member History's durable state behind one trait, [`Store`]: browser sessions, launches
//! (with the plan's answer, the selection and what was written), history snapshots, jobs
//! with leases, and the audit log. [`SqlStore`] implements it on SQLite (the embedded
//! default, a file with WAL) or PostgreSQL (several servers on one database) through sqlx;
//! every record holding patient data or tokens is compressed and sealed ([`seal`]).
//!
//! The store keeps bytes: what a launch holds is the service's business, not this crate's.

pub mod audit;
pub mod jobs;
pub mod seal;
pub mod sessions;
mod sql;
#[cfg(feature = "testing")]
pub mod testing;

pub use audit::{AuditAction, AuditEntry, AuditOutcome};
pub use jobs::{Enqueued, Job, JobKind, JobOutcome, JobRecord, JobStatus, NewJob};
pub use seal::Sealer;
pub use sessions::StoreSessions;
pub use sql::{Engine, SqlStore};

/// Seconds since the Unix epoch (what every `now` and expiry here is).
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Why the store failed. The detail is for the log; the clinician is told the state could
/// not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store key: {0}")]
    Key(String),
    #[error("sealed record: {0}")]
    Seal(String),
    #[error("unsupported database URL {0:?}: give sqlite://… or postgres://…")]
    Url(String),
}

/// A launch as stored: its version (bumped by every update) and its bytes.
#[derive(Debug, Clone)]
pub struct StoredLaunch {
    pub version: i64,
    pub data: Vec<u8>,
}

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub launches: u64,
    pub sessions: u64,
    pub jobs: u64,
}

/// Everything Member History keeps beyond one request.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a new launch (version 1).
    async fn insert_launch(&self, id: &str, data: &[u8], now: i64) -> Result<(), StoreError>;
    /// The launch, touched as used at `now`.
    async fn load_launch(&self, id: &str, now: i64) -> Result<Option<StoredLaunch>, StoreError>;
    /// Replaces the launch if it is still at `expected`; the new version, or `None` when
    /// another request changed it first (the caller reloads and applies its change again).
    async fn update_launch(
        &self,
        id: &str,
        expected: i64,
        data: &[u8],
        now: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// Stores one history snapshot of a launch, dropping the launch's older ones.
    async fn put_history(
        &self,
        launch_id: &str,
        id: &str,
        data: &[u8],
        now: i64,
    ) -> Result<(), StoreError>;
    async fn load_history(&self, launch_id: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a new session; `false` when the id is taken.
    async fn create_session(&self, id: &str, data: &[u8], expires: i64)
        -> Result<bool, StoreError>;
    async fn save_session(&self, id: &str, data: &[u8], expires: i64) -> Result<(), StoreError>;
    async fn load_session(&self, id: &str, now: i64) -> Result<Option<Vec<u8>>, StoreError>;
    async fn delete_session(&self, id: &str) -> Result<(), StoreError>;
    /// Sessions not yet expired.
    async fn live_sessions(&self, now: i64) -> Result<u64, StoreError>;

    /// Queues a job; with a `dedupe_key` already queued (and not finished), the existing
    /// job, not new.
    async fn enqueue(&self, job: NewJob, now: i64) -> Result<Enqueued, StoreError>;
    /// Leases the next due job of `kind` (queued, or running with an expired lease) to
    /// `worker` until `now + lease`. Two workers never hold one job.
    async fn claim(
        &self,
        kind: JobKind,
        worker: &str,
        lease: i64,
        now: i64,
    ) -> Result<Option<Job>, StoreError>;
    /// Ends a job `worker` holds; `false` when the lease was lost (another worker took it).
    async fn finish(
        &self,
        id: &str,
        worker: &str,
        outcome: JobOutcome,
        result: &[u8],
        now: i64,
    ) -> Result<bool, StoreError>;
    async fn job(&self, id: &str) -> Result<Option<JobStatus>, StoreError>;
    /// Saves a running job's progress (`payload`) and holds its lease until `lease_until`;
    /// `false` when `worker` no longer holds it.
    async fn renew(
        &self,
        id: &str,
        worker: &str,
        payload: &[u8],
        lease_until: i64,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// The jobs of `kind` about `subject`, newest first (at most `limit`).
    async fn jobs_about(
        &self,
        kind: JobKind,
        subject: &str,
        limit: i64,
    ) -> Result<Vec<JobRecord>, StoreError>;

    /// Records the first use of the token `jti` from `issuer`, valid until `expires_at`;
    /// `false` when it was used before (a replay). Expired uses are forgotten by [`purge`].
    ///
    /// [`purge`]: Store::purge
    async fn first_use(&self, issuer: &str, jti: &str, expires_at: i64)
        -> Result<bool, StoreError>;

    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Audit entries recorded at or after `since` (milliseconds), oldest first.
    async fn audit_since(&self, since_ms: i64) -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes launches (with their histories and jobs) last used before `idle_before`, jobs
    /// of no launch untouched since then, and sessions and token uses expired by `now`. The
    /// audit log stays.
    async fn purge(&self, now: i64, idle_before: i64) -> Result<Purged, StoreError>;
}
