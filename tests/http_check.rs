//! Integration tests of the `http` check, on the daemon's own code path: a config is written to
//! files and loaded with `config::load`, and the check runs through `runtime::execute` (which
//! applies the check's timeout) or `Runtime::run_check` (which also redacts secrets).
//!
//! Targets are servers bound to 127.0.0.1:0 inside each test: an axum app that records what it
//! received, raw TCP servers for hostile behaviour and connection counting, and a rustls server
//! with a private CA for TLS. Nothing else is contacted.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use bakewatch::checks::{Observation, Outcome, Reason, Status};
use bakewatch::config::{CheckConfig, Config};
use bakewatch::metrics::Metrics;
use bakewatch::runtime::{Runtime, execute, execute_with};
use bakewatch::template::DeploymentVars;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// Config helpers.

use common::pki::Pki;
use common::q;

/// Loads a daemon file whose `checks = ["checks/*.toml"]` names one check file holding a single
/// `[[check]]` named "probe" of type http, with `keys` as its other keys.
fn load_config(keys: &str) -> Config {
    common::probe_config("http", keys)
}

fn load_check(keys: &str) -> Arc<CheckConfig> {
    let config = load_config(keys);
    assert_eq!(config.checks.len(), 1);
    config.checks[0].clone()
}

/// Loads the check and runs it once, as the daemon does.
async fn run(keys: &str) -> Outcome {
    execute(&load_check(keys)).await
}

fn observation<'a>(o: &'a Outcome, name: &str) -> &'a Observation {
    o.observations
        .get(name)
        .unwrap_or_else(|| panic!("no observation {name:?} in {o:#?}"))
}

fn number(o: &Outcome, name: &str) -> f64 {
    match observation(o, name) {
        Observation::Number(n) => *n,
        other => panic!("observation {name:?} is not a number: {other:?}"),
    }
}

#[track_caller]
fn assert_outcome(o: &Outcome, status: Status, reason: Reason) {
    assert_eq!(
        (o.status, o.reason),
        (status, reason),
        "unexpected outcome: {o:#?}"
    );
}

/// `std::env::set_var` is unsafe in edition 2024 and this crate forbids unsafe code, so a test
/// that needs a variable in its environment runs itself again in a child process that has it.
/// In the child, returns the value; in the parent, runs the child, requires that it ran and
/// passed exactly this test, and returns None.
async fn env_in_child(test: &str, var: &str) -> Option<String> {
    if let Ok(value) = std::env::var(var) {
        return Some(value);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let value = format!("tok-{}-{nanos}", std::process::id());
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, &value)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child run of {test} failed:\n{stdout}\n{stderr}"
    );
    None
}

// ---------------------------------------------------------------------------------------------
// A recording axum target.

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

struct Target {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The one request received.
    fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "expected exactly one request, got {seen:#?}");
        seen.into_iter().next().unwrap()
    }
}

const JSON_DOC: &str = r#"{"status":"ok","version":"1.2.3","items":[{"name":"a","ok":true},{"name":"b","ok":false},{"name":"c","ok":true}],"meta":{"count":3}}"#;

fn reply(status: StatusCode, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut r = Response::builder().status(status);
    for (name, value) in headers {
        r = r.header(*name, *value);
    }
    r.body(body.into()).unwrap()
}

/// What the target answers, by path (`/away?to=<url>` redirects to that URL).
async fn respond(path: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
    match path {
        "/away" => {
            let to = query.and_then(|q| q.strip_prefix("to=")).unwrap_or("/");
            reply(StatusCode::FOUND, &[("location", to)], "moved")
        }
        "/see-other" => reply(
            StatusCode::SEE_OTHER,
            &[("location", "/final")],
            "see other",
        ),
        "/loop" => reply(StatusCode::FOUND, &[("location", "/loop")], "again"),
        "/ok" => reply(StatusCode::OK, &[], "ok"),
        "/status/500" => reply(StatusCode::INTERNAL_SERVER_ERROR, &[], "boom"),
        "/json" => reply(
            StatusCode::OK,
            &[("content-type", "application/json")],
            JSON_DOC,
        ),
        "/text" => reply(StatusCode::OK, &[], "service=shop version=1.2.3 state=ok"),
        "/cookies" => reply(
            StatusCode::OK,
            &[
                ("set-cookie", "session=abc123; Path=/; HttpOnly"),
                ("set-cookie", "theme=\"dark\"; Path=/"),
                ("x-build", "1.2.3"),
            ],
            "cookies",
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reply(StatusCode::OK, &[], "slow")
        }
        "/redirect" => reply(StatusCode::FOUND, &[("location", "/final")], "moved"),
        "/final" => reply(StatusCode::OK, &[], "final"),
        "/echo-auth" => {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            reply(StatusCode::OK, &[], format!("you sent: {auth}"))
        }
        _ => reply(StatusCode::NOT_FOUND, &[], "not found"),
    }
}

async fn target() -> Target {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(Seen {
                    method,
                    path: uri.path().to_string(),
                    query: uri.query().map(str::to_string),
                    headers: headers.clone(),
                    body,
                });
                respond(uri.path(), uri.query(), &headers).await
            }
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Target {
        base: format!("http://{addr}"),
        seen,
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP targets.

/// Serves each accepted connection with `handle`; returns the address and the number of
/// connections accepted so far (counted before the connection is handled).
async fn raw_server<F, Fut>(handle: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handle(stream));
        }
    });
    (addr, accepted)
}

/// Reads one request head (through the blank line); None at end of stream.
async fn read_head(s: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Keeps a connection open until the client closes it.
async fn hold(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// A refused port: bound, then released.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// TLS.

fn install_provider() {
    // Ignore the error: another test may have installed it already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// What a TLS target saw of one connection.
#[derive(Debug, Clone, PartialEq)]
enum Handshake {
    /// Completed; whether the client presented a certificate; the request line.
    Done {
        client_cert: bool,
        request: String,
    },
    Failed(String),
}

/// An HTTPS target answering every request with 200 "secured".
async fn tls_target(config: rustls::ServerConfig) -> (String, Arc<Mutex<Vec<Handshake>>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let log: Arc<Mutex<Vec<Handshake>>> = Arc::default();
    let seen = log.clone();
    let (addr, _) = raw_server(move |tcp| {
        let acceptor = acceptor.clone();
        let seen = seen.clone();
        async move {
            let mut tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    seen.lock().unwrap().push(Handshake::Failed(e.to_string()));
                    return;
                }
            };
            let client_cert = tls.get_ref().1.peer_certificates().is_some();
            let Some(head) = read_head(&mut tls).await else {
                seen.lock().unwrap().push(Handshake::Failed(
                    "the connection ended before a request".into(),
                ));
                return;
            };
            let request = head.lines().next().unwrap_or("").to_string();
            seen.lock().unwrap().push(Handshake::Done {
                client_cert,
                request,
            });
            let _ = tls
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nsecured\n",
                )
                .await;
            let _ = tls.shutdown().await;
        }
    })
    .await;
    (format!("https://{addr}/secure"), log)
}

// ---------------------------------------------------------------------------------------------
// Status and the implicit 2xx.

#[tokio::test(flavor = "multi_thread")]
async fn passes_on_2xx_without_expect() {
    let t = target().await;
    let o = run(&format!("url = {}", q(t.url("/ok")))).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(o.message, "HTTP 200");
    assert!(o.failed_assertions.is_empty());
    assert_eq!(number(&o, "status"), 200.0);
    assert_eq!(number(&o, "body_bytes"), 2.0);
    assert!(matches!(observation(&o, "ttfb"), Observation::Duration(_)));
    assert!(o.duration > Duration::ZERO);

    let seen = t.only();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, "/ok");
    assert!(seen.header("user-agent").unwrap().starts_with("bakewatch/"));
    assert!(seen.body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_fails_the_implicit_2xx_with_reason_status() {
    let t = target().await;
    let o = run(&format!("url = {}", q(t.url("/status/500")))).await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert_eq!(o.message, "HTTP 500, expected 2xx");
    assert_eq!(o.failed_assertions.len(), 1);
    let f = &o.failed_assertions[0];
    assert_eq!((f.expected.as_str(), f.actual.as_str()), ("2xx", "500"));
    assert!(!f.warn);
    assert_eq!(number(&o, "status"), 500.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_status_replaces_the_implicit_2xx() {
    let t = target().await;
    let url = q(t.url("/status/500"));
    let o = run(&format!("url = {url}\nexpect = [ {{ status = 500 }} ]")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(o.message, "HTTP 500");
    assert!(o.failed_assertions.is_empty());

    let o = run(&format!("url = {url}\nexpect = [ {{ status = 200 }} ]")).await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert_eq!(o.message, "HTTP 500, expected 200");
    assert_eq!(o.failed_assertions[0].actual, "500");
}

// ---------------------------------------------------------------------------------------------
// The request side.

#[tokio::test(flavor = "multi_thread")]
async fn methods_reach_the_server() {
    let t = target().await;
    for method in ["POST", "PUT", "DELETE", "HEAD", "get"] {
        let o = run(&format!(
            "url = {}\nmethod = {}",
            q(t.url("/ok")),
            q(method)
        ))
        .await;
        assert_outcome(&o, Status::Pass, Reason::Ok);
    }
    let methods: Vec<String> = t.seen().iter().map(|s| s.method.to_string()).collect();
    assert_eq!(methods, ["POST", "PUT", "DELETE", "HEAD", "GET"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_headers_are_sent() {
    let t = target().await;
    let o = run(&format!(
        "url = {}\nheaders = {{ x-request-id = \"req-42\", Accept = \"application/json\" }}",
        q(t.url("/ok"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let seen = t.only();
    assert_eq!(seen.header("x-request-id"), Some("req-42"));
    assert_eq!(seen.header("accept"), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_body_is_sent_as_json() {
    let t = target().await;
    let o = run(&format!(
        "url = {}\nmethod = \"POST\"\njson = {{ name = \"smoke\", n = 3, ok = true, tags = [\"a\", \"b\"], nested = {{ x = 1.5 }} }}",
        q(t.url("/ok"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let seen = t.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "smoke", "n": 3, "ok": true, "tags": ["a", "b"], "nested": {"x": 1.5}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_form_body_is_sent_urlencoded() {
    let t = target().await;
    let o = run(&format!(
        "url = {}\nmethod = \"POST\"\nform = {{ user = \"smoke test\", next = \"/a&b\" }}",
        q(t.url("/ok"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let seen = t.only();
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(&seen.body[..], b"next=%2Fa%26b&user=smoke+test");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_body_is_sent_verbatim() {
    let t = target().await;
    let o = run(&format!(
        "url = {}\nmethod = \"PUT\"\nheaders = {{ content-type = \"text/plain\" }}\nbody = \"line one\\nline two\"",
        q(t.url("/ok"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let seen = t.only();
    assert_eq!(seen.method, Method::PUT);
    assert_eq!(seen.header("content-type"), Some("text/plain"));
    assert_eq!(&seen.body[..], b"line one\nline two");
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_and_basic_auth_are_sent() {
    let t = target().await;
    let url = q(t.url("/ok"));
    let o = run(&format!(
        "url = {url}\nauth = {{ bearer = \"literal-token\" }}"
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let o = run(&format!(
        "url = {url}\nauth = {{ username = \"smoke\", password = \"hunter2\" }}"
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let auth: Vec<String> = t
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(
        auth,
        ["Bearer literal-token", "Basic c21va2U6aHVudGVyMg=="] // base64("smoke:hunter2")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_from_files_are_sent() {
    let t = target().await;
    let dir = TempDir::new().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "file-token-123\n").unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "pw-from-file").unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "key-from-file\n").unwrap();

    let url = q(t.url("/ok"));
    let o = run(&format!(
        "url = {url}\nauth = {{ bearer = {{ file = {} }} }}\nheaders = {{ x-api-key = {{ file = {} }} }}",
        q(token.to_str().unwrap()),
        q(key.to_str().unwrap()),
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let o = run(&format!(
        "url = {url}\nauth = {{ username = \"smoke\", password = {{ file = {} }} }}",
        q(password.to_str().unwrap()),
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let seen = t.seen();
    assert_eq!(seen.len(), 2);
    // One trailing newline of a secret file is not part of the secret.
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer file-token-123")
    );
    assert_eq!(seen[0].header("x-api-key"), Some("key-from-file"));
    // base64("smoke:pw-from-file")
    assert_eq!(
        seen[1].header("authorization"),
        Some("Basic c21va2U6cHctZnJvbS1maWxl")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_from_env_is_sent() {
    const VAR: &str = "BAKEWATCH_HTTP_CHECK_TEST_ENV_TOKEN";
    let Some(token) = env_in_child("a_secret_from_env_is_sent", VAR).await else {
        return;
    };
    let t = target().await;
    let o = run(&format!(
        "url = {}\nauth = {{ bearer = {{ env = {} }} }}",
        q(t.url("/ok")),
        q(VAR)
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(
        t.only().header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// Queries against real responses.

#[tokio::test(flavor = "multi_thread")]
async fn header_and_cookie_queries() {
    let t = target().await;
    let url = q(t.url("/cookies"));
    let o = run(&format!(
        r#"url = {url}
expect = [
  {{ header = "x-build", eq = "1.2.3" }},
  {{ header = "X-Build", starts_with = "1." }},
  {{ header = "set-cookie", filter = "count", eq = 2 }},
  {{ header = "x-missing", exists = false }},
  {{ cookie = "session", eq = "abc123" }},
  {{ cookie = "theme", eq = "dark" }},
  {{ cookie = "absent", exists = false }},
]"#
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(o.failed_assertions.is_empty());

    let o = run(&format!(
        r#"url = {url}
expect = [ {{ cookie = "session", eq = "other" }}, {{ header = "x-build", eq = "2.0.0" }} ]"#
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(
        o.message,
        r#"cookie session: expected eq "other", got "abc123" (+1 more)"#
    );
    let actual: Vec<&str> = o
        .failed_assertions
        .iter()
        .map(|f| f.actual.as_str())
        .collect();
    assert_eq!(actual, [r#""abc123""#, r#""1.2.3""#]);
}

#[tokio::test(flavor = "multi_thread")]
async fn body_and_regex_queries() {
    let t = target().await;
    let url = q(t.url("/text"));
    let o = run(&format!(
        r#"url = {url}
expect = [
  {{ body = true, contains = "state=ok" }},
  {{ body = true, starts_with = "service=shop" }},
  {{ body = true, matches = 'version=\d+' }},
  {{ regex = 'version=(\d+\.\d+\.\d+)', eq = "1.2.3" }},
  {{ regex = 'state=(\w+)', in = ["ok", "fine"] }},
]"#
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let o = run(&format!(
        r#"url = {url}
expect = [ {{ regex = 'version=(\d+)\.', eq = "2" }} ]"#
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(o.failed_assertions.len(), 1);
    assert_eq!(o.failed_assertions[0].actual, r#""1""#);
    assert!(o.message.starts_with("regex "), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonpath_queries_with_filters() {
    let t = target().await;
    let url = q(t.url("/json"));
    let o = run(&format!(
        r#"url = {url}
expect = [
  {{ header = "content-type", contains = "json" }},
  {{ jsonpath = "$.status", eq = "ok" }},
  {{ jsonpath = "$.items", filter = "count", eq = 3 }},
  {{ jsonpath = "$.items[?@.ok == true]", filter = "count", eq = 2 }},
  {{ jsonpath = "$.items[*].name", nth = 1, eq = "b" }},
  {{ jsonpath = "$.items[*].name", filter = "first", eq = "a" }},
  {{ jsonpath = "$.items[*].name", filter = "last", eq = "c" }},
  {{ jsonpath = "$.items[*].name", contains = "c" }},
  {{ jsonpath = "$.meta.count", ge = 3 }},
  {{ jsonpath = "$.missing", exists = false }},
]"#
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let o = run(&format!(
        r#"url = {url}
expect = [ {{ jsonpath = "$.items", filter = "count", ge = 5 }} ]"#
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(o.message, "jsonpath $.items count: expected ge 5, got 3");
    assert_eq!(o.failed_assertions[0].actual, "3");

    // A JSONPath against a body that is not JSON fails and says so.
    let o = run(&format!(
        "url = {}\nexpect = [ {{ jsonpath = \"$.status\", eq = \"ok\" }} ]",
        q(t.url("/text"))
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(o.failed_assertions[0].actual.contains("not JSON"), "{o:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn duration_queries() {
    let t = target().await;
    let url = q(t.url("/slow"));
    let o = run(&format!(
        r#"url = {url}
expect = [ {{ duration = "total", lt = "5s" }}, {{ duration = "ttfb", lt = "5s" }}, {{ duration = "total", ge = "50ms" }} ]"#
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let o = run(&format!(
        r#"url = {url}
expect = [ {{ duration = "total", lt = "1ms" }} ]"#
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(
        o.message
            .starts_with("duration total: expected lt 1ms, got "),
        "{}",
        o.message
    );

    let o = run(&format!(
        r#"url = {url}
expect = [ {{ duration = "ttfb", lt = "1ms" }} ]"#
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(o.message.starts_with("duration ttfb: expected lt 1ms"));
    let Observation::Duration(ttfb) = observation(&o, "ttfb") else {
        panic!("ttfb is not a duration");
    };
    assert!(*ttfb >= Duration::from_millis(50), "{ttfb:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn observe_status() {
    let t = target().await;
    let o = run(&format!(
        "url = {}\nexpect = [ {{ observe = \"status\", eq = 200 }}, {{ observe = \"body_bytes\", eq = 2 }} ]",
        q(t.url("/ok"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let o = run(&format!(
        "url = {}\nexpect = [ {{ observe = \"status\", eq = 201 }} ]",
        q(t.url("/ok"))
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(o.message, "observe status: expected eq 201, got 200");
    assert_eq!(o.failed_assertions[0].actual, "200");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warn_assertion_degrades() {
    let t = target().await;
    let o = run(&format!(
        r#"url = {}
expect = [ {{ status = 200 }}, {{ header = "x-build", eq = "9.9.9", severity = "warn" }} ]"#,
        q(t.url("/cookies"))
    ))
    .await;
    assert_outcome(&o, Status::Degraded, Reason::Assertion);
    assert_eq!(
        o.message,
        r#"header x-build: expected eq "9.9.9", got "1.2.3""#
    );
    assert_eq!(o.failed_assertions.len(), 1);
    assert!(o.failed_assertions[0].warn);
    assert_eq!(number(&o, "status"), 200.0);
}

// ---------------------------------------------------------------------------------------------
// Redirects and the body cap.

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_followed_by_default() {
    let t = target().await;
    let o = run(&format!(
        "url = {}\nexpect = [ {{ status = 200 }}, {{ body = true, eq = \"final\" }} ]",
        q(t.url("/redirect"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let paths: Vec<String> = t.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/redirect", "/final"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_redirects_false_sees_the_302() {
    let t = target().await;
    let url = q(t.url("/redirect"));
    let o = run(&format!(
        "url = {url}\nfollow_redirects = false\nexpect = [ {{ status = 302 }}, {{ header = \"location\", eq = \"/final\" }} ]"
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(o.message, "HTTP 302");

    let o = run(&format!("url = {url}\nfollow_redirects = false")).await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert_eq!(o.message, "HTTP 302, expected 2xx");

    let paths: Vec<String> = t.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/redirect", "/redirect"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_303_turns_a_post_into_a_get_without_its_body() {
    let t = target().await;
    let o = run(&format!(
        "url = {}\nmethod = \"POST\"\njson = {{ a = 1 }}\nexpect = [ {{ body = true, eq = \"final\" }} ]",
        q(t.url("/see-other"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let seen = t.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (&seen[0].method, &seen[0].body[..]),
        (&Method::POST, &br#"{"a":1}"#[..])
    );
    assert_eq!(
        (&seen[1].method, seen[1].path.as_str()),
        (&Method::GET, "/final")
    );
    assert!(seen[1].body.is_empty());
    assert_eq!(seen[1].header("content-type"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_stay_behind_when_a_redirect_changes_origin() {
    let (a, b) = (target().await, target().await);
    let auth = "auth = { bearer = \"s3cret-token\" }";
    // Same origin: the credentials follow.
    let o = run(&format!(
        "url = {}\n{auth}\nexpect = [ {{ body = true, eq = \"you sent: Bearer s3cret-token\" }} ]",
        q(a.url(&format!("/away?to={}", a.url("/echo-auth"))))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    // Another origin (another port): they stay behind, and the referer names where it came from.
    let from = a.url(&format!("/away?to={}", b.url("/echo-auth")));
    let o = run(&format!(
        "url = {}\n{auth}\nexpect = [ {{ body = true, eq = \"you sent: \" }} ]",
        q(&from)
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let at_b = b.only();
    assert_eq!(at_b.header("authorization"), None);
    assert_eq!(at_b.header("referer"), Some(from.as_str()));
    assert!(at_b.header("user-agent").unwrap().starts_with("bakewatch/"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_loop_ends_after_ten_redirects() {
    let t = target().await;
    let o = run(&format!("url = {}\ntimeout = \"5s\"", q(t.url("/loop")))).await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert_eq!(o.message, "redirect: too many redirects");
    assert_eq!(t.seen().len(), 11, "the request and ten redirects");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_from_http_to_https_is_followed_with_the_check_tls_settings() {
    install_provider();
    let pki = Pki::new();
    let (https, seen) = tls_target(pki.server_config(false)).await;
    let t = target().await;
    let o = run(&format!(
        "url = {}\ntls = {{ ca_file = {} }}\nexpect = [ {{ status = 200 }}, {{ body = true, eq = \"secured\\n\" }} ]",
        q(t.url(&format!("/away?to={https}"))),
        q(pki.path("ca.pem"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(t.only().path, "/away");
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Without the private CA the https leg is refused, as a direct https check would be.
    let o = run(&format!("url = {}", q(t.url(&format!("/away?to={https}"))))).await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_head_is_what_a_browser_like_client_sends() {
    let (addr, _) = raw_server(|mut s| async move {
        if let Some(head) = read_head(&mut s).await {
            let body = head.replace("\r\n", "\n");
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    })
    .await;
    let o = run(&format!(
        "url = {}\nheaders = {{ x-one = \"1\" }}\nexpect = [ {{ body = true, matches = \"(?s)^GET /p\\\\?q=1 HTTP/1.1\\n.*host: 127.0.0.1:{}\\n\" }}, {{ body = true, contains = \"accept: */*\" }}, {{ body = true, contains = \"user-agent: bakewatch/\" }}, {{ body = true, contains = \"x-one: 1\" }} ]",
        q(format!("http://{addr}/p?q=1")),
        addr.port()
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_body_is_read_up_to_max_body() {
    const SIZE: usize = 3 << 20;
    let (addr, _) = raw_server(|mut s| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {SIZE}\r\n\r\n"
        );
        if s.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..SIZE / chunk.len() {
            // The client stops reading at its cap and closes: that ends the stream here.
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let o = run(&format!(
        "url = {}\nmax_body = \"1KiB\"\nexpect = [ {{ body = true, starts_with = \"xxxx\" }} ]",
        q(format!("http://{addr}/big"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(number(&o, "body_bytes"), 1024.0);
    assert!(
        o.message.contains("truncated at 1024 bytes"),
        "{}",
        o.message
    );
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// An HTTP/1.1 server that keeps connections alive and answers every request with 200 "ok".
async fn keepalive_server() -> (String, Arc<AtomicUsize>) {
    let (addr, accepted) = raw_server(|mut s| async move {
        while read_head(&mut s).await.is_some() {
            let reply =
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
            if s.write_all(reply).await.is_err() {
                return;
            }
        }
    })
    .await;
    (format!("http://{addr}/ok"), accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_connection_per_run_by_default() {
    let (url, accepted) = keepalive_server().await;
    let check = load_check(&format!("url = {}", q(url)));
    for _ in 0..3 {
        let o = execute(&check).await;
        assert_outcome(&o, Status::Pass, Reason::Ok);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_reuses_the_connection() {
    let (url, accepted) = keepalive_server().await;
    let check = load_check(&format!("url = {}\nkeepalive = true", q(url)));
    for _ in 0..3 {
        let o = execute(&check).await;
        assert_outcome(&o, Status::Pass, Reason::Ok);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// TLS.

#[tokio::test(flavor = "multi_thread")]
async fn tls_verification_is_on_by_default() {
    install_provider();
    let pki = Pki::new();
    let (url, seen) = tls_target(pki.server_config(false)).await;
    let o = run(&format!("url = {}", q(&url))).await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert!(o.message.starts_with("tls: "), "{}", o.message);
    assert!(
        o.message.to_lowercase().contains("certificate"),
        "{}",
        o.message
    );
    assert!(o.observations.get("status").is_none());
    // The server never got a request.
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|h| matches!(h, Handshake::Failed(_))),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_ca_file_trusts_a_private_ca() {
    install_provider();
    let pki = Pki::new();
    let (url, seen) = tls_target(pki.server_config(false)).await;
    let o = run(&format!(
        "url = {}\ntls = {{ ca_file = {} }}\nexpect = [ {{ status = 200 }}, {{ body = true, eq = \"secured\\n\" }} ]",
        q(&url),
        q(pki.path("ca.pem"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(
        seen.lock().unwrap().clone(),
        [Handshake::Done {
            client_cert: false,
            request: "GET /secure HTTP/1.1".into()
        }]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verify_false_accepts_an_untrusted_certificate() {
    install_provider();
    let pki = Pki::new();
    let (url, seen) = tls_target(pki.server_config(false)).await;
    let o = run(&format!("url = {}\ntls = {{ verify = false }}", q(&url))).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_needs_the_client_certificate() {
    install_provider();
    let pki = Pki::new();
    let (url, seen) = tls_target(pki.server_config(true)).await;

    let o = run(&format!(
        "url = {}\ntls = {{ ca_file = {} }}",
        q(&url),
        q(pki.path("ca.pem"))
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(matches!(&seen[0], Handshake::Failed(_)), "{seen:?}");
    }

    let o = run(&format!(
        "url = {}\ntls = {{ ca_file = {}, cert_file = {}, key_file = {} }}",
        q(&url),
        q(pki.path("ca.pem")),
        q(pki.path("client.pem")),
        q(pki.path("client.key")),
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1],
        Handshake::Done {
            client_cert: true,
            request: "GET /secure HTTP/1.1".into()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile targets.

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_reason_connect() {
    let port = closed_port();
    let o = run(&format!(
        "url = \"http://127.0.0.1:{port}/\"\ntimeout = \"2s\""
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert!(o.message.starts_with("connect: "), "{}", o.message);
    assert!(o.failed_assertions.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_times_out_within_the_bound() {
    let (addr, accepted) = raw_server(hold).await;
    let o = run(&format!(
        "url = {}\ntimeout = \"500ms\"",
        q(format!("http://{addr}/"))
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    assert_eq!(o.message, "no result within the 500ms timeout");
    assert!(
        o.duration >= Duration::from_millis(450) && o.duration < Duration::from_millis(1000),
        "{:?}",
        o.duration
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_times_out() {
    let (addr, _) = raw_server(|mut s| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly this";
        if s.write_all(partial).await.is_ok() {
            hold(s).await;
        }
    })
    .await;
    let o = run(&format!(
        "url = {}\ntimeout = \"500ms\"",
        q(format!("http://{addr}/"))
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    // Ends at its timeout (the slack is for a loaded machine, not a goal).
    assert!(o.duration < Duration::from_millis(1000), "{:?}", o.duration);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_instead_of_http_is_reason_protocol() {
    let (addr, _) = raw_server(|mut s| async move {
        if read_head(&mut s).await.is_some() {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
            let _ = s.shutdown().await;
        }
    })
    .await;
    let o = run(&format!(
        "url = {}\ntimeout = \"2s\"",
        q(format!("http://{addr}/"))
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert!(o.message.starts_with("protocol: "), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_mid_body_is_a_protocol_failure() {
    let (addr, _) = raw_server(|mut s| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let mut reply = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n".to_vec();
        reply.extend_from_slice(&[b'x'; 5000]);
        let _ = s.write_all(&reply).await;
        // Closing with a zero linger sends RST instead of FIN.
        let _ = s.set_zero_linger();
        drop(s);
    })
    .await;
    let o = run(&format!(
        "url = {}\ntimeout = \"2s\"",
        q(format!("http://{addr}/"))
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_cut_short_is_a_protocol_failure_that_keeps_the_status() {
    let (addr, _) = raw_server(|mut s| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly this")
            .await;
        let _ = s.shutdown().await;
    })
    .await;
    let o = run(&format!(
        "url = {}\ntimeout = \"2s\"",
        q(format!("http://{addr}/"))
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert!(
        o.message
            .starts_with("HTTP 200, reading the body: protocol: "),
        "{}",
        o.message
    );
    assert_eq!(number(&o, "status"), 200.0);
}

// ---------------------------------------------------------------------------------------------
// Secrets stay out of outcomes.

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_outcomes() {
    const VAR: &str = "BAKEWATCH_HTTP_CHECK_TEST_REDACT_TOKEN";
    let Some(token) = env_in_child("secrets_never_appear_in_outcomes", VAR).await else {
        return;
    };
    let t = target().await;
    // This time the check sits inline in the daemon file.
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("bakewatch.toml");
    std::fs::write(
        &path,
        format!(
            r#"[[check]]
name = "echo"
type = "http"
url = {}
auth = {{ bearer = {{ env = {} }} }}
expect = [ {{ body = true, contains = "nope" }} ]
"#,
            q(t.url("/echo-auth")),
            q(VAR)
        ),
    )
    .unwrap();
    let config = bakewatch::config::load(&path).unwrap();

    // The server echoed the token, so the raw outcome holds it...
    let raw = execute(&config.checks[0]).await;
    assert_outcome(&raw, Status::Fail, Reason::Assertion);
    assert!(raw.message.contains(&token), "{raw:#?}");

    // ...and the daemon's path scrubs it everywhere.
    let rt = Runtime::new(config, Arc::new(Metrics::new()));
    let o = rt.run_check(&rt.checks[0]).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(!o.message.contains(&token), "{o:#?}");
    assert!(o.message.contains("Bearer <redacted>"), "{}", o.message);
    assert_eq!(o.failed_assertions.len(), 1);
    for f in &o.failed_assertions {
        assert!(!f.actual.contains(&token), "{f:#?}");
        assert!(!f.expected.contains(&token), "{f:#?}");
    }
    assert_eq!(
        o.failed_assertions[0].actual,
        r#""you sent: Bearer <redacted>""#
    );

    // The server did get the real token.
    let seen = t.seen();
    assert_eq!(seen.len(), 2);
    for s in seen {
        assert_eq!(
            s.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// {{ deployment.* }}

fn deployment(version: &str) -> Option<Arc<DeploymentVars>> {
    Some(Arc::new(DeploymentVars {
        id: "shop-42".into(),
        version: version.into(),
        environment: "staging".into(),
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_variables_reach_the_url_headers_and_expectations() {
    let t = target().await;
    let check = load_check(&format!(
        "service = \"shop\"\nurl = {}\nheaders = {{ x-deployment = \"{{{{ deployment.id }}}}@{{{{ deployment.environment }}}}\" }}\nexpect = [ {{ header = \"x-build\", eq = \"{{{{ deployment.version }}}}\" }} ]",
        q(t.url("/cookies?v={{ deployment.version }}"))
    ));
    let o = execute_with(&check, deployment("1.2.3")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let seen = t.only();
    assert_eq!(seen.path, "/cookies");
    assert_eq!(seen.query.as_deref(), Some("v=1.2.3"));
    assert_eq!(seen.header("x-deployment"), Some("shop-42@staging"));

    // A newer version is registered, the old one still answers: the commonest silent failure.
    let o = execute_with(&check, deployment("1.3.0")).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(
        o.message,
        "header x-build: expected eq \"1.3.0\", got \"1.2.3\""
    );

    // Before any deployment, a request naming one cannot be made.
    let o = execute(&check).await;
    assert_outcome(&o, Status::Error, Reason::Config);
    assert!(
        o.message.contains("service \"shop\" has no deployment yet"),
        "{}",
        o.message
    );
    assert_eq!(t.seen().len(), 2, "no request without a deployment");
}

#[tokio::test(flavor = "multi_thread")]
async fn before_the_first_deployment_such_expectations_are_skipped_and_said_so() {
    let t = target().await;
    let check = load_check(&format!(
        "service = \"shop\"\nurl = {}\nexpect = [ {{ status = 200 }}, {{ header = \"x-build\", eq = \"{{{{ deployment.version }}}}\" }} ]",
        q(t.url("/cookies"))
    ));
    let o = execute(&check).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(
        o.skipped_assertions,
        vec!["header x-build eq \"{{ deployment.version }}\"".to_string()]
    );
    assert!(
        o.message
            .ends_with("(1 assertion skipped until service \"shop\" has a deployment)"),
        "{}",
        o.message
    );
    // The status assertion is still judged.
    let check = load_check(&format!(
        "service = \"shop\"\nurl = {}\nexpect = [ {{ status = 200 }}, {{ header = \"x-build\", eq = \"{{{{ deployment.version }}}}\" }} ]",
        q(t.url("/status/500"))
    ));
    assert_outcome(&execute(&check).await, Status::Fail, Reason::Status);
}
