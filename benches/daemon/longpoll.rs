//! `longpoll`: 1,000 idle waiters on one verdict. A deployment of a service with one healthy
//! critical check is registered; once its pending verdict has settled (its revision stops
//! moving), 1,000 connections each send `GET /api/v1/deployments/{id}/verdict?wait=60s`
//! and wait. The verdict passes at `min_duration`; every waiter must be answered only then,
//! with the concluded verdict. Reports the daemon's RSS, CPU and open files before and while
//! the waiters are held, and how long after the verdict's `concluded_at` the first, median
//! and last waiter got their answer.
//!
//! Settings (env): LP_WAITERS (1000), LP_MIN_DURATION_S (45).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    self, CpuMeter, Daemon, DaemonSpec, TOKEN, Target, env_or, http_client, pct, sorted,
};

pub async fn run() {
    let waiters: usize = env_or("LP_WAITERS", 1000);
    let min_duration: u64 = env_or("LP_MIN_DURATION_S", 45);
    let target = Target::start().await;
    let checks = format!(
        "[[check]]\nname = \"shop-health\"\nservice = \"shop\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"10s\"\ntimeout = \"2s\"\ncritical = true\n",
        target.url("/health")
    );
    let policy = format!(
        "[scheduler]\njitter = \"0s\"\n\n[deploy]\nwindow = \"30m\"\ninterval = \"1s\"\nmin_duration = \"{min_duration}s\"\nmax_duration = \"10m\"\nbaseline = \"10m\"\ncritical_failures = 2\n"
    );
    let daemon = Daemon::start(DaemonSpec {
        extra: &policy,
        files: vec![("shop.toml".into(), checks)],
        cpu: None,
        env: vec![],
        nice: None,
    });
    let pid = daemon.pid();
    let client = http_client();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let id = format!("lp-{}", std::process::id());
    let r = client
        .post(daemon.url("/api/v1/deployments"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"id": id, "service": "shop", "version": "2.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let registered = Instant::now();

    // Wait until the pending verdict settles: the same revision for 3 s.
    let verdict_url = daemon.url(&format!("/api/v1/deployments/{id}/verdict"));
    let read = || async {
        client
            .get(&verdict_url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let (mut revision, mut since) = (0, Instant::now());
    loop {
        let v = read().await;
        assert_ne!(v["phase"], "concluded", "concluded too early: {v}");
        let rev = v["revision"].as_u64().unwrap();
        if rev != revision {
            (revision, since) = (rev, Instant::now());
        } else if since.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled = read().await;
    let remaining = Duration::from_secs(min_duration).saturating_sub(registered.elapsed());
    assert!(
        remaining > Duration::from_secs(20),
        "not enough time left to hold the waiters: raise LP_MIN_DURATION_S"
    );
    println!(
        "longpoll: {waiters} waiters on deployment {id} (revision {revision}, reasons {}); the verdict is due in {:.0} s; load {}",
        settled["reasons"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|r| r["code"].as_str().unwrap_or("?").to_string())
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default(),
        remaining.as_secs_f64(),
        harness::loadavg()
    );

    // Before: idle daemon.
    let (rss0, fds0, thr0) = (
        harness::rss_mib(pid),
        harness::open_fds(pid),
        harness::threads(pid),
    );
    let cpu = CpuMeter::start(pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_before = cpu.percent();

    // The waiters: one connection each, request sent, then read until the daemon answers.
    let sent = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let path = format!("/api/v1/deployments/{id}/verdict?wait=60s");
    let open = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..waiters {
        let (sent, answered, path, port) =
            (sent.clone(), answered.clone(), path.clone(), daemon.port);
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            sent.fetch_add(1, Ordering::SeqCst);
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            let at = harness::unix_now();
            answered.fetch_add(1, Ordering::SeqCst);
            let text = String::from_utf8_lossy(&buf).to_string();
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            (at, v)
        }));
    }
    while sent.load(Ordering::SeqCst) < waiters {
        assert!(
            open.elapsed() < Duration::from_secs(30),
            "could not send every request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened_in = open.elapsed().as_secs_f64();
    // Let the daemon read every request, then measure while held.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = CpuMeter::start(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu_held = cpu.percent();
    let (rss1, fds1, thr1) = (
        harness::rss_mib(pid),
        harness::open_fds(pid),
        harness::threads(pid),
    );
    let early = answered.load(Ordering::SeqCst);

    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let rss_after = harness::rss_mib(pid);
    let concluded: Vec<&(f64, Value)> = results
        .iter()
        .filter(|(_, v)| v["phase"] == "concluded")
        .collect();
    let verdicts: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(_, v)| v["verdict"].as_str().unwrap_or("(no answer)").to_string())
        .collect();
    let concluded_at = results
        .iter()
        .find_map(|(_, v)| v["concluded_at"].as_str())
        .map(harness::rfc3339_unix)
        .expect("a concluded verdict");
    let delays = sorted(
        results
            .iter()
            .map(|(at, _)| (at - concluded_at) * 1000.0)
            .collect(),
    );
    let before_conclusion = results.iter().filter(|(at, _)| *at < concluded_at).count();

    println!();
    println!(
        "| waiters | opened in | held | answered early | answered concluded | verdicts | first after concluded_at | median | last |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {waiters} | {opened_in:.2} s | {} | {} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        waiters - early,
        early + before_conclusion.saturating_sub(early),
        concluded.len(),
        verdicts.into_iter().collect::<Vec<_>>().join(","),
        delays[0],
        pct(&delays, 0.5),
        delays[delays.len() - 1],
    );
    println!();
    println!("| daemon | RSS MiB | open files | threads | CPU % (over) |");
    println!("|---|---|---|---|---|");
    println!("| idle, before | {rss0:.1} | {fds0} | {thr0} | {cpu_before:.2} (5 s) |");
    println!("| {waiters} waiters held | {rss1:.1} | {fds1} | {thr1} | {cpu_held:.2} (10 s) |");
    println!(
        "| after all answered | {rss_after:.1} | {} | {} | |",
        harness::open_fds(pid),
        harness::threads(pid)
    );
    daemon.stop();
    drop(target);
}
