//! The rule engine of DESIGN §3: signals over a check's recent history, steady vs post-deploy
//! thresholds, `for` timers and the Prometheus-style states inactive → pending → firing →
//! resolved, one alert instance per (rule, check).
//!
//! Everything here is a pure function of its inputs: the caller passes the histories, whether
//! each check's service is inside its post-deploy window, the frozen [`Baseline`]s, the
//! previous [`RuleState`] and `now`. No I/O, no clock reads, no locks; the verdict engine,
//! alerting, metrics and the API all read the [`RuleState`] this returns.
//!
//! Semantics chosen here (the contract the tests pin):
//! - Signals are computed over the runs that started in `[now - over, now]`. `error` runs are
//!   bakewatch's own trouble: they count in no signal (as in [`crate::history::WindowStats`]).
//! - `min_samples`: fewer judged runs (pass / degraded / fail; for `value:` signals, values)
//!   in `over` than `min_samples` (at least 1) is [`NoData`]. Baseline-relative signals also
//!   need a baseline with at least `min_samples` judged runs.
//! - `consecutive_failures` is the current streak of failed runs (errors neither grow nor
//!   break it), however old; it still needs `min_samples` judged runs in `over`, so a streak
//!   whose check stopped producing judged runs is stale, not evidence.
//! - `value:<observation>` is the **mean** of the observation over `over`: one odd reading does
//!   not flip a rule, and `over` set to about one interval gives "last value" behaviour.
//! - Latency signals are nearest-rank percentiles of run durations, in seconds.
//! - `latency_p95_ratio` = current p95 / baseline p95; `failure_ratio_delta` = current failure
//!   ratio − baseline failure ratio. `min_delta` is an absolute floor on the change in the
//!   threshold's direction (seconds for the ratio, ratio points for the delta): a breach whose
//!   change is smaller does not count (4 ms → 9 ms is ×2.25 but only +5 ms).
//! - `above` means strictly greater, `below` strictly less.
//! - Inside the post-deploy window a rule's `post_deploy` threshold and `for` replace the
//!   steady ones where given; the instance records which applied.
//! - States: a true condition makes an inactive (or resolved) instance pending, or firing at
//!   once when `for = 0`; pending becomes firing once the condition has held for `for`; a false
//!   condition makes pending inactive and firing resolved (with `resolved_at`).
//! - No data pauses the `for` timer: it neither advances (the time since the last evaluation
//!   with data counts only when both ends saw the condition true) nor resets, and the state
//!   stays as it was — a firing alert keeps firing through a gap, with `no_data` visible.
//! - Instances of checks no longer among the inputs (removed by a reload) are dropped.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::checks::Status;
use crate::config::{RuleConfig, RuleTarget, Signal, Threshold};
use crate::history::{Baseline, History, Sample, percentile};
use crate::util::rfc3339;

/// What one rule sees of one of its checks at an evaluation.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    pub check: &'a str,
    pub history: &'a History,
    /// The check's service is inside its post-deploy window: `post_deploy` overrides apply.
    pub in_window: bool,
    /// The frozen baseline of the current deployment, if any.
    pub baseline: Option<&'a Baseline>,
}

/// Whether a threshold is an upper (`above`) or lower (`below`) bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    Above,
    Below,
}

impl Comparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Above => "above",
            Comparison::Below => "below",
        }
    }
}

/// Which threshold set was in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdSource {
    Steady,
    /// Inside the post-deploy window, with the rule's `post_deploy` overrides.
    PostDeploy,
}

/// The threshold and `for` an evaluation used, so alerts and verdicts can explain themselves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AppliedThreshold {
    pub comparison: Comparison,
    /// In the signal's unit (seconds for latency).
    pub value: f64,
    #[serde(rename = "for")]
    pub for_: Duration,
    pub source: ThresholdSource,
}

impl AppliedThreshold {
    /// The steady threshold, or the `post_deploy` one (where given) inside the window.
    pub fn of(rule: &RuleConfig, in_window: bool) -> AppliedThreshold {
        let (threshold, for_, source) = match &rule.post_deploy {
            Some(pd) if in_window => (
                pd.threshold.unwrap_or(rule.threshold),
                pd.for_.unwrap_or(rule.for_),
                ThresholdSource::PostDeploy,
            ),
            _ => (rule.threshold, rule.for_, ThresholdSource::Steady),
        };
        let (comparison, value) = match threshold {
            Threshold::Above(v) => (Comparison::Above, v),
            Threshold::Below(v) => (Comparison::Below, v),
        };
        AppliedThreshold {
            comparison,
            value,
            for_,
            source,
        }
    }

    fn breached_by(&self, x: f64) -> bool {
        match self.comparison {
            Comparison::Above => x > self.value,
            Comparison::Below => x < self.value,
        }
    }
}

/// Why a signal has no value at an evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoData {
    /// Fewer judged runs (or values) in `over` than `min_samples`.
    TooFewSamples { have: u32, need: u32 },
    /// A baseline-relative signal on a check without a frozen baseline.
    NoBaseline,
    /// The baseline has fewer judged runs than `min_samples`.
    BaselineTooSmall { have: u32, need: u32 },
    /// A `value:` signal on an observation the history does not keep
    /// (see [`History::track_value`] and [`tracked_observations`]).
    UntrackedObservation,
}

/// Prometheus alert states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Inactive,
    /// Condition true, waiting for `for`.
    Pending,
    Firing,
    /// Was firing; the condition is false again.
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// The alert instance of one (rule, check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub state: AlertState,
    /// When the condition became true (start of pending, or of firing with `for = 0`); kept on
    /// resolve for the explanation, None while inactive.
    pub active_since: Option<SystemTime>,
    /// How long the condition has been seen true since `active_since`; time without data
    /// does not count (the `for` timer).
    pub held: Duration,
    pub fired_at: Option<SystemTime>,
    pub resolved_at: Option<SystemTime>,
    /// The latest evaluation.
    pub evaluated_at: SystemTime,
    /// The condition at the latest evaluation; None when it had no data.
    pub condition: Option<bool>,
    /// The latest signal value; kept through evaluations without data.
    pub value: Option<f64>,
    /// Baseline-relative signals: the current and baseline statistic the value compares
    /// (p95 seconds, or failure ratios).
    pub current: Option<f64>,
    pub baseline: Option<f64>,
    /// Set when the latest evaluation had no data, and why.
    pub no_data: Option<NoData>,
    /// The threshold was crossed but the change was under `min_delta`, so it did not count.
    pub below_min_delta: bool,
    /// The threshold and `for` of the latest evaluation.
    pub threshold: AppliedThreshold,
}

impl Instance {
    fn new(threshold: AppliedThreshold, now: SystemTime) -> Instance {
        Instance {
            state: AlertState::Inactive,
            active_since: None,
            held: Duration::ZERO,
            fired_at: None,
            resolved_at: None,
            evaluated_at: now,
            condition: None,
            value: None,
            current: None,
            baseline: None,
            no_data: None,
            below_min_delta: false,
            threshold,
        }
    }

    /// One line for people, e.g. `failure_ratio 0.031 above 0.005 (post-deploy) for 0s`.
    pub fn explain(&self, rule: &RuleConfig) -> String {
        let name = signal_name(&rule.signal);
        let t = &self.threshold;
        let mut out = match self.value {
            None => format!("{name}: no data"),
            Some(v) => {
                let mut s = format!("{name} {}", show(&rule.signal, v));
                if let (Some(c), Some(b)) = (self.current, self.baseline) {
                    let (c, b) = match rule.signal {
                        Signal::LatencyP95Ratio => (show_secs(c), show_secs(b)),
                        _ => (show_num(c), show_num(b)),
                    };
                    s.push_str(&format!(" ({c} vs baseline {b})"));
                }
                // "not" only when the threshold itself was not crossed (min_delta says why else).
                let crossed = self.condition != Some(false) || self.below_min_delta;
                let verb = match (crossed, t.comparison) {
                    (false, Comparison::Above) => "not above",
                    (false, Comparison::Below) => "not below",
                    (_, c) => c.as_str(),
                };
                let source = match t.source {
                    ThresholdSource::Steady => "steady",
                    ThresholdSource::PostDeploy => "post-deploy",
                };
                s.push_str(&format!(
                    " {verb} {} ({source})",
                    show(&rule.signal, t.value)
                ));
                if matches!(self.state, AlertState::Pending | AlertState::Firing) {
                    let held = Duration::from_secs(self.held.as_secs());
                    s.push_str(&format!(" for {}", humantime::format_duration(held)));
                }
                if self.below_min_delta
                    && let Some(min) = rule.min_delta
                {
                    let min = match rule.signal {
                        Signal::LatencyP95Ratio => show_secs(min),
                        _ => show_num(min),
                    };
                    s.push_str(&format!(", but the change is under min_delta {min}"));
                }
                s
            }
        };
        if let Some(nd) = &self.no_data {
            if self.value.is_some() {
                out.push_str("; no data now");
            }
            let over = humantime::format_duration(rule.over);
            out.push_str(&match nd {
                NoData::TooFewSamples { have, need } => {
                    format!(" ({have} of {need} samples in {over})")
                }
                NoData::NoBaseline => " (no baseline)".to_string(),
                NoData::BaselineTooSmall { have, need } => {
                    format!(" (baseline has {have} of {need} samples)")
                }
                NoData::UntrackedObservation => " (observation not tracked)".to_string(),
            });
        }
        out
    }
}

/// Every alert instance of one rule, keyed by check name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub instances: BTreeMap<String, Instance>,
}

impl RuleState {
    pub fn instance(&self, check: &str) -> Option<&Instance> {
        self.instances.get(check)
    }
}

/// Evaluates `rule` on each of its checks at `now`, from the previous state.
pub fn evaluate(
    rule: &RuleConfig,
    inputs: &[CheckInput<'_>],
    prev: &RuleState,
    now: SystemTime,
) -> RuleState {
    let mut next = RuleState::default();
    for input in inputs {
        let threshold = AppliedThreshold::of(rule, input.in_window);
        let reading = measure(rule, input, now);
        let instance = advance(prev.instance(input.check), reading, threshold, rule, now);
        next.instances.insert(input.check.to_string(), instance);
    }
    next
}

/// Whether `rule` watches the check `check` of service `service`.
pub fn watches(rule: &RuleConfig, check: &str, service: &str) -> bool {
    match &rule.target {
        RuleTarget::Checks(names) => names.iter().any(|n| n == check),
        RuleTarget::Service(s) => !s.is_empty() && s == service,
    }
}

/// The observations a check's history must track for the `value:` rules that watch it
/// (pass to [`History::set_tracked_values`]).
pub fn tracked_observations<'a>(
    rules: &'a [RuleConfig],
    check: &str,
    service: &str,
) -> Vec<&'a str> {
    let mut names: Vec<&str> = Vec::new();
    for r in rules {
        if let Signal::Value(obs) = &r.signal
            && watches(r, check, service)
            && !names.contains(&obs.as_str())
        {
            names.push(obs);
        }
    }
    names
}

/// The signal as written in config: `failure_ratio`, `latency_p95`, `value:free_ratio`, ….
pub fn signal_name(signal: &Signal) -> String {
    match signal {
        Signal::FailureRatio => "failure_ratio".into(),
        Signal::ConsecutiveFailures => "consecutive_failures".into(),
        Signal::Latency(q) => format!("latency_p{}", (q * 100.0).round() as u32),
        Signal::Value(obs) => format!("value:{obs}"),
        Signal::LatencyP95Ratio => "latency_p95_ratio".into(),
        Signal::FailureRatioDelta => "failure_ratio_delta".into(),
    }
}

/// A pending or firing alert, as `GET /api/v1/alerts` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub rule: String,
    pub check: String,
    pub severity: String,
    pub state: AlertState,
    pub signal: String,
    /// The latest signal value (seconds for latency); null if there never was one.
    pub value: Option<f64>,
    pub comparison: Comparison,
    pub threshold: f64,
    pub threshold_source: ThresholdSource,
    pub for_seconds: f64,
    /// When the condition became true (RFC 3339).
    pub since: String,
    pub fired_at: Option<String>,
    /// Set while the latest evaluation had no data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoData>,
    /// Firing fails a deployment's verdict.
    pub rollback: bool,
    pub message: String,
}

/// The pending and firing instances of `rules`, firing first, then by rule and check.
pub fn alerts<'a>(rules: impl IntoIterator<Item = (&'a RuleConfig, &'a RuleState)>) -> Vec<Alert> {
    let mut out = Vec::new();
    for (rule, state) in rules {
        for (check, i) in &state.instances {
            if !matches!(i.state, AlertState::Pending | AlertState::Firing) {
                continue;
            }
            out.push(Alert {
                rule: rule.name.clone(),
                check: check.clone(),
                severity: rule.severity.clone(),
                state: i.state,
                signal: signal_name(&rule.signal),
                value: i.value,
                comparison: i.threshold.comparison,
                threshold: i.threshold.value,
                threshold_source: i.threshold.source,
                for_seconds: i.threshold.for_.as_secs_f64(),
                since: rfc3339(i.active_since.unwrap_or(i.evaluated_at)),
                fired_at: i.fired_at.map(rfc3339),
                no_data: i.no_data.clone(),
                rollback: rule.rollback,
                message: i.explain(rule),
            });
        }
    }
    out.sort_by(|a, b| {
        b.state
            .cmp(&a.state)
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.check.cmp(&b.check))
    });
    out
}

/// A signal's value at one evaluation.
struct Measured {
    value: f64,
    /// Baseline-relative signals: the two statistics compared.
    current: Option<f64>,
    baseline: Option<f64>,
}

impl Measured {
    fn plain(value: f64) -> Measured {
        Measured {
            value,
            current: None,
            baseline: None,
        }
    }
}

/// The judged (non-error) runs of a window.
struct Judged {
    count: u32,
    fails: u32,
    /// Sorted run durations in microseconds, when asked for.
    latencies_us: Vec<u32>,
}

impl Judged {
    fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>, latencies: bool) -> Judged {
        let mut j = Judged {
            count: 0,
            fails: 0,
            latencies_us: Vec::new(),
        };
        for s in samples {
            if s.status == Status::Error {
                continue;
            }
            j.count += 1;
            if s.status == Status::Fail {
                j.fails += 1;
            }
            if latencies {
                j.latencies_us.push(s.duration_us);
            }
        }
        j.latencies_us.sort_unstable();
        j
    }

    fn failure_ratio(&self) -> Option<f64> {
        (self.count > 0).then(|| f64::from(self.fails) / f64::from(self.count))
    }

    fn latency_s(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies_us, p).map(|us| f64::from(us) / 1e6)
    }
}

fn measure(rule: &RuleConfig, input: &CheckInput<'_>, now: SystemTime) -> Result<Measured, NoData> {
    let need = rule.min_samples.max(1);
    let enough = |have: u32| {
        if have >= need {
            Ok(())
        } else {
            Err(NoData::TooFewSamples { have, need })
        }
    };
    let history = input.history;
    let latencies = matches!(rule.signal, Signal::Latency(_) | Signal::LatencyP95Ratio);
    let window = || Judged::of(history.samples_in(now, rule.over), latencies);
    let baseline = || {
        let b = input.baseline.ok_or(NoData::NoBaseline)?;
        if b.judged < need {
            return Err(NoData::BaselineTooSmall {
                have: b.judged,
                need,
            });
        }
        Ok(b)
    };
    match &rule.signal {
        Signal::FailureRatio => {
            let w = window();
            enough(w.count)?;
            Ok(Measured::plain(w.failure_ratio().unwrap_or(0.0)))
        }
        Signal::ConsecutiveFailures => {
            enough(window().count)?;
            Ok(Measured::plain(f64::from(history.consecutive_failures())))
        }
        Signal::Latency(q) => {
            let w = window();
            enough(w.count)?;
            Ok(Measured::plain(w.latency_s(*q).unwrap_or(0.0)))
        }
        Signal::Value(obs) => {
            if !history.tracks_value(obs) {
                return Err(NoData::UntrackedObservation);
            }
            let (mut n, mut sum) = (0u32, 0.0);
            for v in history.values_in(obs, now, rule.over) {
                n += 1;
                sum += v.value;
            }
            enough(n)?;
            Ok(Measured::plain(sum / f64::from(n)))
        }
        Signal::LatencyP95Ratio => {
            let w = window();
            enough(w.count)?;
            let b = baseline()?;
            let current = w.latency_s(0.95).unwrap_or(0.0);
            let base = b
                .latency_p95_s()
                .ok_or(NoData::BaselineTooSmall { have: 0, need })?;
            // A baseline of 0 µs (a probe faster than the clock) would make any ratio infinite.
            let value = current / base.max(1e-6);
            Ok(Measured {
                value,
                current: Some(current),
                baseline: Some(base),
            })
        }
        Signal::FailureRatioDelta => {
            let w = window();
            enough(w.count)?;
            let b = baseline()?;
            let current = w.failure_ratio().unwrap_or(0.0);
            let base = b
                .failure_ratio
                .ok_or(NoData::BaselineTooSmall { have: 0, need })?;
            Ok(Measured {
                value: current - base,
                current: Some(current),
                baseline: Some(base),
            })
        }
    }
}

/// Whether a breach is large enough in absolute terms (`min_delta`, baseline signals only).
fn meets_min_delta(rule: &RuleConfig, threshold: &AppliedThreshold, m: &Measured) -> bool {
    let Some(min) = rule.min_delta else {
        return true;
    };
    let change = match (&rule.signal, m.current, m.baseline) {
        (Signal::LatencyP95Ratio, Some(c), Some(b)) => c - b,
        (Signal::FailureRatioDelta, _, _) => m.value,
        _ => return true,
    };
    let change = match threshold.comparison {
        Comparison::Above => change,
        Comparison::Below => -change,
    };
    // Tolerate float noise: 0.03 - 0.01 is a change of 0.02.
    change + 1e-12 >= min
}

/// One step of an instance's state machine.
fn advance(
    prev: Option<&Instance>,
    reading: Result<Measured, NoData>,
    threshold: AppliedThreshold,
    rule: &RuleConfig,
    now: SystemTime,
) -> Instance {
    let mut i = prev
        .cloned()
        .unwrap_or_else(|| Instance::new(threshold, now));
    let since_last = prev
        .and_then(|p| now.duration_since(p.evaluated_at).ok())
        .unwrap_or_default();
    let was_true = prev.is_some_and(|p| p.condition == Some(true));
    i.threshold = threshold;
    i.evaluated_at = now;
    let m = match reading {
        Ok(m) => m,
        Err(nd) => {
            // No data: the state and its timers stay as they are.
            i.no_data = Some(nd);
            i.condition = None;
            i.below_min_delta = false;
            return i;
        }
    };
    let breached = threshold.breached_by(m.value);
    let counts = breached && meets_min_delta(rule, &threshold, &m);
    i.no_data = None;
    i.value = Some(m.value);
    i.current = m.current;
    i.baseline = m.baseline;
    i.below_min_delta = breached && !counts;
    i.condition = Some(counts);
    match (i.state, counts) {
        (AlertState::Inactive | AlertState::Resolved, true) => {
            i.state = AlertState::Pending;
            i.active_since = Some(now);
            i.held = Duration::ZERO;
            i.fired_at = None;
            i.resolved_at = None;
        }
        (AlertState::Pending | AlertState::Firing, true) => {
            if was_true {
                i.held += since_last;
            }
        }
        (AlertState::Pending, false) => {
            i.state = AlertState::Inactive;
            i.active_since = None;
            i.held = Duration::ZERO;
        }
        (AlertState::Firing, false) => {
            i.state = AlertState::Resolved;
            i.resolved_at = Some(now);
        }
        (AlertState::Inactive | AlertState::Resolved, false) => {}
    }
    if i.state == AlertState::Pending && i.held >= threshold.for_ {
        i.state = AlertState::Firing;
        i.fired_at = Some(now);
    }
    i
}

fn show(signal: &Signal, x: f64) -> String {
    match signal {
        Signal::Latency(_) => show_secs(x),
        _ => show_num(x),
    }
}

/// A number with at most 4 decimals, trailing zeros dropped: 0.031, 2.25, 3.
fn show_num(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Seconds as a duration to the microsecond: 250ms, 4ms 500us, 1s 200ms.
fn show_secs(x: f64) -> String {
    let us = (x.abs() * 1e6).round() as u64;
    let sign = if x < 0.0 && us > 0 { "-" } else { "" };
    format!(
        "{sign}{}",
        humantime::format_duration(Duration::from_micros(us))
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checks::{Observation, Outcome, Reason};
    use crate::config::PostDeploy;

    const T0: u64 = 1_700_000_000;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + s)
    }

    fn history() -> History {
        History::new(Duration::from_secs(7200), 10_000)
    }

    fn run(h: &mut History, s: u64, status: Status, ms: u64) {
        let mut o = Outcome::new(status, Reason::Ok, "");
        o.started_at = at(s);
        o.duration = Duration::from_millis(ms);
        h.record(Arc::new(o));
    }

    /// `n` runs one second apart from `from`, `fails` of them (the first ones) failing.
    fn runs(h: &mut History, from: u64, n: u64, fails: u64, ms: u64) {
        for k in 0..n {
            let status = if k < fails {
                Status::Fail
            } else {
                Status::Pass
            };
            run(h, from + k, status, ms);
        }
    }

    fn rule(signal: Signal, threshold: Threshold) -> RuleConfig {
        RuleConfig {
            name: "r".into(),
            target: RuleTarget::Checks(vec!["api".into()]),
            signal,
            over: Duration::from_secs(300),
            threshold,
            for_: Duration::ZERO,
            post_deploy: None,
            min_samples: 1,
            min_delta: None,
            severity: "critical".into(),
            notify: Vec::new(),
            rollback: true,
            repeat: None,
            send_resolved: true,
            notify_no_data: true,
        }
    }

    fn input<'a>(h: &'a History) -> CheckInput<'a> {
        CheckInput {
            check: "api",
            history: h,
            in_window: false,
            baseline: None,
        }
    }

    fn inside(h: &History) -> CheckInput<'_> {
        CheckInput {
            in_window: true,
            ..input(h)
        }
    }

    fn named<'a>(check: &'a str, h: &'a History) -> CheckInput<'a> {
        CheckInput { check, ..input(h) }
    }

    fn eval(r: &RuleConfig, h: &History, prev: &RuleState, now: u64) -> RuleState {
        evaluate(r, &[input(h)], prev, at(now))
    }

    fn one(r: &RuleConfig, h: &History, now: u64) -> Instance {
        eval(r, h, &RuleState::default(), now).instances["api"].clone()
    }

    #[test]
    fn failure_ratio_above_fires_and_below_it_does_not() {
        let mut h = history();
        runs(&mut h, 0, 100, 3, 10);
        let fires = one(&rule(Signal::FailureRatio, Threshold::Above(0.02)), &h, 100);
        assert_eq!(fires.state, AlertState::Firing);
        assert_eq!(fires.value, Some(0.03));
        let quiet = one(&rule(Signal::FailureRatio, Threshold::Above(0.05)), &h, 100);
        assert_eq!(quiet.state, AlertState::Inactive);
        assert_eq!(quiet.condition, Some(false));
    }

    #[test]
    fn thresholds_are_strict() {
        let mut h = history();
        runs(&mut h, 0, 10, 1, 10);
        let above = one(&rule(Signal::FailureRatio, Threshold::Above(0.1)), &h, 10);
        assert_eq!(above.state, AlertState::Inactive, "0.1 is not above 0.1");
        let below = one(&rule(Signal::FailureRatio, Threshold::Below(0.1)), &h, 10);
        assert_eq!(below.state, AlertState::Inactive, "0.1 is not below 0.1");
    }

    #[test]
    fn errors_count_in_no_signal() {
        let mut h = history();
        runs(&mut h, 0, 10, 0, 10);
        for k in 0..10 {
            run(&mut h, 10 + k, Status::Error, 5000);
        }
        let r = rule(Signal::FailureRatio, Threshold::Above(0.0));
        assert_eq!(one(&r, &h, 20).value, Some(0.0));
        let lat = one(&rule(Signal::Latency(0.99), Threshold::Above(1.0)), &h, 20);
        assert_eq!(lat.value, Some(0.010));
        assert_eq!(lat.state, AlertState::Inactive);
    }

    #[test]
    fn over_window_excludes_old_samples() {
        let mut h = history();
        runs(&mut h, 0, 10, 10, 10); // failures at 0..10
        runs(&mut h, 400, 10, 0, 10); // passes at 400..410
        let r = rule(Signal::FailureRatio, Threshold::Above(0.1));
        let i = one(&r, &h, 410);
        assert_eq!(i.value, Some(0.0), "the failures are older than 5m");
        assert_eq!(i.state, AlertState::Inactive);
        let mut wide = r.clone();
        wide.over = Duration::from_secs(600);
        assert_eq!(one(&wide, &h, 410).value, Some(0.5));
    }

    #[test]
    fn below_min_samples_is_no_data() {
        let mut h = history();
        runs(&mut h, 0, 4, 4, 10);
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.1));
        r.min_samples = 5;
        let i = one(&r, &h, 10);
        assert_eq!(i.no_data, Some(NoData::TooFewSamples { have: 4, need: 5 }));
        assert_eq!(
            (i.state, i.condition, i.value),
            (AlertState::Inactive, None, None)
        );
        assert!(i.explain(&r).contains("no data (4 of 5 samples in 5m)"));
        run(&mut h, 5, Status::Fail, 10);
        assert_eq!(one(&r, &h, 10).state, AlertState::Firing);
    }

    #[test]
    fn only_errors_in_window_is_no_data() {
        let mut h = history();
        for k in 0..5 {
            run(&mut h, k, Status::Error, 10);
        }
        let i = one(&rule(Signal::FailureRatio, Threshold::Above(0.1)), &h, 10);
        assert_eq!(i.no_data, Some(NoData::TooFewSamples { have: 0, need: 1 }));
    }

    #[test]
    fn consecutive_failures_is_the_streak_and_errors_do_not_break_it() {
        let mut h = history();
        run(&mut h, 0, Status::Fail, 10);
        run(&mut h, 1, Status::Pass, 10);
        run(&mut h, 2, Status::Fail, 10);
        run(&mut h, 3, Status::Error, 10);
        run(&mut h, 4, Status::Fail, 10);
        let r = rule(Signal::ConsecutiveFailures, Threshold::Above(1.0));
        let i = one(&r, &h, 5);
        assert_eq!((i.value, i.state), (Some(2.0), AlertState::Firing));
        run(&mut h, 5, Status::Degraded, 10);
        assert_eq!(one(&r, &h, 6).value, Some(0.0));
    }

    #[test]
    fn consecutive_failures_without_fresh_runs_is_no_data() {
        let mut h = history();
        runs(&mut h, 0, 3, 3, 10);
        let r = rule(Signal::ConsecutiveFailures, Threshold::Above(1.0));
        let i = one(&r, &h, 1000);
        assert_eq!(i.no_data, Some(NoData::TooFewSamples { have: 0, need: 1 }));
    }

    #[test]
    fn latency_percentiles_are_in_seconds() {
        let mut h = history();
        for k in 0..100 {
            run(&mut h, k, Status::Pass, k + 1); // 1..=100 ms
        }
        let p = |q: f64| one(&rule(Signal::Latency(q), Threshold::Above(1.0)), &h, 100).value;
        assert_eq!(p(0.5), Some(0.050));
        assert_eq!(p(0.9), Some(0.090));
        assert_eq!(p(0.95), Some(0.095));
        assert_eq!(p(0.99), Some(0.099));
        let slow = one(
            &rule(Signal::Latency(0.95), Threshold::Above(0.080)),
            &h,
            100,
        );
        assert_eq!(slow.state, AlertState::Firing);
        let fast = one(
            &rule(Signal::Latency(0.5), Threshold::Below(0.060)),
            &h,
            100,
        );
        assert_eq!(fast.state, AlertState::Firing, "p50 50ms is below 60ms");
        assert_eq!(
            slow.explain(&rule(Signal::Latency(0.95), Threshold::Above(0.080))),
            "latency_p95 95ms above 80ms (steady) for 0s"
        );
    }

    fn valued(h: &mut History, s: u64, status: Status, name: &'static str, v: f64) {
        let mut o = Outcome::new(status, Reason::Ok, "");
        o.started_at = at(s);
        o.observations.set(name, Observation::Number(v));
        h.record(Arc::new(o));
    }

    #[test]
    fn value_signal_is_the_mean_over_the_window() {
        let mut h = history();
        h.track_value("free_ratio");
        valued(&mut h, 0, Status::Pass, "free_ratio", 0.90); // outside 5m at 400
        valued(&mut h, 200, Status::Pass, "free_ratio", 0.20);
        valued(&mut h, 300, Status::Fail, "free_ratio", 0.05);
        valued(&mut h, 350, Status::Error, "free_ratio", 0.99); // errors are not readings
        let r = rule(Signal::Value("free_ratio".into()), Threshold::Below(0.15));
        let i = one(&r, &h, 400);
        assert!((i.value.unwrap() - 0.125).abs() < 1e-12);
        assert_eq!(i.state, AlertState::Firing);
        // One low reading among good ones does not flip it.
        valued(&mut h, 390, Status::Pass, "free_ratio", 0.50);
        assert_eq!(one(&r, &h, 400).state, AlertState::Inactive);
    }

    #[test]
    fn value_signal_needs_a_tracked_observation_and_min_samples() {
        let mut h = history();
        valued(&mut h, 0, Status::Pass, "value", 5.0);
        let mut r = rule(Signal::Value("value".into()), Threshold::Above(1.0));
        assert_eq!(one(&r, &h, 1).no_data, Some(NoData::UntrackedObservation));
        h.track_value("value");
        valued(&mut h, 1, Status::Pass, "value", 5.0);
        r.min_samples = 2;
        let i = one(&r, &h, 2);
        assert_eq!(i.no_data, Some(NoData::TooFewSamples { have: 1, need: 2 }));
        valued(&mut h, 2, Status::Pass, "value", 7.0);
        let i = one(&r, &h, 3);
        assert_eq!((i.value, i.state), (Some(6.0), AlertState::Firing));
    }

    #[test]
    fn for_holds_pending_then_fires_after_the_duration() {
        let mut h = history();
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.5));
        r.for_ = Duration::from_secs(60);
        runs(&mut h, 0, 10, 10, 10);
        let s = eval(&r, &h, &RuleState::default(), 10);
        let i = &s.instances["api"];
        assert_eq!(
            (i.state, i.active_since, i.fired_at),
            (AlertState::Pending, Some(at(10)), None)
        );
        let s = eval(&r, &h, &s, 40);
        assert_eq!(s.instances["api"].state, AlertState::Pending);
        assert_eq!(s.instances["api"].held, Duration::from_secs(30));
        let s = eval(&r, &h, &s, 70);
        let i = &s.instances["api"];
        assert_eq!((i.state, i.fired_at), (AlertState::Firing, Some(at(70))));
        assert_eq!(i.active_since, Some(at(10)));
        assert_eq!(i.explain(&r), "failure_ratio 1 above 0.5 (steady) for 1m");
    }

    #[test]
    fn pending_resets_to_inactive_when_the_condition_clears() {
        let mut h = history();
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.5));
        r.for_ = Duration::from_secs(60);
        r.over = Duration::from_secs(10);
        runs(&mut h, 0, 10, 10, 10);
        let s = eval(&r, &h, &RuleState::default(), 10);
        runs(&mut h, 11, 10, 0, 10);
        let s = eval(&r, &h, &s, 21);
        let i = &s.instances["api"];
        assert_eq!(
            (i.state, i.active_since, i.held),
            (AlertState::Inactive, None, Duration::ZERO)
        );
        // A new breach starts the timer from zero.
        runs(&mut h, 22, 100, 100, 10);
        let s = eval(&r, &h, &s, 41);
        let s = eval(&r, &h, &s, 91);
        let i = &s.instances["api"];
        assert_eq!(
            (i.state, i.active_since),
            (AlertState::Pending, Some(at(41)))
        );
        assert_eq!(i.held, Duration::from_secs(50));
    }

    #[test]
    fn firing_resolves_with_resolved_at_and_a_new_breach_starts_over() {
        let mut h = history();
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.5));
        r.over = Duration::from_secs(10);
        runs(&mut h, 0, 10, 10, 10);
        let s = eval(&r, &h, &RuleState::default(), 10);
        assert_eq!(s.instances["api"].state, AlertState::Firing);
        runs(&mut h, 11, 10, 0, 10);
        let s = eval(&r, &h, &s, 21);
        let i = &s.instances["api"];
        assert_eq!(i.state, AlertState::Resolved);
        assert_eq!((i.fired_at, i.resolved_at), (Some(at(10)), Some(at(21))));
        let s = eval(&r, &h, &s, 22);
        assert_eq!(
            s.instances["api"].resolved_at,
            Some(at(21)),
            "stays resolved"
        );
        runs(&mut h, 30, 10, 10, 10);
        r.for_ = Duration::from_secs(30);
        let s = eval(&r, &h, &s, 40);
        let i = &s.instances["api"];
        assert_eq!(i.state, AlertState::Pending);
        assert_eq!(
            (i.fired_at, i.resolved_at, i.active_since),
            (None, None, Some(at(40)))
        );
    }

    #[test]
    fn no_data_pauses_the_for_timer_without_resetting_it() {
        let mut h = history();
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.5));
        r.for_ = Duration::from_secs(60);
        r.over = Duration::from_secs(30);
        runs(&mut h, 0, 10, 10, 10);
        let s = eval(&r, &h, &RuleState::default(), 10);
        let s = eval(&r, &h, &s, 30); // held 20s
        // Nothing in the window from 40 to 100: no data, the timer neither runs nor resets.
        let s = eval(&r, &h, &s, 50);
        let s = eval(&r, &h, &s, 100);
        let i = &s.instances["api"];
        assert_eq!(i.state, AlertState::Pending);
        assert_eq!(i.held, Duration::from_secs(20));
        assert_eq!(i.active_since, Some(at(10)));
        assert!(i.no_data.is_some() && i.condition.is_none());
        assert_eq!(i.value, Some(1.0), "the last value stays visible");
        // Data again: the gap does not count, the following true evaluations do.
        runs(&mut h, 101, 50, 50, 10);
        let s = eval(&r, &h, &s, 110);
        assert_eq!(s.instances["api"].held, Duration::from_secs(20));
        let s = eval(&r, &h, &s, 149);
        assert_eq!(s.instances["api"].state, AlertState::Pending, "held 59s");
        let s = eval(&r, &h, &s, 150);
        assert_eq!(s.instances["api"].state, AlertState::Firing);
    }

    #[test]
    fn no_data_keeps_a_firing_alert_firing_and_says_so() {
        let mut h = history();
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.5));
        r.over = Duration::from_secs(30);
        runs(&mut h, 0, 10, 10, 10);
        let s = eval(&r, &h, &RuleState::default(), 10);
        let s = eval(&r, &h, &s, 500);
        let i = &s.instances["api"];
        assert_eq!((i.state, i.fired_at), (AlertState::Firing, Some(at(10))));
        assert_eq!(i.no_data, Some(NoData::TooFewSamples { have: 0, need: 1 }));
        assert!(
            i.explain(&r)
                .ends_with("; no data now (0 of 1 samples in 30s)")
        );
    }

    fn tightened() -> RuleConfig {
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.02));
        r.for_ = Duration::from_secs(60);
        r.post_deploy = Some(PostDeploy {
            threshold: Some(Threshold::Above(0.005)),
            for_: Some(Duration::ZERO),
        });
        r
    }

    #[test]
    fn reference_case_post_deploy_tightens_a_one_percent_failure_rate() {
        let mut h = history();
        runs(&mut h, 0, 100, 1, 10); // 1% failing
        let r = tightened();
        let steady = one(&r, &h, 100);
        assert_eq!(steady.state, AlertState::Inactive);
        assert_eq!(steady.threshold.source, ThresholdSource::Steady);
        let s = evaluate(&r, &[inside(&h)], &RuleState::default(), at(100));
        let i = &s.instances["api"];
        assert_eq!(
            i.state,
            AlertState::Firing,
            "post_deploy for = 0s fires at once"
        );
        assert_eq!(i.threshold.value, 0.005);
        assert_eq!(i.threshold.source, ThresholdSource::PostDeploy);
        assert_eq!(
            i.explain(&r),
            "failure_ratio 0.01 above 0.005 (post-deploy) for 0s"
        );
    }

    #[test]
    fn post_deploy_relaxes_when_the_window_ends() {
        let mut h = history();
        runs(&mut h, 0, 100, 1, 10);
        let r = tightened();
        let s = evaluate(&r, &[inside(&h)], &RuleState::default(), at(100));
        assert_eq!(s.instances["api"].state, AlertState::Firing);
        let s = evaluate(&r, &[input(&h)], &s, at(105));
        let i = &s.instances["api"];
        assert_eq!(i.state, AlertState::Resolved);
        assert_eq!(i.threshold.source, ThresholdSource::Steady);
        assert_eq!(i.threshold.value, 0.02);
        assert_eq!(i.explain(&r), "failure_ratio 0.01 not above 0.02 (steady)");
    }

    #[test]
    fn post_deploy_for_alone_keeps_the_steady_threshold() {
        let mut h = history();
        runs(&mut h, 0, 100, 3, 10); // 3%
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.02));
        r.for_ = Duration::from_secs(300);
        r.post_deploy = Some(PostDeploy {
            threshold: None,
            for_: Some(Duration::from_secs(30)),
        });
        let s = evaluate(&r, &[inside(&h)], &RuleState::default(), at(100));
        let t = s.instances["api"].threshold;
        assert_eq!(
            (t.value, t.for_, t.source),
            (0.02, Duration::from_secs(30), ThresholdSource::PostDeploy)
        );
        let s = evaluate(&r, &[inside(&h)], &s, at(130));
        assert_eq!(s.instances["api"].state, AlertState::Firing);
        // Outside the window the steady `for` would still be waiting.
        let s = evaluate(&r, &[input(&h)], &RuleState::default(), at(100));
        let s = evaluate(&r, &[input(&h)], &s, at(130));
        assert_eq!(s.instances["api"].state, AlertState::Pending);
    }

    fn baseline_rule() -> RuleConfig {
        let mut r = rule(Signal::LatencyP95Ratio, Threshold::Above(2.0));
        r.min_delta = Some(0.050);
        r.min_samples = 10;
        r
    }

    fn with_baseline<'a>(h: &'a History, b: &'a Baseline) -> CheckInput<'a> {
        CheckInput {
            baseline: Some(b),
            ..input(h)
        }
    }

    fn baseline_of(n: u64, fails: u64, ms: u64) -> Baseline {
        let mut h = history();
        runs(&mut h, 0, n, fails, ms);
        Baseline::of(&h, at(n), Duration::from_secs(1800))
    }

    #[test]
    fn baseline_ratio_with_a_tiny_absolute_change_does_not_fire() {
        let b = baseline_of(50, 0, 4);
        let mut h = history();
        runs(&mut h, 100, 50, 0, 9);
        let r = baseline_rule();
        let s = evaluate(&r, &[with_baseline(&h, &b)], &RuleState::default(), at(150));
        let i = &s.instances["api"];
        assert!((i.value.unwrap() - 2.25).abs() < 1e-9);
        assert!(i.below_min_delta);
        assert_eq!(i.state, AlertState::Inactive);
        assert_eq!(
            i.explain(&r),
            "latency_p95_ratio 2.25 (9ms vs baseline 4ms) above 2 (steady), but the change is under min_delta 50ms"
        );
    }

    #[test]
    fn baseline_ratio_with_a_real_regression_fires() {
        let b = baseline_of(50, 0, 100);
        let mut h = history();
        runs(&mut h, 100, 50, 0, 250);
        let s = evaluate(
            &baseline_rule(),
            &[with_baseline(&h, &b)],
            &RuleState::default(),
            at(150),
        );
        let i = &s.instances["api"];
        assert!((i.value.unwrap() - 2.5).abs() < 1e-9);
        assert_eq!((i.current, i.baseline), (Some(0.25), Some(0.1)));
        assert!(!i.below_min_delta);
        assert_eq!(i.state, AlertState::Firing);
    }

    #[test]
    fn baseline_signals_without_a_usable_baseline_are_no_data() {
        let mut h = history();
        runs(&mut h, 100, 50, 0, 250);
        let r = baseline_rule();
        let i = one(&r, &h, 150);
        assert_eq!(i.no_data, Some(NoData::NoBaseline));
        let small = baseline_of(3, 0, 100);
        let s = evaluate(
            &r,
            &[with_baseline(&h, &small)],
            &RuleState::default(),
            at(150),
        );
        assert_eq!(
            s.instances["api"].no_data,
            Some(NoData::BaselineTooSmall { have: 3, need: 10 })
        );
        // And the current window needs min_samples too.
        let b = baseline_of(50, 0, 100);
        let mut few = history();
        runs(&mut few, 100, 5, 0, 250);
        let s = evaluate(
            &r,
            &[with_baseline(&few, &b)],
            &RuleState::default(),
            at(150),
        );
        assert_eq!(
            s.instances["api"].no_data,
            Some(NoData::TooFewSamples { have: 5, need: 10 })
        );
    }

    #[test]
    fn failure_ratio_delta_compares_with_the_baseline_and_honours_min_delta() {
        let b = baseline_of(100, 1, 10); // 1%
        let mut h = history();
        runs(&mut h, 200, 100, 3, 10); // 3%
        let mut r = rule(Signal::FailureRatioDelta, Threshold::Above(0.01));
        let s = evaluate(&r, &[with_baseline(&h, &b)], &RuleState::default(), at(300));
        let i = &s.instances["api"];
        assert!((i.value.unwrap() - 0.02).abs() < 1e-12);
        assert_eq!(i.state, AlertState::Firing);
        assert_eq!(
            i.explain(&r),
            "failure_ratio_delta 0.02 (0.03 vs baseline 0.01) above 0.01 (steady) for 0s"
        );
        r.min_delta = Some(0.05);
        let s = evaluate(&r, &[with_baseline(&h, &b)], &RuleState::default(), at(300));
        let i = &s.instances["api"];
        assert!(i.below_min_delta);
        assert_eq!(i.state, AlertState::Inactive);
        r.min_delta = Some(0.02); // exactly the change: counts despite float noise
        let s = evaluate(&r, &[with_baseline(&h, &b)], &RuleState::default(), at(300));
        assert_eq!(s.instances["api"].state, AlertState::Firing);
    }

    #[test]
    fn baseline_is_frozen_from_the_period_before_registration() {
        let mut h = history();
        for k in 0..100 {
            let status = if k % 10 == 0 {
                Status::Fail
            } else {
                Status::Pass
            };
            run(&mut h, k, status, k + 1);
        }
        run(&mut h, 100, Status::Error, 1);
        run(&mut h, 200, Status::Fail, 9999); // after registration: not part of it
        let b = Baseline::of(&h, at(100), Duration::from_secs(1800));
        assert_eq!((b.judged, b.errors), (100, 1));
        assert_eq!(b.failure_ratio, Some(0.1));
        assert_eq!(
            (b.latency_p50_s(), b.latency_p95_s(), b.latency_p99_s()),
            (Some(0.05), Some(0.095), Some(0.099))
        );
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Baseline>(&json).unwrap(), b);
        assert_eq!(
            Baseline::of(&history(), at(0), Duration::from_secs(60)),
            Baseline::default()
        );
    }

    #[test]
    fn a_rule_over_several_checks_keeps_one_instance_per_check() {
        let mut good = history();
        let mut bad = history();
        runs(&mut good, 0, 10, 0, 10);
        runs(&mut bad, 0, 10, 5, 10);
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.1));
        r.target = RuleTarget::Checks(vec!["a".into(), "b".into()]);
        r.for_ = Duration::from_secs(10);
        let both = [named("a", &good), named("b", &bad)];
        let s = evaluate(&r, &both, &RuleState::default(), at(10));
        let s = evaluate(&r, &both, &s, at(20));
        assert_eq!(s.instances.len(), 2);
        assert_eq!(s.instances["a"].state, AlertState::Inactive);
        assert_eq!(s.instances["b"].state, AlertState::Firing);
        // A check that leaves the inputs (a reload) leaves the state.
        let s = evaluate(&r, &[named("a", &good)], &s, at(30));
        assert_eq!(s.instances.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn targets_and_tracked_observations() {
        let mut by_service = rule(Signal::Value("value".into()), Threshold::Above(1.0));
        by_service.target = RuleTarget::Service("shop".into());
        assert!(watches(&by_service, "orders-db", "shop"));
        assert!(!watches(&by_service, "orders-db", "billing"));
        let by_name = rule(Signal::Value("rows".into()), Threshold::Above(1.0));
        assert!(watches(&by_name, "api", "billing") && !watches(&by_name, "apix", "shop"));
        let ratio = rule(Signal::FailureRatio, Threshold::Above(1.0));
        let rules = [by_service.clone(), by_name, ratio, by_service];
        assert_eq!(
            tracked_observations(&rules, "api", "shop"),
            vec!["value", "rows"]
        );
        assert_eq!(tracked_observations(&rules, "other", "shop"), vec!["value"]);
        assert!(tracked_observations(&rules, "other", "").is_empty());
    }

    #[test]
    fn signal_names_read_as_written() {
        let names: Vec<String> = [
            Signal::FailureRatio,
            Signal::ConsecutiveFailures,
            Signal::Latency(0.5),
            Signal::Latency(0.9),
            Signal::Latency(0.95),
            Signal::Latency(0.99),
            Signal::Value("free_bytes".into()),
            Signal::LatencyP95Ratio,
            Signal::FailureRatioDelta,
        ]
        .iter()
        .map(signal_name)
        .collect();
        assert_eq!(
            names,
            [
                "failure_ratio",
                "consecutive_failures",
                "latency_p50",
                "latency_p90",
                "latency_p95",
                "latency_p99",
                "value:free_bytes",
                "latency_p95_ratio",
                "failure_ratio_delta"
            ]
        );
    }

    #[test]
    fn alerts_list_pending_and_firing_instances_only() {
        let mut failing = history();
        let mut fine = history();
        runs(&mut failing, 0, 10, 10, 10);
        runs(&mut fine, 0, 10, 0, 10);
        let fast = RuleConfig {
            name: "fast".into(),
            ..rule(Signal::FailureRatio, Threshold::Above(0.5))
        };
        let slow = RuleConfig {
            name: "slow".into(),
            for_: Duration::from_secs(60),
            severity: "warning".into(),
            rollback: false,
            ..fast.clone()
        };
        let inputs = [named("a", &failing), named("b", &fine)];
        let none = RuleState::default();
        let fast_state = evaluate(&fast, &inputs, &none, at(10));
        let slow_state = evaluate(&slow, &inputs, &none, at(10));
        let list = alerts([(&slow, &slow_state), (&fast, &fast_state)]);
        let brief: Vec<_> = list
            .iter()
            .map(|a| (a.rule.as_str(), a.check.as_str(), a.state))
            .collect();
        assert_eq!(
            brief,
            vec![
                ("fast", "a", AlertState::Firing),
                ("slow", "a", AlertState::Pending)
            ]
        );
        let json = serde_json::to_value(&list[1]).unwrap();
        assert_eq!(json["state"], "pending");
        assert_eq!(json["severity"], "warning");
        assert_eq!(json["signal"], "failure_ratio");
        assert_eq!(json["value"], 1.0);
        assert_eq!(json["threshold"], 0.5);
        assert_eq!(json["comparison"], "above");
        assert_eq!(json["threshold_source"], "steady");
        assert_eq!(json["for_seconds"], 60.0);
        assert_eq!(json["since"], rfc3339(at(10)));
        assert_eq!(json["fired_at"], serde_json::Value::Null);
        assert_eq!(json["rollback"], false);
        assert_eq!(json["message"], "failure_ratio 1 above 0.5 (steady) for 0s");
        assert!(json.get("no_data").is_none());
    }

    #[test]
    fn rule_state_survives_a_serde_round_trip() {
        let mut h = history();
        runs(&mut h, 0, 10, 10, 10);
        let mut r = tightened();
        r.min_samples = 1;
        let s = evaluate(&r, &[inside(&h)], &RuleState::default(), at(10));
        let s = eval(&r, &h, &s, 1000); // firing, now without data
        let json = serde_json::to_string(&s).unwrap();
        let back: RuleState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(json.contains(r#""kind":"too_few_samples""#));
    }

    #[test]
    fn clock_going_backwards_does_not_advance_timers() {
        let mut h = history();
        let mut r = rule(Signal::FailureRatio, Threshold::Above(0.5));
        r.for_ = Duration::from_secs(60);
        runs(&mut h, 0, 10, 10, 10);
        let s = eval(&r, &h, &RuleState::default(), 50);
        let s = eval(&r, &h, &s, 20);
        assert_eq!(s.instances["api"].held, Duration::ZERO);
        assert_eq!(s.instances["api"].state, AlertState::Pending);
    }

    #[test]
    fn numbers_and_durations_print_briefly() {
        assert_eq!(show_num(0.031), "0.031");
        assert_eq!(show_num(2.0), "2");
        assert_eq!(show_num(1.0 / 3.0), "0.3333");
        assert_eq!(show_num(-0.00001), "0");
        assert_eq!(show_secs(0.0045), "4ms 500us");
        assert_eq!(show_secs(1.2), "1s 200ms");
    }
}
