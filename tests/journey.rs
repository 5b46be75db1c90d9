//! The `journey` check (DESIGN §4, issue 4) against a real shop on loopback (`tests/shop`):
//! login → search → add to cart → checkout, with captures, a cookie jar per run, retries that
//! are reported, latency budgets, per-step timeouts, cleanup, redaction of secrets, JUnit per
//! step, and load-time diagnostics for a journey file with mistakes.
//!
//! Configs are written to temp dirs and loaded as the daemon loads them; most tests run the
//! journey through `Runtime::run_check` (the daemon's own path: timeout, redaction, metrics).
//! The API, `/metrics` and log tests start the real binary. The password always comes from a
//! secret file, so no test touches the environment.

mod common;
mod shop;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use bakewatch::checks::outcome::{StepReport, StepStatus};
use bakewatch::checks::{Outcome, Reason, Status};
use bakewatch::config::Config;
use bakewatch::metrics::Metrics;
use bakewatch::runtime::Runtime;
use common::{BIN, http_client, metric_value, repo_root, run_cli, run_cli_async, samples};
use shop::{Endpoint, Shop};
use tempfile::TempDir;

/// Upper bound for waits that normally end within a second.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Journey configs

/// The checkout journey, section by section: `(part, TOML)`. [`Lab::journey`] fills in the
/// `@…@` placeholders and lets a test add or replace keys of any part.
const CHECKOUT_JOURNEY: [(&str, &str); 6] = [
    (
        "journey",
        r#"[[check]]
name = "@NAME@"
service = "shop"
type = "journey"
timeout = "5s"
base_url = "@BASE@"
cookies = true
secrets = { shop_password = { file = '@PWFILE@' } }"#,
    ),
    (
        "login",
        r#"[[check.step]]
name = "login"
method = "POST"
path = "/login"
json = { username = "smoke", password = "{{ secret.shop_password }}" }
capture = { token = { jsonpath = "$.token", secret = true } }
expect = [ { status = 200 } ]"#,
    ),
    (
        "search",
        r#"[[check.step]]
name = "search"
path = "/search?q=laptop"
headers = { authorization = "Bearer {{ token }}" }
capture = { product = { jsonpath = "$.results[0].id" } }
expect = [ { status = 200 }, { jsonpath = "$.results", filter = "count", ge = 1 } ]"#,
    ),
    (
        "cart",
        r#"[[check.step]]
name = "cart"
method = "POST"
path = "/cart"
headers = { authorization = "Bearer {{ token }}" }
json = { product = "{{ product }}" }
capture = { cart = { jsonpath = "$.cart_id" } }
expect = [ { status = 200 }, { jsonpath = "$.items", ge = 1 } ]"#,
    ),
    (
        "checkout",
        r#"[[check.step]]
name = "checkout"
method = "POST"
path = "/checkout"
headers = { authorization = "Bearer {{ token }}", x-cart = "{{ cart }}" }
expect = [ { status = 200 }, { jsonpath = "$.order", exists = true } ]"#,
    ),
    (
        "cleanup",
        r#"[[check.cleanup]]
name = "empty-cart"
method = "DELETE"
path = "/cart"
headers = { authorization = "Bearer {{ token }}" }"#,
    ),
];

/// The step names of [`CHECKOUT_JOURNEY`] in order (cleanup last).
const STEPS: [&str; 5] = ["login", "search", "cart", "checkout", "empty-cart"];

/// A shop, a temp dir with the password file, and ways to load and run journeys against them.
struct Lab {
    shop: Shop,
    dir: TempDir,
    password: String,
    password_file: PathBuf,
}

impl Lab {
    async fn start() -> Lab {
        let password = format!("correct-horse-{:08x}", rand::random::<u32>());
        let shop = Shop::start(&password).await;
        let dir = TempDir::new().unwrap();
        let password_file = dir.path().join("shop_password");
        // A trailing newline, as editors write it: not part of the secret.
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        Lab {
            shop,
            dir,
            password,
            password_file,
        }
    }

    /// The checkout journey named `name`; `extra` adds keys to the journey (`"journey"`),
    /// to one step (`"login"`, `"search"`, `"cart"`, `"checkout"`) or to the cleanup step
    /// (`"cleanup"`). A key the part already has is replaced.
    fn journey(&self, name: &str, extra: &[(&str, &str)]) -> String {
        let key = |line: &str| line.split_once(" = ").map(|(k, _)| k.trim().to_string());
        let mut out = String::new();
        for (part, base) in CHECKOUT_JOURNEY {
            let added: Vec<&str> = extra
                .iter()
                .filter(|(p, _)| *p == part)
                .flat_map(|(_, keys)| keys.lines())
                .collect();
            let replaced: Vec<String> = added.iter().filter_map(|l| key(l)).collect();
            for line in base.lines() {
                if key(line).is_none_or(|k| !replaced.contains(&k)) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            for line in added {
                out.push_str(line);
                out.push('\n');
            }
            out.push('\n');
        }
        out.replace("@NAME@", name)
            .replace("@BASE@", &self.shop.base_url())
            .replace("@PWFILE@", self.password_file.to_str().unwrap())
    }

    /// Writes `bakewatch.toml` and `checks/journey.toml` into a fresh dir under the lab's.
    fn write(&self, checks: &str) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join(format!("cfg-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(dir.join("checks")).unwrap();
        std::fs::write(dir.join("bakewatch.toml"), "checks = [\"checks/*.toml\"]\n").unwrap();
        std::fs::write(dir.join("checks/journey.toml"), checks).unwrap();
        dir
    }

    fn try_load(&self, checks: &str) -> Result<Config, String> {
        let dir = self.write(checks);
        bakewatch::config::load(&dir.join("bakewatch.toml")).map_err(|e| e.to_string())
    }

    fn load(&self, checks: &str) -> Config {
        self.try_load(checks)
            .unwrap_or_else(|e| panic!("the journey does not load:\n{e}\n--- file ---\n{checks}"))
    }

    /// A runtime (as in the daemon) over the given check files.
    fn runtime(&self, checks: &str) -> Runtime {
        Runtime::new(self.load(checks), Arc::new(Metrics::new()))
    }

    /// Runs the checkout journey once with `extra` (see [`Lab::journey`]).
    async fn run(&self, extra: &[(&str, &str)]) -> Arc<Outcome> {
        let rt = self.runtime(&self.journey("checkout", extra));
        rt.run_check(&rt.checks[0].clone()).await
    }
}

fn step<'a>(o: &'a Outcome, name: &str) -> &'a StepReport {
    o.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name:?} in {o:#?}"))
}

fn statuses(o: &Outcome) -> Vec<StepStatus> {
    o.steps.iter().map(|s| s.status).collect()
}

#[track_caller]
fn assert_outcome(o: &Outcome, status: Status, reason: Reason) {
    assert_eq!(
        (o.status, o.reason),
        (status, reason),
        "unexpected outcome: {o:#?}"
    );
}

fn number(o: &Outcome, name: &str) -> f64 {
    o.observations
        .get(name)
        .and_then(|v| v.as_f64())
        .unwrap_or_else(|| panic!("no numeric observation {name:?}: {o:#?}"))
}

// ---------------------------------------------------------------------------------------------
// The happy path, captures and cookies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_happy_path_passes_using_the_captured_token_cookie_and_product() {
    let lab = Lab::start().await;
    let o = lab.run(&[]).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(o.message, "4 steps passed");
    assert_eq!(
        o.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        STEPS
    );
    assert!(
        o.steps
            .iter()
            .all(|s| s.status == StepStatus::Pass && s.http_status == Some(200)),
        "{o:#?}"
    );
    assert!(o.steps.iter().all(|s| s.attempts.len() == 1), "{o:#?}");
    assert_eq!(
        o.steps.iter().map(|s| s.cleanup).collect::<Vec<_>>(),
        [false, false, false, false, true]
    );
    assert_eq!(step(&o, "login").request, "POST /login");
    assert_eq!(
        step(&o, "search").request,
        "GET /search?…",
        "query strings are hidden"
    );
    assert_eq!(step(&o, "empty-cart").request, "DELETE /cart");
    assert_eq!(
        [
            number(&o, "steps_total"),
            number(&o, "steps_passed"),
            number(&o, "steps_failed")
        ],
        [4.0, 4.0, 0.0]
    );

    // The shop saw the token it issued and the session cookie that came with it.
    let sessions = lab.shop.sessions();
    assert_eq!(sessions.len(), 1, "one login");
    let (session, token) = &sessions[0];
    let login = &lab.shop.seen_at(Method::POST, "/login")[0];
    assert_eq!(
        login.json(),
        serde_json::json!({"username": "smoke", "password": lab.password}),
        "the password from the secret file, without its trailing newline"
    );
    assert_eq!(login.cookie("session"), None, "a fresh jar");
    for (method, path) in [
        (Method::GET, "/search"),
        (Method::POST, "/cart"),
        (Method::POST, "/checkout"),
        (Method::DELETE, "/cart"),
    ] {
        let seen = lab.shop.seen_at(method.clone(), path);
        assert_eq!(seen.len(), 1, "{method} {path} once");
        assert_eq!(
            seen[0].header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "{method} {path} carries the captured token"
        );
        assert_eq!(
            seen[0].cookie("session"),
            Some(session.as_str()),
            "{method} {path} carries the session cookie from the jar"
        );
    }
    assert_eq!(
        lab.shop.seen_at(Method::GET, "/search")[0].target,
        "/search?q=laptop"
    );
    // `json = { product = "{{ product }}" }` sends the captured 17 as a JSON number.
    let cart = &lab.shop.seen_at(Method::POST, "/cart")[0];
    assert_eq!(cart.json(), serde_json::json!({"product": 17}));
    assert!(cart.json()["product"].is_u64());
    assert_eq!(
        cart.header("content-type"),
        Some("application/json"),
        "{cart:?}"
    );
    // A capture in a header: the cart id from the cart step.
    assert_eq!(
        lab.shop.seen_at(Method::POST, "/checkout")[0].header("x-cart"),
        Some(format!("cart-{session}").as_str())
    );
    assert_eq!(lab.shop.orders(), 1);
    assert_eq!(lab.shop.cleanup_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capture_source_feeds_later_steps() {
    let lab = Lab::start().await;
    let o = lab
        .run(&[
            (
                "login",
                "capture = { token = { jsonpath = \"$.token\", secret = true }, \
                 session = { cookie = \"session\" }, code = { status = true } }",
            ),
            (
                "search",
                "capture = { product = { jsonpath = \"$.results[0].id\" }, \
                 ids = { jsonpath = \"$.results[*].id\" }, \
                 first = { regex = '\"name\":\"([a-z ]+)\"' }, \
                 kind = { header = \"content-type\" } }",
            ),
            (
                "checkout",
                "headers = { authorization = \"Bearer {{ token }}\", x-session = \"{{ session }}\", \
                 x-code = \"{{ code }}\", x-ids = \"{{ ids }}\", x-first = \"{{ first }}\", \
                 x-kind = \"{{ kind }}\" }",
            ),
        ])
        .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let checkout = &lab.shop.seen_at(Method::POST, "/checkout")[0];
    let (session, _) = &lab.shop.sessions()[0];
    for (header, want) in [
        ("x-session", session.as_str()),
        ("x-code", "200"),
        ("x-ids", "[17,23]"),
        ("x-first", "laptop"),
        ("x-kind", "application/json"),
    ] {
        assert_eq!(checkout.header(header), Some(want), "{header}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_and_every_journey_has_its_own_cookie_jar() {
    let lab = Lab::start().await;
    let checks = format!(
        "{}\n{}",
        lab.journey("journey-a", &[]),
        lab.journey("journey-b", &[])
    );
    let rt = lab.runtime(&checks);
    let (a, b) = (rt.checks[0].clone(), rt.checks[1].clone());
    for state in [&a, &b, &a] {
        let o = rt.run_check(state).await;
        assert_outcome(&o, Status::Pass, Reason::Ok);
    }
    let logins = lab.shop.seen_at(Method::POST, "/login");
    assert_eq!(logins.len(), 3);
    assert!(
        logins.iter().all(|l| l.header("cookie").is_none()),
        "no login carried a cookie from an earlier run or another journey: {logins:#?}"
    );
    // Three runs, three sessions; each run's requests used its own session only.
    let searches = lab.shop.seen_at(Method::GET, "/search");
    let used: Vec<&str> = searches
        .iter()
        .map(|s| s.cookie("session").expect("a session cookie"))
        .collect();
    assert_eq!(lab.shop.sessions().len(), 3);
    assert_eq!(used.len(), 3);
    assert!(
        used[0] != used[1] && used[1] != used[2] && used[0] != used[2],
        "{used:?}"
    );
    assert!(
        searches
            .iter()
            .all(|s| s.headers.get_all("cookie").iter().count() == 1
                && !s.header("cookie").unwrap().contains(';')),
        "each request carried exactly one session cookie: {searches:#?}"
    );

    // Concurrent runs of two journeys: a shared jar would mix sessions and tokens (401).
    let (oa, ob) = tokio::join!(rt.run_check(&a), rt.run_check(&b));
    assert_outcome(&oa, Status::Pass, Reason::Ok);
    assert_outcome(&ob, Status::Pass, Reason::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_set_on_a_redirect_hop_land_in_the_jar() {
    let lab = Lab::start().await;
    let checks = format!(
        "[[check]]\nname = \"hops\"\ntype = \"journey\"\nbase_url = \"{}\"\n\n\
         [[check.step]]\nname = \"enter\"\npath = \"/redirect-login\"\n\
         expect = [ {{ jsonpath = \"$.landed\", eq = true }} ]\n\n\
         [[check.step]]\nname = \"again\"\npath = \"/landing\"\n",
        lab.shop.base_url()
    );
    let rt = lab.runtime(&checks);
    let o = rt.run_check(&rt.checks[0].clone()).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(step(&o, "enter").http_status, Some(200), "followed the 302");
    let landings = lab.shop.seen_at(Method::GET, "/landing");
    assert_eq!(landings.len(), 2);
    assert!(
        landings
            .iter()
            .all(|l| l.cookie("hop") == Some("from-redirect"))
    );

    // Without a jar the cookie does not come back.
    let rt = lab.runtime(&checks.replace("base_url", "cookies = false\nbase_url"));
    let o = rt.run_check(&rt.checks[0].clone()).await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert_eq!(o.message, "enter: HTTP 400, expected 2xx (+1 more)");
}

// ---------------------------------------------------------------------------------------------
// Failures: which step, why, what was skipped

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_step_is_named_and_the_later_steps_are_skipped() {
    let lab = Lab::start().await;
    let broken = [
        (Endpoint::Login, "login"),
        (Endpoint::Search, "search"),
        (Endpoint::Cart, "cart"),
        (Endpoint::Checkout, "checkout"),
    ];
    for (i, (endpoint, name)) in broken.iter().enumerate() {
        lab.shop.set_broken(*endpoint, true);
        let cleanups = lab.shop.cleanup_calls();
        let o = lab.run(&[]).await;
        lab.shop.set_broken(*endpoint, false);

        assert_outcome(&o, Status::Fail, Reason::Status);
        let want = format!("{name}: HTTP 500, expected 200");
        assert!(
            o.message == want || o.message.starts_with(&format!("{want} (+")),
            "message {:?}, wanted {want:?}",
            o.message
        );
        let mut want_statuses = vec![StepStatus::Pass; i];
        want_statuses.push(StepStatus::Fail);
        want_statuses.resize(4, StepStatus::Skipped);
        // The cleanup always runs; after a failed login it has no token (401).
        want_statuses.push(if i == 0 {
            StepStatus::Fail
        } else {
            StepStatus::Pass
        });
        assert_eq!(statuses(&o), want_statuses, "{name} broken: {o:#?}");
        assert_eq!(lab.shop.cleanup_calls(), cleanups + 1, "{name} broken");

        let failed = step(&o, name);
        assert_eq!(failed.reason, Reason::Status);
        assert_eq!(failed.http_status, Some(500));
        assert!(failed.message.starts_with("HTTP 500, expected 200"));
        let f = &failed.failed_assertions[0];
        assert_eq!((f.expected.as_str(), f.actual.as_str()), ("eq 200", "500"));
        assert!(f.assertion.contains("status"), "{f:?}");
        assert!(!f.warn);
        assert_eq!(failed.attempts.len(), 1);
        assert_eq!(failed.attempts[0].http_status, Some(500));
        for later in &o.steps[i + 1..4] {
            assert_eq!(later.message, "skipped: an earlier step failed");
            assert_eq!(
                (later.http_status, later.attempts.len()),
                (None, 0),
                "{later:?}"
            );
        }
        assert_eq!(number(&o, "steps_failed"), 1.0);
        assert_eq!(number(&o, "steps_passed"), i as f64);
    }
    assert_eq!(
        lab.shop.orders(),
        0,
        "no run got through (checkout was last broken)"
    );

    // A wrong password: the shop's 401 is the login step's failure.
    std::fs::write(&lab.password_file, "not-the-password").unwrap();
    let o = lab.run(&[]).await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert_eq!(o.message, "login: HTTP 401, expected 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_body_assertion_shows_expected_and_actual() {
    let lab = Lab::start().await;
    let o = lab
        .run(&[(
            "search",
            "expect = [ { status = 200 }, { jsonpath = \"$.results[0].name\", eq = \"tablet\" } ]",
        )])
        .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(
        o.message,
        "search: jsonpath $.results[0].name: expected eq \"tablet\", got \"laptop\""
    );
    let s = step(&o, "search");
    assert_eq!((s.status, s.reason), (StepStatus::Fail, Reason::Assertion));
    assert_eq!(s.http_status, Some(200));
    let f = &s.failed_assertions[0];
    assert_eq!(
        (f.expected.as_str(), f.actual.as_str()),
        ("eq \"tablet\"", "\"laptop\"")
    );
    // A capture that finds nothing fails its step.
    let o = lab
        .run(&[(
            "search",
            "capture = { product = { jsonpath = \"$.results[0].id\" }, sku = { header = \"x-sku\" } }",
        )])
        .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(o.message, "search: capture `sku` found nothing");
}

// ---------------------------------------------------------------------------------------------
// Retries

const RETRY_503: &str = "retry = { attempts = 3, delay = \"50ms\", on = [\"status:503\"] }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_503_is_retried_and_every_attempt_is_reported() {
    let lab = Lab::start().await;
    lab.shop.set_flaky(Endpoint::Search, 2);
    let o = lab.run(&[("search", RETRY_503)]).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let s = step(&o, "search");
    assert_eq!(s.status, StepStatus::Pass);
    assert!(s.message.ends_with("(after 3 attempts)"), "{}", s.message);
    assert!(
        o.message.contains("search after 3 attempts"),
        "the outcome does not hide the retries: {}",
        o.message
    );
    assert_eq!(
        s.attempts
            .iter()
            .map(|a| (a.attempt, a.http_status))
            .collect::<Vec<_>>(),
        [(1, Some(503)), (2, Some(503)), (3, Some(200))]
    );
    assert!(
        s.attempts[0].result.contains("HTTP 503"),
        "{:?}",
        s.attempts[0]
    );
    assert_eq!(s.attempts[2].result, "ok");
    assert!(
        s.duration_ms >= 100.0,
        "two delays of 50ms: {}",
        s.duration_ms
    );
    assert_eq!(lab.shop.seen_at(Method::GET, "/search").len(), 3);

    // Still 503 after every attempt: the step fails, saying how many attempts it made.
    lab.shop.set_flaky(Endpoint::Search, 3);
    let o = lab.run(&[("search", RETRY_503)]).await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert!(
        o.message.starts_with("search: HTTP 503, expected 200")
            && o.message.ends_with("(3 attempts)"),
        "{}",
        o.message
    );
    assert_eq!(step(&o, "search").attempts.len(), 3);

    // A status not listed in `on` is not retried.
    lab.shop.set_broken(Endpoint::Search, true);
    let o = lab.run(&[("search", RETRY_503)]).await;
    lab.shop.set_broken(Endpoint::Search, false);
    assert_eq!(step(&o, "search").attempts.len(), 1, "{o:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_step_retries_on_status_only_when_declared_idempotent() {
    let lab = Lab::start().await;
    let err = lab
        .try_load(&lab.journey("checkout", &[("cart", RETRY_503)]))
        .expect_err("a POST retried on a status is a config error");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    // `cart` is the third step; the retry line is the last of its table.
    let text = lab.journey("checkout", &[("cart", RETRY_503)]);
    let line = text.lines().position(|l| l.starts_with("retry =")).unwrap() + 1;
    let col = RETRY_503.find("\"status:503\"").unwrap() + 1;
    assert!(
        lines[0].contains(&format!("checks/journey.toml:{line}:{col}: ")),
        "{err}"
    );
    assert!(
        lines[0].contains("POST") && lines[0].contains("idempotent = true"),
        "{err}"
    );

    // Connect errors are always safe to retry (the request never arrived).
    lab.load(&lab.journey(
        "checkout",
        &[("cart", "retry = { attempts = 2, on = [\"connect\"] }")],
    ));

    // Declared idempotent: retried and reported.
    lab.shop.set_flaky(Endpoint::Cart, 1);
    let o = lab
        .run(&[(
            "cart",
            "retry = { attempts = 3, delay = \"50ms\", on = [\"status:503\"], idempotent = true }",
        )])
        .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let cart = step(&o, "cart");
    assert_eq!(
        cart.attempts
            .iter()
            .map(|a| a.http_status)
            .collect::<Vec<_>>(),
        [Some(503), Some(200)]
    );
    assert!(cart.message.ends_with("(after 2 attempts)"));
}

/// A server that reads one request per connection and hangs up without answering; returns
/// its address and the number of requests it received.
async fn hang_up_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            if conn.read(&mut buf).await.is_ok_and(|n| n > 0) {
                count.fetch_add(1, Ordering::SeqCst);
            }
            // Dropped: the client sees the connection closed before any response.
        }
    });
    (format!("http://{addr}"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_retried_on_connect_is_not_repeated_after_it_was_sent() {
    use std::sync::atomic::Ordering;
    let lab = Lab::start().await;
    let (hang_up, received) = hang_up_server().await;
    let refused = format!("http://127.0.0.1:{}", common::free_port());
    let journey = |url: &str| {
        format!(
            "[[check]]\nname = \"pay\"\ntype = \"journey\"\ntimeout = \"5s\"\n\n\
             [[check.step]]\nname = \"pay\"\nmethod = \"POST\"\nurl = \"{url}/pay\"\n\
             json = {{ amount = 1 }}\n\
             retry = {{ attempts = 3, delay = \"10ms\", on = [\"connect\"] }}\n"
        )
    };
    // Nothing listens: the request was never sent, so it is tried again, every try reported.
    let rt = lab.runtime(&journey(&refused));
    let o = rt.run_check(&rt.checks[0].clone()).await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert_eq!(step(&o, "pay").attempts.len(), 3, "{o:#?}");
    assert!(o.message.starts_with("pay: connect: "), "{}", o.message);

    // The server got the request and hung up: it may have been processed, so it is not
    // repeated (that could pay twice).
    let rt = lab.runtime(&journey(&hang_up));
    let o = rt.run_check(&rt.checks[0].clone()).await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert_eq!(step(&o, "pay").attempts.len(), 1, "{o:#?}");
    assert_eq!(received.load(Ordering::SeqCst), 1, "the POST arrived once");
}

// ---------------------------------------------------------------------------------------------
// Cleanup

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_runs_after_a_failure_and_a_failing_cleanup_only_degrades() {
    let lab = Lab::start().await;
    lab.shop.set_broken(Endpoint::Checkout, true);
    let o = lab.run(&[]).await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert!(o.message.starts_with("checkout: HTTP 500"), "{}", o.message);
    let cleanup = step(&o, "empty-cart");
    assert!(cleanup.cleanup);
    assert_eq!(
        (cleanup.status, cleanup.http_status),
        (StepStatus::Pass, Some(200))
    );
    assert_eq!(lab.shop.cleanup_calls(), 1);
    let (session, _) = &lab.shop.sessions()[0];
    assert_eq!(
        lab.shop.cart_items(session),
        0,
        "the cleanup emptied the cart"
    );
    let deletes = lab.shop.seen_at(Method::DELETE, "/cart");
    assert_eq!(deletes[0].cookie("session"), Some(session.as_str()));
    lab.shop.set_broken(Endpoint::Checkout, false);

    // Everything passes but the cleanup: degraded, naming the cleanup step.
    lab.shop.set_broken(Endpoint::Cleanup, true);
    let o = lab.run(&[]).await;
    assert_outcome(&o, Status::Degraded, Reason::Assertion);
    assert_eq!(o.message, "cleanup empty-cart: HTTP 500, expected 2xx");
    assert_eq!(
        statuses(&o),
        [
            StepStatus::Pass,
            StepStatus::Pass,
            StepStatus::Pass,
            StepStatus::Pass,
            StepStatus::Fail
        ]
    );
    assert_eq!(number(&o, "steps_failed"), 0.0, "cleanup is not a step");
    assert_eq!(lab.shop.cleanup_calls(), 2);
}

// ---------------------------------------------------------------------------------------------
// Time: budgets and timeouts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_budgets_fail_or_degrade() {
    let lab = Lab::start().await;
    lab.shop
        .set_delay(Endpoint::Search, Duration::from_millis(250));

    let o = lab.run(&[("search", "budget = \"100ms\"")]).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(
        o.message.starts_with("search: took ") && o.message.ends_with(", budget 100ms"),
        "{}",
        o.message
    );
    assert_eq!(step(&o, "search").http_status, Some(200));
    assert_eq!(step(&o, "cart").status, StepStatus::Skipped);

    let o = lab.run(&[("search", "warn = \"100ms\"")]).await;
    assert_outcome(&o, Status::Degraded, Reason::Assertion);
    assert!(
        o.message.starts_with("search: took ") && o.message.ends_with(", warn above 100ms"),
        "{}",
        o.message
    );
    assert_eq!(step(&o, "search").status, StepStatus::Degraded);
    assert_eq!(
        step(&o, "checkout").status,
        StepStatus::Pass,
        "a degraded step does not stop the journey"
    );

    // Both given: between warn and budget is degraded.
    let o = lab
        .run(&[("search", "warn = \"100ms\"\nbudget = \"2s\"")])
        .await;
    assert_outcome(&o, Status::Degraded, Reason::Assertion);

    let o = lab.run(&[("journey", "budget = \"150ms\"")]).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(
        o.message.starts_with("journey took ") && o.message.ends_with(", budget 150ms"),
        "{}",
        o.message
    );
    assert!(
        o.steps.iter().all(|s| s.status == StepStatus::Pass),
        "every step passed on its own: {o:#?}"
    );

    // `warn` at or above `budget` is a config error.
    let err = lab
        .try_load(&lab.journey(
            "checkout",
            &[("search", "warn = \"1s\"\nbudget = \"500ms\"")],
        ))
        .unwrap_err();
    assert!(err.contains("warn: must be below `budget`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_slower_than_its_timeout_fails_and_cleanup_still_runs() {
    let lab = Lab::start().await;
    lab.shop.set_delay(Endpoint::Search, Duration::from_secs(3));
    let start = Instant::now();
    let o = lab.run(&[("search", "timeout = \"200ms\"")]).await;
    assert!(start.elapsed() < Duration::from_secs(2), "{o:#?}");
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    assert_eq!(o.message, "search: no response within 200ms");
    let s = step(&o, "search");
    assert_eq!(
        (s.status, s.reason, s.http_status),
        (StepStatus::Fail, Reason::Timeout, None)
    );
    assert!(
        s.duration_ms >= 190.0 && s.duration_ms < 1000.0,
        "{}",
        s.duration_ms
    );
    assert_eq!(step(&o, "empty-cart").status, StepStatus::Pass);
    assert_eq!(lab.shop.cleanup_calls(), 1);

    // Retried on timeout: each attempt is cut at the step's timeout, and reported.
    let o = lab
        .run(&[(
            "search",
            "timeout = \"150ms\"\nretry = { attempts = 2, delay = \"10ms\", on = [\"timeout\"] }",
        )])
        .await;
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    let s = step(&o, "search");
    assert_eq!(s.attempts.len(), 2, "{s:#?}");
    assert!(
        s.attempts
            .iter()
            .all(|a| a.result == "no response within 150ms")
    );
    assert_eq!(lab.shop.cleanup_calls(), 2);

    // No step timeout: the journey's own timeout cuts the step early enough that cleanup
    // runs and the step-by-step report is not lost to the check's hard timeout.
    let start = Instant::now();
    let o = lab.run(&[("journey", "timeout = \"1s\"")]).await;
    assert!(start.elapsed() < Duration::from_millis(1500), "{o:#?}");
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    assert!(
        o.message.starts_with("search: no response within "),
        "{}",
        o.message
    );
    assert_eq!(o.steps.len(), 5, "{o:#?}");
    assert_eq!(step(&o, "empty-cart").status, StepStatus::Pass);
    assert_eq!(lab.shop.cleanup_calls(), 3);
}

// ---------------------------------------------------------------------------------------------
// Secrets: API, metrics and logs of the real daemon

/// `bakewatch run` with `RUST_LOG=debug`, its stderr in a file; killed when dropped.
struct ChattyDaemon {
    _dir: TempDir,
    port: u16,
    child: Child,
    stderr_path: PathBuf,
    http: reqwest::Client,
}

impl ChattyDaemon {
    async fn start(checks: &str) -> ChattyDaemon {
        for _ in 0..3 {
            let dir = TempDir::new().unwrap();
            let port = common::free_port();
            std::fs::create_dir(dir.path().join("checks")).unwrap();
            std::fs::write(dir.path().join("checks/journey.toml"), checks).unwrap();
            let config = dir.path().join("bakewatch.toml");
            std::fs::write(
                &config,
                format!(
                    "checks = [\"checks/*.toml\"]\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
                     [storage]\npath = '{}'\n\n[scheduler]\njitter = \"0s\"\n",
                    dir.path().join("state.db").display()
                ),
            )
            .unwrap();
            let stderr_path = dir.path().join("stderr.log");
            let child = Command::new(BIN)
                .args(["run", "-c"])
                .arg(&config)
                .current_dir(dir.path())
                .env("RUST_LOG", "debug")
                .env_remove("BAKEWATCH_CONFIG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).unwrap())
                .spawn()
                .expect("spawn bakewatch run");
            let mut d = ChattyDaemon {
                _dir: dir,
                port,
                child,
                stderr_path,
                http: http_client(),
            };
            let deadline = Instant::now() + common::READY_TIMEOUT;
            loop {
                if d.child.try_wait().unwrap().is_some() {
                    let log = d.stderr();
                    if log.contains("cannot listen") {
                        break; // the port was taken meanwhile: another one
                    }
                    panic!("bakewatch run exited before it was ready:\n{log}");
                }
                if let Ok(r) = d.http.get(d.url("/-/ready")).send().await
                    && r.status() == 200
                {
                    return d;
                }
                assert!(
                    Instant::now() < deadline,
                    "not ready in time:\n{}",
                    d.stderr()
                );
                tokio::time::sleep(common::POLL).await;
            }
        }
        panic!("no free port for the daemon after 3 tries");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> String {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.unwrap()
    }

    /// Polls the check's detail until `pred` holds on its last outcome.
    async fn wait_outcome(
        &self,
        check: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let path = format!("/api/v1/checks/{check}");
        common::wait_until(what, WAIT, async || {
            let v: serde_json::Value = serde_json::from_str(&self.get(&path).await).unwrap();
            if pred(&v["last_outcome"]) {
                Ok(v)
            } else {
                Err(format!("{}", v["last_outcome"]["message"]))
            }
        })
        .await
    }
}

impl Drop for ChattyDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_and_captured_token_appear_nowhere() {
    let lab = Lab::start().await;
    // The search step checks the body too, so a leaking shop fails it on a body that holds
    // the token, the password and the session id.
    let checks = lab.journey(
        "checkout",
        &[
            ("journey", "interval = \"250ms\""),
            (
                "search",
                "expect = [ { status = 200 }, { body = true, contains = \"laptop\" } ]",
            ),
        ],
    );
    let daemon = ChattyDaemon::start(&checks).await;
    daemon
        .wait_outcome("checkout", "the journey passes", |o| o["status"] == "pass")
        .await;
    lab.shop.set_leak(true);
    let detail = daemon
        .wait_outcome("checkout", "the journey fails at search", |o| {
            o["status"] == "fail"
        })
        .await;

    // Step-by-step detail of the last run.
    let o = &detail["last_outcome"];
    assert!(
        o["message"]
            .as_str()
            .unwrap()
            .starts_with("search: body: expected contains \"laptop\", got "),
        "{o:#}"
    );
    let steps = o["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, STEPS);
    let search = &steps[1];
    assert_eq!(search["request"], "GET /search?…");
    assert_eq!(search["status"], "fail");
    assert_eq!(search["reason"], "assertion");
    assert_eq!(search["http_status"], 200);
    assert!(search["duration_ms"].as_f64().is_some_and(|d| d > 0.0));
    let f = &search["failed_assertions"][0];
    assert_eq!(f["expected"], "contains \"laptop\"", "{f:#}");
    let actual = f["actual"].as_str().unwrap();
    assert!(
        actual.contains("t=<redacted>") && actual.contains("p=<redacted>"),
        "the echoed token and password are redacted: {actual}"
    );
    assert_eq!(steps[0]["request"], "POST /login");
    assert_eq!(steps[0]["status"], "pass");
    assert_eq!(steps[2]["status"], "skipped");
    assert_eq!(steps[4]["cleanup"], true);
    assert_eq!(steps[4]["status"], "pass");

    // Metrics: per step, only the step name as a label.
    let text = daemon.get("/metrics").await;
    fn labels(s: &str) -> [(&str, &str); 3] {
        [("check", "checkout"), ("service", "shop"), ("step", s)]
    }
    for s in STEPS {
        assert!(
            metric_value(
                &text,
                "bakewatch_journey_step_duration_seconds_count",
                &labels(s)
            )
            .is_some_and(|n| n >= 1.0),
            "no duration of step {s}:\n{text}"
        );
    }
    let success = |s: &str| metric_value(&text, "bakewatch_journey_step_success", &labels(s));
    assert_eq!(success("login"), Some(1.0));
    assert_eq!(success("search"), Some(0.0));
    assert_eq!(success("checkout"), Some(0.0), "skipped");
    assert_eq!(success("empty-cart"), Some(1.0));
    assert!(
        samples(&text)
            .iter()
            .filter(|s| s.name.starts_with("bakewatch_journey_step_"))
            .all(|s| s
                .labels
                .iter()
                .all(|(k, _)| ["check", "service", "step", "le"].contains(&k.as_str()))),
        "{text}"
    );
    promtool_check(&text);

    // Stop the runs before reading everything once more, so nothing changes meanwhile.
    lab.shop.set_leak(false);
    let tokens = lab.shop.tokens();
    assert!(tokens.len() >= 2, "several runs logged in");
    let outputs = [
        (
            "GET /api/v1/checks/checkout",
            daemon.get("/api/v1/checks/checkout").await,
        ),
        ("GET /api/v1/checks", daemon.get("/api/v1/checks").await),
        ("GET /metrics", daemon.get("/metrics").await),
        ("the debug log", daemon.stderr()),
    ];
    assert!(
        outputs[3].1.contains("DEBUG"),
        "RUST_LOG=debug makes the log chatty:\n{}",
        outputs[3].1
    );
    for (what, text) in &outputs {
        assert!(
            !text.contains(&lab.password),
            "{what} shows the password:\n{text}"
        );
        for t in &tokens {
            assert!(!text.contains(t.as_str()), "{what} shows a token:\n{text}");
        }
    }
}

/// Runs `promtool check metrics` on an exposition: it must exit 0 and print nothing.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH; this test lints /metrics with it: \
             apt-get install prometheus (the Debian package ships promtool)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics: {}\n{stdout}\n{stderr}\n{text}",
        out.status
    );
}

// ---------------------------------------------------------------------------------------------
// JUnit: one testcase per step

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_junit_has_one_testcase_per_step() {
    let lab = Lab::start().await;
    let checks = format!(
        "{}\n{}",
        lab.journey("checkout", &[]),
        lab.journey("other", &[])
    );
    let dir = lab.write(&checks);
    lab.shop.set_broken(Endpoint::Search, true);
    let out = run_cli_async(
        &[
            "once",
            "-c",
            "bakewatch.toml",
            "--check",
            "checkout",
            "--format",
            "junit",
        ],
        &dir,
        &[],
    )
    .await;
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(
        lab.shop.seen_at(Method::POST, "/login").len(),
        1,
        "only the named journey ran"
    );
    let doc = parse_xml(&out.stdout).unwrap_or_else(|e| panic!("malformed XML ({e}):\n{out}"));
    let cases: Vec<usize> = (0..doc.len())
        .filter(|i| doc[*i].name == "testcase")
        .collect();
    let names: Vec<&str> = cases
        .iter()
        .map(|i| doc[*i].attr("name").unwrap())
        .collect();
    assert_eq!(
        names,
        ["login", "search", "cart", "checkout", "cleanup empty-cart"],
        "{out}"
    );
    assert!(
        cases
            .iter()
            .all(|i| doc[*i].attr("classname") == Some("checkout"))
    );
    let child = |case: usize| -> Option<&Element> { doc.iter().find(|e| e.parent == Some(case)) };
    assert!(child(cases[0]).is_none(), "login passed");
    let failure = child(cases[1]).expect("search has a failure");
    assert_eq!(failure.name, "failure");
    assert_eq!(failure.attr("type"), Some("status"));
    assert_eq!(
        failure.attr("message"),
        Some("GET /search?… search: HTTP 500, expected 200 (+1 more)"),
        "{out}"
    );
    assert!(
        failure
            .text
            .contains("status eq 200: expected eq 200, got 500"),
        "the failure body explains: {:?}",
        failure.text
    );
    for case in &cases[2..4] {
        let skipped = child(*case).expect("a child");
        assert_eq!(skipped.name, "skipped");
        assert_eq!(
            skipped.attr("message"),
            Some("skipped: an earlier step failed")
        );
    }
    assert!(child(cases[4]).is_none(), "the cleanup passed");
    let suite = doc.iter().find(|e| e.name == "testsuite").unwrap();
    assert_eq!(
        (
            suite.attr("tests"),
            suite.attr("failures"),
            suite.attr("skipped")
        ),
        (Some("5"), Some("1"), Some("2"))
    );
}

/// An element of a small XML document: name, attributes (entities decoded), the text
/// directly inside it, and its parent's index.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    parent: Option<usize>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn unescape(s: &str) -> Result<String, String> {
    if s.contains('<') {
        return Err(format!("a bare '<' in {s:?}"));
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find(';')
            .ok_or_else(|| format!("a bare '&' in {s:?}"))?;
        out.push(match &rest[i + 1..i + end] {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            other => return Err(format!("unknown entity &{other};")),
        });
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses the well-formed subset of XML that JUnit reports use (no comments, no CDATA);
/// any mismatch of tags, quoting or escaping is an error.
fn parse_xml(xml: &str) -> Result<Vec<Element>, String> {
    let mut rest = xml.trim();
    if rest.starts_with("<?xml") {
        rest = &rest[rest.find("?>").ok_or("an open declaration")? + 2..];
    }
    let mut doc: Vec<Element> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    loop {
        let lt = rest.find('<').unwrap_or(rest.len());
        let text = unescape(&rest[..lt])?;
        match open.last() {
            Some(&i) => doc[i].text.push_str(&text),
            None if !text.trim().is_empty() => return Err(format!("text outside: {text:?}")),
            None => {}
        }
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        let gt = rest.find('>').ok_or("an open tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let i = open
                .pop()
                .ok_or_else(|| format!("</{name}> closes nothing"))?;
            if doc[i].name != name.trim() {
                return Err(format!("</{name}> closes <{}>", doc[i].name));
            }
            continue;
        }
        let (tag, self_closing) = match tag.strip_suffix('/') {
            Some(t) => (t, true),
            None => (tag, false),
        };
        let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
        let mut attrs = Vec::new();
        let mut a = tag[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a
                .find("=\"")
                .ok_or_else(|| format!("a bad attribute in <{tag}>"))?;
            let close = a[eq + 2..]
                .find('"')
                .ok_or_else(|| format!("an open attribute in <{tag}>"))?;
            attrs.push((a[..eq].to_string(), unescape(&a[eq + 2..eq + 2 + close])?));
            a = a[eq + 2 + close + 1..].trim_start();
        }
        if doc.is_empty() != open.is_empty() {
            return Err("more than one root element".into());
        }
        doc.push(Element {
            name: tag[..name_end].to_string(),
            attrs,
            text: String::new(),
            parent: open.last().copied(),
        });
        if !self_closing {
            open.push(doc.len() - 1);
        }
    }
    match open.pop() {
        Some(i) => Err(format!("<{}> is never closed", doc[i].name)),
        None if doc.is_empty() => Err("no element".into()),
        None => Ok(doc),
    }
}

#[test]
fn the_xml_reader_rejects_what_is_not_well_formed() {
    let doc = parse_xml("<a><b x=\"1 &amp; 2\"/>t &lt; u</a>").unwrap();
    assert_eq!(doc[1].attr("x"), Some("1 & 2"));
    assert_eq!(doc[0].text, "t < u");
    for bad in [
        "<a><b></a>",
        "<a x=1/>",
        "<a>&</a>",
        "<a/><b/>",
        "<a>",
        "x<a/>",
    ] {
        assert!(parse_xml(bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// validate: a journey file with mistakes

#[test]
fn validate_locates_each_mistake_in_a_journey_file() {
    let dir = "tests/fixtures/bad-journey";
    let out = run_cli(
        &["validate", "-c", &format!("{dir}/bakewatch.toml")],
        &repo_root(),
        &[],
    );
    assert_eq!(out.code, Some(1), "{out}");
    let file = format!("{dir}/checks/checkout.toml");
    let expected: &[(u32, u32, &[&str])] = &[
        (
            13,
            41,
            &[
                "json.password",
                "unknown secret `{{ secret.shop_pasword }}`",
                "`secrets` table",
            ],
        ),
        (
            19,
            29,
            &[
                "headers.authorization",
                "unknown capture `{{ tokn }}`",
                "did you mean `token`",
            ],
        ),
        (
            20,
            36,
            &["capture `product`", "invalid JSONPath", "\"$.results[0\""],
        ),
        (
            21,
            74,
            &["unknown key `gte` in assertion", "did you mean `ge`"],
        ),
        (
            27,
            22,
            &[
                "headers.x-cart",
                "unknown capture `{{ cart }}`",
                "captured before this step: token",
            ],
        ),
        (
            32,
            8,
            &["duplicate step name `search`", "first defined at 17:8"],
        ),
    ];
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with(dir)).collect();
    assert_eq!(lines.len(), expected.len(), "one line per mistake:\n{out}");
    for (line, (l, c, words)) in lines.iter().zip(expected) {
        let prefix = format!("{file}:{l}:{c}: ");
        assert!(
            line.starts_with(&prefix),
            "{line:?} should start with {prefix:?}\n{out}"
        );
        for w in *words {
            assert!(line.contains(w), "{line:?} should mention {w:?}");
        }
    }
    assert!(
        out.stderr
            .trim_end()
            .ends_with("6 problems in the configuration"),
        "{out}"
    );
    assert!(out.stdout.is_empty(), "{out}");
}

// ---------------------------------------------------------------------------------------------
// {{ deployment.* }}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_name_the_services_latest_deployment() {
    let lab = Lab::start().await;
    let rt = lab.runtime(&lab.journey(
        "checkout",
        &[(
            "search",
            r#"headers = { authorization = "Bearer {{ token }}", x-deployed-version = "{{ deployment.version }}" }"#,
        )],
    ));
    let check = rt.checks[0].clone();

    // Before the service's first deployment the journey cannot send what it names.
    let o = rt.run_check(&check).await;
    assert_outcome(&o, Status::Error, Reason::Config);
    assert!(o.message.contains("no deployment yet"), "{}", o.message);
    assert!(lab.shop.seen().is_empty(), "no request was made");

    rt.deployed.set(
        "shop",
        Some(bakewatch::template::DeploymentVars {
            id: "shop-9".into(),
            version: "3.1.4".into(),
            environment: "prod".into(),
        }),
    );
    let o = rt.run_check(&check).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let search = lab.shop.seen_at(Method::GET, "/search");
    assert_eq!(search.len(), 1);
    assert_eq!(search[0].header("x-deployed-version"), Some("3.1.4"));
}
