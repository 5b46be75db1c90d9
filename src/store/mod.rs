//! Durable state in one embedded SQLite file (`[storage] path`): deployments with their frozen
//! baselines and verdicts, recent check outcomes (so a baseline survives a restart), alert rule
//! states, and the notification outbox.
//!
//! # Durability
//!
//! `journal_mode=WAL` with `synchronous=FULL`: once a call has returned `Ok`, its transaction is
//! on disk and survives `kill -9` and power loss. Every public call is exactly one transaction.
//! The exception is [`Store::append_outcomes`], committed with `synchronous=NORMAL`: it reaches
//! the WAL (so it survives `kill -9`) but is fsync'd only with the next `FULL` commit or
//! checkpoint, so a power cut may lose the last seconds of outcomes — and nothing else. An
//! fsync per second of outcomes was most of the daemon's disk writes and a fifth of its CPU
//! with a few hundred checks (BENCHMARKS.md).
//!
//! # Threading
//!
//! A [`rusqlite::Connection`] is `Send` but not `Sync`, and its calls block. So the connection
//! lives on one dedicated thread (`bakewatch-store`) that runs jobs from a bounded channel, one
//! at a time, in order. [`Store`] is a cheap `Clone` handle that sends a job and awaits its reply:
//! async code never holds the connection, and never blocks a runtime worker on disk I/O.
//! If the awaiting future is dropped, the job still runs to its end (commit or rollback); only
//! the reply is lost.
//!
//! Shutdown: [`Store::close`] stops accepting new work, finishes everything already queued,
//! closes the connection (checkpointing the WAL) and then returns. Dropping the last handle does
//! the same in the background, without waiting.
//!
//! Records owned by other modules (the deployment record, a rule's state, a notification) are
//! stored as JSON next to the few columns that queries need.

mod migrations;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::checks::{Reason, Status};
use crate::history::Sample;
use crate::util::unix_millis;

pub use migrations::SCHEMA_VERSION;

/// Jobs waiting for the store thread before callers wait for room.
const QUEUE_DEPTH: usize = 256;

/// How long SQLite waits for a lock held by another connection (another process reading the
/// file, e.g. a backup) before a call fails with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything that can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {}: journal_mode is {mode:?}, WAL could not be enabled \
         (is it on a network or read-only file system?)",
        path.display()
    )]
    NotWal { path: PathBuf, mode: String },
    #[error(
        "database {} has schema version {found}, but this bakewatch knows only up to {known}: \
         it was written by a newer release; run that release, or move the file away to start empty",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("database {}: migration to schema version {version} failed: {source}", path.display())]
    Migration {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    #[error("cannot start the store thread: {0}")]
    Thread(std::io::Error),
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store: corrupt data: {what}")]
    Corrupt { what: String },
    /// The store was closed (or its thread is gone): the call did not run.
    #[error("the store is closed")]
    Closed,
}

/// Where a deployment is in its life. Everything but `Pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Pending,
    Pass,
    Fail,
    Inconclusive,
    Cancelled,
    Superseded,
}

impl DeploymentState {
    pub const ALL: [DeploymentState; 6] = [
        DeploymentState::Pending,
        DeploymentState::Pass,
        DeploymentState::Fail,
        DeploymentState::Inconclusive,
        DeploymentState::Cancelled,
        DeploymentState::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Pending => "pending",
            DeploymentState::Pass => "pass",
            DeploymentState::Fail => "fail",
            DeploymentState::Inconclusive => "inconclusive",
            DeploymentState::Cancelled => "cancelled",
            DeploymentState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<DeploymentState> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for DeploymentState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for DeploymentState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        DeploymentState::parse(s)
            .ok_or_else(|| FromSqlError::Other(format!("unknown deployment state {s:?}").into()))
    }
}

/// One row of `deployments`: the indexed columns plus the full record as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow {
    pub id: String,
    pub service: String,
    pub environment: String,
    pub version: String,
    pub labels: Value,
    /// Registration time, ms since the epoch: the order of [`Store::list_deployments`].
    pub created_at_ms: u64,
    pub state: DeploymentState,
    /// The full deployment record (frozen baseline, verdict, reasons), owned by its module.
    pub record: Value,
    /// Bumped by every update; an update only applies with a higher revision.
    pub revision: u64,
    /// Set to `created_at_ms` on insert and to the wall clock on each update.
    pub updated_at_ms: u64,
}

/// A notification to queue in the outbox together with another write (see
/// [`Store::insert_deployment_queuing`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub notifier: String,
    pub dedup_key: String,
    /// The notification as JSON text.
    pub payload: String,
}

/// What [`Store::insert_deployment`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Insertion {
    Inserted,
    /// The id was taken; nothing was written. Here is the stored row, so the caller can tell
    /// a repeated request (same body) from a conflict.
    Existing(DeploymentRow),
}

/// What [`Store::update_deployment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    Applied,
    /// The stored revision is the same or newer; nothing was written.
    Stale {
        current_revision: u64,
    },
    NotFound,
}

/// One row of `rule_states`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleStateRow {
    pub rule: String,
    pub check: String,
    pub state: Value,
    pub updated_at_ms: u64,
}

/// One undelivered notification of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub notifier: String,
    pub dedup_key: String,
    pub payload: Value,
    pub created_at_ms: u64,
    /// Failed deliveries so far.
    pub attempts: u32,
    pub next_attempt_at_ms: u64,
    pub last_error: Option<String>,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Msg {
    Run(Job),
    /// Stop accepting work, finish the queue, close, then answer.
    Close(oneshot::Sender<()>),
}

/// A handle on the store thread. Clone it freely; every clone talks to the same connection.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Msg>,
    path: Arc<Path>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating it and its parent directories if needed) the database at `path`,
    /// migrates it to [`SCHEMA_VERSION`] and starts the store thread.
    pub async fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path: Arc<Path> = Arc::from(path.as_ref());
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_path = path.clone();
        thread::Builder::new()
            .name("bakewatch-store".to_string())
            .spawn(move || match open_connection(&thread_path) {
                Ok(conn) => {
                    // If `open` was cancelled meanwhile, nobody is listening: just close.
                    if ready_tx.send(Ok(())).is_ok() {
                        serve(conn, rx);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(StoreError::Thread)?;
        ready_rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Store { tx, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finishes all queued work, closes the database and ends the store thread. Calls made on
    /// other handles afterwards fail with [`StoreError::Closed`].
    pub async fn close(self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = finished.await;
        }
    }

    /// Registers a deployment, unless its id exists: then returns the stored row untouched.
    pub async fn insert_deployment(&self, row: DeploymentRow) -> Result<Insertion, StoreError> {
        self.insert_deployment_queuing(row, Vec::new()).await
    }

    /// [`Store::insert_deployment`], queuing `notifications` in the outbox in the same
    /// transaction: they are queued if and only if the deployment is inserted, so a crash
    /// cannot leave a registered deployment whose registration was never notified.
    pub async fn insert_deployment_queuing(
        &self,
        row: DeploymentRow,
        notifications: Vec<Queued>,
    ) -> Result<Insertion, StoreError> {
        self.call(move |conn| {
            write(conn, |tx| {
                if let Some(existing) = select_deployment(tx, &row.id)? {
                    return Ok(Insertion::Existing(existing));
                }
                for n in &notifications {
                    insert_outbox(tx, n)?;
                }
                tx.execute(
                    "INSERT INTO deployments (id, service, environment, version, labels, \
                     created_at, state, record, revision, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?6)",
                    rusqlite::params![
                        row.id,
                        row.service,
                        row.environment,
                        row.version,
                        serde_json::to_string(&row.labels)?,
                        to_sql_int(row.created_at_ms),
                        row.state,
                        serde_json::to_string(&row.record)?,
                        to_sql_int(row.revision),
                    ],
                )?;
                Ok(Insertion::Inserted)
            })
        })
        .await
    }

    /// Replaces a deployment's state and record, only if `revision` is higher than the stored
    /// one (optimistic concurrency: a late writer with an older view loses).
    pub async fn update_deployment(
        &self,
        id: &str,
        state: DeploymentState,
        record: &Value,
        revision: u64,
    ) -> Result<Update, StoreError> {
        let id = id.to_string();
        let record = serde_json::to_string(record)?;
        self.call(move |conn| {
            write(conn, |tx| {
                let changed = tx.execute(
                    "UPDATE deployments SET state = ?2, record = ?3, revision = ?4, updated_at = ?5 \
                     WHERE id = ?1 AND revision < ?4",
                    rusqlite::params![
                        id,
                        state,
                        record,
                        to_sql_int(revision),
                        to_sql_int(now_ms())
                    ],
                )?;
                if changed == 1 {
                    return Ok(Update::Applied);
                }
                let current: Option<i64> = tx
                    .query_row(
                        "SELECT revision FROM deployments WHERE id = ?1",
                        [&id],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(match current {
                    Some(r) => Update::Stale {
                        current_revision: from_sql_int(r),
                    },
                    None => Update::NotFound,
                })
            })
        })
        .await
    }

    pub async fn get_deployment(&self, id: &str) -> Result<Option<DeploymentRow>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| select_deployment(conn, &id)).await
    }

    /// The newest `limit` deployments, of one service or of all; newest first.
    pub async fn list_deployments(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentRow>, StoreError> {
        let service = service.map(str::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let rows = match service {
                Some(s) => select_deployments(
                    conn,
                    "WHERE service = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2",
                    rusqlite::params![s, limit],
                )?,
                None => select_deployments(
                    conn,
                    "ORDER BY created_at DESC, rowid DESC LIMIT ?1",
                    rusqlite::params![limit],
                )?,
            };
            Ok(rows)
        })
        .await
    }

    /// The newest deployment of `service` that was not cancelled.
    pub async fn latest_deployment(
        &self,
        service: &str,
    ) -> Result<Option<DeploymentRow>, StoreError> {
        let service = service.to_string();
        self.call(move |conn| {
            Ok(select_deployments(
                conn,
                "WHERE service = ?1 AND state != 'cancelled' ORDER BY created_at DESC, rowid DESC LIMIT 1",
                rusqlite::params![service],
            )?
            .pop())
        })
        .await
    }

    /// Every deployment still being verified, oldest first: what a restart resumes.
    pub async fn pending_deployments(&self) -> Result<Vec<DeploymentRow>, StoreError> {
        self.call(|conn| {
            select_deployments(
                conn,
                "WHERE state = 'pending' ORDER BY created_at, rowid",
                [],
            )
        })
        .await
    }

    /// Appends many outcomes in one transaction; returns how many.
    pub async fn append_outcomes<S: AsRef<str>>(
        &self,
        batch: &[(S, Sample)],
    ) -> Result<usize, StoreError> {
        let batch: Vec<(String, Sample)> = batch
            .iter()
            .map(|(c, s)| (c.as_ref().to_string(), *s))
            .collect();
        self.call(move |conn| {
            // Outcomes are the one thing committed without an fsync of their own (see the
            // module's Durability section): they come every second and only feed baselines.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let written = write(conn, |tx| {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO outcomes (check_name, at_ms, duration_us, status, reason) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (check, s) in &batch {
                    insert.execute(rusqlite::params![
                        check,
                        to_sql_int(s.at_ms),
                        s.duration_us,
                        s.status.as_str(),
                        s.reason.as_str(),
                    ])?;
                }
                Ok(batch.len())
            });
            conn.pragma_update(None, "synchronous", "FULL")?;
            written
        })
        .await
    }

    /// The outcomes of `check` that started at or after `since_ms`, oldest first.
    pub async fn outcomes_since(
        &self,
        check: &str,
        since_ms: u64,
    ) -> Result<Vec<Sample>, StoreError> {
        let check = check.to_string();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at_ms, duration_us, status, reason FROM outcomes \
                 WHERE check_name = ?1 AND at_ms >= ?2 ORDER BY at_ms, rowid",
            )?;
            let rows = stmt.query_map(rusqlite::params![check, to_sql_int(since_ms)], |r| {
                Ok(Sample {
                    at_ms: from_sql_int(r.get(0)?),
                    duration_us: r.get(1)?,
                    status: parse_status(r, 2)?,
                    reason: parse_reason(r, 3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Retention: deletes outcomes that started before `older_than_ms`; returns how many.
    pub async fn prune_outcomes(&self, older_than_ms: u64) -> Result<usize, StoreError> {
        self.call(move |conn| {
            write(conn, |tx| {
                Ok(tx.execute(
                    "DELETE FROM outcomes WHERE at_ms < ?1",
                    [to_sql_int(older_than_ms)],
                )?)
            })
        })
        .await
    }

    /// Saves the states of rule instances — (rule, check, state) — and queues
    /// `notifications`, in one transaction: a notification is queued if and only if the
    /// instance states that record it as sent are saved, so a crash can neither lose a
    /// notification nor forget that a firing was notified (and so never send its resolve).
    pub async fn put_rule_states_queuing(
        &self,
        states: Vec<(String, String, Value)>,
        notifications: Vec<Queued>,
    ) -> Result<(), StoreError> {
        let states = states
            .into_iter()
            .map(|(rule, check, state)| Ok((rule, check, serde_json::to_string(&state)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.call(move |conn| {
            write(conn, |tx| {
                for n in &notifications {
                    insert_outbox(tx, n)?;
                }
                let now = to_sql_int(now_ms());
                for (rule, check, state) in &states {
                    upsert_rule_state(tx, rule, check, state, now)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Saves (inserts or replaces) the state of `rule` for `check`.
    pub async fn put_rule_state(
        &self,
        rule: &str,
        check: &str,
        state: &Value,
    ) -> Result<(), StoreError> {
        let states = vec![(rule.to_string(), check.to_string(), state.clone())];
        self.put_rule_states_queuing(states, Vec::new()).await
    }

    /// Every saved rule state, by rule then check.
    pub async fn load_rule_states(&self) -> Result<Vec<RuleStateRow>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT rule, check_name, state, updated_at FROM rule_states \
                 ORDER BY rule, check_name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(RuleStateRow {
                    rule: r.get(0)?,
                    check: r.get(1)?,
                    state: json_column(r, 2)?,
                    updated_at_ms: from_sql_int(r.get(3)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Queues a notification, due at once; returns its id.
    pub async fn outbox_push(
        &self,
        notifier: &str,
        dedup_key: &str,
        payload: &Value,
    ) -> Result<i64, StoreError> {
        let n = Queued {
            notifier: notifier.to_string(),
            dedup_key: dedup_key.to_string(),
            payload: serde_json::to_string(payload)?,
        };
        self.call(move |conn| write(conn, |tx| insert_outbox(tx, &n)))
            .await
    }

    /// The queued notifications of every notifier whose queue is due at `now_ms`, in queue
    /// order, at most `limit`. A notifier's queue is first in, first out: it is due when its
    /// oldest pending notification is, and nothing behind that one goes out before it (a
    /// resolve never overtakes the trigger that is still being retried).
    pub async fn outbox_due(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, notifier, dedup_key, payload, created_at, attempts, next_attempt_at, \
                 last_error FROM outbox o \
                 WHERE delivered_at IS NULL AND dropped_at IS NULL \
                 AND (SELECT h.next_attempt_at FROM outbox h \
                      WHERE h.notifier = o.notifier \
                      AND h.delivered_at IS NULL AND h.dropped_at IS NULL \
                      ORDER BY h.id LIMIT 1) <= ?1 \
                 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![to_sql_int(now_ms), limit], |r| {
                Ok(OutboxItem {
                    id: r.get(0)?,
                    notifier: r.get(1)?,
                    dedup_key: r.get(2)?,
                    payload: json_column(r, 3)?,
                    created_at_ms: from_sql_int(r.get(4)?),
                    attempts: r.get(5)?,
                    next_attempt_at_ms: from_sql_int(r.get(6)?),
                    last_error: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Marks a notification delivered; false if it is unknown or was already delivered.
    pub async fn outbox_mark_delivered(&self, id: i64) -> Result<bool, StoreError> {
        self.call(move |conn| {
            write(conn, |tx| {
                let n = tx.execute(
                    "UPDATE outbox SET delivered_at = ?2 WHERE id = ?1 AND delivered_at IS NULL",
                    rusqlite::params![id, to_sql_int(now_ms())],
                )?;
                Ok(n == 1)
            })
        })
        .await
    }

    /// Records a failed delivery and when to try again; false if the notification is unknown
    /// or already delivered.
    pub async fn outbox_mark_failed(
        &self,
        id: i64,
        next_attempt_at_ms: u64,
        error: &str,
    ) -> Result<bool, StoreError> {
        let error = error.to_string();
        self.call(move |conn| {
            write(conn, |tx| {
                let n = tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, \
                     last_error = ?3 WHERE id = ?1 AND delivered_at IS NULL AND dropped_at IS NULL",
                    rusqlite::params![id, to_sql_int(next_attempt_at_ms), error],
                )?;
                Ok(n == 1)
            })
        })
        .await
    }

    /// Gives up on a notification (too old, or rejected by its receiver); false if it is
    /// unknown or already delivered or dropped.
    pub async fn outbox_mark_dropped(&self, id: i64, why: &str) -> Result<bool, StoreError> {
        let why = why.to_string();
        self.call(move |conn| {
            write(conn, |tx| {
                let n = tx.execute(
                    "UPDATE outbox SET dropped_at = ?2, last_error = ?3 \
                     WHERE id = ?1 AND delivered_at IS NULL AND dropped_at IS NULL",
                    rusqlite::params![id, to_sql_int(now_ms()), why],
                )?;
                Ok(n == 1)
            })
        })
        .await
    }

    /// Pending notifications (neither delivered nor dropped) per notifier.
    pub async fn outbox_depth(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT notifier, count(*) FROM outbox \
                 WHERE delivered_at IS NULL AND dropped_at IS NULL GROUP BY notifier",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, from_sql_int(r.get(1)?))))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// When the soonest notifier queue is due (see [`Store::outbox_due`]), if any is queued.
    pub async fn outbox_next_due(&self) -> Result<Option<u64>, StoreError> {
        self.call(|conn| {
            let v: Option<i64> = conn.query_row(
                "SELECT min(h.next_attempt_at) FROM outbox h \
                 WHERE h.delivered_at IS NULL AND h.dropped_at IS NULL \
                 AND h.id = (SELECT min(x.id) FROM outbox x WHERE x.notifier = h.notifier \
                             AND x.delivered_at IS NULL AND x.dropped_at IS NULL)",
                [],
                |r| r.get(0),
            )?;
            Ok(v.map(from_sql_int))
        })
        .await
    }

    /// What `notifier` answered for `dedup_key` last time (see [`crate::notify::Sent`]).
    pub async fn receiver_ref(
        &self,
        notifier: &str,
        dedup_key: &str,
    ) -> Result<Option<String>, StoreError> {
        let (notifier, dedup_key) = (notifier.to_string(), dedup_key.to_string());
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT reference FROM receiver_refs WHERE notifier = ?1 AND dedup_key = ?2",
            )?;
            let mut rows = stmt.query(rusqlite::params![notifier, dedup_key])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
        .await
    }

    /// Marks a notification delivered and keeps what the receiver answered, in one commit.
    pub async fn outbox_delivered_with_ref(
        &self,
        id: i64,
        reference: Option<String>,
    ) -> Result<bool, StoreError> {
        self.call(move |conn| {
            write(conn, |tx| {
                let now = to_sql_int(now_ms());
                let n = tx.execute(
                    "UPDATE outbox SET delivered_at = ?2 WHERE id = ?1 AND delivered_at IS NULL",
                    rusqlite::params![id, now],
                )?;
                if let Some(reference) = reference {
                    tx.execute(
                        "INSERT INTO receiver_refs (notifier, dedup_key, reference, updated_at) \
                         SELECT notifier, dedup_key, ?2, ?3 FROM outbox WHERE id = ?1 \
                         ON CONFLICT (notifier, dedup_key) DO UPDATE \
                         SET reference = excluded.reference, updated_at = excluded.updated_at",
                        rusqlite::params![id, reference, now],
                    )?;
                }
                Ok(n == 1)
            })
        })
        .await
    }

    /// Retention: deletes notifications delivered or dropped before `older_than_ms`, and
    /// receiver references not used since; returns how many notifications.
    pub async fn prune_outbox(&self, older_than_ms: u64) -> Result<usize, StoreError> {
        self.call(move |conn| {
            write(conn, |tx| {
                let n = tx.execute(
                    "DELETE FROM outbox WHERE delivered_at < ?1 OR dropped_at < ?1",
                    [to_sql_int(older_than_ms)],
                )?;
                tx.execute(
                    "DELETE FROM receiver_refs WHERE updated_at < ?1",
                    [to_sql_int(older_than_ms)],
                )?;
                Ok(n)
            })
        })
        .await
    }

    /// Runs `f` on the store thread and awaits its result.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.tx
            .send(Msg::Run(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// The connection's page cache, in KiB.
const CACHE_KIB: i64 = 512;

/// Creates the directory, opens the file, sets the pragmas and migrates. Runs on the store
/// thread, so the connection is never anywhere else.
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // FULL: the WAL is synced at every commit, so a commit survives power loss too.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_err)?;
    // SQLite's default page cache is 2 MiB; the daemon appends outcomes at the end of one
    // table and reads a few deployment rows, and the OS caches the file anyway.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(open_err)?;
    migrations::migrate(&mut conn, path)?;
    Ok(conn)
}

/// The store thread: runs jobs in order until every handle is gone or `close` was called and
/// the queue is drained.
fn serve(mut conn: Connection, mut rx: mpsc::Receiver<Msg>) {
    let mut closers = Vec::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Run(job) => job(&mut conn),
            Msg::Close(done) => {
                // Refuse new work; what is queued already is still received and run.
                rx.close();
                closers.push(done);
            }
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the store database");
    }
    for done in closers {
        let _ = done.send(());
    }
}

/// Inserts or replaces one rule instance's state (JSON text).
fn upsert_rule_state(
    tx: &Transaction<'_>,
    rule: &str,
    check: &str,
    state: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO rule_states (rule, check_name, state, updated_at) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (rule, check_name) DO UPDATE \
         SET state = excluded.state, updated_at = excluded.updated_at",
        rusqlite::params![rule, check, state, now],
    )?;
    Ok(())
}

/// Queues one notification, due at once; returns its id.
fn insert_outbox(tx: &Transaction<'_>, n: &Queued) -> Result<i64, StoreError> {
    let now = to_sql_int(now_ms());
    tx.execute(
        "INSERT INTO outbox (notifier, dedup_key, payload, created_at, next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, ?4)",
        rusqlite::params![n.notifier, n.dedup_key, n.payload, now],
    )?;
    Ok(tx.last_insert_rowid())
}

/// One write transaction; `IMMEDIATE` takes the write lock up front, so it never has to be
/// upgraded half-way (which can fail with "database is locked" under a concurrent reader).
fn write<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

const DEPLOYMENT_COLUMNS: &str = "SELECT id, service, environment, version, labels, created_at, \
                                  state, record, revision, updated_at FROM deployments ";

fn select_deployment(conn: &Connection, id: &str) -> Result<Option<DeploymentRow>, StoreError> {
    Ok(select_deployments(conn, "WHERE id = ?1", [id])?.pop())
}

fn select_deployments(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<DeploymentRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("{DEPLOYMENT_COLUMNS}{tail}"))?;
    let rows = stmt.query_map(params, deployment_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn deployment_from_row(r: &Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.get(0)?,
        service: r.get(1)?,
        environment: r.get(2)?,
        version: r.get(3)?,
        labels: json_column(r, 4)?,
        created_at_ms: from_sql_int(r.get(5)?),
        state: r.get(6)?,
        record: json_column(r, 7)?,
        revision: from_sql_int(r.get(8)?),
        updated_at_ms: from_sql_int(r.get(9)?),
    })
}

fn conversion_error(i: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, msg.into())
}

fn json_column(r: &Row<'_>, i: usize) -> rusqlite::Result<Value> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| conversion_error(i, format!("bad JSON: {e}")))
}

fn parse_status(r: &Row<'_>, i: usize) -> rusqlite::Result<Status> {
    let text: String = r.get(i)?;
    Status::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| conversion_error(i, format!("unknown status {text:?}")))
}

/// An unknown reason (written by a newer release after a downgrade) reads as `internal`
/// rather than making the whole history unreadable.
fn parse_reason(r: &Row<'_>, i: usize) -> rusqlite::Result<Reason> {
    let text: String = r.get(i)?;
    Ok(Reason::ALL
        .into_iter()
        .find(|x| x.as_str() == text)
        .unwrap_or(Reason::Internal))
}

/// SQLite integers are i64; our times and revisions are u64 far below i64::MAX.
fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn now_ms() -> u64 {
    unix_millis(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_state_text_round_trips() {
        for s in DeploymentState::ALL {
            assert_eq!(DeploymentState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                Value::String(s.as_str().to_string())
            );
        }
        assert_eq!(DeploymentState::parse("passed"), None);
    }

    #[test]
    fn schema_accepts_every_state_and_no_other() {
        // The CHECK constraint in the schema and the enum must agree.
        let mut conn = Connection::open_in_memory().unwrap();
        migrations::migrate(&mut conn, Path::new(":memory:")).unwrap();
        let insert = |conn: &Connection, id: &str, state: &str| {
            conn.execute(
                "INSERT INTO deployments VALUES (?1, 's', 'e', 'v', '{}', 0, ?2, '{}', 0, 0)",
                [id, state],
            )
        };
        for s in DeploymentState::ALL {
            insert(&conn, s.as_str(), s.as_str()).unwrap();
        }
        assert!(insert(&conn, "x", "passed").is_err());
    }

    #[test]
    fn open_connection_sets_the_durability_pragmas() {
        let dir = tempfile::TempDir::new().unwrap();
        let conn = open_connection(&dir.path().join("a/b/state.db")).unwrap();
        let pragma = |name: &str| -> String {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2", "FULL");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("busy_timeout"), "5000");
        assert_eq!(pragma("cache_size"), "-512");
        assert_eq!(pragma("user_version"), SCHEMA_VERSION.to_string());
    }

    #[test]
    fn sql_ints_saturate() {
        assert_eq!(to_sql_int(u64::MAX), i64::MAX);
        assert_eq!(from_sql_int(-1), 0);
        assert_eq!(
            from_sql_int(to_sql_int(1_700_000_000_000)),
            1_700_000_000_000
        );
    }
}
