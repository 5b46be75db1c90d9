//! `scale`: 10,000 `http` checks at a 10 s interval against a local nginx, the daemon pinned
//! to core 0 (nginx and this harness on core 1). Reports the scheduler lag (p50/p90/p99 from
//! the difference of two scrapes of `bakewatch_scheduler_lag_seconds`), the daemon's CPU
//! share, RSS and threads, first over a window without scrapes in between, then over a window
//! scraped every `SCALE_SCRAPE_S` like Prometheus would; then the time of `GET /metrics`.
//!
//! Settings (env): SCALE_CHECKS (10000), SCALE_INTERVAL ("10s"), SCALE_WARMUP_S (60),
//! SCALE_WINDOW_S (150, each of the two windows), SCALE_SCRAPE_S (15), METRICS_GETS (50),
//! SCALE_CPU (0: the daemon's core; nginx and the harness take the other one),
//! SCALE_KIND (http | tcp), SCALE_NICE (nice level of the daemon and nginx; e.g. -10 on a
//! machine whose other work would otherwise keep the daemon waiting for its core).

use std::time::{Duration, Instant};

use crate::harness::{
    self, CpuMeter, Daemon, DaemonSpec, Hist, Nginx, env_or, http_client, pct, sorted,
};

const LAG: &str = "bakewatch_scheduler_lag_seconds";

struct Window {
    what: String,
    lag: Hist,
    runs: f64,
    failed: f64,
    cpu_pct: f64,
    /// Share of the window the daemon was runnable but waiting for its core.
    wait_pct: f64,
    nginx_pct: f64,
    wall: f64,
    scrapes: Vec<f64>,
}

pub async fn run() {
    let n: usize = env_or("SCALE_CHECKS", 10_000);
    let interval: String = env_or("SCALE_INTERVAL", "10s".to_string());
    let warmup = Duration::from_secs(env_or("SCALE_WARMUP_S", 60));
    let window = Duration::from_secs(env_or("SCALE_WINDOW_S", 150));
    let scrape_every = Duration::from_secs(env_or("SCALE_SCRAPE_S", 15));
    let gets: usize = env_or("METRICS_GETS", 50);
    let kind: String = env_or("SCALE_KIND", "http".to_string());
    let cpu: usize = env_or("SCALE_CPU", 0);
    let other = 1 - cpu.min(1);
    // The daemon gets its core to itself; nginx and this harness share the other.
    harness::pin_self(&other.to_string());

    let render = render_in_process(n);
    if std::env::var_os("SCALE_RENDER_ONLY").is_some() {
        println!(
            "in-process Metrics::render() of {n} checks: {:.1} ms CPU per render (median of {}), {:.2} MiB",
            render.0, render.1, render.2
        );
        return;
    }
    let nice: Option<i32> = std::env::var("SCALE_NICE")
        .ok()
        .and_then(|n| n.parse().ok());
    let nginx = Nginx::start_nice(Some(other), nice);
    let tables = (0..n).map(|i| match kind.as_str() {
        "tcp" => format!(
            "[[check]]\nname = \"scale-{i:05}\"\nservice = \"scale\"\ntype = \"tcp\"\naddress = \"127.0.0.1:{}\"\ninterval = \"{interval}\"\ntimeout = \"5s\"\n\n",
            nginx.port
        ),
        _ => format!(
            "[[check]]\nname = \"scale-{i:05}\"\nservice = \"scale\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"{interval}\"\ntimeout = \"5s\"\nexpect = [ {{ status = 200 }} ]\n\n",
            nginx.url("/health")
        ),
    });
    let files = harness::check_files("scale", tables);
    let started = Instant::now();
    let daemon = Daemon::start(DaemonSpec {
        extra: "",
        files,
        cpu: Some(cpu),
        env: vec![],
        nice,
    });
    let pid = daemon.pid();
    println!(
        "scale: {n} {kind} checks every {interval}; daemon pid {pid} on core {cpu} (nice {}, {} threads), nginx + harness on core {other}; ready after {:.1} s; load {}",
        std::env::var("SCALE_NICE").unwrap_or("0".into()),
        harness::threads(pid),
        started.elapsed().as_secs_f64(),
        harness::loadavg()
    );
    tokio::time::sleep(warmup).await;

    let client = http_client();
    let scrape = || async {
        let t = Instant::now();
        let body = client
            .get(daemon.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (body, t.elapsed().as_secs_f64())
    };

    let mut windows = Vec::new();
    for (what, every) in [
        ("no scrapes in between", None),
        ("scraped every", Some(scrape_every)),
    ] {
        let (before, _) = scrape().await;
        let cpu0 = CpuMeter::start(pid);
        let ng0 = CpuMeter::start(nginx.pid());
        let sched0 = harness::sched_seconds(pid);
        let t0 = Instant::now();
        let mut scrapes = Vec::new();
        match every {
            None => tokio::time::sleep(window).await,
            Some(e) => {
                while t0.elapsed() + e <= window {
                    tokio::time::sleep(e).await;
                    scrapes.push(scrape().await.1);
                }
                tokio::time::sleep(window.saturating_sub(t0.elapsed())).await;
            }
        }
        let (cpu, wall) = cpu0.read();
        let nginx_pct = ng0.percent();
        let wait_pct = 100.0 * (harness::sched_seconds(pid).1 - sched0.1) / wall;
        let (after, _) = scrape().await;
        let runs_of = |t: &str| harness::sum_samples(t, "bakewatch_check_runs_total{", "");
        let fails_of = |t: &str| {
            harness::sum_samples(t, "bakewatch_check_runs_total{", "status=\"fail\"")
                + harness::sum_samples(t, "bakewatch_check_runs_total{", "status=\"error\"")
        };
        windows.push(Window {
            what: match every {
                None => what.to_string(),
                Some(e) => format!("{what} {} s", e.as_secs()),
            },
            lag: Hist::parse(&after, LAG).minus(&Hist::parse(&before, LAG)),
            runs: runs_of(&after) - runs_of(&before),
            failed: fails_of(&after) - fails_of(&before),
            cpu_pct: 100.0 * cpu / wall,
            wait_pct,
            nginx_pct,
            wall,
            scrapes,
        });
    }
    let rss = harness::rss_mib(pid);
    let threads = harness::threads(pid);

    // GET /metrics back to back: time to the response head (the render happens before it)
    // and to the last byte.
    let cpu0 = CpuMeter::start(pid);
    let (mut heads, mut totals, mut size) = (Vec::new(), Vec::new(), 0);
    for _ in 0..gets {
        let t = Instant::now();
        let r = client.get(daemon.url("/metrics")).send().await.unwrap();
        heads.push(t.elapsed().as_secs_f64() * 1000.0);
        let body = r.bytes().await.unwrap();
        totals.push(t.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    let (scrape_cpu, _) = cpu0.read();
    let (heads, totals) = (sorted(heads), sorted(totals));

    println!();
    println!(
        "| window | wall s | runs | expected | failed | lag p50 ms | p90 ms | p99 ms (bucket) | runs ≤ 50 ms | daemon CPU % | daemon waiting for its core % | nginx CPU % | scrapes in window, ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let every = crate::parse_duration(&interval).as_secs_f64();
    for w in &windows {
        let (p50, _, _) = w.lag.quantile(0.5);
        let (p90, _, _) = w.lag.quantile(0.9);
        let (p99, lo, hi) = w.lag.quantile(0.99);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} ({}–{}) | {:.3} % | {:.1} | {:.1} | {:.1} | {} |",
            w.what,
            w.wall,
            w.runs,
            n as f64 * w.wall / every,
            w.failed,
            p50 * 1000.0,
            p90 * 1000.0,
            p99 * 1000.0,
            lo * 1000.0,
            hi * 1000.0,
            100.0 * w.lag.share_at_most(0.05),
            w.cpu_pct,
            w.wait_pct,
            w.nginx_pct,
            w.scrapes
                .iter()
                .map(|s| format!("{:.0}", s * 1000.0))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    for w in &windows {
        println!(
            "lag buckets ({}): {}",
            w.what,
            w.lag
                .buckets
                .iter()
                .map(|(le, c)| format!("≤{}:{c:.0}", le * 1000.0))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!();
    println!(
        "daemon RSS {rss:.1} MiB, {threads} threads, load {}",
        harness::loadavg()
    );
    println!();
    println!(
        "| GET /metrics ({n} checks) | requests | body | head p50 ms | head p99 ms | last byte p50 ms | last byte p99 ms | max ms | daemon CPU ms/scrape |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| back to back | {gets} | {:.2} MiB | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        size as f64 / 1048576.0,
        pct(&heads, 0.5),
        pct(&heads, 0.99),
        pct(&totals, 0.5),
        pct(&totals, 0.99),
        totals.last().copied().unwrap_or(f64::NAN),
        scrape_cpu * 1000.0 / gets as f64,
    );
    println!();
    println!(
        "in-process Metrics::render() of {n} checks (this harness, core {other}): {:.1} ms CPU per render (median of {}), {:.2} MiB",
        render.0, render.1, render.2
    );
    daemon.stop();
    harness::pin_self("0-1023");
}

/// CPU time of `bakewatch::metrics::Metrics::render` for `n` http checks that have each
/// recorded a passing outcome with three observations: (median ms, renders, MiB).
fn render_in_process(n: usize) -> (f64, usize, f64) {
    use bakewatch::checks::{Observation, Outcome};
    let m = bakewatch::metrics::Metrics::new();
    let handles: Vec<_> = (0..n)
        .map(|i| m.for_check(&format!("scale-{i:05}"), "scale", "http"))
        .collect();
    for h in &handles {
        let mut o = Outcome::pass("HTTP 200");
        o.duration = Duration::from_micros(900);
        o.observations.set("status", Observation::Number(200.0));
        o.observations.set("body_bytes", Observation::Number(31.0));
        o.observations
            .set("ttfb", Observation::Duration(Duration::from_micros(700)));
        h.record(&o);
    }
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..21 {
        let c0 = harness::thread_cpu_seconds();
        let text = m.render();
        times.push((harness::thread_cpu_seconds() - c0) * 1000.0);
        size = text.len();
    }
    let times = sorted(times);
    (pct(&times, 0.5), times.len(), size as f64 / 1048576.0)
}
