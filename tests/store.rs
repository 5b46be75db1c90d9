//! Integration tests of `bakewatch::store` on real SQLite files in temp dirs: migrations,
//! reopening, refusing a newer schema, every call's round trip, shutdown, and the `kill -9`
//! durability loop.
//!
//! The durability test re-runs this very test binary as a writer child
//! (`kill9_writer_child`, selected with `--exact` and told what to do through its environment),
//! SIGKILLs it at random moments and checks that everything it reported as committed is there.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bakewatch::checks::{Reason, Status};
use bakewatch::history::Sample;
use bakewatch::store::{
    DeploymentRow, DeploymentState, Insertion, Queued, SCHEMA_VERSION, Store, StoreError, Update,
};
use rand::Rng;
use serde_json::json;
use tempfile::TempDir;

fn deployment(id: &str, service: &str, created_at_ms: u64) -> DeploymentRow {
    DeploymentRow {
        id: id.to_string(),
        service: service.to_string(),
        environment: "production".to_string(),
        version: "2.0.0".to_string(),
        labels: json!({"team": "shop", "commit": "abc123"}),
        created_at_ms,
        state: DeploymentState::Pending,
        record: json!({"id": id, "baseline": {"api-health": {"runs": 40, "p95_ms": 11.7}}}),
        revision: 1,
        updated_at_ms: created_at_ms,
    }
}

fn sample(at_ms: u64, duration_us: u32, status: Status, reason: Reason) -> Sample {
    Sample {
        at_ms,
        duration_us,
        status,
        reason,
    }
}

/// A plain connection beside the store, for what the store API deliberately does not offer.
fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn integrity(path: &Path) -> String {
    raw(path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn user_version(path: &Path) -> i64 {
    raw(path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn wal_file(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

#[tokio::test]
async fn open_creates_directories_and_migrates_an_empty_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("var/lib/bakewatch/state.db");
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.path(), path);
    assert!(path.is_file());
    let conn = raw(&path);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(user_version(&path), i64::from(SCHEMA_VERSION));
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    assert_eq!(
        tables,
        [
            "deployments",
            "outbox",
            "outcomes",
            "receiver_refs",
            "rule_states"
        ]
    );
    drop(conn);
    store.close().await;
    assert_eq!(integrity(&path), "ok");
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).await.unwrap();
    store
        .insert_deployment(deployment("d1", "shop", 1_000))
        .await
        .unwrap();
    store
        .append_outcomes(&[("api", sample(5_000, 1_200, Status::Pass, Reason::Ok))])
        .await
        .unwrap();
    store
        .put_rule_state("slow", "api", &json!({"state": "firing"}))
        .await
        .unwrap();
    let id = store
        .outbox_push("pager", "slow/api", &json!({"a": 1}))
        .await
        .unwrap();
    store.close().await;

    // Opening again runs no migration and finds it all.
    let store = Store::open(&path).await.unwrap();
    assert_eq!(user_version(&path), i64::from(SCHEMA_VERSION));
    let d = store.get_deployment("d1").await.unwrap().unwrap();
    assert_eq!(d, deployment("d1", "shop", 1_000));
    assert_eq!(
        store.outcomes_since("api", 0).await.unwrap(),
        [sample(5_000, 1_200, Status::Pass, Reason::Ok)]
    );
    assert_eq!(store.load_rule_states().await.unwrap().len(), 1);
    let due = store.outbox_due(u64::MAX, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, id);
    store.close().await;
}

#[tokio::test]
async fn a_database_from_a_newer_release_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    Store::open(&path).await.unwrap().close().await;
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();

    let err = Store::open(&path).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found, known, .. }
            if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("newer"), "{msg}");
    // Refusing touched nothing.
    assert_eq!(user_version(&path), i64::from(SCHEMA_VERSION + 1));
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_with_its_path() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = Store::open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("state.db"), "{err}");
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_is_reported() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "").unwrap();
    let err = Store::open(file.join("sub/state.db")).await.unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[tokio::test]
async fn insert_returns_the_existing_row_for_a_known_id() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    let first = deployment("shop-2.0.0", "shop", 1_000);
    assert_eq!(
        store.insert_deployment(first.clone()).await.unwrap(),
        Insertion::Inserted
    );
    let mut other = deployment("shop-2.0.0", "shop", 2_000);
    other.version = "9.9.9".to_string();
    // The caller compares bodies; the store neither overwrites nor fails.
    assert_eq!(
        store.insert_deployment(other).await.unwrap(),
        Insertion::Existing(first.clone())
    );
    assert_eq!(
        store.get_deployment("shop-2.0.0").await.unwrap(),
        Some(first)
    );
    assert_eq!(store.get_deployment("nope").await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn update_applies_only_a_newer_revision() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    store
        .insert_deployment(deployment("d1", "shop", 1_000))
        .await
        .unwrap();

    let verdict = json!({"verdict": "pass", "reasons": []});
    assert_eq!(
        store
            .update_deployment("d1", DeploymentState::Pass, &verdict, 5)
            .await
            .unwrap(),
        Update::Applied
    );
    // Same or older revision: refused, with the current one.
    for rev in [5, 4, 0] {
        assert_eq!(
            store
                .update_deployment("d1", DeploymentState::Fail, &json!({}), rev)
                .await
                .unwrap(),
            Update::Stale {
                current_revision: 5
            }
        );
    }
    assert_eq!(
        store
            .update_deployment("ghost", DeploymentState::Fail, &json!({}), 9)
            .await
            .unwrap(),
        Update::NotFound
    );
    let d = store.get_deployment("d1").await.unwrap().unwrap();
    assert_eq!(d.state, DeploymentState::Pass);
    assert_eq!(d.record, verdict);
    assert_eq!(d.revision, 5);
    assert!(d.updated_at_ms > 1_000, "update stamps the wall clock");
    // What the update does not touch stays as registered.
    let original = deployment("d1", "shop", 1_000);
    assert_eq!(
        (
            d.service,
            d.environment,
            d.version,
            d.labels,
            d.created_at_ms
        ),
        (
            original.service,
            original.environment,
            original.version,
            original.labels,
            original.created_at_ms
        )
    );
    store.close().await;
}

#[tokio::test]
async fn list_is_newest_first_limited_and_filtered_by_service() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    // Inserted out of time order; two share a millisecond (the later insert counts as newer).
    for (id, service, at) in [
        ("shop-3", "shop", 3_000),
        ("shop-1", "shop", 1_000),
        ("cart-1", "cart", 2_000),
        ("shop-2a", "shop", 2_000),
        ("shop-2b", "shop", 2_000),
        ("cart-2", "cart", 4_000),
    ] {
        store
            .insert_deployment(deployment(id, service, at))
            .await
            .unwrap();
    }
    let ids = |rows: Vec<DeploymentRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

    assert_eq!(
        ids(store.list_deployments(None, 100).await.unwrap()),
        ["cart-2", "shop-3", "shop-2b", "shop-2a", "cart-1", "shop-1"]
    );
    assert_eq!(
        ids(store.list_deployments(Some("shop"), 100).await.unwrap()),
        ["shop-3", "shop-2b", "shop-2a", "shop-1"]
    );
    assert_eq!(
        ids(store.list_deployments(Some("shop"), 2).await.unwrap()),
        ["shop-3", "shop-2b"]
    );
    assert_eq!(
        ids(store.list_deployments(None, 1).await.unwrap()),
        ["cart-2"]
    );
    assert!(
        store
            .list_deployments(Some("nope"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_deployments(None, 0).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn pending_deployments_are_the_unconcluded_ones_oldest_first() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    for (id, at) in [("c", 3_000), ("a", 1_000), ("b", 2_000), ("d", 4_000)] {
        store
            .insert_deployment(deployment(id, "shop", at))
            .await
            .unwrap();
    }
    store
        .update_deployment("a", DeploymentState::Superseded, &json!({}), 2)
        .await
        .unwrap();
    store
        .update_deployment("d", DeploymentState::Cancelled, &json!({}), 2)
        .await
        .unwrap();
    let pending: Vec<String> = store
        .pending_deployments()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(pending, ["b", "c"]);
    store.close().await;
}

#[tokio::test]
async fn outcomes_round_trip_per_check_and_prune_by_age() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    let api = [
        sample(1_000, 900, Status::Pass, Reason::Ok),
        sample(2_000, 1_500, Status::Degraded, Reason::Assertion),
        sample(3_000, 30_000_000, Status::Fail, Reason::Timeout),
        sample(4_000, u32::MAX, Status::Error, Reason::NoData),
    ];
    let mut batch: Vec<(String, Sample)> = api.iter().map(|s| ("api".to_string(), *s)).collect();
    batch.push((
        "db".to_string(),
        sample(2_500, 10, Status::Fail, Reason::Auth),
    ));
    assert_eq!(store.append_outcomes(&batch).await.unwrap(), 5);
    // Borrowed names work as well.
    store
        .append_outcomes(&[("db", sample(3_500, 11, Status::Pass, Reason::Ok))])
        .await
        .unwrap();
    assert_eq!(store.append_outcomes::<&str>(&[]).await.unwrap(), 0);

    assert_eq!(store.outcomes_since("api", 0).await.unwrap(), api);
    assert_eq!(store.outcomes_since("api", 2_000).await.unwrap(), api[1..]);
    assert_eq!(store.outcomes_since("api", 4_001).await.unwrap(), []);
    assert_eq!(store.outcomes_since("db", 0).await.unwrap().len(), 2);
    assert_eq!(store.outcomes_since("other", 0).await.unwrap(), []);

    // Retention: strictly older than the cut is gone, across checks.
    assert_eq!(store.prune_outcomes(3_000).await.unwrap(), 3);
    assert_eq!(store.outcomes_since("api", 0).await.unwrap(), api[2..]);
    assert_eq!(
        store.outcomes_since("db", 0).await.unwrap(),
        [sample(3_500, 11, Status::Pass, Reason::Ok)]
    );
    assert_eq!(store.prune_outcomes(3_000).await.unwrap(), 0);
    store.close().await;
}

#[tokio::test]
async fn ten_thousand_outcomes_in_one_call() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).await.unwrap();
    let checks = ["api", "db", "cache", "journey"];
    let batch: Vec<(&str, Sample)> = (0..10_000u64)
        .map(|i| {
            (
                checks[(i % 4) as usize],
                sample(
                    1_000_000 + i,
                    (i * 7 % 100_000) as u32,
                    Status::Pass,
                    Reason::Ok,
                ),
            )
        })
        .collect();
    let started = Instant::now();
    assert_eq!(store.append_outcomes(&batch).await.unwrap(), 10_000);
    eprintln!("10k outcomes in one transaction: {:?}", started.elapsed());
    let api = store.outcomes_since("api", 0).await.unwrap();
    assert_eq!(api.len(), 2_500);
    assert!(api.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
    store.close().await;
    let n: i64 = raw(&path)
        .query_row("SELECT count(*) FROM outcomes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 10_000);
}

#[tokio::test]
async fn rule_states_are_replaced_per_rule_and_check() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    store
        .put_rule_state("slow", "api", &json!({"state": "pending", "since": 1}))
        .await
        .unwrap();
    store
        .put_rule_state("slow", "db", &json!({"state": "inactive"}))
        .await
        .unwrap();
    store
        .put_rule_state("errors", "api", &json!({"state": "inactive"}))
        .await
        .unwrap();
    store
        .put_rule_state("slow", "api", &json!({"state": "firing", "since": 2}))
        .await
        .unwrap();

    let states = store.load_rule_states().await.unwrap();
    let got: Vec<(&str, &str, &serde_json::Value)> = states
        .iter()
        .map(|s| (s.rule.as_str(), s.check.as_str(), &s.state))
        .collect();
    assert_eq!(
        got,
        [
            ("errors", "api", &json!({"state": "inactive"})),
            ("slow", "api", &json!({"state": "firing", "since": 2})),
            ("slow", "db", &json!({"state": "inactive"})),
        ]
    );
    assert!(states.iter().all(|s| s.updated_at_ms > 0));
    store.close().await;
}

#[tokio::test]
async fn alert_states_and_their_notifications_commit_together_or_not_at_all() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).await.unwrap();
    let queued = |key: &str| Queued {
        notifier: "pager".into(),
        dedup_key: key.into(),
        payload: json!({ "event": key }).to_string(),
    };
    store
        .put_rule_states_queuing(
            vec![
                ("slow".into(), "api".into(), json!({"state": "firing"})),
                ("slow".into(), "db".into(), json!({"state": "inactive"})),
            ],
            vec![queued("slow/api/1")],
        )
        .await
        .unwrap();
    assert_eq!(store.load_rule_states().await.unwrap().len(), 2);
    let due = store.outbox_due(u64::MAX, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].dedup_key, "slow/api/1");
    assert_eq!(due[0].payload, json!({ "event": "slow/api/1" }));

    // A write that fails half-way (here a trigger refuses one state) leaves neither the
    // notification nor any of the states.
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON rule_states WHEN NEW.rule = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let err = store
        .put_rule_states_queuing(
            vec![
                ("errors".into(), "api".into(), json!({"state": "firing"})),
                ("boom".into(), "api".into(), json!({"state": "firing"})),
            ],
            vec![queued("errors/api/1")],
        )
        .await;
    assert!(err.is_err());
    assert_eq!(store.load_rule_states().await.unwrap().len(), 2);
    assert_eq!(store.outbox_due(u64::MAX, 10).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn outbox_items_are_due_until_delivered() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    let now = bakewatch::util::unix_millis(std::time::SystemTime::now());
    let a = store
        .outbox_push("pager", "slow/api/d1", &json!({"event": "trigger"}))
        .await
        .unwrap();
    let b = store
        .outbox_push("slack", "slow/api/d1", &json!({"text": "firing"}))
        .await
        .unwrap();
    assert!(b > a);

    // Not due before it was pushed; due now, in push order, honouring the limit.
    assert!(store.outbox_due(now - 60_000, 10).await.unwrap().is_empty());
    let due = store.outbox_due(now + 60_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(due[0].notifier, "pager");
    assert_eq!(due[0].dedup_key, "slow/api/d1");
    assert_eq!(due[0].payload, json!({"event": "trigger"}));
    assert_eq!((due[0].attempts, due[0].last_error.as_deref()), (0, None));
    assert_eq!(store.outbox_due(now + 60_000, 1).await.unwrap().len(), 1);

    // A failure pushes `a` back; `b` is delivered.
    assert!(
        store
            .outbox_mark_failed(a, now + 30_000, "connect: connection refused")
            .await
            .unwrap()
    );
    assert!(store.outbox_mark_delivered(b).await.unwrap());
    assert!(!store.outbox_mark_delivered(b).await.unwrap(), "only once");
    assert!(!store.outbox_mark_failed(b, now, "late").await.unwrap());
    assert!(!store.outbox_mark_delivered(999).await.unwrap());

    assert!(store.outbox_due(now + 10_000, 10).await.unwrap().is_empty());
    let due = store.outbox_due(now + 30_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, a);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].next_attempt_at_ms, now + 30_000);
    assert_eq!(
        due[0].last_error.as_deref(),
        Some("connect: connection refused")
    );

    // Each notifier's queue is first in, first out: `c`, queued behind the failed `a`, waits
    // for it even though `c` itself is due at once.
    let c = store
        .outbox_push("pager", "slow/api/d1", &json!({"event": "resolve"}))
        .await
        .unwrap();
    assert!(store.outbox_due(now + 10_000, 10).await.unwrap().is_empty());
    assert_eq!(store.outbox_next_due().await.unwrap(), Some(now + 30_000));
    let due = store.outbox_due(now + 30_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [a, c]);
    // Dropping the head lets the rest go.
    assert!(store.outbox_mark_dropped(a, "too old").await.unwrap());
    assert!(!store.outbox_mark_failed(a, now, "late").await.unwrap());
    let due = store.outbox_due(now + 60_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [c]);
    assert!(
        store
            .outbox_delivered_with_ref(c, Some("41".into()))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .receiver_ref("pager", "slow/api/d1")
            .await
            .unwrap()
            .as_deref(),
        Some("41")
    );
    assert_eq!(store.outbox_next_due().await.unwrap(), None);

    // Retention removes delivered and dropped items only.
    assert_eq!(store.prune_outbox(u64::MAX).await.unwrap(), 3);
    assert!(store.outbox_due(u64::MAX, 10).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_store() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25u64 {
                let id = format!("t{t}-{i}");
                store
                    .insert_deployment(deployment(&id, &format!("svc{t}"), t * 1_000 + i))
                    .await
                    .unwrap();
                store
                    .append_outcomes(&[(id, sample(i, 1, Status::Pass, Reason::Ok))])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store.list_deployments(None, 1_000).await.unwrap().len(),
        400
    );
    assert_eq!(
        store
            .list_deployments(Some("svc7"), 1_000)
            .await
            .unwrap()
            .len(),
        25
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_finishes_queued_work_then_refuses_more() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_deployment(deployment(&format!("d{i}"), "shop", i))
                .await
        }));
    }
    // Let some of them queue up, then close underneath the rest.
    tokio::task::yield_now().await;
    let other = store.clone();
    store.close().await;
    assert!(matches!(
        other.get_deployment("d0").await,
        Err(StoreError::Closed)
    ));

    let mut ok = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(Insertion::Inserted) => ok.push(format!("d{i}")),
            Ok(other) => panic!("d{i}: {other:?}"),
            Err(StoreError::Closed) => {}
            Err(e) => panic!("d{i}: {e}"),
        }
    }
    // The connection is closed: its WAL was checkpointed and removed.
    assert!(!wal_file(&path).exists());
    // Every call that answered Ok is on disk; none that answered Closed is.
    let store = Store::open(&path).await.unwrap();
    let mut stored: Vec<String> = store
        .list_deployments(None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    stored.sort();
    ok.sort();
    assert_eq!(stored, ok);
    store.close().await;
}

#[tokio::test]
async fn dropping_the_last_handle_finishes_and_closes() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).await.unwrap();
    store
        .insert_deployment(deployment("d1", "shop", 1))
        .await
        .unwrap();
    let clone = store.clone();
    drop(store);
    // One handle left: still working.
    assert!(clone.get_deployment("d1").await.unwrap().is_some());
    drop(clone);
    // The thread closes the connection in the background, which removes the WAL file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal_file(&path).exists() {
        assert!(Instant::now() < deadline, "the store thread did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(integrity(&path), "ok");
}

// ---------------------------------------------------------------------------------------------
// kill -9

/// Where the writer child writes (its database path); unset in normal runs.
const WRITER_DB: &str = "BAKEWATCH_STORE_TEST_WRITER_DB";
/// The writer child's id prefix, unique per round.
const WRITER_PREFIX: &str = "BAKEWATCH_STORE_TEST_WRITER_PREFIX";
/// Outcomes the writer appends per deployment, in one call.
const WRITER_BATCH: usize = 20;
/// The writer stops by itself after this long, should nobody kill it.
const WRITER_LIFETIME: Duration = Duration::from_secs(30);
const KILL_ROUNDS: usize = 25;

/// Not a test by itself: the writer half of `committed_writes_survive_kill_9`, doing nothing
/// unless that test started it. It writes as fast as it can and prints each commit only after
/// the call returned:
/// - `committed ID`: the deployment was inserted;
/// - `updated ID`: it was then updated to `pass`, revision 2 (every other id);
/// - `outcomes ID`: a batch of outcomes under check name ID was appended.
#[test]
fn kill9_writer_child() {
    let (Ok(db), Ok(prefix)) = (std::env::var(WRITER_DB), std::env::var(WRITER_PREFIX)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&db).await.unwrap();
        // libtest has printed "test kill9_writer_child ... " without a newline: start afresh.
        println!("\nopened");
        let deadline = Instant::now() + WRITER_LIFETIME;
        let mut n = 0u64;
        while Instant::now() < deadline {
            let id = format!("{prefix}-{n}");
            let now = bakewatch::util::unix_millis(std::time::SystemTime::now());
            let inserted = store
                .insert_deployment(deployment(&id, &prefix, now))
                .await
                .unwrap();
            assert_eq!(inserted, Insertion::Inserted);
            println!("committed {id}");
            if n.is_multiple_of(2) {
                let applied = store
                    .update_deployment(&id, DeploymentState::Pass, &json!({"verdict": "pass"}), 2)
                    .await
                    .unwrap();
                assert_eq!(applied, Update::Applied);
                println!("updated {id}");
            }
            let batch: Vec<(&str, Sample)> = (0..WRITER_BATCH as u64)
                .map(|i| {
                    (
                        id.as_str(),
                        sample(now + i, 1_000, Status::Pass, Reason::Ok),
                    )
                })
                .collect();
            store.append_outcomes(&batch).await.unwrap();
            println!("outcomes {id}");
            n += 1;
        }
    });
    println!("lifetime over");
}

/// What one writer reported before it died.
#[derive(Default)]
struct Reported {
    committed: Vec<String>,
    updated: Vec<String>,
    outcomes: Vec<String>,
    opened: bool,
}

fn parse_report(stdout: &str) -> Reported {
    let mut r = Reported::default();
    for line in stdout.lines() {
        match line.split_once(' ') {
            Some(("committed", id)) => r.committed.push(id.to_string()),
            Some(("updated", id)) => r.updated.push(id.to_string()),
            Some(("outcomes", id)) => r.outcomes.push(id.to_string()),
            _ if line == "opened" => r.opened = true,
            _ => {}
        }
    }
    r
}

#[test]
fn committed_writes_survive_kill_9() {
    let dir = TempDir::new().unwrap();
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = rand::rng();
    // Every id committed so far, per database file: later rounds must not lose earlier ones.
    let mut history: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    let (mut kills, mut checked, mut before_open, mut before_first_commit) = (0, 0, 0, 0);
    let mut db = PathBuf::new();

    for round in 0..KILL_ROUNDS {
        // A fresh file every fifth round, killed early, so some kills land in open or migration.
        let fresh = round % 5 == 0;
        if fresh {
            db = dir.path().join(format!("state-{round}.db"));
        }
        let delay = Duration::from_millis(if fresh {
            rng.random_range(0..60)
        } else {
            rng.random_range(5..400)
        });
        let prefix = format!("r{round}");
        let mut child = Command::new(&exe)
            .args([
                "kill9_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_DB, &db)
            .env(WRITER_PREFIX, &prefix)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out = thread::spawn(move || {
            let mut s = String::new();
            // A killed writer may leave no newline at the end; lines are written whole or
            // not at all (each is one write of < PIPE_BUF bytes), so nothing is cut.
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the writer ended by itself ({status}):\n{out}\n{err}"
        );
        kills += 1;

        let report = parse_report(&out);
        if !report.opened {
            before_open += 1;
        }
        if report.committed.is_empty() {
            before_first_commit += 1;
        }
        let known = history.entry(db.clone()).or_default();
        known.extend(report.committed.iter().cloned());

        if !db.exists() {
            assert!(
                report.committed.is_empty(),
                "round {round}: no file, yet commits"
            );
            continue;
        }
        // A raw connection first: it replays the WAL exactly as a restarted daemon would.
        assert_eq!(integrity(&db), "ok", "round {round}");

        rt.block_on(async {
            let store = Store::open(&db)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            for id in known.iter() {
                assert!(
                    store.get_deployment(id).await.unwrap().is_some(),
                    "round {round}: committed {id} is lost"
                );
            }
            for id in &report.updated {
                let d = store.get_deployment(id).await.unwrap().unwrap();
                assert_eq!(
                    (d.state, d.revision),
                    (DeploymentState::Pass, 2),
                    "round {round}: update of {id} is lost"
                );
            }
            for id in &report.outcomes {
                assert_eq!(
                    store.outcomes_since(id, 0).await.unwrap().len(),
                    WRITER_BATCH,
                    "round {round}: outcomes of {id} are lost or torn"
                );
            }
            // Nothing beyond what was reported, save the one call in flight at the kill:
            // a batch is all or nothing.
            let rows = store
                .list_deployments(Some(&prefix), 100_000)
                .await
                .unwrap();
            let n = report.committed.len();
            assert!(
                rows.len() == n || rows.len() == n + 1,
                "round {round}: {} rows for {n} reported commits",
                rows.len()
            );
            for r in &rows {
                let count = store.outcomes_since(&r.id, 0).await.unwrap().len();
                assert!(
                    count == 0 || count == WRITER_BATCH,
                    "{}: torn batch of {count}",
                    r.id
                );
            }
            store.close().await;
        });
        checked += known.len();
        assert_eq!(integrity(&db), "ok", "round {round}, after reopening");
    }

    let distinct: usize = history.values().map(Vec::len).sum();
    eprintln!(
        "kill -9: {kills} kills ({before_open} before the store was open, {before_first_commit} \
         before a first commit), {distinct} distinct committed ids, {checked} id checks \
         across reopenings, {} database files",
        history.len()
    );
    assert_eq!(kills, KILL_ROUNDS);
    assert!(
        distinct > 0,
        "no writer ever committed anything: the test proved nothing"
    );
}
