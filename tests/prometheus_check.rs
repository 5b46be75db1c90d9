//! Integration tests of the `prometheus` check against a real Prometheus server (Debian
//! package `prometheus`, `/usr/bin/prometheus`), started by the test on a free loopback port
//! with its own temp storage and basic auth, scraping every second a small axum app in this
//! process that exports `http_requests_total{status="200"|"500"}` (moved by a fixed amount per
//! scrape, so rates are exact) and a `test_temperature` gauge with three series.
//!
//! The checks run through `runtime::execute` after `config::load` of a temp config, as the
//! daemon runs them. Misbehaving endpoints that Prometheus itself never produces (a proxy
//! answering HTML, a server that accepts and never answers) are small loopback servers.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bakewatch::checks::{Observation, Outcome, Reason, Status};
use bakewatch::config::CheckConfig;
use bakewatch::runtime::execute;
use common::{free_port, run_cli, wait_until, write_config};
use tempfile::TempDir;
use tokio::net::TcpListener;

/// The issue's reference rule: the share of 5xx responses over five minutes.
const REFERENCE_QUERY: &str =
    r#"sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))"#;

const USER: &str = "bakewatch";
const PASSWORD: &str = "prom-s3cret-pw";
/// bcrypt (cost 4) of [`PASSWORD`], for Prometheus' `--web.config.file`.
const PASSWORD_HASH: &str = "$2y$04$6h6eSnrokiShrr6.CPIcpetAKFPZmin0uhjaXyEHZvash.nDsz72W";
/// The token the bearer-auth proxy in front of Prometheus wants.
const PROXY_TOKEN: &str = "proxy-token-4711";

// ---------------------------------------------------------------------------------------------
// Helpers.

fn load_check(keys: &str) -> Arc<CheckConfig> {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("checks")).unwrap();
    std::fs::write(
        dir.path().join("bakewatch.toml"),
        "checks = [\"checks/*.toml\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("checks/p.toml"),
        format!("[[check]]\nname = \"probe\"\ntype = \"prometheus\"\n{keys}\n"),
    )
    .unwrap();
    match bakewatch::config::load(&dir.path().join("bakewatch.toml")) {
        Ok(config) => config.checks[0].clone(),
        Err(e) => panic!("the config does not load:\n{e}\n--- check keys ---\n{keys}"),
    }
}

fn number(o: &Outcome, name: &str) -> f64 {
    match o.observations.get(name) {
        Some(Observation::Number(n)) => *n,
        other => panic!("observation {name:?} is not a number: {other:?} in {o:#?}"),
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

fn brief(o: &Outcome) -> String {
    format!("{} / {}: {}", o.status, o.reason, o.message)
}

// ---------------------------------------------------------------------------------------------
// The scraped app.

/// Counters of the scraped app; each scrape adds `*_step` to them.
#[derive(Default)]
struct Traffic {
    ok: AtomicU64,
    errors: AtomicU64,
    ok_step: AtomicU64,
    error_step: AtomicU64,
    scrapes: AtomicU64,
}

struct App {
    addr: SocketAddr,
    traffic: Arc<Traffic>,
}

impl App {
    /// Starts with `ok_step` good and `error_step` failed requests per scrape. Counters start
    /// high, so `rate()` never extrapolates towards zero and the ratio stays exact.
    async fn start(ok_step: u64, error_step: u64) -> App {
        let traffic = Arc::new(Traffic::default());
        traffic.ok.store(1_000_000, Ordering::SeqCst);
        traffic.errors.store(1_000_000, Ordering::SeqCst);
        traffic.ok_step.store(ok_step, Ordering::SeqCst);
        traffic.error_step.store(error_step, Ordering::SeqCst);
        let t = traffic.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let t = t.clone();
                async move {
                    let ok =
                        t.ok.fetch_add(t.ok_step.load(Ordering::SeqCst), Ordering::SeqCst);
                    let errors = t
                        .errors
                        .fetch_add(t.error_step.load(Ordering::SeqCst), Ordering::SeqCst);
                    t.scrapes.fetch_add(1, Ordering::SeqCst);
                    format!(
                        "# TYPE http_requests_total counter\n\
                         http_requests_total{{status=\"200\"}} {ok}\n\
                         http_requests_total{{status=\"500\"}} {errors}\n\
                         # TYPE test_temperature gauge\n\
                         test_temperature{{room=\"a\"}} 1\n\
                         test_temperature{{room=\"b\"}} 5\n\
                         test_temperature{{room=\"c\"}} 3\n"
                    )
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        App { addr, traffic }
    }

    fn set_steps(&self, ok_step: u64, error_step: u64) {
        self.traffic.ok_step.store(ok_step, Ordering::SeqCst);
        self.traffic.error_step.store(error_step, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// The Prometheus server.

fn prometheus_binary() -> PathBuf {
    let path = std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    assert!(
        path.exists(),
        "{} not found: install the Debian package `prometheus` (apt-get install prometheus) \
         or set PROMETHEUS_BIN",
        path.display()
    );
    path
}

/// A disposable Prometheus on 127.0.0.1, killed on drop.
struct Prometheus {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts a server scraping `app` every second; retries on another port when the free
    /// port chosen was taken in between.
    async fn start(app: &App) -> Prometheus {
        let dir = TempDir::new().unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 500ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: shop\n    static_configs:\n      - targets: ['{}']\n",
                app.addr
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("web.yml"),
            format!("basic_auth_users:\n  {USER}: {PASSWORD_HASH}\n"),
        )
        .unwrap();
        let mut prom = Prometheus {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..3 {
            prom.port = free_port();
            if prom.spawn().await {
                return prom;
            }
        }
        panic!("Prometheus could not bind a port:\n{}", prom.log());
    }

    /// Spawns the server on `self.port` and waits until it is ready; false when the port was
    /// taken.
    async fn spawn(&mut self) -> bool {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("prometheus.log"))
            .unwrap();
        let child = Command::new(prometheus_binary())
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--web.config.file={}", d.join("web.yml").display()))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        self.child = Some(child);
        let client = common::http_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                if self.log().contains("address already in use") {
                    return false;
                }
                panic!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            let ready = client
                .get(format!("{}/-/ready", self.url()))
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within 20s:\n{}",
                self.log()
            );
            tokio::time::sleep(common::POLL).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Kills the server (as a crash would).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, with the same storage.
    async fn restart(&mut self) {
        assert!(
            self.spawn().await,
            "the port {} was taken meanwhile",
            self.port
        );
    }

    /// The keys of a check against this server, with working credentials.
    fn check(&self, keys: &str) -> Arc<CheckConfig> {
        load_check(&format!(
            "url = \"{}\"\nauth = {{ username = \"{USER}\", password = \"{PASSWORD}\" }}\n{keys}",
            self.url()
        ))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A reverse proxy wanting a bearer token in front of Prometheus (Prometheus itself only
/// knows basic auth), as oauth2-proxy-style setups put it.
async fn bearer_proxy(prometheus: String) -> String {
    let client = common::http_client();
    let app = Router::new().fallback(move |headers: HeaderMap, uri: Uri| {
        let (client, prometheus) = (client.clone(), prometheus.clone());
        async move {
            let wanted = format!("Bearer {PROXY_TOKEN}");
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&wanted) {
                return (StatusCode::UNAUTHORIZED, "no").into_response();
            }
            let r = client
                .get(format!("{prometheus}{uri}"))
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await
                .unwrap();
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            (status, r.bytes().await.unwrap()).into_response()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------------
// Against the real server.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_checks_against_a_real_prometheus() {
    let app = App::start(99, 1).await;
    let mut prom = Prometheus::start(&app).await;

    // The reference rule, passing at a 1 % error rate once rate() has two samples.
    let reference = prom.check(&format!(
        "query = '{REFERENCE_QUERY}'\nexpect = [{{ observe = \"value\", lt = 0.05 }}]"
    ));
    let o = wait_until(
        "the reference rule passes",
        Duration::from_secs(20),
        async || {
            let o = execute(&reference).await;
            if o.status == Status::Pass {
                Ok(o)
            } else {
                Err(brief(&o))
            }
        },
    )
    .await;
    let ratio = number(&o, "value");
    assert!((0.0099..0.0101).contains(&ratio), "{o:#?}");
    assert_eq!(number(&o, "series"), 1.0);
    assert!(o.message.starts_with("value 0.01"), "{o:#?}");

    let run = async |keys: &str| execute(&prom.check(keys)).await;

    // Several series: an aggregate is needed.
    let o = run("query = 'test_temperature'").await;
    assert_outcome(&o, Status::Error, Reason::Config);
    assert_eq!(
        o.message,
        "the query returned 3 series; set `aggregate` (max, min, sum) or aggregate in the query"
    );
    assert_eq!(number(&o, "series"), 3.0);
    for (aggregate, want) in [("max", 5.0), ("min", 1.0), ("sum", 9.0)] {
        let o = run(&format!(
            "query = 'test_temperature'\naggregate = \"{aggregate}\"\nexpect = [{{ observe = \"series\", eq = 3 }}]"
        ))
        .await;
        assert_outcome(&o, Status::Pass, Reason::Ok);
        assert_eq!(number(&o, "value"), want, "{aggregate}");
        assert_eq!(o.message, format!("{aggregate} of 3 series: {want}"));
    }

    // One series, a scalar, and infinities.
    let o = run("query = 'test_temperature{room=\"b\"}'").await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!((number(&o, "value"), number(&o, "series")), (5.0, 1.0));
    assert_eq!(o.message, "value 5");
    let o = run("query = 'scalar(test_temperature{room=\"c\"}) * 2'").await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(number(&o, "value"), 6.0);
    let o = run("query = '1/0'\nexpect = [{ observe = \"value\", lt = 1 }]").await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(number(&o, "value"), f64::INFINITY);

    // No data: an empty result, and NaN (0/0, a ratio without traffic).
    let empty = "query = 'test_temperature{room=\"attic\"}'";
    let o = run(empty).await;
    assert_outcome(&o, Status::Error, Reason::NoData);
    assert_eq!(o.message, "no data: the query returned no series");
    assert_eq!(number(&o, "series"), 0.0);
    let o = run(&format!("{empty}\nno_data = \"fail\"")).await;
    assert_outcome(&o, Status::Fail, Reason::NoData);
    let o = run(&format!(
        "{empty}\nno_data = \"pass\"\nexpect = [{{ observe = \"value\", lt = 1 }}]"
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let o = run("query = '0/0'").await;
    assert_outcome(&o, Status::Error, Reason::NoData);
    assert_eq!(
        o.message,
        "no data: the value is NaN (a ratio without traffic?)"
    );

    // Queries that Prometheus rejects: at parse time and at execution time.
    let o = run("query = 'sum(rate(http_requests_total[5m]'").await;
    assert_outcome(&o, Status::Error, Reason::Query);
    assert!(
        o.message.starts_with("query failed (bad_data): ") && o.message.contains("parse error"),
        "{o:#?}"
    );
    let o = run(r#"query = 'label_replace(test_temperature, "room", "x", "room", ".*")'"#).await;
    assert_outcome(&o, Status::Error, Reason::Query);
    assert!(
        o.message.starts_with("query failed (execution): "),
        "{o:#?}"
    );
    let o = run("query = 'test_temperature[1m]'").await;
    assert_outcome(&o, Status::Error, Reason::Config);
    assert!(o.message.contains("range vector (matrix)"), "{o:#?}");

    // Credentials.
    let url = prom.url();
    let o = execute(&load_check(&format!(
        "url = \"{url}\"\nquery = 'up'\nauth = {{ username = \"{USER}\", password = \"wrong\" }}"
    )))
    .await;
    assert_outcome(&o, Status::Error, Reason::Auth);
    assert_eq!(o.message, "Prometheus answered HTTP 401: check `auth`");
    let o = execute(&load_check(&format!("url = \"{url}\"\nquery = 'up'"))).await;
    assert_outcome(&o, Status::Error, Reason::Auth);
    let proxy = bearer_proxy(url.clone()).await;
    let o = execute(&load_check(&format!(
        "url = \"{proxy}\"\nquery = 'test_temperature{{room=\"a\"}}'\nauth = {{ bearer = \"{PROXY_TOKEN}\" }}"
    )))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(number(&o, "value"), 1.0);
    let o = execute(&load_check(&format!(
        "url = \"{proxy}\"\nquery = 'up'\nauth = {{ bearer = \"not-the-token\" }}"
    )))
    .await;
    assert_outcome(&o, Status::Error, Reason::Auth);

    // A bad deployment: half the requests fail; the reference rule (over its full 5m window)
    // turns to fail within a few scrapes.
    app.set_steps(5000, 5000);
    let o = wait_until(
        "the reference rule fails at a high error rate",
        Duration::from_secs(15),
        async || {
            let o = execute(&reference).await;
            if o.status == Status::Fail {
                Ok(o)
            } else {
                Err(brief(&o))
            }
        },
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    let ratio = number(&o, "value");
    assert!(ratio > 0.3 && ratio <= 0.5, "{o:#?}");
    assert!(
        o.message
            .starts_with("observe value: expected lt 0.05, got 0.4"),
        "{o:#?}"
    );
    assert!(app.traffic.scrapes.load(Ordering::SeqCst) >= 3);

    // Prometheus stops: bakewatch cannot judge — an error, never a failure of the target.
    let steady = prom.check("query = 'test_temperature{room=\"b\"}'");
    assert_outcome(&execute(&steady).await, Status::Pass, Reason::Ok);
    prom.kill();
    let o = execute(&steady).await;
    assert_outcome(&o, Status::Error, Reason::Connect);
    assert!(
        o.message.starts_with("cannot reach Prometheus: connect: "),
        "{o:#?}"
    );
    // It returns: the same check (no reload, no new client) recovers by itself.
    prom.restart().await;
    let o = wait_until(
        "the check recovers after the restart",
        Duration::from_secs(15),
        async || {
            let o = execute(&steady).await;
            if o.status == Status::Pass {
                Ok(o)
            } else {
                Err(brief(&o))
            }
        },
    )
    .await;
    assert_eq!(number(&o, "value"), 5.0);
}

// ---------------------------------------------------------------------------------------------
// Without a Prometheus.

#[tokio::test]
async fn an_unreachable_prometheus_is_an_error() {
    let port = free_port();
    let o = execute(&load_check(&format!(
        "url = \"http://127.0.0.1:{port}\"\nquery = 'up'"
    )))
    .await;
    assert_outcome(&o, Status::Error, Reason::Connect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_that_never_answers_ends_at_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts, reads nothing, answers nothing; holds the connections open.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let check = load_check(&format!(
        "url = \"http://{addr}\"\nquery = 'up'\ntimeout = \"500ms\""
    ));
    let start = Instant::now();
    let o = execute(&check).await;
    // Prometheus is the source, not the target: a hung source means "could not judge".
    assert_outcome(&o, Status::Error, Reason::Timeout);
    assert!(o.duration < Duration::from_millis(600), "{o:#?}");
    assert!(start.elapsed() < Duration::from_millis(600));
}

#[tokio::test]
async fn answers_that_are_not_the_query_api_are_protocol_errors() {
    let app = Router::new()
        .route(
            "/gateway/api/v1/query",
            get(|| async {
                (
                    StatusCode::BAD_GATEWAY,
                    "<html><body>502 Bad Gateway</body></html>",
                )
            }),
        )
        .route("/text/api/v1/query", get(|| async { "hello" }))
        .route(
            "/odd/api/v1/query",
            get(|| async {
                Response::builder()
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(
                        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"many"]}]}}"#,
                    ))
                    .unwrap()
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let run = async |prefix: &str| {
        execute(&load_check(&format!(
            "url = \"http://{addr}/{prefix}\"\nquery = 'up'"
        )))
        .await
    };
    let o = run("gateway").await;
    assert_outcome(&o, Status::Error, Reason::Protocol);
    assert_eq!(
        o.message,
        "Prometheus answered HTTP 502: <html><body>502 Bad Gateway</body></html>"
    );
    let o = run("text").await;
    assert_outcome(&o, Status::Error, Reason::Protocol);
    assert!(
        o.message.starts_with("not a Prometheus query API answer: "),
        "{o:#?}"
    );
    let o = run("odd").await;
    assert_outcome(&o, Status::Error, Reason::Protocol);
    assert_eq!(
        o.message,
        "Prometheus sent a sample value that is not a number: \"many\""
    );
}

// ---------------------------------------------------------------------------------------------
// validate

#[test]
fn bad_prometheus_configs_are_located() {
    let checks = "\
[[check]]
name = \"no-query\"
type = \"prometheus\"
url = \"http://127.0.0.1:9090\"

[[check]]
name = \"empty-query\"
type = \"prometheus\"
url = \"http://127.0.0.1:9090\"
query = \" \"

[[check]]
name = \"bad-url\"
type = \"prometheus\"
url = \"ftp://127.0.0.1:9090\"
query = \"up\"

[[check]]
name = \"url-with-query\"
type = \"prometheus\"
url = \"http://127.0.0.1:9090/api/v1/query?query=up\"
query = \"up\"

[[check]]
name = \"bad-aggregate\"
type = \"prometheus\"
url = \"http://127.0.0.1:9090\"
query = \"up\"
aggregate = \"avg\"

[[check]]
name = \"bad-no-data\"
type = \"prometheus\"
url = \"http://127.0.0.1:9090\"
query = \"up\"
no_data = \"ignore\"

[[check]]
name = \"bad-auth\"
type = \"prometheus\"
url = \"http://127.0.0.1:9090\"
query = \"up\"
auth = { username = \"u\" }

[[check]]
name = \"bad-observation\"
type = \"prometheus\"
url = \"http://127.0.0.1:9090\"
query = \"up\"
expect = [{ observe = \"values\", lt = 1 }]
";
    let dir = write_config("checks = [\"checks/*.toml\"]\n", &[("a.toml", checks)]);
    let out = run_cli(&["validate", "-c", "bakewatch.toml"], dir.path(), &[]);
    assert_eq!(out.code, Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let expected = [
        "checks/a.toml:1:1: check `no-query` is missing required key `query`",
        "checks/a.toml:10:9: query: must not be empty",
        "checks/a.toml:15:7: url: scheme \"ftp\" is not http or https",
        "checks/a.toml:21:7: url: \"http://127.0.0.1:9090/api/v1/query?query=up\": give the Prometheus base URL, without a query string",
        "checks/a.toml:29:13: aggregate: must be \"max\", \"min\" or \"sum\", found \"avg\" (other aggregations belong in the query, e.g. avg(…))",
        "checks/a.toml:36:11: no_data: must be \"error\", \"fail\" or \"pass\", found \"ignore\"",
        "checks/a.toml:43:8: auth: write { bearer = … } or { username = …, password = … }",
        "checks/a.toml:50:23: unknown observation `values` for this check type (one of value, series)",
        "bakewatch: 8 problems in the configuration",
    ];
    assert_eq!(lines, expected, "{out}");
}
