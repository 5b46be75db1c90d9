//! Notification delivery through the persisted outbox: how fast notifications are queued
//! (one committed, fsync'd SQLite transaction each, as the daemon does) and how fast the
//! outbox worker delivers them to a loopback webhook receiver (send, then a committed
//! "delivered" mark each), and the CPU both cost. The state file is on the machine's disk, so
//! the numbers include its fsync latency.
//! Run: `cargo bench --bench outbox`. Environment: `NOTIFICATIONS` (default 2000).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bakewatch::metrics::Metrics;
use bakewatch::notify::outbox::{self, Delivery, Outbox};
use bakewatch::notify::{AlertEvent, AlertStatus, Event, Notification};
use bakewatch::rules::{Comparison, ThresholdSource};
use bakewatch::store::Store;
use tokio_util::sync::CancellationToken;

mod common;

fn notification(i: usize) -> Notification {
    Notification {
        id: format!("bench:{i}"),
        dedup_key: format!("rule:check-{}", i % 50),
        created_at: "2026-11-27T10:00:00.000Z".into(),
        link: "http://127.0.0.1:9797/".into(),
        event: Event::Alert(AlertEvent {
            status: AlertStatus::Firing,
            rule: "rule".into(),
            check: format!("check-{}", i % 50),
            service: "bench".into(),
            severity: "critical".into(),
            signal: "failure_ratio".into(),
            value: Some(0.03),
            comparison: Comparison::Above,
            threshold: 0.005,
            threshold_source: ThresholdSource::PostDeploy,
            for_seconds: 0.0,
            window_seconds: 300.0,
            summary: "failure_ratio 0.03 above 0.005 (post-deploy)".into(),
            starts_at: "2026-11-27T10:00:00.000Z".into(),
            ends_at: None,
            deployment: None,
            rollback: false,
        }),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("outbox: skipped outside `cargo bench`");
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let n: usize = std::env::var("NOTIFICATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // The receiver: counts what arrives.
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        // The notifier, loaded as the daemon loads it.
        let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
        std::fs::create_dir(dir.path().join("checks")).unwrap();
        std::fs::write(
            dir.path().join("checks/c.toml"),
            "[[check]]\nname = \"c\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bakewatch.toml"),
            format!(
                "checks = [\"checks/*.toml\"]\n\n[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/hook\"\n"
            ),
        )
        .unwrap();
        let config = bakewatch::config::load(&dir.path().join("bakewatch.toml")).unwrap();
        let store = Store::open(dir.path().join("state.db")).await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let queue = Outbox::new(store.clone(), metrics, vec!["hook".into()]);

        let me = std::process::id().to_string();
        let cpu0 = common::cpu_seconds(&me);
        let t0 = Instant::now();
        for i in 0..n {
            queue.push("hook", &notification(i)).await.unwrap();
        }
        let queued = t0.elapsed();
        let cpu1 = common::cpu_seconds(&me);

        let shutdown = CancellationToken::new();
        let delivery = Delivery {
            receivers: config
                .notifiers
                .iter()
                .map(|n| (n.name.clone(), n.receiver.clone()))
                .collect(),
            policy: config.notifications.clone(),
            redactor: Default::default(),
        };
        let t1 = Instant::now();
        let worker = tokio::spawn(outbox::run(queue, delivery, shutdown.clone()));
        while received.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delivered = t1.elapsed();
        let cpu2 = common::cpu_seconds(&me);
        shutdown.cancel();
        worker.await.unwrap();
        store.close().await;

        println!("outbox: {n} notifications to a loopback webhook (state file with synchronous=FULL)");
        println!(
            "  queue:   {:>8.0} /s   {:>7.3} ms each   cpu {:>6.1} µs each",
            n as f64 / queued.as_secs_f64(),
            queued.as_secs_f64() * 1000.0 / n as f64,
            (cpu1 - cpu0) * 1e6 / n as f64
        );
        println!(
            "  deliver: {:>8.0} /s   {:>7.3} ms each   cpu {:>6.1} µs each (bench process, receiver included)",
            n as f64 / delivered.as_secs_f64(),
            delivered.as_secs_f64() * 1000.0 / n as f64,
            (cpu2 - cpu1) * 1e6 / n as f64
        );
    });
}
