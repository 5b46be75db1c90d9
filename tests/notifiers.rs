//! Integration tests of the notification receivers (`[[notifier]]`), loaded the way the daemon
//! loads them: a daemon file with `[[notifier]]` tables is written to a temp dir and read with
//! `config::load`; each test then sends sample notifications through `Receiver::send`.
//!
//! - webhook, slack, pagerduty, grafana: a loopback axum server records every request
//!   (method, path, headers, body) and answers as the test says;
//! - email: a real SMTP server (aiosmtpd, `tests/fixtures/smtp_server.py`): plain relay,
//!   STARTTLS + AUTH and implicit TLS with a private CA made here with rcgen;
//! - alertmanager: a real Alertmanager (`/usr/bin/prometheus-alertmanager`) on loopback;
//! - hostile receivers: a server that never answers, error statuses, a refused port;
//! - config errors at `file:line:col`.
//!
//! Nothing but 127.0.0.1 is contacted; every wait is bounded and waits on a condition.

mod common;
mod receivers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bakewatch::config::Config;
use bakewatch::notify::{
    AlertEvent, AlertStatus, DeploymentEvent, DeploymentRef, Event, Notification, Receiver,
    SendError, Sent,
};
use bakewatch::rules::{Comparison, ThresholdSource};
use chrono::{DateTime, SecondsFormat, Utc};
use common::pki::Pki;
use common::{free_port, q, wait_until};
use hmac::{Hmac, Mac};
use receivers::{AlertmanagerProcess, SmtpServer};
use serde_json::{Value, json};
use sha2::Sha256;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Secrets used below: none of them may ever show up in an error message.

const SLACK_TOKEN: &str = "XXslackT0kenSECRETxx";
const ROUTING_KEY: &str = "R0UTINGkeySECRET0123456789abcdef";
const HMAC_SECRET: &str = "hmacSECRETvalue-42";
const HOOK_TOKEN: &str = "hookBearerSECRET-7";
const GRAFANA_TOKEN: &str = "glsa_grafanaSECRET_99";
const SMTP_USER: &str = "bakewatch";
const SMTP_PASSWORD: &str = "Sm7pPassSECRET";

const ALL_SECRETS: &[&str] = &[
    SLACK_TOKEN,
    ROUTING_KEY,
    HMAC_SECRET,
    HOOK_TOKEN,
    GRAFANA_TOKEN,
    SMTP_PASSWORD,
];

fn assert_no_secret(e: &SendError) {
    for s in ALL_SECRETS {
        assert!(
            !e.message.contains(s),
            "error message shows a secret: {:?}",
            e.message
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Loading notifiers.

/// A daemon file (`checks = ["checks/*.toml"]` + `notifiers`) and one check file, in a temp
/// dir that also holds secret files written with [`secret_file`].
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = TempDir::new().expect("temp dir");
        std::fs::create_dir(dir.path().join("checks")).expect("create checks/");
        std::fs::write(
            dir.path().join("checks/probe.toml"),
            "[[check]]\nname = \"probe\"\ntype = \"http\"\nurl = \"http://127.0.0.1:1/\"\n",
        )
        .expect("write the check file");
        Setup { dir }
    }

    /// Writes a secret file and returns `{ file = "…" }` naming it.
    fn secret_file(&self, name: &str, value: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("write a secret file");
        format!("{{ file = {} }}", q(path.to_str().unwrap()))
    }

    fn daemon_path(&self) -> PathBuf {
        self.dir.path().join("bakewatch.toml")
    }

    fn write(&self, notifiers: &str) -> String {
        let text = format!("checks = [\"checks/*.toml\"]\n\n{notifiers}");
        std::fs::write(self.daemon_path(), &text).expect("write the daemon file");
        text
    }

    fn load(&self, notifiers: &str) -> Config {
        self.write(notifiers);
        match bakewatch::config::load(&self.daemon_path()) {
            Ok(c) => c,
            Err(e) => panic!("the config does not load:\n{e}\n--- notifiers ---\n{notifiers}"),
        }
    }

    /// The one notifier of `notifiers`.
    fn receiver(&self, notifiers: &str) -> Arc<Receiver> {
        let config = self.load(notifiers);
        assert_eq!(config.notifiers.len(), 1, "one notifier expected");
        config.notifiers[0].receiver.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Sample notifications.

const LINK: &str = "http://127.0.0.1:9/status";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ms(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

fn deployment() -> DeploymentRef {
    DeploymentRef {
        id: "d-42".into(),
        service: "shop".into(),
        version: "2.0.0".into(),
        environment: "prod".into(),
    }
}

/// `api-error-rate` firing on `api-health` under its post-deploy threshold, during d-42.
fn firing() -> Notification {
    let now = Utc::now();
    let created = ts(now);
    Notification {
        id: format!("api-error-rate:api-health:d-42:firing:{created}"),
        dedup_key: "api-error-rate:api-health:d-42".into(),
        created_at: created,
        link: LINK.into(),
        event: Event::Alert(AlertEvent {
            status: AlertStatus::Firing,
            rule: "api-error-rate".into(),
            check: "api-health".into(),
            service: "shop".into(),
            severity: "critical".into(),
            signal: "failure_ratio".into(),
            value: Some(0.031),
            comparison: Comparison::Above,
            threshold: 0.005,
            threshold_source: ThresholdSource::PostDeploy,
            for_seconds: 30.0,
            window_seconds: 300.0,
            summary: "failure_ratio 0.031 above 0.005 (post-deploy) for 30s".into(),
            starts_at: ts(now - chrono::Duration::seconds(60)),
            ends_at: None,
            deployment: Some(deployment()),
            rollback: true,
        }),
    }
}

/// The same alert, resolved a second ago.
fn resolved() -> Notification {
    let mut n = firing();
    let now = Utc::now();
    n.created_at = ts(now);
    n.id = format!("{}:resolved:{}", n.dedup_key, n.created_at);
    let Event::Alert(a) = &mut n.event else {
        unreachable!()
    };
    a.status = AlertStatus::Resolved;
    a.value = Some(0.001);
    a.summary = "failure_ratio 0.001 no longer above 0.005 (post-deploy)".into();
    a.ends_at = Some(ts(now - chrono::Duration::seconds(1)));
    n
}

fn deployment_event(verdict: bool) -> DeploymentEvent {
    let now = Utc::now();
    DeploymentEvent {
        deployment: deployment(),
        started_at: ts(now - chrono::Duration::minutes(10)),
        verdict: if verdict { "fail" } else { "pending" }.into(),
        decision: if verdict { "rollback" } else { "wait" }.into(),
        reasons: if verdict {
            vec!["api-error-rate fired: failure_ratio 0.031 above 0.005 (post-deploy)".into()]
        } else {
            Vec::new()
        },
        concluded_at: verdict.then(|| ts(now)),
    }
}

fn registered() -> Notification {
    let d = deployment_event(false);
    Notification {
        id: format!("deployment:d-42:registered:{}", d.started_at),
        dedup_key: "deployment:d-42".into(),
        created_at: d.started_at.clone(),
        link: LINK.into(),
        event: Event::DeploymentRegistered(d),
    }
}

fn verdict() -> Notification {
    let d = deployment_event(true);
    Notification {
        id: format!(
            "deployment:d-42:verdict:{}",
            d.concluded_at.as_ref().unwrap()
        ),
        dedup_key: "deployment:d-42".into(),
        created_at: d.concluded_at.clone().unwrap(),
        link: LINK.into(),
        event: Event::Verdict(d),
    }
}

fn alert_of(n: &Notification) -> &AlertEvent {
    match &n.event {
        Event::Alert(a) => a,
        _ => panic!("not an alert"),
    }
}

// ---------------------------------------------------------------------------------------------
// A recording HTTP receiver.

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Recorded {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> (u16, String) + Send + Sync>;

#[derive(Clone)]
struct RecorderState {
    seen: Arc<Mutex<Vec<Recorded>>>,
    responder: Arc<Mutex<Responder>>,
}

/// A loopback HTTP server recording every request; answers with its responder.
struct Recorder {
    addr: SocketAddr,
    state: RecorderState,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(
        responder: impl Fn(&Recorded) -> (u16, String) + Send + Sync + 'static,
    ) -> Recorder {
        let state = RecorderState {
            seen: Arc::new(Mutex::new(Vec::new())),
            responder: Arc::new(Mutex::new(Arc::new(responder))),
        };
        let app = Router::new().fallback(record).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Recorder { addr, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn respond(&self, responder: impl Fn(&Recorded) -> (u16, String) + Send + Sync + 'static) {
        *self.state.responder.lock().unwrap() = Arc::new(responder);
    }

    fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.state.seen.lock().unwrap())
    }

    fn take_one(&self) -> Recorded {
        let mut all = self.take();
        assert_eq!(all.len(), 1, "one request expected: {all:#?}");
        all.remove(0)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(state): State<RecorderState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut hs = BTreeMap::new();
    for (k, v) in &headers {
        hs.insert(
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        );
    }
    let r = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: hs,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let responder = state.responder.lock().unwrap().clone();
    let (status, answer) = responder(&r);
    state.seen.lock().unwrap().push(r);
    (StatusCode::from_u16(status).unwrap(), answer).into_response()
}

fn ok_200(_: &Recorded) -> (u16, String) {
    (200, "ok".into())
}

// ---------------------------------------------------------------------------------------------
// webhook

#[tokio::test]
async fn webhook_posts_the_notification_as_json_with_a_valid_signature() {
    let server = Recorder::start(ok_200).await;
    let s = Setup::new();
    let receiver = s.receiver(&format!(
        "[[notifier]]\nname = \"hooks\"\ntype = \"webhook\"\nurl = {}\n\
         headers = {{ X-Team = \"ops\", Authorization = {} }}\nhmac_secret = {}\n",
        q(server.url("/hook")),
        s.secret_file("hook-token", &format!("Bearer {HOOK_TOKEN}")),
        s.secret_file("hmac", HMAC_SECRET),
    ));
    assert_eq!(receiver.type_name(), "webhook");
    let secrets = receiver.secret_values();
    assert!(secrets.contains(&HMAC_SECRET.to_string()), "{secrets:?}");
    assert!(
        secrets.contains(&format!("Bearer {HOOK_TOKEN}")),
        "{secrets:?}"
    );
    assert!(!format!("{receiver:?}").contains(HMAC_SECRET));

    for n in [firing(), resolved(), registered(), verdict()] {
        let sent = receiver.send(&n, None).await.expect("webhook send");
        assert_eq!(sent, Sent::default());
        let r = server.take_one();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hook");
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-bakewatch-id"), n.id);
        assert_eq!(r.header("x-team"), "ops");
        assert_eq!(r.header("authorization"), format!("Bearer {HOOK_TOKEN}"));
        assert!(r.header("user-agent").starts_with("bakewatch/"));

        // The signature is HMAC-SHA256 of the raw body, recomputed here.
        let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_SECRET.as_bytes()).unwrap();
        mac.update(r.body.as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(r.header("x-bakewatch-signature"), expected);

        // The body is the notification, serialized as is.
        let back: Notification = serde_json::from_str(&r.body).expect("a Notification");
        assert_eq!(back, n);
        let j = r.json();
        assert_eq!(j["id"], json!(n.id));
        assert_eq!(j["dedup_key"], json!(n.dedup_key));
        assert_eq!(j["link"], json!(LINK));
    }

    // Field by field, for the firing alert.
    let n = firing();
    receiver.send(&n, None).await.unwrap();
    let j = server.take_one().json();
    assert_eq!(j["event"], "alert");
    assert_eq!(j["status"], "firing");
    assert_eq!(j["rule"], "api-error-rate");
    assert_eq!(j["check"], "api-health");
    assert_eq!(j["service"], "shop");
    assert_eq!(j["value"], json!(0.031));
    assert_eq!(j["comparison"], "above");
    assert_eq!(j["threshold"], json!(0.005));
    assert_eq!(j["threshold_source"], "post_deploy");
    assert_eq!(j["window_seconds"], json!(300.0));
    assert_eq!(j["deployment"]["version"], "2.0.0");
    assert_eq!(j["ends_at"], Value::Null);

    // A verdict.
    receiver.send(&verdict(), None).await.unwrap();
    let j = server.take_one().json();
    assert_eq!(j["event"], "verdict");
    assert_eq!(j["verdict"], "fail");
    assert_eq!(j["decision"], "rollback");
    assert_eq!(j["deployment"]["id"], "d-42");
}

#[tokio::test]
async fn webhook_without_hmac_sends_no_signature() {
    let server = Recorder::start(ok_200).await;
    let s = Setup::new();
    let receiver = s.receiver(&format!(
        "[[notifier]]\nname = \"hooks\"\ntype = \"webhook\"\nurl = {}\n",
        q(server.url("/in"))
    ));
    let n = registered();
    receiver.send(&n, None).await.unwrap();
    let r = server.take_one();
    assert!(!r.headers.contains_key("x-bakewatch-signature"));
    assert_eq!(r.header("x-bakewatch-id"), n.id);
    assert_eq!(r.json()["event"], "deployment_registered");
    assert!(receiver.secret_values().is_empty());
}

// ---------------------------------------------------------------------------------------------
// slack

#[tokio::test]
async fn slack_posts_a_block_message_and_never_shows_its_url() {
    let server = Recorder::start(ok_200).await;
    let s = Setup::new();
    let hook = server.url(&format!("/services/T000/B000/{SLACK_TOKEN}"));
    let receiver = s.receiver(&format!(
        "[[notifier]]\nname = \"chan\"\ntype = \"slack\"\nurl = {}\n",
        s.secret_file("slack-url", &hook)
    ));
    assert!(receiver.secret_values().contains(&hook));
    assert!(!format!("{receiver:?}").contains(SLACK_TOKEN));

    let n = firing();
    receiver.send(&n, None).await.expect("slack send");
    let r = server.take_one();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/services/T000/B000/{SLACK_TOKEN}"));
    assert_eq!(r.header("content-type"), "application/json");
    let j = r.json();
    let text = j["text"].as_str().unwrap();
    assert!(text.contains(&n.title()), "{text}");
    assert!(text.contains(&alert_of(&n).summary), "{text}");
    let blocks = j["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "section");
    assert!(
        blocks[0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("[FIRING] api-error-rate on api-health (shop)")
    );
    let fields: Vec<String> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap().to_string())
        .collect();
    let all = fields.join("\n");
    for want in [
        "*Check*\napi-health",
        "*Service*\nshop",
        "*Value*\nfailure_ratio = 0.031",
        "*Threshold*\nabove 0.005 (post-deploy)",
        "*Deployment*\nshop 2.0.0 in prod (id d-42)",
    ] {
        assert!(
            fields.iter().any(|f| f == want),
            "no field {want:?} in {all}"
        );
    }
    let last = blocks.last().unwrap().to_string();
    assert!(last.contains(&format!("<{LINK}|")), "{last}");

    receiver.send(&verdict(), None).await.unwrap();
    let j = server.take_one().json();
    let body = j.to_string();
    assert!(
        j["text"]
            .as_str()
            .unwrap()
            .contains("verdict fail (rollback)")
    );
    assert!(body.contains("*Verdict*\\nfail"), "{body}");
    assert!(body.contains("*Decision*\\nrollback"), "{body}");
    assert!(body.contains("api-error-rate fired"), "{body}");

    // Slack's own refusals: final, and without the URL.
    server.respond(|_| (404, "no_service".into()));
    let e = receiver.send(&firing(), None).await.unwrap_err();
    assert!(!e.retry, "{e:?}");
    assert_eq!(e.message, "HTTP 404: no_service");
    assert_no_secret(&e);
}

// ---------------------------------------------------------------------------------------------
// pagerduty

#[tokio::test]
async fn pagerduty_triggers_and_resolves_one_incident_and_sends_change_events() {
    let server = Recorder::start(|_| {
        (
            202,
            r#"{"status":"success","message":"Event processed"}"#.into(),
        )
    })
    .await;
    let s = Setup::new();
    let receiver = s.receiver(&format!(
        "[[notifier]]\nname = \"oncall\"\ntype = \"pagerduty\"\nrouting_key = {}\nurl = {}\n",
        q(ROUTING_KEY),
        q(server.url(""))
    ));
    assert_eq!(receiver.secret_values(), vec![ROUTING_KEY.to_string()]);

    let fire = firing();
    receiver.send(&fire, None).await.expect("trigger");
    let r = server.take_one();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v2/enqueue")
    );
    assert_eq!(r.header("content-type"), "application/json");
    let t = r.json();
    assert_eq!(t["routing_key"], ROUTING_KEY);
    assert_eq!(t["event_action"], "trigger");
    assert_eq!(t["dedup_key"], json!(fire.dedup_key));
    let p = &t["payload"];
    assert!(p["summary"].as_str().unwrap().contains(&fire.title()));
    assert_eq!(p["source"], "bakewatch");
    assert_eq!(p["severity"], "critical");
    assert_eq!(
        ms(p["timestamp"].as_str().unwrap()),
        ms(&alert_of(&fire).starts_at)
    );
    assert_eq!(p["component"], "api-health");
    assert_eq!(p["group"], "shop");
    assert_eq!(p["class"], "failure_ratio");
    let d = &p["custom_details"];
    assert_eq!(d["value"], json!(0.031));
    assert_eq!(d["threshold"], json!(0.005));
    assert_eq!(d["threshold_source"], "post-deploy");
    assert_eq!(d["window_seconds"], json!(300.0));
    assert_eq!(d["deployment"]["version"], "2.0.0");
    assert_eq!(t["links"], json!([{"href": LINK, "text": "bakewatch"}]));

    let res = resolved();
    receiver.send(&res, None).await.expect("resolve");
    let r = server.take_one();
    assert_eq!(r.path, "/v2/enqueue");
    let v = r.json();
    assert_eq!(v["event_action"], "resolve");
    assert_eq!(
        v["dedup_key"], t["dedup_key"],
        "trigger and resolve share dedup_key"
    );
    assert_eq!(v["routing_key"], ROUTING_KEY);

    // Deployment events are Change Events.
    for n in [registered(), verdict()] {
        receiver.send(&n, None).await.expect("change event");
        let r = server.take_one();
        assert_eq!(r.path, "/v2/change/enqueue");
        let c = r.json();
        assert_eq!(c["routing_key"], ROUTING_KEY);
        assert_eq!(c["payload"]["summary"], json!(n.title()));
        assert_eq!(c["payload"]["source"], "bakewatch");
        assert!(c["payload"]["timestamp"].is_string());
        assert_eq!(c["payload"]["custom_details"]["version"], "2.0.0");
        assert_eq!(c["payload"]["custom_details"]["deployment_id"], "d-42");
        assert_eq!(c["links"][0]["href"], LINK);
        assert!(c.get("event_action").is_none());
    }
    let c = {
        receiver.send(&verdict(), None).await.unwrap();
        server.take_one().json()
    };
    assert_eq!(c["payload"]["custom_details"]["verdict"], "fail");
    assert_eq!(c["payload"]["custom_details"]["decision"], "rollback");
}

// ---------------------------------------------------------------------------------------------
// grafana

#[tokio::test]
async fn grafana_marks_a_deployment_and_turns_it_into_a_region_at_the_verdict() {
    let server = Recorder::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/api/annotations") => (200, r#"{"message":"Annotation added","id":17}"#.into()),
        ("PATCH", p) if p.starts_with("/api/annotations/") => {
            (200, r#"{"message":"Annotation patched"}"#.into())
        }
        _ => (404, "not found".into()),
    })
    .await;
    let s = Setup::new();
    let receiver = s.receiver(&format!(
        "[[notifier]]\nname = \"grafana\"\ntype = \"grafana\"\nurl = {}\ntoken = {}\n\
         tags = [\"team-shop\"]\ndashboard_uid = \"deploys\"\n\
         events = [\"deployment_registered\", \"verdict\"]\n",
        q(server.url("")),
        s.secret_file("grafana-token", GRAFANA_TOKEN)
    ));
    assert_eq!(receiver.secret_values(), vec![GRAFANA_TOKEN.to_string()]);

    let reg = registered();
    let sent = receiver.send(&reg, None).await.expect("registration");
    assert_eq!(sent.reference.as_deref(), Some("17"));
    let r = server.take_one();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/annotations")
    );
    assert_eq!(r.header("authorization"), format!("Bearer {GRAFANA_TOKEN}"));
    assert_eq!(r.header("content-type"), "application/json");
    let a = r.json();
    let Event::DeploymentRegistered(d) = &reg.event else {
        unreachable!()
    };
    assert_eq!(a["time"], json!(ms(&d.started_at)));
    assert_eq!(
        a["tags"],
        json!([
            "bakewatch",
            "deployment",
            "shop",
            "prod",
            "2.0.0",
            "team-shop"
        ])
    );
    let text = a["text"].as_str().unwrap();
    assert!(
        text.contains(&reg.title()) && text.contains("d-42"),
        "{text}"
    );
    assert_eq!(a["dashboardUID"], "deploys");
    assert!(a.get("timeEnd").is_none());

    // The verdict, with the registration's reference: the same annotation becomes a region.
    let v = verdict();
    let sent = receiver.send(&v, Some("17")).await.expect("verdict");
    assert_eq!(sent.reference.as_deref(), Some("17"));
    let r = server.take_one();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("PATCH", "/api/annotations/17")
    );
    let p = r.json();
    let Event::Verdict(d) = &v.event else {
        unreachable!()
    };
    assert_eq!(p["time"], json!(ms(&d.started_at)));
    assert_eq!(p["timeEnd"], json!(ms(d.concluded_at.as_ref().unwrap())));
    let tags = p["tags"].as_array().unwrap();
    assert!(tags.contains(&json!("verdict:fail")), "{tags:?}");
    assert!(tags.contains(&json!("bakewatch")), "{tags:?}");
    assert!(p["text"].as_str().unwrap().contains("verdict fail"));

    // Without a reference: a new region.
    let sent = receiver
        .send(&v, None)
        .await
        .expect("verdict without reference");
    assert_eq!(sent.reference.as_deref(), Some("17"));
    let r = server.take_one();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/annotations")
    );
    assert_eq!(
        r.json()["timeEnd"],
        json!(ms(d.concluded_at.as_ref().unwrap()))
    );

    // Alerts are not annotations.
    assert_eq!(receiver.send(&firing(), None).await, Ok(Sent::default()));
    assert!(server.take().is_empty());
}

// ---------------------------------------------------------------------------------------------
// email, against a real SMTP server

fn email_notifier(smtp: &str, extra: &str) -> String {
    format!(
        "[[notifier]]\nname = \"mail\"\ntype = \"email\"\nsmtp = {}\n\
         from = \"bakewatch <bakewatch@example.com>\"\n\
         to = [\"oncall@example.com\", \"Shop Team <shop@example.com>\"]\n{extra}",
        q(smtp)
    )
}

#[tokio::test]
async fn email_plain_relay_delivers_the_firing_and_the_resolved_mail() {
    let server = SmtpServer::start(&[]);
    let s = Setup::new();
    let receiver = s.receiver(&email_notifier(
        &format!("smtp://127.0.0.1:{}", server.port),
        "",
    ));
    assert_eq!(receiver.type_name(), "email");

    let fire = firing();
    let res = resolved();
    receiver.send(&fire, None).await.expect("firing mail");
    receiver.send(&res, None).await.expect("resolved mail");
    let mails = server.wait_mails(2).await;
    assert_eq!(mails.len(), 2);

    let find = |prefix: &str| {
        mails
            .iter()
            .find(|m| m.subject().starts_with(prefix))
            .unwrap_or_else(|| panic!("no mail with subject {prefix:?}"))
    };
    let m = find("[bakewatch] [FIRING]");
    assert_eq!(
        m.subject(),
        "[bakewatch] [FIRING] api-error-rate on api-health (shop)"
    );
    assert_eq!(m.record["mail_from"], "bakewatch@example.com");
    assert_eq!(
        m.record["rcpt_tos"],
        json!(["oncall@example.com", "shop@example.com"])
    );
    assert_eq!(m.record["tls"], false);
    assert!(m.header("from").unwrap().contains("bakewatch@example.com"));
    let to = m.header("to").unwrap();
    assert!(
        to.contains("oncall@example.com") && to.contains("shop@example.com"),
        "{to}"
    );
    assert_eq!(
        m.header("x-bakewatch-dedup-key"),
        Some(fire.dedup_key.as_str())
    );
    assert!(m.header("message-id").is_some());
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let body = &m.body;
    for want in [
        "is firing",
        "Status:",
        "firing",
        "Rule:",
        "api-error-rate (severity critical)",
        "Check:",
        "api-health",
        "Service:",
        "shop",
        "failure_ratio = 0.031",
        "above 0.005",
        "post-deploy threshold",
        "For:",
        "30s",
        "Window:",
        "5m",
        "shop 2.0.0 in prod (id d-42)",
        LINK,
    ] {
        assert!(
            body.contains(want),
            "no {want:?} in the firing mail:\n{body}"
        );
    }
    assert!(body.contains(&alert_of(&fire).starts_at), "{body}");
    assert!(!body.contains("Resolved:"), "{body}");

    let m = find("[bakewatch] [RESOLVED]");
    assert_eq!(
        m.header("x-bakewatch-dedup-key"),
        Some(fire.dedup_key.as_str())
    );
    let body = &m.body;
    for want in [
        "has resolved",
        "resolved",
        "api-health",
        "failure_ratio = 0.001",
        "above 0.005",
        "post-deploy",
        "5m",
        "2.0.0",
        LINK,
    ] {
        assert!(
            body.contains(want),
            "no {want:?} in the resolved mail:\n{body}"
        );
    }
    let ended = alert_of(&res).ends_at.clone().unwrap();
    assert!(
        body.contains("Resolved:") && body.contains(&ended),
        "{body}"
    );
}

#[tokio::test]
async fn email_starttls_with_auth_and_a_private_ca() {
    let pki = Pki::new();
    let server = SmtpServer::start(&[
        "--tls",
        "starttls",
        "--cert",
        &pki.path("server.pem"),
        "--key",
        &pki.path("server.key"),
        "--username",
        SMTP_USER,
        "--password",
        SMTP_PASSWORD,
    ]);
    let s = Setup::new();
    let receiver = s.receiver(&email_notifier(
        &format!("smtp://127.0.0.1:{}?tls=required", server.port),
        &format!(
            "username = {}\npassword = {}\nca_file = {}\nsubject_prefix = \"[deploys] \"\n",
            q(SMTP_USER),
            s.secret_file("smtp-password", SMTP_PASSWORD),
            q(pki.path("ca.pem"))
        ),
    ));
    assert_eq!(receiver.secret_values(), vec![SMTP_PASSWORD.to_string()]);
    assert!(!format!("{receiver:?}").contains(SMTP_PASSWORD));

    let v = verdict();
    receiver
        .send(&v, None)
        .await
        .expect("verdict mail over STARTTLS");
    let mails = server.wait_mails(1).await;
    let m = &mails[0];
    assert_eq!(m.record["tls"], true, "STARTTLS was used");
    assert_eq!(m.record["authenticated"], true, "AUTH was used");
    assert_eq!(m.subject(), "[deploys] shop 2.0.0: verdict fail (rollback)");
    assert_eq!(m.header("x-bakewatch-dedup-key"), Some("deployment:d-42"));
    for want in [
        "concluded: verdict fail, decision rollback",
        "Service:",
        "shop",
        "Version:",
        "2.0.0",
        "Environment:",
        "prod",
        "Deployment:",
        "d-42",
        "Verdict:",
        "fail",
        "Decision:",
        "rollback",
        "- api-error-rate fired: failure_ratio 0.031 above 0.005 (post-deploy)",
        LINK,
    ] {
        assert!(m.body.contains(want), "no {want:?} in:\n{}", m.body);
    }
}

#[tokio::test]
async fn email_implicit_tls_with_a_private_ca() {
    let pki = Pki::new();
    let server = SmtpServer::start(&[
        "--tls",
        "implicit",
        "--cert",
        &pki.path("server.pem"),
        "--key",
        &pki.path("server.key"),
    ]);
    let s = Setup::new();
    let receiver = s.receiver(&email_notifier(
        &format!("smtps://127.0.0.1:{}", server.port),
        &format!("ca_file = {}\n", q(pki.path("ca.pem"))),
    ));
    let reg = registered();
    receiver.send(&reg, None).await.expect("mail over smtps");
    let mails = server.wait_mails(1).await;
    let m = &mails[0];
    assert_eq!(m.record["tls"], true);
    assert_eq!(m.subject(), "[bakewatch] shop 2.0.0 deployed to prod");
    assert!(m.body.contains("was registered"), "{}", m.body);
    assert!(m.body.contains("pending"), "{}", m.body);
}

#[tokio::test]
async fn email_with_a_wrong_password_is_rejected_without_showing_it() {
    let pki = Pki::new();
    let server = SmtpServer::start(&[
        "--tls",
        "starttls",
        "--cert",
        &pki.path("server.pem"),
        "--key",
        &pki.path("server.key"),
        "--username",
        SMTP_USER,
        "--password",
        "the-right-one",
    ]);
    let s = Setup::new();
    let receiver = s.receiver(&email_notifier(
        &format!("smtp://127.0.0.1:{}?tls=required", server.port),
        &format!(
            "username = {}\npassword = {}\nca_file = {}\n",
            q(SMTP_USER),
            q(SMTP_PASSWORD),
            q(pki.path("ca.pem"))
        ),
    ));
    let e = receiver.send(&firing(), None).await.unwrap_err();
    assert!(!e.retry, "535 is permanent: {e:?}");
    assert!(e.message.contains("535"), "{e:?}");
    assert_no_secret(&e);
    assert!(!e.message.contains("the-right-one"));
    assert!(server.mails().is_empty());
}

#[tokio::test]
async fn email_without_the_private_ca_does_not_trust_the_server() {
    let pki = Pki::new();
    let server = SmtpServer::start(&[
        "--tls",
        "implicit",
        "--cert",
        &pki.path("server.pem"),
        "--key",
        &pki.path("server.key"),
    ]);
    let s = Setup::new();
    let receiver = s.receiver(&email_notifier(
        &format!("smtps://127.0.0.1:{}", server.port),
        "",
    ));
    let e = receiver.send(&firing(), None).await.unwrap_err();
    assert!(e.retry, "{e:?}");
    assert!(
        e.message.to_ascii_lowercase().contains("certificate")
            || e.message.to_ascii_lowercase().contains("tls"),
        "{e:?}"
    );
    assert!(server.mails().is_empty());
}

// ---------------------------------------------------------------------------------------------
// alertmanager, against a real Alertmanager

#[tokio::test]
async fn alertmanager_receives_the_alert_and_its_resolution() {
    let am = AlertmanagerProcess::start().await;
    let s = Setup::new();
    let config = s.load(&format!(
        "[[notifier]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = {}\nresend = \"30s\"\n",
        q(am.url(""))
    ));
    let receiver = config.notifiers[0].receiver.clone();
    assert_eq!(receiver.resend(), Some(Duration::from_secs(30)));
    assert!(receiver.secret_values().is_empty());

    let fire = firing();
    receiver
        .send(&fire, None)
        .await
        .expect("POST the firing alert");
    let alert = wait_until(
        "Alertmanager lists the alert as active",
        Duration::from_secs(20),
        async || {
            let alerts = am.alerts().await;
            alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == "api-error-rate")
                .filter(|a| a["status"]["state"] == "active")
                .cloned()
                .ok_or_else(|| format!("{alerts:?}"))
        },
    )
    .await;
    assert_eq!(
        alert["labels"],
        json!({
            "alertname": "api-error-rate",
            "check": "api-health",
            "service": "shop",
            "severity": "critical",
            "source": "bakewatch",
        })
    );
    let ann = &alert["annotations"];
    assert_eq!(ann["summary"], json!(alert_of(&fire).summary));
    assert_eq!(ann["value"], "0.031");
    assert_eq!(ann["threshold"], "above 0.005 (post-deploy)");
    assert_eq!(ann["deployment_id"], "d-42");
    assert_eq!(ann["deployment_version"], "2.0.0");
    let description = ann["description"].as_str().unwrap();
    assert!(
        description.contains("failure_ratio = 0.031"),
        "{description}"
    );
    assert_eq!(alert["generatorURL"], LINK);
    let starts = alert["startsAt"].as_str().unwrap();
    assert_eq!(ms(starts), ms(&alert_of(&fire).starts_at));
    // endsAt: four `resend`s after it was sent, so Alertmanager resolves it by itself.
    let ends = alert["endsAt"].as_str().unwrap();
    assert_eq!(ms(ends) - ms(&fire.created_at), 4 * 30_000, "{ends}");

    // Deployment events are not for Alertmanager.
    assert_eq!(
        receiver.send(&registered(), None).await,
        Ok(Sent::default())
    );

    // Resolved (endsAt in the past): Alertmanager's API no longer lists it (v2 leaves out
    // alerts whose endsAt has passed).
    let res = resolved();
    receiver
        .send(&res, None)
        .await
        .expect("POST the resolved alert");
    wait_until(
        "the alert is no longer active",
        Duration::from_secs(20),
        async || {
            let alerts = am.alerts().await;
            let active: Vec<&Value> = alerts
                .iter()
                .filter(|a| a["labels"]["alertname"] == "api-error-rate")
                .filter(|a| a["status"]["state"] == "active")
                .collect();
            if active.is_empty() {
                Ok(())
            } else {
                Err(format!("{active:?}"))
            }
        },
    )
    .await;
    assert!(am.alerts().await.is_empty(), "only our alert was ever sent");
}

// ---------------------------------------------------------------------------------------------
// Hostile receivers

/// Every receiver type pointed at `base` (an http URL without a trailing slash) and, for
/// email, at `smtp`; `timeout` for all.
fn all_receivers(s: &Setup, base: &str, smtp_port: u16, timeout: &str) -> Vec<Arc<Receiver>> {
    let t = q(timeout);
    let config = s.load(&format!(
        "[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = {hook}\ntimeout = {t}\n\
         hmac_secret = {hmac}\nheaders = {{ Authorization = {auth} }}\n\n\
         [[notifier]]\nname = \"slack\"\ntype = \"slack\"\nurl = {slack}\ntimeout = {t}\n\n\
         [[notifier]]\nname = \"pd\"\ntype = \"pagerduty\"\nrouting_key = {rk}\nurl = {base_q}\ntimeout = {t}\n\n\
         [[notifier]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = {base_q}\ntimeout = {t}\n\n\
         [[notifier]]\nname = \"grafana\"\ntype = \"grafana\"\nurl = {base_q}\ntoken = {gt}\ntimeout = {t}\n\
         events = [\"deployment_registered\", \"verdict\"]\n\n\
         [[notifier]]\nname = \"mail\"\ntype = \"email\"\nsmtp = {smtp}\nusername = \"u\"\n\
         password = {pw}\nfrom = \"b@example.com\"\nto = [\"o@example.com\"]\ntimeout = {t}\n",
        hook = q(format!("{base}/hook")),
        hmac = s.secret_file("hmac", HMAC_SECRET),
        auth = s.secret_file("auth", HOOK_TOKEN),
        slack = s.secret_file("slack", &format!("{base}/services/T0/B0/{SLACK_TOKEN}")),
        rk = s.secret_file("rk", ROUTING_KEY),
        base_q = q(base),
        gt = s.secret_file("gt", GRAFANA_TOKEN),
        smtp = q(format!("smtp://127.0.0.1:{smtp_port}")),
        pw = s.secret_file("pw", SMTP_PASSWORD),
    ));
    config
        .notifiers
        .iter()
        .map(|n| n.receiver.clone())
        .collect()
}

/// A notification each receiver type actually sends (Grafana takes deployment events only).
fn sample_for(r: &Receiver) -> Notification {
    if r.type_name() == "grafana" {
        registered()
    } else {
        firing()
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_a_retryable_timeout() {
    // Accepts connections and keeps them open without a byte (no HTTP answer, no SMTP
    // greeting).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let s = Setup::new();
    let receivers = all_receivers(&s, &format!("http://{addr}"), addr.port(), "500ms");
    assert_eq!(receivers.len(), 6);
    for r in &receivers {
        let start = Instant::now();
        let e = r.send(&sample_for(r), None).await.unwrap_err();
        let took = start.elapsed();
        assert!(e.retry, "{}: {e:?}", r.type_name());
        if r.type_name() != "email" {
            assert_eq!(e.message, "no answer within 500ms", "{}", r.type_name());
        }
        assert!(
            took < Duration::from_secs(5),
            "{} took {took:?} with a 500ms timeout",
            r.type_name()
        );
        assert_no_secret(&e);
    }
    hold.abort();
}

#[tokio::test]
async fn error_statuses_are_retried_or_rejected() {
    // Answers with the status the test sets; the body echoes what a careless receiver might:
    // the path (Slack's token), the Authorization header and any routing key.
    let status = Arc::new(Mutex::new(500u16));
    let st = status.clone();
    let server = Recorder::start(move |r| {
        let routing_key = serde_json::from_str::<Value>(&r.body)
            .ok()
            .and_then(|j| j["routing_key"].as_str().map(str::to_string))
            .unwrap_or_default();
        let auth = r.headers.get("authorization").cloned().unwrap_or_default();
        (
            *st.lock().unwrap(),
            format!("{} {auth} {routing_key}", r.path),
        )
    })
    .await;
    let s = Setup::new();
    let receivers: Vec<Arc<Receiver>> = all_receivers(&s, &server.url(""), free_port(), "5s")
        .into_iter()
        .filter(|r| r.type_name() != "email")
        .collect();
    assert_eq!(receivers.len(), 5);
    for (code, retry) in [
        (500, true),
        (503, true),
        (429, true),
        (408, true),
        (400, false),
        (403, false),
        (404, false),
    ] {
        *status.lock().unwrap() = code;
        for r in &receivers {
            let e = r.send(&sample_for(r), None).await.unwrap_err();
            assert_eq!(e.retry, retry, "{} answered {code}: {e:?}", r.type_name());
            assert!(
                e.message.starts_with(&format!("HTTP {code}")),
                "{}: {e:?}",
                r.type_name()
            );
            assert_no_secret(&e);
        }
    }
    // And 2xx is success for every one of them.
    server.respond(|_| (204, String::new()));
    for r in &receivers {
        r.send(&sample_for(r), None)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", r.type_name()));
    }
}

#[tokio::test]
async fn a_refused_port_is_retryable() {
    let port = free_port();
    let s = Setup::new();
    let receivers = all_receivers(&s, &format!("http://127.0.0.1:{port}"), port, "5s");
    assert_eq!(receivers.len(), 6);
    for r in &receivers {
        let e = r.send(&sample_for(r), None).await.unwrap_err();
        assert!(e.retry, "{}: {e:?}", r.type_name());
        assert_no_secret(&e);
        assert!(
            !e.message.contains("/services/"),
            "{}: the Slack URL shows: {e:?}",
            r.type_name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Config errors

/// Loads `notifiers` and returns the diagnostics as `line:col: message` (file name checked).
fn diagnostics(s: &Setup, notifiers: &str) -> Vec<String> {
    s.write(notifiers);
    let err = match bakewatch::config::load(&s.daemon_path()) {
        Ok(_) => panic!("the config loads, but should not:\n{notifiers}"),
        Err(e) => e,
    };
    let text = err.to_string();
    let file = s.daemon_path().display().to_string();
    text.lines()
        .map(|l| {
            l.strip_prefix(&format!("{file}:"))
                .unwrap_or_else(|| panic!("not in the daemon file: {l}"))
                .to_string()
        })
        .collect()
}

/// `line:col` of the first occurrence of `needle` in the daemon file as written.
fn position(text: &str, needle: &str) -> String {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the file"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{col}")
}

fn has(diags: &[String], at: &str, fragment: &str) {
    assert!(
        diags
            .iter()
            .any(|d| d.starts_with(&format!("{at}: ")) && d.contains(fragment)),
        "no diagnostic at {at} containing {fragment:?} in:\n{}",
        diags.join("\n")
    );
}

#[test]
fn bad_notifier_configs_are_reported_at_their_keys() {
    let s = Setup::new();
    let notifiers = "\
[[notifier]]
name = \"hook\"
type = \"webhook\"
url = \"not a url\"
hmac_secret = 42

[[notifier]]
name = \"mail\"
type = \"email\"
smtp = \"smtp://mail.example.com:587?tls=sometimes\"
from = \"bakewatch@example.com\"
to = [\"oncall@example.com\", \"not an address\"]
smtp_host = \"mail.example.com\"

[[notifier]]
name = \"mail2\"
type = \"email\"
smtp = \"smtps://user:HUNTER2pass@mail.example.com\"
from = \"nobody\"

[[notifier]]
name = \"chat\"
type = \"slack\"
url = \"hooks.slack.com/services/T0/B0/SLACKSECRETLITERAL\"

[[notifier]]
name = \"pd\"
type = \"pagerduty\"
routing_key = \"\"
url = \"ftp://events.example.com\"

[[notifier]]
name = \"am\"
type = \"alertmanager\"
url = \"http://127.0.0.1:9093\"
resend = \"soon\"

[[notifier]]
name = \"grafana\"
type = \"grafana\"
url = \"http://127.0.0.1:3000\"
tags = [\"ok\", 7]
";
    let text = format!("checks = [\"checks/*.toml\"]\n\n{notifiers}");
    let diags = diagnostics(&s, notifiers);
    let all = diags.join("\n");

    // One bad value does not hide the next: every problem is reported, each at its value.
    has(
        &diags,
        &position(&text, "\"not a url\""),
        "url: \"not a url\" is not a URL",
    );
    has(&diags, &position(&text, "42"), "hmac_secret");
    has(
        &diags,
        &position(&text, "\"smtp://mail.example.com:587?tls=sometimes\""),
        "smtp: tls=",
    );
    has(
        &diags,
        &position(&text, "\"not an address\""),
        "to: \"not an address\" is not an email address",
    );
    has(
        &diags,
        &position(&text, "smtp_host"),
        "unknown key `smtp_host` in notifier `mail`",
    );
    has(
        &diags,
        &position(&text, "\"smtps://user:"),
        "smtp: put credentials in `username` and `password`",
    );
    has(
        &diags,
        &position(&text, "\"nobody\""),
        "from: \"nobody\" is not an email address",
    );
    has(
        &diags,
        &position(&text, "\"hooks.slack.com"),
        "url: the URL is not a URL",
    );
    has(
        &diags,
        &position(&text, "\"\"\nurl = \"ftp"),
        "routing_key: is empty",
    );
    has(
        &diags,
        &position(&text, "\"ftp://events.example.com\""),
        "url: scheme \"ftp\" is not http or https",
    );
    has(
        &diags,
        &position(&text, "\"soon\""),
        "resend: invalid duration",
    );
    has(&diags, &position(&text, "7]"), "expected a string");
    // `to` is missing from mail2: reported at the notifier's table.
    assert!(
        all.contains("notifier `mail2` is missing required key `to`"),
        "{all}"
    );
    // Secrets written as literals are not echoed back.
    assert!(!all.contains("HUNTER2pass"), "{all}");
    assert!(!all.contains("SLACKSECRETLITERAL"), "{all}");
}

#[test]
fn email_config_rules() {
    let s = Setup::new();
    let notifiers = "\
[[notifier]]
name = \"clear\"
type = \"email\"
smtp = \"smtp://mail.example.com:25\"
username = \"u\"
password = \"p4ss\"
from = \"b@example.com\"
to = []

[[notifier]]
name = \"half\"
type = \"email\"
smtp = \"smtp://127.0.0.1:25\"
username = \"u\"
from = \"b@example.com\"
to = [\"o@example.com\"]
ca_file = \"/nonexistent/ca.pem\"

[[notifier]]
name = \"hook\"
type = \"webhook\"
url = \"http://127.0.0.1:1/\"
headers = { X-Bakewatch-Signature = \"forged\" }
tls = { ca_file = \"/nonexistent/ca.pem\" }
";
    let text = format!("checks = [\"checks/*.toml\"]\n\n{notifiers}");
    let diags = diagnostics(&s, notifiers);
    has(
        &diags,
        &position(&text, "\"smtp://mail.example.com:25\""),
        "clear text",
    );
    has(
        &diags,
        &position(&text, "[]"),
        "to: give at least one address",
    );
    has(
        &diags,
        &position(&text, "\"u\"\nfrom = \"b@example.com\"\nto = [\"o@"),
        "username: needs `password` too",
    );
    has(
        &diags,
        &position(&text, "\"/nonexistent/ca.pem\""),
        "ca_file: cannot read",
    );
    has(
        &diags,
        &position(&text, "\"/nonexistent/ca.pem\""),
        "does not use TLS",
    );
    has(
        &diags,
        &position(&text, "{ X-Bakewatch"),
        "is set by bakewatch itself",
    );
    let all = diags.join("\n");
    assert!(all.contains("cannot read /nonexistent/ca.pem"), "{all}");
    assert!(!all.contains("p4ss"), "{all}");
}

#[test]
fn receivers_load_outside_a_runtime() {
    // `bakewatch validate` loads the config without a Tokio runtime: no receiver may need one.
    let s = Setup::new();
    let config = s.load(
        "[[notifier]]\nname = \"mail\"\ntype = \"email\"\nsmtp = \"smtps://mail.example.com\"\n\
         username = \"u\"\npassword = \"p\"\nfrom = \"b@example.com\"\nto = [\"o@example.com\"]\n\n\
         [[notifier]]\nname = \"pd\"\ntype = \"pagerduty\"\nrouting_key = \"k\"\n\n\
         [[notifier]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n",
    );
    let kinds: Vec<&str> = config
        .notifiers
        .iter()
        .map(|n| n.receiver.type_name())
        .collect();
    assert_eq!(kinds, ["email", "pagerduty", "alertmanager"]);
    assert_eq!(
        config.notifiers[2].receiver.resend(),
        Some(Duration::from_secs(60))
    );
    assert_eq!(config.notifiers[0].receiver.resend(), None);
}
