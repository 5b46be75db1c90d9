//! systemd integration: the notification protocol as the real binary speaks it (READY after
//! the listener is up, STATUS, WATCHDOG, STOPPING), config reload on SIGHUP and
//! `POST /-/reload`, and the shipped unit file (`systemd-analyze verify` clean, exposure ≤ 2.0).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{Daemon, repo_root, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// One datagram the daemon sent, and (for `READY=1`) what the port answered at that moment.
#[derive(Debug)]
struct Message {
    text: String,
    /// For `READY=1`: the first line of `GET /-/ready`, asked the moment it arrived.
    ready_probe: Option<String>,
}

/// Asks `GET /-/ready` over a plain TCP connection (from the receiving thread, while the
/// daemon has just said READY=1); the status line, or the connect error.
fn probe_ready(port: u16) -> String {
    let mut s = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return format!("connect failed: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /-/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or("").to_string()
}

/// The daemon's port once the test has stored it (it does so right after spawning, which
/// on a busy machine can be after the daemon's first datagram).
fn known_port(port: &AtomicU16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = port.load(Ordering::SeqCst);
        if p != 0 || Instant::now() > deadline {
            return p;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A notification socket the test binds, received on a thread.
struct NotifySocket {
    path: PathBuf,
    rx: mpsc::Receiver<Message>,
    seen: Vec<Message>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    fn bind(dir: &Path, port: Arc<std::sync::atomic::AtomicU16>) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let ready_probe = text
                    .lines()
                    .any(|l| l == "READY=1")
                    .then(|| probe_ready(known_port(&port)));
                if tx.send(Message { text, ready_probe }).is_err() {
                    return;
                }
            }
        });
        NotifySocket {
            path,
            rx,
            seen: Vec::new(),
            stop,
        }
    }

    /// Waits for a message with a line satisfying `pred`; returns its index in `seen`.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool, daemon: &Daemon) -> usize {
        if let Some(i) = self.seen.iter().position(|m| m.text.lines().any(&pred)) {
            return i;
        }
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(m) = self.rx.recv_timeout(Duration::from_millis(100)) {
                let hit = m.text.lines().any(&pred);
                self.seen.push(m);
                if hit {
                    return self.seen.len() - 1;
                }
            }
        }
        panic!(
            "no notification {what} within {WAIT:?}; seen: {:?}\ndaemon stderr:\n{}",
            self.seen.iter().map(|m| &m.text).collect::<Vec<_>>(),
            daemon.stderr()
        );
    }

    fn count(&self, line: &str) -> usize {
        self.seen
            .iter()
            .filter(|m| m.text.lines().any(|l| l == line))
            .count()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const TWO_COMMANDS: &str = r#"
[[check]]
name = "ok"
type = "command"
argv = ["true"]
interval = "1s"

[[check]]
name = "broken"
type = "command"
argv = ["false"]
interval = "1s"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn notifies_ready_after_the_listener_then_status_watchdog_and_stopping() {
    let sock_dir = tempfile::tempdir().unwrap();
    let port = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let mut notify = NotifySocket::bind(sock_dir.path(), port.clone());
    let socket = notify.path.to_str().unwrap().to_string();
    let mut daemon = Daemon::spawn_with_env(
        "",
        "[scheduler]\njitter = \"0s\"\n",
        &[("checks.toml", TWO_COMMANDS)],
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
    );
    port.store(daemon.port, Ordering::SeqCst);

    // READY=1 comes once the listener is up: the port answers /-/ready at that moment.
    let ready = notify.wait_for("READY=1", |l| l == "READY=1", &daemon);
    let probe = notify.seen[ready].ready_probe.clone().unwrap();
    assert!(
        probe.starts_with("HTTP/1.1 200"),
        "when READY=1 arrived, GET /-/ready answered {probe:?}"
    );
    // Nothing claimed readiness before.
    assert!(
        notify.seen[..ready]
            .iter()
            .all(|m| !m.text.contains("READY=1")),
        "{:?}",
        notify.seen
    );
    daemon.wait_until_ready().await;

    // STATUS= counts the checks, then sees the failing one.
    notify.wait_for(
        "STATUS with the check count",
        |l| l.starts_with("STATUS=2 checks"),
        &daemon,
    );
    notify.wait_for(
        "STATUS with one failing check",
        |l| l == "STATUS=2 checks, 1 failing",
        &daemon,
    );

    // The watchdog is fed every half interval (200 ms): several pings within a few seconds.
    let deadline = Instant::now() + WAIT;
    while notify.count("WATCHDOG=1") < 5 && Instant::now() < deadline {
        if let Ok(m) = notify.rx.recv_timeout(Duration::from_millis(100)) {
            notify.seen.push(m);
        }
    }
    assert!(
        notify.count("WATCHDOG=1") >= 5,
        "watchdog pings: {}; seen: {:?}",
        notify.count("WATCHDOG=1"),
        notify.seen
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.sigterm();
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1", &daemon);
    let status = daemon.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_notifies_reloading_then_ready() {
    let sock_dir = tempfile::tempdir().unwrap();
    let port = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let mut notify = NotifySocket::bind(sock_dir.path(), port.clone());
    let socket = notify.path.to_str().unwrap().to_string();
    let mut daemon = Daemon::spawn_with_env(
        "",
        "[scheduler]\njitter = \"0s\"\n",
        &[("checks.toml", TWO_COMMANDS)],
        &[("NOTIFY_SOCKET", &socket)],
    );
    port.store(daemon.port, Ordering::SeqCst);
    let first = notify.wait_for("READY=1", |l| l == "READY=1", &daemon);
    daemon.wait_until_ready().await;
    daemon.signal("HUP");
    let reloading = notify.wait_for("RELOADING=1", |l| l == "RELOADING=1", &daemon);
    assert!(reloading > first);
    let msg = &notify.seen[reloading].text;
    let usec = msg
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {msg:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0, "{msg:?}");
    // READY=1 again after the reload.
    let deadline = Instant::now() + WAIT;
    loop {
        if notify.seen[reloading + 1..]
            .iter()
            .any(|m| m.text.lines().any(|l| l == "READY=1"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no READY=1 after the reload: {:?}",
            notify.seen
        );
        if let Ok(m) = notify.rx.recv_timeout(Duration::from_millis(100)) {
            notify.seen.push(m);
        }
    }
    // Without $WATCHDOG_USEC, no pings.
    assert_eq!(notify.count("WATCHDOG=1"), 0);
    daemon.sigterm();
    assert_eq!(daemon.wait_exit(WAIT).await.code(), Some(0));
}

const KEEP: &str = r#"
[[check]]
name = "keep"
type = "command"
argv = ["true"]
interval = "1s"
"#;

const GONE: &str = r#"
[[check]]
name = "gone"
type = "command"
argv = ["true"]
interval = "1s"
"#;

const ADDED: &str = r#"
[[check]]
name = "added"
type = "command"
argv = ["true"]
interval = "1s"
"#;

const TOKEN: &str = "reload-test-token";

fn write_checks(daemon: &Daemon, text: &str) {
    std::fs::write(daemon.dir.path().join("checks/checks.toml"), text).unwrap();
}

/// Whether `text` has `checks.toml:<line>:<col>:` (the broken line is 14).
fn names_file_line_col(text: &str) -> bool {
    text.match_indices("checks.toml:").any(|(i, m)| {
        let mut parts = text[i + m.len()..].splitn(3, ':');
        parts.next() == Some("14")
            && parts
                .next()
                .is_some_and(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()))
    })
}

fn recent_times(v: &serde_json::Value) -> Vec<String> {
    v["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .map(|s| s["at"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_post_reload_swap_the_config_and_a_bad_one_is_refused() {
    let daemon = Daemon::start_full(
        &format!("token = \"{TOKEN}\""),
        "[scheduler]\njitter = \"0s\"\n",
        &[("checks.toml", &format!("{KEEP}{GONE}"))],
    )
    .await;
    // Both ran (twice for the one that stays).
    let before = daemon
        .wait_check("keep", "ran twice", WAIT, |v| {
            v["recent"].as_array().is_some_and(|r| r.len() >= 2)
        })
        .await;
    let before = recent_times(&before);
    daemon
        .wait_metric("bakewatch_check_success", &[("check", "gone")], WAIT, |v| {
            v == 1.0
        })
        .await;
    let stamp_before = daemon
        .metric(
            "bakewatch_config_last_reload_success_timestamp_seconds",
            &[],
        )
        .await
        .unwrap();

    // A good config: one check added, one removed, one kept.
    write_checks(&daemon, &format!("{KEEP}{ADDED}"));
    daemon.signal("HUP");
    daemon
        .wait_check("added", "ran after the reload", WAIT, |v| {
            v["status"] == "pass"
        })
        .await;
    let (status, body) = daemon.get("/api/v1/checks/gone").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        daemon
            .metric("bakewatch_check_success", &[("check", "gone")])
            .await,
        None,
        "the removed check's series stay:\n{}",
        daemon.metrics().await
    );
    // The kept check's history survived: its runs from before the reload are still listed.
    let after = daemon
        .wait_check("keep", "ran again", WAIT, |v| {
            recent_times(v).len() > before.len()
        })
        .await;
    let after = recent_times(&after);
    for at in &before {
        assert!(
            after.contains(at),
            "run at {at} lost by the reload: {after:?}"
        );
    }
    assert_eq!(
        daemon
            .metric("bakewatch_config_last_reload_successful", &[])
            .await,
        Some(1.0)
    );
    daemon
        .wait_metric(
            "bakewatch_config_last_reload_success_timestamp_seconds",
            &[],
            WAIT,
            |v| v >= stamp_before,
        )
        .await;
    wait_until("the reload is logged", WAIT, async || {
        let log = daemon.stderr();
        if log.contains("config reloaded") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;

    // A broken config: the old one keeps running, the metric says 0, the log names the spot.
    write_checks(&daemon, &format!("{KEEP}{ADDED}\n[[check]\nname = \"x\"\n"));
    daemon.signal("HUP");
    daemon
        .wait_metric("bakewatch_config_last_reload_successful", &[], WAIT, |v| {
            v == 0.0
        })
        .await;
    let log = daemon.stderr();
    let failure = log
        .lines()
        .find(|l| l.contains("config reload failed"))
        .unwrap_or_else(|| panic!("no failure line in the log:\n{log}"));
    assert!(
        names_file_line_col(failure),
        "the failure line does not name file:line:col: {failure}"
    );
    let runs = |v: &serde_json::Value| recent_times(v).len();
    let now = runs(&daemon.get_json("/api/v1/checks/added").await);
    daemon
        .wait_check("added", "still runs", WAIT, |v| runs(v) > now)
        .await;
    let (status, _) = daemon.get("/api/v1/checks/keep").await;
    assert_eq!(status, 200);

    // POST /-/reload: the token is required.
    let a = daemon.post_empty("/-/reload", None).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = daemon.post_empty("/-/reload", Some("wrong")).await;
    assert_eq!(a.status, 401, "{}", a.body);
    // With it, the still broken config is refused with every problem as file:line:col.
    let a = daemon.post_empty("/-/reload", Some(TOKEN)).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.content_type, "application/problem+json");
    let errors = a.json()["errors"].clone();
    let first = errors[0].as_str().unwrap_or_else(|| panic!("{}", a.body));
    assert!(names_file_line_col(first), "not file:line:col: {first}");
    // Fixed: 200, and the metric is back to 1.
    write_checks(&daemon, KEEP);
    let a = daemon.post_empty("/-/reload", Some(TOKEN)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["status"], "reloaded");
    assert_eq!(v["checks"], 1);
    assert_eq!(v["removed"], serde_json::json!(["added"]));
    assert_eq!(
        daemon
            .metric("bakewatch_config_last_reload_successful", &[])
            .await,
        Some(1.0)
    );
    let (status, _) = daemon.get("/api/v1/checks/added").await;
    assert_eq!(status, 404);

    // SIGTERM after reloads: still a clean stop.
    let mut daemon = daemon;
    daemon.sigterm();
    assert_eq!(
        daemon.wait_exit(WAIT).await.code(),
        Some(0),
        "{}",
        daemon.stderr()
    );
}

// ---------------------------------------------------------------------------------------------
// The unit file

/// `systemd-analyze`, or a panic that says to install systemd.
fn systemd_analyze() -> &'static str {
    const PATH: &str = "/usr/bin/systemd-analyze";
    assert!(
        Path::new(PATH).exists(),
        "{PATH} is missing: install systemd (apt-get install systemd) to check the unit file"
    );
    PATH
}

fn unit_path() -> PathBuf {
    repo_root().join("systemd/bakewatch.service")
}

#[test]
fn the_unit_file_verifies_clean() {
    let analyze = systemd_analyze();
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    for key in [
        "Type=notify\n",
        "NotifyAccess=main\n",
        "ExecStart=/usr/bin/bakewatch run -c /etc/bakewatch/bakewatch.toml\n",
        "ExecReload=/bin/kill -HUP $MAINPID\n",
        "WatchdogSec=30s\n",
        "Restart=on-failure\n",
        "DynamicUser=yes\n",
        "StateDirectory=bakewatch\n",
        "ConfigurationDirectory=bakewatch\n",
        "#LoadCredential=",
    ] {
        assert!(unit.contains(key), "the unit lacks {key:?}");
    }
    // The same unit, with ExecStart at the binary under test (verify checks it exists).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("bakewatch.service");
    std::fs::write(&copy, unit.replace("/usr/bin/bakewatch", common::BIN)).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stdout}{stderr}",
        out.status
    );
}

#[test]
fn the_unit_file_exposure_is_at_most_2() {
    let analyze = systemd_analyze();
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_path())
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure line:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // "→ Overall exposure level for bakewatch.service: 1.2 OK 🙂"
    let figure: f64 = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure line: {line}"));
    assert!(figure <= 2.0, "exposure {figure} > 2.0: {line}\n{text}");
    // The figure the unit's comment states is the one systemd computes.
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    assert!(
        unit.contains(&format!("{figure:.1} (\"OK\"")),
        "update the exposure figure in the unit's comment to {figure:.1}"
    );
}
