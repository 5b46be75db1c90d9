//! Security properties end to end (issue 8):
//!
//! - every mutating endpoint (`POST /api/v1/deployments`, `POST /api/v1/deployments/{id}/cancel`,
//!   `POST /-/reload`) refuses anything but `Authorization: Bearer <the exact token>` with a 401
//!   problem+json and `WWW-Authenticate: Bearer`, and has no effect then;
//! - secrets never show: the daemon runs with every kind of secret the config accepts set to a
//!   distinctive marker (literal, `{ env }`, `{ file }` and `{ credential }` forms), its checks
//!   and notifiers fail against servers that echo what they were sent, and no marker (nor the
//!   base64 of a basic-auth credential carrying one) appears in its logs (human and JSON, at
//!   debug), any API answer, `/metrics`, the status page, the state file, `once` / `validate` /
//!   `deploy` / `verdict` output, config errors, or a failed reload's answer;
//! - TLS certificates are verified by default: an https `http` check, a `tls` check, a webhook,
//!   email over STARTTLS and over implicit TLS, and postgres with a `tls` table all refuse a
//!   loopback server whose certificate comes from a private CA, and accept it given the CA.
//!
//! The database checks use the machine's servers (PostgreSQL 5432 with trust auth, MariaDB
//! 3306, Redis 6379); a missing server is a loud failure, never a skip.

mod common;
mod receivers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bakewatch::checks::{Reason, Status};
use bakewatch::notify::{DeploymentEvent, DeploymentRef, Event, Notification};
use common::pki::Pki;
use common::{BIN, Daemon, POLL, Target, free_port, http_client, q, run_cli_async};
use receivers::SmtpServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Standard base64 with padding (what HTTP basic auth sends).
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Fails loudly unless something listens on 127.0.0.1:`port`.
fn require_server(port: u16, what: &str) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok(),
        "this test needs {what} on 127.0.0.1:{port}; nothing listens there"
    );
}

// ---------------------------------------------------------------------------------------------
// (a) The bearer token on every mutating endpoint

const TOKEN: &str = "Tok3n-for-the-SECURITY-test_42";

/// `Authorization` values that must all be refused (`None`: no header at all).
fn wrong_authorizations() -> Vec<(&'static str, Option<String>)> {
    let flip_last = {
        let mut t = TOKEN.to_string();
        let last = t.pop().unwrap();
        t.push(if last == '2' { '3' } else { '2' });
        t
    };
    vec![
        ("no header", None),
        ("empty header", Some(String::new())),
        ("scheme only", Some("Bearer".into())),
        ("empty token", Some("Bearer ".into())),
        ("a wrong token", Some("Bearer not-the-token".into())),
        ("the token without a scheme", Some(TOKEN.into())),
        (
            "basic scheme, base64",
            Some(format!("Basic {}", base64(TOKEN.as_bytes()))),
        ),
        ("basic scheme, raw", Some(format!("Basic {TOKEN}"))),
        ("another scheme", Some(format!("Token {TOKEN}"))),
        (
            "a prefix of the token",
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        ),
        (
            "the token minus its first byte",
            Some(format!("Bearer {}", &TOKEN[1..])),
        ),
        ("the token extended", Some(format!("Bearer {TOKEN}x"))),
        ("the token twice", Some(format!("Bearer {TOKEN}{TOKEN}"))),
        (
            "upper case",
            Some(format!("Bearer {}", TOKEN.to_uppercase())),
        ),
        (
            "lower case",
            Some(format!("Bearer {}", TOKEN.to_lowercase())),
        ),
        (
            "same length, last byte differs",
            Some(format!("Bearer {flip_last}")),
        ),
    ]
}

/// A daemon's answer to a POST.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    www_authenticate: String,
    body: String,
}

async fn post_with(d: &Daemon, path: &str, auth: Option<&str>, body: &Value) -> Reply {
    let mut req = http_client()
        .post(d.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (status, content_type, www_authenticate) = (
        r.status().as_u16(),
        header("content-type"),
        header("www-authenticate"),
    );
    Reply {
        status,
        content_type,
        www_authenticate,
        body: r.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_endpoint_needs_exactly_the_bearer_token() {
    let target = Target::start().await;
    let check = format!(
        "[[check]]\nname = \"web\"\nservice = \"web\"\ntype = \"http\"\nurl = \"{}\"\ninterval = \"500ms\"\n",
        target.url("/")
    );
    let d = Daemon::start_full(
        &format!("token = {}", q(TOKEN)),
        "[scheduler]\njitter = \"0s\"\n",
        &[("web.toml", &check)],
    )
    .await;
    let right = format!("Bearer {TOKEN}");

    // A pending deployment for the cancel endpoint (the default policy keeps it pending
    // for minutes).
    let a = post_with(
        &d,
        "/api/v1/deployments",
        Some(&right),
        &json!({"id": "web-1", "service": "web", "version": "1"}),
    )
    .await;
    assert_eq!(a.status, 201, "the right token registers: {a:?}");

    let endpoints: [(&str, Value); 3] = [
        (
            "/api/v1/deployments",
            json!({"id": "web-bad", "service": "web", "version": "2"}),
        ),
        ("/api/v1/deployments/web-1/cancel", Value::Null),
        ("/-/reload", Value::Null),
    ];
    let mut refused = 0;
    for (path, body) in &endpoints {
        for (what, auth) in wrong_authorizations() {
            let a = post_with(&d, path, auth.as_deref(), body).await;
            assert_eq!(a.status, 401, "{path} with {what}: {a:?}");
            assert_eq!(
                a.content_type, "application/problem+json",
                "{path} with {what}"
            );
            assert_eq!(
                a.www_authenticate, "Bearer",
                "{path} with {what}: WWW-Authenticate"
            );
            let v: Value = serde_json::from_str(&a.body).unwrap();
            assert_eq!(v["status"], 401, "{path} with {what}: {v}");
            assert!(
                !a.body.contains(TOKEN),
                "{path} with {what} echoes the token"
            );
            refused += 1;
        }
    }
    // The refused requests did nothing.
    let (status, _) = d.get("/api/v1/deployments/web-bad").await;
    assert_eq!(status, 404, "a refused registration registered");
    let v = d.get_json("/api/v1/deployments/web-1/verdict").await;
    assert_eq!(v["verdict"], "pending", "a refused cancel cancelled: {v}");
    assert!(
        !d.stderr().contains("POST /-/reload: reloading"),
        "a refused reload reloaded:\n{}",
        d.stderr()
    );

    // The right token works on each.
    let a = post_with(&d, "/-/reload", Some(&right), &Value::Null).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(d.stderr().contains("POST /-/reload: reloading"));
    assert_eq!(
        serde_json::from_str::<Value>(&a.body).unwrap()["status"],
        "reloaded"
    );
    let a = post_with(
        &d,
        "/api/v1/deployments/web-1/cancel",
        Some(&right),
        &Value::Null,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = post_with(
        &d,
        "/api/v1/deployments",
        Some(&right),
        &json!({"id": "web-bad", "service": "web", "version": "2"}),
    )
    .await;
    assert_eq!(a.status, 201, "{a:?}");
    // Reads stay open.
    assert_eq!(d.get("/api/v1/deployments/web-1").await.0, 200);
    assert_eq!(refused, 3 * wrong_authorizations().len());
    assert!(!d.stderr().contains(TOKEN), "the token is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_token_is_a_config_error_not_an_open_door() {
    // An empty token used to be accepted, and then compared equal to a missing header: every
    // mutating endpoint was open while the daemon believed itself protected.
    let dir = tempfile::tempdir().unwrap();
    let empty_file = dir.path().join("empty-token");
    std::fs::write(&empty_file, "\n").unwrap();
    for (what, token) in [
        ("a literal", "\"\"".to_string()),
        ("blanks", "\"  \"".to_string()),
        (
            "an env variable set to nothing",
            "{ env = \"BW_EMPTY_TOKEN\" }".to_string(),
        ),
        (
            "a file holding a newline",
            format!("{{ file = {} }}", q(empty_file.to_str().unwrap())),
        ),
    ] {
        let config = common::write_config(
            &format!(
                "checks = [\"checks/*.toml\"]\n\n[server]\nlisten = \"127.0.0.1:{}\"\ntoken = {token}\n",
                free_port()
            ),
            &[(
                "c.toml",
                "[[check]]\nname = \"web\"\nservice = \"web\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\n",
            )],
        );
        let path = config.path().join("bakewatch.toml");
        let path = path.to_str().unwrap();
        for command in ["validate", "run"] {
            let out = run_cli_async(
                &[command, "-c", path],
                config.path(),
                &[("BW_EMPTY_TOKEN", "")],
            )
            .await;
            assert_eq!(out.code, Some(1), "{what}, {command}: {out}");
            assert!(
                out.stderr.contains(":5:9: token: is empty"),
                "{what}, {command}: {out}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Secrets never appear

/// Every marker starts with this: any 6 or more characters of a marker in an output are found.
const MARK: &str = "ZQ9MRK";

/// A loopback server that answers with what it was sent, secrets first (it plays a target or a
/// receiver that echoes its request into an error). The first path segment decides:
/// `s<code>`: status `<code>`; `cut<n>`: status 500, `n` filler characters, then the first
/// secret-looking value (to land a secret across a length cut); anything else: 200.
async fn echo_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                echo(method, uri, headers, body)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let lines: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    // Secret-looking fragments first: the authorization header, values carrying a marker,
    // markers inside the body.
    let mut first: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("authorization:") || l.contains(MARK))
        .cloned()
        .collect();
    for (i, _) in body.match_indices(MARK) {
        let end = body[i..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(body.len(), |e| i + e);
        first.push(body[i..end].to_string());
    }
    let segment = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    if let Some(n) = segment
        .strip_prefix("cut")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let secret = lines
            .iter()
            .find_map(|l| l.find(MARK).map(|i| l[i..].to_string()))
            .unwrap_or_default();
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}{secret}", "x".repeat(n)),
        )
            .into_response();
    }
    let status = segment
        .strip_prefix('s')
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let text = format!(
        "ECHO {method} {uri}\n{}\n--\n{}\n\n{body}",
        first.join("\n"),
        lines.join("\n")
    );
    (status, [("content-type", "text/plain")], text).into_response()
}

/// The secrets of the test: (what, marker). Every value starts with [`MARK`].
struct Secrets {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Marker values, by what they are.
    markers: Vec<(String, String)>,
    /// Encoded forms that give a marker away (base64 of `user:password`), by what they are.
    encoded: Vec<(String, String)>,
}

impl Secrets {
    fn new() -> Secrets {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("creds")).unwrap();
        Secrets {
            dir,
            env: Vec::new(),
            markers: Vec::new(),
            encoded: Vec::new(),
        }
    }

    fn marker(&mut self, what: &str) -> String {
        let value = format!("{MARK}{}x7", what.replace(['-', ' ', '_'], ""));
        self.markers.push((what.to_string(), value.clone()));
        value
    }

    /// A literal marker, as TOML.
    fn literal(&mut self, what: &str) -> String {
        q(self.marker(what))
    }

    /// `{ env = "…" }` holding a marker (or `value` around it).
    fn env(&mut self, what: &str, value: impl FnOnce(&str) -> String) -> String {
        let m = self.marker(what);
        let var = format!("BW_SECRET_{}", self.env.len());
        self.env.push((var.clone(), value(&m)));
        format!("{{ env = {} }}", q(var))
    }

    /// `{ file = "…" }` holding a marker (or `value` around it), with a trailing newline.
    fn file(&mut self, what: &str, value: impl FnOnce(&str) -> String) -> String {
        let m = self.marker(what);
        let path = self
            .dir
            .path()
            .join(format!("secret-{}", self.markers.len()));
        std::fs::write(&path, format!("{}\n", value(&m))).unwrap();
        format!("{{ file = {} }}", q(path.to_str().unwrap()))
    }

    /// `{ credential = "…" }` (systemd `LoadCredential=`) holding a marker.
    fn credential(&mut self, what: &str) -> String {
        let m = self.marker(what);
        let name = format!("cred-{}", self.markers.len());
        std::fs::write(self.dir.path().join("creds").join(&name), &m).unwrap();
        format!("{{ credential = {} }}", q(name))
    }

    /// The basic-auth form of `user` and the marker last made.
    fn basic(&mut self, user: &str) {
        let (what, m) = self.markers.last().unwrap().clone();
        self.encoded.push((
            format!("base64 of {what}"),
            base64(format!("{user}:{m}").as_bytes()),
        ));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn all_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push((
            "CREDENTIALS_DIRECTORY".into(),
            self.path("creds").to_str().unwrap().into(),
        ));
        env
    }

    /// Every place in `text` that gives a secret away.
    fn leaks(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, _) in text.match_indices(MARK) {
            let what = self
                .markers
                .iter()
                .find(|(_, m)| text[i..].starts_with(m.as_str()))
                .map_or("part of a marker", |(w, _)| w.as_str());
            out.push(format!("{what}: …{}…", around(text, i, i + MARK.len())));
        }
        for (what, e) in &self.encoded {
            if let Some(i) = text.find(e.as_str()) {
                out.push(format!("{what}: …{}…", around(text, i, i + e.len())));
            }
        }
        out
    }
}

/// `text[from..to]` with up to 60 bytes either side, on character boundaries.
fn around(text: &str, from: usize, to: usize) -> &str {
    let mut a = from.saturating_sub(60);
    while !text.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = (to + 60).min(text.len());
    while !text.is_char_boundary(b) {
        b += 1;
    }
    &text[a..b]
}

/// Checks and notifiers with every kind of secret, against the echo server and the machine's
/// databases. Returns (check file, the daemon file's notifier and policy part).
fn secret_config(s: &mut Secrets, echo: &str, closed_port: u16) -> (String, String) {
    let hdr_file = s.file("http header file", |m| m.to_string());
    let bearer_env = s.env("http bearer env", |m| m.to_string());
    let basic_file = s.file("http basic password file", |m| m.to_string());
    s.basic("bwuser");
    let bearer_lit = s.literal("http bearer literal");
    let hdr_env = s.env("http header env", |m| m.to_string());
    let cut_env = s.env("http header cut", |m| m.to_string());
    let prom_bearer = s.file("prometheus bearer file", |m| m.to_string());
    let prom_basic = s.env("prometheus basic password env", |m| m.to_string());
    s.basic("bwprom");
    let pg_url = s.env("postgres url password env", |m| {
        format!("postgres://bw_no_such_role:{m}@127.0.0.1:5432/test")
    });
    let pg_kv = s.file("postgres key value password file", |m| {
        format!("host=127.0.0.1 port=5432 user=bw_no_such_role password={m} dbname=test")
    });
    let pg_lit = q(format!(
        "postgres://bw_no_such_role:{}@127.0.0.1:5432/test",
        s.marker("postgres url password literal")
    ));
    let my_file = s.file("mysql url password file", |m| {
        format!("mysql://root:{m}@127.0.0.1:3306/test")
    });
    let my_lit = q(format!(
        "mariadb://root:{}@127.0.0.1:3306/test",
        s.marker("mariadb url password literal")
    ));
    let redis_url = s.env("redis url password env", |m| {
        format!("redis://:{m}@127.0.0.1:6379/0")
    });
    let redis_user = s.env("redis username env", |m| m.to_string());
    let redis_pw = s.file("redis password file", |m| m.to_string());
    let cmd_env = s.env("command env secret env", |m| m.to_string());
    let cmd_file = s.file("command env secret file", |m| m.to_string());
    let journey_pw = s.file("journey secret file", |m| m.to_string());
    let journey_tok = s.env("journey secret env", |m| m.to_string());

    let checks = format!(
        r#"
[[check]]
name = "http-bearer"
service = "sec"
type = "http"
url = "{echo}/s200/bearer"
critical = true
auth = {{ bearer = {bearer_env} }}
headers = {{ x-api-key = {hdr_file} }}
expect = [ {{ body = true, contains = "never-in-the-body" }} ]

[[check]]
name = "http-basic"
service = "sec"
type = "http"
url = "{echo}/s200/basic"
auth = {{ username = "bwuser", password = {basic_file} }}
expect = [ {{ body = true, contains = "never-in-the-body" }} ]

[[check]]
name = "http-literal"
service = "sec"
type = "http"
url = "{echo}/s500/literal"
auth = {{ bearer = {bearer_lit} }}
headers = {{ x-env = {hdr_env} }}
expect = [ {{ status = 200 }}, {{ body = true, contains = "never-in-the-body" }} ]

# The echo cuts this header's value at the 120 characters an assertion shows: what is left,
# `ZQ9MRKhttp`, ends with `http`, the start of another secret (the Slack URL).
[[check]]
name = "http-cut"
service = "sec"
type = "http"
url = "{echo}/cut110/x"
headers = {{ x-cut = {cut_env} }}
expect = [ {{ status = 500 }}, {{ body = true, contains = "never-in-the-body" }} ]

[[check]]
name = "prom-bearer"
service = "sec"
type = "prometheus"
url = "{echo}/s500/prom"
query = "up"
auth = {{ bearer = {prom_bearer} }}

[[check]]
name = "prom-basic"
service = "sec"
type = "prometheus"
url = "{echo}/s502/prom"
query = "up"
auth = {{ username = "bwprom", password = {prom_basic} }}

[[check]]
name = "pg-url"
service = "sec"
type = "postgres"
dsn = {pg_url}

[[check]]
name = "pg-kv"
service = "sec"
type = "postgres"
dsn = {pg_kv}

[[check]]
name = "pg-literal"
service = "sec"
type = "postgres"
dsn = {pg_lit}

[[check]]
name = "mysql-file"
service = "sec"
type = "mysql"
dsn = {my_file}

[[check]]
name = "mariadb-literal"
service = "sec"
type = "mysql"
dsn = {my_lit}

[[check]]
name = "redis-url"
service = "sec"
type = "redis"
url = {redis_url}

[[check]]
name = "redis-acl"
service = "sec"
type = "redis"
url = "redis://127.0.0.1:6379/0"
username = {redis_user}
password = {redis_pw}

[[check]]
name = "cmd-env"
service = "sec"
type = "command"
shell = true
argv = ['echo "$BW_CMD_VALUE"; echo "token=$BW_CMD_VALUE" >&2; exit 3']
env = {{ BW_CMD_VALUE = {cmd_env} }}

[[check]]
name = "cmd-file"
service = "sec"
type = "command"
argv = ["/bin/sh", "-c", 'echo "$BW_CMD_VALUE" >&2; exit 4']
env = {{ BW_CMD_VALUE = {cmd_file} }}

[[check]]
name = "journey"
service = "sec"
type = "journey"
base_url = "{echo}"
secrets = {{ pw = {journey_pw}, tok = {journey_tok} }}

[[check.step]]
name = "login"
method = "POST"
path = "/s200/login"
headers = {{ authorization = "Bearer {{{{ secret.tok }}}}" }}
json = {{ password = "{{{{ secret.pw }}}}" }}
expect = [ {{ status = 200 }}, {{ body = true, contains = "never-in-the-body" }} ]

[[rule]]
name = "sec-failing"
service = "sec"
signal = "failure_ratio"
over = "1m"
above = 0.5
min_samples = 1
notify = ["hook", "hook-cut", "slack", "pd", "mail", "am"]
"#
    );

    let hook_url = format!(
        "http://bwhook:{}@{}/s500/hook",
        s.marker("webhook url password literal"),
        echo.trim_start_matches("http://")
    );
    s.basic("bwhook");
    let hook_hdr = s.env("webhook header env", |m| m.to_string());
    let hook_hmac = s.file("webhook hmac secret file", |m| m.to_string());
    let cut_hdr = s.env("webhook header cut", |m| m.to_string());
    let slack = s.env("slack url env", |m| format!("{echo}/s500/services/{m}"));
    let pd_key = s.file("pagerduty routing key file", |m| m.to_string());
    let smtp_pw = s.env("smtp password env", |m| m.to_string());
    let grafana = s.credential("grafana token credential");
    let am_url = format!(
        "http://bwam:{}@{}/s503/am",
        s.marker("alertmanager url password literal"),
        echo.trim_start_matches("http://")
    );
    s.basic("bwam");
    let events = r#"events = ["deployment_registered", "verdict"]"#;
    let notifiers = format!(
        r#"[scheduler]
jitter = "0s"

[defaults]
interval = "500ms"
timeout = "3s"

[deploy]
interval = "200ms"
min_duration = "1s"
max_duration = "5s"
critical_failures = 2

[notifications]
retry_initial = "200ms"
retry_max = "1s"

[[notifier]]
name = "hook"
type = "webhook"
url = {hook_url}
headers = {{ x-hook-token = {hook_hdr} }}
hmac_secret = {hook_hmac}
{events}

[[notifier]]
name = "hook-cut"
type = "webhook"
url = "{echo}/cut190/hook"
headers = {{ x-cut = {cut_hdr} }}
{events}

[[notifier]]
name = "slack"
type = "slack"
url = {slack}
{events}

[[notifier]]
name = "pd"
type = "pagerduty"
routing_key = {pd_key}
url = "{echo}/s400/pd"
{events}

[[notifier]]
name = "mail"
type = "email"
smtp = "smtp://127.0.0.1:{closed_port}"
username = "bwmail"
password = {smtp_pw}
from = "bakewatch@example.com"
to = ["oncall@example.com"]
{events}

[[notifier]]
name = "graf"
type = "grafana"
url = "{echo}/s401/grafana"
token = {grafana}
{events}

[[notifier]]
name = "am"
type = "alertmanager"
url = {am_url}
"#,
        hook_url = q(&hook_url),
        am_url = q(&am_url),
    );
    (checks, notifiers)
}

/// The daemon file: listen on `port`, the token from a file, state in `state`.
fn daemon_file(s: &mut Secrets, port: u16, state: &Path, notifiers: &str) -> String {
    // The same token for both daemons: made once.
    let token = match s.markers.iter().find(|(w, _)| w == "server token file") {
        Some(_) => format!("{{ file = {} }}", q(s.path("token").to_str().unwrap())),
        None => {
            let m = s.marker("server token file");
            std::fs::write(s.path("token"), format!("{m}\n")).unwrap();
            format!("{{ file = {} }}", q(s.path("token").to_str().unwrap()))
        }
    };
    format!(
        "checks = [\"checks/*.toml\"]\n\n[server]\nlisten = \"127.0.0.1:{port}\"\ntoken = {token}\n\n[storage]\npath = {}\n\n{notifiers}",
        q(state.to_str().unwrap())
    )
}

fn server_token(s: &Secrets) -> String {
    s.markers
        .iter()
        .find(|(w, _)| w == "server token file")
        .map(|(_, m)| m.clone())
        .expect("the token was made")
}

/// A `bakewatch run` started here (so it can take `--log-format`), killed on drop.
struct Proc {
    label: String,
    child: Child,
    port: u16,
    stderr: PathBuf,
    http: reqwest::Client,
}

impl Proc {
    fn spawn(
        label: &str,
        dir: &Path,
        config: &Path,
        port: u16,
        log_format: &str,
        env: &[(String, String)],
    ) -> Proc {
        let stderr = dir.join(format!("{label}.log"));
        let mut cmd = Command::new(BIN);
        cmd.args(["--log-format", log_format, "run", "-c"])
            .arg(config)
            .current_dir(dir)
            .env("RUST_LOG", "debug")
            .env_remove("BAKEWATCH_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            label: label.to_string(),
            child: cmd.spawn().expect("spawn bakewatch run"),
            port,
            stderr,
            http: http_client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + common::READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{}: exited early ({status}):\n{}", self.label, self.log());
            }
            if let Ok(r) = self.http.get(self.url("/-/ready")).send().await
                && r.status().as_u16() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready:\n{}",
                self.label,
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.label));
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, token: &str, body: Option<Value>) -> (u16, String) {
        let mut req = self.http.post(self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: POST {path}: {e}", self.label));
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits until `pred` holds on the `/metrics` text.
    async fn wait_metrics(&self, what: &str, pred: impl Fn(&str) -> Result<(), String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, text) = self.get("/metrics").await;
            match pred(&text) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!(
                    "{}: timed out waiting until {what}: {e}\n{}",
                    self.label,
                    self.log()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// SIGTERM, then waits (bounded) for the exit.
    async fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} did not stop", self.label);
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const NOTIFIERS: [&str; 7] = ["hook", "hook-cut", "slack", "pd", "mail", "graf", "am"];

/// Waits until every check has a non-passing outcome, every notifier has tried (and failed)
/// to deliver, and the deployment concluded; then reads every GET endpoint.
async fn exercise(p: &Proc, token: &str, check_names: &[String]) -> Vec<(String, String)> {
    let (status, body) = p
        .post(
            "/api/v1/deployments",
            token,
            Some(
                json!({"id": "sec-1", "service": "sec", "version": "1.0.0", "environment": "prod"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{}: {body}", p.label);
    p.wait_metrics("every check ran and every notifier failed", |m| {
        for c in check_names {
            let bad = common::metric_sum(m, "bakewatch_check_runs_total", &[("check", c)])
                - common::metric_sum(
                    m,
                    "bakewatch_check_runs_total",
                    &[("check", c), ("status", "pass")],
                );
            if bad < 1.0 {
                return Err(format!("check {c} has no failing run"));
            }
        }
        for n in NOTIFIERS {
            let tried = common::metric_sum(
                m,
                "bakewatch_notifications_total",
                &[("notifier", n), ("result", "failed")],
            ) + common::metric_sum(
                m,
                "bakewatch_notifications_total",
                &[("notifier", n), ("result", "dropped")],
            );
            if tried < 1.0 {
                return Err(format!("notifier {n} has not failed yet"));
            }
        }
        Ok(())
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = p.get("/api/v1/deployments/sec-1/verdict").await;
        let v: Value = serde_json::from_str(&v).unwrap();
        if v["phase"] == "concluded" {
            assert_eq!(v["verdict"], "fail", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "{}: no verdict: {v}", p.label);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The verdict notifications get their first try too.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut paths: Vec<String> = [
        "/",
        "/metrics",
        "/api/v1/checks",
        "/api/v1/checks?window=1m",
        "/api/v1/alerts",
        "/api/v1/deployments",
        "/api/v1/deployments/sec-1",
        "/api/v1/deployments/sec-1/verdict",
        "/api/v1/deployments/sec-1/gate",
        "/api/v1/checks/no-such-check",
        "/-/ready",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    paths.extend(check_names.iter().map(|c| format!("/api/v1/checks/{c}")));
    let mut out = Vec::new();
    for path in paths {
        let (_, body) = p.get(&path).await;
        out.push((format!("{}: GET {path}", p.label), body));
    }
    // A refused request's answer.
    let (status, body) = p
        .post("/api/v1/deployments", "wrong", Some(json!({})))
        .await;
    assert_eq!(status, 401);
    out.push((format!("{}: a refused POST", p.label), body));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_api_metrics_cli_or_errors() {
    require_server(5432, "PostgreSQL (trust auth, database `test`)");
    require_server(3306, "MariaDB (root without a password, database `test`)");
    require_server(6379, "Redis (no auth)");
    let (echo, echo_hits) = echo_server().await;
    let mut s = Secrets::new();
    let closed = free_port();
    let (checks, notifiers) = secret_config(&mut s, &echo, closed);
    let check_names: Vec<String> = checks
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_string())
        .filter(|n| n != "login" && n != "sec-failing")
        .collect();
    assert_eq!(check_names.len(), 16, "{check_names:?}");

    let root = s.path("config");
    std::fs::create_dir_all(root.join("checks")).unwrap();
    std::fs::write(root.join("checks/sec.toml"), &checks).unwrap();
    let (human_port, json_port) = (free_port(), free_port());
    let human_config = root.join("bakewatch-human.toml");
    let json_config = root.join("bakewatch-json.toml");
    let text = daemon_file(&mut s, human_port, &root.join("human.db"), &notifiers);
    std::fs::write(&human_config, text).unwrap();
    let text = daemon_file(&mut s, json_port, &root.join("json.db"), &notifiers);
    std::fs::write(&json_config, text).unwrap();
    let token = server_token(&s);
    let env = s.all_env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config_arg = human_config.to_str().unwrap().to_string();

    // The config is valid as written.
    let validate = run_cli_async(&["validate", "-c", &config_arg], &root, &env_refs).await;
    assert_eq!(validate.code, Some(0), "{validate}");

    let mut human = Proc::spawn("human", &root, &human_config, human_port, "human", &env);
    let mut json_log = Proc::spawn("json", &root, &json_config, json_port, "json", &env);
    human.wait_ready().await;
    json_log.wait_ready().await;
    let mut sources: Vec<(String, String)> = Vec::new();
    let (a, b) = tokio::join!(
        exercise(&human, &token, &check_names),
        exercise(&json_log, &token, &check_names)
    );
    sources.extend(a);
    sources.extend(b);

    // Every check failed for a reason that could echo, and said so: spot-check a few.
    for (name, reason) in [
        ("http-bearer", "assertion"),
        ("prom-bearer", "protocol"),
        ("pg-url", "auth"),
        ("mysql-file", "auth"),
        ("redis-url", "auth"),
        ("cmd-env", "status"),
    ] {
        let (_, body) = human.get(&format!("/api/v1/checks/{name}")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["last_outcome"]["reason"], reason,
            "{name}: {}",
            v["last_outcome"]
        );
    }
    // The echoes reached the messages (so they could have leaked), redacted.
    for name in [
        "http-bearer",
        "prom-bearer",
        "prom-basic",
        "cmd-env",
        "journey",
    ] {
        let (_, body) = human.get(&format!("/api/v1/checks/{name}")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let message = v["last_outcome"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("<redacted>"),
            "{name}: the echoed secret is shown redacted: {message}"
        );
    }

    // The CLI's views of the same daemon.
    let url = human.url("");
    let mut cli_env = env_refs.clone();
    cli_env.push(("BAKEWATCH_TOKEN", token.as_str()));
    for args in [
        vec!["verdict", "sec-1", "--url", &url],
        vec![
            "deploy",
            "--service",
            "sec",
            "--version",
            "2.0.0",
            "--id",
            "sec-2",
            "--url",
            &url,
        ],
    ] {
        let out = run_cli_async(&args, &root, &cli_env).await;
        sources.push((format!("bakewatch {args:?}"), format!("{out}")));
    }

    // A reload that fails, with secrets in and around the broken parts.
    let broken = broken_checks(&mut s);
    std::fs::write(root.join("checks/zz-broken.toml"), &broken).unwrap();
    std::fs::write(root.join("checks/zz-syntax.toml"), broken_syntax(&mut s)).unwrap();
    let (status, body) = human.post("/-/reload", &token, None).await;
    assert_eq!(status, 400, "{body}");
    let errors = serde_json::from_str::<Value>(&body).unwrap()["errors"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(errors >= 10, "every broken secret is reported: {body}");
    sources.push(("POST /-/reload (invalid config)".into(), body));
    // The same config for `validate` and `run`, and a daemon file broken next to the token.
    for args in [
        vec!["validate", "-c", config_arg.as_str()],
        vec!["run", "-c", config_arg.as_str()],
    ] {
        let out = run_cli_async(&args, &root, &env_refs).await;
        assert_eq!(out.code, Some(1), "{out}");
        sources.push((
            format!("bakewatch {args:?} (invalid config)"),
            format!("{out}"),
        ));
    }
    std::fs::remove_file(root.join("checks/zz-broken.toml")).unwrap();
    std::fs::remove_file(root.join("checks/zz-syntax.toml")).unwrap();
    let bad_daemon = s.path("bad-daemon.toml");
    let bad_token = s.marker("token next to a syntax error");
    std::fs::write(
        &bad_daemon,
        format!("[server]\ntoken = \"{bad_token}\" listen = \"127.0.0.1:1\"\n"),
    )
    .unwrap();
    let bad_token2 = s.marker("token in an unterminated string");
    let bad_daemon2 = s.path("bad-daemon2.toml");
    std::fs::write(
        &bad_daemon2,
        format!("[server]\ntoken = \"{bad_token2}\nlisten = \"127.0.0.1:1\"\n"),
    )
    .unwrap();
    for path in [&bad_daemon, &bad_daemon2] {
        let out = run_cli_async(&["validate", "-c", path.to_str().unwrap()], &root, &[]).await;
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains("TOML syntax"), "{out}");
        sources.push((
            format!("bakewatch validate {}", path.display()),
            format!("{out}"),
        ));
    }

    // `once`, in every format, with debug logs in both formats.
    let mut once_env = env_refs.clone();
    once_env.push(("RUST_LOG", "debug"));
    for (format, log) in [("table", "human"), ("json", "json"), ("junit", "human")] {
        let out = run_cli_async(
            &[
                "--log-format",
                log,
                "once",
                "-c",
                &config_arg,
                "--format",
                format,
            ],
            &root,
            &once_env,
        )
        .await;
        assert_eq!(out.code, Some(1), "{out}");
        assert!(!out.stdout.trim().is_empty(), "{out}");
        sources.push((
            format!("bakewatch once --format {format}"),
            format!("{out}"),
        ));
    }
    sources.push((
        "bakewatch validate (valid config)".into(),
        format!("{validate}"),
    ));

    // The logs, once the daemons stopped (their shutdown logged too), and the state files.
    human.stop().await;
    json_log.stop().await;
    let human_log = human.log();
    let json_lines = json_log.log();
    assert!(
        human_log.contains("DEBUG") && human_log.contains("check state changed"),
        "the human log at debug: {human_log}"
    );
    assert!(
        json_lines.contains("\"level\":\"DEBUG\"") && json_lines.contains("notification failed"),
        "the JSON log at debug: {json_lines}"
    );
    for line in json_lines.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    sources.push(("daemon log (human, debug)".into(), human_log));
    sources.push(("daemon log (json, debug)".into(), json_lines));
    for db in ["human.db", "json.db"] {
        for suffix in ["", "-wal"] {
            let path = root.join(format!("{db}{suffix}"));
            if let Ok(bytes) = std::fs::read(&path) {
                sources.push((
                    format!("state file {db}{suffix}"),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    assert!(
        sources.iter().any(|(l, _)| l.starts_with("state file")),
        "no state file was written"
    );
    assert!(echo_hits.load(Ordering::SeqCst) > 0);

    // Every source said something, and none gives a secret away.
    let mut leaks = Vec::new();
    for (label, text) in &sources {
        assert!(
            !text.trim().is_empty(),
            "{label} is empty: the test proves nothing"
        );
        for l in s.leaks(text) {
            leaks.push(format!("{label}: {l}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} secret leak(s):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    eprintln!(
        "security: {} sources ({} bytes) free of {} markers and {} encoded forms",
        sources.len(),
        sources.iter().map(|(_, t)| t.len()).sum::<usize>(),
        s.markers.len(),
        s.encoded.len()
    );
}

/// A check file whose secret-bearing values are each invalid in a way whose message could
/// repeat the value.
fn broken_checks(s: &mut Secrets) -> String {
    let mut m = |w: &str| s.marker(w);
    format!(
        r#"
[[check]]
name = "b-pg-port"
type = "postgres"
dsn = "postgres://u:{pg1}@127.0.0.1:notaport/test"

[[check]]
name = "b-pg-kv"
type = "postgres"
dsn = "host=127.0.0.1 user=u password={pg2} port=notaport"

[[check]]
name = "b-pg-quote"
type = "postgres"
dsn = "host=127.0.0.1 user=u password='{pg3}"

[[check]]
name = "b-pg-scheme"
type = "postgres"
dsn = "postgress://u:{pg4}@127.0.0.1/test"

[[check]]
name = "b-my-param"
type = "mysql"
dsn = "mysql://root:{my1}@127.0.0.1:3306/test?no_such_option=1"

[[check]]
name = "b-my-url"
type = "mysql"
dsn = "mysql://root:{my2}@[::1/test"

[[check]]
name = "b-redis-db"
type = "redis"
url = "redis://:{rd1}@127.0.0.1:6379/notadb"

[[check]]
name = "b-redis-port"
type = "redis"
url = "redis://:{rd2}@127.0.0.1:99999/0"

[[check]]
name = "b-redis-scheme"
type = "redis"
url = "http://:{rd3}@127.0.0.1:6379/0"

[[check]]
name = "b-http-auth"
type = "http"
url = "http://127.0.0.1:1/"
auth = {{ bearer = "{h1}", username = "u" }}

[[check]]
name = "b-http-secret"
type = "http"
url = "http://127.0.0.1:1/"
auth = {{ bearer = {{ env = "BW_NOT_SET_ANYWHERE", value = "{h2}" }} }}

[[check]]
name = "b-http-typo"
type = "http"
url = "http://127.0.0.1:1/"
auth = {{ username = "u", passwrd = "{h3}" }}

[[check]]
name = "b-http-header"
type = "http"
url = "http://127.0.0.1:1/"
headers = {{ x-bad = "{h4}\u0001" }}

[[check]]
name = "b-prom"
type = "prometheus"
url = "http://127.0.0.1:1/"
query = "up"
auth = {{ bearer = ["{h5}"] }}

[[check]]
name = "b-journey"
type = "journey"
base_url = "http://127.0.0.1:1"
secrets = {{ pw = "{j1}" }}

[[check.step]]
name = "s"
path = "/{{{{ secret.pww }}}}"
"#,
        pg1 = m("invalid postgres url"),
        pg2 = m("invalid postgres key value"),
        pg3 = m("unterminated postgres quote"),
        pg4 = m("postgres wrong scheme"),
        my1 = m("mysql unknown option"),
        my2 = m("mysql not a url"),
        rd1 = m("redis bad db"),
        rd2 = m("redis bad port"),
        rd3 = m("redis wrong scheme"),
        h1 = m("bearer and basic at once"),
        h2 = m("secret table with an unknown key"),
        h3 = m("misspelt password key"),
        h4 = m("header value with a control character"),
        h5 = m("bearer of the wrong type"),
        j1 = m("journey with a misspelt secret"),
    )
}

/// A check file with a TOML syntax error on a line holding a secret.
fn broken_syntax(s: &mut Secrets) -> String {
    let a = s.marker("password before a syntax error");
    let b = s.marker("password after a syntax error");
    format!(
        "[[check]]\nname = \"b-syntax\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\npassword = \"{a}\" \"{b}\"\n"
    )
}

// ---------------------------------------------------------------------------------------------
// (c) TLS is verified by default

/// An HTTPS server (any path, any method): reads one request, answers 200 "ok". Counts the
/// requests it answered (a refused handshake counts nothing).
async fn https_server(pki: &Pki) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(false)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(5), tls.read(&mut chunk)).await
                    else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, served)
}

/// Loads a config with these `[[check]]` and `[[notifier]]` tables.
fn load(checks: &str, notifiers: &str) -> bakewatch::config::Config {
    let dir = common::write_config(
        &format!("checks = [\"checks/*.toml\"]\n\n{notifiers}"),
        &[("c.toml", checks)],
    );
    bakewatch::config::load(&dir.path().join("bakewatch.toml"))
        .unwrap_or_else(|e| panic!("the config does not load:\n{e}\n{checks}\n{notifiers}"))
}

async fn run_check(kind: &str, keys: &str) -> bakewatch::checks::Outcome {
    let config = load(
        &format!("[[check]]\nname = \"probe\"\ntype = \"{kind}\"\ntimeout = \"5s\"\n{keys}\n"),
        "",
    );
    bakewatch::runtime::execute(&config.checks[0]).await
}

/// A `deployment_registered` notification to send.
fn notification() -> Notification {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Notification {
        id: format!("deployment:tls-1:deployment_registered:{now}"),
        dedup_key: "deployment:tls-1".into(),
        created_at: now.clone(),
        link: "http://127.0.0.1:9/".into(),
        event: Event::DeploymentRegistered(DeploymentEvent {
            deployment: DeploymentRef {
                id: "tls-1".into(),
                service: "shop".into(),
                version: "1.0.0".into(),
                environment: "prod".into(),
            },
            started_at: now,
            verdict: "pending".into(),
            decision: "wait".into(),
            reasons: Vec::new(),
            concluded_at: None,
        }),
    }
}

/// Sends the notification through the one notifier of `notifier`.
async fn send(notifier: &str) -> Result<(), String> {
    let config = load(
        "[[check]]\nname = \"x\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\n",
        notifier,
    );
    config.notifiers[0]
        .receiver
        .send(&notification(), None)
        .await
        .map(|_| ())
        .map_err(|e| e.message)
}

fn says_certificate(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("certificate") || m.contains("unknownissuer") || m.contains("unknown issuer")
}

/// A stand-in PostgreSQL server: answers the client's SSLRequest with `S`, handshakes with the
/// private CA's certificate, counts the handshakes that complete, then hangs up.
async fn pg_tls_server(pki: &Pki) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(false)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let count = done.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                // SSLRequest: length 8, code 80877103.
                let mut request = [0u8; 8];
                if tcp.read_exact(&mut request).await.is_err()
                    || request != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                {
                    return;
                }
                if tcp.write_all(b"S").await.is_err() {
                    return;
                }
                if let Ok(Ok(_tls)) =
                    tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_are_verified_by_default_everywhere() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = Pki::new();
    let ca = q(pki.path("ca.pem"));
    let (addr, served) = https_server(&pki).await;
    let mut results: BTreeMap<&str, String> = BTreeMap::new();

    // An https `http` check.
    let url = q(format!("https://{addr}/"));
    let o = run_check("http", &format!("url = {url}")).await;
    assert_eq!((o.status, o.reason), (Status::Fail, Reason::Tls), "{o:?}");
    assert!(says_certificate(&o.message), "{}", o.message);
    results.insert("http check", o.message.clone());
    let o = run_check("http", &format!("url = {url}\ntls = {{ ca_file = {ca} }}")).await;
    assert_eq!((o.status, o.reason), (Status::Pass, Reason::Ok), "{o:?}");

    // A `tls` check.
    let address = q(addr.to_string());
    let o = run_check("tls", &format!("address = {address}")).await;
    assert_eq!((o.status, o.reason), (Status::Fail, Reason::Tls), "{o:?}");
    assert!(says_certificate(&o.message), "{}", o.message);
    results.insert("tls check", o.message.clone());
    let o = run_check("tls", &format!("address = {address}\nca_file = {ca}")).await;
    assert_eq!((o.status, o.reason), (Status::Pass, Reason::Ok), "{o:?}");

    // A webhook.
    let before = served.load(Ordering::SeqCst);
    let hook = format!("[[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = {url}\n");
    let e = send(&hook)
        .await
        .expect_err("an untrusted webhook receiver");
    assert!(says_certificate(&e), "{e}");
    assert_eq!(served.load(Ordering::SeqCst), before, "nothing was sent");
    results.insert("webhook", e);
    send(&format!("{hook}tls = {{ ca_file = {ca} }}\n"))
        .await
        .expect("the webhook with the CA");
    assert_eq!(served.load(Ordering::SeqCst), before + 1);

    // Email over STARTTLS (required) and over implicit TLS, against a real SMTP server.
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    for (mode, scheme) in [("starttls", "smtp"), ("implicit", "smtps")] {
        let server = SmtpServer::start(&["--tls", mode, "--cert", &cert, "--key", &key]);
        let smtp = if mode == "starttls" {
            format!("smtp://127.0.0.1:{}?tls=required", server.port)
        } else {
            format!("{scheme}://127.0.0.1:{}", server.port)
        };
        let mail = format!(
            "[[notifier]]\nname = \"mail\"\ntype = \"email\"\nsmtp = {}\nfrom = \"bakewatch@example.com\"\nto = [\"oncall@example.com\"]\n",
            q(&smtp)
        );
        let e = send(&mail).await.expect_err("an untrusted SMTP server");
        assert!(
            says_certificate(&e) || e.to_ascii_lowercase().contains("tls"),
            "{mode}: {e}"
        );
        assert!(server.mails().is_empty(), "{mode}: a mail went through");
        results.insert(
            if mode == "starttls" {
                "email starttls"
            } else {
                "email smtps"
            },
            e,
        );
        send(&format!("{mail}ca_file = {ca}\n"))
            .await
            .unwrap_or_else(|e| panic!("{mode} with the CA: {e}"));
        let mails = server.wait_mails(1).await;
        assert_eq!(mails[0].record["tls"], true, "{mode}");
    }

    // PostgreSQL with a `tls` table, against a loopback server that accepts the SSLRequest
    // and then handshakes with the private CA's certificate.
    let (pg, handshakes) = pg_tls_server(&pki).await;
    let dsn = q(format!("postgres://root@{pg}/test"));
    let o = run_check(
        "postgres",
        &format!("dsn = {dsn}\ntls = {{ mode = \"require\" }}"),
    )
    .await;
    assert_eq!((o.status, o.reason), (Status::Fail, Reason::Tls), "{o:?}");
    assert!(says_certificate(&o.message), "{}", o.message);
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "a handshake completed"
    );
    results.insert("postgres", o.message.clone());
    // Given the CA, the handshake completes (the stand-in server then hangs up: whatever the
    // outcome says next, it is not about TLS).
    let o = run_check(
        "postgres",
        &format!("dsn = {dsn}\ntls = {{ mode = \"require\", ca_file = {ca} }}"),
    )
    .await;
    assert_ne!(o.reason, Reason::Tls, "{o:?}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 1, "{o:?}");

    for (what, message) in &results {
        eprintln!("tls default: {what}: {message}");
    }
}
