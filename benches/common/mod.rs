//! Pieces every bench harness shares: process CPU time and the probe loop.

#![allow(dead_code)] // each bench uses its own subset

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bakewatch::checks::Status;
use bakewatch::runtime::Runtime;

/// user + system CPU seconds of a process, from /proc/<pid>/stat (USER_HZ is 100 on Linux).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Runs check number `check` of `rt` `probes` times through the daemon's own path, with
/// `concurrency` runs in flight; every run must pass.
pub async fn run_check_loop(rt: Arc<Runtime>, check: usize, probes: usize, concurrency: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (rt, next) = (rt.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < probes {
                let o = rt.run_check(&rt.checks[check]).await;
                assert!(
                    o.status == Status::Pass || o.status == Status::Degraded,
                    "run failed: {}",
                    o.message
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
