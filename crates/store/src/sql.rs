//! [`Store`] on SQLite or PostgreSQL through sqlx's `Any` driver: one set of queries
//! (`$n` parameters, `ON CONFLICT`, `RETURNING` mean the same on both), one migration
//! directory per engine for the column types.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::audit::AuditEntry;
use crate::jobs::{Enqueued, Job, JobKind, JobOutcome, JobRecord, JobStatus, NewJob};
use crate::seal::Sealer;
use crate::{Purged, Store, StoreError, StoredLaunch};

/// Which engine a pool speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The store on a database.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    sealer: Sealer,
    engine: Engine,
}

impl SqlStore {
    /// Opens `url` (`sqlite://PATH` or `postgres://…`), creating an SQLite file when absent,
    /// and applies the migrations.
    pub async fn connect(url: &str, sealer: Sealer) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (engine, url, max) = if url.starts_with("sqlite:") {
            let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
            // One writer at a time in any case; readers share the WAL.
            (Engine::Sqlite, url, 4)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Engine::Postgres, url.to_owned(), 16)
        } else {
            return Err(StoreError::Url(url.chars().take(16).collect()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        match engine {
            Engine::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            Engine::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        Ok(Self { pool, sealer, engine })
    }

    /// The embedded default: `member-history.sqlite` in `data_dir`.
    pub async fn sqlite_in(data_dir: &Path, sealer: Sealer) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Key(format!("{}: {e}", data_dir.display())))?;
        let path = data_dir.join("member-history.sqlite");
        Self::connect(&format!("sqlite://{}", path.display()), sealer).await
    }

    /// A job's state from a row whose first columns are `state, attempts, result`.
    fn job_status(&self, id: &str, row: &AnyRow) -> Result<JobStatus, StoreError> {
        let state: String = row.try_get(0)?;
        let result = || -> Result<Vec<u8>, StoreError> {
            let sealed: Option<Vec<u8>> = row.try_get(2)?;
            sealed.map(|s| self.open(&job_aad(id), &s)).transpose().map(Option::unwrap_or_default)
        };
        Ok(match state.as_str() {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running { attempts: row.try_get(1)? },
            "done" => JobStatus::Done { result: result()? },
            _ => JobStatus::Failed { result: result()? },
        })
    }

    /// The unfinished job queued under `key`.
    async fn pending_with(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM jobs WHERE dedupe_key = $1 AND state IN ('queued', 'running')",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    fn seal(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.sealer.seal(aad, plain)
    }

    fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.sealer.open(aad, sealed)
    }
}

fn launch_aad(id: &str) -> String {
    format!("launch:{id}")
}

fn history_aad(launch_id: &str, id: &str) -> String {
    format!("history:{launch_id}:{id}")
}

fn session_aad(id: &str) -> String {
    format!("session:{id}")
}

fn job_aad(id: &str) -> String {
    format!("job:{id}")
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn insert_launch(&self, id: &str, data: &[u8], now: i64) -> Result<(), StoreError> {
        let sealed = self.seal(&launch_aad(id), data)?;
        sqlx::query(
            "INSERT INTO launches (id, version, data, created_at, last_used) VALUES ($1, 1, $2, $3, $3)",
        )
        .bind(id)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn load_launch(&self, id: &str, now: i64) -> Result<Option<StoredLaunch>, StoreError> {
        // Touching the row on every read would make each page view a write; once a minute
        // is enough for a retention counted in hours.
        sqlx::query("UPDATE launches SET last_used = $1 WHERE id = $2 AND last_used < $3")
            .bind(now)
            .bind(id)
            .bind(now - 60)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT version, data FROM launches WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let version: i64 = row.try_get(0)?;
            let sealed: Vec<u8> = row.try_get(1)?;
            Ok(StoredLaunch { version, data: self.open(&launch_aad(id), &sealed)? })
        })
        .transpose()
    }

    async fn update_launch(
        &self,
        id: &str,
        expected: i64,
        data: &[u8],
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let sealed = self.seal(&launch_aad(id), data)?;
        let done = sqlx::query(
            "UPDATE launches SET data = $1, version = version + 1, last_used = $2 \
             WHERE id = $3 AND version = $4",
        )
        .bind(sealed)
        .bind(now)
        .bind(id)
        .bind(expected)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then_some(expected + 1))
    }

    async fn put_history(
        &self,
        launch_id: &str,
        id: &str,
        data: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(&history_aad(launch_id, id), data)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM histories WHERE launch_id = $1 AND id <> $2")
            .bind(launch_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO histories (launch_id, id, data, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (launch_id, id) DO UPDATE SET data = excluded.data",
        )
        .bind(launch_id)
        .bind(id)
        .bind(sealed)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn load_history(&self, launch_id: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT data FROM histories WHERE launch_id = $1 AND id = $2")
            .bind(launch_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| self.open(&history_aad(launch_id, id), &row.try_get::<Vec<u8>, _>(0)?))
            .transpose()
    }

    async fn create_session(
        &self,
        id: &str,
        data: &[u8],
        expires: i64,
    ) -> Result<bool, StoreError> {
        let sealed = self.seal(&session_aad(id), data)?;
        let done = sqlx::query(
            "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(sealed)
        .bind(expires)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn save_session(&self, id: &str, data: &[u8], expires: i64) -> Result<(), StoreError> {
        let sealed = self.seal(&session_aad(id), data)?;
        sqlx::query(
            "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
        )
        .bind(id)
        .bind(sealed)
        .bind(expires)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn load_session(&self, id: &str, now: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT data FROM sessions WHERE id = $1 AND expires_at > $2")
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| self.open(&session_aad(id), &row.try_get::<Vec<u8>, _>(0)?)).transpose()
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn live_sessions(&self, now: i64) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM sessions WHERE expires_at > $1")
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
    }

    async fn enqueue(&self, job: NewJob, now: i64) -> Result<Enqueued, StoreError> {
        if let Some(key) = &job.dedupe_key {
            if let Some(id) = self.pending_with(key).await? {
                return Ok(Enqueued { id, new: false });
            }
            // A finished job with the key gives the key up to the new one.
            sqlx::query("UPDATE jobs SET dedupe_key = NULL WHERE dedupe_key = $1")
                .bind(key)
                .execute(&self.pool)
                .await?;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let sealed = self.seal(&job_aad(&id), &job.payload)?;
        let (state, owner, until) = match &job.leased_to {
            Some((worker, lease)) => ("running", Some(worker.clone()), Some(now + lease)),
            None => ("queued", None, None),
        };
        let dedupe_key = job.dedupe_key.clone();
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, kind, dedupe_key, launch_id, payload, state, attempts, run_after, \
             lease_owner, lease_until, created_at, updated_at, subject) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)",
        )
        .bind(&id)
        .bind(job.kind.as_str())
        .bind(job.dedupe_key)
        .bind(job.launch_id)
        .bind(sealed)
        .bind(state)
        .bind(i64::from(job.leased_to.is_some()))
        .bind(job.run_after)
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(job.subject)
        .execute(&self.pool)
        .await;
        match (inserted, dedupe_key) {
            (Ok(_), _) => Ok(Enqueued { id, new: true }),
            // Queued by another request between the look and the insert.
            (Err(sqlx::Error::Database(e)), Some(key)) if e.is_unique_violation() => {
                let id = self
                    .pending_with(&key)
                    .await?
                    .ok_or(StoreError::Database(sqlx::Error::Database(e)))?;
                Ok(Enqueued { id, new: false })
            }
            (Err(e), _) => Err(e.into()),
        }
    }

    async fn claim(
        &self,
        kind: JobKind,
        worker: &str,
        lease: i64,
        now: i64,
    ) -> Result<Option<Job>, StoreError> {
        // The due condition is repeated outside the sub-select: on PostgreSQL a second
        // worker that raced for the same row re-checks it after the first commits, and
        // finds the row leased.
        let row = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT id FROM jobs WHERE kind = $4 AND run_after <= $3 \
                 AND (state = 'queued' OR (state = 'running' AND lease_until < $3)) \
                 ORDER BY run_after, created_at LIMIT 1) \
             AND (state = 'queued' OR (state = 'running' AND lease_until < $3)) \
             RETURNING id, launch_id, payload, attempts",
        )
        .bind(worker)
        .bind(now + lease)
        .bind(now)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row: AnyRow| {
            let id: String = row.try_get(0)?;
            let payload = self.open(&job_aad(&id), &row.try_get::<Vec<u8>, _>(2)?)?;
            Ok(Job { kind, launch_id: row.try_get(1)?, payload, attempts: row.try_get(3)?, id })
        })
        .transpose()
    }

    async fn finish(
        &self,
        id: &str,
        worker: &str,
        outcome: JobOutcome,
        result: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        let state = match outcome {
            JobOutcome::Done => "done",
            JobOutcome::Failed => "failed",
        };
        let sealed = self.seal(&job_aad(id), result)?;
        let done = sqlx::query(
            "UPDATE jobs SET state = $1, result = $2, lease_owner = NULL, lease_until = NULL, \
             updated_at = $3 WHERE id = $4 AND lease_owner = $5 AND state = 'running'",
        )
        .bind(state)
        .bind(sealed)
        .bind(now)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn job(&self, id: &str) -> Result<Option<JobStatus>, StoreError> {
        let row = sqlx::query("SELECT state, attempts, result FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| self.job_status(id, &row)).transpose()
    }

    async fn renew(
        &self,
        id: &str,
        worker: &str,
        payload: &[u8],
        lease_until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let sealed = self.seal(&job_aad(id), payload)?;
        let renewed = sqlx::query(
            "UPDATE jobs SET payload = $1, lease_until = $2, updated_at = $3 \
             WHERE id = $4 AND lease_owner = $5 AND state = 'running'",
        )
        .bind(sealed)
        .bind(lease_until)
        .bind(now)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn jobs_about(
        &self,
        kind: JobKind,
        subject: &str,
        limit: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, attempts, result, id, payload, created_at, updated_at FROM jobs \
             WHERE kind = $1 AND subject = $2 ORDER BY created_at DESC, id LIMIT $3",
        )
        .bind(kind.as_str())
        .bind(subject)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get(3)?;
                Ok(JobRecord {
                    status: self.job_status(&id, row)?,
                    payload: self.open(&job_aad(&id), &row.try_get::<Vec<u8>, _>(4)?)?,
                    created_at: row.try_get(5)?,
                    updated_at: row.try_get(6)?,
                    id,
                })
            })
            .collect()
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let text = serde_json::to_string(entry).map_err(|e| StoreError::Seal(e.to_string()))?;
        sqlx::query("INSERT INTO audit (at_ms, entry) VALUES ($1, $2)")
            .bind(entry.at_ms)
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit_since(&self, since_ms: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT entry FROM audit WHERE at_ms >= $1 ORDER BY at_ms, seq")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get(0)?;
                serde_json::from_str(&text).map_err(|e| StoreError::Seal(e.to_string()))
            })
            .collect()
    }

    async fn first_use(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO token_uses (issuer, jti, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (issuer, jti) DO NOTHING",
        )
        .bind(issuer)
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn purge(&self, now: i64, idle_before: i64) -> Result<Purged, StoreError> {
        let mut tx = self.pool.begin().await?;
        let idle = "SELECT id FROM launches WHERE last_used < $1";
        let jobs = sqlx::query(&format!("DELETE FROM jobs WHERE launch_id IN ({idle})"))
            .bind(idle_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(&format!("DELETE FROM histories WHERE launch_id IN ({idle})"))
            .bind(idle_before)
            .execute(&mut *tx)
            .await?;
        let unattached =
            sqlx::query("DELETE FROM jobs WHERE launch_id IS NULL AND updated_at < $1")
                .bind(idle_before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let launches = sqlx::query("DELETE FROM launches WHERE last_used < $1")
            .bind(idle_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM token_uses WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Purged { launches, sessions, jobs: jobs + unattached })
    }
}
