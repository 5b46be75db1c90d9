//! The `journey` check: ordered HTTP steps that carry state between them (captures, a cookie
//! jar per run), each with the shared assertions, retries that are always reported, latency
//! budgets, and cleanup steps that always run afterwards and only degrade.
//!
//! Everything a journey refers to (`{{ capture }}`, `{{ secret.x }}`) is checked at load.
//! One run never shares anything with another: a fresh cookie jar, fresh captures, and a
//! fresh connection per request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::Value as Json;
use serde_json_path::JsonPath;

use crate::checks::assert::{Assertion, QueryScope, judge};
use crate::checks::http::{self, ResponseView};
use crate::checks::outcome::{
    AttemptReport, Observation, Observations, Outcome, Reason, Status, StepReport, StepStatus,
};
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader, Value, to_json};
use crate::template::{self, JsonTemplate, Scope, Template, Var};

/// A journey's own `expect` may look at these.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &["total"],
    observations: &["steps_total", "steps_passed", "steps_failed"],
};

/// What a step's `expect` may ask: everything an http check offers.
const STEP_SCOPE: QueryScope = http::SCOPE;

/// Redirects a journey follows itself (so every hop's cookies land in the jar).
const MAX_REDIRECTS: usize = 10;

/// Body cap per step response.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug)]
enum Target {
    Path(Template),
    Url(Template),
}

#[derive(Debug)]
enum StepBody {
    None,
    Raw(Template),
    Json(JsonTemplate),
    Form(Vec<(String, Template)>),
}

#[derive(Debug)]
enum CaptureSource {
    JsonPath(JsonPath),
    Header(String),
    Cookie(String),
    Regex(Regex),
    Status,
}

#[derive(Debug)]
struct Capture {
    name: String,
    source: CaptureSource,
    /// A secret capture (a token) is redacted from every report, like config secrets.
    secret: bool,
}

/// When a failed attempt is tried again.
#[derive(Debug, Clone, PartialEq)]
enum RetryOn {
    Connect,
    Timeout,
    Status(u16),
    /// `status:5xx`
    StatusClass(u16),
    Assertion,
}

#[derive(Debug)]
struct Retry {
    attempts: u32,
    delay: Duration,
    on: Vec<RetryOn>,
}

impl Step {
    fn uses_deployment(&self) -> bool {
        let target = match &self.target {
            Target::Path(t) | Target::Url(t) => t,
        };
        let body = match &self.body {
            StepBody::None => false,
            StepBody::Raw(t) => t.uses_deployment(),
            StepBody::Json(j) => j.vars().iter().any(|v| matches!(v, Var::Deployment(_))),
            StepBody::Form(f) => f.iter().any(|(_, t)| t.uses_deployment()),
        };
        target.uses_deployment()
            || body
            || self
                .headers
                .iter()
                .map(|(_, t)| t)
                .chain(self.query.iter().map(|(_, t)| t))
                .any(Template::uses_deployment)
    }
}

#[derive(Debug)]
struct Step {
    name: String,
    method: Method,
    target: Target,
    headers: Vec<(HeaderName, Template)>,
    query: Vec<(String, Template)>,
    body: StepBody,
    timeout: Option<Duration>,
    expect: Vec<Assertion>,
    captures: Vec<Capture>,
    /// Slower than this → the step fails.
    budget: Option<Duration>,
    /// Slower than this → the step is degraded.
    warn: Option<Duration>,
    retry: Retry,
}

/// A validated journey, ready to run.
#[derive(Debug)]
pub struct JourneySpec {
    base_url: Option<Url>,
    cookies: bool,
    secrets: Vec<(String, Secret)>,
    /// The whole journey slower than this → fail.
    budget: Option<Duration>,
    /// The check's hard timeout: steps share it, leaving room for cleanup.
    timeout: Duration,
    follow_redirects: bool,
    steps: Vec<Step>,
    cleanup: Vec<Step>,
    client: reqwest::Client,
}

impl JourneySpec {
    pub(crate) fn secret_values(&self) -> Vec<String> {
        self.secrets
            .iter()
            .map(|(_, s)| s.expose().to_string())
            .collect()
    }

    /// Whether a step's request (URL, query, headers, body) names `{{ deployment.* }}`.
    pub fn uses_deployment(&self) -> bool {
        self.steps
            .iter()
            .chain(&self.cleanup)
            .any(Step::uses_deployment)
    }

    /// The step assertions naming `{{ deployment.* }}`, as "step `name`: assertion".
    pub fn deployment_assertions(&self) -> Vec<String> {
        self.steps
            .iter()
            .chain(&self.cleanup)
            .flat_map(|s| {
                s.expect
                    .iter()
                    .filter(|a| a.uses_deployment())
                    .map(move |a| format!("step `{}`: {a}", s.name))
            })
            .collect()
    }

    /// Reads a journey's keys; `timeout` is the check's hard timeout.
    pub fn parse(t: &mut TableReader, cx: &mut Cx, timeout: Duration) -> Option<JourneySpec> {
        let before = cx.diags.len();
        let base_url: Option<Url> =
            t.opt::<At<String>>("base_url", cx)
                .and_then(|u| match Url::parse(&u.value) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                        Some(url)
                    }
                    _ => {
                        cx.error(
                            u.span,
                            format!("base_url: {:?} is not an http(s) URL", u.value),
                        );
                        None
                    }
                });
        let cookies = t.or("cookies", true, cx);
        let secrets: BTreeMap<String, Secret> = t.or("secrets", BTreeMap::new(), cx);
        let budget = t.opt("budget", cx);
        let follow_redirects = t.or("follow_redirects", true, cx);
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("bakewatch/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(v) = t.get("tls") {
            builder = http::apply_tls(builder, v, cx)?;
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                cx.error(t.span.clone(), format!("cannot build the HTTP client: {e}"));
                return None;
            }
        };
        let secret_names: HashSet<String> = secrets.keys().cloned().collect();
        let mut known: Vec<String> = Vec::new();
        let mut step_names: HashMap<String, std::ops::Range<usize>> = HashMap::new();
        let mut read_steps = |key: &'static str,
                              t: &mut TableReader,
                              cx: &mut Cx,
                              known: &mut Vec<String>|
         -> Vec<Step> {
            let mut out = Vec::new();
            let Some(list) = t.get(key) else { return out };
            let toml::de::DeValue::Array(items) = list.get_ref() else {
                cx.error(
                    list.span(),
                    format!("{key}: write steps as [[check.{key}]] tables"),
                );
                return out;
            };
            for item in items.iter() {
                if let Some(step) = parse_step(
                    item,
                    key,
                    cx,
                    known,
                    &secret_names,
                    &mut step_names,
                    base_url.is_some(),
                    follow_redirects,
                ) {
                    out.push(step);
                }
            }
            out
        };
        let steps = read_steps("step", t, cx, &mut known);
        // Cleanup may use any capture: a step that failed leaves its captures empty.
        let cleanup = read_steps("cleanup", t, cx, &mut known);
        if steps.is_empty() && cx.diags.len() == before {
            cx.error(
                t.span.clone(),
                "a journey needs at least one [[check.step]]",
            );
        }
        if cx.diags.len() > before {
            return None;
        }
        Some(JourneySpec {
            base_url,
            cookies,
            secrets: secrets.into_iter().collect(),
            budget,
            timeout,
            follow_redirects,
            steps,
            cleanup,
            client,
        })
    }

    /// One run: every step in order (stopping at the first failure), then every cleanup step.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let hard = start + self.timeout;
        // Steps leave a fifth of the time to cleanup; everything ends a little before the
        // runner's hard timeout, so the report is never lost to it.
        let margin = Duration::from_millis(20).min(self.timeout / 10);
        let steps_deadline = if self.cleanup.is_empty() {
            hard - margin
        } else {
            hard - self.timeout / 5
        };
        let jar = self.cookies.then(|| Arc::new(Jar::default()));
        let mut scope = Scope {
            captures: HashMap::new(),
            secrets: self
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
            deployment: crate::template::current(),
        };
        let mut secret_captures: Vec<String> = Vec::new();
        let mut reports = Vec::new();
        let mut first_failure: Option<(Reason, String)> = None;
        let mut first_degraded: Option<String> = None;
        for step in &self.steps {
            if first_failure.is_some() {
                reports.push(StepReport::skipped(
                    &step.name,
                    step_request_line(step),
                    false,
                ));
                continue;
            }
            let r = self
                .run_step(
                    step,
                    &mut scope,
                    jar.as_deref(),
                    steps_deadline,
                    &mut secret_captures,
                )
                .await;
            match r.status {
                StepStatus::Fail => {
                    first_failure = Some((r.reason, format!("{}: {}", step.name, r.message)))
                }
                StepStatus::Degraded if first_degraded.is_none() => {
                    first_degraded = Some(format!("{}: {}", step.name, r.message))
                }
                _ => {}
            }
            reports.push(r);
        }
        for step in &self.cleanup {
            let mut r = self
                .run_step(
                    step,
                    &mut scope,
                    jar.as_deref(),
                    hard - margin,
                    &mut secret_captures,
                )
                .await;
            r.cleanup = true;
            if r.status == StepStatus::Fail && first_degraded.is_none() {
                first_degraded = Some(format!("cleanup {}: {}", step.name, r.message));
            }
            reports.push(r);
        }
        let total = start.elapsed();
        if first_failure.is_none()
            && let Some(b) = self.budget
            && total > b
        {
            first_failure = Some((
                Reason::Assertion,
                format!("journey took {}, budget {}", fmt_ms(total), fmt_ms(b)),
            ));
        }
        let passed = reports
            .iter()
            .filter(|r| !r.cleanup && matches!(r.status, StepStatus::Pass | StepStatus::Degraded))
            .count();
        let failed = reports
            .iter()
            .filter(|r| !r.cleanup && r.status == StepStatus::Fail)
            .count();
        let mut obs = Observations::default();
        obs.set("steps_total", Observation::Number(self.steps.len() as f64));
        obs.set("steps_passed", Observation::Number(passed as f64));
        obs.set("steps_failed", Observation::Number(failed as f64));
        let mut outcome = match first_failure {
            Some((reason, message)) => Outcome::fail(reason, message),
            None => {
                let view = JourneyView {
                    total,
                    observations: &obs,
                };
                let j = judge(expect, &view, false);
                let mut o = Outcome::new(j.status, j.reason, j.message);
                o.failed_assertions = j.failures;
                if o.status == Status::Pass {
                    match first_degraded {
                        Some(m) => {
                            o.status = Status::Degraded;
                            o.reason = Reason::Assertion;
                            o.message = m;
                        }
                        None => {
                            o.message = format!("{} steps passed", self.steps.len());
                            // Retries are never hidden, not even in the one-line summary.
                            let retried: Vec<String> = reports
                                .iter()
                                .filter(|r| r.attempts.len() > 1)
                                .map(|r| {
                                    let cleanup = if r.cleanup { "cleanup " } else { "" };
                                    format!(
                                        "{cleanup}{} after {} attempts",
                                        r.name,
                                        r.attempts.len()
                                    )
                                })
                                .collect();
                            if !retried.is_empty() {
                                o.message = format!("{} ({})", o.message, retried.join(", "));
                            }
                        }
                    }
                }
                o
            }
        };
        outcome.observations = obs;
        outcome.steps = reports;
        // The journey's own secrets too: a server may echo the password into a step's
        // response, and the runtime's redactor does not look inside step reports.
        secret_captures.extend(scope.secrets.into_values());
        crate::runtime::Redactor::new(secret_captures).scrub_outcome(&mut outcome);
        outcome
    }

    async fn run_step(
        &self,
        step: &Step,
        scope: &mut Scope,
        jar: Option<&Jar>,
        deadline: Instant,
        secret_captures: &mut Vec<String>,
    ) -> StepReport {
        let request_line = step_request_line(step);
        let started = Instant::now();
        let mut attempts = Vec::new();
        let attempts_allowed = step.retry.attempts.max(1);
        let mut last: AttemptResult;
        let mut n = 0;
        loop {
            n += 1;
            let attempt_start = Instant::now();
            let budget = step
                .timeout
                .map_or(deadline, |t| (attempt_start + t).min(deadline));
            last = match tokio::time::timeout(
                budget.saturating_duration_since(attempt_start),
                self.attempt(step, scope, jar),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => AttemptResult::transport(
                    Reason::Timeout,
                    format!(
                        "no response within {}",
                        fmt_ms(budget.saturating_duration_since(attempt_start))
                    ),
                    RetryOn::Timeout,
                ),
            };
            attempts.push(AttemptReport {
                attempt: n,
                http_status: last.http_status,
                duration_ms: attempt_start.elapsed().as_secs_f64() * 1000.0,
                result: if last.status == Status::Pass {
                    "ok".to_string()
                } else {
                    last.message.clone()
                },
            });
            let retryable = n < attempts_allowed
                && last.status == Status::Fail
                && last
                    .retry_kinds
                    .iter()
                    .any(|k| step.retry.on.iter().any(|on| retry_matches(on, k)));
            if !retryable || Instant::now() + step.retry.delay >= deadline {
                break;
            }
            tokio::time::sleep(step.retry.delay).await;
        }
        let duration = started.elapsed();
        let mut status = match last.status {
            Status::Pass => StepStatus::Pass,
            Status::Degraded => StepStatus::Degraded,
            _ => StepStatus::Fail,
        };
        let mut reason = last.reason;
        let mut message = last.message.clone();
        if status != StepStatus::Fail {
            // Captures only from a response that passed its asserts.
            if let Some(resp) = &last.response {
                for c in &step.captures {
                    match capture(c, resp) {
                        Some(v) => {
                            if c.secret {
                                secret_captures.push(template::json_text(&v));
                            }
                            scope.captures.insert(c.name.clone(), v);
                        }
                        None => {
                            status = StepStatus::Fail;
                            reason = Reason::Assertion;
                            message = format!("capture `{}` found nothing", c.name);
                            break;
                        }
                    }
                }
            }
        }
        if status != StepStatus::Fail {
            if let Some(b) = step.budget
                && duration > b
            {
                status = StepStatus::Fail;
                reason = Reason::Assertion;
                message = format!("took {}, budget {}", fmt_ms(duration), fmt_ms(b));
            } else if let Some(w) = step.warn
                && duration > w
                && status == StepStatus::Pass
            {
                status = StepStatus::Degraded;
                reason = Reason::Assertion;
                message = format!("took {}, warn above {}", fmt_ms(duration), fmt_ms(w));
            }
        }
        if n > 1 && status != StepStatus::Fail {
            message = format!("{message} (after {n} attempts)");
        } else if n > 1 {
            message = format!("{message} ({n} attempts)");
        }
        StepReport {
            name: step.name.clone(),
            cleanup: false,
            status,
            reason,
            request: request_line,
            http_status: last.http_status,
            duration_ms: duration.as_secs_f64() * 1000.0,
            message,
            attempts,
            failed_assertions: last.failures,
        }
    }

    /// One attempt of a step: build the request from the templates, follow redirects by hand
    /// (so each hop's cookies reach the jar), read the body, judge.
    async fn attempt(&self, step: &Step, scope: &Scope, jar: Option<&Jar>) -> AttemptResult {
        let start = Instant::now();
        let mut url = match self.step_url(step, scope) {
            Ok(u) => u,
            Err(m) => {
                return AttemptResult::transport(Reason::Config, m, RetryOn::Connect)
                    .not_retryable();
            }
        };
        let mut method = step.method.clone();
        let mut with_body = true;
        let mut hops = 0;
        let (resp, ttfb) = loop {
            let mut req = self.client.request(method.clone(), url.clone());
            for (name, value) in &step.headers {
                match HeaderValue::from_str(&value.render(scope)) {
                    Ok(v) => req = req.header(name, v),
                    Err(_) => {
                        return AttemptResult::transport(
                            Reason::Config,
                            format!(
                                "header {name}: the rendered value is not a valid header value"
                            ),
                            RetryOn::Connect,
                        )
                        .not_retryable();
                    }
                }
            }
            if let Some(jar) = jar
                && let Some(cookie) = jar.cookies(&url)
            {
                req = req.header(reqwest::header::COOKIE, cookie);
            }
            if with_body {
                req = match &step.body {
                    StepBody::None => req,
                    StepBody::Raw(t) => req.body(t.render(scope)),
                    StepBody::Json(t) => req.json(&t.render(scope)),
                    StepBody::Form(f) => req.form(
                        &f.iter()
                            .map(|(k, v)| (k.clone(), v.render(scope)))
                            .collect::<Vec<_>>(),
                    ),
                };
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let (reason, message) = http::classify(&e);
                    return AttemptResult::transport_after(reason, message);
                }
            };
            let ttfb = start.elapsed();
            if let Some(jar) = jar {
                let mut set = resp.headers().get_all(reqwest::header::SET_COOKIE).iter();
                jar.set_cookies(&mut set, &url);
            }
            let code = resp.status().as_u16();
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok());
            match (self.follow_redirects, code, location) {
                (true, 301 | 302 | 303 | 307 | 308, Some(next)) if hops < MAX_REDIRECTS => {
                    hops += 1;
                    if code == 303 || (matches!(code, 301 | 302) && method == Method::POST) {
                        method = Method::GET;
                        with_body = false;
                    }
                    url = next;
                }
                _ => break (resp, ttfb),
            }
        };
        let status_code = resp.status().as_u16();
        let (view, _truncated) = match ResponseView::read(resp, MAX_BODY, ttfb, start).await {
            Ok(v) => v,
            Err((reason, message)) => {
                // The request certainly arrived: a timeout at most, never `connect`.
                let mut r = AttemptResult::transport(
                    reason,
                    format!("HTTP {status_code}, reading the body: {message}"),
                    RetryOn::Timeout,
                );
                if reason != Reason::Timeout {
                    r = r.not_retryable();
                }
                r.http_status = Some(status_code);
                return r;
            }
        };
        let j = judge(&step.expect, &view, true);
        let mut kinds = vec![RetryOn::Status(status_code)];
        if !j.failures.is_empty() {
            kinds.push(RetryOn::Assertion);
        }
        AttemptResult {
            status: j.status,
            reason: j.reason,
            message: if j.status == Status::Pass {
                format!("HTTP {status_code}")
            } else {
                j.message
            },
            http_status: Some(status_code),
            failures: j.failures,
            retry_kinds: kinds,
            response: Some(view),
        }
    }

    fn step_url(&self, step: &Step, scope: &Scope) -> Result<Url, String> {
        let mut url = match &step.target {
            Target::Url(t) => {
                let s = t.render(scope);
                Url::parse(&s).map_err(|e| format!("url {s:?}: {e}"))?
            }
            Target::Path(t) => {
                let base = self
                    .base_url
                    .as_ref()
                    .ok_or("no base_url for a path step")?;
                let p = t.render(scope);
                // Joined, not resolved: base "http://h/api" + "/login" is "http://h/api/login".
                let joined = format!(
                    "{}/{}",
                    base.as_str().trim_end_matches('/'),
                    p.trim_start_matches('/')
                );
                Url::parse(&joined).map_err(|e| format!("path {p:?}: {e}"))?
            }
        };
        if !step.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &step.query {
                pairs.append_pair(k, &v.render(scope));
            }
        }
        Ok(url)
    }
}

/// What one attempt of a step produced.
struct AttemptResult {
    status: Status,
    reason: Reason,
    message: String,
    http_status: Option<u16>,
    failures: Vec<crate::checks::AssertionFailure>,
    /// What this failure counts as for `retry.on`.
    retry_kinds: Vec<RetryOn>,
    response: Option<ResponseView>,
}

impl AttemptResult {
    fn transport(reason: Reason, message: String, kind: RetryOn) -> AttemptResult {
        AttemptResult {
            status: Status::Fail,
            reason,
            message,
            http_status: None,
            failures: Vec::new(),
            retry_kinds: vec![kind],
            response: None,
        }
    }

    /// A request that failed before any response. Only errors that prove the request never
    /// left (DNS, refused, TLS handshake) count as `connect`: a connection lost after sending
    /// may have been acted on, and `connect` is what non-idempotent steps may retry on.
    fn transport_after(reason: Reason, message: String) -> AttemptResult {
        match reason {
            Reason::Timeout => AttemptResult::transport(reason, message, RetryOn::Timeout),
            Reason::Connect | Reason::Dns | Reason::Tls => {
                AttemptResult::transport(reason, message, RetryOn::Connect)
            }
            _ => AttemptResult::transport(reason, message, RetryOn::Connect).not_retryable(),
        }
    }

    fn not_retryable(mut self) -> AttemptResult {
        self.retry_kinds.clear();
        self
    }
}

fn retry_matches(on: &RetryOn, kind: &RetryOn) -> bool {
    match (on, kind) {
        (RetryOn::StatusClass(c), RetryOn::Status(s)) => s / 100 == *c,
        (a, b) => a == b,
    }
}

/// What the journey-level `expect` sees.
struct JourneyView<'a> {
    total: Duration,
    observations: &'a Observations,
}

impl crate::checks::assert::Subject for JourneyView<'_> {
    fn duration(&self, kind: &str) -> Option<Duration> {
        (kind == "total").then_some(self.total)
    }

    fn observation(&self, name: &str) -> Option<&Observation> {
        self.observations.get(name)
    }
}

fn capture(c: &Capture, resp: &ResponseView) -> Option<Json> {
    use crate::checks::assert::Subject;
    match &c.source {
        CaptureSource::JsonPath(path) => {
            let nodes = path.query(resp.json()?).all();
            match nodes.as_slice() {
                [] => None,
                [one] => Some((*one).clone()),
                many => Some(Json::Array(many.iter().map(|v| (*v).clone()).collect())),
            }
        }
        CaptureSource::Header(name) => resp
            .header_values(name)
            .first()
            .map(|v| Json::String(v.to_string())),
        CaptureSource::Cookie(name) => resp
            .cookie_values(name)
            .into_iter()
            .next()
            .map(Json::String),
        CaptureSource::Regex(re) => {
            let caps = re.captures(resp.body()?)?;
            let m = caps.get(1).or_else(|| caps.get(0))?;
            Some(Json::String(m.as_str().to_string()))
        }
        CaptureSource::Status => resp.status().map(Json::from),
    }
}

/// "POST /login" — the path only: query strings may carry captured values.
fn step_request_line(step: &Step) -> String {
    let target = match &step.target {
        Target::Path(t) | Target::Url(t) => t.display(),
    };
    let target = match target.split_once('?') {
        Some((path, _)) => format!("{path}?…"),
        None if !step.query.is_empty() => format!("{target}?…"),
        None => target,
    };
    format!("{} {target}", step.method)
}

fn fmt_ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2}s", d.as_secs_f64())
    } else if d >= Duration::from_millis(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}ms", d.as_secs_f64() * 1000.0)
    }
}

const IDEMPOTENT: &[&str] = &["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"];

#[allow(clippy::too_many_arguments)]
fn parse_step(
    item: &Value<'_>,
    key: &str,
    cx: &mut Cx,
    known: &mut Vec<String>,
    secrets: &HashSet<String>,
    names: &mut HashMap<String, std::ops::Range<usize>>,
    has_base: bool,
    _follow: bool,
) -> Option<Step> {
    let what = if key == "step" {
        "step"
    } else {
        "cleanup step"
    };
    let mut t = TableReader::new(item, what, cx)?;
    let before = cx.diags.len();
    let name: Option<At<String>> = t.req("name", cx);
    if let Some(n) = &name {
        if !crate::config::valid_name(&n.value) {
            cx.error(
                n.span.clone(),
                format!(
                    "name: {:?} may only use letters, digits, '-', '_' and '.'",
                    n.value
                ),
            );
        } else if let Some(first) = names.get(&n.value) {
            let (line, col) = cx.src.position(first.start);
            cx.error(
                n.span.clone(),
                format!(
                    "duplicate step name `{}` (first defined at {line}:{col})",
                    n.value
                ),
            );
        } else {
            names.insert(n.value.clone(), n.span.clone());
        }
    }
    let label = name
        .as_ref()
        .map(|n| format!("{what} `{}`", n.value))
        .unwrap_or_else(|| what.to_string());
    let mut t = t.relabel(label);

    // Every template is checked against what exists at this point of the journey.
    let check_template =
        |text: &str, span: std::ops::Range<usize>, what: &str, cx: &mut Cx| -> Option<Template> {
            match Template::parse(text) {
                Ok(tpl) => {
                    check_vars(tpl.vars(), &span, what, known, secrets, cx);
                    Some(tpl)
                }
                Err(m) => {
                    cx.error(span, format!("{what}: {m}"));
                    None
                }
            }
        };

    let method = t
        .opt::<At<String>>("method", cx)
        .map_or(Some(Method::GET), |m| {
            Method::from_bytes(m.value.to_ascii_uppercase().as_bytes())
                .map_err(|_| {
                    cx.error(
                        m.span.clone(),
                        format!("method: {:?} is not an HTTP method", m.value),
                    )
                })
                .ok()
        });
    let path: Option<At<String>> = t.opt("path", cx);
    let url: Option<At<String>> = t.opt("url", cx);
    let target = match (path, url) {
        (Some(p), None) => {
            if !has_base {
                cx.error(
                    p.span.clone(),
                    "path: needs the journey's `base_url` (or give a full `url`)",
                );
            }
            check_template(&p.value, p.span.clone(), "path", cx).map(Target::Path)
        }
        (None, Some(u)) => {
            let tpl = check_template(&u.value, u.span.clone(), "url", cx);
            if let Some(tpl) = &tpl
                && tpl.is_literal()
                && !Url::parse(&u.value).is_ok_and(|x| matches!(x.scheme(), "http" | "https"))
            {
                cx.error(
                    u.span.clone(),
                    format!("url: {:?} is not an http(s) URL", u.value),
                );
            }
            tpl.map(Target::Url)
        }
        (Some(_), Some(u)) => {
            cx.error(u.span, "give either `path` or `url`, not both");
            None
        }
        (None, None) => {
            cx.error(
                t.span.clone(),
                format!("{} needs `path` (joined to base_url) or `url`", t.what()),
            );
            None
        }
    };
    let mut headers = Vec::new();
    if let Some(v) = t.get("headers")
        && let Some(mut h) = TableReader::new(v, "headers", cx)
    {
        let entries: Vec<_> = h
            .entries()
            .map(|(k, v)| (k.get_ref().to_string(), k.span(), v))
            .collect();
        for (k, kspan, v) in entries {
            let Ok(hn) = HeaderName::from_bytes(k.as_bytes()) else {
                cx.error(kspan, format!("headers: {k:?} is not a valid header name"));
                continue;
            };
            match v.get_ref().as_str() {
                Some(s) => {
                    if let Some(tpl) = check_template(s, v.span(), &format!("headers.{k}"), cx) {
                        headers.push((hn, tpl));
                    }
                }
                None => cx.error(v.span(), format!("headers.{k}: expected a string")),
            }
        }
        h.accept_unread();
    }
    let mut query = Vec::new();
    if let Some(v) = t.get("query")
        && let Some(q) = TableReader::new(v, "query", cx)
    {
        let entries: Vec<_> = q
            .entries()
            .map(|(k, v)| (k.get_ref().to_string(), v))
            .collect();
        for (k, v) in entries {
            let text = match v.get_ref() {
                toml::de::DeValue::String(s) => s.to_string(),
                other => template::json_text(&to_json(other)),
            };
            if let Some(tpl) = check_template(&text, v.span(), &format!("query.{k}"), cx) {
                query.push((k, tpl));
            }
        }
    }
    let mut bodies = Vec::new();
    if let Some(b) = t.opt::<At<String>>("body", cx)
        && let Some(tpl) = check_template(&b.value, b.span, "body", cx)
    {
        bodies.push(StepBody::Raw(tpl));
    }
    if let Some(v) = t.get("json") {
        // Each string is checked at its own position (a `[check.step.json]` table spans
        // many lines); the body is built only when all of them are good.
        let json_before = cx.diags.len();
        let mut strings = Vec::new();
        json_strings(v, "json".to_string(), &mut strings);
        for (text, span, what) in strings {
            check_template(&text, span, &what, cx);
        }
        if cx.diags.len() == json_before {
            match JsonTemplate::parse(&to_json(v.get_ref())) {
                Ok(tpl) => bodies.push(StepBody::Json(tpl)),
                Err(m) => cx.error(v.span(), format!("json: {m}")),
            }
        }
    }
    if let Some(v) = t.get("form")
        && let Some(f) = TableReader::new(v, "form", cx)
    {
        let entries: Vec<_> = f
            .entries()
            .map(|(k, v)| (k.get_ref().to_string(), v))
            .collect();
        let mut form = Vec::new();
        for (k, v) in entries {
            match v.get_ref().as_str() {
                Some(s) => {
                    if let Some(tpl) = check_template(s, v.span(), &format!("form.{k}"), cx) {
                        form.push((k, tpl));
                    }
                }
                None => cx.error(v.span(), format!("form.{k}: expected a string")),
            }
        }
        bodies.push(StepBody::Form(form));
    }
    if bodies.len() > 1 {
        cx.error(
            t.span.clone(),
            "give at most one of `body`, `json` and `form`",
        );
    }
    let body = bodies.into_iter().next().unwrap_or(StepBody::None);
    let timeout = t.opt("timeout", cx);
    let expect = t
        .get("expect")
        .map(|v| Assertion::parse_list(v, &STEP_SCOPE, cx))
        .unwrap_or_default();
    let budget: Option<Duration> = t.opt("budget", cx);
    let warn: Option<Duration> = t.opt("warn", cx);
    if let (Some(b), Some(w)) = (budget, warn)
        && w >= b
    {
        cx.error(t.span_of("warn"), "warn: must be below `budget`");
    }
    let retry = t
        .get("retry")
        .and_then(|v| parse_retry(v, method.as_ref(), cx))
        .unwrap_or(Retry {
            attempts: 1,
            delay: Duration::ZERO,
            on: Vec::new(),
        });
    // Captures come last: they are visible only to later steps.
    let mut captures = Vec::new();
    if let Some(v) = t.get("capture")
        && let Some(c) = TableReader::new(v, "capture", cx)
    {
        let entries: Vec<_> = c
            .entries()
            .map(|(k, v)| (k.get_ref().to_string(), k.span(), v))
            .collect();
        for (cname, kspan, v) in entries {
            if cname.starts_with("secret")
                || cname.starts_with("deployment")
                || !cname
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                cx.error(kspan, format!("capture name {cname:?}: use letters, digits, '_' and '-' (not secret.* or deployment.*)"));
                continue;
            }
            if let Some(cap) = parse_capture(&cname, v, cx) {
                if !known.contains(&cname) {
                    known.push(cname);
                }
                captures.push(cap);
            }
        }
    }
    t.finish(cx);
    if cx.diags.len() > before {
        return None;
    }
    Some(Step {
        name: name?.value,
        method: method?,
        target: target?,
        headers,
        query,
        body,
        timeout,
        expect,
        captures,
        budget,
        warn,
        retry,
    })
}

/// Every string inside a `json` body: its text, its span and its dotted path.
fn json_strings(
    v: &Value<'_>,
    what: String,
    out: &mut Vec<(String, std::ops::Range<usize>, String)>,
) {
    match v.get_ref() {
        toml::de::DeValue::String(s) => out.push((s.to_string(), v.span(), what)),
        toml::de::DeValue::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                json_strings(x, format!("{what}[{i}]"), out);
            }
        }
        toml::de::DeValue::Table(t) => {
            for (k, x) in t.iter() {
                json_strings(x, format!("{what}.{}", k.get_ref()), out);
            }
        }
        _ => {}
    }
}

fn check_vars<'a>(
    vars: impl Iterator<Item = &'a Var>,
    span: &std::ops::Range<usize>,
    what: &str,
    known: &[String],
    secrets: &HashSet<String>,
    cx: &mut Cx,
) {
    for v in vars {
        match v {
            Var::Capture(n) if !known.contains(n) => {
                let hint = crate::config::reader::closest(
                    n,
                    &known.iter().map(String::as_str).collect::<Vec<_>>(),
                )
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
                let so_far = if known.is_empty() {
                    "nothing is captured before this step".to_string()
                } else {
                    format!("captured before this step: {}", known.join(", "))
                };
                cx.error(
                    span.clone(),
                    format!("{what}: unknown capture `{{{{ {n} }}}}`{hint}; {so_far}"),
                );
            }
            Var::Secret(n) if !secrets.contains(n) => {
                cx.error(span.clone(), format!("{what}: unknown secret `{{{{ secret.{n} }}}}` (add it to the journey's `secrets` table)"));
            }
            _ => {}
        }
    }
}

fn parse_capture(name: &str, v: &Value<'_>, cx: &mut Cx) -> Option<Capture> {
    let mut t = TableReader::new(v, format!("capture `{name}`"), cx)?;
    let before = cx.diags.len();
    let jsonpath: Option<At<String>> = t.opt("jsonpath", cx);
    let header: Option<String> = t.opt("header", cx);
    let cookie: Option<String> = t.opt("cookie", cx);
    let regex: Option<At<String>> = t.opt("regex", cx);
    let status: Option<bool> = t.opt("status", cx);
    let secret = t.or("secret", false, cx);
    t.finish(cx);
    let given = [
        jsonpath.is_some(),
        header.is_some(),
        cookie.is_some(),
        regex.is_some(),
        status == Some(true),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        cx.error(v.span(), format!("capture `{name}`: give exactly one of jsonpath, header, cookie, regex, status = true"));
        return None;
    }
    let source = if let Some(p) = jsonpath {
        match crate::checks::assert::parse_jsonpath(&p.value) {
            Ok(path) => CaptureSource::JsonPath(path),
            Err(e) => {
                cx.error(
                    p.span,
                    format!("capture `{name}`: invalid JSONPath {:?}: {e}", p.value),
                );
                return None;
            }
        }
    } else if let Some(h) = header {
        CaptureSource::Header(h)
    } else if let Some(c) = cookie {
        CaptureSource::Cookie(c)
    } else if let Some(r) = regex {
        match Regex::new(&r.value) {
            Ok(re) => CaptureSource::Regex(re),
            Err(e) => {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                cx.error(
                    r.span,
                    format!("capture `{name}`: invalid regex {:?}: {first}", r.value),
                );
                return None;
            }
        }
    } else {
        CaptureSource::Status
    };
    (cx.diags.len() == before).then(|| Capture {
        name: name.to_string(),
        source,
        secret,
    })
}

fn parse_retry(v: &Value<'_>, method: Option<&Method>, cx: &mut Cx) -> Option<Retry> {
    let mut t = TableReader::new(v, "retry", cx)?;
    let attempts: u32 = t.or("attempts", 2, cx);
    let delay: Duration = t.or("delay", Duration::from_millis(250), cx);
    let on_list: Vec<At<String>> = t.or(
        "on",
        vec![At {
            value: "connect".into(),
            span: v.span(),
        }],
        cx,
    );
    let idempotent: Option<bool> = t.opt("idempotent", cx);
    t.finish(cx);
    if attempts == 0 || attempts > 10 {
        cx.error(
            v.span(),
            "retry.attempts: between 1 and 10 (the total number of tries)",
        );
    }
    let mut on = Vec::new();
    for item in &on_list {
        let parsed = match item.value.as_str() {
            "connect" => Some(RetryOn::Connect),
            "timeout" => Some(RetryOn::Timeout),
            "assertion" => Some(RetryOn::Assertion),
            s => s.strip_prefix("status:").and_then(|code| {
                if let Some(class) = code.strip_suffix("xx") {
                    class
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (1..=5).contains(c))
                        .map(RetryOn::StatusClass)
                } else {
                    code.parse::<u16>()
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .map(RetryOn::Status)
                }
            }),
        };
        match parsed {
            Some(p) => on.push(p),
            None => cx.error(item.span.clone(), format!("retry.on: unknown condition {:?} (connect, timeout, assertion, status:503, status:5xx)", item.value)),
        }
    }
    // Repeating a non-idempotent request can do the thing twice: only when the request
    // certainly did not arrive (connect), unless the user says it is safe.
    if let Some(m) = method
        && !IDEMPOTENT.contains(&m.as_str())
        && idempotent != Some(true)
        && let Some(bad) = on
            .iter()
            .zip(&on_list)
            .find(|(o, _)| **o != RetryOn::Connect)
    {
        cx.error(
            bad.1.span.clone(),
            format!("retry.on: a {m} step retries only on `connect` (retrying on {:?} could repeat it); add `idempotent = true` to the retry table if repeating is safe", bad.1.value),
        );
    }
    Some(Retry {
        attempts: attempts.max(1),
        delay,
        on,
    })
}
