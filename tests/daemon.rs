//! The daemon end to end: `bakewatch run` against real loopback HTTP targets, read through
//! `/metrics` and the JSON API (DESIGN §2, §6, §7; issue 2 "Done means").

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Mode, PORT, Target, metric_sum, metric_type, metric_value, samples};

/// Generous upper bound for waits that normally end within a few hundred milliseconds.
const WAIT: Duration = Duration::from_secs(10);

fn http_check(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[check]]\nname = \"{name}\"\nservice = \"shop\"\ntype = \"http\"\nurl = \"{url}\"\n{extra}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_family_and_pass_promtool() {
    let target = Target::start().await;
    let check = http_check(
        "api",
        &target.url("/health"),
        "interval = \"200ms\"\nexpect = [ { status = 200 }, { jsonpath = \"$.status\", eq = \"ok\" } ]",
    );
    let daemon = Daemon::start(&[("api.toml", &check)]).await;
    let api = [("check", "api"), ("service", "shop"), ("type", "http")];

    daemon
        .wait_metric("bakewatch_check_success", &api, WAIT, |v| v == 1.0)
        .await;
    // A few runs, so every histogram has observations.
    daemon
        .wait_metric(
            "bakewatch_check_runs_total",
            &[("check", "api"), ("status", "pass")],
            WAIT,
            |v| v >= 2.0,
        )
        .await;
    let text = daemon.metrics().await;

    assert_eq!(
        metric_type(&text, "bakewatch_check_success").as_deref(),
        Some("gauge")
    );
    assert_eq!(
        metric_type(&text, "bakewatch_check_runs_total").as_deref(),
        Some("counter")
    );
    assert_eq!(
        metric_type(&text, "bakewatch_check_duration_seconds").as_deref(),
        Some("histogram")
    );
    assert_eq!(
        metric_type(&text, "bakewatch_scheduler_lag_seconds").as_deref(),
        Some("histogram")
    );

    let runs = metric_value(
        &text,
        "bakewatch_check_runs_total",
        &[("check", "api"), ("status", "pass")],
    )
    .expect("runs_total{status=pass}");
    assert!(runs >= 2.0, "{text}");
    // Every status has its series from the start (counters appear at zero).
    for status in ["pass", "degraded", "fail", "error"] {
        assert!(
            metric_value(
                &text,
                "bakewatch_check_runs_total",
                &[("check", "api"), ("status", status)]
            )
            .is_some(),
            "no runs_total series for status {status}:\n{text}"
        );
    }

    // The duration histogram: buckets ending in +Inf, _sum and _count agreeing with the runs.
    let count = metric_value(&text, "bakewatch_check_duration_seconds_count", &api)
        .expect("duration _count");
    let inf = metric_value(
        &text,
        "bakewatch_check_duration_seconds_bucket",
        &[("check", "api"), ("le", "+Inf")],
    )
    .expect("duration +Inf bucket");
    assert_eq!(count, inf, "+Inf bucket equals _count");
    assert!(count >= runs, "duration count {count} < pass runs {runs}");
    let sum = metric_value(&text, "bakewatch_check_duration_seconds_sum", &api).expect("_sum");
    assert!(sum > 0.0 && sum < count * 10.0, "implausible _sum {sum}");
    let buckets: Vec<f64> = samples(&text)
        .into_iter()
        .filter(|s| s.name == "bakewatch_check_duration_seconds_bucket" && s.has_labels(&api))
        .map(|s| s.value)
        .collect();
    assert!(buckets.len() > 5, "too few buckets: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "buckets are cumulative: {buckets:?}"
    );

    for name in [
        "bakewatch_scheduler_lag_seconds_bucket",
        "bakewatch_scheduler_lag_seconds_sum",
        "bakewatch_scheduler_lag_seconds_count",
    ] {
        assert!(
            metric_value(&text, name, &[]).is_some(),
            "no {name}:\n{text}"
        );
    }
    assert!(metric_value(&text, "bakewatch_scheduler_lag_seconds_count", &[]).unwrap() >= 2.0);

    let build = samples(&text)
        .into_iter()
        .find(|s| s.name == "bakewatch_build_info")
        .expect("bakewatch_build_info");
    assert_eq!(build.value, 1.0);
    assert_eq!(build.label("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(build.label("revision").is_some_and(|r| !r.is_empty()));

    assert_eq!(
        metric_value(&text, "bakewatch_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert!(
        metric_value(
            &text,
            "bakewatch_config_last_reload_success_timestamp_seconds",
            &[]
        )
        .is_some_and(|t| t > 1.5e9)
    );
    assert_eq!(
        metric_value(&text, "bakewatch_check_last_run_timestamp_seconds", &api).map(|t| t > 1.5e9),
        Some(true)
    );

    // No label carries unbounded values such as the check's URL.
    for s in samples(&text) {
        for (k, v) in &s.labels {
            assert!(
                !v.contains("://"),
                "label {k}={v:?} of {} holds a URL",
                s.name
            );
        }
    }

    promtool_check(&text);
}

/// Runs `promtool check metrics` on the exposition: it must print nothing and exit 0.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH: this test needs it to lint /metrics. \
             Install the Debian package `prometheus` (apt-get install prometheus), \
             or put a promtool binary on PATH"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    // stdin is closed when the handle above is dropped; promtool then answers at once.
    let out = child.wait_with_output().expect("promtool output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nexposition:\n{text}",
        out.status
    );
}

// ---------------------------------------------------------------------------------------------
// Failures and their reasons

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_target_flips_success_within_one_interval_and_back() {
    let interval = Duration::from_millis(200);
    // A run is a few ms on loopback; the rest is the 50 ms poll and a busy machine.
    let slack = Duration::from_millis(500);
    let target = Target::start().await;
    let check = http_check(
        "web",
        &target.url("/"),
        "interval = \"200ms\"\ntimeout = \"2s\"",
    );
    let daemon = Daemon::start(&[("web.toml", &check)]).await;
    let web = [("check", "web")];

    daemon
        .wait_metric("bakewatch_check_success", &web, WAIT, |v| v == 1.0)
        .await;
    assert_eq!(
        daemon
            .metric(
                "bakewatch_check_failures_total",
                &[("check", "web"), ("reason", "status")]
            )
            .await,
        None,
        "no failure series before the first failure"
    );

    // Break it.
    target.set_mode(Mode::Status(500));
    let broken_at = Instant::now();
    daemon
        .wait_metric("bakewatch_check_success", &web, WAIT, |v| v == 0.0)
        .await;
    let took = broken_at.elapsed();
    assert!(
        took <= interval + slack,
        "check_success went to 0 after {took:?}; the interval is {interval:?}"
    );
    let failures = daemon
        .wait_metric(
            "bakewatch_check_failures_total",
            &[
                ("check", "web"),
                ("service", "shop"),
                ("type", "http"),
                ("reason", "status"),
            ],
            WAIT,
            |v| v >= 1.0,
        )
        .await;
    assert!(failures >= 1.0);
    let detail = daemon.get_json("/api/v1/checks/web").await;
    assert_eq!(detail["status"], "fail", "{detail}");
    assert_eq!(detail["reason"], "status", "{detail}");
    assert!(
        detail["message"].as_str().unwrap_or("").contains("500"),
        "the message names the status: {detail}"
    );

    // Repair it.
    target.set_mode(Mode::Healthy);
    let repaired_at = Instant::now();
    daemon
        .wait_metric("bakewatch_check_success", &web, WAIT, |v| v == 1.0)
        .await;
    let took = repaired_at.elapsed();
    assert!(
        took <= interval + slack,
        "check_success went back to 1 after {took:?}; the interval is {interval:?}"
    );
    let detail = daemon.get_json("/api/v1/checks/web").await;
    assert_eq!(detail["status"], "pass", "{detail}");
    // The last problem stays visible after recovery.
    assert_eq!(detail["last_problem"]["reason"], "status", "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_a_connect_failure() {
    let closed = common::free_port();
    let check = http_check(
        "gone",
        &format!("http://127.0.0.1:{closed}/"),
        "interval = \"200ms\"\ntimeout = \"2s\"",
    );
    let daemon = Daemon::start(&[("gone.toml", &check)]).await;
    daemon
        .wait_metric("bakewatch_check_success", &[("check", "gone")], WAIT, |v| {
            v == 0.0
        })
        .await;
    daemon
        .wait_metric(
            "bakewatch_check_failures_total",
            &[("check", "gone"), ("reason", "connect")],
            WAIT,
            |v| v >= 1.0,
        )
        .await;
    let text = daemon.metrics().await;
    let other_reasons: Vec<_> = samples(&text)
        .into_iter()
        .filter(|s| {
            s.name == "bakewatch_check_failures_total"
                && s.label("check") == Some("gone")
                && s.label("reason") != Some("connect")
        })
        .collect();
    assert!(
        other_reasons.is_empty(),
        "only connect failures: {other_reasons:?}"
    );
    let detail = daemon.get_json("/api/v1/checks/gone").await;
    assert_eq!(detail["status"], "fail", "{detail}");
    assert_eq!(detail["reason"], "connect", "{detail}");
}

// ---------------------------------------------------------------------------------------------
// Timeouts and scheduling

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_target_times_out_on_time_and_other_checks_keep_their_schedule() {
    let hanging = Target::start_in(Mode::Hang).await;
    let healthy = Target::start().await;
    let fast_interval = Duration::from_millis(100);
    let checks = format!(
        "{}\n{}",
        http_check(
            "stuck",
            &hanging.url("/"),
            "interval = \"200ms\"\ntimeout = \"500ms\""
        ),
        http_check(
            "fast",
            &healthy.url("/"),
            "interval = \"100ms\"\ntimeout = \"2s\""
        ),
    );
    let daemon = Daemon::start(&[("checks.toml", &checks)]).await;

    // The first outcome of the hanging check: a timeout, reported within timeout + 100 ms.
    let detail = daemon
        .wait_check("stuck", "has an outcome", WAIT, |v| !v["status"].is_null())
        .await;
    assert_eq!(detail["status"], "fail", "{detail}");
    assert_eq!(detail["reason"], "timeout", "{detail}");
    let ms = detail["last_outcome"]["duration_ms"]
        .as_f64()
        .expect("duration_ms");
    assert!(
        (500.0..600.0).contains(&ms),
        "a 500 ms timeout must end the run within 500..600 ms, took {ms} ms"
    );
    assert!(hanging.requests() >= 1, "the request reached the target");

    // While it keeps hanging, count the fast check's runs over two more timed-out runs
    // (about a second: each hanging run takes 500 ms).
    let fast_runs = async || {
        metric_sum(
            &daemon.metrics().await,
            "bakewatch_check_runs_total",
            &[("check", "fast")],
        )
    };
    let stuck_timeouts = async || {
        daemon
            .metric(
                "bakewatch_check_failures_total",
                &[("check", "stuck"), ("reason", "timeout")],
            )
            .await
            .unwrap_or(0.0)
    };
    let (runs0, timeouts0, t0) = (fast_runs().await, stuck_timeouts().await, Instant::now());
    daemon
        .wait_metric(
            "bakewatch_check_failures_total",
            &[("check", "stuck"), ("reason", "timeout")],
            WAIT,
            |v| v >= timeouts0 + 2.0,
        )
        .await;
    let (runs1, elapsed) = (fast_runs().await, t0.elapsed());
    let expected = elapsed.as_secs_f64() / fast_interval.as_secs_f64();
    let grew = runs1 - runs0;
    assert!(
        grew >= 5.0 && grew >= expected * 0.5,
        "the fast check ran {grew} times in {elapsed:?} while the other hung; its interval implies about {expected:.0}"
    );
    assert!(
        grew <= expected + 2.0,
        "runs are not bunched: {grew} in {elapsed:?}"
    );
    let fast = daemon.get_json("/api/v1/checks/fast").await;
    assert_eq!(fast["status"], "pass", "{fast}");

    // Every run of the hanging check ended as a timeout, none as anything else.
    let text = daemon.metrics().await;
    let stuck_runs = metric_sum(&text, "bakewatch_check_runs_total", &[("check", "stuck")]);
    let stuck_timeouts = metric_value(
        &text,
        "bakewatch_check_failures_total",
        &[("check", "stuck"), ("reason", "timeout")],
    )
    .unwrap();
    assert_eq!(stuck_runs, stuck_timeouts, "{text}");
    let stuck = daemon.get_json("/api/v1/checks/stuck").await;
    for s in stuck["recent"].as_array().expect("recent") {
        let ms = s["duration_ms"].as_f64().unwrap();
        assert_eq!(s["reason"], "timeout", "{s}");
        assert!(
            (500.0..600.0).contains(&ms),
            "timed-out run took {ms} ms: {s}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_lists_checks_and_details_with_stats() {
    let target = Target::start().await;
    let checks = format!(
        "{}\n{}",
        http_check(
            "good",
            &target.url("/health"),
            "interval = \"100ms\"\ntimeout = \"2s\"\ncritical = true",
        ),
        http_check(
            "bad",
            &target.url("/status/503"),
            "interval = \"100ms\"\ntimeout = \"2s\""
        ),
    );
    let daemon = Daemon::start(&[("checks.toml", &checks)]).await;
    for name in ["good", "bad"] {
        daemon
            .wait_check(name, "has 3 runs", WAIT, |v| {
                v["stats"]["runs"].as_u64() >= Some(3)
            })
            .await;
    }

    let list = daemon.get_json("/api/v1/checks").await;
    let list = list["checks"].as_array().expect("checks array");
    assert_eq!(list.len(), 2, "{list:?}");
    let by_name = |n: &str| {
        list.iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("{n} not listed: {list:?}"))
            .clone()
    };
    let good = by_name("good");
    assert_eq!(good["status"], "pass", "{good}");
    assert_eq!(good["reason"], "ok", "{good}");
    assert_eq!(good["service"], "shop");
    assert_eq!(good["type"], "http");
    assert_eq!(good["critical"], true);
    assert_eq!(good["consecutive_failures"], 0);
    assert!(good["stats"]["runs"].as_u64().unwrap() >= 3, "{good}");
    assert_eq!(good["stats"]["failure_ratio"], 0.0, "{good}");
    let bad = by_name("bad");
    assert_eq!(bad["status"], "fail", "{bad}");
    assert_eq!(bad["reason"], "status", "{bad}");
    assert_eq!(bad["stats"]["failure_ratio"], 1.0, "{bad}");
    assert!(bad["consecutive_failures"].as_u64().unwrap() >= 3, "{bad}");

    let detail = daemon.get_json("/api/v1/checks/good").await;
    assert_eq!(detail["name"], "good");
    assert_eq!(detail["last_outcome"]["status"], "pass", "{detail}");
    assert_eq!(
        detail["last_outcome"]["observations"]["status"], 200.0,
        "{detail}"
    );
    assert!(
        detail["last_outcome"]["duration_ms"].is_number(),
        "{detail}"
    );
    let recent = detail["recent"].as_array().expect("recent");
    assert!(recent.len() >= 3, "{detail}");
    assert!(
        recent
            .iter()
            .all(|s| s["status"] == "pass" && s["at"].is_string())
    );
    let stats = &detail["stats"];
    let p: Vec<f64> = [
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p95_ms",
        "latency_p99_ms",
    ]
    .iter()
    .map(|k| {
        stats[*k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing: {stats}"))
    })
    .collect();
    assert!(
        p[0] > 0.0 && p.windows(2).all(|w| w[0] <= w[1]),
        "percentiles ordered: {p:?}"
    );
    assert_eq!(stats["failure_ratio"], 0.0);
    assert!(
        detail["defined_at"]
            .as_str()
            .unwrap()
            .contains("checks.toml"),
        "{detail}"
    );

    let bad = daemon.get_json("/api/v1/checks/bad").await;
    assert_eq!(bad["last_outcome"]["reason"], "status", "{bad}");
    assert_eq!(
        bad["last_outcome"]["observations"]["status"], 503.0,
        "{bad}"
    );
    assert!(
        bad["last_outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{bad}"
    );
    assert_eq!(bad["stats"]["failure_ratio"], 1.0);

    // A window given by the caller.
    let windowed = daemon.get_json("/api/v1/checks/good?window=1m").await;
    assert_eq!(windowed["window"], "1m", "{windowed}");
    assert!(windowed["stats"]["runs"].as_u64().unwrap() >= 3);
    let listed = daemon.get_json("/api/v1/checks?window=1m").await;
    assert_eq!(listed["checks"][0]["window"], "1m", "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_problem_json() {
    let daemon = Daemon::start(&[(
        "self.toml",
        &http_check(
            "me",
            &format!("http://127.0.0.1:{PORT}/-/healthy"),
            "interval = \"1s\"",
        ),
    )])
    .await;

    for path in [
        "/api/v1/checks/me?window=bogus",
        "/api/v1/checks?window=bogus",
        "/api/v1/checks/me?window=0s",
        "/api/v1/checks/me?unknown=1",
    ] {
        let a = daemon.request(path).await;
        assert_eq!(a.status, 400, "GET {path}: {}", a.body);
        assert_problem(&a, 400, path);
    }
    let a = daemon.request("/api/v1/checks/me?window=bogus").await;
    assert!(
        a.json()["detail"].as_str().unwrap().contains("bogus"),
        "{}",
        a.body
    );

    let a = daemon.request("/api/v1/checks/no-such-check").await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_problem(&a, 404, "unknown check");
    assert!(a.body.contains("no-such-check"), "{}", a.body);

    let a = daemon.request("/no/such/endpoint").await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_problem(&a, 404, "unknown path");

    let (status, body) = daemon.get("/-/healthy").await;
    assert_eq!((status, body.trim()), (200, "OK"));
    let (status, _) = daemon.get("/-/ready").await;
    assert_eq!(status, 200);
}

fn assert_problem(a: &common::Answer, status: u16, what: &str) {
    assert!(
        a.content_type.starts_with("application/problem+json"),
        "{what}: content-type {:?}",
        a.content_type
    );
    let p = a.json();
    assert_eq!(p["status"], status, "{what}: {p}");
    assert!(
        p["title"].is_string() && p["detail"].is_string(),
        "{what}: {p}"
    );
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_cleanly() {
    let target = Target::start().await;
    let check = http_check("web", &target.url("/"), "interval = \"100ms\"");
    let mut daemon = Daemon::start(&[("web.toml", &check)]).await;
    daemon
        .wait_metric("bakewatch_check_success", &[("check", "web")], WAIT, |v| {
            v == 1.0
        })
        .await;
    assert!(
        daemon.stderr().contains("bakewatch started"),
        "{}",
        daemon.stderr()
    );

    daemon.sigterm();
    let sent = Instant::now();
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    let log = daemon.stderr();
    assert_eq!(status.code(), Some(0), "exit status {status}; log:\n{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("bakewatch stopped"), "{log}");
    assert!(sent.elapsed() < Duration::from_secs(5));

    // The listener is gone with the process.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", daemon.port)).is_err(),
        "the daemon's port still accepts connections"
    );
}

// ---------------------------------------------------------------------------------------------
// The shipped example

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_checks_pass_as_shipped_modulo_the_port() {
    // Every file of checks/, with the daemon's own port replaced.
    let mut files: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(common::repo_root().join("checks")).expect("read checks/") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("read a shipped check file");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.push((
                name,
                text.replace("127.0.0.1:9797", &format!("127.0.0.1:{PORT}")),
            ));
        }
    }
    files.sort();
    assert!(
        files.iter().any(|(n, _)| n == "self.toml"),
        "checks/self.toml is part of the shipped example"
    );
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let daemon = Daemon::start(&refs).await;

    let list = daemon.get_json("/api/v1/checks").await;
    let listed: Vec<String> = list["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert!(listed.len() >= 3, "{list}");

    // Interval checks run at once (no jitter in the test config) and must pass.
    for c in list["checks"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        if c["schedule"].as_str().unwrap().starts_with("every ") {
            let d = daemon
                .wait_check(name, "has run", WAIT, |v| !v["status"].is_null())
                .await;
            assert_eq!(d["status"], "pass", "{name}: {d}");
        }
    }
    // A cron check fires at the top of the minute, too late for a test: its schedule is
    // checked here, and `bakewatch once` runs every check against this daemon right away.
    let api = daemon.get_json("/api/v1/checks/bakewatch-api").await;
    assert_eq!(api["schedule"], "cron * * * * *", "{api}");
    let config = daemon.config.to_str().unwrap().to_string();
    let out = common::run_cli_async(
        &["once", "-c", &config, "--format", "json"],
        daemon.dir.path(),
        &[],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), listed.len(), "{report}");
    for r in results {
        assert_eq!(r["status"], "pass", "{r}");
    }
}

#[test]
fn exposition_parser_reads_labels_and_escapes() {
    let text = "# HELP x_total Things.\n# TYPE x_total counter\n\
                x_total{a=\"1\",b=\"q\\\"uote\"} 3\n\
                y 2.5\n\
                z_bucket{le=\"+Inf\"} 7\n\
                w{} NaN\n";
    let s = samples(text);
    assert_eq!(s.len(), 4);
    assert_eq!(s[0].label("b"), Some("q\"uote"));
    assert_eq!(metric_value(text, "x_total", &[("a", "1")]), Some(3.0));
    assert_eq!(metric_value(text, "x_total", &[("a", "2")]), None);
    assert_eq!(metric_value(text, "y", &[]), Some(2.5));
    assert_eq!(metric_value(text, "z_bucket", &[("le", "+Inf")]), Some(7.0));
    assert!(metric_value(text, "w", &[]).unwrap().is_nan());
    assert_eq!(metric_type(text, "x_total").as_deref(), Some("counter"));
}
