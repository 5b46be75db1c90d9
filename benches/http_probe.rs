//! CPU time per `http` check run against a local nginx, fresh connection each time, through
//! the daemon's full path: timeout task, request, body read, assertions, redaction, history
//! and metrics. Run: `cargo bench --bench http_probe` (needs nginx; Debian `nginx-light`).
//!
//! Environment: `PROBES` (default 20000), `WORKERS` (tokio worker threads, default 2).
//! Concurrency 1 and 8 are both measured.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bakewatch::metrics::Metrics;
use bakewatch::runtime::Runtime;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(port: u16) -> Nginx {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx not found: install the Debian package nginx-light");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    let d = dir.path().display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{port}; keepalive_timeout 0;
    location / {{ default_type application/json; return 200 '{{\"status\":\"ok\",\"items\":[1,2,3]}}'; }} }} }}
"
        ),
    )
    .unwrap();
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx { child, _dir: dir }
}

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
    let port = free_port();
    let nginx = start_nginx(port);
    let nginx_pid = nginx.child.id().to_string();

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
    for concurrency in [1usize, 8] {
        // Warm up: first-time allocations, lazy statics, page faults.
        tokio.block_on(common::run_check_loop(rt.clone(), 0, 500, concurrency));
        let me = std::process::id().to_string();
        let (cpu0, ng0) = (common::cpu_seconds(&me), common::cpu_seconds(&nginx_pid));
        let t0 = Instant::now();
        tokio.block_on(common::run_check_loop(rt.clone(), 0, probes, concurrency));
        let wall = t0.elapsed().as_secs_f64();
        let (cpu1, ng1) = (common::cpu_seconds(&me), common::cpu_seconds(&nginx_pid));
        println!(
            "{:>11}  {:>12.2}  {:>14.0}  {:>16.1}  {:>12.1}",
            concurrency,
            wall,
            probes as f64 / wall,
            (cpu1 - cpu0) / probes as f64 * 1e6,
            (ng1 - ng0) / probes as f64 * 1e6
        );
    }
}
