//! Shared harness for the integration tests that start the real `bakewatch` binary:
//!
//! - [`Target`]: a loopback HTTP server (axum) whose behaviour can be switched at runtime
//!   (healthy JSON, a given status, or hang without ever answering); it counts requests;
//! - [`Daemon`]: writes a config into a temp dir, runs `bakewatch run -c …`, waits for
//!   `/-/ready`, reads the API and `/metrics`, sends SIGTERM, and kills the process on drop;
//! - [`run_cli`]: runs a one-shot command (`validate`, `once`, …) with a deadline;
//! - [`wait_until`]: polls a condition every 50 ms until a deadline;
//! - [`metric_value`] / [`samples`]: read samples from the Prometheus text exposition.
//!
//! Everything listens on and talks to 127.0.0.1 only; every wait is bounded.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod pki;

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bakewatch");

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(50);

/// How long a daemon may take to become ready (a debug binary on a busy machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Placeholder for the daemon's own port in check files given to [`Daemon::start`].
pub const PORT: &str = "@PORT@";

/// The repository root (where `config/` and `checks/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `probe` every [`POLL`] until it returns `Ok`, or panics after `timeout`. The `Err`
/// of the last probe describes the state that was seen, for the panic message.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    match try_wait_until(timeout, &mut probe).await {
        Ok(v) => v,
        Err(last) => panic!("timed out after {timeout:?} waiting until {what}; last seen: {last}"),
    }
}

/// Like [`wait_until`], returning the last state seen instead of panicking.
pub async fn try_wait_until<T>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The target server

/// What the [`Target`] does with a request (except under `/status/<code>`, which always
/// answers `<code>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 with [`HEALTHY_BODY`].
    Healthy,
    /// This status, with a small JSON body.
    Status(u16),
    /// Accept the connection and the request, never answer.
    Hang,
    /// 200 with [`HEALTHY_BODY`] after this many milliseconds.
    Slow(u64),
    /// Every n-th request (counting all requests) answers 500, the others 200: a service
    /// failing exactly 1/n of the time.
    FailEvery(u64),
}

/// The JSON body of a healthy answer.
pub const HEALTHY_BODY: &str = r#"{"status":"ok","version":"1.2.3","items":[1,2,3]}"#;

struct TargetState {
    mode: Mutex<Mode>,
    requests: AtomicU64,
    by_path: Mutex<HashMap<String, u64>>,
}

/// A loopback HTTP server for checks to probe. Stops when dropped.
pub struct Target {
    addr: SocketAddr,
    state: Arc<TargetState>,
    task: tokio::task::JoinHandle<()>,
}

impl Target {
    /// Starts a healthy target on 127.0.0.1 and a free port, on the current tokio runtime.
    pub async fn start() -> Target {
        Target::start_in(Mode::Healthy).await
    }

    pub async fn start_in(mode: Mode) -> Target {
        let state = Arc::new(TargetState {
            mode: Mutex::new(mode),
            requests: AtomicU64::new(0),
            by_path: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .fallback(target_handler)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the target server on 127.0.0.1");
        let addr = listener.local_addr().expect("target address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("target server");
        });
        Target { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Requests received so far (counted when the request arrives, also when hanging).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests received so far for one path.
    pub fn hits(&self, path: &str) -> u64 {
        self.state
            .by_path
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn target_handler(State(state): State<Arc<TargetState>>, uri: Uri) -> Response {
    let nth = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    *state
        .by_path
        .lock()
        .unwrap()
        .entry(uri.path().to_string())
        .or_default() += 1;
    let json = |status: StatusCode, body: String| {
        (status, [("content-type", "application/json")], body).into_response()
    };
    if let Some(code) = uri.path().strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return json(
            status,
            format!(r#"{{"status":"fixed","code":{}}}"#, status.as_u16()),
        );
    }
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Healthy => json(StatusCode::OK, HEALTHY_BODY.to_string()),
        Mode::Status(code) => json(
            StatusCode::from_u16(code).expect("a valid status code"),
            r#"{"status":"down"}"#.to_string(),
        ),
        Mode::Hang => std::future::pending().await,
        Mode::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(StatusCode::OK, HEALTHY_BODY.to_string())
        }
        Mode::FailEvery(n) if nth % n.max(1) == 0 => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"status":"down"}"#.to_string(),
        ),
        Mode::FailEvery(_) => json(StatusCode::OK, HEALTHY_BODY.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// A webhook receiver

/// A loopback HTTP endpoint that records every JSON body POSTed to it (a webhook receiver).
/// It can be started late on a port chosen in advance, to play a receiver that was down.
pub struct Inbox {
    pub port: u16,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Inbox {
    /// An inbox on a port nobody listens on yet (see [`Inbox::open`]).
    pub fn closed() -> Inbox {
        Inbox {
            port: free_port(),
            received: Arc::default(),
            task: None,
        }
    }

    /// Starts listening (again) on its port.
    pub async fn open(&mut self) {
        let received = self.received.clone();
        let app = Router::new().fallback(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let v: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                received.lock().unwrap().push(v);
                StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the inbox port");
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.expect("inbox server");
        }));
    }

    /// Stops listening (the port refuses connections).
    pub fn close(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for what was received; panics with it after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; received: {got:#?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.close();
    }
}

// ---------------------------------------------------------------------------------------------
// Ports

/// A port on 127.0.0.1 that was free a moment ago (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// A running `bakewatch run` with its config in a temp dir. Killed when dropped.
pub struct Daemon {
    /// Holds `bakewatch.toml`, `checks/`, the state file and the captured stderr.
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The daemon config file.
    pub config: PathBuf,
    child: Child,
    stderr_path: PathBuf,
    http: reqwest::Client,
}

/// An HTTP answer from the daemon.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A temp dir with the daemon file (listen on a free port, state file inside, `extra`
/// appended) and the check files ([`PORT`] replaced); returns it, the port and the config path.
fn write_daemon_dir(
    server_extra: &str,
    extra: &str,
    check_files: &[(&str, &str)],
) -> (tempfile::TempDir, u16, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let checks_dir = dir.path().join("checks");
    std::fs::create_dir(&checks_dir).expect("create checks/");
    for (name, text) in check_files {
        std::fs::write(checks_dir.join(name), text.replace(PORT, &port.to_string()))
            .expect("write check file");
    }
    let state = dir.path().join("state.db");
    let config = dir.path().join("bakewatch.toml");
    let daemon_file = format!(
        "checks = [\"checks/*.toml\"]\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n{server_extra}\n\n[storage]\npath = '{}'\n\n{extra}",
        state.display()
    );
    std::fs::write(&config, daemon_file).expect("write daemon config");
    (dir, port, config)
}

/// Starts `bakewatch run -c <config>`, appending its stderr to `stderr_path`.
fn spawn_daemon(config: &Path, dir: &Path, stderr_path: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_path)
        .expect("open stderr.log");
    Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(config)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env_remove("BAKEWATCH_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn bakewatch run")
}

/// A reqwest client that never goes through an environment proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

impl Daemon {
    /// Starts a daemon whose config has `[server] listen` on a free port, `[storage] path` in
    /// the temp dir, `checks = ["checks/*.toml"]`, `[scheduler] jitter = "0s"` (so first runs
    /// come at once), and the given check files (`(file name, contents)`; [`PORT`] in them is
    /// replaced with the daemon's port). Returns once `/-/ready` answers 200.
    pub async fn start(check_files: &[(&str, &str)]) -> Daemon {
        Daemon::start_with("[scheduler]\njitter = \"0s\"\n", check_files).await
    }

    /// Like [`Daemon::start`], with `extra` appended to the daemon file instead of the
    /// `[scheduler]` table.
    pub async fn start_with(extra: &str, check_files: &[(&str, &str)]) -> Daemon {
        Daemon::start_full("", extra, check_files).await
    }

    /// Like [`Daemon::start_with`], with `server_extra` added to the `[server]` table (e.g. a
    /// `token`).
    pub async fn start_full(
        server_extra: &str,
        extra: &str,
        check_files: &[(&str, &str)],
    ) -> Daemon {
        // The port is free when chosen but may be taken before the daemon binds it: retry then.
        let mut last_err = String::new();
        for _ in 0..3 {
            match Daemon::try_start(server_extra, extra, check_files).await {
                Ok(d) => return d,
                Err(e) if e.contains("cannot listen") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_err}");
    }

    async fn try_start(
        server_extra: &str,
        extra: &str,
        check_files: &[(&str, &str)],
    ) -> Result<Daemon, String> {
        let (dir, port, config) = write_daemon_dir(server_extra, extra, check_files);
        let stderr_path = dir.path().join("stderr.log");
        let child = spawn_daemon(&config, dir.path(), &stderr_path);
        let mut daemon = Daemon {
            dir,
            port,
            config,
            child,
            stderr_path,
            http: http_client(),
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    /// Waits until `/-/ready` answers 200; an early exit is an error with the stderr.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!(
                    "bakewatch run exited before it was ready ({status}); stderr:\n{}",
                    self.stderr()
                ));
            }
            if let Ok(r) = self.http.get(self.url("/-/ready")).send().await
                && r.status().as_u16() == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                panic!(
                    "bakewatch run was not ready within {READY_TIMEOUT:?} (GET /-/ready); stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `kill -9`s the daemon, then starts it again on the same config, state and port, and
    /// waits until it is ready.
    pub async fn kill9_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL the daemon");
        self.child.wait().expect("reap the daemon");
        self.child = spawn_daemon(&self.config, self.dir.path(), &self.stderr_path);
        if let Err(e) = self.wait_ready().await {
            panic!("{e}");
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the daemon logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A GET; panics (with the daemon's log) when the request itself fails.
    pub async fn request(&self, path: &str) -> Answer {
        let r = match self.http.get(self.url(path)).send().await {
            Ok(r) => r,
            Err(e) => panic!("GET {path} failed: {e}; daemon stderr:\n{}", self.stderr()),
        };
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.text().await.expect("response body");
        Answer {
            status,
            content_type,
            body,
        }
    }

    /// `(status, body)` of a GET.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let a = self.request(path).await;
        (a.status, a.body)
    }

    /// The JSON body of a GET that must answer 200.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let a = self.request(path).await;
        assert_eq!(a.status, 200, "GET {path}: {}", a.body);
        a.json()
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// One sample of `/metrics`, see [`metric_value`].
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Polls `/metrics` until the sample `name{labels}` exists and satisfies `pred`; returns
    /// its value. Panics after `timeout` with the value last seen and the daemon's log.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let probe = async || match self.metric(name, labels).await {
            Some(v) if pred(v) => Ok(v),
            Some(v) => Err(format!("{v}")),
            None => Err("no such sample".to_string()),
        };
        match try_wait_until(timeout, probe).await {
            Ok(v) => v,
            Err(last) => panic!(
                "timed out after {timeout:?} waiting for {name}{labels:?}; last seen: {last}; daemon stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Polls `GET /api/v1/checks/<name>` until `pred` holds on the JSON; returns it.
    pub async fn wait_check(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let path = format!("/api/v1/checks/{name}");
        let probe = async || {
            // A check that does not exist yet (a reload in progress) is waited for too.
            let (status, body) = self.get(&path).await;
            if status == 404 {
                return Err(format!("no check {name} yet"));
            }
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("GET {path}: HTTP {status}, not JSON ({e}): {body}"));
            if pred(&v) {
                Ok(v)
            } else {
                Err(format!(
                    "status={} reason={} message={}",
                    v["status"], v["reason"], v["message"]
                ))
            }
        };
        match try_wait_until(timeout, probe).await {
            Ok(v) => v,
            Err(last) => panic!(
                "timed out after {timeout:?} waiting until check {name} {what}; last seen: {last}; daemon stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Sends SIGTERM (with `kill -TERM`, as an operator or systemd would).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit; panics (with its log) after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "bakewatch did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One-shot commands

/// The result of a finished command.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// How long a one-shot command may run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `bakewatch <args>` in `cwd` with extra environment variables; output goes to temp
/// files (no pipe can fill up), and the process is killed (and the test fails) after
/// [`CLI_TIMEOUT`]. Blocking: from async code use [`run_cli_async`].
pub fn run_cli(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> CliOutput {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("BAKEWATCH_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn bakewatch");
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bakewatch {args:?} did not finish within {CLI_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CliOutput {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).expect("read stdout"),
        stderr: std::fs::read_to_string(&err_path).expect("read stderr"),
    }
}

/// [`run_cli`] on a blocking thread, for async tests (whose runtime serves the targets).
pub async fn run_cli_async(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> CliOutput {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_cli(&args, &cwd, &env)
    })
    .await
    .expect("CLI thread")
}

/// Writes a config into a new temp dir: `bakewatch.toml` (the daemon file) and the given
/// check files under `checks/`.
pub fn write_config(daemon_file: &str, check_files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("bakewatch.toml"), daemon_file).expect("write daemon file");
    if !check_files.is_empty() {
        std::fs::create_dir(dir.path().join("checks")).expect("create checks/");
    }
    for (name, text) in check_files {
        std::fs::write(dir.path().join("checks").join(name), text).expect("write check file");
    }
    dir
}

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition

/// One sample line of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every `(name, value)` of `subset` is among the labels.
    pub fn has_labels(&self, subset: &[(&str, &str)]) -> bool {
        subset.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// Every sample of the exposition (comments and blank lines skipped). Panics on a line that
/// is not a sample: the exposition must be well-formed.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| parse_sample(l).unwrap_or_else(|| panic!("malformed exposition line: {l:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = line[..name_end].to_string();
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            // Label name up to '=' (or the closing brace).
            let mut key = String::new();
            loop {
                let (i, c) = chars.next()?;
                match c {
                    '}' if key.is_empty() => {
                        rest = &body[i + 1..];
                        break;
                    }
                    '=' => break,
                    ',' | ' ' if key.is_empty() => {}
                    c => key.push(c),
                }
            }
            if key.is_empty() {
                break;
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
        }
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The value of the first sample named `name` whose labels include `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|s| s.name == name && s.has_labels(labels))
        .map(|s| s.value)
}

/// The sum over every sample named `name` whose labels include `labels` (0 when none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|s| s.name == name && s.has_labels(labels))
        .map(|s| s.value)
        .sum()
}

/// The `# TYPE` of a metric family, if declared.
pub fn metric_type(text: &str, family: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("# TYPE ")?;
        let (name, kind) = rest.split_once(' ')?;
        (name == family).then(|| kind.trim().to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// Loading one check

/// `s` as a TOML basic string (quoted and escaped).
pub fn q(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_string()).to_string()
}

/// Loads a config whose `checks = ["checks/*.toml"]` names one file holding a single
/// `[[check]]` named "probe" of type `kind`, with `keys` as its other keys. Panics with the
/// diagnostics when it does not load.
pub fn probe_config(kind: &str, keys: &str) -> bakewatch::config::Config {
    let dir = tempfile::TempDir::new().expect("temp dir");
    std::fs::create_dir(dir.path().join("checks")).expect("create checks/");
    std::fs::write(
        dir.path().join("bakewatch.toml"),
        "checks = [\"checks/*.toml\"]\n",
    )
    .expect("write the daemon file");
    std::fs::write(
        dir.path().join("checks/probe.toml"),
        format!("[[check]]\nname = \"probe\"\ntype = \"{kind}\"\n{keys}\n"),
    )
    .expect("write the check file");
    match bakewatch::config::load(&dir.path().join("bakewatch.toml")) {
        Ok(config) => config,
        Err(e) => panic!("the config does not load:\n{e}\n--- check keys ---\n{keys}"),
    }
}

// ---------------------------------------------------------------------------------------------
// systemd integration (tests/systemd.rs)

impl Daemon {
    /// Like [`Daemon::start_full`], with `env` added to the daemon's environment, and without
    /// waiting: returns as soon as the process is spawned (see [`Daemon::wait_until_ready`]).
    pub fn spawn_with_env(
        server_extra: &str,
        extra: &str,
        check_files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Daemon {
        let (dir, port, config) = write_daemon_dir(server_extra, extra, check_files);
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .expect("open stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("-c")
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .env_remove("BAKEWATCH_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // The client first: building it takes a while in a debug build, and the caller
        // wants the port before the daemon can have said anything.
        let http = http_client();
        let child = cmd.spawn().expect("spawn bakewatch run");
        Daemon {
            dir,
            port,
            config,
            child,
            stderr_path,
            http,
        }
    }

    /// Waits until `/-/ready` answers 200; panics (with the log) on an early exit.
    pub async fn wait_until_ready(&mut self) {
        if let Err(e) = self.wait_ready().await {
            panic!("{e}");
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`, …) with `kill`, as an operator or systemd would.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// An empty POST, with a bearer token when given; panics when the request itself fails.
    pub async fn post_empty(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = self.http.post(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = match req.send().await {
            Ok(r) => r,
            Err(e) => panic!("POST {path} failed: {e}; daemon stderr:\n{}", self.stderr()),
        };
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.text().await.expect("response body");
        Answer {
            status,
            content_type,
            body,
        }
    }
}

/// One `/-/healthy` over a fresh connection, within `limit`; the error says what went wrong.
pub async fn healthy(port: u16, limit: Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET /-/healthy HTTP/1.1\r\nhost: bakewatch\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        if text.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("answered {text:?}"))
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}
