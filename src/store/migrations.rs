//! The schema, as an ordered list of SQL steps. Step `i` (0-based) takes a database from
//! `PRAGMA user_version = i` to `i + 1`; each step runs in its own transaction together with the
//! `user_version` bump, so a crash leaves the database at one version or the next, never between.
//!
//! Rules for adding a step: append, never edit a released one; keep each step runnable on a
//! database that holds data (no `DROP` of something still read).

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The schema steps, oldest first.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this binary writes: a database with a higher `user_version` was made by a
/// newer bakewatch and is refused.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// v1: deployments, recent outcomes, rule states, the notification outbox. Times are
/// milliseconds since the epoch; JSON columns hold whatever the owning module serializes.
const V1: &str = "
CREATE TABLE deployments (
    id          TEXT    PRIMARY KEY NOT NULL,
    service     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    labels      TEXT    NOT NULL CHECK (json_valid(labels)),
    created_at  INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN
                  ('pending', 'pass', 'fail', 'inconclusive', 'cancelled', 'superseded')),
    record      TEXT    NOT NULL CHECK (json_valid(record)),
    revision    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
-- list_deployments: newest first, all or per service (rowid breaks ties in insert order).
CREATE INDEX deployments_created ON deployments (created_at);
CREATE INDEX deployments_service_created ON deployments (service, created_at);
-- pending_deployments: the few still being verified.
CREATE INDEX deployments_pending ON deployments (created_at) WHERE state = 'pending';

CREATE TABLE outcomes (
    check_name  TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('pass', 'degraded', 'fail', 'error')),
    reason      TEXT    NOT NULL
) STRICT;
-- outcomes_since(check, since).
CREATE INDEX outcomes_check_at ON outcomes (check_name, at_ms);
-- prune_outcomes(older_than) without a full scan.
CREATE INDEX outcomes_at ON outcomes (at_ms);

CREATE TABLE rule_states (
    rule        TEXT    NOT NULL,
    check_name  TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (json_valid(state)),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (rule, check_name)
) STRICT, WITHOUT ROWID;

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notifier        TEXT    NOT NULL,
    dedup_key       TEXT    NOT NULL,
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT
) STRICT;
-- outbox_due(now): undelivered items by due time.
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
";

/// v2: notifications given up on (`dropped_at`, with why in `last_error`), and what a receiver
/// answered that a later notification with the same dedup key needs (Grafana's annotation id).
const V2: &str = "
ALTER TABLE outbox ADD COLUMN dropped_at INTEGER;
DROP INDEX outbox_due;
-- outbox_due(now) / outbox_next_due(): each notifier's pending items (neither delivered nor
-- dropped) in queue order.
CREATE INDEX outbox_queue ON outbox (notifier, id) WHERE delivered_at IS NULL AND dropped_at IS NULL;

CREATE TABLE receiver_refs (
    notifier    TEXT    NOT NULL,
    dedup_key   TEXT    NOT NULL,
    reference   TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (notifier, dedup_key)
) STRICT, WITHOUT ROWID;
";

/// Brings the database up to [`SCHEMA_VERSION`], one transaction per step. Returns the version
/// found before migrating.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let found = u32::try_from(found).map_err(|_| StoreError::Corrupt {
        what: format!("{}: PRAGMA user_version is {found}", path.display()),
    })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = i as u32 + 1;
        let step = |conn: &mut Connection| -> rusqlite::Result<()> {
            // IMMEDIATE: take the write lock first, so two processes opening the same new
            // file cannot both run step 1.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if now >= i64::from(to) {
                // Someone else applied it while we waited for the lock.
                return Ok(());
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", to)?;
            tx.commit()
        };
        step(conn).map_err(|source| StoreError::Migration {
            path: path.to_path_buf(),
            version: to,
            source,
        })?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn every_step_applies_to_an_empty_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, Path::new(":memory:")).unwrap(), 0);
        assert_eq!(version(&conn), i64::from(SCHEMA_VERSION));
        // A second run finds nothing to do.
        assert_eq!(
            migrate(&mut conn, Path::new(":memory:")).unwrap(),
            SCHEMA_VERSION
        );
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for t in [
            "deployments",
            "outbox",
            "outcomes",
            "receiver_refs",
            "rule_states",
        ] {
            assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
        }
    }

    #[test]
    fn a_failing_step_leaves_the_version_alone() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A table in the way makes step 1 fail half-way; nothing of it may remain.
        conn.execute_batch("CREATE TABLE outcomes (x INTEGER)")
            .unwrap();
        let err = migrate(&mut conn, Path::new("t.db")).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version: 1, .. }),
            "{err}"
        );
        assert_eq!(version(&conn), 0);
        let deployments: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'deployments'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(deployments, 0, "the failed step was rolled back");
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn, Path::new("state.db")).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
