//! What the daemon scenarios share: the release binary, a daemon in a temp dir (optionally
//! pinned to a core with `taskset`), a loopback nginx, a switchable in-process HTTP target,
//! `/proc` readings (CPU, RSS, threads, fds), and reading a histogram out of `/metrics`.
//!
//! Everything listens on and talks to 127.0.0.1 only; every wait is bounded.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// An environment variable parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

pub use crate::common::{Nginx, bin, free_port};

/// Pins every thread of this process to the cores in `cpus` (a taskset list: "1", "0,1").
pub fn pin_self(cpus: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset failed (util-linux)");
}

/// Raises this process's open-file limit to the hard limit (children inherit it): 1,000
/// long-poll connections need more than the common soft limit of 1,024.
pub fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.maximum.is_some() || l.current.is_some() {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// user + system CPU seconds of a process.
pub fn cpu_seconds(pid: u32) -> f64 {
    crate::common::cpu_seconds(&pid.to_string())
}

/// CPU seconds of the calling thread.
pub fn thread_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, RssFile), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS") as f64 / 1024.0
}

pub fn threads(pid: u32) -> u64 {
    status_kib(pid, "Threads")
}

/// (on-CPU, waiting-on-a-runqueue) seconds summed over every thread of `pid`, from
/// /proc/<pid>/task/*/schedstat: how long the process ran, and how long it was runnable but
/// another process had its core.
pub fn sched_seconds(pid: u32) -> (f64, f64) {
    let mut run_wait = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return run_wait;
    };
    for t in tasks.flatten() {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let mut f = s
            .split_whitespace()
            .map(|x| x.parse::<f64>().unwrap_or(0.0));
        run_wait.0 += f.next().unwrap_or(0.0) / 1e9;
        run_wait.1 += f.next().unwrap_or(0.0) / 1e9;
    }
    run_wait
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The CPU share of `pid` (1.0 = one core) between two readings.
pub struct CpuMeter {
    pid: u32,
    cpu: f64,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            cpu: cpu_seconds(pid),
            at: Instant::now(),
        }
    }

    /// (CPU seconds, wall seconds) since start.
    pub fn read(&self) -> (f64, f64) {
        (
            cpu_seconds(self.pid) - self.cpu,
            self.at.elapsed().as_secs_f64(),
        )
    }

    pub fn percent(&self) -> f64 {
        let (cpu, wall) = self.read();
        100.0 * cpu / wall
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// The bearer token of the generated configs.
pub const TOKEN: &str = "bench-token-5d1e9a";

pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// How to start a daemon.
pub struct DaemonSpec<'a> {
    /// Text appended to the daemon file after `[storage]` (tables such as `[deploy]`).
    pub extra: &'a str,
    /// Check files: (file name, text).
    pub files: Vec<(String, String)>,
    /// Pin the daemon to this core.
    pub cpu: Option<usize>,
    /// Extra environment (e.g. `TOKIO_WORKER_THREADS`, `MALLOC_ARENA_MAX`).
    pub env: Vec<(String, String)>,
    /// Run the daemon at this nice level (negative: ahead of the machine's other work).
    pub nice: Option<i32>,
}

impl Daemon {
    pub fn start(spec: DaemonSpec<'_>) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let checks = dir.path().join("checks");
        std::fs::create_dir(&checks).unwrap();
        for (name, text) in &spec.files {
            std::fs::write(checks.join(name), text).unwrap();
        }
        let config = dir.path().join("bakewatch.toml");
        std::fs::write(
            &config,
            format!(
                "checks = [\"checks/*.toml\"]\n\n[server]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n\n[storage]\npath = \"state.db\"\n\n{}\n",
                spec.extra
            ),
        )
        .unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let bin = bin();
        // nice -n N taskset -c C bakewatch …: each wrapper execs the next, same pid.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(n) = spec.nice {
            argv.extend(["nice".into(), "-n".into(), n.to_string().into()]);
        }
        if let Some(c) = spec.cpu {
            argv.extend(["taskset".into(), "-c".into(), c.to_string().into()]);
        }
        argv.push(bin.into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd.arg("run")
            .arg("-c")
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .env_remove("BAKEWATCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start bakewatch");
        let mut d = Daemon { child, dir, port };
        d.wait_ready(Duration::from_secs(180));
        d
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "bakewatch exited before it was ready ({status}):\n{}",
                    self.stderr()
                );
            }
            if let Ok((200, _)) = get_blocking(self.port, "/-/ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bakewatch not ready within {within:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// SIGTERM, then wait (bounded), then SIGKILL.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A plain blocking GET over a fresh connection (`Connection: close`): (status, body).
pub fn get_blocking(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(130)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// An HTTP client for the bench's own requests (no proxy, generous pool).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(2048)
        .timeout(Duration::from_secs(150))
        .build()
        .unwrap()
}

/// Writes `checks` `[[check]]` tables into files of at most 1,000 checks each.
pub fn check_files(prefix: &str, tables: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut text = String::new();
    let mut n = 0;
    for t in tables {
        text.push_str(&t);
        n += 1;
        if n % 1000 == 0 {
            files.push((
                format!("{prefix}-{:03}.toml", files.len()),
                std::mem::take(&mut text),
            ));
        }
    }
    if !text.is_empty() {
        files.push((format!("{prefix}-{:03}.toml", files.len()), text));
    }
    files
}

// ---------------------------------------------------------------------------------------------
// Prometheus text

/// One histogram (no labels) read out of an exposition: cumulative buckets, sum, count.
#[derive(Debug, Clone, Default)]
pub struct Hist {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Hist {
    pub fn parse(text: &str, name: &str) -> Hist {
        let mut h = Hist::default();
        let bucket = format!("{name}_bucket{{le=\"");
        let sum = format!("{name}_sum ");
        let count = format!("{name}_count ");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket) {
                let (le, v) = rest.split_once("\"} ").expect("bucket line");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                h.buckets.push((le, v.trim().parse().unwrap()));
            } else if let Some(v) = line.strip_prefix(&sum) {
                h.sum = v.trim().parse().unwrap();
            } else if let Some(v) = line.strip_prefix(&count) {
                h.count = v.trim().parse().unwrap();
            }
        }
        h
    }

    /// `self - earlier`: the observations between two scrapes.
    pub fn minus(&self, earlier: &Hist) -> Hist {
        Hist {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|((le, a), (_, b))| (*le, a - b))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The `q` quantile, interpolated linearly inside its bucket like PromQL's
    /// `histogram_quantile`; with the bucket's bounds.
    pub fn quantile(&self, q: f64) -> (f64, f64, f64) {
        let rank = q * self.count;
        let mut lower = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if c >= rank {
                if le.is_infinite() {
                    return (lower.0, lower.0, le);
                }
                let within = if c > lower.1 {
                    (rank - lower.1) / (c - lower.1)
                } else {
                    0.0
                };
                return (lower.0 + (le - lower.0) * within, lower.0, le);
            }
            lower = (le, c);
        }
        (f64::NAN, f64::NAN, f64::NAN)
    }

    /// The share of observations at or below `le` (an exact bucket bound).
    pub fn share_at_most(&self, le: f64) -> f64 {
        let c = self
            .buckets
            .iter()
            .find(|(b, _)| (*b - le).abs() < 1e-12)
            .map(|(_, c)| *c)
            .expect("a bucket at that bound");
        c / self.count
    }
}

/// Sum of all samples of a family whose line starts with `prefix` (e.g. a metric name and
/// an opening brace) and that contain `contains`.
pub fn sum_samples(text: &str, prefix: &str, contains: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(contains))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

/// Least-squares slope of y over x.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    sxy / sxx
}

// ---------------------------------------------------------------------------------------------
// A switchable target

/// A loopback HTTP server (axum, in this process) answering every request with the status
/// it is set to, and logging when each request arrived and what it got.
pub struct Target {
    pub port: u16,
    status: Arc<AtomicU16>,
    log: Arc<Mutex<Vec<(Instant, u16)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Target {
    pub async fn start() -> Target {
        use axum::extract::State;
        use axum::response::IntoResponse;
        type St = (Arc<AtomicU16>, Arc<Mutex<Vec<(Instant, u16)>>>);
        async fn handler(State((status, log)): State<St>) -> axum::response::Response {
            let code = status.load(Ordering::SeqCst);
            log.lock().unwrap().push((Instant::now(), code));
            (
                axum::http::StatusCode::from_u16(code).unwrap(),
                [("content-type", "application/json")],
                r#"{"status":"ok"}"#,
            )
                .into_response()
        }
        let status = Arc::new(AtomicU16::new(200));
        let log = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(handler)
            .with_state((status.clone(), log.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Target {
            port,
            status,
            log,
            task,
        }
    }

    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// Arrival times of the requests answered with `code` at or after `since`.
    pub fn served(&self, code: u16, since: Instant) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, c)| *c == code && *t >= since)
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Unix seconds of an RFC 3339 time.
pub fn rfc3339_unix(s: &str) -> f64 {
    let t = chrono::DateTime::parse_from_rfc3339(s).expect("RFC 3339 time");
    t.timestamp_micros() as f64 / 1e6
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
