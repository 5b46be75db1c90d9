//! The one code path an outcome flows through: run a check under its timeout, scrub secrets,
//! then feed history, metrics and logs from the same value. Shared by the daemon's scheduler,
//! the API and `bakewatch once`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::checks::{Outcome, Reason, Status};
use crate::config::{CheckConfig, Config};
use crate::history::History;
use crate::metrics::{CheckMetrics, Metrics};
use crate::template::DeploymentVars;

/// Replaces secret values in free text (outcome messages, assertion details).
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    secrets: Vec<String>,
    /// Every prefix (4 bytes or more) of every secret, longest first: what a secret crossing
    /// a cut ("…") leaves behind. Across all secrets, so a short prefix of one cannot be
    /// replaced before a longer prefix of another that contains it.
    prefixes: Vec<String>,
}

impl Redactor {
    pub fn new(mut secrets: Vec<String>) -> Redactor {
        // Very short values would redact ordinary words; they are not worth guessing anyway.
        secrets.retain(|s| s.len() >= 4);
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let mut prefixes: Vec<String> = secrets
            .iter()
            .flat_map(|s| {
                s.char_indices()
                    .filter(|(k, _)| *k >= 4)
                    .map(|(k, _)| s[..k].to_string())
            })
            .collect();
        prefixes.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        prefixes.dedup();
        Redactor { secrets, prefixes }
    }

    pub fn scrub(&self, text: &mut String) {
        for s in &self.secrets {
            if text.contains(s.as_str()) {
                *text = text.replace(s.as_str(), "<redacted>");
            }
        }
        // Long values are shown cut ("…"): a secret crossing the cut leaves a prefix.
        if text.contains('…') {
            for prefix in &self.prefixes {
                for tail in ["…", "\"…"] {
                    let cut = format!("{prefix}{tail}");
                    if text.contains(&cut) {
                        *text = text.replace(&cut, &format!("<redacted>{tail}"));
                    }
                }
            }
        }
    }

    /// Scrubs every text an outcome carries, journey step reports included.
    pub fn scrub_outcome(&self, o: &mut Outcome) {
        if self.secrets.is_empty() {
            return;
        }
        let fix_failures = |fs: &mut Vec<crate::checks::AssertionFailure>| {
            for f in fs {
                self.scrub(&mut f.actual);
                self.scrub(&mut f.expected);
            }
        };
        self.scrub(&mut o.message);
        fix_failures(&mut o.failed_assertions);
        for (_, v) in &mut o.observations.0 {
            if let crate::checks::Observation::Text(t) = v {
                self.scrub(t);
            }
        }
        for r in &mut o.steps {
            self.scrub(&mut r.message);
            self.scrub(&mut r.request);
            for a in &mut r.attempts {
                self.scrub(&mut a.result);
            }
            fix_failures(&mut r.failed_assertions);
        }
    }
}

/// A configured check and everything it accumulates.
pub struct CheckState {
    pub config: Arc<CheckConfig>,
    pub history: Mutex<History>,
    pub metrics: CheckMetrics,
    /// The check's name and service, shared by everything it hands to an [`OutcomeSink`].
    names: (Arc<str>, Arc<str>),
}

impl CheckState {
    /// The state of check `c` of `config` around `history`, which is made to track the
    /// observations `config`'s rules read.
    fn new(
        config: &Config,
        c: &Arc<CheckConfig>,
        mut history: History,
        metrics: &Metrics,
    ) -> Arc<CheckState> {
        history.set_tracked_values(crate::rules::tracked_observations(
            &config.rules,
            &c.name,
            &c.service,
        ));
        Arc::new(CheckState {
            config: c.clone(),
            history: Mutex::new(history),
            metrics: metrics.for_check(&c.name, &c.service, c.type_name()),
            names: (Arc::from(c.name.as_str()), Arc::from(c.service.as_str())),
        })
    }
}

/// Shared daemon state.
pub struct Runtime {
    pub config: Arc<Config>,
    pub checks: Vec<Arc<CheckState>>,
    pub metrics: Arc<Metrics>,
    pub redactor: Redactor,
    /// Set once config is loaded and the listener is up.
    pub ready: AtomicBool,
    pub started_at: SystemTime,
    /// Which services are inside their post-deploy window (the scheduler's cadence).
    pub windows: Arc<crate::deployments::Windows>,
    /// Each service's latest deployment: what `{{ deployment.* }}` in its checks name.
    pub deployed: Arc<crate::deployments::Latest>,
    /// Where every recorded outcome goes for the deployments task, when it runs.
    events: Option<OutcomeSink>,
}

/// One recorded run as the deployments task stores it: (check name, sample).
pub type Recorded = (Arc<str>, crate::history::Sample);

/// Where recorded outcomes go for the deployments task: every run's sample into a buffer it
/// drains each tick (to store them), and a wake-up only for a service inside its post-deploy
/// window (so a pending verdict follows a failing run at once). Outside the windows a run
/// wakes nothing: a wake-up per run cost more than the rest of the bookkeeping.
#[derive(Debug, Clone)]
pub struct OutcomeSink {
    /// (check, sample) in the order recorded. The check's name, not an index: a run may
    /// finish after a reload changed the list.
    buffer: Arc<Mutex<Vec<Recorded>>>,
    wake: tokio::sync::mpsc::UnboundedSender<Arc<str>>,
}

impl OutcomeSink {
    /// A sink and the receiver of its wake-ups (service names).
    pub fn new() -> (OutcomeSink, tokio::sync::mpsc::UnboundedReceiver<Arc<str>>) {
        let (wake, rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = OutcomeSink {
            buffer: Arc::default(),
            wake,
        };
        (sink, rx)
    }

    /// Everything recorded since the last call, oldest first.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.buffer.lock().expect("not poisoned"))
    }
}

impl Runtime {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Runtime {
        let redactor = Redactor::new(config.secret_values());
        let checks = config
            .checks
            .iter()
            .map(|c| {
                let history = History::new(config.history.retention, config.history.max_samples);
                CheckState::new(&config, c, history, &metrics)
            })
            .collect();
        Runtime {
            config: Arc::new(config),
            checks,
            metrics,
            redactor,
            ready: AtomicBool::new(false),
            started_at: SystemTime::now(),
            windows: Arc::new(crate::deployments::Windows::default()),
            deployed: Arc::new(crate::deployments::Latest::default()),
            events: None,
        }
    }

    /// The runtime of a reloaded `config`, taking over from `old`: the same metrics registry,
    /// windows, deployment variables and event channel, and, for each check whose name and
    /// type are unchanged, its history (moved out of `old`: a run of the old generation
    /// still in flight records into an emptied history, and its outcome is still persisted).
    /// Returns the runtime and the names of the checks that kept their history.
    pub fn reloaded(config: Config, old: &Runtime) -> (Runtime, Vec<String>) {
        let redactor = Redactor::new(config.secret_values());
        let mut kept = Vec::new();
        let checks = config
            .checks
            .iter()
            .map(|c| {
                let previous = old
                    .check(&c.name)
                    .filter(|o| o.config.type_name() == c.type_name());
                let mut history = match previous {
                    Some(o) => {
                        kept.push(c.name.clone());
                        let mut h = o.history.lock().expect("not poisoned");
                        std::mem::replace(
                            &mut *h,
                            History::new(config.history.retention, config.history.max_samples),
                        )
                    }
                    None => History::new(config.history.retention, config.history.max_samples),
                };
                history.set_limits(config.history.retention, config.history.max_samples);
                CheckState::new(&config, c, history, &old.metrics)
            })
            .collect();
        let rt = Runtime {
            config: Arc::new(config),
            checks,
            metrics: old.metrics.clone(),
            redactor,
            ready: AtomicBool::new(false),
            started_at: old.started_at,
            windows: old.windows.clone(),
            deployed: old.deployed.clone(),
            events: old.events.clone(),
        };
        (rt, kept)
    }

    /// Hands every recorded outcome to `sink` (set before the runtime is shared).
    pub fn with_events(mut self, sink: OutcomeSink) -> Runtime {
        self.events = Some(sink);
        self
    }

    pub fn check(&self, name: &str) -> Option<&Arc<CheckState>> {
        self.checks.iter().find(|c| c.config.name == name)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Runs a check once and records the outcome everywhere.
    pub async fn run_check(&self, state: &CheckState) -> Arc<Outcome> {
        let deployment = self.deployed.latest(&state.config.service);
        let mut outcome = execute_with(&state.config, deployment).await;
        self.redactor.scrub_outcome(&mut outcome);
        let outcome = Arc::new(outcome);
        self.record(state, outcome.clone());
        outcome
    }

    fn record(&self, state: &CheckState, outcome: Arc<Outcome>) {
        let previous = {
            let mut h = state.history.lock().expect("not poisoned");
            let prev = h.last().map(|o| o.status);
            h.record(outcome.clone());
            prev
        };
        state.metrics.record(&outcome);
        if let Some(sink) = &self.events {
            let (check, service) = &state.names;
            let sample = crate::history::Sample::of(&outcome);
            sink.buffer
                .lock()
                .expect("not poisoned")
                .push((check.clone(), sample));
            if self.windows.is_active(service, SystemTime::now()) {
                // The receiver ends only at shutdown; a lost wake-up then is of no consequence.
                let _ = sink.wake.send(service.clone());
            }
        }
        let c = &state.config;
        // One line per state change, not per run.
        if previous != Some(outcome.status) {
            let from = previous.map_or("none", Status::as_str);
            match outcome.status {
                Status::Pass => {
                    tracing::info!(check = %c.name, from, to = "pass", detail = %outcome.message, "check state changed")
                }
                Status::Degraded => {
                    tracing::warn!(check = %c.name, from, to = "degraded", reason = %outcome.reason, detail = %outcome.message, "check state changed")
                }
                Status::Fail | Status::Error => {
                    tracing::warn!(check = %c.name, from, to = %outcome.status, reason = %outcome.reason, detail = %outcome.message, "check state changed")
                }
            }
        } else {
            tracing::debug!(check = %c.name, status = %outcome.status, reason = %outcome.reason, duration_ms = outcome.duration.as_secs_f64() * 1000.0, "check ran");
        }
    }
}

/// Runs a check under its hard timeout, in its own task so a panicking probe becomes an
/// `internal` error instead of taking the scheduler down. Its service has no deployment: see
/// [`execute_with`].
pub async fn execute(check: &Arc<CheckConfig>) -> Outcome {
    execute_with(check, None).await
}

/// [`execute`], with `deployment` as what the check's `{{ deployment.* }}` name (its
/// service's latest deployment, if any).
pub async fn execute_with(
    check: &Arc<CheckConfig>,
    deployment: Option<Arc<DeploymentVars>>,
) -> Outcome {
    let started_at = SystemTime::now();
    let start = Instant::now();
    if deployment.is_none() && check.spec.uses_deployment() {
        let mut o = Outcome::error(
            Reason::Config,
            format!(
                "the request names {{{{ deployment.* }}}}, and service {:?} has no deployment yet",
                check.service
            ),
        );
        o.started_at = started_at;
        return o;
    }
    let skipped = if deployment.is_none() {
        check.deployment_assertions()
    } else {
        Vec::new()
    };
    let timeout = check.timeout;
    let c = check.clone();
    let task = tokio::spawn(crate::template::with_deployment(deployment, async move {
        tokio::time::timeout(timeout, c.spec.run(&c.expect)).await
    }));
    let mut outcome = match task.await {
        Ok(Ok(o)) => o,
        Ok(Err(_elapsed)) => {
            let message = format!(
                "no result within the {} timeout",
                humantime::format_duration(timeout)
            );
            // A type that asks a source (Prometheus) rather than the target: a hung source
            // means bakewatch could not judge, not evidence against the target.
            if check.spec.timeout_is_error() {
                Outcome::error(Reason::Timeout, message)
            } else {
                Outcome::fail(Reason::Timeout, message)
            }
        }
        Err(e) if e.is_panic() => Outcome::error(
            Reason::Internal,
            "the probe panicked (a bakewatch bug; see the log)",
        ),
        Err(_) => Outcome::error(Reason::Internal, "the probe was cancelled"),
    };
    outcome.started_at = started_at;
    outcome.duration = start.elapsed();
    if !skipped.is_empty() {
        let n = skipped.len();
        outcome.message.push_str(&format!(
            " ({n} assertion{} skipped until service {:?} has a deployment)",
            if n == 1 { "" } else { "s" },
            check.service
        ));
        outcome.skipped_assertions = skipped;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_replaces_longest_first_and_ignores_tiny_values() {
        let r = Redactor::new(vec!["abc".into(), "s3cr3t".into(), "s3cr3t-long".into()]);
        let mut t = "token s3cr3t-long and s3cr3t and abc".to_string();
        r.scrub(&mut t);
        assert_eq!(t, "token <redacted> and <redacted> and abc");
    }

    #[test]
    fn redactor_catches_a_secret_cut_by_truncation() {
        let r = Redactor::new(vec!["supersecretvalue".into()]);
        let mut t = "got \"lots of text supersec\"… (200 more)".to_string();
        r.scrub(&mut t);
        assert_eq!(t, "got \"lots of text <redacted>\"… (200 more)");
    }
}
