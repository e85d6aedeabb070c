//! The store's contract, run on both engines: SQLite always, PostgreSQL (a private server
//! started here) where installed, and always under CI.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use store::testing::Postgres;
use store::{AuditAction, AuditEntry, AuditOutcome, JobKind, JobOutcome, JobStatus, NewJob};
use store::{Sealer, SqlStore, Store};

fn sealer() -> Sealer {
    Sealer::new(&[42; 32])
}

async fn each_engine(check: impl AsyncFn(Arc<dyn Store>)) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqlStore::sqlite_in(dir.path(), sealer()).await.unwrap();
    check(Arc::new(sqlite)).await;
    if let Some(pg) = Postgres::start() {
        let postgres = SqlStore::connect(&pg.url, sealer()).await.unwrap();
        check(Arc::new(postgres)).await;
    }
}

#[tokio::test]
async fn a_launch_update_from_a_stale_version_is_refused() {
    each_engine(async |store| {
        store.insert_launch("l1", b"one", 100).await.unwrap();
        let read = store.load_launch("l1", 100).await.unwrap().unwrap();
        assert_eq!((read.version, read.data.as_slice()), (1, b"one".as_slice()));
        assert_eq!(store.update_launch("l1", 1, b"two", 101).await.unwrap(), Some(2));
        assert_eq!(store.update_launch("l1", 1, b"lost", 102).await.unwrap(), None);
        assert_eq!(store.load_launch("l1", 103).await.unwrap().unwrap().data, b"two");
        assert!(store.load_launch("other", 103).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_new_history_snapshot_replaces_the_old_one() {
    each_engine(async |store| {
        store.insert_launch("l1", b"{}", 100).await.unwrap();
        store.put_history("l1", "h1", b"first", 100).await.unwrap();
        store.put_history("l1", "h2", b"second", 101).await.unwrap();
        assert!(store.load_history("l1", "h1").await.unwrap().is_none());
        assert_eq!(store.load_history("l1", "h2").await.unwrap().unwrap(), b"second");
    })
    .await;
}

#[tokio::test]
async fn sessions_expire_and_an_id_is_never_created_twice() {
    each_engine(async |store| {
        assert!(store.create_session("s1", b"a", 200).await.unwrap());
        assert!(!store.create_session("s1", b"b", 200).await.unwrap());
        store.save_session("s1", b"c", 200).await.unwrap();
        assert_eq!(store.load_session("s1", 150).await.unwrap().unwrap(), b"c");
        assert!(store.load_session("s1", 200).await.unwrap().is_none(), "expired");
        assert_eq!(store.live_sessions(150).await.unwrap(), 1);
        store.delete_session("s1").await.unwrap();
        assert_eq!(store.live_sessions(150).await.unwrap(), 0);
    })
    .await;
}

fn job(key: &str) -> NewJob {
    NewJob {
        kind: JobKind::WriteBack,
        dedupe_key: Some(key.into()),
        launch_id: None,
        subject: None,
        payload: b"work".to_vec(),
        run_after: 0,
        leased_to: None,
    }
}

#[tokio::test]
async fn two_workers_never_hold_one_job() {
    each_engine(async |store| {
        let first = store.enqueue(job("k1"), 10).await.unwrap();
        assert!(first.new);
        let id = first.id;
        let again = store.enqueue(job("k1"), 11).await.unwrap();
        assert_eq!((again.id.as_str(), again.new), (id.as_str(), false), "queued once");
        // Many workers race for the one job at once.
        let claims =
            futures::future::join_all(
                (0..16).map(|w| {
                    let store = store.clone();
                    async move {
                        store.claim(JobKind::WriteBack, &format!("w{w}"), 30, 20).await.unwrap()
                    }
                }),
            )
            .await;
        let held: Vec<_> = claims.into_iter().flatten().collect();
        assert_eq!(held.len(), 1, "exactly one worker holds the job");
        assert_eq!(held[0].payload, b"work");
        assert!(store.claim(JobKind::WriteBack, "late", 30, 49).await.unwrap().is_none());
        // The holder dies: its lease runs out and another worker takes over.
        let taken = store.claim(JobKind::WriteBack, "w-next", 30, 51).await.unwrap().unwrap();
        assert_eq!((taken.id.as_str(), taken.attempts), (id.as_str(), 2));
        let first = held[0].clone();
        assert!(
            !store.finish(&first.id, "not-the-holder", JobOutcome::Done, b"", 52).await.unwrap(),
            "a lost lease cannot finish the job"
        );
        assert!(store.finish(&id, "w-next", JobOutcome::Done, b"ok", 53).await.unwrap());
        assert_eq!(store.job(&id).await.unwrap(), Some(JobStatus::Done { result: b"ok".to_vec() }));
        assert!(store.claim(JobKind::WriteBack, "again", 30, 100).await.unwrap().is_none());
        assert_ne!(store.enqueue(job("k1"), 101).await.unwrap().id, id, "a finished key is free");
    })
    .await;
}

#[tokio::test]
async fn a_long_job_saves_its_progress_holds_its_lease_and_is_found_by_subject() {
    each_engine(async |store| {
        let mut request = job("provider-access:ehr|p1|plan");
        request.kind = JobKind::ProviderAccess;
        request.subject = Some("ehr|p1|plan".into());
        request.leased_to = Some(("w1".into(), 30));
        let id = store.enqueue(request, 10).await.unwrap().id;
        // Polling: progress saved, lease held past its first end.
        assert!(store.renew(&id, "w1", b"exporting", 100, 20).await.unwrap());
        assert!(store.claim(JobKind::ProviderAccess, "w2", 30, 60).await.unwrap().is_none());
        assert!(!store.renew(&id, "w2", b"stolen", 200, 61).await.unwrap(), "not the holder");
        let found = store.jobs_about(JobKind::ProviderAccess, "ehr|p1|plan", 5).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].payload, b"exporting");
        assert_eq!(found[0].status, JobStatus::Running { attempts: 1 });
        assert_eq!((found[0].created_at, found[0].updated_at), (10, 20));
        // The server stops: the lease runs out and another takes the job with its progress.
        let taken = store.claim(JobKind::ProviderAccess, "w2", 30, 101).await.unwrap().unwrap();
        assert_eq!(taken.payload, b"exporting");
        assert!(store.finish(&id, "w2", JobOutcome::Done, b"items", 102).await.unwrap());
        assert!(store.jobs_about(JobKind::ProviderAccess, "other", 5).await.unwrap().is_empty());
        // Jobs of no launch go with retention too.
        assert_eq!(store.purge(200, 150).await.unwrap().jobs, 1);
        assert!(store
            .jobs_about(JobKind::ProviderAccess, "ehr|p1|plan", 5)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn retention_deletes_idle_launches_and_expired_sessions_but_keeps_the_audit() {
    each_engine(async |store| {
        store.insert_launch("old", b"{}", 100).await.unwrap();
        store.put_history("old", "h", b"items", 100).await.unwrap();
        store.insert_launch("new", b"{}", 1_000).await.unwrap();
        store.create_session("gone", b"", 500).await.unwrap();
        store.create_session("live", b"", 5_000).await.unwrap();
        let mut with_launch = job("j");
        with_launch.launch_id = Some("old".into());
        store.enqueue(with_launch, 100).await.unwrap();
        store.audit(&entry(100_000)).await.unwrap();
        let purged = store.purge(900, 500).await.unwrap();
        assert_eq!((purged.launches, purged.sessions, purged.jobs), (1, 1, 1));
        assert!(store.load_launch("old", 900).await.unwrap().is_none());
        assert!(store.load_history("old", "h").await.unwrap().is_none());
        assert!(store.load_launch("new", 900).await.unwrap().is_some());
        assert!(store.load_session("live", 900).await.unwrap().is_some());
        assert_eq!(store.audit_since(0).await.unwrap().len(), 1);
    })
    .await;
}

fn entry(at_ms: i64) -> AuditEntry {
    AuditEntry {
        at_ms,
        action: AuditAction::PlanHistoryRead,
        outcome: AuditOutcome::Success,
        user: Some("Practitioner/1".into()),
        ehr: "ehr".into(),
        ehr_base: "http://ehr/fhir".into(),
        patient: "p".into(),
        plan: Some("plan".into()),
        count: 3,
        references: vec![],
        note: None,
    }
}

#[tokio::test]
async fn the_audit_log_reads_back_from_a_time_in_order() {
    each_engine(async |store| {
        for at in [3_000, 1_000, 2_000] {
            store.audit(&entry(at)).await.unwrap();
        }
        let since: Vec<i64> =
            store.audit_since(2_000).await.unwrap().iter().map(|e| e.at_ms).collect();
        assert_eq!(since, [2_000, 3_000]);
    })
    .await;
}

#[tokio::test]
async fn a_record_cannot_be_read_under_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite_in(dir.path(), sealer()).await.unwrap();
    store.insert_launch("l", b"secret", 1).await.unwrap();
    drop(store);
    let other = SqlStore::sqlite_in(dir.path(), Sealer::new(&[1; 32])).await.unwrap();
    assert!(other.load_launch("l", 2).await.is_err());
    let raw = std::fs::read(dir.path().join("member-history.sqlite")).unwrap();
    assert!(!raw.windows(6).any(|w| w == b"secret"), "nothing in clear on disk");
}

#[tokio::test]
async fn a_token_is_used_once_until_it_expires() {
    each_engine(async |store| {
        assert!(store.first_use("plan-a", "t1", 200).await.unwrap());
        assert!(!store.first_use("plan-a", "t1", 200).await.unwrap(), "a replay");
        assert!(store.first_use("plan-b", "t1", 200).await.unwrap(), "another issuer's id");
        store.purge(100, 0).await.unwrap();
        assert!(!store.first_use("plan-a", "t1", 200).await.unwrap(), "not expired yet");
        store.purge(201, 0).await.unwrap();
        assert!(store.first_use("plan-a", "t1", 300).await.unwrap(), "forgotten once expired");
    })
    .await;
}
