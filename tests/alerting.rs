//! Alerting end to end (DESIGN §8, issue 6): the real daemon binary, real loopback targets and
//! real receivers. Thresholds that tighten inside the post-deploy window and relax after it,
//! `repeat` across a `kill -9`, the `no_data` alert of a starved check, deployment events, and
//! receivers that are down for a while (and a daemon killed with notifications queued) losing
//! nothing.

mod common;
mod receivers;

use std::time::Duration;

use common::{Daemon, Inbox, Mode, Target, free_port, http_client, metric_sum};
use receivers::{AlertmanagerProcess, SmtpServer};
use serde_json::{Value, json};

const TOKEN: &str = "alert-token-5d1e";

/// The alert notifications in `got` of `rule` with `status` (firing / resolved).
fn alerts<'a>(got: &'a [Value], rule: &str, status: &str) -> Vec<&'a Value> {
    got.iter()
        .filter(|n| n["event"] == "alert" && n["rule"] == rule && n["status"] == status)
        .collect()
}

async fn register(d: &Daemon, body: Value) -> Value {
    let r = http_client()
        .post(d.url("/api/v1/deployments"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST /api/v1/deployments");
    assert_eq!(r.status().as_u16(), 201);
    r.json().await.unwrap()
}

/// Waits until `bakewatch_notification_queue_depth{notifier}` satisfies `pred`.
async fn wait_queue(d: &Daemon, notifier: &str, timeout: Duration, pred: impl Fn(f64) -> bool) {
    let labels = [("notifier", notifier)];
    d.wait_metric("bakewatch_notification_queue_depth", &labels, timeout, pred)
        .await;
}

/// Waits until `bakewatch_notifications_total{notifier,result}` satisfies `pred`.
async fn wait_sent(
    d: &Daemon,
    notifier: &str,
    result: &str,
    timeout: Duration,
    pred: impl Fn(f64) -> bool,
) {
    let labels = [("notifier", notifier), ("result", result)];
    d.wait_metric("bakewatch_notifications_total", &labels, timeout, pred)
        .await;
}

fn ms(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_deploy_threshold_fires_inside_the_window_and_relaxes_after_it() {
    // A service failing exactly 1% of the time.
    let target = Target::start_in(Mode::FailEvery(100)).await;
    let mut inbox = Inbox::closed();
    inbox.open().await;
    let checks = format!(
        r#"
[[check]]
name = "api"
service = "shop"
type = "http"
url = "{url}"
interval = "20ms"
timeout = "1s"

[[rule]]
name = "api-errors"
check = "api"
signal = "failure_ratio"
over = "8s"
above = 0.02
for = "1s"
min_samples = 200
post_deploy = {{ above = 0.005, for = "1s" }}
severity = "critical"
notify = ["hook"]
"#,
        url = target.url("/health")
    );
    let daemon_extra = format!(
        "[scheduler]\njitter = \"0s\"\n\n[deploy]\nwindow = \"8s\"\ninterval = \"20ms\"\nmin_duration = \"1s\"\nmax_duration = \"30s\"\n\n[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        inbox.url()
    );
    let d = Daemon::start_full(
        &format!("token = \"{TOKEN}\""),
        &daemon_extra,
        &[("shop.toml", &checks)],
    )
    .await;

    // Steady state: several failures (1%) but never above 2% → nothing fires. With at least
    // 200 runs in `over`, every window holds 2 or 3 failures: 0.0067 … 0.015, so the margins
    // to both thresholds do not depend on how fast this machine runs the checks.
    d.wait_metric(
        "bakewatch_check_runs_total",
        &[("check", "api"), ("status", "fail")],
        Duration::from_secs(30),
        |v| v >= 3.0,
    )
    .await;
    let steady = d.get_json("/api/v1/alerts").await;
    assert_eq!(steady["alerts"], json!([]), "{steady}");
    assert!(inbox.received().is_empty(), "{:?}", inbox.received());

    // A deployment opens the window: the same 1% is above 0.5% → fires within `for`.
    register(
        &d,
        json!({"id": "shop-7", "service": "shop", "version": "7.0.0", "environment": "prod"}),
    )
    .await;
    let got = inbox
        .wait_for("the firing alert", Duration::from_secs(15), |g| {
            !alerts(g, "api-errors", "firing").is_empty()
        })
        .await;
    let firing = alerts(&got, "api-errors", "firing")[0].clone();
    assert_eq!(firing["check"], "api");
    assert_eq!(firing["service"], "shop");
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["signal"], "failure_ratio");
    assert_eq!(firing["threshold"], 0.005);
    assert_eq!(firing["threshold_source"], "post_deploy");
    assert_eq!(firing["comparison"], "above");
    assert_eq!(firing["window_seconds"], 8.0);
    assert_eq!(firing["deployment"]["version"], "7.0.0");
    assert_eq!(firing["deployment"]["id"], "shop-7");
    let value = firing["value"].as_f64().unwrap();
    assert!(value > 0.005 && value <= 0.02, "{firing}");
    assert_eq!(firing["dedup_key"], "api-errors:api:shop-7");
    let link = firing["link"].as_str().unwrap();
    assert_eq!(
        link,
        d.url("/#check-api"),
        "the status page, at the check's row"
    );
    let listed = d.get_json("/api/v1/alerts").await;
    assert_eq!(listed["alerts"][0]["rule"], "api-errors", "{listed}");

    // The window ends (8s): the steady 2% applies again and the alert resolves.
    let got = inbox
        .wait_for("the resolved alert", Duration::from_secs(20), |g| {
            !alerts(g, "api-errors", "resolved").is_empty()
        })
        .await;
    let resolved = alerts(&got, "api-errors", "resolved")[0];
    assert_eq!(resolved["dedup_key"], firing["dedup_key"]);
    assert_eq!(resolved["threshold_source"], "steady");
    assert!(resolved["ends_at"].is_string(), "{resolved}");
    assert_eq!(
        alerts(&got, "api-errors", "firing").len(),
        1,
        "one firing notification without `repeat`: {got:#?}\n{}",
        d.stderr()
    );
    assert_eq!(
        d.metric(
            "bakewatch_notifications_total",
            &[("notifier", "hook"), ("result", "sent")]
        )
        .await,
        Some(got.len() as f64)
    );
}

/// A check that always fails, watched by a rule that fires at once.
fn failing_setup(target: &Target, notify: &str, repeat: &str) -> String {
    format!(
        r#"
[[check]]
name = "pay"
service = "payments"
type = "http"
url = "{url}"
interval = "100ms"
timeout = "1s"

[[rule]]
name = "pay-down"
check = "pay"
signal = "consecutive_failures"
over = "10s"
above = 2
severity = "critical"
notify = [{notify}]
{repeat}
"#,
        url = target.url("/pay")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_repeats_and_a_restart_neither_forgets_it_nor_repeats_it_early() {
    let target = Target::start_in(Mode::Status(500)).await;
    let mut inbox = Inbox::closed();
    inbox.open().await;
    let extra = format!(
        "[scheduler]\njitter = \"0s\"\n\n[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        inbox.url()
    );
    let mut d = Daemon::start_with(
        &extra,
        &[(
            "pay.toml",
            &failing_setup(&target, "\"hook\"", "repeat = \"3s\""),
        )],
    )
    .await;
    let before = inbox
        .wait_for("two firing notifications", Duration::from_secs(20), |g| {
            alerts(g, "pay-down", "firing").len() >= 2
        })
        .await;
    let times: Vec<i64> = alerts(&before, "pay-down", "firing")
        .iter()
        .map(|n| ms(&n["created_at"]))
        .collect();
    assert!(times[1] - times[0] >= 3000, "repeat = 3s: {times:?}");

    d.kill9_and_restart().await;
    // Still firing right after the restart (the state came back from the store) ...
    let listed = d.get_json("/api/v1/alerts").await;
    assert_eq!(listed["alerts"][0]["rule"], "pay-down", "{listed}");
    assert_eq!(listed["alerts"][0]["state"], "firing", "{listed}");
    // ... and the next repeat keeps to the schedule: no earlier than 3s after the last one.
    let n = alerts(&inbox.received(), "pay-down", "firing").len();
    let after = inbox
        .wait_for("the next repeat", Duration::from_secs(20), |g| {
            alerts(g, "pay-down", "firing").len() > n
        })
        .await;
    let firing = alerts(&after, "pay-down", "firing");
    let last_before = ms(&firing[n - 1]["created_at"]);
    let first_after = ms(&firing[n]["created_at"]);
    assert!(
        first_after - last_before >= 3000,
        "re-sent {} ms after the previous one",
        first_after - last_before
    );
    // The same alert instance throughout.
    assert!(
        firing
            .iter()
            .all(|f| f["dedup_key"] == firing[0]["dedup_key"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_receivers_are_down_or_the_daemon_is_killed() {
    let target = Target::start_in(Mode::Status(500)).await;
    // A webhook, a real SMTP server and a real Alertmanager: all down at first.
    let mut inbox = Inbox::closed();
    let (smtp_port, am_port) = (free_port(), free_port());
    let extra = format!(
        r#"[scheduler]
jitter = "0s"

[notifications]
retry_initial = "200ms"
retry_max = "1s"

[[notifier]]
name = "hook"
type = "webhook"
url = "{hook}"

[[notifier]]
name = "mail"
type = "email"
smtp = "smtp://127.0.0.1:{smtp_port}"
from = "bakewatch@example.com"
to = ["oncall@example.com"]

[[notifier]]
name = "am"
type = "alertmanager"
url = "http://127.0.0.1:{am_port}"
"#,
        hook = inbox.url()
    );
    let mut d = Daemon::start_with(
        &extra,
        &[(
            "pay.toml",
            &failing_setup(&target, "\"hook\", \"mail\", \"am\"", ""),
        )],
    )
    .await;
    // The alert fires; every delivery fails and waits in the outbox.
    for n in ["hook", "mail", "am"] {
        wait_sent(&d, n, "failed", Duration::from_secs(20), |v| v >= 2.0).await;
        wait_queue(&d, n, Duration::from_secs(10), |v| v >= 1.0).await;
    }
    // Killed with the notifications queued.
    d.kill9_and_restart().await;
    // The service recovers while the receivers are still down: the resolves queue behind.
    target.set_mode(Mode::Healthy);
    for n in ["hook", "mail", "am"] {
        wait_queue(&d, n, Duration::from_secs(20), |v| v >= 2.0).await;
    }
    // The receivers come back: everything arrives, in order, once each.
    inbox.open().await;
    let smtp = SmtpServer::start_on(smtp_port, &[]);
    let am = AlertmanagerProcess::start_on(am_port).await;
    let got = inbox
        .wait_for("firing and resolved", Duration::from_secs(20), |g| {
            !alerts(g, "pay-down", "resolved").is_empty()
        })
        .await;
    let firing = alerts(&got, "pay-down", "firing");
    let resolved = alerts(&got, "pay-down", "resolved");
    assert_eq!((firing.len(), resolved.len()), (1, 1), "{got:#?}");
    assert_eq!(firing[0]["dedup_key"], resolved[0]["dedup_key"]);

    let mails = smtp.wait_mails(2).await;
    let mut subjects: Vec<&str> = mails.iter().map(|m| m.subject()).collect();
    subjects.sort();
    assert_eq!(mails.len(), 2, "{subjects:?}");
    assert!(
        subjects[0].contains("[FIRING] pay-down on pay"),
        "{subjects:?}"
    );
    assert!(
        subjects[1].contains("[RESOLVED] pay-down on pay"),
        "{subjects:?}"
    );

    // Alertmanager got the firing alert and then its resolution.
    let client = http_client();
    common::wait_until(
        "alertmanager saw firing and resolved",
        Duration::from_secs(20),
        async || {
            let text = client
                .get(am.url("/metrics"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            let firing = metric_sum(
                &text,
                "alertmanager_alerts_received_total",
                &[("status", "firing")],
            );
            let resolved = metric_sum(
                &text,
                "alertmanager_alerts_received_total",
                &[("status", "resolved")],
            );
            match (firing, resolved) {
                (f, r) if f >= 1.0 && r >= 1.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let active: Vec<Value> = am
        .alerts()
        .await
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "pay-down")
        .collect();
    assert!(active.is_empty(), "resolved in Alertmanager: {active:#?}");

    for n in ["hook", "mail", "am"] {
        wait_queue(&d, n, Duration::from_secs(10), |v| v == 0.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_older_than_max_age_is_dropped_and_counted() {
    let target = Target::start_in(Mode::Status(500)).await;
    let inbox = Inbox::closed();
    let extra = format!(
        "[scheduler]\njitter = \"0s\"\n\n[notifications]\nmax_age = \"1s\"\nretry_initial = \"200ms\"\nretry_max = \"400ms\"\n\n[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        inbox.url()
    );
    let d = Daemon::start_with(
        &extra,
        &[("pay.toml", &failing_setup(&target, "\"hook\"", ""))],
    )
    .await;
    wait_sent(&d, "hook", "dropped", Duration::from_secs(20), |v| v >= 1.0).await;
    wait_queue(&d, "hook", Duration::from_secs(10), |v| v == 0.0).await;
    assert!(d.stderr().contains("older than max_age"), "{}", d.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_check_fires_no_data_and_resolves_when_it_runs_again() {
    // One run at a time: a hanging check holds the only permit, the other starves.
    let hang = Target::start_in(Mode::Hang).await;
    let ok = Target::start().await;
    let mut inbox = Inbox::closed();
    inbox.open().await;
    let checks = format!(
        r#"
[[check]]
name = "hog"
type = "http"
url = "{hang}"
interval = "100ms"
timeout = "3s"

[[check]]
name = "starved"
type = "http"
url = "{ok}"
interval = "100ms"
timeout = "500ms"

[[rule]]
name = "starved-errors"
check = "starved"
signal = "failure_ratio"
over = "1m"
above = 0.5
notify = ["hook"]
"#,
        hang = hang.url("/hang"),
        ok = ok.url("/ok")
    );
    let extra = format!(
        "[scheduler]\njitter = \"0s\"\nconcurrency = 1\n\n[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        inbox.url()
    );
    let d = Daemon::start_with(&extra, &[("checks.toml", &checks)]).await;
    let got = inbox
        .wait_for("the no_data alert", Duration::from_secs(20), |g| {
            !alerts(g, "no_data", "firing").is_empty()
        })
        .await;
    let nd = alerts(&got, "no_data", "firing")[0].clone();
    assert_eq!(nd["check"], "starved");
    assert_eq!(nd["signal"], "no_data");
    assert!(
        nd["summary"]
            .as_str()
            .unwrap()
            .contains("started no run since"),
        "{nd}"
    );
    inbox
        .wait_for("no_data resolved", Duration::from_secs(20), |g| {
            !alerts(g, "no_data", "resolved").is_empty()
        })
        .await;
    let _ = d;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_events_reach_the_notifiers_that_subscribed() {
    let target = Target::start().await;
    let mut inbox = Inbox::closed();
    inbox.open().await;
    let mut quiet = Inbox::closed();
    quiet.open().await;
    let checks = format!(
        "[[check]]\nname = \"web\"\nservice = \"web\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\n",
        target.url("/")
    );
    let extra = format!(
        "[scheduler]\njitter = \"0s\"\n\n[deploy]\ninterval = \"100ms\"\nmin_duration = \"1s\"\nmax_duration = \"10s\"\n\n[[notifier]]\nname = \"deploys\"\ntype = \"webhook\"\nurl = \"{}\"\nevents = [\"deployment_registered\", \"verdict\"]\n\n[[notifier]]\nname = \"alerts-only\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        inbox.url(),
        quiet.url()
    );
    let d = Daemon::start_full(
        &format!("token = \"{TOKEN}\""),
        &extra,
        &[("web.toml", &checks)],
    )
    .await;
    register(
        &d,
        json!({"id": "web-3", "service": "web", "version": "3.0.0", "environment": "staging"}),
    )
    .await;
    let got = inbox
        .wait_for("registered and verdict", Duration::from_secs(20), |g| {
            g.iter().any(|n| n["event"] == "verdict")
        })
        .await;
    let events: Vec<&str> = got.iter().map(|n| n["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["deployment_registered", "verdict"], "{got:#?}");
    let reg = &got[0];
    assert_eq!(reg["deployment"]["id"], "web-3");
    assert_eq!(reg["deployment"]["version"], "3.0.0");
    assert_eq!(reg["deployment"]["environment"], "staging");
    assert_eq!(reg["verdict"], "pending");
    assert_eq!(reg["dedup_key"], "deployment:web-3");
    let verdict = &got[1];
    assert_eq!(verdict["verdict"], "pass");
    assert_eq!(verdict["decision"], "proceed");
    assert!(verdict["concluded_at"].is_string());
    assert!(
        verdict["link"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/deployments/web-3"),
        "{verdict}"
    );
    assert!(quiet.received().is_empty(), "{:?}", quiet.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_resolved_false_keeps_a_notifier_out_of_resolves() {
    let target = Target::start_in(Mode::Status(500)).await;
    let mut all = Inbox::closed();
    all.open().await;
    let mut firing_only = Inbox::closed();
    firing_only.open().await;
    let extra = format!(
        "[scheduler]\njitter = \"0s\"\n\n[[notifier]]\nname = \"all\"\ntype = \"webhook\"\nurl = \"{}\"\n\n[[notifier]]\nname = \"firing-only\"\ntype = \"webhook\"\nurl = \"{}\"\nsend_resolved = false\n",
        all.url(),
        firing_only.url()
    );
    let d = Daemon::start_with(
        &extra,
        &[(
            "pay.toml",
            &failing_setup(&target, "\"all\", \"firing-only\"", ""),
        )],
    )
    .await;
    firing_only
        .wait_for("the firing alert", Duration::from_secs(20), |g| {
            !alerts(g, "pay-down", "firing").is_empty()
        })
        .await;
    target.set_mode(Mode::Healthy);
    all.wait_for("the resolve", Duration::from_secs(20), |g| {
        !alerts(g, "pay-down", "resolved").is_empty()
    })
    .await;
    // Both were queued in the same evaluation: once `all` has its resolve, the other
    // notifier's queue is empty too, and it got no resolve.
    wait_queue(&d, "firing-only", Duration::from_secs(10), |v| v == 0.0).await;
    let got = firing_only.received();
    assert_eq!(alerts(&got, "pay-down", "firing").len(), 1, "{got:#?}");
    assert!(alerts(&got, "pay-down", "resolved").is_empty(), "{got:#?}");
}

/// A stand-in Grafana: `POST /api/annotations` answers `{"id": 41}`; every request recorded.
async fn grafana() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>>,
) {
    use axum::http::{Method, Uri};
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>> = Default::default();
    let log = seen.clone();
    let app =
        axum::Router::new().fallback(move |method: Method, uri: Uri, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock()
                    .unwrap()
                    .push((method.to_string(), uri.path().to_string(), v));
                axum::Json(json!({"id": 41, "message": "Annotation added"}))
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grafana_marker_is_created_at_registration_and_closed_by_the_verdict() {
    let target = Target::start().await;
    let (grafana_url, seen) = grafana().await;
    let checks = format!(
        "[[check]]\nname = \"web\"\nservice = \"web\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\n",
        target.url("/")
    );
    let extra = format!(
        "[scheduler]\njitter = \"0s\"\n\n[deploy]\ninterval = \"100ms\"\nmin_duration = \"1s\"\nmax_duration = \"10s\"\n\n[[notifier]]\nname = \"marks\"\ntype = \"grafana\"\nurl = \"{grafana_url}\"\nevents = [\"deployment_registered\", \"verdict\"]\n"
    );
    let mut d = Daemon::start_full(
        &format!("token = \"{TOKEN}\""),
        &extra,
        &[("web.toml", &checks)],
    )
    .await;
    register(
        &d,
        json!({"id": "web-9", "service": "web", "version": "9.0.0"}),
    )
    .await;
    // The annotation id Grafana gave survives a restart (it is in the state file).
    common::wait_until("the marker", Duration::from_secs(20), async || {
        match seen.lock().unwrap().len() {
            0 => Err("nothing yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    d.kill9_and_restart().await;
    common::wait_until("the verdict update", Duration::from_secs(30), async || {
        let n = seen.lock().unwrap().len();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} request(s)"))
        }
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, "POST");
    assert_eq!(seen[0].1, "/api/annotations");
    assert!(
        seen[0].2["text"].as_str().unwrap().contains("9.0.0"),
        "{seen:#?}"
    );
    assert_eq!(seen[1].0, "PATCH", "{seen:#?}");
    assert_eq!(seen[1].1, "/api/annotations/41");
    assert!(seen[1].2["timeEnd"].as_i64().is_some(), "{seen:#?}");
    let tags: Vec<&str> = seen[1].2["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tags.contains(&"verdict:pass"), "{tags:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_a_firing_alert_firing_without_sending_it_again() {
    let target = Target::start_in(Mode::Status(500)).await;
    let mut inbox = Inbox::closed();
    inbox.open().await;
    let extra = format!(
        "[scheduler]\njitter = \"0s\"\n\n[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        inbox.url()
    );
    let setup = failing_setup(&target, "\"hook\"", "repeat = \"1h\"");
    let d = Daemon::start_with(&extra, &[("pay.toml", &setup)]).await;
    inbox
        .wait_for("the firing alert", Duration::from_secs(20), |g| {
            !alerts(g, "pay-down", "firing").is_empty()
        })
        .await;
    // A reload that adds a check and keeps the rule and its check.
    let more = format!(
        "{setup}\n[[check]]\nname = \"extra\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\n",
        target.url("/extra")
    );
    std::fs::write(d.dir.path().join("checks/pay.toml"), more).unwrap();
    d.signal("HUP");
    d.wait_check(
        "extra",
        "has run after the reload",
        Duration::from_secs(20),
        |v| v["last_outcome"]["status"] == "fail",
    )
    .await;
    assert_eq!(
        d.metric("bakewatch_config_last_reload_successful", &[])
            .await,
        Some(1.0)
    );
    // Still firing, same episode, and not sent again (repeat is 1h).
    let listed = d.get_json("/api/v1/alerts").await;
    let pay: Vec<&Value> = listed["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "pay-down")
        .collect();
    assert_eq!(pay.len(), 1, "{listed}");
    assert_eq!(pay[0]["state"], "firing");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = inbox.received();
    assert_eq!(alerts(&got, "pay-down", "firing").len(), 1, "{got:#?}");
}
