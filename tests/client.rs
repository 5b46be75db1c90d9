//! `bakewatch deploy` and `bakewatch verdict` (DESIGN §2, §5, §10): usage errors, unreachable
//! daemons (fail closed, or `--on-unavailable=proceed`), and end to end against real daemon
//! binaries and loopback targets: pass, fail, inconclusive, timeout, cancel, refusals (token,
//! 409, unknown id), and several `--url` combined.

mod common;

use std::time::{Duration, Instant};

use common::{
    BIN, CliOutput, Daemon, Mode, Target, free_port, http_client, run_cli, run_cli_async,
};

/// Exit codes of DESIGN §2.
const OK: i32 = 0;
const FAIL: i32 = 1;
const INCONCLUSIVE: i32 = 2;
const PENDING: i32 = 3;
const STOPPED: i32 = 4;
const USAGE: i32 = 64;
const UNAVAILABLE: i32 = 69;

const TOKEN: &str = "client-test-token-5d1e";

/// Loopback must not go through a proxy from the test environment.
const ENV: &[(&str, &str)] = &[
    ("NO_PROXY", "127.0.0.1,localhost"),
    ("no_proxy", "127.0.0.1,localhost"),
];

fn cli(args: &[&str]) -> CliOutput {
    run_cli(args, &std::env::temp_dir(), ENV)
}

async fn cli_async(args: &[&str]) -> CliOutput {
    run_cli_async(args, &std::env::temp_dir(), ENV).await
}

/// Like [`run_cli`], for the one command that legitimately runs longer than its 30s limit
/// (the 30s unreachable grace); killed after `limit`.
fn cli_for(args: &[&str], limit: Duration) -> CliOutput {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .envs(ENV.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn bakewatch");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bakewatch {args:?} did not finish within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).expect("read stdout"),
        stderr: std::fs::read_to_string(&err_path).expect("read stderr"),
    }
}

/// `http://127.0.0.1:<port>` with nothing listening.
fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Whether `id` looks like `<service>-<version>-<8 hex digits>`.
fn is_generated_id(id: &str, service: &str, version: &str) -> bool {
    id.strip_prefix(&format!("{service}-{version}-"))
        .is_some_and(|r| r.len() == 8 && r.chars().all(|c| c.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------------------------
// Without a daemon

#[test]
fn usage_errors_exit_64() {
    let url = dead_url();
    let cases: &[(&str, &[&str])] = &[
        ("no --service", &["deploy", "--version", "1"]),
        ("no --version", &["deploy", "--service", "s"]),
        (
            "empty --service",
            &["deploy", "--service", " ", "--version", "1"],
        ),
        (
            "bad --timeout",
            &[
                "deploy",
                "--service",
                "s",
                "--version",
                "1",
                "--wait",
                "--timeout",
                "soon",
            ],
        ),
        (
            "--timeout without --wait",
            &[
                "deploy",
                "--service",
                "s",
                "--version",
                "1",
                "--timeout",
                "5m",
            ],
        ),
        (
            "bad --url",
            &[
                "deploy",
                "--service",
                "s",
                "--version",
                "1",
                "--url",
                "ftp://x",
            ],
        ),
        (
            "bad --label",
            &[
                "deploy",
                "--service",
                "s",
                "--version",
                "1",
                "--label",
                "novalue",
            ],
        ),
        (
            "bad --on-unavailable",
            &[
                "deploy",
                "--service",
                "s",
                "--version",
                "1",
                "--on-unavailable",
                "maybe",
            ],
        ),
        ("verdict without an id", &["verdict"]),
        (
            "verdict with a bad --timeout",
            &["verdict", "x", "--wait", "--timeout", "-3s"],
        ),
    ];
    for (what, args) in cases {
        let out = cli(args);
        assert_eq!(out.code, Some(USAGE), "{what}: {out}");
        assert!(out.stdout.is_empty(), "{what}: {out}");
        assert!(!out.stderr.trim().is_empty(), "{what}: {out}");
    }
    // A label given twice is caught before anything is sent.
    let out = cli(&[
        "deploy",
        "--service",
        "s",
        "--version",
        "1",
        "--label",
        "a=1",
        "--label",
        "a=2",
        "--url",
        &url,
    ]);
    assert_eq!(out.code, Some(USAGE), "{out}");
    assert!(out.stderr.contains("--label a"), "{out}");
}

#[test]
fn an_unreachable_daemon_fails_closed_quickly() {
    let url = dead_url();
    for args in [
        vec![
            "deploy",
            "--service",
            "shop",
            "--version",
            "2.0.0",
            "--url",
            &url,
        ],
        vec![
            "deploy",
            "--service",
            "shop",
            "--version",
            "2.0.0",
            "--wait",
            "--url",
            &url,
        ],
        vec!["verdict", "shop-1", "--url", &url],
        vec![
            "verdict",
            "shop-1",
            "--wait",
            "--timeout",
            "3s",
            "--url",
            &url,
        ],
    ] {
        let started = Instant::now();
        let out = cli(&args);
        let took = started.elapsed();
        assert_eq!(out.code, Some(UNAVAILABLE), "{args:?}: {out}");
        assert!(
            took < Duration::from_secs(10),
            "{args:?} took {took:?}: {out}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out}");
        assert!(
            out.stderr.contains(&url) && out.stderr.contains("unavailable"),
            "{args:?}: {out}"
        );
    }
}

#[test]
fn on_unavailable_proceed_passes_with_a_loud_warning() {
    let url = dead_url();
    for wait in [false, true] {
        let mut args = vec![
            "deploy",
            "--service",
            "shop",
            "--version",
            "2.0.0",
            "--url",
            &url,
            "--on-unavailable=proceed",
        ];
        if wait {
            args.push("--wait");
        }
        let out = cli(&args);
        assert_eq!(out.code, Some(OK), "wait={wait}: {out}");
        // The id is still printed, alone on stdout, for the rest of the pipeline.
        assert!(
            is_generated_id(out.stdout.trim_end(), "shop", "2.0.0"),
            "wait={wait}: {out}"
        );
        assert!(
            out.stderr.contains("WARNING")
                && out.stderr.contains(&url)
                && out.stderr.contains("--on-unavailable=proceed"),
            "wait={wait}: {out}"
        );
    }
    let out = cli(&[
        "verdict",
        "shop-1",
        "--url",
        &url,
        "--on-unavailable",
        "proceed",
    ]);
    assert_eq!(out.code, Some(OK), "{out}");
    assert!(out.stderr.contains("WARNING"), "{out}");
    assert!(out.stdout.contains("UNAVAILABLE"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Against the daemon

/// A fast post-deploy policy so verdicts conclude within seconds.
const POLICY: &str = "[scheduler]\njitter = \"0s\"\n\n[deploy]\nwindow = \"1m\"\ninterval = \"100ms\"\nmin_duration = \"1500ms\"\nmax_duration = \"6s\"\nbaseline = \"10m\"\ncritical_failures = 2\n";

/// A policy under which nothing concludes during a test.
const SLOW_POLICY: &str = "[scheduler]\njitter = \"0s\"\n\n[deploy]\nwindow = \"10m\"\ninterval = \"200ms\"\nmin_duration = \"5m\"\nmax_duration = \"10m\"\nbaseline = \"10m\"\n";

/// A critical HTTP check of service `shop` against `target`.
fn shop_check(target: &Target) -> String {
    format!(
        "[[check]]\nname = \"shop-health\"\nservice = \"shop\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"200ms\"\ntimeout = \"2s\"\ncritical = true\n",
        target.url("/health")
    )
}

async fn daemon(policy: &str, checks: &str) -> Daemon {
    Daemon::start_full(
        &format!("token = \"{TOKEN}\""),
        policy,
        &[("shop.toml", checks)],
    )
    .await
}

fn base(d: &Daemon) -> String {
    d.url("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_deploy_passes_and_verdict_reads_it() {
    let target = Target::start().await;
    let d = daemon(POLICY, &shop_check(&target)).await;
    let url = base(&d);
    let out = cli_async(&[
        "deploy",
        "--service",
        "shop",
        "--version",
        "2.0.0",
        "--env",
        "prod",
        "--label",
        "commit=abc123",
        "--wait",
        "--timeout",
        "30s",
        "--url",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(out.code, Some(OK), "{out}\ndaemon:\n{}", d.stderr());
    // stdout is the id alone; progress and the report are on stderr.
    let id = out.stdout.trim_end().to_string();
    assert!(is_generated_id(&id, "shop", "2.0.0"), "{out}");
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert!(
        out.stderr.contains(&format!("registered {id} with {url}")),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "deployment {id} (shop 2.0.0): pass (decision proceed)"
        )),
        "{out}"
    );
    // Not a terminal: plain progress lines, one per revision.
    assert!(out.stderr.contains("] pending · "), "{out}");

    let record = d.get_json(&format!("/api/v1/deployments/{id}")).await;
    assert_eq!(record["environment"], "prod", "{record}");
    assert_eq!(record["labels"]["commit"], "abc123", "{record}");

    let out = cli_async(&["verdict", &id, "--url", &url]).await;
    assert_eq!(out.code, Some(OK), "{out}");
    assert!(out.stdout.contains(": pass (decision proceed)"), "{out}");
    assert!(out.stdout.contains("check shop-health: ok"), "{out}");

    // Registering again with the same id and body is fine (idempotent), even concluded.
    let out = cli_async(&[
        "deploy",
        "--service",
        "shop",
        "--version",
        "2.0.0",
        "--env",
        "prod",
        "--label",
        "commit=abc123",
        "--id",
        &id,
        "--url",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(out.code, Some(OK), "{out}");
    assert_eq!(out.stdout.trim_end(), id, "{out}");
    assert!(out.stderr.contains("already registered"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_critical_check_fails_the_deploy() {
    let target = Target::start_in(Mode::Status(500)).await;
    let d = daemon(POLICY, &shop_check(&target)).await;
    let out = cli_async(&[
        "deploy",
        "--service",
        "shop",
        "--version",
        "2.1.0",
        "--id",
        "bad-1",
        "--wait",
        "--timeout",
        "30s",
        "--url",
        &base(&d),
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(out.code, Some(FAIL), "{out}\ndaemon:\n{}", d.stderr());
    assert_eq!(out.stdout.trim_end(), "bad-1", "{out}");
    assert!(out.stderr.contains("fail (decision rollback)"), "{out}");
    assert!(
        out.stderr.contains("CRITICAL_CHECK_FAILED (shop-health)"),
        "{out}"
    );
    let out = cli_async(&["verdict", "bad-1", "--url", &base(&d)]).await;
    assert_eq!(out.code, Some(FAIL), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_only_error_give_inconclusive() {
    // A Prometheus that is not there: every run is an `error`, never evidence.
    let checks = format!(
        "[[check]]\nname = \"shop-errors\"\nservice = \"shop\"\ntype = \"prometheus\"\nurl = \"http://127.0.0.1:{}\"\nquery = \"up\"\ninterval = \"200ms\"\ntimeout = \"1s\"\n",
        free_port()
    );
    let d = daemon(POLICY, &checks).await;
    let out = cli_async(&[
        "deploy",
        "--service",
        "shop",
        "--version",
        "3.0.0",
        "--wait",
        "--timeout",
        "30s",
        "--url",
        &base(&d),
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(
        out.code,
        Some(INCONCLUSIVE),
        "{out}\ndaemon:\n{}",
        d.stderr()
    );
    assert!(out.stderr.contains("inconclusive (decision hold)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_while_pending_exits_3_and_cancel_exits_4() {
    let target = Target::start().await;
    let d = daemon(SLOW_POLICY, &shop_check(&target)).await;
    let url = base(&d);
    let started = Instant::now();
    let out = cli_async(&[
        "deploy",
        "--service",
        "shop",
        "--version",
        "5.0.0",
        "--id",
        "slow-1",
        "--wait",
        "--timeout",
        "2s",
        "--url",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    let took = started.elapsed();
    assert_eq!(out.code, Some(PENDING), "{out}\ndaemon:\n{}", d.stderr());
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(out.stderr.contains("slow-1 (shop 5.0.0): pending"), "{out}");

    // Read once without waiting: still pending.
    let out = cli_async(&["verdict", "slow-1", "--url", &url]).await;
    assert_eq!(out.code, Some(PENDING), "{out}");

    // A long-poll in progress sees the cancel.
    let wait_url = url.clone();
    let waiting = tokio::task::spawn_blocking(move || {
        cli(&[
            "verdict",
            "slow-1",
            "--wait",
            "--timeout",
            "60s",
            "--url",
            &wait_url,
        ])
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = http_client()
        .post(d.url("/api/v1/deployments/slow-1/cancel"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST cancel");
    assert_eq!(r.status().as_u16(), 200);
    let out = waiting.await.expect("verdict --wait");
    assert_eq!(out.code, Some(STOPPED), "{out}");
    assert!(
        out.stdout.contains("slow-1 (shop 5.0.0): cancelled"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_usage_errors_with_the_daemons_reason() {
    let target = Target::start().await;
    let d = daemon(SLOW_POLICY, &shop_check(&target)).await;
    let url = base(&d);
    let deploy = |version: &'static str, token: &'static str| {
        let url = url.clone();
        async move {
            cli_async(&[
                "deploy",
                "--service",
                "shop",
                "--version",
                version,
                "--id",
                "shop-x",
                "--url",
                &url,
                "--token",
                token,
            ])
            .await
        }
    };

    let out = deploy("1.0.0", "wrong-token").await;
    assert_eq!(out.code, Some(USAGE), "{out}");
    assert!(
        out.stderr.contains("refused the API token") && out.stderr.contains("401"),
        "{out}"
    );
    assert!(out.stdout.is_empty(), "{out}");

    let out = deploy("1.0.0", TOKEN).await;
    assert_eq!(out.code, Some(OK), "{out}");
    // The same id with another version: 409, with the daemon's own words.
    let out = deploy("1.0.1", TOKEN).await;
    assert_eq!(out.code, Some(USAGE), "{out}");
    assert!(
        out.stderr.contains("HTTP 409") && out.stderr.contains("exists with a different"),
        "{out}"
    );

    // A service without checks (the daemon answers 422).
    let out = cli_async(&[
        "deploy",
        "--service",
        "nothing-checks-me",
        "--version",
        "1",
        "--url",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(out.code, Some(USAGE), "{out}");
    assert!(out.stderr.contains("nothing-checks-me"), "{out}");

    let out = cli_async(&["verdict", "no-such-id", "--url", &url]).await;
    assert_eq!(out.code, Some(USAGE), "{out}");
    assert!(
        out.stderr.contains("knows no deployment \"no-such-id\""),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_daemons_combine_fail_if_any_fails_pass_only_if_all_pass() {
    let good = Target::start().await;
    let bad = Target::start_in(Mode::Status(500)).await;
    let a = daemon(POLICY, &shop_check(&good)).await;
    let b = daemon(POLICY, &shop_check(&bad)).await;
    let (ua, ub) = (base(&a), base(&b));

    let out = cli_async(&[
        "deploy",
        "--service",
        "shop",
        "--version",
        "6.0.0",
        "--wait",
        "--timeout",
        "30s",
        "--url",
        &ua,
        "--url",
        &ub,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(out.code, Some(FAIL), "{out}");
    let id = out.stdout.trim_end().to_string();
    assert!(is_generated_id(&id, "shop", "6.0.0"), "{out}");
    // The same id at both; the report says who said what.
    for d in [&a, &b] {
        let (status, body) = d.get(&format!("/api/v1/deployments/{id}")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(out.stderr.contains(&format!("{ub}: fail")), "{out}");
    assert!(out.stderr.contains(&format!("  {ua}: ")), "{out}");

    // Both healthy: pass only once both have passed.
    bad.set_mode(Mode::Healthy);
    let out = cli_async(&[
        "deploy",
        "--service",
        "shop",
        "--version",
        "6.0.1",
        "--wait",
        "--timeout",
        "30s",
        "--url",
        &format!("{ua},{ub}"),
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(
        out.code,
        Some(OK),
        "{out}\nA:\n{}\nB:\n{}",
        a.stderr(),
        b.stderr()
    );
    assert!(out.stderr.contains(&format!("{ua}: pass")), "{out}");
    assert!(out.stderr.contains(&format!("{ub}: pass")), "{out}");

    // One daemon down: fail closed, or go on with the other one when told to.
    let dead = dead_url();
    let args = |version: &'static str| {
        vec![
            "deploy".to_string(),
            "--service".into(),
            "shop".into(),
            "--version".into(),
            version.into(),
            "--wait".into(),
            "--timeout".into(),
            "30s".into(),
            "--url".into(),
            ua.clone(),
            "--url".into(),
            dead.clone(),
            "--token".into(),
            TOKEN.into(),
        ]
    };
    let closed = args("6.0.2");
    let closed: Vec<&str> = closed.iter().map(String::as_str).collect();
    let out = cli_async(&closed).await;
    assert_eq!(out.code, Some(UNAVAILABLE), "{out}");
    assert!(out.stdout.is_empty(), "{out}");

    let mut proceed = args("6.0.3");
    proceed.push("--on-unavailable=proceed".into());
    let proceed: Vec<&str> = proceed.iter().map(String::as_str).collect();
    let out = cli_async(&proceed).await;
    assert_eq!(out.code, Some(OK), "{out}");
    assert!(out.stderr.contains(&format!("{ua}: pass")), "{out}");
    assert!(
        out.stderr.contains("WARNING") && out.stderr.contains(&format!("{dead}: UNAVAILABLE")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restart_while_waiting_is_not_a_verdict() {
    let target = Target::start().await;
    let mut d = daemon(POLICY, &shop_check(&target)).await;
    let url = base(&d);
    let waiting = tokio::task::spawn_blocking(move || {
        cli(&[
            "deploy",
            "--service",
            "shop",
            "--version",
            "7.0.0",
            "--id",
            "restart-1",
            "--wait",
            "--timeout",
            "60s",
            "--url",
            &url,
            "--token",
            TOKEN,
        ])
    });
    common::wait_until(
        "restart-1 is registered",
        Duration::from_secs(10),
        async || {
            let (status, body) = d.get("/api/v1/deployments/restart-1").await;
            if status == 200 { Ok(()) } else { Err(body) }
        },
    )
    .await;
    d.kill9_and_restart().await;
    let out = waiting.await.expect("deploy --wait");
    assert_eq!(out.code, Some(OK), "{out}\ndaemon:\n{}", d.stderr());
    assert!(out.stderr.contains("restart-1 (shop 7.0.0): pass"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_dies_while_waiting_fails_closed_after_the_grace() {
    let target = Target::start().await;
    let d = daemon(SLOW_POLICY, &shop_check(&target)).await;
    let url = base(&d);
    let args = move |extra: &'static str| {
        let url = url.clone();
        move || {
            let mut args = vec![
                "deploy",
                "--service",
                "shop",
                "--version",
                "8.0.0",
                "--id",
                "dies-1",
                "--wait",
                "--timeout",
                "5m",
                "--url",
                &url,
                "--token",
                TOKEN,
            ];
            if !extra.is_empty() {
                args.push(extra);
            }
            cli_for(&args, Duration::from_secs(90))
        }
    };
    let closed = tokio::task::spawn_blocking(args(""));
    let proceed = tokio::task::spawn_blocking(args("--on-unavailable=proceed"));
    common::wait_until(
        "dies-1 is registered",
        Duration::from_secs(10),
        async || {
            let (status, body) = d.get("/api/v1/deployments/dies-1").await;
            if status == 200 { Ok(()) } else { Err(body) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let died = Instant::now();
    drop(d); // kills the daemon
    let out = closed.await.expect("deploy --wait");
    let took = died.elapsed();
    assert_eq!(out.code, Some(UNAVAILABLE), "{out}");
    assert!(out.stderr.contains("retrying"), "{out}");
    // The grace (30s) plus at most one backoff step, far from the 5m timeout.
    assert!(
        took >= Duration::from_secs(29) && took < Duration::from_secs(45),
        "took {took:?}: {out}"
    );
    let out = proceed
        .await
        .expect("deploy --wait --on-unavailable=proceed");
    assert_eq!(out.code, Some(OK), "{out}");
    assert!(
        out.stderr
            .contains("counted as PASS (--on-unavailable=proceed)"),
        "{out}"
    );
}
