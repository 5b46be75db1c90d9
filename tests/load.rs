//! The real daemon's API under load and under many slow clients: it keeps answering
//! `/-/healthy`, keeps its checks on schedule, and cuts slow clients off.
//!
//! `bakewatch run` (the binary under test) runs five http checks every 200 ms against a
//! healthy loopback target. Then, at the same time:
//!
//! - `wrk` (Debian package `wrk`) hammers `GET /api/v1/checks/<name>` for 8 s;
//! - 300 slow-header clients send a request line and a `Host` header, then one more header
//!   byte every 500 ms, never finishing their headers;
//! - 100 slow-body clients send `POST /api/v1/deployments` with `content-length: 1000`, then
//!   one body byte every 500 ms;
//! - `/-/healthy` is polled every 100 ms over a fresh connection with a 1 s limit.
//!
//! Asserted (functional bounds, not benchmarks): every health poll answers 200 in time; the
//! checks ran about as often as their interval says, and at least 95 % of runs started within
//! 100 ms of when they were due (`bakewatch_scheduler_lag_seconds`); every slow-header
//! connection is closed by the daemon after its header read timeout (here
//! `request_timeout` = 5 s, shorter than the built-in 10 s) plus slack; every slow-body request
//! gets `408` at `request_timeout` and its connection is closed; and SIGTERM still stops the
//! daemon cleanly while a client sits on a half-sent request. wrk's requests per second are
//! printed, not asserted.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Daemon, Target, healthy, metric_sum, q};

/// `[server] request_timeout` in this test; the header read timeout is the shorter of it and
/// the daemon's built-in 10 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How far past a timeout the daemon may act (a debug binary on a busy 2-core machine).
const SLACK: Duration = Duration::from_secs(3);

/// The fast checks and their interval.
const CHECKS: usize = 5;
const INTERVAL: Duration = Duration::from_millis(200);

const SLOW_HEADER_CLIENTS: usize = 300;
const SLOW_BODY_CLIENTS: usize = 100;
/// A slow client sends one byte this often.
const DRIP: Duration = Duration::from_millis(500);

/// How long wrk runs (it stops by itself).
const WRK_SECONDS: u64 = 8;

/// What one slow client saw.
#[derive(Debug)]
struct Slow {
    /// When the daemon closed the connection (EOF or reset), from before the connect.
    closed_after: Option<Duration>,
    /// When the first byte of an answer arrived.
    answered_after: Option<Duration>,
    answer: Vec<u8>,
}

/// Connects, sends `prelude`, then `drip` every [`DRIP`] until the daemon closes the
/// connection or `limit` passes.
async fn slow_client(port: u16, prelude: Vec<u8>, drip: u8, limit: Duration) -> Slow {
    let start = Instant::now();
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("a slow client connects to the daemon");
    let (mut rd, mut wr) = stream.into_split();
    let mut writing = wr.write_all(&prelude).await.is_ok();
    let mut answer = Vec::new();
    let mut answered_after = None;
    let mut tick = tokio::time::interval_at((start + DRIP).into(), DRIP);
    let give_up = tokio::time::sleep_until((start + limit).into());
    tokio::pin!(give_up);
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    return Slow { closed_after: Some(start.elapsed()), answered_after, answer };
                }
                Ok(n) => {
                    answered_after.get_or_insert(start.elapsed());
                    answer.extend_from_slice(&buf[..n]);
                }
            },
            _ = tick.tick(), if writing => {
                writing = wr.write_all(&[drip]).await.is_ok();
            }
            _ = &mut give_up => {
                return Slow { closed_after: None, answered_after, answer };
            }
        }
    }
}

/// Panics, saying what to install, when `wrk` is not on the PATH.
fn require_wrk() {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v wrk"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs the HTTP load generator wrk: install wrk (Debian: apt-get install wrk)"
    );
}

/// `bakewatch_scheduler_lag_seconds`: (runs, runs that started within 100 ms of due).
fn lag(metrics: &str) -> (f64, f64) {
    (
        metric_sum(metrics, "bakewatch_scheduler_lag_seconds_count", &[]),
        metric_sum(
            metrics,
            "bakewatch_scheduler_lag_seconds_bucket",
            &[("le", "0.1")],
        ),
    )
}

fn fast_runs(metrics: &str) -> f64 {
    (0..CHECKS)
        .map(|i| {
            metric_sum(
                metrics,
                "bakewatch_check_runs_total",
                &[("check", &format!("fast-{i}"))],
            )
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_stays_up_and_checks_stay_on_schedule_under_load_and_slow_clients() {
    require_wrk();
    let target = Target::start().await;
    let mut checks = String::new();
    for i in 0..CHECKS {
        checks += &format!(
            "[[check]]\nname = \"fast-{i}\"\ntype = \"http\"\nurl = {}\ninterval = \"{}ms\"\ntimeout = \"1s\"\n\n",
            q(target.url(&format!("/fast/{i}"))),
            INTERVAL.as_millis()
        );
    }
    let mut daemon = Daemon::start_full(
        &format!("request_timeout = \"{}s\"", REQUEST_TIMEOUT.as_secs()),
        "[scheduler]\njitter = \"0s\"\n",
        &[("fast.toml", &checks)],
    )
    .await;
    let port = daemon.port;
    for i in 0..CHECKS {
        daemon
            .wait_check(
                &format!("fast-{i}"),
                "passes",
                Duration::from_secs(10),
                |v| v["status"] == "pass",
            )
            .await;
    }
    let before = daemon.metrics().await;
    let period_start = Instant::now();

    // (a) wrk against one check's detail.
    let wrk = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{WRK_SECONDS}s"),
            "--timeout",
            "2s",
            &format!("http://127.0.0.1:{port}/api/v1/checks/fast-0"),
        ])
        .kill_on_drop(true)
        .output();
    let wrk = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(WRK_SECONDS + 20), wrk)
            .await
            .expect("wrk stops by itself after its -d duration")
            .expect("run wrk")
    });

    // (b) slow clients.
    let limit = REQUEST_TIMEOUT + SLACK + Duration::from_secs(2);
    let mut slow_headers = Vec::new();
    for _ in 0..SLOW_HEADER_CLIENTS {
        let prelude = b"GET /-/healthy HTTP/1.1\r\nhost: bakewatch\r\nx-drip: ".to_vec();
        slow_headers.push(tokio::spawn(slow_client(port, prelude, b'a', limit)));
    }
    let mut slow_bodies = Vec::new();
    for _ in 0..SLOW_BODY_CLIENTS {
        let prelude = b"POST /api/v1/deployments HTTP/1.1\r\nhost: bakewatch\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{".to_vec();
        slow_bodies.push(tokio::spawn(slow_client(port, prelude, b' ', limit)));
    }

    // (c) health polls every 100 ms until wrk is done.
    let mut polls = 0u32;
    let mut failures: Vec<String> = Vec::new();
    let poll_start = Instant::now();
    while !wrk.is_finished() {
        let at = poll_start.elapsed();
        if let Err(e) = healthy(port, Duration::from_secs(1)).await {
            failures.push(format!("at {at:?}: {e}"));
        }
        polls += 1;
        let next = poll_start + Duration::from_millis(100) * polls;
        tokio::time::sleep_until(next.into()).await;
    }
    let wrk = wrk.await.expect("wrk task");
    let after = daemon.metrics().await;
    let period = period_start.elapsed();

    let mut header_results = Vec::new();
    for h in slow_headers {
        header_results.push(h.await.expect("slow-header client"));
    }
    let mut body_results = Vec::new();
    for h in slow_bodies {
        body_results.push(h.await.expect("slow-body client"));
    }

    // wrk: what it measured, printed; that it ran and got only 2xx, asserted.
    let wrk_out = String::from_utf8_lossy(&wrk.stdout).into_owned();
    let wrk_err = String::from_utf8_lossy(&wrk.stderr).into_owned();
    println!("load: wrk output:\n{wrk_out}{wrk_err}");
    assert!(wrk.status.success(), "wrk failed:\n{wrk_out}\n{wrk_err}");
    let rps = wrk_out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{wrk_out}"));
    println!("load: wrk observed {rps:.0} requests/s on GET /api/v1/checks/fast-0 (not asserted)");
    assert!(rps > 0.0, "wrk completed no request:\n{wrk_out}");
    assert!(
        !wrk_out.contains("Non-2xx"),
        "the API answered non-2xx under load:\n{wrk_out}"
    );

    // Health polls.
    println!(
        "load: {polls} health polls over {:?}, {} failed",
        poll_start.elapsed(),
        failures.len()
    );
    assert!(polls >= 40, "only {polls} health polls ran");
    assert!(
        failures.is_empty(),
        "{} of {polls} health polls failed under load: {failures:#?}\ndaemon stderr:\n{}",
        failures.len(),
        daemon.stderr()
    );

    // Checks on schedule.
    let runs = fast_runs(&after) - fast_runs(&before);
    let expected = CHECKS as f64 * period.as_secs_f64() / INTERVAL.as_secs_f64();
    let ((n0, in0), (n1, in1)) = (lag(&before), lag(&after));
    let (lagged_runs, on_time) = (n1 - n0, in1 - in0);
    println!(
        "load: {runs} check runs in {period:?} ({expected:.0} expected from the intervals); {on_time} of {lagged_runs} started within 100 ms of due"
    );
    assert!(
        runs >= 0.8 * expected && runs <= 1.1 * expected + CHECKS as f64,
        "{runs} check runs in {period:?}, the intervals predict {expected:.0}"
    );
    // Lag is recorded as a run starts, the run counted as it ends: in-flight runs differ.
    assert!(
        (lagged_runs - runs).abs() <= CHECKS as f64,
        "{lagged_runs} lag samples, {runs} runs"
    );
    assert!(
        on_time >= 0.95 * lagged_runs,
        "only {on_time} of {lagged_runs} runs started within 100 ms of due"
    );

    // Slow-header clients: closed by the daemon after the header read timeout, unanswered.
    let header_timeout = REQUEST_TIMEOUT.min(Duration::from_secs(10));
    let closed: Vec<Duration> = header_results
        .iter()
        .filter_map(|s| s.closed_after)
        .collect();
    let (first, last) = (
        closed.iter().min().copied().unwrap_or_default(),
        closed.iter().max().copied().unwrap_or_default(),
    );
    println!(
        "load: {} of {SLOW_HEADER_CLIENTS} slow-header connections closed by the daemon, after {first:?} .. {last:?}",
        closed.len()
    );
    assert_eq!(
        closed.len(),
        SLOW_HEADER_CLIENTS,
        "slow-header connections left open past {limit:?}"
    );
    assert!(
        first >= header_timeout - Duration::from_millis(500) && last <= header_timeout + SLACK,
        "slow-header connections closed after {first:?} .. {last:?}, expected the {header_timeout:?} header read timeout (+ {SLACK:?})"
    );
    for s in &header_results {
        assert!(
            s.answer.is_empty() || s.answer.starts_with(b"HTTP/1.1 408"),
            "a slow-header client got {:?}",
            String::from_utf8_lossy(&s.answer)
        );
    }

    // Slow-body clients: 408 at the request timeout, then the connection is closed.
    let answered: Vec<Duration> = body_results
        .iter()
        .filter_map(|s| s.answered_after)
        .collect();
    let closed_bodies = body_results
        .iter()
        .filter(|s| s.closed_after.is_some())
        .count();
    println!(
        "load: {} of {SLOW_BODY_CLIENTS} slow-body requests answered after {:?} .. {:?}, {closed_bodies} connections closed",
        answered.len(),
        answered.iter().min(),
        answered.iter().max()
    );
    for s in &body_results {
        let text = String::from_utf8_lossy(&s.answer);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "a slow-body request was answered {text:?} (expected 408 at the request timeout): {s:?}"
        );
        let at = s.answered_after.expect("answered");
        assert!(
            at >= REQUEST_TIMEOUT - Duration::from_millis(500) && at <= REQUEST_TIMEOUT + SLACK,
            "a slow-body request was answered after {at:?}, expected the {REQUEST_TIMEOUT:?} request timeout (+ {SLACK:?})"
        );
        assert!(
            s.closed_after.is_some(),
            "a slow-body connection stayed open after its 408: {s:?}"
        );
    }

    // Graceful shutdown still ends, even with a client sitting on half-sent headers.
    let lingering = tokio::spawn(slow_client(
        port,
        b"GET /-/healthy HTTP/1.1\r\nhost: bakewatch\r\nx-drip: ".to_vec(),
        b'a',
        header_timeout + SLACK + Duration::from_secs(5),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sigterm_at = Instant::now();
    daemon.sigterm();
    let status = daemon.wait_exit(header_timeout + SLACK).await;
    println!(
        "load: SIGTERM with a slow-header client connected: exited {status} after {:?}",
        sigterm_at.elapsed()
    );
    assert!(
        status.success(),
        "bakewatch exited {status} after SIGTERM; stderr:\n{}",
        daemon.stderr()
    );
    let lingering = lingering.await.expect("lingering client");
    assert!(
        lingering.closed_after.is_some(),
        "the slow-header client outlived the daemon: {lingering:?}"
    );
}
