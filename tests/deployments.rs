//! Deployments and verdicts end to end: the real daemon binary, real loopback targets, the
//! registration API with its bad inputs, verdicts that pass, fail and stay inconclusive,
//! long-polling, the gate, supersede and cancel, and `kill -9` durability.

mod common;
mod shop;

use std::time::{Duration, Instant};

use common::{Daemon, Mode, Target, http_client};
use serde_json::{Value, json};

const TOKEN: &str = "deploy-token-8f3a2c";

/// A fast post-deploy policy so verdicts conclude within seconds.
const POLICY: &str = "[scheduler]\njitter = \"0s\"\n\n[deploy]\nwindow = \"1m\"\ninterval = \"100ms\"\nmin_duration = \"1500ms\"\nmax_duration = \"6s\"\nbaseline = \"10m\"\ncritical_failures = 2\n";

fn shop_check(target: &Target) -> String {
    format!(
        "[[check]]\nname = \"shop-health\"\nservice = \"shop\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"200ms\"\ntimeout = \"2s\"\ncritical = true\n",
        target.url("/health")
    )
}

async fn start(checks: &str) -> Daemon {
    Daemon::start_full(
        &format!("token = \"{TOKEN}\""),
        POLICY,
        &[("shop.toml", checks)],
    )
    .await
}

async fn post(d: &Daemon, path: &str, token: Option<&str>, body: &str) -> (u16, Value, String) {
    let mut req = http_client()
        .post(d.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("POST");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, v, ct)
}

async fn register(d: &Daemon, body: Value) -> Value {
    let (status, v, _) = post(d, "/api/v1/deployments", Some(TOKEN), &body.to_string()).await;
    assert_eq!(status, 201, "{v}");
    v
}

/// Long-polls the verdict until it is concluded (bounded).
async fn concluded(d: &Daemon, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = d
            .get_json(&format!("/api/v1/deployments/{id}/verdict?wait=2s"))
            .await;
        if v["phase"] == "concluded" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no verdict within {within:?}: {v}\n{}",
            d.stderr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_deploy_passes_and_the_api_shows_it() {
    let target = Target::start().await;
    let d = start(&shop_check(&target)).await;
    let v = register(
        &d,
        json!({"id": "shop-2.0.0-1", "service": "shop", "version": "2.0.0", "environment": "prod"}),
    )
    .await;
    assert_eq!(v["id"], "shop-2.0.0-1");
    assert_eq!(v["verdict"]["verdict"], "pending");
    assert!(v["baseline"]["shop-health"].is_object(), "{v}");

    // Idempotent on id: the same body → 200, a different body → 409.
    let same =
        json!({"id": "shop-2.0.0-1", "service": "shop", "version": "2.0.0", "environment": "prod"});
    let (status, _, _) = post(&d, "/api/v1/deployments", Some(TOKEN), &same.to_string()).await;
    assert_eq!(status, 200);
    let other =
        json!({"id": "shop-2.0.0-1", "service": "shop", "version": "2.0.1", "environment": "prod"});
    let (status, body, ct) = post(&d, "/api/v1/deployments", Some(TOKEN), &other.to_string()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(ct, "application/problem+json");

    // Inside the window the check runs on the post-deploy cadence.
    let metric = d
        .wait_metric(
            "bakewatch_deployment_window_active",
            &[("service", "shop")],
            Duration::from_secs(5),
            |v| v == 1.0,
        )
        .await;
    assert_eq!(metric, 1.0);

    let verdict = concluded(&d, "shop-2.0.0-1", Duration::from_secs(15)).await;
    assert_eq!(verdict["verdict"], "pass", "{verdict}");
    assert_eq!(verdict["decision"], "proceed");
    assert_eq!(verdict["service"], "shop");
    assert!(verdict["revision"].as_u64().unwrap() >= 2);
    assert!(
        verdict["checks"][0]["runs"].as_u64().unwrap() >= 3,
        "{verdict}"
    );

    let (status, _) = d.get("/api/v1/deployments/shop-2.0.0-1/gate").await;
    assert_eq!(status, 200);
    let list = d.get_json("/api/v1/deployments?service=shop&limit=5").await;
    assert_eq!(list["deployments"][0]["id"], "shop-2.0.0-1");
    let record = d.get_json("/api/v1/deployments/shop-2.0.0-1").await;
    assert_eq!(record["verdict"]["verdict"], "pass");

    let metrics = d.metrics().await;
    assert!(metrics.contains(r#"bakewatch_deployment_info{environment="prod",id="shop-2.0.0-1",service="shop",version="2.0.0"} 1"#), "{metrics}");
    assert!(
        metrics.contains(r#"bakewatch_verdict{service="shop",verdict="pass"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_that_breaks_a_critical_check_fails_fast() {
    let target = Target::start().await;
    let d = start(&shop_check(&target)).await;
    register(
        &d,
        json!({"id": "bad-1", "service": "shop", "version": "2.1.0"}),
    )
    .await;
    let broke = Instant::now();
    target.set_mode(Mode::Status(500));
    let verdict = concluded(&d, "bad-1", Duration::from_secs(10)).await;
    let took = broke.elapsed();
    assert_eq!(verdict["verdict"], "fail", "{verdict}");
    assert_eq!(verdict["decision"], "rollback");
    assert_eq!(
        verdict["reasons"][0]["code"], "CRITICAL_CHECK_FAILED",
        "{verdict}"
    );
    assert_eq!(verdict["reasons"][0]["check"], "shop-health");
    assert!(
        verdict["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{verdict}"
    );
    // critical_failures × deploy.interval plus a run and the long-poll slack; generous.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let (status, _) = d.get("/api/v1/deployments/bad-1/gate").await;
    assert_eq!(status, 503);
    // Concluded verdicts are immutable: the target recovering changes nothing.
    target.set_mode(Mode::Healthy);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = d.get_json("/api/v1/deployments/bad-1/verdict").await;
    assert_eq!(again["verdict"], "fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_checks_only_error_is_inconclusive() {
    // A Prometheus that is not there: every run is an `error`, never evidence.
    let port = common::free_port();
    let checks = format!(
        "[[check]]\nname = \"shop-errors\"\nservice = \"shop\"\ntype = \"prometheus\"\nurl = \"http://127.0.0.1:{port}\"\nquery = \"up\"\ninterval = \"200ms\"\ntimeout = \"1s\"\n"
    );
    let d = start(&checks).await;
    register(
        &d,
        json!({"id": "err-1", "service": "shop", "version": "3.0.0"}),
    )
    .await;
    let verdict = concluded(&d, "err-1", Duration::from_secs(15)).await;
    assert_eq!(verdict["verdict"], "inconclusive", "{verdict}");
    assert_eq!(verdict["decision"], "hold");
    assert_ne!(verdict["evaluation_health"], "ok", "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_that_slows_the_service_fails_by_regression() {
    let target = Target::start_in(Mode::Slow(100)).await;
    let check = format!(
        "[[check]]\nname = \"shop-latency\"\nservice = \"shop\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"50ms\"\ntimeout = \"2s\"\n",
        target.url("/health")
    );
    // The regression check needs 20 runs on each side: give the verdict time to see them.
    let policy = POLICY
        .replace("min_duration = \"1500ms\"", "min_duration = \"10s\"")
        .replace("max_duration = \"6s\"", "max_duration = \"20s\"");
    let d = Daemon::start_full(
        &format!("token = \"{TOKEN}\""),
        &policy,
        &[("shop.toml", &check)],
    )
    .await;
    // Enough pre-deploy runs for the baseline (the regression check needs 20).
    d.wait_check(
        "shop-latency",
        "has 25 runs",
        Duration::from_secs(10),
        |v| v["stats"]["runs"].as_u64().unwrap_or(0) >= 25,
    )
    .await;
    register(
        &d,
        json!({"id": "slow-1", "service": "shop", "version": "4.0.0"}),
    )
    .await;
    target.set_mode(Mode::Slow(260));
    let verdict = concluded(&d, "slow-1", Duration::from_secs(25)).await;
    assert_eq!(verdict["verdict"], "fail", "{verdict}");
    assert_eq!(
        verdict["reasons"][0]["code"], "BASELINE_REGRESSION",
        "{verdict}"
    );
    let row = &verdict["checks"][0];
    assert!(
        row["latency_p95_ms"].as_f64().unwrap() > 2.0 * row["baseline_p95_ms"].as_f64().unwrap(),
        "{verdict}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_problems() {
    let target = Target::start().await;
    let d = start(&shop_check(&target)).await;
    let good = json!({"service": "shop", "version": "1"}).to_string();
    let cases: Vec<(&str, Option<&str>, String, u16)> = vec![
        ("no token", None, good.clone(), 401),
        ("wrong token", Some("nope"), good.clone(), 401),
        (
            "malformed JSON",
            Some(TOKEN),
            "{\"service\": ".to_string(),
            400,
        ),
        (
            "unknown field",
            Some(TOKEN),
            json!({"service": "shop", "version": "1", "colour": "red"}).to_string(),
            422,
        ),
        (
            "missing version",
            Some(TOKEN),
            json!({"service": "shop"}).to_string(),
            422,
        ),
        (
            "unknown service",
            Some(TOKEN),
            json!({"service": "nope", "version": "1"}).to_string(),
            422,
        ),
        (
            "bad id",
            Some(TOKEN),
            json!({"id": "a b", "service": "shop", "version": "1"}).to_string(),
            422,
        ),
        (
            "huge body",
            Some(TOKEN),
            format!(
                "{{\"service\":\"shop\",\"version\":\"{}\"}}",
                "x".repeat(100 * 1024)
            ),
            413,
        ),
    ];
    for (what, token, body, want) in cases {
        let (status, v, ct) = post(&d, "/api/v1/deployments", token, &body).await;
        assert_eq!(status, want, "{what}: {v}");
        if status != 413 {
            assert_eq!(ct, "application/problem+json", "{what}");
            assert!(
                v["detail"].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: {v}"
            );
        }
    }
    for path in [
        "/api/v1/deployments/nope",
        "/api/v1/deployments/nope/verdict",
        "/api/v1/deployments/nope/gate",
    ] {
        let (status, _) = d.get(path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, _) = post(&d, "/api/v1/deployments/nope/cancel", Some(TOKEN), "").await;
    assert_eq!(status, 404);
    let (status, _) = d.get("/api/v1/deployments/x/verdict?wait=forever").await;
    assert_eq!(status, 400);
    // The token never shows up anywhere the daemon answers or logs.
    assert!(!d.stderr().contains(TOKEN));
    assert!(!d.metrics().await.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supersede_and_cancel() {
    let target = Target::start().await;
    let d = start(&shop_check(&target)).await;
    register(
        &d,
        json!({"id": "a", "service": "shop", "version": "1", "environment": "prod"}),
    )
    .await;
    register(
        &d,
        json!({"id": "b", "service": "shop", "version": "2", "environment": "prod"}),
    )
    .await;
    let a = d.get_json("/api/v1/deployments/a/verdict").await;
    assert_eq!(a["verdict"], "superseded", "{a}");
    let (status, v, _) = post(&d, "/api/v1/deployments/b/cancel", None, "").await;
    assert_eq!(status, 401, "{v}");
    let (status, v, _) = post(&d, "/api/v1/deployments/b/cancel", Some(TOKEN), "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["verdict"]["verdict"], "cancelled");
    // Cancelling a concluded verdict other than by cancel is refused.
    let (status, v, _) = post(&d, "/api/v1/deployments/a/cancel", Some(TOKEN), "").await;
    assert_eq!(status, 409, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_registered_is_lost_to_kill_9() {
    let target = Target::start().await;
    let mut d = start(&shop_check(&target)).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = format!("k9-{i}");
        // Each registration answered 201 must survive the kill right after it.
        register(&d, json!({"id": id, "service": "shop", "version": format!("1.{i}"), "environment": format!("env{i}")})).await;
        ids.push(id);
        d.kill9_and_restart().await;
        for id in &ids {
            let (status, body) = d.get(&format!("/api/v1/deployments/{id}")).await;
            assert_eq!(status, 200, "{id} lost after kill -9 #{i}: {body}");
        }
    }
    // The last one is still verified after all those restarts, and concludes.
    let verdict = concluded(&d, "k9-19", Duration::from_secs(15)).await;
    assert_eq!(verdict["verdict"], "pass", "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_long_polls_and_stops_promptly() {
    let target = Target::start().await;
    let mut d = start(&shop_check(&target)).await;
    register(&d, json!({"id": "lp-1", "service": "shop", "version": "1"})).await;
    let url = d.url("/api/v1/deployments/lp-1/verdict?wait=100s");
    let poll = tokio::spawn(async move {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await;
        r.map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    d.sigterm();
    let status = d.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}\n{}", d.stderr());
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?}",
        sent.elapsed()
    );
    // The waiter got an answer (the verdict as it stood), not a hang.
    let answered = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("poll ended")
        .unwrap();
    assert_eq!(answered.ok(), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_that_breaks_a_critical_journey_fails_and_names_the_step() {
    let shop = shop::Shop::start("pw-for-the-deploy-test").await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw-for-the-deploy-test\n").unwrap();
    let journey = format!(
        r#"[[check]]
name = "checkout-journey"
service = "shop"
type = "journey"
critical = true
base_url = "{base}"
interval = "200ms"
timeout = "3s"
secrets = {{ pw = {{ file = '{pw}' }} }}

[[check.step]]
name = "login"
method = "POST"
path = "/login"
json = {{ username = "smoke", password = "{{{{ secret.pw }}}}" }}
capture = {{ token = {{ jsonpath = "$.token", secret = true }} }}
expect = [ {{ status = 200 }} ]

[[check.step]]
name = "search"
path = "/search?q=laptop"
headers = {{ authorization = "Bearer {{{{ token }}}}" }}
expect = [ {{ status = 200 }} ]
"#,
        base = shop.base_url(),
        pw = pw.display()
    );
    let d = start(&journey).await;
    d.wait_check("checkout-journey", "passes", Duration::from_secs(10), |v| {
        v["status"] == "pass"
    })
    .await;
    register(
        &d,
        json!({"id": "journey-1", "service": "shop", "version": "5.0.0"}),
    )
    .await;
    let broke = Instant::now();
    shop.set_broken(shop::Endpoint::Login, true);
    let verdict = concluded(&d, "journey-1", Duration::from_secs(10)).await;
    assert_eq!(verdict["verdict"], "fail", "{verdict}");
    let reason = &verdict["reasons"][0];
    assert_eq!(reason["code"], "CRITICAL_CHECK_FAILED", "{verdict}");
    assert_eq!(reason["check"], "checkout-journey");
    assert_eq!(reason["step"], "login", "{verdict}");
    assert!(
        reason["message"].as_str().unwrap().contains("500"),
        "{verdict}"
    );
    // critical_failures (2) × the 100 ms post-deploy interval plus a run: well within this.
    assert!(
        broke.elapsed() < Duration::from_secs(5),
        "took {:?}",
        broke.elapsed()
    );
    // The password and the captured token appear nowhere in the verdict.
    let text = verdict.to_string();
    assert!(!text.contains("pw-for-the-deploy-test"));
    for token in shop.tokens() {
        assert!(!text.contains(&token));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_version_check_proves_the_new_version_serves() {
    // The target answers {"version": "1.2.3"} whatever is registered.
    let target = Target::start().await;
    let checks = format!(
        "[[check]]\nname = \"shop-version\"\nservice = \"shop\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"200ms\"\ntimeout = \"2s\"\ncritical = true\nexpect = [ {{ jsonpath = \"$.version\", eq = \"{{{{ deployment.version }}}}\" }} ]\n",
        target.url("/health")
    );
    let mut d = start(&checks).await;

    // Before any deployment the version assertion is skipped, and the API says so.
    let v = d
        .wait_check("shop-version", "has run", Duration::from_secs(10), |v| {
            v["last_outcome"]["status"] == "pass"
        })
        .await;
    assert_eq!(
        v["last_outcome"]["skipped_assertions"][0],
        "jsonpath $.version eq \"{{ deployment.version }}\"",
        "{v}"
    );

    // The version that serves is the one registered: pass.
    register(
        &d,
        json!({"id": "v-good", "service": "shop", "version": "1.2.3"}),
    )
    .await;
    let verdict = concluded(&d, "v-good", Duration::from_secs(15)).await;
    assert_eq!(verdict["verdict"], "pass", "{verdict}");

    // A deploy that never reached the servers: the old version still answers → fail fast.
    register(
        &d,
        json!({"id": "v-stale", "service": "shop", "version": "2.0.0"}),
    )
    .await;
    let verdict = concluded(&d, "v-stale", Duration::from_secs(10)).await;
    assert_eq!(verdict["verdict"], "fail", "{verdict}");
    assert_eq!(verdict["reasons"][0]["code"], "CRITICAL_CHECK_FAILED");
    let message = verdict["reasons"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("expected eq \"2.0.0\", got \"1.2.3\""),
        "{verdict}"
    );

    // After kill -9 the checks still name the latest deployment (from the store).
    d.kill9_and_restart().await;
    let v = d
        .wait_check(
            "shop-version",
            "fails against 2.0.0",
            Duration::from_secs(10),
            |v| v["last_outcome"]["status"] == "fail",
        )
        .await;
    assert!(
        v["last_outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("\"2.0.0\""),
        "{v}"
    );
}
