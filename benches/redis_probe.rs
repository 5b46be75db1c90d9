//! CPU time per `redis` check run against the machine's Redis on 127.0.0.1:6379, a fresh
//! connection each time, through the daemon's full path (`Runtime::run_check`: timeout task,
//! connect, the pipelined commands, INFO parsing, assertions, redaction, history, metrics).
//! Three checks: `mode = "ping"` alone; ping with one INFO field and an assertion on it; and
//! `mode = "roundtrip"` (SET / GET / DEL on keys of a prefix unique to this run).
//! Run: `cargo bench --bench redis_probe` (needs a running Redis: Debian `redis-server`).
//!
//! Environment: `PROBES` (default 20000), `WORKERS` (tokio worker threads, default 2).
//! Concurrency 1 and 8 are both measured.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use bakewatch::metrics::Metrics;
use bakewatch::runtime::Runtime;

const REDIS_PORT: u16 = 6379;

/// The pid of the Redis serving the port, from `INFO server` (to measure its CPU too).
fn redis_pid() -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", REDIS_PORT)).unwrap_or_else(|e| {
        panic!("no Redis on 127.0.0.1:{REDIS_PORT} ({e}): install and start redis-server")
    });
    s.write_all(b"INFO server\r\n").unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    while !text.contains("process_id:") || !text.ends_with("\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "Redis closed the connection");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("process_id in INFO server")
        .trim()
        .to_string()
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("redis_probe: skipped outside `cargo bench`");
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let probes: usize = std::env::var("PROBES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let redis = redis_pid();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bakewatch.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[check]]
name = "ping"
service = "bench"
type = "redis"
url = "redis://127.0.0.1:{REDIS_PORT}"
timeout = "5s"

[[check]]
name = "ping-info"
service = "bench"
type = "redis"
url = "redis://127.0.0.1:{REDIS_PORT}"
timeout = "5s"
info = ["connected_clients"]
expect = [
  {{ observe = "connected_clients", ge = 1 }},
  {{ duration = "total", lt = "1s", severity = "warn" }},
]

[[check]]
name = "roundtrip"
service = "bench"
type = "redis"
url = "redis://127.0.0.1:{REDIS_PORT}"
timeout = "5s"
mode = "roundtrip"
key_prefix = "bakewatch-bench:{}:"
"#,
            std::process::id()
        ),
    )
    .unwrap();
    let config = bakewatch::config::load(&path).expect("bench config loads");
    let rt = Arc::new(Runtime::new(config, Arc::new(Metrics::new())));

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "redis_probe: {probes} runs per line, {workers} runtime workers, Redis on 127.0.0.1:{REDIS_PORT} (pid {redis}), fresh connection each"
    );
    println!(
        "{:>10}  {:>11}  {:>8}  {:>10}  {:>14}  {:>15}",
        "check", "concurrency", "wall s", "runs/s", "CPU µs/run", "redis µs/run"
    );
    for (index, name) in ["ping", "ping-info", "roundtrip"].into_iter().enumerate() {
        for concurrency in [1usize, 8] {
            // Warm up: first-time allocations, lazy statics, page faults.
            tokio.block_on(common::run_check_loop(rt.clone(), index, 500, concurrency));
            let me = std::process::id().to_string();
            let (cpu0, r0) = (common::cpu_seconds(&me), common::cpu_seconds(&redis));
            let t0 = Instant::now();
            tokio.block_on(common::run_check_loop(
                rt.clone(),
                index,
                probes,
                concurrency,
            ));
            let wall = t0.elapsed().as_secs_f64();
            let (cpu1, r1) = (common::cpu_seconds(&me), common::cpu_seconds(&redis));
            println!(
                "{:>10}  {:>11}  {:>8.2}  {:>10.0}  {:>14.1}  {:>15.1}",
                name,
                concurrency,
                wall,
                probes as f64 / wall,
                (cpu1 - cpu0) / probes as f64 * 1e6,
                (r1 - r0) / probes as f64 * 1e6
            );
        }
    }
}
