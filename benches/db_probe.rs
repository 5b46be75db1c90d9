//! CPU time per `postgres` and `mysql` check run against the machine's own servers
//! (PostgreSQL on 127.0.0.1:5432, MariaDB on 127.0.0.1:3306), a fresh connection and
//! `SELECT 1` each time, through the daemon's full path: timeout task, connect, read-only
//! transaction with statement timeout, query, close, assertions, redaction, history and
//! metrics. For comparison, the same round trips by the bare client libraries (connect,
//! `SELECT 1`, close; no transaction, no timeout, no bookkeeping). Run:
//! `cargo bench --bench db_probe`.
//!
//! Environment: `PROBES` (per check and concurrency, default 2000), `WORKERS` (tokio worker
//! threads, default 2), `CHECKS` (comma-separated subset of `postgres`, `postgres-tls`,
//! `mysql`, `bare-postgres`, `bare-mysql`). Concurrency 1 and 8 are both measured.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use bakewatch::checks::Status;
use bakewatch::metrics::Metrics;
use bakewatch::runtime::Runtime;

fn require(port: u16, what: &str) {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        panic!("db_probe needs {what} on 127.0.0.1:{port}");
    }
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("db_probe: skipped outside `cargo bench`");
        return;
    }
    require(5432, "PostgreSQL (trust auth for root, database test)");
    require(3306, "MariaDB (root with an empty password, database test)");
    let probes: usize = std::env::var("PROBES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bakewatch.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        r#"
[[check]]
name = "postgres"
type = "postgres"
dsn = "postgres://root@127.0.0.1:5432/test?sslmode=disable"
timeout = "5s"
expect = [ {{ observe = "value", eq = 1 }} ]

[[check]]
name = "postgres-tls"
type = "postgres"
dsn = "postgres://root@127.0.0.1:5432/test"
timeout = "5s"
tls = {{ mode = "require", verify = false }}
expect = [ {{ observe = "value", eq = 1 }} ]

[[check]]
name = "mysql"
type = "mysql"
dsn = "mysql://root@127.0.0.1:3306/test"
timeout = "5s"
expect = [ {{ observe = "value", eq = 1 }} ]
"#
    )
    .unwrap();
    drop(f);
    let config = bakewatch::config::load(&path).expect("bench config loads");
    let rt = Arc::new(Runtime::new(config, Arc::new(Metrics::new())));

    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "db_probe: {probes} probes per row, {workers} runtime workers, fresh connection and SELECT 1 each"
    );
    println!(
        "{:>14}  {:>11}  {:>8}  {:>10}  {:>14}",
        "check", "concurrency", "wall s", "probes/s", "CPU µs/probe"
    );
    let only = std::env::var("CHECKS").ok();
    let mut probes_to_run: Vec<(String, Probe)> = (0..rt.checks.len())
        .map(|i| (rt.checks[i].config.name.clone(), Probe::Check(i)))
        .collect();
    probes_to_run.push(("bare-postgres".into(), Probe::BarePostgres));
    probes_to_run.push(("bare-mysql".into(), Probe::BareMysql));
    for (name, probe) in probes_to_run {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|c| c == name))
        {
            continue;
        }
        for concurrency in [1usize, 8] {
            // Warm up: first-time allocations, lazy statics, TLS configs, page faults.
            tokio.block_on(run(rt.clone(), probe, 100, concurrency));
            let me = std::process::id().to_string();
            let cpu0 = common::cpu_seconds(&me);
            let t0 = Instant::now();
            tokio.block_on(run(rt.clone(), probe, probes, concurrency));
            let wall = t0.elapsed().as_secs_f64();
            let cpu1 = common::cpu_seconds(&me);
            println!(
                "{:>14}  {:>11}  {:>8.2}  {:>10.0}  {:>14.1}",
                name,
                concurrency,
                wall,
                probes as f64 / wall,
                (cpu1 - cpu0) / probes as f64 * 1e6,
            );
        }
    }
}

/// One thing to measure: a configured check, or a bare client doing the same round trips.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Check(usize),
    BarePostgres,
    BareMysql,
}

async fn once(rt: &Runtime, probe: Probe, my_opts: &mysql_async::Opts) {
    match probe {
        Probe::Check(i) => {
            let o = rt.run_check(&rt.checks[i]).await;
            assert!(
                o.status == Status::Pass,
                "probe {} failed: {}",
                rt.checks[i].config.name,
                o.message
            );
        }
        Probe::BarePostgres => {
            let (client, conn) = tokio_postgres::connect(
                "host=127.0.0.1 user=root dbname=test sslmode=disable",
                tokio_postgres::NoTls,
            )
            .await
            .expect("connect to PostgreSQL");
            let task = tokio::spawn(conn);
            let rows = client.simple_query("SELECT 1").await.expect("SELECT 1");
            assert!(!rows.is_empty());
            drop(client);
            let _ = task.await;
        }
        Probe::BareMysql => {
            use mysql_async::prelude::Queryable;
            let mut conn = mysql_async::Conn::new(my_opts.clone())
                .await
                .expect("connect to MariaDB");
            let v: Option<i64> = conn.query_first("SELECT 1").await.expect("SELECT 1");
            assert_eq!(v, Some(1));
            conn.disconnect().await.expect("disconnect");
        }
    }
}

async fn run(rt: Arc<Runtime>, probe: Probe, probes: usize, concurrency: usize) {
    // The same settings the mysql check uses: TCP only, no settings query after connecting.
    let my_opts: mysql_async::Opts =
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(MY_BARE).unwrap())
            .prefer_socket(false)
            .max_allowed_packet(Some(64 << 20))
            .wait_timeout(Some(28_800))
            .into();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (rt, next, my_opts) = (rt.clone(), next.clone(), my_opts.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < probes {
                once(&rt, probe, &my_opts).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

const MY_BARE: &str = "mysql://root@127.0.0.1:3306/test";
