//! `memory`: 1,000 checks (900 `http` against nginx, 100 `tcp`) at a 10 s interval, scraped
//! every 15 s like Prometheus would, with `GET /api/v1/checks` every 4th scrape; the daemon's RSS
//! (VmRSS) sampled every `SOAK_SAMPLE_S` for `SOAK_MINUTES`. Reports the sample at 10 minutes,
//! first / last / max, and the least-squares slope after the first 10 minutes. Each sample is
//! printed as it is taken (the run is long: start it with nohup) and, with `SOAK_CSV`, also
//! appended to that file.
//!
//! Settings (env): MEM_CHECKS (1000), MEM_TCP (100 of them), SOAK_MINUTES (60),
//! SOAK_SAMPLE_S (30), MEM_SCRAPE_S (15), MEM_API_EVERY (4), MEM_EXTRA (TOML appended to the daemon file, e.g.
//! `[history]` settings), plus whatever the daemon should see (e.g. MALLOC_ARENA_MAX,
//! TOKIO_WORKER_THREADS: the environment is passed through).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::harness::{self, CpuMeter, Daemon, DaemonSpec, Nginx, env_or, http_client, slope};

pub async fn run() {
    let n: usize = env_or("MEM_CHECKS", 1000);
    let tcp: usize = env_or("MEM_TCP", 100);
    let minutes: f64 = env_or("SOAK_MINUTES", 60.0);
    let sample_every = Duration::from_secs(env_or("SOAK_SAMPLE_S", 30));
    let scrape_every = Duration::from_secs(env_or("MEM_SCRAPE_S", 15));
    let csv = std::env::var("SOAK_CSV").ok();
    // GET /api/v1/checks every this many scrapes (0: never).
    let api_every: u64 = env_or("MEM_API_EVERY", 4);

    let nginx = Nginx::start(None);
    let tables = (0..n).map(|i| {
        if i < n - tcp.min(n) {
            format!(
                "[[check]]\nname = \"mem-{i:04}\"\nservice = \"svc-{}\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"10s\"\ntimeout = \"5s\"\nexpect = [ {{ status = 200 }}, {{ jsonpath = \"$.status\", eq = \"ok\" }} ]\n\n",
                i % 10,
                nginx.url("/health")
            )
        } else {
            format!(
                "[[check]]\nname = \"mem-{i:04}\"\nservice = \"svc-{}\"\ntype = \"tcp\"\naddress = \"127.0.0.1:{}\"\ninterval = \"10s\"\ntimeout = \"5s\"\n\n",
                i % 10,
                nginx.port
            )
        }
    });
    let files = harness::check_files("mem", tables);
    let extra = std::env::var("MEM_EXTRA").unwrap_or_default();
    let daemon = Daemon::start(DaemonSpec {
        extra: &extra,
        files,
        cpu: None,
        env: vec![],
        nice: None,
    });
    let pid = daemon.pid();
    println!(
        "memory: {n} checks ({} http, {} tcp) every 10 s, scraped every {} s; daemon pid {pid}; {minutes} min, a sample every {} s; bin {}",
        n - tcp.min(n),
        tcp.min(n),
        scrape_every.as_secs(),
        sample_every.as_secs(),
        harness::bin()
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    println!(
        "| t min | VmRSS MiB | RssAnon MiB | RssFile MiB | VmHWM MiB | threads | daemon CPU % | load |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    // Load: scrapes and API reads, in the background of this process.
    let client = http_client();
    let load = {
        let (client, metrics, checks) = (
            client.clone(),
            daemon.url("/metrics"),
            daemon.url("/api/v1/checks"),
        );
        tokio::spawn(async move {
            let mut k = 0u64;
            loop {
                tokio::time::sleep(scrape_every).await;
                if let Ok(r) = client.get(&metrics).send().await {
                    let _ = r.bytes().await;
                }
                k += 1;
                if api_every > 0
                    && k.is_multiple_of(api_every)
                    && let Ok(r) = client.get(&checks).send().await
                {
                    let _ = r.bytes().await;
                }
            }
        })
    };

    let t0 = Instant::now();
    let end = Duration::from_secs_f64(minutes * 60.0);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut cpu = CpuMeter::start(pid);
    let mut next = Duration::ZERO;
    loop {
        let mins = t0.elapsed().as_secs_f64() / 60.0;
        let kib = |f| harness::status_kib(pid, f) as f64 / 1024.0;
        let rss = kib("VmRSS");
        samples.push((mins, rss));
        let row = format!(
            "| {mins:.1} | {rss:.1} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {} |",
            kib("RssAnon"),
            kib("RssFile"),
            kib("VmHWM"),
            harness::threads(pid),
            cpu.percent(),
            harness::loadavg()
        );
        println!("{row}");
        if let Some(path) = &csv
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(f, "{mins:.2},{rss:.2}");
        }
        cpu = CpuMeter::start(pid);
        next += sample_every;
        if next > end {
            break;
        }
        tokio::time::sleep(next.saturating_sub(t0.elapsed())).await;
    }
    load.abort();

    let at = |m: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.0 - m).abs().partial_cmp(&(b.0 - m).abs()).unwrap())
            .copied()
            .unwrap()
    };
    let max = samples.iter().map(|s| s.1).fold(f64::MIN, f64::max);
    let after10: Vec<(f64, f64)> = samples.iter().copied().filter(|s| s.0 >= 10.0).collect();
    let s10 = at(10.0);
    println!();
    println!(
        "| checks | RSS at {:.1} min | first | last | max | slope after 10 min | slope over all |",
        s10.0
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {max:.1} MiB | {:+.3} MiB/h | {:+.3} MiB/h |",
        s10.1,
        samples[0].1,
        samples.last().unwrap().1,
        slope(&after10) * 60.0,
        slope(&samples) * 60.0
    );
    let summary = harness::get_blocking(daemon.port, "/api/v1/checks")
        .map(|(_, b)| b.matches("\"status\":\"pass\"").count())
        .unwrap_or(0);
    println!("checks passing at the end: {summary} of {n}");
    daemon.stop();
}
