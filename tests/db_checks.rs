//! Integration tests of the `postgres` and `mysql` checks against real servers, on the daemon's
//! own code path: a config is written to files and loaded with `config::load`, and the check
//! runs through `runtime::execute` (the check's timeout) or `Runtime::run_check` (also
//! redaction).
//!
//! Servers:
//! - the machine's PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`, user `root`) and
//!   MariaDB on 127.0.0.1:3306 (root, empty password, database `test`), used as ordinary
//!   clients for everything that does not break a server;
//! - a disposable PostgreSQL (initdb in a temp dir, run as the `postgres` OS user, password
//!   auth, TLS with a generated CA) and a disposable MariaDB (mariadb-install-db in a temp dir,
//!   a user with a password), on free ports: the tests stop and restart them;
//! - raw TCP listeners on 127.0.0.1 for servers that accept and never answer.
//!
//! A missing server or binary fails the test with what to install.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bakewatch::checks::{Observation, Outcome, Reason, Status};
use bakewatch::config::{CheckConfig, Config};
use bakewatch::metrics::Metrics;
use bakewatch::runtime::{Runtime, execute};
use common::pki::Pki;
use mysql_async::prelude::Queryable;
use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PG: &str = "postgres://root@127.0.0.1:5432/test";
const MY: &str = "mysql://root@127.0.0.1:3306/test";

// ---------------------------------------------------------------------------------------------
// Config helpers.

/// `s` as a TOML basic string.
fn q(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_string()).to_string()
}

/// Loads a daemon file naming one check file with the given `[[check]]` tables.
fn load_config(checks: &str) -> Config {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("checks")).unwrap();
    std::fs::write(
        dir.path().join("bakewatch.toml"),
        "checks = [\"checks/*.toml\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("checks/db.toml"), checks).unwrap();
    match bakewatch::config::load(&dir.path().join("bakewatch.toml")) {
        Ok(config) => config,
        Err(e) => panic!("the config does not load:\n{e}\n--- checks ---\n{checks}"),
    }
}

/// One check named "probe" of `kind` with `keys`.
fn load_check(kind: &str, keys: &str) -> Arc<CheckConfig> {
    let config = load_config(&format!(
        "[[check]]\nname = \"probe\"\ntype = \"{kind}\"\n{keys}\n"
    ));
    assert_eq!(config.checks.len(), 1);
    config.checks[0].clone()
}

async fn run(kind: &str, keys: &str) -> Outcome {
    execute(&load_check(kind, keys)).await
}

fn text<'a>(o: &'a Outcome, name: &str) -> &'a str {
    match o.observations.get(name) {
        Some(Observation::Text(t)) => t,
        other => panic!("observation {name:?} is not text: {other:?} in {o:#?}"),
    }
}

fn number(o: &Outcome, name: &str) -> f64 {
    match o.observations.get(name) {
        Some(Observation::Number(n)) => *n,
        other => panic!("observation {name:?} is not a number: {other:?} in {o:#?}"),
    }
}

#[track_caller]
fn assert_outcome(o: &Outcome, status: Status, reason: Reason) {
    assert_eq!(
        (o.status, o.reason),
        (status, reason),
        "unexpected outcome: {o:#?}"
    );
}

/// Fails loudly when the machine's shared server is missing.
fn require_server(port: u16, what: &str) {
    if std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!("no {what} listens on 127.0.0.1:{port}; these tests need it running");
    }
}

fn require_pg() {
    require_server(
        5432,
        "PostgreSQL (Debian package `postgresql`, with trust auth for 127.0.0.1, database `test`, user `root`)",
    );
}

fn require_my() {
    require_server(
        3306,
        "MariaDB (Debian package `mariadb-server`, root with an empty password over TCP, database `test`)",
    );
}

/// Polls `probe` every 50 ms until it returns Some, or panics with `what` after `limit`.
async fn wait_for<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP servers.

/// A refused port: bound, then released.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn free_port() -> u16 {
    closed_port()
}

/// A listener that accepts one connection, reads what comes (answering an 8-byte PostgreSQL
/// SSLRequest with `ssl_answer` if given) and never answers otherwise. The receiver reports
/// how long after the accept the client closed the connection.
async fn silent_server(
    ssl_answer: Option<u8>,
) -> (SocketAddr, tokio::sync::oneshot::Receiver<Duration>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let accepted = Instant::now();
        if let Some(answer) = ssl_answer {
            let mut req = [0u8; 8];
            if s.read_exact(&mut req).await.is_ok() {
                let _ = s.write_all(&[answer]).await;
            }
        }
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        let _ = tx.send(accepted.elapsed());
    });
    (addr, rx)
}

/// Runs a check against a server that accepts and never answers: it must end within its
/// timeout + 100 ms and close its connection (nothing left running behind the dropped probe).
async fn assert_silent_server_is_cut(kind: &str, dsn: impl Fn(SocketAddr) -> String) {
    let (addr, closed) = silent_server(None).await;
    let o = run(
        kind,
        &format!("dsn = {}\ntimeout = \"500ms\"", q(dsn(addr))),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    assert!(
        o.duration < Duration::from_millis(600),
        "took {:?}",
        o.duration
    );
    let after = tokio::time::timeout(Duration::from_secs(2), closed)
        .await
        .expect("the probe's connection was not closed within 2 s of the timeout")
        .expect("the silent server saw the connection");
    assert!(
        after < Duration::from_millis(1500),
        "closed after {after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL on the machine.

#[tokio::test(flavor = "multi_thread")]
async fn postgres_select_1_passes_with_value_and_rows() {
    require_pg();
    let o = run("postgres", &format!("dsn = {}", q(PG))).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "1");
    assert_eq!(number(&o, "rows"), 1.0);
    assert_eq!(o.message, "1 row, value \"1\"");

    // The key=value form, and plain text without TLS.
    let o = run(
        "postgres",
        "dsn = \"host=127.0.0.1 port=5432 user=root dbname=test sslmode=disable\"\nquery = \"SELECT current_user\"",
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "root");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_assertions_on_value_rows_and_duration() {
    require_pg();
    let keys = |expect: &str| {
        format!(
            "dsn = {}\nquery = \"SELECT count(*) FROM generate_series(1, 42)\"\nexpect = [{expect}]",
            q(PG)
        )
    };
    let o = run(
        "postgres",
        &keys(
            "{ observe = \"value\", gt = 0 }, { observe = \"value\", eq = 42 }, { observe = \"rows\", eq = 1 }, { duration = \"total\", lt = \"5s\" }",
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let o = run("postgres", &keys("{ observe = \"value\", gt = 100 }")).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(o.message.contains("42"), "{}", o.message);
    assert_eq!(text(&o, "value"), "42");

    let o = run(
        "postgres",
        &keys("{ observe = \"value\", lt = 10, severity = \"warn\" }"),
    )
    .await;
    assert_outcome(&o, Status::Degraded, Reason::Assertion);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_multi_row_and_multi_statement_queries() {
    require_pg();
    let o = run(
        "postgres",
        &format!(
            "dsn = {}\nquery = \"SELECT x::text || 'a' FROM generate_series(3, 7) x\"\nexpect = [{{ observe = \"rows\", eq = 5 }}]",
            q(PG)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "3a");
    assert_eq!(o.message, "5 rows, value \"3a\"");

    // Observations come from the last statement that returns rows.
    let o = run(
        "postgres",
        &format!(
            "dsn = {}\nquery = \"SET LOCAL search_path TO pg_catalog; SELECT 1; SELECT 'x', 2 UNION ALL SELECT 'y', 3\"",
            q(PG)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "x");
    assert_eq!(number(&o, "rows"), 2.0);

    // An empty result: no value, 0 rows.
    let o = run(
        "postgres",
        &format!("dsn = {}\nquery = \"SELECT 1 WHERE false\"", q(PG)),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(o.observations.get("value").is_none(), "{o:#?}");
    assert_eq!(number(&o, "rows"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_null_leaves_value_absent() {
    require_pg();
    let keys = |expect: &str| {
        format!(
            "dsn = {}\nquery = \"SELECT NULL::int\"\nexpect = [{expect}]",
            q(PG)
        )
    };
    let o = run("postgres", &keys("{ observe = \"value\", exists = false }")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(o.observations.get("value").is_none(), "{o:#?}");
    assert_eq!(number(&o, "rows"), 1.0);
    assert_eq!(o.message, "1 row, value NULL");

    let o = run("postgres", &keys("{ observe = \"value\", gt = 0 }")).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_writes_are_refused_as_query() {
    require_pg();
    let table = format!("bw_ro_probe_{}", std::process::id());
    let o = run(
        "postgres",
        &format!("dsn = {}\nquery = \"CREATE TABLE {table} (a int)\"", q(PG)),
    )
    .await;
    // Whatever happened, leave the shared server as it was.
    let leaked = pg_exec(PG, &format!("DROP TABLE IF EXISTS {table}")).await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.contains("read-only transaction"), "{}", o.message);
    assert!(o.message.contains("25006"), "{}", o.message);
    assert!(leaked.is_ok(), "{leaked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_errors_in_the_query_are_reason_query() {
    require_pg();
    let o = run("postgres", &format!("dsn = {}\nquery = \"SELEC 1\"", q(PG))).await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert_eq!(
        o.message,
        "query: syntax error at or near \"SELEC\" (SQLSTATE 42601)"
    );

    // A failing statement after one that succeeded.
    let o = run(
        "postgres",
        &format!(
            "dsn = {}\nquery = \"SELECT 1; SELECT * FROM no_such_table\"",
            q(PG)
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.contains("42P01"), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_statement_timeout_is_reason_timeout_and_cancels_on_the_server() {
    require_pg();
    let marker = format!("bw_timeout_{}", std::process::id());
    let o = run(
        "postgres",
        &format!(
            "dsn = {}\nquery = \"SELECT pg_sleep(5) /* {marker} */\"\ntimeout = \"1s\"",
            q(PG)
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    assert!(
        o.duration < Duration::from_millis(1100),
        "took {:?}",
        o.duration
    );
    // The server cancelled it (the runner's own timeout says "no result within").
    assert!(o.message.contains("statement timeout"), "{}", o.message);
    // Nothing keeps sleeping on the server.
    wait_for("the query is gone from pg_stat_activity", Duration::from_secs(3), async || {
        let n = pg_value(
            PG,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
            ),
        )
        .await;
        (n.as_deref() == Some("0")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_connection_refused_is_reason_connect() {
    let port = closed_port();
    let o = run(
        "postgres",
        &format!("dsn = \"postgres://root:s3cr3t-pw@127.0.0.1:{port}/test\""),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert_eq!(
        o.message,
        format!("connect: connection refused (127.0.0.1:{port})")
    );

    // IPv6 loopback.
    let o = run(
        "postgres",
        &format!("dsn = \"postgres://root@[::1]:{port}/test\""),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert_eq!(
        o.message,
        format!("connect: connection refused ([::1]:{port})")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_silent_server_times_out_within_the_bound() {
    assert_silent_server_is_cut("postgres", |a| format!("postgres://root@{a}/test")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_tls_modes_and_verification() {
    require_pg();
    // The machine's server has TLS with a certificate nobody here trusts: verified by
    // default when a `tls` table is given.
    let o = run("postgres", &format!("dsn = {}\ntls = {{}}", q(PG))).await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert!(o.message.starts_with("tls: "), "{}", o.message);

    // verify = false: encrypted, unverified.
    let o = run(
        "postgres",
        &format!(
            "dsn = {}\nquery = \"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()\"\ntls = {{ mode = \"require\", verify = false }}",
            q(PG)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "t");

    // mode = "disable": plain text.
    let o = run(
        "postgres",
        &format!(
            "dsn = {}\nquery = \"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()\"\ntls = {{ mode = \"disable\" }}",
            q(PG)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "f");

    // require against a server without TLS (it answers the SSLRequest with 'N').
    let (addr, _) = silent_server(Some(b'N')).await;
    let o = run(
        "postgres",
        &format!("dsn = \"postgres://root@{addr}/test\"\ntls = {{ mode = \"require\" }}"),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert!(o.message.contains("does not support TLS"), "{}", o.message);
}

/// Runs one statement on a PostgreSQL server as a plain client.
async fn pg_exec(dsn: &str, sql: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("{e}: {e:?}"))?;
    let task = tokio::spawn(conn);
    let r = client
        .batch_execute(sql)
        .await
        .map_err(|e| format!("{e:?}"));
    drop(client);
    let _ = task.await;
    r
}

/// The first column of the first row of `sql`, as text.
async fn pg_value(dsn: &str, sql: &str) -> Option<String> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .ok()?;
    let task = tokio::spawn(conn);
    let r = client.simple_query(sql).await.ok();
    drop(client);
    let _ = task.await;
    r?.into_iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// A disposable PostgreSQL.

/// The uid and gid of an OS user, from /etc/passwd.
fn os_user(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name) && f.len() > 3)
                .then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .unwrap_or_else(|| panic!("no OS user {name:?} (install the Debian package `postgresql`)"))
}

/// The newest /usr/lib/postgresql/<version>/bin.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("no /usr/lib/postgresql: install the Debian package `postgresql`")
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin: install `postgresql`")
        .1
}

/// Sends `sig` to a child and waits (bounded) for it to exit; SIGKILL if it does not.
fn stop_child(child: &mut Child, sig: Signal) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = kill_process(Pid::from_child(child), sig);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A PostgreSQL cluster in a temp dir, run as the `postgres` OS user on a free port with
/// password (SCRAM) auth over TCP and TLS with a certificate of a generated CA. Stopped on drop.
struct DisposablePg {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    uid: u32,
    gid: u32,
    superuser_password: String,
}

impl DisposablePg {
    fn start(pki: &Pki) -> DisposablePg {
        let (uid, gid) = os_user("postgres");
        let dir = TempDir::new().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let superuser_password = "super-secret-pw".to_string();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &superuser_password).unwrap();
        // The server reads its key only when it is the owner with mode 0600.
        for name in ["server.pem", "server.key"] {
            let to = dir.path().join(name);
            std::fs::copy(pki.path(name), &to).unwrap();
            std::os::unix::fs::chown(&to, Some(uid), Some(gid)).unwrap();
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        }
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        let out = Command::new(pg_bin().join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .uid(uid)
            .gid(gid)
            .current_dir(dir.path())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = DisposablePg {
            dir,
            port: free_port(),
            child: None,
            uid,
            gid,
            superuser_password,
        };
        pg.launch();
        pg
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.log"))
            .unwrap();
        let child = Command::new(pg_bin().join("postgres"))
            .arg("-D")
            .arg(d.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(d)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=20"])
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", d.join("server.pem").display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", d.join("server.key").display()))
            .uid(self.uid)
            .gid(self.gid)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
    }

    fn dsn(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    fn superuser_dsn(&self) -> String {
        self.dsn("postgres", &self.superuser_password)
    }

    /// Waits until the server answers queries (it refuses them while starting up).
    async fn wait_ready(&mut self) {
        let dsn = self.superuser_dsn();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if pg_value(&dsn, "SELECT 1").await.is_some() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("postgres exited ({status}): {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not become ready: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Fast shutdown (SIGINT): clients are disconnected, the port is released.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Signal::INT);
        }
    }
}

impl Drop for DisposablePg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Immediate shutdown: the postmaster ends its backends too.
            stop_child(&mut c, Signal::QUIT);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_disposable_server_auth_read_only_tls_stop_and_recovery() {
    let pki = Pki::new();
    let mut pg = DisposablePg::start(&pki);
    pg.wait_ready().await;
    pg_exec(
        &pg.superuser_dsn(),
        "CREATE USER bw PASSWORD 'right-pass-xyz'; CREATE TABLE t (a int); GRANT ALL ON t TO bw",
    )
    .await
    .unwrap();

    let secrets = TempDir::new().unwrap();
    let wrong_dsn = secrets.path().join("wrong-dsn");
    std::fs::write(&wrong_dsn, pg.dsn("bw", "wrong-pass-123")).unwrap();
    let good = pg.dsn("bw", "right-pass-xyz");
    let ssl_query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let config = load_config(&format!(
        r#"
[[check]]
name = "good"
type = "postgres"
dsn = {good}
query = "{ssl_query}"
timeout = "3s"
tls = {{ ca_file = {ca} }}
expect = [ {{ observe = "value", eq = "t" }} ]

[[check]]
name = "wrong-password"
type = "postgres"
dsn = {{ file = {wrong} }}

[[check]]
name = "password-in-an-error"
type = "postgres"
dsn = {good}
query = "SELECT 'right-pass-xyz'::int"

[[check]]
name = "insert"
type = "postgres"
dsn = {good}
query = "INSERT INTO t VALUES (1)"

[[check]]
name = "other-ca"
type = "postgres"
dsn = {good}
tls = {{ ca_file = {other} }}

[[check]]
name = "slow"
type = "postgres"
dsn = {good}
query = "SELECT pg_sleep(3)"
timeout = "5s"
"#,
        good = q(&good),
        ca = q(pki.path("ca.pem")),
        other = q(pki.path("other-ca.pem")),
        wrong = q(wrong_dsn.display().to_string()),
    ));
    let rt = Arc::new(Runtime::new(config, Arc::new(Metrics::new())));
    let check = |name: &str| rt.check(name).unwrap().clone();

    let o = rt.run_check(&check("good")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let o = rt.run_check(&check("wrong-password")).await;
    assert_outcome(&o, Status::Fail, Reason::Auth);
    assert!(
        o.message.contains("password authentication failed"),
        "{}",
        o.message
    );
    let shown = format!("{o:?}");
    assert!(!shown.contains("wrong-pass-123"), "{shown}");

    let o = rt.run_check(&check("password-in-an-error")).await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.contains("****"), "{}", o.message);
    assert!(!format!("{o:?}").contains("right-pass-xyz"), "{o:?}");

    let o = rt.run_check(&check("insert")).await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.contains("read-only transaction"), "{}", o.message);
    assert_eq!(
        pg_value(&pg.superuser_dsn(), "SELECT count(*) FROM t")
            .await
            .as_deref(),
        Some("0")
    );

    let o = rt.run_check(&check("other-ca")).await;
    assert_outcome(&o, Status::Fail, Reason::Tls);

    // Stopped while a query runs, then while nothing runs: connect. Back on the same port
    // and data: the same loaded check passes again by itself.
    let slow = {
        let (rt, slow) = (rt.clone(), check("slow"));
        tokio::spawn(async move { rt.run_check(&slow).await })
    };
    wait_for("the slow query runs", Duration::from_secs(5), async || {
        let n = pg_value(
            &pg.superuser_dsn(),
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%; SELECT pg_sleep(3)' AND pid <> pg_backend_pid()",
        )
        .await;
        (n.as_deref() == Some("1")).then_some(())
    })
    .await;
    pg.stop();
    let o = slow.await.unwrap();
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert!(o.message.contains("57P01"), "{}", o.message);
    assert!(o.duration < Duration::from_secs(3), "took {:?}", o.duration);
    let o = rt.run_check(&check("good")).await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert!(o.message.contains("connection refused"), "{}", o.message);
    pg.launch();
    let good = check("good");
    wait_for(
        "the check passes again",
        Duration::from_secs(15),
        async || {
            let o = rt.run_check(&good).await;
            (o.status == Status::Pass).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// MariaDB on the machine.

#[tokio::test(flavor = "multi_thread")]
async fn mysql_select_1_passes_with_value_and_rows() {
    require_my();
    let o = run("mysql", &format!("dsn = {}", q(MY))).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "1");
    assert_eq!(number(&o, "rows"), 1.0);
    assert_eq!(o.message, "1 row, value \"1\"");

    let o = run(
        "mysql",
        "dsn = \"mariadb://root@127.0.0.1:3306/test\"\nquery = \"SELECT DATABASE()\"",
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "test");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_assertions_on_value_rows_and_duration() {
    require_my();
    let keys = |expect: &str| {
        format!(
            "dsn = {}\nquery = \"SELECT 6 * 7\"\nexpect = [{expect}]",
            q(MY)
        )
    };
    let o = run(
        "mysql",
        &keys(
            "{ observe = \"value\", gt = 0 }, { observe = \"value\", eq = 42 }, { observe = \"rows\", eq = 1 }, { duration = \"total\", lt = \"5s\" }",
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let o = run("mysql", &keys("{ observe = \"value\", gt = 100 }")).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(text(&o, "value"), "42");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_multi_row_and_multi_statement_queries() {
    require_my();
    let o = run(
        "mysql",
        &format!(
            "dsn = {}\nquery = \"SELECT 'a' UNION ALL SELECT 'b' UNION ALL SELECT 'c'\"\nexpect = [{{ observe = \"rows\", eq = 3 }}]",
            q(MY)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "a");

    let o = run(
        "mysql",
        &format!(
            "dsn = {}\nquery = \"SET @x = 5; SELECT 1; DO 1; SELECT @x + 1 UNION ALL SELECT 9\"",
            q(MY)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "value"), "6");
    assert_eq!(number(&o, "rows"), 2.0);

    let o = run(
        "mysql",
        &format!(
            "dsn = {}\nquery = \"SELECT 1 FROM DUAL WHERE 1 = 0\"",
            q(MY)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(o.observations.get("value").is_none(), "{o:#?}");
    assert_eq!(number(&o, "rows"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_null_leaves_value_absent() {
    require_my();
    let o = run(
        "mysql",
        &format!(
            "dsn = {}\nquery = \"SELECT NULL\"\nexpect = [{{ observe = \"value\", exists = false }}]",
            q(MY)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(o.observations.get("value").is_none(), "{o:#?}");
    assert_eq!(o.message, "1 row, value NULL");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_writes_are_refused_as_query_even_ddl() {
    require_my();
    let table = format!("bw_ro_probe_{}", std::process::id());
    // DDL implicitly commits in MySQL / MariaDB: only the read-only session stops it.
    let o = run(
        "mysql",
        &format!("dsn = {}\nquery = \"CREATE TABLE {table} (a INT)\"", q(MY)),
    )
    .await;
    let leaked = my_exec(MY, &format!("DROP TABLE IF EXISTS {table}")).await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.contains("READ ONLY"), "{}", o.message);
    assert!(o.message.contains("1792"), "{}", o.message);
    assert!(leaked.is_ok(), "{leaked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_errors_in_the_query_are_reason_query() {
    require_my();
    let o = run("mysql", &format!("dsn = {}\nquery = \"SELEC 1\"", q(MY))).await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.starts_with("query: "), "{}", o.message);
    assert!(o.message.ends_with("(error 1064)"), "{}", o.message);

    // A failing statement after one that succeeded.
    let o = run(
        "mysql",
        &format!(
            "dsn = {}\nquery = \"SELECT 1; SELECT * FROM no_such_table\"",
            q(MY)
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.contains("1146"), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_statement_timeout_is_reason_timeout_and_cancels_on_the_server() {
    require_my();
    let marker = format!("bw_timeout_{}", std::process::id());
    let o = run(
        "mysql",
        &format!(
            "dsn = {}\nquery = \"SELECT SLEEP(5) /* {marker} */\"\ntimeout = \"1s\"",
            q(MY)
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    assert!(
        o.duration < Duration::from_millis(1100),
        "took {:?}",
        o.duration
    );
    assert!(o.message.contains("statement timeout"), "{}", o.message);
    wait_for("the query is gone from the process list", Duration::from_secs(3), async || {
        let n = my_value(
            MY,
            &format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' AND ID <> CONNECTION_ID()"
            ),
        )
        .await;
        (n.as_deref() == Some("0")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_connection_refused_is_reason_connect() {
    let port = closed_port();
    let o = run(
        "mysql",
        &format!("dsn = \"mysql://root:s3cr3t-pw@127.0.0.1:{port}/test\""),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert_eq!(
        o.message,
        format!("connect: connection refused (127.0.0.1:{port})")
    );

    // IPv6 loopback.
    let o = run(
        "mysql",
        &format!("dsn = \"mysql://root@[::1]:{port}/test\""),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert_eq!(
        o.message,
        format!("connect: connection refused ([::1]:{port})")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_silent_server_times_out_within_the_bound() {
    assert_silent_server_is_cut("mysql", |a| format!("mysql://root@{a}/test")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_tls_require_against_a_server_without_tls_is_reason_tls() {
    require_my();
    let have_ssl = my_value(MY, "SELECT @@have_ssl").await;
    assert_ne!(
        have_ssl.as_deref(),
        Some("YES"),
        "this test needs the machine's MariaDB without TLS"
    );
    let o = run(
        "mysql",
        &format!("dsn = {}\ntls = {{ mode = \"require\" }}", q(MY)),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert_eq!(
        o.message,
        "tls: the server at 127.0.0.1:3306 does not offer TLS"
    );
    // mode = "disable" overrides a DSN asking for TLS.
    let o = run(
        "mysql",
        &format!("dsn = \"{MY}?require_ssl=true\"\ntls = {{ mode = \"disable\" }}"),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
}

async fn my_exec(dsn: &str, sql: &str) -> Result<(), String> {
    let mut conn = mysql_async::Conn::from_url(dsn)
        .await
        .map_err(|e| e.to_string())?;
    let r = conn.query_drop(sql).await.map_err(|e| e.to_string());
    let _ = conn.disconnect().await;
    r
}

async fn my_value(dsn: &str, sql: &str) -> Option<String> {
    let mut conn = mysql_async::Conn::from_url(dsn).await.ok()?;
    let r: Option<Option<String>> = conn.query_first(sql).await.ok();
    let _ = conn.disconnect().await;
    r.flatten()
}

// ---------------------------------------------------------------------------------------------
// A disposable MariaDB.

fn find_binary(names: &[&str], package: &str) -> PathBuf {
    names
        .iter()
        .flat_map(|n| ["/usr/sbin", "/usr/bin"].map(|d| Path::new(d).join(n)))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("none of {names:?} found: install the Debian package `{package}`")
        })
}

/// A MariaDB data dir in a temp dir, served on a free port with a user `bw` (password
/// `right-pass-xyz`) and a table `bw.t`, TLS with a certificate of a generated CA. Stopped
/// on drop.
struct DisposableMaria {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl DisposableMaria {
    fn start(pki: &Pki) -> DisposableMaria {
        let dir = TempDir::new().unwrap();
        let out = Command::new(find_binary(
            &["mariadb-install-db", "mysql_install_db"],
            "mariadb-server",
        ))
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.path().join("data").display()))
        .args([
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ])
        .output()
        .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            dir.path().join("init.sql"),
            "CREATE USER IF NOT EXISTS 'bw'@'%' IDENTIFIED BY 'right-pass-xyz';\n\
             GRANT ALL ON *.* TO 'bw'@'%';\n\
             CREATE DATABASE IF NOT EXISTS bw;\n\
             CREATE TABLE IF NOT EXISTS bw.t (a INT);\n",
        )
        .unwrap();
        let mut m = DisposableMaria {
            dir,
            port: free_port(),
            child: None,
        };
        m.launch(pki);
        m
    }

    fn launch(&mut self, pki: &Pki) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.log"))
            .unwrap();
        let child = Command::new(find_binary(&["mariadbd", "mysqld"], "mariadb-server"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--init-file={}", d.join("init.sql").display()))
            .arg(format!("--ssl-cert={}", pki.path("server.pem")))
            .arg(format!("--ssl-key={}", pki.path("server.key")))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=8M",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
    }

    fn dsn(&self, password: &str) -> String {
        format!("mysql://bw:{password}@127.0.0.1:{}/bw", self.port)
    }

    async fn wait_ready(&mut self) {
        let dsn = self.dsn("right-pass-xyz");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if my_value(&dsn, "SELECT 1").await.is_some() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("mariadbd exited ({status}): {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not become ready: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Signal::TERM);
        }
    }
}

impl Drop for DisposableMaria {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Signal::KILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_disposable_server_auth_read_only_tls_stop_and_recovery() {
    let pki = Pki::new();
    let mut m = DisposableMaria::start(&pki);
    m.wait_ready().await;

    let good = m.dsn("right-pass-xyz");
    let config = load_config(&format!(
        r#"
[[check]]
name = "good"
type = "mysql"
dsn = {good}
query = "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'"
timeout = "3s"
tls = {{ ca_file = {ca} }}
expect = [ {{ observe = "value", ne = "" }} ]

[[check]]
name = "wrong-password"
type = "mysql"
dsn = {wrong}

[[check]]
name = "password-in-an-error"
type = "mysql"
dsn = {good}
query = "SELECT * FROM `right-pass-xyz`"

[[check]]
name = "insert"
type = "mysql"
dsn = {good}
query = "INSERT INTO t VALUES (1)"

[[check]]
name = "other-ca"
type = "mysql"
dsn = {good}
tls = {{ ca_file = {other} }}

[[check]]
name = "slow"
type = "mysql"
dsn = {good}
query = "SELECT SLEEP(3)"
timeout = "5s"
"#,
        good = q(&good),
        wrong = q(m.dsn("wrong-pass-123")),
        ca = q(pki.path("ca.pem")),
        other = q(pki.path("other-ca.pem")),
    ));
    let rt = Arc::new(Runtime::new(config, Arc::new(Metrics::new())));
    let check = |name: &str| rt.check(name).unwrap().clone();

    let o = rt.run_check(&check("good")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let o = rt.run_check(&check("wrong-password")).await;
    assert_outcome(&o, Status::Fail, Reason::Auth);
    assert!(o.message.contains("Access denied"), "{}", o.message);
    assert!(!format!("{o:?}").contains("wrong-pass-123"), "{o:?}");

    let o = rt.run_check(&check("password-in-an-error")).await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.contains("****"), "{}", o.message);
    assert!(!format!("{o:?}").contains("right-pass-xyz"), "{o:?}");

    let o = rt.run_check(&check("insert")).await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.contains("READ ONLY"), "{}", o.message);
    assert_eq!(
        my_value(&good, "SELECT COUNT(*) FROM t").await.as_deref(),
        Some("0")
    );

    let o = rt.run_check(&check("other-ca")).await;
    assert_outcome(&o, Status::Fail, Reason::Tls);

    let slow = {
        let (rt, slow) = (rt.clone(), check("slow"));
        tokio::spawn(async move { rt.run_check(&slow).await })
    };
    wait_for("the slow query runs", Duration::from_secs(5), async || {
        let n = my_value(
            &good,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%SELECT SLEEP(3)' AND ID <> CONNECTION_ID()",
        )
        .await;
        (n.as_deref() == Some("1")).then_some(())
    })
    .await;
    m.stop();
    let o = slow.await.unwrap();
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert!(o.duration < Duration::from_secs(3), "took {:?}", o.duration);
    let o = rt.run_check(&check("good")).await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert!(o.message.contains("connection refused"), "{}", o.message);
    m.launch(&pki);
    let good = check("good");
    wait_for(
        "the check passes again",
        Duration::from_secs(15),
        async || {
            let o = rt.run_check(&good).await;
            (o.status == Status::Pass).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// validate

#[test]
fn validate_reports_bad_database_checks_at_their_place() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("checks")).unwrap();
    std::fs::write(
        dir.path().join("bakewatch.toml"),
        "checks = [\"checks/*.toml\"]\n",
    )
    .unwrap();
    let checks = r#"[[check]]
name = "no-dsn"
type = "postgres"

[[check]]
name = "wrong-scheme"
type = "postgres"
dsn = "mysql://root@127.0.0.1/test"

[[check]]
name = "unknown-option"
type = "postgres"
dsn = "host=127.0.0.1 user=root bogus=1"

[[check]]
name = "no-user"
type = "postgres"
dsn = "postgres://127.0.0.1/test"

[[check]]
name = "bad-mode"
type = "postgres"
dsn = "postgres://root@127.0.0.1/test"
tls = { mode = "verify-full", verfy = false }

[[check]]
name = "commit"
type = "postgres"
dsn = "postgres://root@127.0.0.1/test"
query = "SELECT 1; COMMIT; DELETE FROM orders"

[[check]]
name = "empty-query"
type = "mysql"
dsn = "mysql://root@127.0.0.1/test"
query = " ; "

[[check]]
name = "prefer"
type = "mysql"
dsn = "mysql://root@127.0.0.1/test"
tls = { mode = "prefer", ca_file = "/nonexistent/ca.pem" }

[[check]]
name = "not-a-url"
type = "mysql"
dsn = "root@127.0.0.1/test"

[[check]]
name = "url-param"
type = "mysql"
dsn = "mysql://root@127.0.0.1/test?bogus=1"

[[check]]
name = "env"
type = "mysql"
dsn = { env = "BAKEWATCH_TEST_NO_SUCH_DSN" }
query = "SET SESSION max_statement_time = 0"

[[check]]
name = "observe"
type = "postgres"
dsn = "postgres://root@127.0.0.1/test"
expect = [ { status = 200 } ]
"#;
    std::fs::write(dir.path().join("checks/db.toml"), checks).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bakewatch"))
        .args(["validate", "-c", "bakewatch.toml"])
        .current_dir(dir.path())
        .env_remove("BAKEWATCH_CONFIG")
        .env_remove("BAKEWATCH_TEST_NO_SUCH_DSN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let f = "checks/db.toml";
    let expected = [
        format!("{f}:1:1: check `no-dsn` is missing required key `dsn`"),
        format!(
            "{f}:8:7: dsn: scheme \"mysql\" is not postgres:// or postgresql:// (or write key=value pairs: \"host=… user=… dbname=…\")"
        ),
        format!("{f}:13:7: dsn: invalid connection string: unknown option `bogus`"),
        format!("{f}:18:7: dsn: names no user"),
        format!("{f}:24:16: mode: \"verify-full\" is not \"disable\", \"prefer\" or \"require\""),
        format!("{f}:24:31: unknown key `verfy` in tls (did you mean `verify`?)"),
        format!(
            "{f}:30:9: query: `COMMIT` would end or change the read-only transaction bakewatch runs the query in; leave transaction control out"
        ),
        format!("{f}:36:9: query: is empty"),
        format!(
            "{f}:42:16: mode: \"prefer\" is not available for mysql (its client cannot fall back to plain text); use \"require\" or \"disable\""
        ),
        format!("{f}:42:36: ca_file: cannot read /nonexistent/ca.pem: entity not found"),
        format!(
            "{f}:47:7: dsn: expected a URL such as \"mysql://user:password@host:3306/database\""
        ),
        format!("{f}:52:7: dsn: Unknown connection URL parameter `bogus'"),
        format!("{f}:57:7: dsn: environment variable `BAKEWATCH_TEST_NO_SUCH_DSN` is not set"),
        format!(
            "{f}:58:9: query: a `SET` touching MAX_STATEMENT_TIME would loosen the read-only transaction or the statement timeout bakewatch sets; leave it out"
        ),
        // The assertion vocabulary refuses HTTP-only queries on a database check.
        format!("{f}:64:14: `status` is not available for this check type"),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    for e in &expected {
        assert!(
            lines.iter().any(|l| l == e),
            "missing diagnostic:\n  {e}\nin:\n{stderr}"
        );
    }
    let diagnostics = lines.iter().filter(|l| l.starts_with(f)).count();
    assert_eq!(diagnostics, expected.len(), "{stderr}");
}
