//! `detect`: time from a target breaking to the verdict turning `fail`. One critical `http`
//! check on an in-process target, `[deploy] interval = "1s"`, `critical_failures = 2`. Each
//! round registers a deployment, waits until it has passed two runs, breaks the target (500)
//! at a random phase of the 1 s cadence (time T), long-polls the verdict (re-polling while it
//! is still pending, as `bakewatch deploy --wait` does) and records when it says `fail`.
//! Splits each round into: T → first failing request reached the target (the phase), the
//! interval to the second failing request, and from the second failing request to the
//! answer (run, evaluation, storage, long-poll wake-up).
//!
//! Settings (env): DETECT_ROUNDS (12).

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

use crate::harness::{self, Daemon, DaemonSpec, TOKEN, Target, env_or, pct, sorted};

pub async fn run() {
    let rounds: usize = env_or("DETECT_ROUNDS", 12);
    let target = Target::start().await;
    let checks = format!(
        "[[check]]\nname = \"shop-health\"\nservice = \"shop\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"10s\"\ntimeout = \"2s\"\ncritical = true\n",
        target.url("/health")
    );
    let policy = "[scheduler]\njitter = \"0s\"\n\n[deploy]\nwindow = \"30m\"\ninterval = \"1s\"\nmin_duration = \"20m\"\nmax_duration = \"30m\"\nbaseline = \"10m\"\ncritical_failures = 2\n";
    let daemon = Daemon::start(DaemonSpec {
        extra: policy,
        files: vec![("shop.toml".into(), checks)],
        cpu: None,
        env: vec![],
        nice: None,
    });
    let client = harness::http_client();
    println!(
        "detect: {rounds} rounds, deploy interval 1 s, critical_failures 2; load {}",
        harness::loadavg()
    );
    println!();
    println!(
        "| round | T → 1st failing run | → 2nd failing run | 2nd run → verdict answered | T → fail |"
    );
    println!("|---|---|---|---|---|");
    let mut totals = Vec::new();
    let mut tails = Vec::new();
    for round in 0..rounds {
        target.set_status(200);
        let id = format!("det-{}-{round}", std::process::id());
        let r = client
            .post(daemon.url("/api/v1/deployments"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"id": id, "service": "shop", "version": format!("2.0.{round}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
        let url = daemon.url(&format!("/api/v1/deployments/{id}/verdict"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            assert_ne!(v["phase"], "concluded", "{v}");
            if v["checks"][0]["runs"].as_u64().unwrap_or(0) >= 2
                && v["checks"][0]["failures"].as_u64() == Some(0)
            {
                break;
            }
            assert!(Instant::now() < deadline, "no runs after registration: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let phase = rand::rng().random_range(0..1000);
        tokio::time::sleep(Duration::from_millis(phase)).await;
        let t = Instant::now();
        target.set_status(500);
        let answered = loop {
            let v: Value = client
                .get(format!("{url}?wait=10s"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["phase"] == "concluded" {
                assert_eq!(v["verdict"], "fail", "{v}");
                break Instant::now();
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "no fail verdict: {v}"
            );
        };
        let failing = target.served(500, t);
        assert!(
            failing.len() >= 2,
            "fewer than 2 failing runs reached the target"
        );
        let (f1, f2) = (failing[0] - t, failing[1] - t);
        let total = answered - t;
        let tail = answered - failing[1];
        println!(
            "| {round} | {:.0} ms | {:.0} ms | {:.1} ms | {:.0} ms |",
            f1.as_secs_f64() * 1000.0,
            f2.as_secs_f64() * 1000.0,
            tail.as_secs_f64() * 1000.0,
            total.as_secs_f64() * 1000.0
        );
        totals.push(total.as_secs_f64() * 1000.0);
        tails.push(tail.as_secs_f64() * 1000.0);
    }
    let (totals, tails) = (sorted(totals), sorted(tails));
    println!();
    println!(
        "| rounds | T → fail min | median | max | ≤ 2,100 ms | 2nd failing run → answer min | median | max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {rounds} | {:.0} ms | {:.0} ms | {:.0} ms | {} of {rounds} | {:.1} ms | {:.1} ms | {:.1} ms |",
        totals[0],
        pct(&totals, 0.5),
        totals[totals.len() - 1],
        totals.iter().filter(|t| **t <= 2100.0).count(),
        tails[0],
        pct(&tails, 0.5),
        tails[tails.len() - 1],
    );
    daemon.stop();
}
