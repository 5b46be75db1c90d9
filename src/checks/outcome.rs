//! The result of one check run. A failing target is an [`Outcome`] value, never an `Err`:
//! the same value feeds logs, metrics, history, the API and (later) rules and verdicts.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// pass / degraded / fail / error, as in DESIGN §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// Passed, but a `severity = "warn"` assertion did not hold.
    Degraded,
    /// Evidence against the target.
    Fail,
    /// bakewatch could not judge (its own problem, not the target's).
    Error,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Pass, Status::Degraded, Status::Fail, Status::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Degraded => "degraded",
            Status::Fail => "fail",
            Status::Error => "error",
        }
    }

    /// Pass or degraded: what `check_success` reports as 1.
    pub fn is_success(self) -> bool {
        matches!(self, Status::Pass | Status::Degraded)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an outcome is what it is; a fixed set so it can be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Ok,
    Dns,
    Connect,
    Tls,
    Timeout,
    Status,
    Assertion,
    Query,
    Auth,
    Protocol,
    NoData,
    Config,
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Ok,
        Reason::Dns,
        Reason::Connect,
        Reason::Tls,
        Reason::Timeout,
        Reason::Status,
        Reason::Assertion,
        Reason::Query,
        Reason::Auth,
        Reason::Protocol,
        Reason::NoData,
        Reason::Config,
        Reason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Dns => "dns",
            Reason::Connect => "connect",
            Reason::Tls => "tls",
            Reason::Timeout => "timeout",
            Reason::Status => "status",
            Reason::Assertion => "assertion",
            Reason::Query => "query",
            Reason::Auth => "auth",
            Reason::Protocol => "protocol",
            Reason::NoData => "no_data",
            Reason::Config => "config",
            Reason::Internal => "internal",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named measurement of one run (`status`, `value`, `free_ratio`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Observation {
    Number(f64),
    Text(String),
    Bool(bool),
    #[serde(serialize_with = "ser_duration_ms")]
    Duration(Duration),
    List(Vec<String>),
}

fn ser_duration_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl Observation {
    /// The numeric reading, for `check_value` and number comparisons. Text that parses as a
    /// number counts (a SQL value or stdout arrive as text).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Observation::Number(n) => Some(*n),
            Observation::Text(s) => s.trim().parse().ok(),
            Observation::Bool(b) => Some(f64::from(u8::from(*b))),
            Observation::Duration(d) => Some(d.as_secs_f64()),
            Observation::List(_) => None,
        }
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observation::Number(n) => write!(f, "{n}"),
            Observation::Text(s) => write!(f, "{s:?}"),
            Observation::Bool(b) => write!(f, "{b}"),
            Observation::Duration(d) => write!(f, "{d:?}"),
            Observation::List(l) => write!(f, "{l:?}"),
        }
    }
}

/// The observations of one run, in the order the probe made them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations(pub Vec<(Cow<'static, str>, Observation)>);

impl Serialize for Observations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.as_ref(), v)?;
        }
        m.end()
    }
}

impl Observations {
    /// Sets an observation; names are usually static, but may come from config (redis `info`).
    pub fn set(&mut self, name: impl Into<Cow<'static, str>>, value: Observation) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Observation> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Cow<'static, str>, Observation)> {
        self.0.iter()
    }
}

/// One failed (or skipped) assertion, explained: what was asked, what was expected, what came.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssertionFailure {
    /// The assertion as written, e.g. `jsonpath $.status eq "ok"`.
    pub assertion: String,
    pub expected: String,
    pub actual: String,
    /// `warn` failures only degrade.
    pub warn: bool,
}

/// The result of one run of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: Status,
    pub reason: Reason,
    #[serde(serialize_with = "ser_duration_ms", rename = "duration_ms")]
    pub duration: Duration,
    #[serde(serialize_with = "ser_system_time")]
    pub started_at: SystemTime,
    pub observations: Observations,
    /// One line, for people: "HTTP 500, expected 200". Secrets are scrubbed before it is stored.
    pub message: String,
    pub failed_assertions: Vec<AssertionFailure>,
    /// Journeys: one report per step and cleanup step, in order. Empty for other types.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepReport>,
    /// Assertions naming `{{ deployment.* }}` that were not judged: the check's service had
    /// no deployment yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_assertions: Vec<String>,
}

/// How one journey step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pass,
    Degraded,
    Fail,
    /// Not run: an earlier step failed.
    Skipped,
}

/// One attempt of a step: retries are never hidden.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptReport {
    pub attempt: u32,
    pub http_status: Option<u16>,
    pub duration_ms: f64,
    /// "ok", or what went wrong ("HTTP 503, expected 2xx", "connect: connection refused").
    pub result: String,
}

/// One journey step of one run, as the API, JUnit and metrics show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub name: String,
    /// A `[[check.cleanup]]` step (its failures only degrade).
    pub cleanup: bool,
    pub status: StepStatus,
    pub reason: Reason,
    /// "POST /login": method and path as written (query strings hidden).
    pub request: String,
    pub http_status: Option<u16>,
    pub duration_ms: f64,
    pub message: String,
    pub attempts: Vec<AttemptReport>,
    pub failed_assertions: Vec<AssertionFailure>,
}

impl StepReport {
    pub fn skipped(name: &str, request: String, cleanup: bool) -> StepReport {
        StepReport {
            name: name.to_string(),
            cleanup,
            status: StepStatus::Skipped,
            reason: Reason::Ok,
            request,
            http_status: None,
            duration_ms: 0.0,
            message: "skipped: an earlier step failed".to_string(),
            attempts: Vec::new(),
            failed_assertions: Vec::new(),
        }
    }
}

fn ser_system_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::util::rfc3339(*t))
}

impl Outcome {
    pub fn new(status: Status, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            duration: Duration::ZERO,
            started_at: SystemTime::now(),
            observations: Observations::default(),
            message: message.into(),
            failed_assertions: Vec::new(),
            steps: Vec::new(),
            skipped_assertions: Vec::new(),
        }
    }

    pub fn pass(message: impl Into<String>) -> Self {
        Self::new(Status::Pass, Reason::Ok, message)
    }

    pub fn fail(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Status::Fail, reason, message)
    }

    pub fn error(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Status::Error, reason, message)
    }
}
