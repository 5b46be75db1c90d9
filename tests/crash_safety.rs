//! Crash safety (issue 8): `kill -9` at random points while deployments are being registered
//! and verified and while notifications wait in the outbox (the receiver down part of the
//! time), then proof that nothing was lost:
//!
//! - every deployment the API acknowledged (201, or 200 when a client retries a registration
//!   whose answer the kill swallowed, as `bakewatch deploy` does) is in the list and at its id;
//! - every one concludes (pass / fail / inconclusive, or superseded / cancelled as the rules
//!   say), and a verdict seen concluded never changes afterwards;
//! - every acknowledged deployment produced its `deployment_registered` webhook, and every one
//!   concluded pass / fail / inconclusive its `verdict` webhook, saying that verdict (at least
//!   once: duplicates are allowed, matched by `dedup_key`);
//! - every alert seen firing produced a firing webhook, and every alert episode notified as
//!   firing was notified as resolved after the target recovered;
//! - the outbox drains (`bakewatch_notification_queue_depth` 0) and nothing was dropped.
//!
//! The kill points are random: the delays (0–40 ms or 0–400 ms after a registration starts, and
//! 0–1.2 s of running between rounds) come from a seeded generator whose seed is printed;
//! `BAKEWATCH_CRASH_SEED=<seed>` replays the same choices (the daemon's own timing still varies).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use common::{Daemon, Inbox, Mode, Target, http_client, metric_sum, try_wait_until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TOKEN: &str = "crash-token-3b7e91";

/// Kill–restart rounds.
const ITERATIONS: usize = 24;

/// The longest random delay between starting a registration and the `kill -9`.
const MAX_KILL_DELAY_MS: u64 = 400;

/// The longest the daemon runs between a restart and the next round.
const MAX_DWELL_MS: u64 = 1200;

fn checks(target: &Target) -> String {
    format!(
        r#"
[[check]]
name = "shop-health"
service = "shop"
type = "http"
url = "{url}"
interval = "100ms"
timeout = "1s"
critical = true

[[rule]]
name = "shop-down"
check = "shop-health"
signal = "consecutive_failures"
over = "30s"
above = 2
severity = "critical"
notify = ["hook"]
"#,
        url = target.url("/health")
    )
}

/// A fast verdict policy, a fast outbox retry, and one webhook for alerts and deployments.
fn daemon_extra(inbox: &Inbox) -> String {
    format!(
        r#"[scheduler]
jitter = "0s"

[deploy]
window = "3s"
interval = "100ms"
min_duration = "1500ms"
max_duration = "8s"
baseline = "1m"
critical_failures = 2

[notifications]
retry_initial = "100ms"
retry_max = "500ms"

[[notifier]]
name = "hook"
type = "webhook"
url = "{url}"
events = ["deployment_registered", "verdict"]
"#,
        url = inbox.url()
    )
}

/// The seed: `BAKEWATCH_CRASH_SEED` when set, otherwise from the clock.
fn seed() -> u64 {
    match std::env::var("BAKEWATCH_CRASH_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("BAKEWATCH_CRASH_SEED={s:?} is not a u64")),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64,
    }
}

fn ms_of(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{v} is no time")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
        .timestamp_millis()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// POSTs a registration; `Ok(status)` when the daemon answered, `Err` when the connection
/// broke (the kill) or was refused (the daemon was down).
async fn post_registration(url: String, body: Value) -> Result<u16, String> {
    let r = http_client()
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    // The body must arrive too: a 201 whose body the kill cut is still an acknowledgement,
    // but a test client cannot tell the difference from a broken one, so keep it simple.
    let _ = r.text().await;
    Ok(status)
}

/// Every deployment the daemon lists, by id.
async fn listed(d: &Daemon) -> BTreeMap<String, Value> {
    let v = d
        .get_json("/api/v1/deployments?service=shop&limit=500")
        .await;
    v["deployments"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|dep| (dep["id"].as_str().expect("an id").to_string(), dep.clone()))
        .collect()
}

/// What must never change about a concluded verdict.
fn conclusion(dep: &Value) -> Value {
    let v = &dep["verdict"];
    json!({
        "verdict": v["verdict"],
        "decision": v["decision"],
        "concluded_at": v["concluded_at"],
        "reasons": v["reasons"].as_array().map(|rs| rs.iter().map(|r| r["code"].clone()).collect::<Vec<_>>()),
    })
}

fn is_concluded(dep: &Value) -> bool {
    dep["verdict"]["verdict"] != "pending"
}

/// Remembers each concluded verdict the first time it is seen, and fails if it ever differs.
fn check_immutable(
    seen: &mut BTreeMap<String, Value>,
    now: &BTreeMap<String, Value>,
    when: &str,
    seed: u64,
) {
    for (id, dep) in now {
        if !is_concluded(dep) {
            assert!(
                !seen.contains_key(id),
                "{id} was concluded ({}) and is pending again {when} (seed {seed})",
                seen[id]
            );
            continue;
        }
        let c = conclusion(dep);
        match seen.get(id) {
            Some(before) => assert_eq!(
                before, &c,
                "the verdict of {id} changed {when} (seed {seed})"
            ),
            None => {
                seen.insert(id.clone(), c);
            }
        }
    }
}

/// The webhooks of `event` for deployment `id`.
fn deployment_hooks<'a>(got: &'a [Value], event: &str, id: &str) -> Vec<&'a Value> {
    got.iter()
        .filter(|n| n["event"] == event && n["deployment"]["id"] == id)
        .collect()
}

/// The alert notifications received, grouped by `dedup_key`, in the order they arrived.
fn alert_episodes(got: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut out: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for n in got.iter().filter(|n| n["event"] == "alert") {
        out.entry(n["dedup_key"].as_str().expect("a dedup_key").to_string())
            .or_default()
            .push(n);
    }
    out
}

/// Why the alert notifications are not complete yet: a dedup key whose last notification is
/// not a resolve (firing with no resolve after it), or an observed firing with no webhook.
fn alerts_incomplete(got: &[Value], fired: &BTreeSet<(String, String, i64)>) -> Option<String> {
    for (key, ns) in alert_episodes(got) {
        let last = ns.last().expect("non-empty");
        if last["status"] != "resolved" {
            return Some(format!(
                "alert {key}: the last notification is {} ({} in all)",
                last["status"],
                ns.len()
            ));
        }
    }
    for (rule, check, fired_at) in fired {
        let notified = got.iter().any(|n| {
            n["event"] == "alert"
                && n["status"] == "firing"
                && n["rule"] == rule.as_str()
                && n["check"] == check.as_str()
                && ms_of(&n["created_at"]) >= *fired_at
        });
        if !notified {
            return Some(format!(
                "alert {rule} on {check} was firing (fired_at {fired_at} ms) and no firing webhook came"
            ));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_to_kill_9_at_random_points() {
    let seed = seed();
    eprintln!(
        "crash_safety: seed {seed} (replay with BAKEWATCH_CRASH_SEED={seed} cargo test --test crash_safety)"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let target = Target::start().await;
    let mut inbox = Inbox::closed();
    inbox.open().await;
    let mut inbox_open = true;
    let mut d = Daemon::start_full(
        &format!("token = \"{TOKEN}\""),
        &daemon_extra(&inbox),
        &[("shop.toml", &checks(&target))],
    )
    .await;

    let mut failing = false;
    // Acknowledged registrations: id → how (first answer, or on retry).
    let mut acked: BTreeMap<String, &'static str> = BTreeMap::new();
    // Concluded verdicts as first seen.
    let mut verdicts: BTreeMap<String, Value> = BTreeMap::new();
    // Alert episodes seen firing through the API: (rule, check, fired_at in ms), once old
    // enough to have been queued (the API shows a state a moment before its notification is
    // committed).
    let mut fired: BTreeSet<(String, String, i64)> = BTreeSet::new();
    let mut cancelled = BTreeSet::new();
    let (mut kills_closed, mut swallowed) = (0, 0);
    let envs = ["prod", "staging", "canary"];

    for i in 0..ITERATIONS {
        // The world changes: the service breaks or recovers, the receiver goes down or up.
        if rng.random_bool(0.35) {
            failing = !failing;
            target.set_mode(if failing {
                Mode::Status(500)
            } else {
                Mode::Healthy
            });
        }
        if rng.random_bool(0.35) {
            if inbox_open {
                inbox.close();
            } else {
                inbox.open().await;
            }
            inbox_open = !inbox_open;
        }
        // Sometimes an operator cancels the previous deployment (409 once it concluded).
        if i > 0 && rng.random_bool(0.15) {
            let prev = format!("crash-{}", i - 1);
            if acked.contains_key(&prev) {
                let a = d
                    .post_empty(&format!("/api/v1/deployments/{prev}/cancel"), Some(TOKEN))
                    .await;
                assert!(
                    a.status == 200 || a.status == 409,
                    "cancel {prev}: {a:?} (seed {seed})"
                );
                if a.status == 200 {
                    cancelled.insert(prev);
                }
            }
        }

        // What the API says now, before the next crash.
        let before = listed(&d).await;
        check_immutable(&mut verdicts, &before, &format!("before kill #{i}"), seed);
        let alerts = d.get_json("/api/v1/alerts").await;
        for a in alerts["alerts"].as_array().expect("a list") {
            if a["state"] == "firing" && a["fired_at"].is_string() {
                let at = ms_of(&a["fired_at"]);
                if now_ms() - at > 1000 {
                    fired.insert((
                        a["rule"].as_str().unwrap().to_string(),
                        a["check"].as_str().unwrap().to_string(),
                        at,
                    ));
                }
            }
        }

        // A registration in flight, and a kill -9 at a random moment around it.
        let id = format!("crash-{i}");
        let body = json!({
            "id": id,
            "service": "shop",
            "version": format!("1.{i}.0"),
            "environment": envs[rng.random_range(0..envs.len())],
        });
        // Half of the kills aim at the registration itself (it takes milliseconds), the
        // others anywhere in the 400 ms after it.
        let delay = if rng.random_bool(0.5) {
            rng.random_range(0..=40)
        } else {
            rng.random_range(0..=MAX_KILL_DELAY_MS)
        };
        let registration = tokio::spawn(post_registration(
            d.url("/api/v1/deployments"),
            body.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if !inbox_open {
            kills_closed += 1;
        }
        d.kill9_and_restart().await;
        match registration.await.expect("the registration task") {
            Ok(201) => {
                acked.insert(id.clone(), "201");
            }
            Ok(other) => panic!("registering {id}: HTTP {other} (seed {seed})"),
            Err(_) => {
                // The kill swallowed the answer: a client retries the same body (what
                // `bakewatch deploy` does), and the answer says whether it had been stored.
                swallowed += 1;
                let again = post_registration(d.url("/api/v1/deployments"), body.clone())
                    .await
                    .unwrap_or_else(|e| panic!("retrying {id}: {e} (seed {seed})"));
                match again {
                    201 => acked.insert(id.clone(), "201 on retry"),
                    200 => acked.insert(id.clone(), "200 on retry (stored before the kill)"),
                    other => panic!("retrying {id}: HTTP {other} (seed {seed})"),
                };
            }
        }

        // Nothing acknowledged is lost, nothing concluded changed.
        let after = listed(&d).await;
        for id in acked.keys() {
            assert!(
                after.contains_key(id),
                "{id} ({}) is missing after kill #{i} (seed {seed}); listed: {:?}\n{}",
                acked[id],
                after.keys().collect::<Vec<_>>(),
                d.stderr()
            );
        }
        check_immutable(&mut verdicts, &after, &format!("after kill #{i}"), seed);

        // The daemon runs a while before the next kill: verdicts conclude, alerts fire or
        // resolve, notifications go out or wait.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..=MAX_DWELL_MS))).await;
    }

    // Everything settles with the service healthy and the receiver up.
    target.set_mode(Mode::Healthy);
    if !inbox_open {
        inbox.open().await;
    }
    let all = common::wait_until(
        "every deployment concludes",
        Duration::from_secs(30),
        async || {
            let now = listed(&d).await;
            let pending: Vec<&String> = now
                .iter()
                .filter(|(_, dep)| !is_concluded(dep))
                .map(|(id, _)| id)
                .collect();
            if pending.is_empty() {
                Ok(now)
            } else {
                Err(format!("still pending: {pending:?}"))
            }
        },
    )
    .await;
    check_immutable(&mut verdicts, &all, "at the end", seed);

    // Only registrations that were made exist (the ids are ours).
    for id in all.keys() {
        assert!(
            acked.contains_key(id),
            "{id} exists but was never acknowledged (seed {seed})"
        );
    }
    let mut by_verdict: BTreeMap<String, usize> = BTreeMap::new();
    for (id, how) in &acked {
        let dep = d.get_json(&format!("/api/v1/deployments/{id}")).await;
        assert_eq!(dep["id"], id.as_str(), "{dep}");
        let v = dep["verdict"]["verdict"].as_str().unwrap().to_string();
        assert!(
            ["pass", "fail", "inconclusive", "superseded", "cancelled"].contains(&v.as_str()),
            "{id} ({how}) ended {v}: {dep} (seed {seed})"
        );
        if v == "cancelled" {
            assert!(
                cancelled.contains(id),
                "{id} is cancelled, nobody cancelled it"
            );
        }
        *by_verdict.entry(v).or_default() += 1;
    }

    // The notifications: registered for every acknowledged deployment, the verdict for every
    // one that concluded by verdict, every alert episode resolved, the outbox empty.
    let want_verdict: BTreeMap<&String, &str> = all
        .iter()
        .filter_map(|(id, dep)| {
            let v = dep["verdict"]["verdict"].as_str().unwrap();
            ["pass", "fail", "inconclusive"]
                .contains(&v)
                .then_some((id, v))
        })
        .collect();
    let settled = try_wait_until(Duration::from_secs(40), async || {
        let got = inbox.received();
        for id in acked.keys() {
            if deployment_hooks(&got, "deployment_registered", id).is_empty() {
                return Err(format!("no deployment_registered webhook for {id}"));
            }
        }
        for id in want_verdict.keys() {
            if deployment_hooks(&got, "verdict", id).is_empty() {
                return Err(format!("no verdict webhook for {id}"));
            }
        }
        let alerts = d.get_json("/api/v1/alerts").await;
        if alerts["alerts"].as_array().is_some_and(|a| !a.is_empty()) {
            return Err(format!("alerts still active: {alerts}"));
        }
        if let Some(why) = alerts_incomplete(&got, &fired) {
            return Err(why);
        }
        let metrics = d.metrics().await;
        let depth = metric_sum(&metrics, "bakewatch_notification_queue_depth", &[]);
        if depth != 0.0 {
            return Err(format!("{depth} notification(s) still queued"));
        }
        Ok(got)
    })
    .await;
    let got = match settled {
        Ok(got) => got,
        Err(last) => panic!(
            "notifications were lost (seed {seed}): {last}\nacknowledged: {acked:#?}\nreceived: {:#?}\ndaemon stderr:\n{}",
            inbox.received(),
            d.stderr()
        ),
    };

    // Every verdict notification says the verdict the API settled on: a verdict is told once
    // and never contradicted.
    for (id, v) in &want_verdict {
        for n in deployment_hooks(&got, "verdict", id) {
            assert_eq!(
                n["verdict"], *v,
                "the verdict webhook of {id} disagrees with its stored verdict (seed {seed}): {n:#}"
            );
        }
    }
    // No deployment event for a deployment that does not exist.
    for n in got.iter().filter(|n| n["event"] != "alert") {
        let id = n["deployment"]["id"].as_str().unwrap_or_default();
        assert!(all.contains_key(id), "a webhook for unknown {id}: {n:#}");
        assert_eq!(n["dedup_key"], format!("deployment:{id}"), "{n:#}");
    }
    // Nothing was dropped: not by this process (the metric), nor by any before it (the log,
    // which every restart appends to).
    let metrics = d.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "bakewatch_notifications_total",
            &[("result", "dropped")]
        ),
        0.0,
        "(seed {seed})"
    );
    let log = d.stderr();
    assert!(
        !log.contains("notification dropped") && !log.contains("; dropped"),
        "a notification was dropped (seed {seed}):\n{log}"
    );

    let ids: BTreeSet<&str> = got.iter().filter_map(|n| n["id"].as_str()).collect();
    let episodes = alert_episodes(&got);
    eprintln!(
        "crash_safety: seed {seed}: {ITERATIONS} kills ({kills_closed} with the receiver down), \
         {} acknowledged ({swallowed} answers swallowed by the kill and retried), verdicts \
         {by_verdict:?}, {} cancelled; {} webhooks received ({} distinct ids, {} duplicates), \
         {} alert dedup keys, {} alert episodes seen firing via the API",
        acked.len(),
        cancelled.len(),
        got.len(),
        ids.len(),
        got.len() - ids.len(),
        episodes.len(),
        fired.len(),
    );
}
