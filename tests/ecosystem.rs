//! bakewatch among the tools around it:
//!
//! - a real Prometheus (`/usr/bin/prometheus`) scrapes a real daemon, and its query API sees
//!   `up{job="bakewatch"} == 1` and the checks' `bakewatch_check_success` series; every query
//!   of the Grafana dashboard is accepted by it;
//! - the Grafana dashboard names only metric families the daemon exports;
//! - the alerting rules in `contrib/prometheus/` pass `promtool check rules` and their unit
//!   tests (`promtool test rules`), the post-deploy tightening pattern included;
//! - the JSON Schema of the config (`config/schema/`, `bakewatch schema`) agrees with the
//!   config reader: every shipped example validates, and configs the reader rejects are
//!   rejected by the schema too.
//!
//! Everything listens on 127.0.0.1; every wait is bounded.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Daemon, Target, q, repo_root, run_cli, wait_until};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const INSTALL_HINT: &str = "install it with `apt-get install prometheus` (scripts/test does)";

fn require(tool: &str) {
    assert!(
        Path::new(tool).exists(),
        "{tool} is missing: {INSTALL_HINT}"
    );
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus

/// A Prometheus server on 127.0.0.1 with its TSDB in a temp dir; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) every second as job "bakewatch", and
    /// waits until it is ready.
    async fn start(target: &str) -> Prometheus {
        require(PROMETHEUS);
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: bakewatch\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let log_path = dir.path().join("prometheus.log");
        let mut last = String::new();
        // The port is free when chosen but may be taken before Prometheus binds it: retry then.
        for _ in 0..3 {
            let port = common::free_port();
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut child = Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS}: {e}; {INSTALL_HINT}"));
            match wait_ready(&mut child, port, &log_path).await {
                Ok(()) => return Prometheus { child, port, dir },
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = e;
                }
            }
        }
        panic!("Prometheus did not start: {last}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query; the JSON answer, whatever its status.
    async fn query(&self, expr: &str) -> serde_json::Value {
        let r = common::http_client()
            .get(self.url("/api/v1/query"))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("query Prometheus");
        r.json().await.expect("Prometheus answers JSON")
    }

    /// The result vector of a successful instant query.
    async fn vector(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let v = self.query(expr).await;
        if v["status"] != "success" {
            return Err(format!("{expr}: {v}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Waits until the Prometheus on `port` is ready; an early exit is an error with its log.
async fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let http = common::http_client();
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Err(format!(
                "prometheus exited ({status}); log:\n{}",
                read_log()
            ));
        }
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/-/ready"))
            .send()
            .await
            && r.status().is_success()
        {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("not ready after 30s; log:\n{}", read_log()));
        }
        tokio::time::sleep(common::POLL).await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_daemon() {
    let target = Target::start().await;
    let checks = format!(
        "[[check]]\nname = \"shop-api\"\nservice = \"shop\"\ntype = \"http\"\nurl = {}\n\
         interval = \"500ms\"\n\n\
         [[check]]\nname = \"shop-port\"\nservice = \"shop\"\ntype = \"tcp\"\n\
         address = \"127.0.0.1:{}\"\ninterval = \"500ms\"\n",
        q(target.url("/health")),
        target.port()
    );
    let daemon = Daemon::start(&[("shop.toml", &checks)]).await;
    daemon
        .wait_metric(
            "bakewatch_check_success",
            &[("check", "shop-port")],
            Duration::from_secs(20),
            |v| v == 1.0,
        )
        .await;
    let prom = Prometheus::start(&format!("127.0.0.1:{}", daemon.port)).await;

    wait_until(
        "Prometheus scrapes bakewatch (up == 1)",
        Duration::from_secs(60),
        async || {
            let up = prom.vector("up{job=\"bakewatch\"} == 1").await?;
            if up.len() == 1 {
                Ok(())
            } else {
                Err(format!("up: {up:?}; log:\n{}", prom.log()))
            }
        },
    )
    .await;
    let series = wait_until(
        "Prometheus has bakewatch_check_success for both checks",
        Duration::from_secs(30),
        async || {
            let v = prom
                .vector("bakewatch_check_success{job=\"bakewatch\", service=\"shop\"} == 1")
                .await?;
            let checks: BTreeSet<String> = v
                .iter()
                .filter_map(|s| s["metric"]["check"].as_str().map(str::to_string))
                .collect();
            if checks.len() == 2 {
                Ok(v)
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
    .await;
    let mut seen: Vec<(String, String)> = series
        .iter()
        .map(|s| {
            (
                s["metric"]["check"].as_str().unwrap_or("").to_string(),
                s["metric"]["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("shop-api".to_string(), "http".to_string()),
            ("shop-port".to_string(), "tcp".to_string())
        ]
    );

    // Every query of the dashboard is valid PromQL for this Prometheus.
    for expr in dashboard_queries() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "5m")
            .replace("$job", "bakewatch")
            .replace("$service", ".*");
        let v = prom.query(&expr).await;
        assert_eq!(v["status"], "success", "dashboard query {expr}: {v}");
    }
}

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard

fn dashboard() -> serde_json::Value {
    let path = repo_root().join("contrib/grafana/bakewatch-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression in the dashboard (panel targets and annotations).
fn dashboard_queries() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, x) in map {
                    match (k.as_str(), x) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard(), &mut out);
    out
}

/// `bakewatch_…` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"bakewatch_[a-z_]+").expect("regex");
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn the_dashboard_is_a_grafana_dashboard() {
    let d = dashboard();
    assert_eq!(d["uid"], "bakewatch");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Checks",
        "Check duration p95",
        "Verdict of the current deployment",
        "Post-deploy window",
        "Alerts",
        "Notifications",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
    }
    assert!(dashboard_queries().len() >= panels.len());
}

/// A TLS server on 127.0.0.1 with the test CA's server certificate: handshakes, then holds.
async fn tls_server(pki: &common::pki::Pki) -> (u16, tokio::task::JoinHandle<()>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(false)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    drop(tls);
                }
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_queries_only_metrics_the_daemon_exports() {
    let target = Target::start().await;
    let pki = common::pki::Pki::new();
    let (tls_port, tls_task) = tls_server(&pki).await;
    let closed = common::free_port();
    // A check of every family's kind: http (passing and failing), a journey, tls (certificate
    // expiry); a rule that fires on the failing check and notifies a webhook nobody answers
    // (alerts, notifications, the queue); a deployment (window, info, verdict).
    let checks = format!(
        "[[check]]\nname = \"api\"\nservice = \"shop\"\ntype = \"http\"\nurl = {ok}\ninterval = \"300ms\"\n\n\
         [[check]]\nname = \"broken\"\nservice = \"shop\"\ntype = \"http\"\nurl = {bad}\ninterval = \"300ms\"\n\n\
         [[check]]\nname = \"cert\"\nservice = \"shop\"\ntype = \"tls\"\naddress = \"127.0.0.1:{tls_port}\"\n\
         server_name = \"localhost\"\nca_file = {ca}\ninterval = \"1s\"\n\n\
         [[check]]\nname = \"journey\"\nservice = \"shop\"\ntype = \"journey\"\nbase_url = {base}\ninterval = \"500ms\"\n\n\
         [[check.step]]\nname = \"home\"\npath = \"/\"\nexpect = [ {{ status = 200 }} ]\n\n\
         [[rule]]\nname = \"broken-fails\"\ncheck = \"broken\"\nsignal = \"failure_ratio\"\nover = \"1m\"\n\
         above = 0.5\nnotify = [\"hook\"]\n",
        ok = q(target.url("/ok")),
        bad = q(target.url("/status/500")),
        ca = q(pki.path("ca.pem")),
        base = q(target.url("")),
    );
    let extra = format!(
        "[scheduler]\njitter = \"0s\"\n\n\
         [[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{closed}/hook\"\n\
         timeout = \"1s\"\n"
    );
    let daemon = Daemon::start_with(&extra, &[("shop.toml", &checks)]).await;
    let r = common::http_client()
        .post(daemon.url("/api/v1/deployments"))
        .json(&serde_json::json!({ "service": "shop", "version": "2.0.0", "environment": "test" }))
        .send()
        .await
        .expect("register a deployment");
    assert!(r.status().is_success(), "register: {}", r.status());

    let wanted = metric_names(&dashboard_queries().join("\n"));
    assert!(wanted.len() >= 12, "{wanted:?}");
    let families = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .flat_map(|(name, kind)| {
                let mut names = vec![name.clone()];
                if kind == "histogram" {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.push(format!("{name}{s}"));
                    }
                }
                names
            })
            .collect()
    };
    let missing = wait_until(
        "every metric the dashboard names is exported",
        Duration::from_secs(30),
        async || {
            let exported = families(&daemon.metrics().await);
            let missing: Vec<&String> = wanted.iter().filter(|n| !exported.contains(*n)).collect();
            if missing.is_empty() {
                Ok(missing.len())
            } else {
                Err(format!("missing {missing:?}; exported {exported:?}"))
            }
        },
    )
    .await;
    assert_eq!(missing, 0);
    tls_task.abort();
}

// ---------------------------------------------------------------------------------------------
// Prometheus rules

fn rules_dir() -> PathBuf {
    repo_root().join("contrib/prometheus")
}

#[test]
fn the_alerting_rules_pass_promtool_check_rules() {
    require(PROMTOOL);
    let out = run_cli_tool(PROMTOOL, &["check", "rules", "bakewatch.rules.yml"]);
    assert!(out.0, "promtool check rules:\n{}", out.1);
    assert!(out.1.contains("SUCCESS"), "{}", out.1);
}

#[test]
fn the_alerting_rules_pass_their_unit_tests() {
    require(PROMTOOL);
    let out = run_cli_tool(PROMTOOL, &["test", "rules", "bakewatch.rules.test.yml"]);
    assert!(out.0, "promtool test rules:\n{}", out.1);
    // The tightening pattern is among what is tested.
    let tests = std::fs::read_to_string(rules_dir().join("bakewatch.rules.test.yml"))
        .expect("read the tests");
    assert!(tests.contains("bakewatch_deployment_window_active"));
    assert!(tests.contains("alertname: ServiceErrorRateHigh"));
}

#[test]
fn the_alerting_rules_use_only_metrics_the_daemon_defines() {
    let rules =
        std::fs::read_to_string(rules_dir().join("bakewatch.rules.yml")).expect("read rules");
    let source = std::fs::read_to_string(repo_root().join("src/metrics.rs")).expect("metrics.rs");
    for name in metric_names(&rules) {
        let family = name.strip_prefix("bakewatch_").expect("prefix");
        assert!(
            source.contains(&format!("\"{family}\"")),
            "{name} is not defined in src/metrics.rs"
        );
    }
}

/// Runs a tool in `contrib/prometheus` with a deadline; (success, stdout + stderr).
fn run_cli_tool(tool: &str, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(rules_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}; {INSTALL_HINT}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{tool} {args:?} did not finish within 60s");
        }
        std::thread::sleep(common::POLL);
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// The JSON Schema of the config

fn schema_file(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join("config/schema").join(name))
        .unwrap_or_else(|e| panic!("read config/schema/{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("config/schema/{name}: {e}"))
}

fn validator(schema: &serde_json::Value) -> jsonschema::Validator {
    jsonschema::draft202012::new(schema).expect("a valid draft 2020-12 schema")
}

fn toml_to_json(text: &str) -> serde_json::Value {
    let v: toml::Table = toml::from_str(text).expect("TOML");
    serde_json::to_value(v).expect("TOML as JSON")
}

/// The schema's complaints about `text`, one per line.
fn schema_errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    v.iter_errors(&toml_to_json(text))
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn bakewatch_schema_prints_the_checked_in_schemas() {
    for (which, file) in [
        ("daemon", "bakewatch.schema.json"),
        ("checks", "checks.schema.json"),
    ] {
        let out = run_cli(&["schema", which], &repo_root(), &[]);
        assert_eq!(out.code, Some(0), "{out}");
        let printed: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        assert_eq!(
            printed,
            schema_file(file),
            "config/schema/{file} is stale: run `cargo run -- schema {which} > config/schema/{file}`"
        );
        assert_eq!(
            printed["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }
    let out = run_cli(&["schema"], &repo_root(), &[]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).expect("JSON"),
        schema_file("bakewatch.schema.json"),
        "the default is the daemon schema"
    );
}

#[test]
fn every_shipped_example_validates_against_the_schema() {
    let daemon = validator(&schema_file("bakewatch.schema.json"));
    let checks = validator(&schema_file("checks.schema.json"));
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("config/bakewatch.toml")).expect("read");
    let errors = schema_errors(&daemon, &text);
    assert!(errors.is_empty(), "config/bakewatch.toml: {errors:#?}");
    let uncommented = uncomment_examples(&text);
    assert_ne!(uncommented, text, "the commented-out notifiers");
    let errors = schema_errors(&daemon, &uncommented);
    assert!(
        errors.is_empty(),
        "config/bakewatch.toml (examples uncommented): {errors:#?}\n{uncommented}"
    );
    // The daemon file's own keys are not check-file keys.
    assert!(!schema_errors(&checks, &text).is_empty());

    let mut files = 0;
    for entry in std::fs::read_dir(root.join("checks")).expect("checks/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let errors = schema_errors(&checks, &text);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        // The commented-out examples too: uncommented, each block must validate.
        let uncommented = uncomment_examples(&text);
        if uncommented != text {
            let errors = schema_errors(&checks, &uncommented);
            assert!(
                errors.is_empty(),
                "{} (examples uncommented): {errors:#?}\n{uncommented}",
                path.display()
            );
        }
        files += 1;
    }
    assert!(files >= 4, "{files} check files");
    // The reader agrees that these files are valid.
    let out = run_cli(&["validate", "-c", "config/bakewatch.toml"], &root, &[]);
    assert_eq!(out.code, Some(0), "{out}");
}

/// `text` with its commented-out `# [[check]]` blocks uncommented: from a line `# [[check]]`
/// (or `# [[rule]]`) to the first line that is not a `# key = …`, `# [[…]]` or `#   …` line.
fn uncomment_examples(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        let body = line.strip_prefix("# ");
        let starts = body.is_some_and(|b| {
            ["[[check", "[[rule", "[[notifier"]
                .iter()
                .any(|p| b.starts_with(p))
        });
        if starts {
            inside = true;
        }
        let continues = body.is_some_and(|b| {
            let b = b.trim_start();
            b.starts_with('[')
                || b.starts_with('{')
                || b.starts_with(']')
                || b.starts_with('#')
                || b.split_once('=').is_some_and(|(k, _)| {
                    k.trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        });
        match (inside && continues, body) {
            (true, Some(b)) => {
                out.push_str(b);
            }
            _ => {
                inside = false;
                out.push_str(line);
            }
        }
        out.push('\n');
    }
    out
}

/// Check-file snippets the reader accepts (one check or rule each, every type and most keys).
const GOOD: &[&str] = &[
    "[[check]]\nname = \"h\"\ntype = \"http\"\nurl = \"https://127.0.0.1:8443/x\"\nmethod = \"post\"\n\
     headers = { x-api-key = { env = \"HOME\" }, accept = \"application/json\" }\njson = { a = [1, 2] }\n\
     auth = { username = \"u\", password = { env = \"HOME\" } }\ntls = { verify = false }\nfollow_redirects = false\n\
     keepalive = true\nmax_body = \"64KiB\"\ncritical = true\ntimeout = \"1m 30s\"\ncron = \"@hourly\"\n\
     expect = [ { status = [200, 204] }, { header = \"content-type\", not = true, contains = \"html\" },\n\
     { jsonpath = \"$.items\", filter = \"count\", ge = 1 }, { jsonpath = \"$.items[*]\", nth = 0, eq = 1 },\n\
     { duration = \"total\", lt = \"500ms\", severity = \"warn\" }, { status = true, in = [200, 201] },\n\
     { cookie = \"s\", exists = true }, { regex = \"v(\\\\d+)\", matches = \"^1\" } ]\n",
    "[[check]]\nname = \"f\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\nform = { a = \"b\" }\n\
     auth = { bearer = \"t\" }\n",
    "[[check]]\nname = \"t\"\ntype = \"tcp\"\naddress = \"127.0.0.1:22\"\nsend = \"PING\\r\\n\"\n\
     expect_banner = \"^SSH-\"\ntls = false\n",
    "[[check]]\nname = \"t2\"\ntype = \"tcp\"\naddress = \"127.0.0.1:993\"\ntls = { server_name = \"localhost\", verify = false }\n",
    "[[check]]\nname = \"c\"\ntype = \"tls\"\naddress = \"example.com:443\"\nserver_name = \"example.com\"\nverify = false\n\
     expect = [ { observe = \"cert_days\", gt = 14 } ]\n",
    "[[check]]\nname = \"d\"\ntype = \"dns\"\nquery_name = \"example.com\"\nrecord = \"mx\"\nserver = \"127.0.0.1:53\"\n",
    "[[check]]\nname = \"p\"\ntype = \"postgres\"\ndsn = \"postgres://u:p@127.0.0.1:5432/db\"\nquery = \"SELECT 2\"\n\
     tls = { mode = \"prefer\", verify = false }\n",
    "[[check]]\nname = \"m\"\ntype = \"mysql\"\ndsn = \"mysql://u:p@127.0.0.1:3306/db\"\n",
    "[[check]]\nname = \"r\"\ntype = \"redis\"\nurl = \"rediss://127.0.0.1:6380\"\npassword = \"x\"\nusername = \"u\"\n\
     mode = \"roundtrip\"\nkey_prefix = \"bw:\"\ninfo = [\"role\"]\ntls = { server_name = \"localhost\", verify = false }\n",
    "[[check]]\nname = \"mc\"\ntype = \"memcached\"\naddress = \"127.0.0.1:11211\"\nkey_prefix = \"bw:\"\n",
    "[[check]]\nname = \"fs\"\ntype = \"filesystem\"\npath = \"/tmp\"\nwritable = true\n\
     expect = [ { observe = \"free_ratio\", gt = 0.05 } ]\n",
    "[[check]]\nname = \"cmd\"\ntype = \"command\"\nargv = [\"true\"]\nshell = false\nenv = { A = \"b\" }\n\
     workdir = \"/tmp\"\nmax_output = 4096\n",
    "[[check]]\nname = \"pq\"\ntype = \"prometheus\"\nurl = \"http://127.0.0.1:9090\"\nquery = \"up\"\n\
     aggregate = \"max\"\nno_data = \"pass\"\nauth = { bearer = \"t\" }\n",
    "[[check]]\nname = \"j\"\ntype = \"journey\"\nbase_url = \"http://127.0.0.1:8080\"\ncookies = false\n\
     secrets = { pw = { env = \"HOME\" } }\nbudget = \"3s\"\nfollow_redirects = false\n\n\
     [[check.step]]\nname = \"login\"\nmethod = \"POST\"\npath = \"/login\"\njson = { password = \"{{ secret.pw }}\" }\n\
     capture = { token = { jsonpath = \"$.token\", secret = true } }\nretry = { attempts = 3, delay = \"250ms\", on = [\"connect\", \"status:5xx\", \"status:503\"], idempotent = true }\n\
     budget = \"1s\"\nwarn = \"500ms\"\ntimeout = \"2s\"\nexpect = [ { status = 200 } ]\n\n\
     [[check.step]]\nname = \"search\"\nurl = \"http://127.0.0.1:8080/search\"\nquery = { q = \"x\", n = 1 }\n\
     headers = { authorization = \"Bearer {{ token }}\" }\n\n\
     [[check.cleanup]]\nname = \"logout\"\nmethod = \"DELETE\"\npath = \"/session\"\nform = { a = \"b\" }\n",
    "[[check]]\nname = \"a\"\nservice = \"shop\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\n\n\
     [[rule]]\nname = \"r1\"\ncheck = \"a\"\nsignal = \"latency_p95\"\nabove = \"800ms\"\nover = \"5m\"\nfor = \"1m\"\n\
     post_deploy = { above = \"400ms\", for = \"30s\" }\nmin_samples = 5\nseverity = \"critical\"\nrollback = true\n\
     repeat = \"1h\"\nsend_resolved = false\nnotify_no_data = false\n\n\
     [[rule]]\nname = \"r2\"\nchecks = [\"a\"]\nsignal = \"value:free_ratio\"\nbelow = 0.1\n\n\
     [[rule]]\nname = \"r3\"\nservice = \"shop\"\nsignal = \"latency_p95_ratio\"\nabove = 2\nmin_delta = \"50ms\"\n",
];

/// Check-file snippets the reader rejects, and the schema too: (snippet, what is wrong).
const BAD: &[(&str, &str)] = &[
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\nintervall = \"1m\"\n",
        "unknown check key",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\nmethod = \"GET\"\n",
        "a key of another type",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\ninterval = 30\n",
        "duration as a number",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\ninterval = \"soon\"\n",
        "not a duration",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\ncritical = \"yes\"\n",
        "wrong type",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"htttp\"\nurl = \"http://127.0.0.1/\"\n",
        "unknown type",
    ),
    ("[[check]]\nname = \"a\"\ntype = \"http\"\n", "missing url"),
    (
        "[[check]]\nname = \"a b\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\n",
        "bad name",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\nexpect = [ { status = 200, equals = 1 } ]\n",
        "unknown assertion key",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\nexpect = [ { jsonpath = \"$.a\" } ]\n",
        "assertion without predicate",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\nexpect = [ { jsonpath = \"$.a\", eq = 1, ne = 2 } ]\n",
        "two predicates",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\nheaders = { x = { env = \"HOME\", file = \"/x\" } }\n",
        "a secret with two sources",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\ntls = { verfy = false }\n",
        "unknown tls key",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1\"\nmode = \"pong\"\n",
        "unknown redis mode",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\n\n[[rule]]\nname = \"r\"\ncheck = \"a\"\nsignal = \"failure_ratio\"\n",
        "rule without threshold",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\n\n[[rule]]\nname = \"r\"\ncheck = \"a\"\nsignal = \"failure_ratio\"\nabove = 1\nseverity = \"high\"\n",
        "unknown severity",
    ),
    (
        "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"\n\n[[rule]]\nname = \"r\"\ncheck = \"a\"\nsignal = \"errors\"\nabove = 1\n",
        "unknown signal",
    ),
    (
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        "a daemon table in a check file",
    ),
];

/// Loads `checks` as the only check file of a minimal daemon config; the reader's verdict.
fn reader_accepts(checks: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("checks.toml"), checks).expect("write");
    let daemon = dir.path().join("bakewatch.toml");
    std::fs::write(&daemon, "checks = [\"checks.toml\"]\n").expect("write");
    bakewatch::config::load(&daemon)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn the_schema_and_the_reader_agree() {
    let checks = validator(&schema_file("checks.schema.json"));
    let daemon = validator(&schema_file("bakewatch.schema.json"));
    for good in GOOD {
        reader_accepts(good).unwrap_or_else(|e| panic!("the reader rejects\n{good}\n{e}"));
        let errors = schema_errors(&checks, good);
        assert!(errors.is_empty(), "the schema rejects\n{good}\n{errors:#?}");
        // A daemon file may hold checks and rules too.
        let errors = schema_errors(&daemon, good);
        assert!(
            errors.is_empty(),
            "the daemon schema rejects\n{good}\n{errors:#?}"
        );
    }
    for (bad, why) in BAD {
        assert!(
            reader_accepts(bad).is_err(),
            "the reader accepts ({why}):\n{bad}"
        );
        assert!(
            !schema_errors(&checks, bad).is_empty(),
            "the schema accepts ({why}):\n{bad}"
        );
    }
}

#[test]
fn the_daemon_schema_and_the_reader_agree() {
    let daemon = validator(&schema_file("bakewatch.schema.json"));
    let good = "checks = []\n\n[server]\nlisten = \"127.0.0.1:9797\"\ntoken = { env = \"HOME\" }\n\
                request_timeout = \"130s\"\nexternal_url = \"https://bakewatch.example\"\n\n\
                [storage]\npath = \"state.db\"\n\n[defaults]\ninterval = \"30s\"\ntimeout = \"10s\"\n\n\
                [scheduler]\nconcurrency = 8\njitter = \"0s\"\n\n[history]\nretention = \"2h\"\nmax_samples = 4096\n\n\
                [deploy]\nwindow = \"30m\"\ninterval = \"5s\"\nwarmup = \"0s\"\nmin_duration = \"5m\"\n\
                max_duration = \"20m\"\nbaseline = \"30m\"\ncritical_failures = 2\n\n\
                [notifications]\nmax_age = \"24h\"\nretry_initial = \"1s\"\nretry_max = \"5m\"\n\n\
                [[notifier]]\nname = \"mail\"\ntype = \"email\"\nsmtp = \"smtp://127.0.0.1:25\"\nusername = \"u\"\n\
                password = { env = \"HOME\" }\nfrom = \"bw@example.com\"\nto = [\"ops@example.com\"]\nsubject_prefix = \"[bw]\"\n\n\
                [[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nhmac_secret = \"s\"\n\
                headers = { x-a = \"b\" }\nevents = [\"verdict\"]\nsend_resolved = false\ntimeout = \"5s\"\n\n\
                [[notifier]]\nname = \"chat\"\ntype = \"slack\"\nurl = \"https://hooks.slack.example/services/x\"\n\n\
                [[notifier]]\nname = \"pd\"\ntype = \"pagerduty\"\nrouting_key = \"k\"\n\n\
                [[notifier]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\nresend = \"1m\"\n\n\
                [[notifier]]\nname = \"gf\"\ntype = \"grafana\"\nurl = \"http://127.0.0.1:3000\"\ntoken = \"t\"\n\
                tags = [\"deploy\"]\ndashboard_uid = \"bakewatch\"\nevents = [\"deployment_registered\"]\n";
    let load = |text: &str| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bakewatch.toml");
        std::fs::write(&path, text).expect("write");
        bakewatch::config::load(&path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    load(good).unwrap_or_else(|e| panic!("the reader rejects the daemon file: {e}"));
    let errors = schema_errors(&daemon, good);
    assert!(errors.is_empty(), "{errors:#?}");
    for (bad, why) in [
        (
            "[server]\nlisten = \"127.0.0.1:1\"\nport = 1\n",
            "unknown [server] key",
        ),
        ("[scheduler]\nconcurrency = \"8\"\n", "wrong type"),
        ("[deploy]\nwindow = 30\n", "duration as a number"),
        ("[sever]\nlisten = \"127.0.0.1:1\"\n", "unknown table"),
        (
            "[[notifier]]\nname = \"x\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1/\"\nsmtp = \"smtp://h\"\n",
            "a key of another notifier type",
        ),
        (
            "[[notifier]]\nname = \"x\"\ntype = \"sms\"\nurl = \"http://127.0.0.1/\"\n",
            "unknown notifier type",
        ),
        (
            "[[notifier]]\nname = \"x\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1/\"\nevents = [\"deployed\"]\n",
            "unknown event",
        ),
    ] {
        assert!(load(bad).is_err(), "the reader accepts ({why}):\n{bad}");
        assert!(
            !schema_errors(&daemon, bad).is_empty(),
            "the schema accepts ({why}):\n{bad}"
        );
    }
}
