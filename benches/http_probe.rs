//! CPU time per `http` check run against a local nginx, fresh connection each time, through
//! the daemon's full path: timeout task, request, body read, assertions, redaction, history
//! and metrics. Run: `cargo bench --bench http_probe` (needs nginx; Debian `nginx-light`).
//!
//! Environment: `PROBES` (default 20000), `WORKERS` (tokio worker threads, default 2).
//! Concurrency 1 and 8 are both measured, then the floors in the same runtime (reqwest alone,
//! a raw tokio socket), then [`compare`]: the daemon vs blackbox_exporter vs wrk at one rate
//! (`RATE`, default 500 probes/s, over `WINDOW` seconds, default 30; needs
//! `prometheus-blackbox-exporter` and `wrk`). `-- inproc` or `-- compare` runs one part.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bakewatch::metrics::Metrics;
use bakewatch::runtime::Runtime;
use common::{cpu_seconds, free_port};

fn main() {
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("http_probe: skipped outside `cargo bench`");
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let probes: usize = std::env::var("PROBES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let nginx = common::Nginx::start(None);
    let (port, nginx_pid) = (nginx.port, nginx.pid().to_string());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bakewatch.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        r#"
[[check]]
name = "bench"
service = "bench"
type = "http"
url = "http://127.0.0.1:{port}/health"
timeout = "5s"
expect = [
  {{ status = 200 }},
  {{ header = "content-type", contains = "json" }},
  {{ jsonpath = "$.status", eq = "ok" }},
  {{ jsonpath = "$.items", filter = "count", ge = 1 }},
  {{ duration = "total", lt = "1s", severity = "warn" }},
]
"#
    )
    .unwrap();
    drop(f);
    let config = bakewatch::config::load(&path).expect("bench config loads");
    let rt = Arc::new(Runtime::new(config, Arc::new(Metrics::new())));

    // The daemon's runtime: one worker per core (2 here). WORKERS overrides, for comparison.
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
        "http_probe: {probes} probes per run, {workers} runtime workers, nginx on 127.0.0.1:{port}, fresh connection each"
    );
    println!(
        "{:>11}  {:>12}  {:>14}  {:>16}  {:>12}",
        "concurrency", "wall s", "probes/s", "CPU µs/probe", "nginx µs/req"
    );
    let part = |name: &str| {
        let args: Vec<String> = std::env::args().collect();
        !args.iter().any(|a| a == "inproc" || a == "compare") || args.iter().any(|a| a == name)
    };
    if part("inproc") {
        inproc(&tokio, &rt, probes, port, &nginx_pid);
    }
    if part("compare") {
        compare(port, &nginx_pid);
    }
}

/// Part one: `Runtime::run_check` in this process, then the floors.
fn inproc(
    tokio: &tokio::runtime::Runtime,
    rt: &Arc<Runtime>,
    probes: usize,
    port: u16,
    nginx_pid: &str,
) {
    for concurrency in [1usize, 8] {
        // Warm up: first-time allocations, lazy statics, page faults.
        tokio.block_on(common::run_check_loop(rt.clone(), 0, 500, concurrency));
        let me = std::process::id().to_string();
        let (cpu0, ng0) = (cpu_seconds(&me), cpu_seconds(nginx_pid));
        let t0 = Instant::now();
        tokio.block_on(common::run_check_loop(rt.clone(), 0, probes, concurrency));
        let wall = t0.elapsed().as_secs_f64();
        let (cpu1, ng1) = (cpu_seconds(&me), cpu_seconds(nginx_pid));
        println!(
            "{:>11}  {:>12.2}  {:>14.0}  {:>16.1}  {:>12.1}",
            concurrency,
            wall,
            probes as f64 / wall,
            (cpu1 - cpu0) / probes as f64 * 1e6,
            (ng1 - ng0) / probes as f64 * 1e6
        );
    }

    // The floors, at concurrency 1 in the same runtime: the HTTP client alone (configured as
    // an http check's: no proxy, no idle pool), and a raw socket (connect, write the request,
    // read to EOF) — what any tokio program pays for the connection itself.
    let url = format!("http://127.0.0.1:{port}/health");
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let floor =
        |name: &str, f: &dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
            tokio.block_on(async {
                for _ in 0..500 {
                    f().await;
                }
            });
            let me = std::process::id().to_string();
            let (cpu0, ng0) = (cpu_seconds(&me), cpu_seconds(nginx_pid));
            let t0 = Instant::now();
            tokio.block_on(async {
                for _ in 0..probes {
                    f().await;
                }
            });
            let wall = t0.elapsed().as_secs_f64();
            let (cpu1, ng1) = (cpu_seconds(&me), cpu_seconds(nginx_pid));
            println!(
                "{:>11}  {:>12.2}  {:>14.0}  {:>16.1}  {:>12.1}",
                name,
                wall,
                probes as f64 / wall,
                (cpu1 - cpu0) / probes as f64 * 1e6,
                (ng1 - ng0) / probes as f64 * 1e6
            );
        };
    floor("reqwest", &|| {
        let (client, url) = (client.clone(), url.clone());
        Box::pin(async move {
            let body = client
                .get(&url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(body.starts_with(b"{"));
        })
    });
    floor("raw socket", &|| {
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::with_capacity(512);
            s.read_to_end(&mut buf).await.unwrap();
            assert!(buf.starts_with(b"HTTP/1.1 200"));
        })
    });
}

/// Part two: the whole daemon against the alternatives, at one probe rate.
///
/// - bakewatch: `bakewatch run` (`$BAKEWATCH_BIN`, else the release binary cargo built for
///   this bench) with `RATE` http checks at a 1 s interval, the same five assertions each;
///   its CPU over `WINDOW` seconds divided by the runs it counted
///   (`bakewatch_check_runs_total`).
/// - blackbox_exporter: `prometheus-blackbox-exporter` with an http module checking the status
///   and the body, driven at the same rate through `/probe` over keep-alive connections; its
///   CPU divided by the probes it answered.
/// - wrk with `Connection: close`: the bare client, as fast as it goes; its CPU per request.
fn compare(nginx_port: u16, nginx_pid: &str) {
    let rate: usize = env_or("RATE", 500);
    let window = Duration::from_secs(env_or("WINDOW", 30));
    let url = format!("http://127.0.0.1:{nginx_port}/health");
    println!();
    println!(
        "compare: {rate} probes/s for {}s each, fresh connection per probe",
        window.as_secs()
    );
    println!(
        "{:<22}  {:>10}  {:>14}  {:>12}",
        "prober", "probes/s", "CPU µs/probe", "nginx µs/req"
    );
    let row = |name: &str, probes: f64, secs: f64, cpu: f64, nginx: f64| {
        println!(
            "{:<22}  {:>10.0}  {:>14.1}  {:>12.1}",
            name,
            probes / secs,
            cpu / probes * 1e6,
            nginx / probes * 1e6
        );
    };

    // bakewatch, the daemon.
    {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut checks = String::new();
        for i in 0..rate {
            checks.push_str(&format!(
                r#"
[[check]]
name = "probe-{i}"
service = "bench"
type = "http"
url = "{url}"
interval = "1s"
timeout = "5s"
expect = [
  {{ status = 200 }},
  {{ header = "content-type", contains = "json" }},
  {{ jsonpath = "$.status", eq = "ok" }},
  {{ jsonpath = "$.items", filter = "count", ge = 1 }},
  {{ duration = "total", lt = "1s", severity = "warn" }},
]
"#
            ));
        }
        std::fs::write(dir.path().join("checks.toml"), checks).unwrap();
        std::fs::write(
            dir.path().join("bakewatch.toml"),
            format!(
                "checks = [\"checks.toml\"]\n[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"state.db\"\n[scheduler]\njitter = \"1s\"\nconcurrency = 256\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(common::bin())
            .args(["run", "-c"])
            .arg(dir.path().join("bakewatch.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bakewatch");
        let pid = child.id().to_string();
        let metrics = format!("http://127.0.0.1:{port}/metrics");
        wait_http(&format!("http://127.0.0.1:{port}/-/ready"));
        std::thread::sleep(Duration::from_secs(5)); // every check has run; steady state
        let (r0, c0, n0) = (runs(&metrics), cpu_seconds(&pid), cpu_seconds(nginx_pid));
        let t0 = Instant::now();
        std::thread::sleep(window);
        let (r1, c1, n1) = (runs(&metrics), cpu_seconds(&pid), cpu_seconds(nginx_pid));
        let secs = t0.elapsed().as_secs_f64();
        let _ = child.kill();
        let _ = child.wait();
        row("bakewatch run", r1 - r0, secs, c1 - c0, n1 - n0);
    }

    // blackbox_exporter, driven through /probe at the same rate.
    {
        let exe = which("prometheus-blackbox-exporter").expect(
            "prometheus-blackbox-exporter not found: install the Debian package prometheus-blackbox-exporter",
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("blackbox.yml"),
            "modules:\n  bench:\n    prober: http\n    timeout: 5s\n    http:\n      valid_status_codes: [200]\n      fail_if_body_not_matches_regexp: ['\"status\":\"ok\"']\n      fail_if_header_not_matches:\n        - header: content-type\n          regexp: json\n",
        )
        .unwrap();
        let mut child = Command::new(exe)
            .arg(format!(
                "--config.file={}",
                dir.path().join("blackbox.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start blackbox_exporter");
        let pid = child.id().to_string();
        let probe = format!("http://127.0.0.1:{port}/probe?module=bench&target={url}");
        wait_http(&format!("http://127.0.0.1:{port}/-/healthy"));
        let driver = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let drive = |secs: Duration| {
            let (client, probe, ok) = (client.clone(), probe.clone(), ok.clone());
            driver.block_on(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
                let end = Instant::now() + secs;
                let mut tasks = tokio::task::JoinSet::new();
                while Instant::now() < end {
                    tick.tick().await;
                    let (client, probe, ok) = (client.clone(), probe.clone(), ok.clone());
                    tasks.spawn(async move {
                        let body = client
                            .get(&probe)
                            .send()
                            .await
                            .unwrap()
                            .text()
                            .await
                            .unwrap();
                        if body.lines().any(|l| l == "probe_success 1") {
                            ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            })
        };
        drive(Duration::from_secs(5)); // warm-up
        let before = ok.load(std::sync::atomic::Ordering::Relaxed);
        let (c0, n0) = (cpu_seconds(&pid), cpu_seconds(nginx_pid));
        let t0 = Instant::now();
        drive(window);
        let secs = t0.elapsed().as_secs_f64();
        let (c1, n1) = (cpu_seconds(&pid), cpu_seconds(nginx_pid));
        let probes = (ok.load(std::sync::atomic::Ordering::Relaxed) - before) as f64;
        let _ = child.kill();
        let _ = child.wait();
        row("blackbox_exporter", probes, secs, c1 - c0, n1 - n0);
    }

    // The floor of a prober paced at this rate: a raw socket request (connect, write, read to
    // EOF) started every 1/RATE s by a timer in a 2-worker tokio runtime, in this process. What
    // a paced prober pays over a back-to-back loop (the runtime parks and wakes for each probe)
    // shows here, with no HTTP client, assertions, history or metrics at all.
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pace = |secs: Duration| {
            let done = done.clone();
            runtime.block_on(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
                let end = Instant::now() + secs;
                let mut tasks = tokio::task::JoinSet::new();
                while Instant::now() < end {
                    tick.tick().await;
                    let done = done.clone();
                    tasks.spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", nginx_port))
                            .await
                            .unwrap();
                        s.write_all(
                            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                        )
                        .await
                        .unwrap();
                        let mut buf = Vec::with_capacity(512);
                        s.read_to_end(&mut buf).await.unwrap();
                        if buf.starts_with(b"HTTP/1.1 200") {
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                    while tasks.try_join_next().is_some() {}
                }
                while tasks.join_next().await.is_some() {}
            })
        };
        pace(Duration::from_secs(3)); // warm-up
        let me = std::process::id().to_string();
        let before = done.load(std::sync::atomic::Ordering::Relaxed);
        let (c0, n0) = (cpu_seconds(&me), cpu_seconds(nginx_pid));
        let t0 = Instant::now();
        pace(window);
        let secs = t0.elapsed().as_secs_f64();
        let (c1, n1) = (cpu_seconds(&me), cpu_seconds(nginx_pid));
        let probes = (done.load(std::sync::atomic::Ordering::Relaxed) - before) as f64;
        row("raw socket, paced", probes, secs, c1 - c0, n1 - n0);
    }

    // wrk, Connection: close: the bare client cost. The shell reports its waited-for
    // children's CPU (cutime + cstime of /proc/$$/stat) after wrk exits.
    {
        let wrk = which("wrk").expect("wrk not found: install the Debian package wrk");
        let secs = window.as_secs().min(10);
        let n0 = cpu_seconds(nginx_pid);
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} -t1 -c1 -d{secs}s -H 'Connection: close' {url}; cat /proc/$$/stat",
                wrk.display()
            ))
            .output()
            .expect("run wrk");
        let n1 = cpu_seconds(nginx_pid);
        let text = String::from_utf8_lossy(&out.stdout);
        let requests: f64 = text
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .and_then(|(n, _)| n.trim().parse().ok())
            .expect("wrk printed its request count");
        let stat = text.lines().last().unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // cutime and cstime: fields 16 and 17 of stat, 13 and 14 after the command name.
        let cpu = (f[13].parse::<f64>().unwrap() + f[14].parse::<f64>().unwrap()) / 100.0;
        row(
            "wrk (Connection: close)",
            requests,
            secs as f64,
            cpu,
            n1 - n0,
        );
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Waits (up to 10 s) until `url` answers 200.
fn wait_http(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if http_get(url).is_some_and(|(status, _)| status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not answer 200");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking HTTP/1.0 GET over loopback: (status, body).
fn http_get(url: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_at(rest.find('/')?);
    let mut s = std::net::TcpStream::connect(host).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// The sum of `bakewatch_check_runs_total` over every check.
fn runs(metrics_url: &str) -> f64 {
    let (_, body) = http_get(metrics_url).expect("GET /metrics");
    body.lines()
        .filter(|l| l.starts_with("bakewatch_check_runs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
