//! `api`: `GET /api/v1/checks/{name}` under wrk (`wrk -t2 -c64 -d20s --latency`) with the
//! daemon running 100 `http` checks against nginx (99 every 10 s; the one read every 1 s, so
//! its answer lists a full 50 recent runs). Two placements: all processes free on both cores,
//! and the daemon on core 0 with wrk on core 1.
//!
//! Settings (env): API_CHECKS (100), API_SECONDS (20), API_CONNECTIONS (64), API_THREADS (2),
//! API_WARMUP_S (55).

use std::process::Command;
use std::time::Duration;

use crate::harness::{self, CpuMeter, Daemon, DaemonSpec, Nginx, env_or};

struct Wrk {
    rps: f64,
    p50: String,
    p90: String,
    p99: String,
    max: String,
    requests: String,
    non_2xx: u64,
    errors: String,
}

fn parse_wrk(out: &str) -> Wrk {
    let after = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|r| r.trim().to_string()))
            .unwrap_or_default()
    };
    let latency_max = out
        .lines()
        .find(|l| l.trim().starts_with("Latency"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("")
        .to_string();
    let requests = out
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    Wrk {
        rps: after("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50: after("50%"),
        p90: after("90%"),
        p99: after("99%"),
        max: latency_max,
        requests,
        non_2xx: after("Non-2xx or 3xx responses:").parse().unwrap_or(0),
        errors: after("Socket errors:"),
    }
}

pub async fn run() {
    let n: usize = env_or("API_CHECKS", 100);
    let secs: u64 = env_or("API_SECONDS", 20);
    let conns: usize = env_or("API_CONNECTIONS", 64);
    let wrk_threads: usize = env_or("API_THREADS", 2);
    let warmup: u64 = env_or("API_WARMUP_S", 55);
    assert!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk not found: install the Debian package wrk"
    );
    let nginx = Nginx::start(None);
    // The check the requests read runs every second, so its detail carries a full list of
    // recent runs (50) by the time wrk starts; the others every 10 s.
    let tables = (0..n).map(|i| {
        let (name, every) = if i == 0 {
            ("api-hot".to_string(), "1s")
        } else {
            (format!("api-{i:04}"), "10s")
        };
        format!(
            "[[check]]\nname = \"{name}\"\nservice = \"shop\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"{every}\"\ntimeout = \"5s\"\nexpect = [ {{ status = 200 }}, {{ jsonpath = \"$.status\", eq = \"ok\" }} ]\n\n",
            nginx.url("/health")
        )
    });
    let files = harness::check_files("api", tables);
    println!(
        "api: {n} http checks (api-hot every 1 s, the others every 10 s); wrk -t{wrk_threads} -c{conns} -d{secs}s --latency on /api/v1/checks/api-hot; load {}",
        harness::loadavg()
    );
    let mut rows = Vec::new();
    for (placement, daemon_cpu, wrk_cpu) in [
        ("both free on 2 cores", None, None),
        ("daemon core 0, wrk core 1", Some(0), Some(1)),
    ] {
        let daemon = Daemon::start(DaemonSpec {
            extra: "",
            files: files.clone(),
            cpu: daemon_cpu,
            env: vec![],
            nice: None,
        });
        // Every check has run, and api-hot has 50 recent runs to list.
        tokio::time::sleep(Duration::from_secs(warmup)).await;
        let path = "/api/v1/checks/api-hot".to_string();
        let (status, body) = harness::get_blocking(daemon.port, &path).unwrap();
        assert_eq!(status, 200, "{body}");
        let mut cmd = match wrk_cpu {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &c.to_string(), "wrk"]);
                cmd
            }
            None => Command::new("wrk"),
        };
        cmd.args([
            &format!("-t{wrk_threads}"),
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            &daemon.url(&path),
        ]);
        let cpu = CpuMeter::start(daemon.pid());
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run wrk"))
            .await
            .unwrap();
        let daemon_pct = cpu.percent();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let w = parse_wrk(&text);
        assert!(w.rps.is_finite(), "cannot read wrk's output:\n{text}");
        rows.push((
            placement,
            w,
            daemon_pct,
            body.len(),
            harness::threads(daemon.pid()),
        ));
        daemon.stop();
    }
    println!();
    println!(
        "| placement | requests | req/s | p50 | p90 | p99 | max | non-2xx | socket errors | daemon CPU % | daemon threads | body bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (placement, w, cpu, body, threads) in rows {
        println!(
            "| {placement} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {cpu:.0} | {threads} | {body} |",
            w.requests,
            w.rps,
            w.p50,
            w.p90,
            w.p99,
            w.max,
            w.non_2xx,
            if w.errors.is_empty() { "0" } else { &w.errors },
        );
    }
}
