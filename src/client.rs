//! The client side of `bakewatch deploy` and `bakewatch verdict` (DESIGN §2, §5, §10): register
//! a deployment with one or more daemons over HTTP, read or long-poll its verdict, combine the
//! daemons' verdicts into one, and show progress.
//!
//! It returns a [`Conclusion`] or a [`ClientError`]; `main` turns either into an exit code.
//! Nothing here exits the process or knows an exit-code number.
//!
//! # Several daemons (`--url A --url B`, one per region)
//!
//! The deployment is registered with each, under one id made here (so every daemon has the
//! same id). The combined verdict ([`combine`]) is, in this order of precedence:
//! `fail` if any says fail; *unavailable* (exit 69) if any cannot be reached and
//! `--on-unavailable=fail`; `pending` while any is pending; `inconclusive` if any is;
//! `cancelled` / `superseded` if any is; `pass` only when all pass. A fail ends the wait at
//! once; anything else waits for the daemons still pending, since they could still fail.
//! With `--on-unavailable=proceed` an unreachable daemon counts as a pass, said loudly.
//!
//! # What counts as unreachable
//!
//! Connection failures, request timeouts, and 429 / 502 / 503 / 504 answers. A one-shot
//! request (register, read) retries those twice within about a second and a half; while
//! waiting, a daemon must stay unreachable for [`UNREACHABLE_GRACE`] before it counts (a
//! daemon restart is not a verdict). Every other answer is final: 401 / 403 (a wrong token),
//! 409 (the id was registered with a different body), 404 and other 4xx are usage errors —
//! the caller's configuration is wrong, retrying will not help; a 5xx other than those above,
//! or an answer that does not parse, is an internal error.
//!
//! # Output
//!
//! `deploy` prints only the id on stdout; progress and the final report go to stderr.
//! `verdict` prints the final report on stdout. Progress: on a terminal, one line redrawn in
//! place (spinner, elapsed time, provisional state, first reason); otherwise one plain line
//! whenever a daemon's verdict revision changes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use url::Url;

use crate::cli::{DaemonArgs, DeployArgs, OnUnavailable, VerdictArgs, WaitArgs};
use crate::verdict::Verdict;

/// How long to wait for a TCP (and TLS) connection to a daemon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's own timeout is its long-poll `wait` plus this.
const REQUEST_SLACK: Duration = Duration::from_secs(10);
/// The `wait` asked for in one long-poll (the daemon caps it at 120s).
const LONG_POLL: Duration = Duration::from_secs(60);
/// After a 408 (the daemon's request timeout is shorter than our wait), the wait is halved,
/// down to this.
const MIN_LONG_POLL: Duration = Duration::from_secs(5);
/// Polls that bring nothing new are spaced at least this far apart, so a daemon that answers
/// long-polls at once is not hammered.
const MIN_POLL_GAP: Duration = Duration::from_secs(1);
/// One-shot requests retry transient failures after these delays: enough to ride over a
/// daemon restart, still quick when nothing listens.
const QUICK_RETRIES: [Duration; 2] = [Duration::from_millis(300), Duration::from_secs(1)];
/// While waiting, a daemon that stays unreachable this long counts as unavailable.
pub const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);
/// Longest pause between retries while a daemon is unreachable during a wait.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the terminal progress line is redrawn.
const SPINNER_PERIOD: Duration = Duration::from_millis(120);
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// `--timeout` is clamped to this so the deadline cannot overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(366 * 24 * 3600);
/// Check rows shown per daemon in the final report.
const MAX_CHECK_ROWS: usize = 20;

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// What `deploy` / `verdict` concluded; `main` maps each to its exit code (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    /// `deploy` without `--wait`: registered with every daemon (or, with
    /// `--on-unavailable=proceed`, with every reachable one).
    Registered,
    Pass,
    Fail,
    Inconclusive,
    /// Still pending: `--timeout` reached, or read once without `--wait`.
    StillPending,
    /// Cancelled or superseded: this deployment is no longer the one being verified.
    Stopped,
}

impl Conclusion {
    /// The conclusion a (combined) verdict gives.
    pub fn of(verdict: Verdict) -> Conclusion {
        match verdict {
            Verdict::Pass => Conclusion::Pass,
            Verdict::Fail => Conclusion::Fail,
            Verdict::Inconclusive => Conclusion::Inconclusive,
            Verdict::Pending => Conclusion::StillPending,
            Verdict::Cancelled | Verdict::Superseded => Conclusion::Stopped,
        }
    }
}

/// Why `deploy` / `verdict` could not conclude; `main` maps each to its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The caller's input or configuration is wrong: a bad flag, a rejected token (401 / 403),
    /// an id registered before with a different body (409), an unknown id (404), another 4xx.
    #[error("{0}")]
    Usage(String),
    /// A daemon could not be reached (fail closed).
    #[error("{0}")]
    Unavailable(String),
    /// A daemon answered something this client does not understand, or a 5xx.
    #[error("{0}")]
    Internal(String),
}

impl ClientError {
    /// Among errors from several daemons, the one to report: the caller's mistake first
    /// (fixing it is the next step), then a broken daemon, then an unreachable one.
    fn rank(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 0,
            ClientError::Internal(_) => 1,
            ClientError::Unavailable(_) => 2,
        }
    }

    fn message(&self) -> &str {
        match self {
            ClientError::Usage(m) | ClientError::Unavailable(m) | ClientError::Internal(m) => m,
        }
    }
}

/// The most telling of several errors, carrying every message.
fn worst(errors: Vec<ClientError>) -> Option<ClientError> {
    let rank = errors.iter().map(ClientError::rank).min()?;
    let text = errors
        .iter()
        .map(ClientError::message)
        .collect::<Vec<_>>()
        .join("\nbakewatch: ");
    Some(match rank {
        0 => ClientError::Usage(text),
        1 => ClientError::Internal(text),
        _ => ClientError::Unavailable(text),
    })
}

// ---------------------------------------------------------------------------------------
// Combining daemons
// ---------------------------------------------------------------------------------------

/// What one daemon said, for [`combine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Its current verdict (`Pending` also while nothing was heard from it yet).
    Verdict(Verdict),
    /// It could not be reached.
    Unavailable,
}

/// The verdict of several daemons together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combined {
    Verdict(Verdict),
    /// A daemon could not be reached and `--on-unavailable=fail`.
    Unavailable,
}

impl Combined {
    /// Whether waiting longer could change it.
    pub fn is_settled(self) -> bool {
        self != Combined::Verdict(Verdict::Pending)
    }
}

/// Combines the daemons' answers (see the module docs for the precedence).
pub fn combine(answers: &[Answer], on_unavailable: OnUnavailable) -> Combined {
    let verdicts: Vec<Option<Verdict>> = answers
        .iter()
        .map(|a| match (a, on_unavailable) {
            (Answer::Verdict(v), _) => Some(*v),
            (Answer::Unavailable, OnUnavailable::Proceed) => Some(Verdict::Pass),
            (Answer::Unavailable, OnUnavailable::Fail) => None,
        })
        .collect();
    let any = |v: Verdict| verdicts.contains(&Some(v));
    if any(Verdict::Fail) {
        Combined::Verdict(Verdict::Fail)
    } else if verdicts.contains(&None) {
        Combined::Unavailable
    } else if any(Verdict::Pending) {
        Combined::Verdict(Verdict::Pending)
    } else if any(Verdict::Inconclusive) {
        Combined::Verdict(Verdict::Inconclusive)
    } else if any(Verdict::Cancelled) {
        Combined::Verdict(Verdict::Cancelled)
    } else if any(Verdict::Superseded) {
        Combined::Verdict(Verdict::Superseded)
    } else {
        Combined::Verdict(Verdict::Pass)
    }
}

// ---------------------------------------------------------------------------------------
// Wire shapes
// ---------------------------------------------------------------------------------------

/// The body of `POST /api/v1/deployments`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Registration {
    pub id: String,
    pub service: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Sorted, so the same command gives the same body (registration is idempotent on id +
    /// body).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Registration {
    /// From the command line; makes the id when none is given.
    pub fn from_args(args: &DeployArgs) -> Result<Registration, ClientError> {
        let mut labels = BTreeMap::new();
        for (k, v) in &args.labels {
            if labels.insert(k.clone(), v.clone()).is_some() {
                return Err(ClientError::Usage(format!("--label {k} is given twice")));
            }
        }
        let id = match &args.id {
            Some(id) => id.clone(),
            None => generate_id(&args.service, &args.version, rand::random()),
        };
        Ok(Registration {
            id,
            service: args.service.clone(),
            version: args.version.clone(),
            environment: args.environment.clone(),
            labels,
        })
    }
}

/// `<service>-<version>-<8 hex digits>`, with anything but `[A-Za-z0-9._-]` turned into `-`
/// (a version such as `1.0+build/7` gives `1.0-build-7`) and each part cut to 56 characters:
/// the daemon accepts ids of up to 128 such characters.
pub fn generate_id(service: &str, version: &str, random: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(56)
            .collect()
    };
    format!("{}-{}-{random:08x}", clean(service), clean(version))
}

/// The client's reading of `GET /api/v1/deployments/{id}/verdict` (DESIGN §5,
/// [`crate::verdict::VerdictRecord`]). Deliberately lenient: only `id`, `verdict` and
/// `revision` are required and reason codes are plain strings, so this CLI keeps working
/// against a daemon of another version. An unknown `verdict` is an error: nothing can be
/// concluded from it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VerdictView {
    pub id: String,
    pub verdict: Verdict,
    pub revision: u64,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub evaluation_health: Option<String>,
    #[serde(default)]
    pub reasons: Vec<ReasonView>,
    #[serde(default)]
    pub checks: Vec<CheckView>,
}

/// One of `reasons[]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReasonView {
    pub code: String,
    #[serde(default)]
    pub check: Option<String>,
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub message: String,
}

/// One of `checks[]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CheckView {
    pub check: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub runs: Option<u64>,
    #[serde(default)]
    pub failures: Option<u64>,
    #[serde(default)]
    pub latency_p95_ms: Option<f64>,
    #[serde(default)]
    pub baseline_p95_ms: Option<f64>,
}

/// The `detail` (else `title`) of an RFC 9457 problem body, else the body itself, shortened.
pub fn problem_detail(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        for key in ["detail", "title"] {
            if let Some(s) = v.get(key).and_then(|s| s.as_str())
                && !s.trim().is_empty()
            {
                return shorten(s.trim(), 300);
            }
        }
    }
    shorten(body.trim(), 300)
}

fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// One daemon, as given with `--url`.
#[derive(Debug, Clone)]
struct Daemon {
    base: Url,
    /// The URL as shown to people (password hidden).
    label: String,
}

impl Daemon {
    fn new(base: &Url) -> Daemon {
        let mut shown = base.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        Daemon {
            base: base.clone(),
            label: shown.as_str().trim_end_matches('/').to_string(),
        }
    }

    /// The base URL with `segments` appended (each percent-encoded), so a daemon behind a
    /// path prefix (`https://ops.example/bakewatch/`) works.
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        u
    }
}

/// The daemons of `--url`, each once, in the order given.
fn daemons(args: &DaemonArgs) -> Vec<Arc<Daemon>> {
    let mut out: Vec<Arc<Daemon>> = Vec::new();
    for u in &args.urls {
        let d = Daemon::new(u);
        if !out.iter().any(|o| o.label == d.label) {
            out.push(Arc::new(d));
        }
    }
    out
}

/// How a request went wrong.
#[derive(Debug)]
enum Trouble {
    /// Worth retrying: unreachable, timed out, 429 / 502 / 503 / 504.
    Transient(String),
    /// The daemon's own request timeout ended a long-poll (408): ask for a shorter wait.
    WaitTooLong,
    /// Retrying will not help.
    Final(ClientError),
}

/// What a non-2xx status means for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Transient,
    WaitTooLong,
    Usage,
    Internal,
}

/// Classifies an HTTP status that is not a success. `registered`: the deployment is known to
/// exist there (so a 404 is the daemon's fault, not the caller's).
pub fn classify_status(status: u16, registered: bool) -> StatusClass {
    match status {
        408 => StatusClass::WaitTooLong,
        429 | 502 | 503 | 504 => StatusClass::Transient,
        404 if registered => StatusClass::Internal,
        300..=499 => StatusClass::Usage,
        _ => StatusClass::Internal,
    }
}

/// The HTTP side: one client (connection pool, timeouts) for every daemon.
struct Api {
    http: reqwest::Client,
    token: Option<String>,
}

/// A daemon's raw answer.
struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Api {
    fn new(token: Option<String>) -> Result<Api, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("bakewatch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect is reported (the caller should give the final URL), not followed:
            // following would turn the POST into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Api {
            http,
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder, wait: Duration) -> Result<Reply, Trouble> {
        let answer = req
            .timeout(wait + REQUEST_SLACK)
            .send()
            .await
            .map_err(|e| Trouble::Transient(describe(&e)))?;
        let status = answer.status().as_u16();
        let location = answer
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = answer
            .text()
            .await
            .map_err(|e| Trouble::Transient(describe(&e)))?;
        Ok(Reply {
            status,
            location,
            body,
        })
    }

    /// `POST /api/v1/deployments` once. `Ok(true)`: created (201); `Ok(false)`: it was
    /// already registered with this very body (200).
    async fn register_once(&self, d: &Daemon, reg: &Registration) -> Result<bool, Trouble> {
        let mut req = self
            .http
            .post(d.endpoint(&["api", "v1", "deployments"]))
            .json(reg);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let reply = self.send(req, Duration::ZERO).await?;
        let created = match reply.status {
            201 => true,
            200 => false,
            _ => return Err(self.refusal(d, &reg.id, &reply, false)),
        };
        // The record must be about our deployment; anything else is a confused daemon.
        let record: serde_json::Value = serde_json::from_str(&reply.body).map_err(|e| {
            Trouble::Final(ClientError::Internal(format!(
                "{}: the registration answer is not JSON ({e}): {}",
                d.label,
                shorten(&reply.body, 200)
            )))
        })?;
        match record.get("id").and_then(|v| v.as_str()) {
            Some(id) if id == reg.id => Ok(created),
            other => Err(Trouble::Final(ClientError::Internal(format!(
                "{}: registered deployment {:?} but the answer is about {:?}",
                d.label, reg.id, other
            )))),
        }
    }

    /// `GET /api/v1/deployments/{id}/verdict[?wait=]` once.
    async fn verdict_once(
        &self,
        d: &Daemon,
        id: &str,
        wait: Option<Duration>,
        registered: bool,
    ) -> Result<VerdictView, Trouble> {
        let mut req = self
            .http
            .get(d.endpoint(&["api", "v1", "deployments", id, "verdict"]));
        if let Some(w) = wait {
            req = req.query(&[("wait", format!("{}s", w.as_secs()))]);
        }
        let reply = self.send(req, wait.unwrap_or(Duration::ZERO)).await?;
        if reply.status != 200 {
            return Err(self.refusal(d, id, &reply, registered));
        }
        let view: VerdictView = serde_json::from_str(&reply.body).map_err(|e| {
            Trouble::Final(ClientError::Internal(format!(
                "{}: unreadable verdict ({e}): {}",
                d.label,
                shorten(&reply.body, 200)
            )))
        })?;
        if view.id != id {
            return Err(Trouble::Final(ClientError::Internal(format!(
                "{}: asked for the verdict of {id:?}, got the verdict of {:?}",
                d.label, view.id
            ))));
        }
        Ok(view)
    }

    /// What a non-success answer means, with a message that says what to do.
    fn refusal(&self, d: &Daemon, id: &str, reply: &Reply, registered: bool) -> Trouble {
        let status = reply.status;
        let detail = problem_detail(&reply.body);
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        let label = &d.label;
        match classify_status(status, registered) {
            StatusClass::Transient => Trouble::Transient(format!("HTTP {status}{detail}")),
            StatusClass::WaitTooLong => Trouble::WaitTooLong,
            StatusClass::Usage => Trouble::Final(ClientError::Usage(match status {
                401 | 403 => format!(
                    "{label} refused the API token (HTTP {status}{detail}); set --token or BAKEWATCH_TOKEN to the daemon's token"
                ),
                409 => format!(
                    "{label}: deployment {id:?} is already registered with a different body (HTTP 409{detail}); use another --id, or repeat the first registration exactly"
                ),
                404 => format!("{label} knows no deployment {id:?} (HTTP 404{detail})"),
                300..=399 => format!(
                    "{label} redirects (HTTP {status}) to {}; give the daemon's own URL with --url",
                    reply.location.as_deref().unwrap_or("somewhere unnamed")
                ),
                _ => format!("{label} rejected the request (HTTP {status}{detail})"),
            })),
            StatusClass::Internal => Trouble::Final(ClientError::Internal(if status == 404 {
                format!(
                    "{label} no longer knows deployment {id:?}, registered earlier (HTTP 404{detail})"
                )
            } else {
                format!("{label} failed (HTTP {status}{detail})")
            })),
        }
    }
}

/// A transport error in a line: what failed and its innermost cause.
fn describe(e: &reqwest::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    let cause = inner.to_string();
    if e.is_timeout() {
        format!("no answer in time: {cause}")
    } else if e.is_connect() {
        format!("cannot connect: {cause}")
    } else {
        cause
    }
}

impl Trouble {
    /// Why the daemon counts as unreachable, or the final error when it does not.
    fn into_unreachable(self) -> Result<String, ClientError> {
        match self {
            Trouble::Transient(m) => Ok(m),
            Trouble::WaitTooLong => Ok("HTTP 408 (the daemon timed the request out)".into()),
            Trouble::Final(e) => Err(e),
        }
    }
}

/// Runs `attempt`, retrying transient failures after [`QUICK_RETRIES`].
async fn with_quick_retries<T, F, Fut>(mut attempt: F) -> Result<T, Trouble>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Trouble>>,
{
    let mut delays = QUICK_RETRIES.iter();
    loop {
        match attempt().await {
            Err(Trouble::Transient(m)) => match delays.next() {
                Some(d) => tokio::time::sleep(*d).await,
                None => return Err(Trouble::Transient(m)),
            },
            Err(Trouble::WaitTooLong) => match delays.next() {
                Some(d) => tokio::time::sleep(*d).await,
                None => return Err(Trouble::WaitTooLong),
            },
            done => return done,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// `bakewatch deploy`.
pub async fn deploy(args: &DeployArgs) -> Result<Conclusion, ClientError> {
    let started = Instant::now();
    let reg = Arc::new(Registration::from_args(args)?);
    let api = Arc::new(Api::new(args.token.clone())?);
    let daemons = daemons(&args.daemons);
    let on_unavailable = args.daemons.on_unavailable;
    let mut out = Progress::new(started, daemons.len() > 1);

    let mut registering = JoinSet::new();
    for (i, d) in daemons.iter().enumerate() {
        let (api, d, reg) = (api.clone(), d.clone(), reg.clone());
        registering.spawn(async move {
            let r = with_quick_retries(|| api.register_once(&d, &reg)).await;
            (i, r)
        });
    }
    let mut results: Vec<_> = registering.join_all().await;
    results.sort_by_key(|(i, _)| *i);

    let mut tracked: Vec<Tracked> = daemons.iter().map(|d| Tracked::new(d.clone())).collect();
    let mut errors = Vec::new();
    for (i, r) in results {
        let label = &daemons[i].label;
        match r {
            Ok(true) => out.line(&format!("registered {} with {label}", reg.id)),
            Ok(false) => out.line(&format!(
                "{} was already registered with {label} (same body)",
                reg.id
            )),
            Err(trouble) => match (trouble.into_unreachable(), on_unavailable) {
                (Err(e), _) => errors.push(e),
                (Ok(m), OnUnavailable::Fail) => errors.push(ClientError::Unavailable(format!(
                    "{label} is unavailable ({m}); not registered"
                ))),
                (Ok(m), OnUnavailable::Proceed) => {
                    out.line(&proceed_warning(label, &m));
                    tracked[i].unavailable = Some(m);
                }
            },
        }
    }
    if let Some(e) = worst(errors) {
        return Err(e);
    }
    println!("{}", reg.id);
    let _ = std::io::stdout().flush();
    if !args.wait.wait {
        return Ok(Conclusion::Registered);
    }
    let (tracked, combined) = follow(
        &api,
        tracked,
        &reg.id,
        Some(deadline(started, &args.wait)),
        on_unavailable,
        true,
        &mut out,
    )
    .await?;
    out.line(report(&reg.id, &tracked, combined, started.elapsed()).trim_end());
    conclude(combined, &tracked)
}

/// `bakewatch verdict`.
pub async fn verdict(args: &VerdictArgs) -> Result<Conclusion, ClientError> {
    let started = Instant::now();
    let api = Arc::new(Api::new(None)?);
    let daemons = daemons(&args.daemons);
    let mut out = Progress::new(started, daemons.len() > 1);
    let tracked = daemons.iter().map(|d| Tracked::new(d.clone())).collect();
    let until = args.wait.wait.then(|| deadline(started, &args.wait));
    let (tracked, combined) = follow(
        &api,
        tracked,
        &args.id,
        until,
        args.daemons.on_unavailable,
        false,
        &mut out,
    )
    .await?;
    let text = report(&args.id, &tracked, combined, started.elapsed());
    if combined == Combined::Unavailable {
        // An error: stdout stays empty, the details go with the error message.
        out.line(text.trim_end());
    } else {
        out.clear();
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
    conclude(combined, &tracked)
}

fn deadline(started: Instant, wait: &WaitArgs) -> Instant {
    started + wait.timeout.min(MAX_TIMEOUT)
}

fn conclude(combined: Combined, tracked: &[Tracked]) -> Result<Conclusion, ClientError> {
    match combined {
        Combined::Verdict(v) => Ok(Conclusion::of(v)),
        Combined::Unavailable => Err(ClientError::Unavailable(
            tracked
                .iter()
                .filter_map(|t| {
                    let m = t.unavailable.as_ref()?;
                    Some(format!("{} is unavailable ({m})", t.daemon.label))
                })
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

fn proceed_warning(label: &str, why: &str) -> String {
    format!(
        "WARNING: {label} is UNAVAILABLE ({why}); counting it as PASS because --on-unavailable=proceed"
    )
}

// ---------------------------------------------------------------------------------------
// Following the verdicts
// ---------------------------------------------------------------------------------------

/// What the client knows about one daemon.
#[derive(Debug, Clone)]
struct Tracked {
    daemon: Arc<Daemon>,
    /// Its latest answer.
    seen: Option<VerdictView>,
    /// Why its latest request failed, while it is being retried.
    trouble: Option<String>,
    /// Set once it counts as unreachable (final).
    unavailable: Option<String>,
}

impl Tracked {
    fn new(daemon: Arc<Daemon>) -> Tracked {
        Tracked {
            daemon,
            seen: None,
            trouble: None,
            unavailable: None,
        }
    }

    fn answer(&self) -> Answer {
        if self.unavailable.is_some() {
            Answer::Unavailable
        } else {
            Answer::Verdict(self.seen.as_ref().map_or(Verdict::Pending, |v| v.verdict))
        }
    }
}

/// What a watcher task reports.
enum Event {
    Seen(VerdictView),
    /// A request failed; it is retrying.
    Trouble(String),
    /// Unreachable for good (final).
    Unavailable(String),
    /// A final error (final).
    Failed(ClientError),
}

fn combined_of(tracked: &[Tracked], on_unavailable: OnUnavailable) -> Combined {
    let answers: Vec<Answer> = tracked.iter().map(Tracked::answer).collect();
    combine(&answers, on_unavailable)
}

/// Reads (`until` = `None`) or waits for (`until` = the deadline) the verdict of `id` at every
/// daemon not already unavailable, showing progress, until the combined verdict is settled,
/// the deadline passes, or a daemon gives a final error.
async fn follow(
    api: &Arc<Api>,
    mut tracked: Vec<Tracked>,
    id: &str,
    until: Option<Instant>,
    on_unavailable: OnUnavailable,
    registered: bool,
    out: &mut Progress,
) -> Result<(Vec<Tracked>, Combined), ClientError> {
    let (tx, mut rx) = mpsc::channel::<(usize, Event)>(64);
    let mut watchers = JoinSet::new();
    let id: Arc<str> = Arc::from(id);
    for (i, t) in tracked.iter().enumerate() {
        if t.unavailable.is_none() {
            let (api, d, id, tx) = (api.clone(), t.daemon.clone(), id.clone(), tx.clone());
            watchers.spawn(async move {
                watch(&api, &d, &id, until, registered, i, tx).await;
            });
        }
    }
    drop(tx);
    let mut ticker = tokio::time::interval(SPINNER_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let far = Instant::now() + MAX_TIMEOUT;
    loop {
        let combined = combined_of(&tracked, on_unavailable);
        if until.is_some() && combined.is_settled() {
            break;
        }
        tokio::select! {
            event = rx.recv() => {
                let Some((i, event)) = event else { break };
                let t = &mut tracked[i];
                let label = t.daemon.label.clone();
                match event {
                    Event::Seen(view) => {
                        let changed = t.seen.as_ref().is_none_or(|s| s.revision != view.revision);
                        if t.trouble.take().is_some() {
                            out.line(&format!("{label} answers again"));
                        }
                        if changed && until.is_some() {
                            out.revision(&label, &view);
                        }
                        t.seen = Some(view);
                    }
                    Event::Trouble(m) => {
                        if t.trouble.is_none() {
                            out.line(&format!("{label}: {m}; retrying"));
                        }
                        t.trouble = Some(m);
                    }
                    Event::Unavailable(m) => {
                        if on_unavailable == OnUnavailable::Proceed {
                            out.line(&proceed_warning(&label, &m));
                        }
                        t.trouble = None;
                        t.unavailable = Some(m);
                    }
                    Event::Failed(e) => {
                        out.clear();
                        return Err(e);
                    }
                }
                if until.is_some() {
                    out.draw(&status_line(&tracked, combined_of(&tracked, on_unavailable)));
                }
            }
            _ = tokio::time::sleep_until(until.unwrap_or(far)), if until.is_some() => {
                // A daemon being retried at the deadline that never answered counts as
                // unreachable; one that answered before keeps its last (pending) verdict.
                for t in tracked.iter_mut().filter(|t| t.seen.is_none()) {
                    if let Some(m) = t.trouble.take() {
                        if on_unavailable == OnUnavailable::Proceed {
                            out.line(&proceed_warning(&t.daemon.label, &m));
                        }
                        t.unavailable = Some(m);
                    }
                }
                break;
            }
            _ = ticker.tick(), if until.is_some() => {
                out.draw(&status_line(&tracked, combined_of(&tracked, on_unavailable)));
            }
        }
    }
    out.clear();
    // Dropping `watchers` aborts the ones still polling.
    drop(watchers);
    let combined = combined_of(&tracked, on_unavailable);
    Ok((tracked, combined))
}

/// Polls one daemon: once (`until` = `None`, with quick retries), or long-polls until its
/// verdict concludes (the deadline is enforced by [`follow`], which aborts this task).
async fn watch(
    api: &Api,
    d: &Daemon,
    id: &str,
    until: Option<Instant>,
    registered: bool,
    index: usize,
    tx: mpsc::Sender<(usize, Event)>,
) {
    // An error means `follow` is done and no longer listening.
    let report = async |event: Event| tx.send((index, event)).await.map_err(drop);
    let Some(deadline) = until else {
        let event = match with_quick_retries(|| api.verdict_once(d, id, None, registered)).await {
            Ok(v) => Event::Seen(v),
            Err(trouble) => match trouble.into_unreachable() {
                Ok(m) => Event::Unavailable(m),
                Err(e) => Event::Failed(e),
            },
        };
        let _ = report(event).await;
        return;
    };
    let mut wait = LONG_POLL;
    // The first request asks for the state now, as does the first after a failure; the
    // others long-poll for a change.
    let mut first = true;
    let mut last_revision = None;
    let mut unreachable_since: Option<Instant> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let asked = Instant::now();
        let remaining = deadline.saturating_duration_since(asked);
        let w = if first {
            Duration::ZERO
        } else {
            wait.min(Duration::from_secs(remaining.as_secs()))
        };
        let event = match api.verdict_once(d, id, Some(w), registered).await {
            Ok(view) => {
                first = false;
                unreachable_since = None;
                backoff = Duration::from_secs(1);
                let concluded = view.verdict.is_concluded();
                let unchanged = last_revision == Some(view.revision);
                last_revision = Some(view.revision);
                if report(Event::Seen(view)).await.is_err() || concluded {
                    return;
                }
                if unchanged && asked.elapsed() < MIN_POLL_GAP {
                    tokio::time::sleep(MIN_POLL_GAP - asked.elapsed()).await;
                }
                continue;
            }
            Err(Trouble::WaitTooLong) => {
                wait = (wait / 2).max(MIN_LONG_POLL);
                if asked.elapsed() < MIN_POLL_GAP {
                    tokio::time::sleep(MIN_POLL_GAP - asked.elapsed()).await;
                }
                continue;
            }
            Err(Trouble::Final(e)) => {
                let _ = report(Event::Failed(e)).await;
                return;
            }
            Err(Trouble::Transient(m)) => {
                first = true;
                // From the first failure seen, not from when a long-poll that failed began.
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNREACHABLE_GRACE {
                    let _ = report(Event::Unavailable(m)).await;
                    return;
                }
                Event::Trouble(m)
            }
        };
        if report(event).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

// ---------------------------------------------------------------------------------------
// Showing progress
// ---------------------------------------------------------------------------------------

/// Progress on stderr: a line redrawn in place on a terminal, plain lines otherwise.
struct Progress {
    tty: bool,
    started: Instant,
    /// Several daemons: name the daemon on each plain line.
    multi: bool,
    frame: usize,
    /// The terminal line is showing and must be cleared before anything else is printed.
    drawn: bool,
}

impl Progress {
    fn new(started: Instant, multi: bool) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            started,
            multi,
            frame: 0,
            drawn: false,
        }
    }

    /// A line of its own (above the progress line on a terminal).
    fn line(&mut self, text: &str) {
        self.clear();
        eprintln!("{text}");
    }

    /// A daemon's verdict revision changed: a plain line (terminals show it on the
    /// progress line instead).
    fn revision(&mut self, label: &str, view: &VerdictView) {
        if !self.tty {
            let who = if self.multi {
                format!("{label}: ")
            } else {
                String::new()
            };
            eprintln!(
                "[{}] {who}{}",
                elapsed_text(self.started.elapsed()),
                view_line(view)
            );
        }
    }

    /// Redraws the progress line (terminals only).
    fn draw(&mut self, status: &str) {
        if !self.tty {
            return;
        }
        self.frame = (self.frame + 1) % SPINNER.len();
        let text = format!(
            "{} {} {status}",
            SPINNER[self.frame],
            elapsed_text(self.started.elapsed())
        );
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|w| *w > 10)
            .unwrap_or(80);
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{}", shorten(&text, width - 1));
        let _ = stderr.flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.drawn = false;
        }
    }
}

/// `1m05s`-style elapsed time.
pub fn elapsed_text(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

fn reason_text(r: &ReasonView) -> String {
    let mut t = r.code.clone();
    match (&r.check, &r.step) {
        (Some(c), Some(s)) => {
            let _ = write!(t, " ({c}, step {s})");
        }
        (Some(c), None) => {
            let _ = write!(t, " ({c})");
        }
        _ => {}
    }
    if !r.message.is_empty() {
        let _ = write!(t, ": {}", r.message);
    }
    t
}

/// One daemon's state in a line: `pending · verifying · revision 4 · NO_DATA (api): …`.
pub fn view_line(v: &VerdictView) -> String {
    let mut parts = vec![v.verdict.to_string()];
    if let Some(p) = &v.phase
        && !(v.verdict.is_concluded() && p == "concluded")
    {
        parts.push(p.clone());
    }
    if let Some(h) = &v.evaluation_health
        && h != "ok"
    {
        parts.push(format!("evaluation {h}"));
    }
    parts.push(format!("revision {}", v.revision));
    if let Some(r) = v.reasons.first() {
        parts.push(reason_text(r));
    }
    parts.join(" · ")
}

/// The terminal progress line (without spinner and elapsed time).
fn status_line(tracked: &[Tracked], combined: Combined) -> String {
    let mut text = match combined {
        Combined::Verdict(v) => v.to_string(),
        Combined::Unavailable => "unavailable".to_string(),
    };
    if tracked.len() == 1 {
        let t = &tracked[0];
        if let Some(p) = t.seen.as_ref().and_then(|v| v.phase.as_ref()) {
            let _ = write!(text, " ({p})");
        }
    } else {
        let each: Vec<String> = tracked
            .iter()
            .map(|t| format!("{}: {}", t.daemon.label, answer_word(t)))
            .collect();
        let _ = write!(text, " [{}]", each.join(", "));
    }
    if let Some(r) = tracked
        .iter()
        .filter_map(|t| t.seen.as_ref()?.reasons.first())
        .next()
    {
        let _ = write!(text, " · {}", reason_text(r));
    }
    if let Some(t) = tracked.iter().find(|t| t.trouble.is_some()) {
        let _ = write!(text, " · {} unreachable, retrying", t.daemon.label);
    }
    text
}

fn answer_word(t: &Tracked) -> String {
    match t.answer() {
        Answer::Unavailable => "unavailable".to_string(),
        Answer::Verdict(_) if t.seen.is_none() => "no answer yet".to_string(),
        Answer::Verdict(v) => v.to_string(),
    }
}

/// The final report: the combined verdict, then what each daemon said.
fn report(id: &str, tracked: &[Tracked], combined: Combined, elapsed: Duration) -> String {
    let mut out = String::new();
    let (word, decision) = match combined {
        Combined::Verdict(v) => (v.to_string(), format!("{:?}", v.decision()).to_lowercase()),
        Combined::Unavailable => ("unavailable".to_string(), "hold".to_string()),
    };
    let first = tracked.iter().find_map(|t| t.seen.as_ref());
    let what = match first.map(|v| (&v.service, &v.version)) {
        Some((Some(s), Some(v))) => format!(" ({s} {v})"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "deployment {id}{what}: {word} (decision {decision}) after {}",
        elapsed_text(elapsed)
    );
    for t in tracked {
        let label = &t.daemon.label;
        if let Some(m) = &t.unavailable {
            // Unless the whole answer is "unavailable", it was counted as a pass.
            let counted = if combined == Combined::Unavailable {
                ""
            } else {
                ", counted as PASS (--on-unavailable=proceed)"
            };
            let _ = writeln!(out, "  {label}: UNAVAILABLE ({m}){counted}");
            continue;
        }
        let Some(v) = &t.seen else {
            let _ = writeln!(out, "  {label}: no answer");
            continue;
        };
        let _ = write!(out, "  {label}: {}", v.verdict);
        if let Some(d) = &v.decision {
            let _ = write!(out, " (decision {d})");
        }
        let _ = write!(out, ", revision {}", v.revision);
        if let Some(h) = &v.evaluation_health {
            let _ = write!(out, ", evaluation {h}");
        }
        if let Some(m) = &t.trouble {
            let _ = write!(out, ", last request failed: {m}");
        }
        out.push('\n');
        for r in &v.reasons {
            let _ = writeln!(out, "    - {}", reason_text(r));
        }
        for c in v.checks.iter().take(MAX_CHECK_ROWS) {
            let _ = write!(out, "    check {}: {}", c.check, c.status);
            if let Some(n) = c.runs {
                let _ = write!(out, ", {n} runs");
            }
            if let Some(n) = c.failures {
                let _ = write!(out, ", {n} failures");
            }
            if let Some(p) = c.latency_p95_ms {
                let _ = write!(out, ", p95 {p:.1} ms");
                if let Some(b) = c.baseline_p95_ms {
                    let _ = write!(out, " (baseline {b:.1} ms)");
                }
            }
            out.push('\n');
        }
        if v.checks.len() > MAX_CHECK_ROWS {
            let _ = writeln!(
                out,
                "    … and {} more checks",
                v.checks.len() - MAX_CHECK_ROWS
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Answer::Unavailable as Down;
    use OnUnavailable::{Fail as Closed, Proceed};
    use Verdict::*;

    fn v(x: Verdict) -> Answer {
        Answer::Verdict(x)
    }

    #[test]
    fn one_daemon_gives_its_own_verdict() {
        for x in [Pending, Pass, Fail, Inconclusive, Cancelled, Superseded] {
            assert_eq!(combine(&[v(x)], Closed), Combined::Verdict(x));
        }
    }

    #[test]
    fn fail_wins_over_everything_even_while_others_are_pending_or_unreachable() {
        for other in [Pending, Pass, Inconclusive, Cancelled, Superseded] {
            assert_eq!(
                combine(&[v(other), v(Fail)], Closed),
                Combined::Verdict(Fail)
            );
        }
        assert_eq!(combine(&[Down, v(Fail)], Closed), Combined::Verdict(Fail));
        assert!(Combined::Verdict(Fail).is_settled());
    }

    #[test]
    fn pass_only_when_all_pass() {
        assert_eq!(
            combine(&[v(Pass), v(Pass), v(Pass)], Closed),
            Combined::Verdict(Pass)
        );
        assert_eq!(
            combine(&[v(Pass), v(Pending)], Closed),
            Combined::Verdict(Pending)
        );
    }

    #[test]
    fn pending_while_any_is_pending_because_it_could_still_fail() {
        for other in [Pass, Inconclusive, Cancelled, Superseded] {
            let c = combine(&[v(other), v(Pending)], Closed);
            assert_eq!(c, Combined::Verdict(Pending));
            assert!(!c.is_settled());
        }
    }

    #[test]
    fn inconclusive_then_cancelled_then_superseded() {
        assert_eq!(
            combine(&[v(Pass), v(Inconclusive), v(Cancelled)], Closed),
            Combined::Verdict(Inconclusive)
        );
        assert_eq!(
            combine(&[v(Pass), v(Superseded), v(Cancelled)], Closed),
            Combined::Verdict(Cancelled)
        );
        assert_eq!(
            combine(&[v(Superseded), v(Pass)], Closed),
            Combined::Verdict(Superseded)
        );
    }

    #[test]
    fn unreachable_fails_closed_unless_told_to_proceed() {
        assert_eq!(combine(&[v(Pass), Down], Closed), Combined::Unavailable);
        assert_eq!(combine(&[v(Pending), Down], Closed), Combined::Unavailable);
        assert!(Combined::Unavailable.is_settled());
        assert_eq!(combine(&[v(Pass), Down], Proceed), Combined::Verdict(Pass));
        assert_eq!(combine(&[Down], Proceed), Combined::Verdict(Pass));
        assert_eq!(
            combine(&[Down, v(Pending)], Proceed),
            Combined::Verdict(Pending)
        );
        assert_eq!(
            combine(&[Down, v(Inconclusive)], Proceed),
            Combined::Verdict(Inconclusive)
        );
    }

    #[test]
    fn each_verdict_has_its_own_conclusion() {
        assert_eq!(Conclusion::of(Pass), Conclusion::Pass);
        assert_eq!(Conclusion::of(Fail), Conclusion::Fail);
        assert_eq!(Conclusion::of(Inconclusive), Conclusion::Inconclusive);
        assert_eq!(Conclusion::of(Pending), Conclusion::StillPending);
        assert_eq!(Conclusion::of(Cancelled), Conclusion::Stopped);
        assert_eq!(Conclusion::of(Superseded), Conclusion::Stopped);
    }

    #[test]
    fn statuses_are_classified_by_who_must_act() {
        use StatusClass::*;
        for s in [429, 502, 503, 504] {
            assert_eq!(classify_status(s, false), Transient, "{s}");
        }
        assert_eq!(classify_status(408, true), WaitTooLong);
        for s in [301, 308, 400, 401, 403, 409, 413, 422] {
            assert_eq!(classify_status(s, false), Usage, "{s}");
        }
        assert_eq!(classify_status(404, false), Usage);
        assert_eq!(classify_status(404, true), Internal);
        assert_eq!(classify_status(500, false), Internal);
        assert_eq!(classify_status(501, true), Internal);
    }

    #[test]
    fn the_callers_mistake_is_reported_before_an_outage() {
        let e = worst(vec![
            ClientError::Unavailable("b down".into()),
            ClientError::Usage("a: 409".into()),
        ])
        .unwrap();
        assert!(
            matches!(&e, ClientError::Usage(m) if m.contains("b down") && m.contains("a: 409"))
        );
        let e = worst(vec![
            ClientError::Unavailable("b".into()),
            ClientError::Internal("a".into()),
        ])
        .unwrap();
        assert!(matches!(e, ClientError::Internal(_)));
        assert!(worst(Vec::new()).is_none());
    }

    #[test]
    fn generated_ids_are_url_safe_and_carry_service_and_version() {
        assert_eq!(generate_id("shop", "2.0.0", 0x8812), "shop-2.0.0-00008812");
        assert_eq!(
            generate_id("shop api", "1.0+build/7", 0xdeadbeef),
            "shop-api-1.0-build-7-deadbeef"
        );
        let long = "x".repeat(500);
        assert_eq!(generate_id(&long, &long, 1).len(), 56 + 1 + 56 + 1 + 8);
    }

    #[test]
    fn problem_detail_prefers_detail_then_title_then_the_body() {
        let p = r#"{"type":"about:blank","title":"Conflict","status":409,"detail":"id reused"}"#;
        assert_eq!(problem_detail(p), "id reused");
        assert_eq!(
            problem_detail(r#"{"title":"Unauthorized","status":401}"#),
            "Unauthorized"
        );
        assert_eq!(problem_detail(" plain text\n"), "plain text");
        assert_eq!(problem_detail(&"y".repeat(1000)).chars().count(), 300);
    }

    #[test]
    fn endpoints_keep_a_path_prefix_and_encode_the_id() {
        let d = Daemon::new(&Url::parse("https://ops.example/bakewatch/").unwrap());
        assert_eq!(
            d.endpoint(&["api", "v1", "deployments", "a/b c", "verdict"])
                .as_str(),
            "https://ops.example/bakewatch/api/v1/deployments/a%2Fb%20c/verdict"
        );
        let d = Daemon::new(&Url::parse("http://127.0.0.1:9797").unwrap());
        assert_eq!(
            d.endpoint(&["api", "v1", "deployments"]).as_str(),
            "http://127.0.0.1:9797/api/v1/deployments"
        );
        let d = Daemon::new(&Url::parse("http://ops:secret@host:1/").unwrap());
        assert_eq!(d.label, "http://ops:***@host:1");
    }

    #[test]
    fn the_daemons_verdict_record_reads_as_a_view() {
        use crate::verdict::{VerdictPolicy, VerdictRecord};
        let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let record = VerdictRecord::new("shop-2-1", "shop", "2", t, &VerdictPolicy::default());
        let json = serde_json::to_string(&record).unwrap();
        let view: VerdictView = serde_json::from_str(&json).unwrap();
        assert_eq!(view.id, "shop-2-1");
        assert_eq!(view.verdict, Pending);
        assert_eq!(view.revision, 1);
        assert_eq!(view.decision.as_deref(), Some("wait"));

        // The example of DESIGN §5, with a reason code this client has never heard of.
        let design = r#"{"id":"shop-2.0.0-8812","service":"shop","version":"2.0.0","phase":"concluded",
 "verdict":"fail","decision":"rollback","evaluation_health":"ok","revision":23,
 "started_at":"2026-01-01T00:00:00Z","concluded_at":"2026-01-01T00:03:00Z",
 "reasons":[{"code":"SOMETHING_NEW","check":"checkout-journey","step":"login",
   "message":"login failed 2 consecutive runs: HTTP 500 (expected 200)",
   "observed":{"status":500},"evidence":"/api/v1/checks/checkout-journey"}],
 "checks":[{"check":"api-health","status":"ok","runs":41,"failures":0,
   "latency_p95_ms":12.1,"baseline_p95_ms":11.7}]}"#;
        let view: VerdictView = serde_json::from_str(design).unwrap();
        assert_eq!(view.verdict, Fail);
        assert_eq!(
            view_line(&view),
            "fail · revision 23 · SOMETHING_NEW (checkout-journey, step login): login failed 2 consecutive runs: HTTP 500 (expected 200)"
        );
        let d = Arc::new(Daemon::new(&Url::parse("http://a:1").unwrap()));
        let tracked = vec![Tracked {
            seen: Some(view),
            ..Tracked::new(d)
        }];
        let text = report(
            "shop-2.0.0-8812",
            &tracked,
            Combined::Verdict(Fail),
            Duration::from_secs(192),
        );
        assert_eq!(
            text,
            "deployment shop-2.0.0-8812 (shop 2.0.0): fail (decision rollback) after 3m12s\n\
             \x20 http://a:1: fail (decision rollback), revision 23, evaluation ok\n\
             \x20   - SOMETHING_NEW (checkout-journey, step login): login failed 2 consecutive runs: HTTP 500 (expected 200)\n\
             \x20   check api-health: ok, 41 runs, 0 failures, p95 12.1 ms (baseline 11.7 ms)\n"
        );

        // An unknown verdict concludes nothing: refuse it.
        let odd = design.replace(r#""verdict":"fail""#, r#""verdict":"maybe""#);
        assert!(serde_json::from_str::<VerdictView>(&odd).is_err());
    }

    #[test]
    fn the_progress_line_names_each_daemon_when_there_are_several() {
        let a = Arc::new(Daemon::new(&Url::parse("http://a:1").unwrap()));
        let b = Arc::new(Daemon::new(&Url::parse("http://b:1").unwrap()));
        let seen = VerdictView {
            id: "x".into(),
            verdict: Pending,
            revision: 3,
            service: None,
            version: None,
            phase: Some("verifying".into()),
            decision: Some("wait".into()),
            evaluation_health: Some("ok".into()),
            reasons: vec![ReasonView {
                code: "INSUFFICIENT_SAMPLES".into(),
                check: Some("api".into()),
                step: None,
                message: "2 of 5 samples".into(),
            }],
            checks: Vec::new(),
        };
        let tracked = vec![
            Tracked {
                seen: Some(seen.clone()),
                ..Tracked::new(a.clone())
            },
            Tracked {
                trouble: Some("cannot connect".into()),
                ..Tracked::new(b)
            },
        ];
        assert_eq!(
            status_line(&tracked, Combined::Verdict(Pending)),
            "pending [http://a:1: pending, http://b:1: no answer yet] · INSUFFICIENT_SAMPLES (api): 2 of 5 samples · http://b:1 unreachable, retrying"
        );
        let one = vec![Tracked {
            seen: Some(seen),
            ..Tracked::new(a)
        }];
        assert_eq!(
            status_line(&one, Combined::Verdict(Pending)),
            "pending (verifying) · INSUFFICIENT_SAMPLES (api): 2 of 5 samples"
        );
    }

    #[test]
    fn elapsed_time_reads_like_a_clock() {
        assert_eq!(elapsed_text(Duration::from_millis(4_900)), "4s");
        assert_eq!(elapsed_text(Duration::from_secs(65)), "1m05s");
        assert_eq!(elapsed_text(Duration::from_secs(3_725)), "1h02m05s");
    }
}
