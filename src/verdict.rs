//! The verdict of one deployment, as a pure state machine (DESIGN §5): no I/O and no clock
//! reads — every tick gets `now` and the evidence as plain data, so it is tested on
//! synthetic histories and gives the same answer after a restart.
//!
//! # States
//!
//! A [`VerdictRecord`] starts `pending` and concludes exactly once: `pass`, `fail` or
//! `inconclusive` by [`VerdictRecord::evaluate`], `cancelled` or `superseded` by
//! [`VerdictRecord::cancel`] / [`VerdictRecord::supersede`]. A concluded record never changes
//! again: evaluating it returns it as is. Failures seen afterwards go to the separate
//! `late_failures` list ([`VerdictRecord::record_late_failure`]).
//!
//! # One tick ([`TickInput`]: `now`, the service's checks with their runs since registration
//! and frozen baseline, the rollback rules currently pending / firing / without data)
//!
//! Only runs started at or after the deployment's `started_at`, and before its
//! `max_duration` deadline, are evidence (the engine filters them again, whatever the caller
//! passed). Outcomes are `pass` / `degraded` (both count as success), `fail` (evidence
//! against the target) or `error` (bakewatch could not judge, DESIGN §1). A *judged* run is
//! one that is not an error.
//!
//! **fail** (decision `rollback`), any of:
//! - `CRITICAL_CHECK_FAILED`: a `critical` check failed `critical_failures` times in a row —
//!   at once, even during warmup. Errors neither extend nor break a streak (they say nothing
//!   about the target; the same rule as [`crate::history::History`]), a pass or degraded run
//!   breaks it, so one flaky failure followed by a pass never fails. Any such streak since
//!   registration counts, not only the trailing one, so a late tick does not miss it.
//! - `ROLLBACK_RULE_FIRING`: a rollback rule is firing, once warmup is over (DESIGN §3:
//!   rules are not judged during warmup; a rule still firing when warmup ends fails then).
//! - `BASELINE_REGRESSION`: once warmup is over, a check's latency p95 over its judged runs
//!   started after warmup exceeds `max_p95_ratio` × its frozen baseline p95 **and** by at
//!   least `min_delta_ms`, with at least `min_samples` judged runs on both sides
//!   ([`RegressionPolicy`]). Warmup runs are left out so cold caches do not count.
//!
//! **inconclusive** (decision `hold`), any of:
//! - `MAX_DURATION_REACHED`: `now ≥ started_at + max_duration` without a decision; the
//!   reasons that still blocked a pass are listed after it.
//! - `ERRORS_DOMINATE`: once `min_duration` has passed, a check with at least `min_samples`
//!   runs has more than `max_error_ratio` (default 0.5) of them as errors. Waiting for
//!   `min_duration` lets a short burst of errors just after a deploy be diluted instead of
//!   concluding a 15-second-old deployment; before then a pass is impossible anyway.
//!
//! **pass** (decision `proceed`) only when all of these hold:
//! - `now ≥ started_at + max(min_duration, warmup)`;
//! - the service has at least one check, and every check has at least `min_samples` judged
//!   runs since registration (errors are not samples);
//! - every check whose frozen baseline has at least `regression.min_samples` judged runs
//!   (so a regression can be judged) has at least `regression.min_samples` judged runs
//!   started after warmup, i.e. `BASELINE_REGRESSION` has actually been checked. A check
//!   without such a baseline (none, no latency, too few runs) has nothing to compare with
//!   and is not held back by this;
//! - no rollback rule is pending, firing or without data;
//! - no critical check's latest judged run failed (a streak in progress blocks a pass);
//! - evaluation health is `ok`.
//!
//! While pending, `reasons` lists what still blocks a pass (`MIN_DURATION_NOT_REACHED`,
//! `INSUFFICIENT_SAMPLES`, `REGRESSION_NOT_JUDGED_YET`, `NO_DATA`, `CHECK_ERRORING`,
//! `CRITICAL_CHECK_FAILING`, `ROLLBACK_RULE_PENDING`, `RULE_NO_DATA`, `NO_CHECKS`), with
//! messages that stay the same while the condition does (no running counts), so the
//! revision moves only when something changes.
//!
//! Precedence within one tick: fail > inconclusive > pass (a tick past the deadline whose
//! evidence would pass is inconclusive; one whose evidence fails is a fail).
//!
//! **evaluation_health** is `degraded` when bakewatch cannot judge the service well: it has
//! no checks; a check has only errors since registration, or no run at all once
//! `min_duration` has passed (before then that is merely `INSUFFICIENT_SAMPLES`); a check's
//! latest run is an error; or more than `max_error_ratio` of a check's runs are errors.
//! Degraded health blocks a pass and can end in `inconclusive`, never in `pass`.
//!
//! **revision** starts at 1 and grows by one whenever the verdict, phase, decision,
//! evaluation health or reasons change; the per-check summary rows are refreshed every tick
//! without a bump. Long-pollers wait for a different revision.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checks::outcome::StepStatus;
use crate::checks::{Outcome, Reason, Status};
use crate::config::DeployConfig;
use crate::history::{Baseline, Sample, WindowStats};

/// Late failures kept on one record; later ones are only counted.
pub const MAX_LATE_FAILURES: usize = 100;

// ---------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------

/// When a latency change against the frozen baseline is a regression.
///
/// Both the ratio and the absolute floor must be exceeded, so a fast check doubling from
/// 4 ms to 8 ms is noise, while 100 ms → 250 ms is a regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegressionPolicy {
    /// Current p95 must be above this many times the baseline p95 (default 1.5).
    pub max_p95_ratio: f64,
    /// … and above the baseline p95 by at least this many milliseconds (default 50).
    pub min_delta_ms: f64,
    /// Judged runs needed on each side before the comparison is made (default 20). A
    /// nearest-rank p95 of fewer than 20 values is their maximum, so one slow run among a
    /// handful would read as a regression; 20 tolerates a single outlier. A check whose
    /// baseline has that many runs cannot pass until it has that many after warmup too
    /// (`REGRESSION_NOT_JUDGED_YET`).
    pub min_samples: u32,
}

impl Default for RegressionPolicy {
    fn default() -> Self {
        RegressionPolicy {
            max_p95_ratio: 1.5,
            min_delta_ms: 50.0,
            min_samples: 20,
        }
    }
}

/// Everything the engine needs to decide: `[deploy]` plus the knobs that have no config key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerdictPolicy {
    /// Rollback rules and regressions are not judged before this (critical checks are).
    #[serde(with = "human_duration")]
    pub warmup: Duration,
    /// Earliest time after `started_at` a verdict can be `pass`.
    #[serde(with = "human_duration")]
    pub min_duration: Duration,
    /// No decision by then → `inconclusive`.
    #[serde(with = "human_duration")]
    pub max_duration: Duration,
    /// Consecutive failures of a critical check that fail the verdict (0 is taken as 1).
    pub critical_failures: u32,
    /// Judged runs each check needs since registration before a pass (default 3).
    pub min_samples: u32,
    /// Share of error runs above which a check degrades health, and (after `min_duration`,
    /// with `min_samples` runs) makes the verdict inconclusive. Default 0.5.
    pub max_error_ratio: f64,
    pub regression: RegressionPolicy,
}

impl Default for VerdictPolicy {
    /// The defaults of DESIGN §3 `[deploy]`.
    fn default() -> Self {
        VerdictPolicy {
            warmup: Duration::ZERO,
            min_duration: Duration::from_secs(5 * 60),
            max_duration: Duration::from_secs(20 * 60),
            critical_failures: 2,
            min_samples: 3,
            max_error_ratio: 0.5,
            regression: RegressionPolicy::default(),
        }
    }
}

impl VerdictPolicy {
    /// The policy of a `[deploy]` table, other knobs at their defaults.
    pub fn from_deploy(deploy: &DeployConfig) -> VerdictPolicy {
        VerdictPolicy {
            warmup: deploy.warmup,
            min_duration: deploy.min_duration,
            max_duration: deploy.max_duration,
            critical_failures: deploy.critical_failures,
            ..VerdictPolicy::default()
        }
    }

    fn critical_limit(&self) -> u32 {
        self.critical_failures.max(1)
    }

    /// The earliest time a pass is possible: after `min_duration` and after warmup.
    fn pass_gate(&self) -> Duration {
        self.min_duration.max(self.warmup)
    }
}

impl From<&DeployConfig> for VerdictPolicy {
    fn from(deploy: &DeployConfig) -> Self {
        VerdictPolicy::from_deploy(deploy)
    }
}

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/// One run of a check: what [`Sample`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    #[serde(with = "millis", rename = "duration_ms")]
    pub duration: Duration,
    pub status: Status,
    pub reason: Reason,
}

impl Run {
    pub fn of_sample(sample: &Sample) -> Run {
        Run {
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(sample.at_ms),
            duration: sample.duration(),
            status: sample.status,
            reason: sample.reason,
        }
    }

    pub fn of_outcome(outcome: &Outcome) -> Run {
        Run {
            started_at: outcome.started_at,
            duration: outcome.duration,
            status: outcome.status,
            reason: outcome.reason,
        }
    }

    fn sample(&self) -> Sample {
        Sample {
            at_ms: crate::util::unix_millis(self.started_at),
            duration_us: u32::try_from(self.duration.as_micros()).unwrap_or(u32::MAX),
            status: self.status,
            reason: self.reason,
        }
    }
}

/// What one failed (or errored) run said, for the reason's message: the caller keeps only
/// the latest full outcomes, so it passes those.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    /// The journey step that failed, if any.
    pub step: Option<String>,
    /// One line: "HTTP 500 (expected 200)".
    pub message: String,
    /// What was observed, e.g. `{"status": 500}`.
    pub observed: Option<Value>,
}

impl RunDetail {
    /// The failing step (if a journey), its message and HTTP status; otherwise the outcome's
    /// message and observations.
    pub fn of_outcome(outcome: &Outcome) -> RunDetail {
        let failed_step = outcome
            .steps
            .iter()
            .find(|s| !s.cleanup && s.status == StepStatus::Fail);
        let (step, message, observed) = match failed_step {
            Some(s) => (
                Some(s.name.clone()),
                s.message.clone(),
                s.http_status
                    .map(|code| serde_json::json!({ "status": code })),
            ),
            None => {
                let observed = if outcome.observations.0.is_empty() {
                    None
                } else {
                    serde_json::to_value(&outcome.observations).ok()
                };
                (None, outcome.message.clone(), observed)
            }
        };
        RunDetail {
            started_at: outcome.started_at,
            step,
            message,
            observed,
        }
    }
}

/// One check of the deployment's service, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckInput {
    pub name: String,
    pub critical: bool,
    /// Runs since registration, any order (older ones are ignored anyway).
    pub runs: Vec<Run>,
    pub baseline: Option<Baseline>,
    /// The latest failed run's detail, for messages (ignored if it predates registration).
    #[serde(default)]
    pub last_failure: Option<RunDetail>,
    /// The latest errored run's detail, for messages (ignored if it predates registration).
    #[serde(default)]
    pub last_error: Option<RunDetail>,
}

/// The state of a rollback rule (a rule with `rollback = true`) as the rule engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleState {
    /// Breaching, `for` not yet elapsed: blocks a pass.
    Pending,
    /// Fails the verdict (after warmup).
    Firing,
    /// Below the rule's `min_samples`: blocks a pass (DESIGN §3).
    NoData,
}

/// A rollback rule that is not inactive. Inactive rules are simply not passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleSignal {
    pub rule: String,
    /// The check the rule is breaching on, when it names one.
    pub check: Option<String>,
    pub state: RuleState,
    /// One line from the rule engine: "failure_ratio 0.04 above 0.005 for 1m".
    pub message: String,
}

/// Everything known at one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickInput {
    #[serde(with = "rfc3339")]
    pub now: SystemTime,
    /// Every check of the deployment's service.
    pub checks: Vec<CheckInput>,
    /// Rollback rules watching the service that are pending, firing or without data.
    pub rules: Vec<RuleSignal>,
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pending,
    Pass,
    Fail,
    Inconclusive,
    Cancelled,
    Superseded,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pending => "pending",
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Cancelled => "cancelled",
            Verdict::Superseded => "superseded",
        }
    }

    pub fn is_concluded(self) -> bool {
        self != Verdict::Pending
    }

    /// What a deploy script should do.
    pub fn decision(self) -> Decision {
        match self {
            Verdict::Pending => Decision::Wait,
            Verdict::Pass => Decision::Proceed,
            Verdict::Fail => Decision::Rollback,
            Verdict::Inconclusive | Verdict::Cancelled | Verdict::Superseded => Decision::Hold,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Wait,
    Proceed,
    Rollback,
    Hold,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Wait => "wait",
            Decision::Proceed => "proceed",
            Decision::Rollback => "rollback",
            Decision::Hold => "hold",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Pending, inside `warmup`: only critical checks can decide.
    WarmingUp,
    /// Pending, everything is judged.
    Verifying,
    /// Any concluded verdict.
    Concluded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationHealth {
    Ok,
    /// bakewatch cannot judge part of the service (see the module docs).
    Degraded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    // Concluding.
    CriticalCheckFailed,
    RollbackRuleFiring,
    BaselineRegression,
    MaxDurationReached,
    ErrorsDominate,
    Passed,
    Cancelled,
    Superseded,
    // Blocking a pass (while pending, and after MAX_DURATION_REACHED).
    MinDurationNotReached,
    InsufficientSamples,
    /// The baseline has enough runs to judge a regression, the runs after warmup not yet.
    RegressionNotJudgedYet,
    NoData,
    CheckErroring,
    CriticalCheckFailing,
    RollbackRulePending,
    RuleNoData,
    NoChecks,
}

/// One explained reason, as served in `reasons[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictReason {
    pub code: ReasonCode,
    pub check: Option<String>,
    pub step: Option<String>,
    pub message: String,
    #[serde(default)]
    pub observed: Option<Value>,
    /// Where to look next: an API path.
    #[serde(default)]
    pub evidence: Option<String>,
}

/// A check's state in the summary rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Ok,
    /// Fewer judged runs than `min_samples`, or (with a baseline to compare with) fewer
    /// judged runs after warmup than `regression.min_samples`.
    InsufficientData,
    /// No judged run at all.
    NoData,
    /// Its latest run is an error, or errors exceed `max_error_ratio`.
    Erroring,
    /// Its latest judged run failed.
    Failing,
    /// A critical check that failed `critical_failures` times in a row.
    Failed,
    /// Latency p95 regressed against the baseline.
    Regressed,
}

/// One row of `checks[]`: the check now vs its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    pub check: String,
    pub status: CheckState,
    #[serde(default)]
    pub critical: bool,
    /// Runs since registration (errors included).
    pub runs: u32,
    pub failures: u32,
    #[serde(default)]
    pub errors: u32,
    /// The current streak of failures (errors skipped).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Over judged runs since registration.
    pub latency_p95_ms: Option<f64>,
    pub baseline_p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LateFailureKind {
    CheckFailed,
    RuleFiring,
}

/// A failure seen after the verdict concluded: recorded, never changing the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateFailure {
    pub kind: LateFailureKind,
    /// The run's start, or the tick at which the rule was seen firing.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub check: Option<String>,
    pub rule: Option<String>,
    pub step: Option<String>,
    pub message: String,
}

/// The verdict of one deployment, in the shape of `GET /api/v1/deployments/{id}/verdict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub id: String,
    pub service: String,
    pub version: String,
    pub phase: Phase,
    pub verdict: Verdict,
    pub decision: Decision,
    pub evaluation_health: EvaluationHealth,
    pub revision: u64,
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    #[serde(with = "rfc3339_opt")]
    pub concluded_at: Option<SystemTime>,
    pub reasons: Vec<VerdictReason>,
    pub checks: Vec<CheckSummary>,
    #[serde(default)]
    pub late_failures: Vec<LateFailure>,
    /// Late failures not kept because [`MAX_LATE_FAILURES`] were already recorded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late_failures_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

// ---------------------------------------------------------------------------------------
// The state machine
// ---------------------------------------------------------------------------------------

impl VerdictRecord {
    /// A freshly registered deployment: pending, revision 1, nothing judged yet.
    pub fn new(
        id: impl Into<String>,
        service: impl Into<String>,
        version: impl Into<String>,
        started_at: SystemTime,
        policy: &VerdictPolicy,
    ) -> VerdictRecord {
        VerdictRecord {
            id: id.into(),
            service: service.into(),
            version: version.into(),
            phase: if policy.warmup > Duration::ZERO {
                Phase::WarmingUp
            } else {
                Phase::Verifying
            },
            verdict: Verdict::Pending,
            decision: Decision::Wait,
            evaluation_health: EvaluationHealth::Ok,
            revision: 1,
            started_at,
            concluded_at: None,
            reasons: Vec::new(),
            checks: Vec::new(),
            late_failures: Vec::new(),
            late_failures_dropped: 0,
        }
    }

    pub fn is_concluded(&self) -> bool {
        self.verdict.is_concluded()
    }

    /// One tick: the next state given the evidence. A concluded record comes back unchanged.
    pub fn evaluate(&self, policy: &VerdictPolicy, input: &TickInput) -> VerdictRecord {
        if self.is_concluded() {
            return self.clone();
        }
        let now = input.now;
        let elapsed = now
            .duration_since(self.started_at)
            .unwrap_or(Duration::ZERO);
        let in_warmup = elapsed < policy.warmup;
        let cx = Cx {
            policy,
            started_at: self.started_at,
            deadline: self.started_at.checked_add(policy.max_duration),
            warmup_end: self.started_at.checked_add(policy.warmup),
            in_warmup,
            elapsed,
        };

        let mut checks: Vec<Analysis> = input.checks.iter().map(|c| cx.analyze(c)).collect();
        checks.sort_by(|a, b| a.input.name.cmp(&b.input.name));
        let mut rules: Vec<&RuleSignal> = input.rules.iter().collect();
        rules.sort_by(|a, b| (&a.rule, &a.check).cmp(&(&b.rule, &b.check)));

        let failing = cx.fail_reasons(&checks, &rules);
        let blockers = cx.pass_blockers(&checks, &rules, &self.service);
        let dominated = cx.errors_dominate(&checks);
        let past_deadline = elapsed >= policy.max_duration;

        let (verdict, reasons) = if !failing.is_empty() {
            (Verdict::Fail, failing)
        } else if past_deadline || !dominated.is_empty() {
            let mut reasons = Vec::new();
            if past_deadline {
                reasons.push(reason(
                    ReasonCode::MaxDurationReached,
                    None,
                    format!(
                        "no decision within max_duration {}",
                        humantime::format_duration(policy.max_duration)
                    ),
                ));
            }
            let dominated_checks: Vec<Option<String>> =
                dominated.iter().map(|r| r.check.clone()).collect();
            reasons.extend(dominated);
            if past_deadline {
                // What kept it from passing, minus what ERRORS_DOMINATE already says.
                reasons.extend(blockers.into_iter().filter(|b| {
                    !(matches!(b.code, ReasonCode::NoData | ReasonCode::CheckErroring)
                        && dominated_checks.contains(&b.check))
                }));
            }
            (Verdict::Inconclusive, reasons)
        } else if blockers.is_empty() {
            let message = format!(
                "{} check{} of {} judged over {}: no critical failure, rollback rule or regression",
                checks.len(),
                plural(checks.len()),
                self.service,
                humantime::format_duration(round_secs(elapsed)),
            );
            (
                Verdict::Pass,
                vec![reason(ReasonCode::Passed, None, message)],
            )
        } else {
            (Verdict::Pending, blockers)
        };

        let degraded = checks.is_empty() || checks.iter().any(|a| cx.degrades_health(a));
        let mut next = self.clone();
        next.verdict = verdict;
        next.decision = verdict.decision();
        next.phase = if verdict.is_concluded() {
            Phase::Concluded
        } else if in_warmup {
            Phase::WarmingUp
        } else {
            Phase::Verifying
        };
        next.evaluation_health = if degraded {
            EvaluationHealth::Degraded
        } else {
            EvaluationHealth::Ok
        };
        next.reasons = reasons;
        next.checks = checks.iter().map(|a| cx.summary(a)).collect();
        if verdict.is_concluded() {
            next.concluded_at = Some(now);
        }
        next.bump_if_changed(self);
        next
    }

    /// Cancels a pending verification (`POST …/cancel`); a concluded one is unchanged.
    pub fn cancel(&self, now: SystemTime) -> VerdictRecord {
        self.conclude_externally(
            now,
            Verdict::Cancelled,
            ReasonCode::Cancelled,
            "verification cancelled".to_string(),
        )
    }

    /// Marks a pending verification superseded by a newer deployment of the same service
    /// and environment; a concluded one is unchanged.
    pub fn supersede(&self, now: SystemTime, by_id: &str) -> VerdictRecord {
        self.conclude_externally(
            now,
            Verdict::Superseded,
            ReasonCode::Superseded,
            format!("superseded by deployment {by_id}"),
        )
    }

    fn conclude_externally(
        &self,
        now: SystemTime,
        verdict: Verdict,
        code: ReasonCode,
        message: String,
    ) -> VerdictRecord {
        if self.is_concluded() {
            return self.clone();
        }
        let mut next = self.clone();
        next.verdict = verdict;
        next.decision = verdict.decision();
        next.phase = Phase::Concluded;
        next.concluded_at = Some(now);
        next.reasons = vec![reason(code, None, message)];
        next.bump_if_changed(self);
        next
    }

    /// Appends a failure seen after conclusion. Returns false, changing nothing, when the
    /// verdict is still pending (failures then feed the verdict itself), or the failure is
    /// already listed (a run: same check and start; a rule: same rule and check, however
    /// long it keeps firing). Beyond [`MAX_LATE_FAILURES`] it is only counted. The verdict,
    /// its reasons and its revision never change.
    pub fn record_late_failure(&mut self, failure: LateFailure) -> bool {
        if !self.is_concluded() {
            return false;
        }
        let duplicate = self.late_failures.iter().any(|f| {
            f.kind == failure.kind
                && f.check == failure.check
                && f.rule == failure.rule
                && (failure.kind == LateFailureKind::RuleFiring || f.at == failure.at)
        });
        if duplicate {
            return false;
        }
        if self.late_failures.len() >= MAX_LATE_FAILURES {
            self.late_failures_dropped += 1;
            return false;
        }
        self.late_failures.push(failure);
        true
    }

    /// The late failures a tick shows (pure; feed them to [`Self::record_late_failure`]):
    /// failed runs started at or after `concluded_at`, and rollback rules firing. Empty
    /// while pending.
    pub fn late_failures_in(&self, input: &TickInput) -> Vec<LateFailure> {
        let Some(concluded_at) = self.concluded_at else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for c in &input.checks {
            let mut failed: Vec<&Run> = c
                .runs
                .iter()
                .filter(|r| r.status == Status::Fail && r.started_at >= concluded_at)
                .collect();
            failed.sort_by_key(|r| r.started_at);
            for r in failed {
                let detail = c
                    .last_failure
                    .as_ref()
                    .filter(|d| d.started_at == r.started_at);
                out.push(LateFailure {
                    kind: LateFailureKind::CheckFailed,
                    at: r.started_at,
                    check: Some(c.name.clone()),
                    rule: None,
                    step: detail.and_then(|d| d.step.clone()),
                    message: match detail {
                        Some(d) => d.message.clone(),
                        None => format!("{} failed ({})", c.name, r.reason),
                    },
                });
            }
        }
        for s in input.rules.iter().filter(|s| s.state == RuleState::Firing) {
            out.push(LateFailure {
                kind: LateFailureKind::RuleFiring,
                at: input.now,
                check: s.check.clone(),
                rule: Some(s.rule.clone()),
                step: None,
                message: rule_message(s, "firing"),
            });
        }
        out
    }

    /// `revision + 1` if what long-pollers see changed since `prev`.
    fn bump_if_changed(&mut self, prev: &VerdictRecord) {
        let changed = self.verdict != prev.verdict
            || self.phase != prev.phase
            || self.decision != prev.decision
            || self.evaluation_health != prev.evaluation_health
            || self.reasons != prev.reasons;
        self.revision = if changed {
            prev.revision + 1
        } else {
            prev.revision
        };
    }
}

/// The per-tick constants.
struct Cx<'p> {
    policy: &'p VerdictPolicy,
    started_at: SystemTime,
    /// None when `started_at + max_duration` overflows: no deadline.
    deadline: Option<SystemTime>,
    warmup_end: Option<SystemTime>,
    in_warmup: bool,
    elapsed: Duration,
}

/// One check, digested.
struct Analysis<'a> {
    input: &'a CheckInput,
    stats: WindowStats,
    judged: u32,
    /// Longest run of failures since registration (errors skipped).
    max_streak: u32,
    /// The streak the newest runs are in.
    trailing_streak: u32,
    latest: Option<Status>,
    /// The reason of the newest failed run, for messages without a detail.
    last_fail_reason: Option<Reason>,
    regression: Option<Regression>,
    /// The frozen baseline has enough judged runs to compare with, but the runs after warmup
    /// are still too few: no regression can be judged yet, so a pass is blocked.
    regression_not_judged_yet: bool,
    last_failure: Option<&'a RunDetail>,
    last_error: Option<&'a RunDetail>,
}

struct Regression {
    current_p95_ms: f64,
    baseline_p95_ms: f64,
    samples: u32,
}

impl Cx<'_> {
    fn is_evidence(&self, r: &Run) -> bool {
        r.started_at >= self.started_at && self.deadline.is_none_or(|d| r.started_at < d)
    }

    fn analyze<'a>(&self, c: &'a CheckInput) -> Analysis<'a> {
        let mut runs: Vec<&Run> = c.runs.iter().filter(|r| self.is_evidence(r)).collect();
        runs.sort_by_key(|r| r.started_at);
        let samples: Vec<Sample> = runs.iter().map(|r| r.sample()).collect();
        let stats = WindowStats::of(samples.iter());
        let judged = stats.pass + stats.degraded + stats.fail;

        let (mut streak, mut max_streak) = (0u32, 0u32);
        for r in &runs {
            match r.status {
                Status::Fail => {
                    streak += 1;
                    max_streak = max_streak.max(streak);
                }
                Status::Pass | Status::Degraded => streak = 0,
                Status::Error => {}
            }
        }

        let comparable = self.comparable_baseline(c);
        let after_warmup: Vec<Sample> = match (comparable, self.warmup_end) {
            (Some(_), Some(warmup_end)) => runs
                .iter()
                .filter(|r| r.started_at >= warmup_end && r.status != Status::Error)
                .map(|r| r.sample())
                .collect(),
            _ => Vec::new(),
        };
        let enough_after_warmup = u32::try_from(after_warmup.len()).unwrap_or(u32::MAX)
            >= self.policy.regression.min_samples.max(1);
        let regression = match comparable {
            Some(baseline_p95_ms) if !self.in_warmup => {
                self.regression(baseline_p95_ms, &after_warmup)
            }
            _ => None,
        };
        let fresh = |d: &&RunDetail| d.started_at >= self.started_at;
        Analysis {
            input: c,
            judged,
            max_streak,
            trailing_streak: streak,
            latest: runs.last().map(|r| r.status),
            last_fail_reason: runs
                .iter()
                .rev()
                .find(|r| r.status == Status::Fail)
                .map(|r| r.reason),
            regression,
            regression_not_judged_yet: comparable.is_some()
                && self.warmup_end.is_some()
                && !enough_after_warmup,
            last_failure: c.last_failure.as_ref().filter(fresh),
            last_error: c.last_error.as_ref().filter(fresh),
            stats,
        }
    }

    /// The baseline p95 of a check whose frozen baseline has enough judged runs to compare
    /// with; None when there is nothing to compare with (no baseline, no latency, too few
    /// runs), which neither judges a regression nor blocks a pass.
    fn comparable_baseline(&self, c: &CheckInput) -> Option<f64> {
        let baseline = c.baseline.as_ref()?;
        let baseline_p95_ms = baseline.latency_p95_ms?;
        (baseline.judged >= self.policy.regression.min_samples).then_some(baseline_p95_ms)
    }

    /// Latency p95 of the judged runs after warmup (`after`) vs the frozen baseline p95.
    fn regression(&self, baseline_p95_ms: f64, after: &[Sample]) -> Option<Regression> {
        let rp = &self.policy.regression;
        let n = u32::try_from(after.len()).unwrap_or(u32::MAX);
        if n < rp.min_samples.max(1) {
            return None;
        }
        let current_p95_ms = WindowStats::of(after.iter()).latency_p95_ms?;
        let regressed = current_p95_ms > baseline_p95_ms * rp.max_p95_ratio
            && current_p95_ms - baseline_p95_ms >= rp.min_delta_ms;
        regressed.then_some(Regression {
            current_p95_ms,
            baseline_p95_ms,
            samples: n,
        })
    }

    fn fail_reasons(&self, checks: &[Analysis], rules: &[&RuleSignal]) -> Vec<VerdictReason> {
        let mut out = Vec::new();
        let limit = self.policy.critical_limit();
        for a in checks {
            if a.input.critical && a.max_streak >= limit {
                let n = a.max_streak;
                let mut observed = a
                    .last_failure
                    .and_then(|d| d.observed.clone())
                    .filter(Value::is_object)
                    .unwrap_or_else(|| serde_json::json!({}));
                observed["consecutive_failures"] = n.into();
                let (subject, tail) = failure_words(a);
                out.push(VerdictReason {
                    code: ReasonCode::CriticalCheckFailed,
                    check: Some(a.input.name.clone()),
                    step: a.last_failure.and_then(|d| d.step.clone()),
                    message: format!(
                        "{subject} failed {n} consecutive run{}: {tail}",
                        plural(n as usize)
                    ),
                    observed: Some(observed),
                    evidence: Some(check_evidence(&a.input.name)),
                });
            }
        }
        if !self.in_warmup {
            for s in rules.iter().filter(|s| s.state == RuleState::Firing) {
                out.push(rule_reason(ReasonCode::RollbackRuleFiring, s, "firing"));
            }
            for a in checks {
                if let Some(r) = &a.regression {
                    let ratio = r.current_p95_ms / r.baseline_p95_ms;
                    let ratio_text = if ratio.is_finite() {
                        format!("×{ratio:.2}, ")
                    } else {
                        String::new()
                    };
                    out.push(VerdictReason {
                        code: ReasonCode::BaselineRegression,
                        check: Some(a.input.name.clone()),
                        step: None,
                        message: format!(
                            "{} latency p95 {} vs baseline {} ({ratio_text}+{} over {} runs)",
                            a.input.name,
                            fmt_ms(r.current_p95_ms),
                            fmt_ms(r.baseline_p95_ms),
                            fmt_ms(r.current_p95_ms - r.baseline_p95_ms),
                            r.samples,
                        ),
                        observed: Some(serde_json::json!({
                            "latency_p95_ms": r.current_p95_ms,
                            "baseline_p95_ms": r.baseline_p95_ms,
                            "ratio": if ratio.is_finite() { Some(ratio) } else { None },
                            "samples": r.samples,
                        })),
                        evidence: Some(check_evidence(&a.input.name)),
                    });
                }
            }
        }
        out
    }

    fn error_ratio_high(&self, a: &Analysis) -> bool {
        a.stats.runs > 0
            && f64::from(a.stats.error) / f64::from(a.stats.runs) > self.policy.max_error_ratio
    }

    fn errors_dominate(&self, checks: &[Analysis]) -> Vec<VerdictReason> {
        if self.elapsed < self.policy.min_duration {
            return Vec::new();
        }
        checks
            .iter()
            .filter(|a| a.stats.runs >= self.policy.min_samples.max(1) && self.error_ratio_high(a))
            .map(|a| VerdictReason {
                code: ReasonCode::ErrorsDominate,
                check: Some(a.input.name.clone()),
                step: None,
                message: format!(
                    "{}: {} of {} runs since registration could not be judged{}",
                    a.input.name,
                    a.stats.error,
                    a.stats.runs,
                    error_tail(a),
                ),
                observed: Some(serde_json::json!({
                    "runs": a.stats.runs,
                    "errors": a.stats.error,
                })),
                evidence: Some(check_evidence(&a.input.name)),
            })
            .collect()
    }

    fn degrades_health(&self, a: &Analysis) -> bool {
        let no_data =
            a.judged == 0 && (a.stats.runs > 0 || self.elapsed >= self.policy.min_duration);
        no_data || a.latest == Some(Status::Error) || self.error_ratio_high(a)
    }

    fn pass_blockers(
        &self,
        checks: &[Analysis],
        rules: &[&RuleSignal],
        service: &str,
    ) -> Vec<VerdictReason> {
        let mut out = Vec::new();
        let gate = self.policy.pass_gate();
        if self.elapsed < gate {
            let (what, d) = if self.policy.warmup > self.policy.min_duration {
                ("warmup", self.policy.warmup)
            } else {
                ("min_duration", self.policy.min_duration)
            };
            let earliest = self.started_at.checked_add(gate).map(crate::util::rfc3339);
            out.push(reason(
                ReasonCode::MinDurationNotReached,
                None,
                format!(
                    "no pass before {} ({what} {})",
                    earliest.as_deref().unwrap_or("the end of time"),
                    humantime::format_duration(d)
                ),
            ));
        }
        if checks.is_empty() {
            out.push(reason(
                ReasonCode::NoChecks,
                None,
                format!("service {service} has no checks: nothing to judge"),
            ));
        }
        let min = self.policy.min_samples;
        let limit = self.policy.critical_limit();
        for a in checks {
            let name = &a.input.name;
            if a.judged == 0 && a.stats.runs > 0 {
                out.push(check_reason(
                    ReasonCode::NoData,
                    a,
                    format!(
                        "{name}: no run since registration could be judged{}",
                        error_tail(a)
                    ),
                ));
                continue;
            }
            if a.judged == 0 && self.elapsed >= self.policy.min_duration {
                out.push(check_reason(
                    ReasonCode::NoData,
                    a,
                    format!("{name} has not run since registration"),
                ));
                continue;
            }
            if a.judged < min {
                out.push(check_reason(
                    ReasonCode::InsufficientSamples,
                    a,
                    format!("{name} has fewer than {min} judged runs since registration"),
                ));
            }
            if a.regression_not_judged_yet {
                let needed = self.policy.regression.min_samples.max(1);
                out.push(check_reason(
                    ReasonCode::RegressionNotJudgedYet,
                    a,
                    format!(
                        "{name}: latency not yet compared with its baseline (needs {needed} judged runs after warmup)"
                    ),
                ));
            }
            if a.latest == Some(Status::Error) {
                out.push(check_reason(
                    ReasonCode::CheckErroring,
                    a,
                    format!(
                        "{name}: its latest run could not be judged{}",
                        error_tail(a)
                    ),
                ));
            } else if self.error_ratio_high(a) {
                out.push(check_reason(
                    ReasonCode::CheckErroring,
                    a,
                    format!(
                        "{name}: most runs since registration could not be judged{}",
                        error_tail(a)
                    ),
                ));
            }
            if a.input.critical && a.trailing_streak > 0 && a.max_streak < limit {
                let (subject, tail) = failure_words(a);
                let mut r = check_reason(
                    ReasonCode::CriticalCheckFailing,
                    a,
                    format!(
                        "{subject} failed its latest run: {tail} ({limit} consecutive failures fail the verdict)"
                    ),
                );
                r.step = a.last_failure.and_then(|d| d.step.clone());
                out.push(r);
            }
        }
        for s in rules {
            out.push(match s.state {
                RuleState::Pending => rule_reason(ReasonCode::RollbackRulePending, s, "pending"),
                RuleState::NoData => rule_reason(ReasonCode::RuleNoData, s, "has no data"),
                // Only reachable during warmup: after it, firing is a fail.
                RuleState::Firing => rule_reason(
                    ReasonCode::RollbackRulePending,
                    s,
                    "firing during warmup (judged when warmup ends)",
                ),
            });
        }
        out
    }

    fn summary(&self, a: &Analysis) -> CheckSummary {
        let limit = self.policy.critical_limit();
        let status = if a.input.critical && a.max_streak >= limit {
            CheckState::Failed
        } else if a.regression.is_some() {
            CheckState::Regressed
        } else if a.trailing_streak > 0 {
            CheckState::Failing
        } else if a.latest == Some(Status::Error) || self.error_ratio_high(a) {
            CheckState::Erroring
        } else if a.judged == 0 {
            CheckState::NoData
        } else if a.judged < self.policy.min_samples || a.regression_not_judged_yet {
            CheckState::InsufficientData
        } else {
            CheckState::Ok
        };
        CheckSummary {
            check: a.input.name.clone(),
            status,
            critical: a.input.critical,
            runs: a.stats.runs,
            failures: a.stats.fail,
            errors: a.stats.error,
            consecutive_failures: a.trailing_streak,
            latency_p95_ms: a.stats.latency_p95_ms,
            baseline_p95_ms: a.input.baseline.as_ref().and_then(|b| b.latency_p95_ms),
        }
    }
}

fn reason(code: ReasonCode, check: Option<String>, message: String) -> VerdictReason {
    VerdictReason {
        code,
        check,
        step: None,
        message,
        observed: None,
        evidence: None,
    }
}

fn check_reason(code: ReasonCode, a: &Analysis, message: String) -> VerdictReason {
    VerdictReason {
        evidence: Some(check_evidence(&a.input.name)),
        ..reason(code, Some(a.input.name.clone()), message)
    }
}

fn rule_message(s: &RuleSignal, state_words: &str) -> String {
    if s.message.is_empty() {
        format!("rule {} {state_words}", s.rule)
    } else {
        format!("rule {} {state_words}: {}", s.rule, s.message)
    }
}

fn rule_reason(code: ReasonCode, s: &RuleSignal, state_words: &str) -> VerdictReason {
    VerdictReason {
        code,
        check: s.check.clone(),
        step: None,
        message: rule_message(s, state_words),
        observed: Some(serde_json::json!({ "rule": s.rule, "state": s.state })),
        evidence: Some("/api/v1/alerts".to_string()),
    }
}

fn check_evidence(check: &str) -> String {
    format!("/api/v1/checks/{check}")
}

/// Who failed (the journey step, else the check) and how (the last failure's message,
/// else its reason).
fn failure_words<'a>(a: &'a Analysis) -> (&'a str, String) {
    let subject = a
        .last_failure
        .and_then(|d| d.step.as_deref())
        .unwrap_or(&a.input.name);
    let tail = match a.last_failure {
        Some(d) if !d.message.is_empty() => d.message.clone(),
        _ => format!("reason {}", a.last_fail_reason.unwrap_or(Reason::Internal)),
    };
    (subject, tail)
}

/// ": <latest error message>" when there is one.
fn error_tail(a: &Analysis) -> String {
    match a.last_error {
        Some(d) if !d.message.is_empty() => format!(": {}", d.message),
        _ => String::new(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

fn fmt_ms(ms: f64) -> String {
    if (ms - ms.round()).abs() < 1e-9 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

// ---------------------------------------------------------------------------------------
// serde helpers: times as RFC 3339, durations as text or milliseconds, Status / Reason by
// their names (the check types serialize them but do not deserialize).
// ---------------------------------------------------------------------------------------

fn parse_rfc3339<E: serde::de::Error>(s: &str) -> Result<SystemTime, E> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
        .map_err(|e| E::custom(format!("bad RFC 3339 time {s:?}: {e}")))
}

mod rfc3339 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::util::rfc3339(*t))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        parse_rfc3339(&text)
    }
}

mod rfc3339_opt {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&crate::util::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| parse_rfc3339(&text))
            .transpose()
    }
}

mod human_duration {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e}")))
    }
}

mod millis {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {ms} ms: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }

    /// min 300 s, max 1200 s, no warmup, 2 critical failures, 3 samples, regression on 5.
    fn policy() -> VerdictPolicy {
        VerdictPolicy {
            warmup: Duration::ZERO,
            min_duration: Duration::from_secs(300),
            max_duration: Duration::from_secs(1200),
            critical_failures: 2,
            min_samples: 3,
            max_error_ratio: 0.5,
            regression: RegressionPolicy::default(),
        }
    }

    fn record(p: &VerdictPolicy) -> VerdictRecord {
        VerdictRecord::new("shop-2.0.0-8812", "shop", "2.0.0", t(0), p)
    }

    fn run(at: u64, status: Status, ms: u64) -> Run {
        Run {
            started_at: t(at),
            duration: Duration::from_millis(ms),
            status,
            reason: match status {
                Status::Pass | Status::Degraded => Reason::Ok,
                Status::Fail => Reason::Status,
                Status::Error => Reason::Config,
            },
        }
    }

    /// `n` runs of `status`, every `every` seconds from `from`.
    fn runs(from: u64, n: u64, every: u64, status: Status, ms: u64) -> Vec<Run> {
        (0..n).map(|i| run(from + i * every, status, ms)).collect()
    }

    fn check(name: &str, critical: bool, runs: Vec<Run>) -> CheckInput {
        CheckInput {
            name: name.to_string(),
            critical,
            runs,
            baseline: None,
            last_failure: None,
            last_error: None,
        }
    }

    fn tick(now: u64, checks: Vec<CheckInput>, rules: Vec<RuleSignal>) -> TickInput {
        TickInput {
            now: t(now),
            checks,
            rules,
        }
    }

    fn rule(name: &str, state: RuleState) -> RuleSignal {
        RuleSignal {
            rule: name.to_string(),
            check: Some("api-health".to_string()),
            state,
            message: "failure_ratio 0.04 above 0.005".to_string(),
        }
    }

    fn codes(r: &VerdictRecord) -> Vec<ReasonCode> {
        r.reasons.iter().map(|x| x.code).collect()
    }

    fn healthy(from: u64, n: u64) -> CheckInput {
        check("api-health", true, runs(from, n, 5, Status::Pass, 10))
    }

    fn baseline(p95: f64) -> Baseline {
        Baseline {
            judged: 120,
            errors: 0,
            failure_ratio: Some(0.0),
            latency_p50_ms: Some(p95 * 0.8),
            latency_p95_ms: Some(p95),
            latency_p99_ms: Some(p95 * 1.1),
        }
    }

    #[test]
    fn new_record_is_pending_and_waits() {
        let r = record(&policy());
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(r.decision, Decision::Wait);
        assert_eq!(r.phase, Phase::Verifying);
        assert_eq!(r.revision, 1);
        assert_eq!(r.concluded_at, None);
        let warm = VerdictPolicy {
            warmup: Duration::from_secs(60),
            ..policy()
        };
        assert_eq!(record(&warm).phase, Phase::WarmingUp);
    }

    #[test]
    fn no_pass_before_min_duration_then_pass() {
        let p = policy();
        let r = record(&p);
        // 59 clean runs by t=295: plenty of samples, but min_duration is 300 s.
        let early = r.evaluate(&p, &tick(299, vec![healthy(5, 59)], vec![]));
        assert_eq!(early.verdict, Verdict::Pending);
        assert_eq!(codes(&early), vec![ReasonCode::MinDurationNotReached]);
        assert!(early.reasons[0].message.contains("min_duration 5m"));
        assert_eq!(early.evaluation_health, EvaluationHealth::Ok);

        let done = early.evaluate(&p, &tick(300, vec![healthy(5, 60)], vec![]));
        assert_eq!(done.verdict, Verdict::Pass);
        assert_eq!(done.decision, Decision::Proceed);
        assert_eq!(done.phase, Phase::Concluded);
        assert_eq!(done.concluded_at, Some(t(300)));
        assert_eq!(codes(&done), vec![ReasonCode::Passed]);
        assert_eq!(done.checks.len(), 1);
        let row = &done.checks[0];
        assert_eq!((row.runs, row.failures, row.errors), (60, 0, 0));
        assert_eq!(row.status, CheckState::Ok);
        assert_eq!(row.latency_p95_ms, Some(10.0));
    }

    #[test]
    fn no_pass_without_samples_and_inconclusive_at_max_duration() {
        let p = policy();
        let r = record(&p);
        let few = vec![check(
            "slow-cron",
            false,
            runs(100, 2, 200, Status::Pass, 10),
        )];
        let r = r.evaluate(&p, &tick(600, few.clone(), vec![]));
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(codes(&r), vec![ReasonCode::InsufficientSamples]);
        assert_eq!(r.reasons[0].check.as_deref(), Some("slow-cron"));
        assert_eq!(r.checks[0].status, CheckState::InsufficientData);
        // Too few samples is not bad health: it just is not enough yet.
        assert_eq!(r.evaluation_health, EvaluationHealth::Ok);

        let end = r.evaluate(&p, &tick(1200, few, vec![]));
        assert_eq!(end.verdict, Verdict::Inconclusive);
        assert_eq!(end.decision, Decision::Hold);
        assert_eq!(
            codes(&end),
            vec![
                ReasonCode::MaxDurationReached,
                ReasonCode::InsufficientSamples
            ]
        );
    }

    #[test]
    fn every_check_needs_samples_not_just_one() {
        let p = policy();
        let input = tick(
            400,
            vec![healthy(5, 79), check("orders-db", false, vec![])],
            vec![],
        );
        let r = record(&p).evaluate(&p, &input);
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(codes(&r), vec![ReasonCode::NoData]);
        assert_eq!(r.reasons[0].check.as_deref(), Some("orders-db"));
        // No run at all once min_duration has passed: health is degraded.
        assert_eq!(r.evaluation_health, EvaluationHealth::Degraded);
        assert_eq!(r.checks[1].status, CheckState::NoData);

        // Before min_duration a check that has not run yet is only waiting.
        let early = record(&p).evaluate(
            &p,
            &tick(
                10,
                vec![healthy(5, 1), check("orders-db", false, vec![])],
                vec![],
            ),
        );
        assert_eq!(early.evaluation_health, EvaluationHealth::Ok);
    }

    #[test]
    fn a_service_without_checks_never_passes() {
        let p = policy();
        let r = record(&p).evaluate(&p, &tick(600, vec![], vec![]));
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(codes(&r), vec![ReasonCode::NoChecks]);
        assert_eq!(r.evaluation_health, EvaluationHealth::Degraded);
        let end = r.evaluate(&p, &tick(1300, vec![], vec![]));
        assert_eq!(end.verdict, Verdict::Inconclusive);
        assert_eq!(
            codes(&end),
            vec![ReasonCode::MaxDurationReached, ReasonCode::NoChecks]
        );
    }

    #[test]
    fn an_all_error_check_never_passes_errors_dominate() {
        let p = policy();
        let mut c = check("api-health", true, runs(5, 59, 5, Status::Error, 1));
        c.last_error = Some(RunDetail {
            started_at: t(295),
            step: None,
            message: "secret ORDERS_DSN is not set".to_string(),
            observed: None,
        });
        let r = record(&p).evaluate(&p, &tick(299, vec![c.clone()], vec![]));
        assert_eq!(
            r.verdict,
            Verdict::Pending,
            "errors dominate only after min_duration"
        );
        assert_eq!(r.evaluation_health, EvaluationHealth::Degraded);
        assert_eq!(
            codes(&r),
            vec![ReasonCode::MinDurationNotReached, ReasonCode::NoData]
        );
        assert!(
            r.reasons[1]
                .message
                .ends_with("secret ORDERS_DSN is not set")
        );

        c.runs = runs(5, 60, 5, Status::Error, 1);
        let r = r.evaluate(&p, &tick(300, vec![c], vec![]));
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(r.decision, Decision::Hold);
        assert_eq!(codes(&r), vec![ReasonCode::ErrorsDominate]);
        assert_eq!(
            r.reasons[0].message,
            "api-health: 60 of 60 runs since registration could not be judged: \
             secret ORDERS_DSN is not set"
        );
        assert_eq!(r.evaluation_health, EvaluationHealth::Degraded);
        assert_eq!(r.checks[0].status, CheckState::Erroring);
    }

    #[test]
    fn an_all_error_check_with_few_runs_is_inconclusive_at_max_duration() {
        let p = policy();
        // Two errors only: below min_samples, so errors cannot "dominate"; still never pass.
        let c = check("api-health", false, runs(100, 2, 400, Status::Error, 1));
        let r = record(&p).evaluate(&p, &tick(700, vec![c.clone()], vec![]));
        assert_eq!(r.verdict, Verdict::Pending);
        let r = r.evaluate(&p, &tick(1250, vec![c], vec![]));
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(
            codes(&r),
            vec![ReasonCode::MaxDurationReached, ReasonCode::NoData]
        );
    }

    #[test]
    fn a_short_error_burst_is_diluted_and_can_pass() {
        let p = policy();
        let mut rs = runs(5, 3, 5, Status::Error, 1);
        rs.extend(runs(20, 57, 5, Status::Pass, 10));
        let r = record(&p).evaluate(&p, &tick(300, vec![check("api-health", true, rs)], vec![]));
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.checks[0].errors, 3);
    }

    #[test]
    fn a_latest_error_blocks_pass_until_the_check_judges_again() {
        let p = policy();
        let mut rs = runs(5, 59, 5, Status::Pass, 10);
        rs.push(run(300, Status::Error, 1));
        let r = record(&p).evaluate(
            &p,
            &tick(301, vec![check("api-health", true, rs.clone())], vec![]),
        );
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(codes(&r), vec![ReasonCode::CheckErroring]);
        assert_eq!(r.evaluation_health, EvaluationHealth::Degraded);
        rs.push(run(305, Status::Pass, 10));
        let r = r.evaluate(&p, &tick(306, vec![check("api-health", true, rs)], vec![]));
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.evaluation_health, EvaluationHealth::Ok);
    }

    #[test]
    fn critical_check_failing_n_in_a_row_fails_at_once_even_in_warmup() {
        let p = VerdictPolicy {
            warmup: Duration::from_secs(120),
            ..policy()
        };
        let mut c = check(
            "api-health",
            true,
            vec![run(5, Status::Fail, 3), run(10, Status::Fail, 3)],
        );
        c.last_failure = Some(RunDetail {
            started_at: t(10),
            step: None,
            message: "HTTP 500 (expected 200)".to_string(),
            observed: Some(serde_json::json!({ "status": 500 })),
        });
        let r = record(&p);
        let one = r.evaluate(
            &p,
            &tick(
                6,
                vec![check("api-health", true, vec![run(5, Status::Fail, 3)])],
                vec![],
            ),
        );
        assert_eq!(one.verdict, Verdict::Pending);
        assert_eq!(one.phase, Phase::WarmingUp);
        assert!(codes(&one).contains(&ReasonCode::CriticalCheckFailing));

        let two = one.evaluate(&p, &tick(11, vec![c], vec![]));
        assert_eq!(two.verdict, Verdict::Fail);
        assert_eq!(two.decision, Decision::Rollback);
        assert_eq!(two.concluded_at, Some(t(11)));
        assert_eq!(codes(&two), vec![ReasonCode::CriticalCheckFailed]);
        let why = &two.reasons[0];
        assert_eq!(why.check.as_deref(), Some("api-health"));
        assert_eq!(
            why.message,
            "api-health failed 2 consecutive runs: HTTP 500 (expected 200)"
        );
        assert_eq!(
            why.observed,
            Some(serde_json::json!({ "status": 500, "consecutive_failures": 2 }))
        );
        assert_eq!(why.evidence.as_deref(), Some("/api/v1/checks/api-health"));
        assert_eq!(two.checks[0].status, CheckState::Failed);
    }

    #[test]
    fn journey_failure_names_its_step() {
        use crate::checks::outcome::StepReport;
        let p = policy();
        let mut o = Outcome::fail(Reason::Status, "login: HTTP 500 (expected 200)");
        o.started_at = t(10);
        let mut step = StepReport::skipped("login", "POST /login".to_string(), false);
        step.status = StepStatus::Fail;
        step.reason = Reason::Status;
        step.http_status = Some(500);
        step.message = "HTTP 500 (expected 200)".to_string();
        o.steps.push(step);
        let mut c = check(
            "checkout-journey",
            true,
            vec![run(5, Status::Fail, 30), run(10, Status::Fail, 30)],
        );
        c.last_failure = Some(RunDetail::of_outcome(&o));
        let r = record(&p).evaluate(&p, &tick(12, vec![c], vec![]));
        assert_eq!(r.verdict, Verdict::Fail);
        let why = &r.reasons[0];
        assert_eq!(why.step.as_deref(), Some("login"));
        assert_eq!(
            why.message,
            "login failed 2 consecutive runs: HTTP 500 (expected 200)"
        );
        assert_eq!(why.observed.as_ref().unwrap()["status"], 500);
    }

    #[test]
    fn a_flaky_single_failure_of_a_critical_check_does_not_fail() {
        let p = policy();
        let mut rs = runs(5, 59, 5, Status::Pass, 10);
        rs[10].status = Status::Fail;
        rs[40].status = Status::Fail;
        let r = record(&p).evaluate(&p, &tick(300, vec![check("api-health", true, rs)], vec![]));
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.checks[0].failures, 2);
        assert_eq!(r.checks[0].consecutive_failures, 0);
    }

    #[test]
    fn errors_neither_extend_nor_break_a_failure_streak() {
        let p = policy();
        // fail, error, fail: two failures in a row as far as the target is concerned.
        let c = check(
            "api-health",
            true,
            vec![
                run(5, Status::Fail, 3),
                run(10, Status::Error, 1),
                run(15, Status::Fail, 3),
            ],
        );
        let r = record(&p).evaluate(&p, &tick(16, vec![c], vec![]));
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.reasons[0].message.contains("2 consecutive runs"));
        assert!(
            r.reasons[0].message.ends_with("reason status"),
            "{}",
            r.reasons[0].message
        );

        // error, error: no failure at all. fail, degraded, fail: broken by the degraded run.
        let c = check(
            "api-health",
            true,
            vec![
                run(5, Status::Fail, 3),
                run(10, Status::Degraded, 1),
                run(15, Status::Fail, 3),
                run(20, Status::Error, 1),
            ],
        );
        let r = record(&p).evaluate(&p, &tick(21, vec![c], vec![]));
        assert_eq!(r.verdict, Verdict::Pending);
    }

    #[test]
    fn a_streak_missed_between_ticks_still_fails() {
        let p = policy();
        let mut rs = runs(5, 10, 5, Status::Pass, 10);
        rs[3].status = Status::Fail;
        rs[4].status = Status::Fail;
        let r = record(&p).evaluate(&p, &tick(60, vec![check("api-health", true, rs)], vec![]));
        assert_eq!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn non_critical_failures_alone_do_not_fail_or_block() {
        let p = policy();
        let c = check("search", false, runs(5, 60, 5, Status::Fail, 10));
        let r = record(&p).evaluate(&p, &tick(300, vec![healthy(5, 60), c], vec![]));
        // Only rollback rules (or a regression) judge a non-critical check's failures.
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.checks[1].status, CheckState::Failing);
    }

    #[test]
    fn a_critical_streak_in_progress_blocks_pass() {
        let p = policy();
        let mut rs = runs(5, 60, 5, Status::Pass, 10);
        rs.last_mut().unwrap().status = Status::Fail;
        let r = record(&p).evaluate(
            &p,
            &tick(300, vec![check("api-health", true, rs.clone())], vec![]),
        );
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(codes(&r), vec![ReasonCode::CriticalCheckFailing]);
        rs.push(run(305, Status::Pass, 10));
        let r = r.evaluate(&p, &tick(306, vec![check("api-health", true, rs)], vec![]));
        assert_eq!(r.verdict, Verdict::Pass);
    }

    #[test]
    fn a_pending_rollback_rule_blocks_pass_and_a_firing_one_fails() {
        let p = policy();
        let r = record(&p);
        let pending = r.evaluate(
            &p,
            &tick(
                400,
                vec![healthy(5, 79)],
                vec![rule("api-error-rate", RuleState::Pending)],
            ),
        );
        assert_eq!(pending.verdict, Verdict::Pending);
        assert_eq!(codes(&pending), vec![ReasonCode::RollbackRulePending]);
        assert_eq!(
            pending.reasons[0].message,
            "rule api-error-rate pending: failure_ratio 0.04 above 0.005"
        );

        let no_data = r.evaluate(
            &p,
            &tick(
                400,
                vec![healthy(5, 79)],
                vec![rule("api-error-rate", RuleState::NoData)],
            ),
        );
        assert_eq!(codes(&no_data), vec![ReasonCode::RuleNoData]);

        let firing = pending.evaluate(
            &p,
            &tick(
                405,
                vec![healthy(5, 80)],
                vec![rule("api-error-rate", RuleState::Firing)],
            ),
        );
        assert_eq!(firing.verdict, Verdict::Fail);
        assert_eq!(firing.decision, Decision::Rollback);
        assert_eq!(codes(&firing), vec![ReasonCode::RollbackRuleFiring]);
        assert_eq!(firing.reasons[0].check.as_deref(), Some("api-health"));
        assert_eq!(
            firing.reasons[0].observed,
            Some(serde_json::json!({ "rule": "api-error-rate", "state": "firing" }))
        );
    }

    #[test]
    fn a_firing_rule_is_not_judged_during_warmup() {
        let p = VerdictPolicy {
            warmup: Duration::from_secs(60),
            ..policy()
        };
        let firing = vec![rule("api-error-rate", RuleState::Firing)];
        let r = record(&p).evaluate(&p, &tick(30, vec![healthy(5, 6)], firing.clone()));
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(r.phase, Phase::WarmingUp);
        assert!(codes(&r).contains(&ReasonCode::RollbackRulePending));
        let r = r.evaluate(&p, &tick(60, vec![healthy(5, 12)], firing));
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(codes(&r), vec![ReasonCode::RollbackRuleFiring]);
    }

    #[test]
    fn a_doubling_with_a_tiny_absolute_delta_is_not_a_regression() {
        let p = policy();
        let mut c = check("api-health", false, runs(5, 60, 5, Status::Pass, 8));
        c.baseline = Some(baseline(4.0));
        let r = record(&p).evaluate(&p, &tick(300, vec![c], vec![]));
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.checks[0].latency_p95_ms, Some(8.0));
        assert_eq!(r.checks[0].baseline_p95_ms, Some(4.0));
    }

    #[test]
    fn a_real_latency_regression_fails() {
        let p = policy();
        let mut c = check("api-health", false, runs(5, 20, 5, Status::Pass, 250));
        c.baseline = Some(baseline(100.0));
        let r = record(&p).evaluate(&p, &tick(101, vec![c], vec![]));
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(codes(&r), vec![ReasonCode::BaselineRegression]);
        assert_eq!(
            r.reasons[0].message,
            "api-health latency p95 250 ms vs baseline 100 ms (×2.50, +150 ms over 20 runs)"
        );
        assert_eq!(r.reasons[0].observed.as_ref().unwrap()["ratio"], 2.5);
        assert_eq!(r.checks[0].status, CheckState::Regressed);
    }

    #[test]
    fn a_regression_needs_samples_on_both_sides_and_tolerates_one_outlier() {
        let p = policy();
        // 19 runs: not enough for a p95.
        let mut c = check("api-health", false, runs(5, 19, 5, Status::Pass, 250));
        c.baseline = Some(baseline(100.0));
        let r = record(&p).evaluate(&p, &tick(100, vec![c.clone()], vec![]));
        assert_eq!(r.verdict, Verdict::Pending);
        assert!(codes(&r).contains(&ReasonCode::RegressionNotJudgedYet));
        // A baseline of too few runs is no baseline.
        c.runs = runs(5, 40, 5, Status::Pass, 250);
        c.baseline = Some(Baseline {
            judged: 5,
            ..baseline(100.0)
        });
        let r = record(&p).evaluate(&p, &tick(200, vec![c.clone()], vec![]));
        assert_eq!(r.verdict, Verdict::Pending);
        // One slow run among 20 normal ones is not a regression.
        c.baseline = Some(baseline(100.0));
        c.runs = runs(5, 20, 5, Status::Pass, 100);
        c.runs.push(run(110, Status::Pass, 900));
        let r = record(&p).evaluate(&p, &tick(111, vec![c], vec![]));
        assert_eq!(r.verdict, Verdict::Pending);
    }

    /// The bug this guards against: min_duration reached with a baseline to compare with,
    /// but too few runs after warmup to judge a regression.
    #[test]
    fn a_pass_waits_until_a_regression_can_be_judged() {
        let p = VerdictPolicy {
            warmup: Duration::from_secs(270),
            ..policy()
        };
        // Runs every 5 s from t=5: by t=300 only 7 of them (270..=300) are after warmup.
        let at = |now: u64| {
            let mut c = check("api-health", false, runs(5, now / 5, 5, Status::Pass, 120));
            c.baseline = Some(baseline(100.0));
            tick(now, vec![c], vec![])
        };
        let r = record(&p).evaluate(&p, &at(300));
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(codes(&r), vec![ReasonCode::RegressionNotJudgedYet]);
        assert_eq!(r.reasons[0].check.as_deref(), Some("api-health"));
        assert_eq!(
            r.reasons[0].message,
            "api-health: latency not yet compared with its baseline \
             (needs 20 judged runs after warmup)"
        );
        assert_eq!(
            r.reasons[0].evidence.as_deref(),
            Some("/api/v1/checks/api-health")
        );
        assert_eq!(r.checks[0].status, CheckState::InsufficientData);
        assert_eq!(r.evaluation_health, EvaluationHealth::Ok);

        // More runs, still too few: same reasons, same revision.
        let more = r.evaluate(&p, &at(360));
        assert_eq!(more.verdict, Verdict::Pending);
        assert_eq!(more.reasons, r.reasons);
        assert_eq!(more.revision, r.revision);

        // Errors after warmup are not samples either: 20 runs after warmup, one an error.
        let mut errored = at(366);
        errored.checks[0].runs[60].status = Status::Error;
        let still = more.evaluate(&p, &errored);
        assert_eq!(codes(&still), vec![ReasonCode::RegressionNotJudgedYet]);

        // 20 judged runs after warmup (270..=365), no regression (120 ms vs 100 ms): pass.
        let done = more.evaluate(&p, &at(366));
        assert_eq!(done.verdict, Verdict::Pass);
        assert_eq!(codes(&done), vec![ReasonCode::Passed]);
        assert_eq!(done.checks[0].status, CheckState::Ok);
    }

    #[test]
    fn without_a_baseline_to_compare_with_a_pass_does_not_wait_for_regression_samples() {
        let p = VerdictPolicy {
            warmup: Duration::from_secs(270),
            ..policy()
        };
        let c = check("api-health", false, runs(5, 60, 5, Status::Pass, 120));
        // No baseline at all.
        let r = record(&p).evaluate(&p, &tick(300, vec![c.clone()], vec![]));
        assert_eq!(r.verdict, Verdict::Pass);
        // A baseline of too few runs is no baseline.
        let mut thin = c.clone();
        thin.baseline = Some(Baseline {
            judged: 19,
            ..baseline(100.0)
        });
        let r = record(&p).evaluate(&p, &tick(300, vec![thin], vec![]));
        assert_eq!(r.verdict, Verdict::Pass);
        // Nor is one without a latency.
        let mut blind = c;
        blind.baseline = Some(Baseline {
            latency_p95_ms: None,
            ..baseline(100.0)
        });
        let r = record(&p).evaluate(&p, &tick(300, vec![blind], vec![]));
        assert_eq!(r.verdict, Verdict::Pass);
    }

    #[test]
    fn a_regression_never_judged_by_max_duration_is_inconclusive() {
        let p = policy();
        // A slow cadence: 12 runs by the deadline, never the 20 a regression needs.
        let mut c = check("slow-cron", false, runs(5, 12, 100, Status::Pass, 100));
        c.baseline = Some(baseline(100.0));
        let r = record(&p).evaluate(&p, &tick(600, vec![c.clone()], vec![]));
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(codes(&r), vec![ReasonCode::RegressionNotJudgedYet]);
        let end = r.evaluate(&p, &tick(1200, vec![c], vec![]));
        assert_eq!(end.verdict, Verdict::Inconclusive);
        assert_eq!(end.decision, Decision::Hold);
        assert_eq!(
            codes(&end),
            vec![
                ReasonCode::MaxDurationReached,
                ReasonCode::RegressionNotJudgedYet
            ]
        );
        assert_eq!(end.reasons[1].check.as_deref(), Some("slow-cron"));
    }

    #[test]
    fn regressions_are_not_judged_during_warmup_nor_on_warmup_runs() {
        let p = VerdictPolicy {
            warmup: Duration::from_secs(120),
            ..policy()
        };
        // Cold start: slow during warmup, normal after it.
        let mut rs = runs(5, 23, 5, Status::Pass, 400);
        rs.extend(runs(120, 20, 5, Status::Pass, 100));
        let mut c = check("api-health", false, rs);
        c.baseline = Some(baseline(100.0));
        let during = record(&p).evaluate(&p, &tick(119, vec![c.clone()], vec![]));
        assert_eq!(during.verdict, Verdict::Pending);
        let after = during.evaluate(&p, &tick(220, vec![c], vec![]));
        assert_eq!(after.verdict, Verdict::Pending);
        assert_eq!(after.phase, Phase::Verifying);
    }

    #[test]
    fn precedence_fail_over_inconclusive_over_pass() {
        let p = policy();
        // Past max_duration AND a critical streak: fail.
        let broken = check(
            "api-health",
            true,
            vec![run(1100, Status::Fail, 3), run(1105, Status::Fail, 3)],
        );
        let r = record(&p).evaluate(&p, &tick(1200, vec![broken], vec![]));
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(codes(&r), vec![ReasonCode::CriticalCheckFailed]);

        // Errors dominating one check AND a firing rule: fail.
        let erroring = check("orders-db", false, runs(5, 60, 5, Status::Error, 1));
        let r = record(&p).evaluate(
            &p,
            &tick(
                300,
                vec![healthy(5, 60), erroring.clone()],
                vec![rule("r", RuleState::Firing)],
            ),
        );
        assert_eq!(r.verdict, Verdict::Fail);

        // Evidence that would pass, first seen at the deadline: inconclusive.
        let r = record(&p).evaluate(&p, &tick(1200, vec![healthy(5, 200)], vec![]));
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(codes(&r), vec![ReasonCode::MaxDurationReached]);
    }

    #[test]
    fn runs_before_registration_are_not_evidence() {
        let p = policy();
        // Failures just before the deploy (the old version going down) do not count.
        let mut rs = vec![run(0, Status::Pass, 1), run(1, Status::Pass, 1)];
        for r in &mut rs {
            r.started_at -= Duration::from_secs(10);
            r.status = Status::Fail;
        }
        rs.push(run(5, Status::Fail, 3));
        let mut c = check("api-health", true, rs);
        c.last_failure = Some(RunDetail {
            started_at: t(0) - Duration::from_secs(9),
            step: None,
            message: "stale".to_string(),
            observed: None,
        });
        let r = record(&p).evaluate(&p, &tick(6, vec![c], vec![]));
        assert_eq!(r.verdict, Verdict::Pending);
        assert_eq!(r.checks[0].runs, 1);
        let failing = r
            .reasons
            .iter()
            .find(|x| x.code == ReasonCode::CriticalCheckFailing)
            .unwrap();
        assert!(!failing.message.contains("stale"), "{}", failing.message);
    }

    #[test]
    fn concluded_verdicts_are_immutable_and_late_failures_separate() {
        let p = policy();
        let passed = record(&p).evaluate(&p, &tick(300, vec![healthy(5, 60)], vec![]));
        assert_eq!(passed.verdict, Verdict::Pass);
        let mut rs = runs(5, 60, 5, Status::Pass, 10);
        rs.extend(runs(305, 3, 5, Status::Fail, 3));
        let mut c = check("api-health", true, rs);
        c.last_failure = Some(RunDetail {
            started_at: t(315),
            step: None,
            message: "HTTP 500 (expected 200)".to_string(),
            observed: None,
        });
        let input = tick(
            320,
            vec![c],
            vec![rule("api-error-rate", RuleState::Firing)],
        );
        let again = passed.evaluate(&p, &input);
        assert_eq!(
            again, passed,
            "evaluating a concluded verdict changes nothing"
        );
        assert_eq!(passed.cancel(t(330)), passed);
        assert_eq!(passed.supersede(t(330), "shop-2.0.1"), passed);

        let mut rec = passed.clone();
        let late = rec.late_failures_in(&input);
        assert_eq!(late.len(), 4);
        for f in late.clone() {
            assert!(rec.record_late_failure(f));
        }
        for f in rec.late_failures_in(&input) {
            assert!(!rec.record_late_failure(f), "duplicates are ignored");
        }
        assert_eq!(rec.late_failures.len(), 4);
        assert_eq!(rec.late_failures[2].message, "HTTP 500 (expected 200)");
        assert_eq!(rec.late_failures[0].message, "api-health failed (status)");
        assert_eq!(rec.late_failures[3].kind, LateFailureKind::RuleFiring);
        assert_eq!(
            (rec.verdict, rec.revision, &rec.reasons),
            (passed.verdict, passed.revision, &passed.reasons)
        );
        // A rule still firing on a later tick is the same late failure.
        let later = tick(400, vec![], vec![rule("api-error-rate", RuleState::Firing)]);
        for f in rec.late_failures_in(&later) {
            assert!(!rec.record_late_failure(f));
        }
        // A pending verdict takes no late failures.
        let mut pending = record(&p);
        assert!(pending.late_failures_in(&input).is_empty());
        assert!(!pending.record_late_failure(late[0].clone()));
    }

    #[test]
    fn late_failures_are_bounded() {
        let p = policy();
        let mut rec = record(&p).cancel(t(1));
        for i in 0..(MAX_LATE_FAILURES as u64 + 5) {
            rec.record_late_failure(LateFailure {
                kind: LateFailureKind::CheckFailed,
                at: t(10 + i),
                check: Some("api-health".to_string()),
                rule: None,
                step: None,
                message: "HTTP 500".to_string(),
            });
        }
        assert_eq!(rec.late_failures.len(), MAX_LATE_FAILURES);
        assert_eq!(rec.late_failures_dropped, 5);
    }

    #[test]
    fn revision_increments_only_on_change() {
        let p = VerdictPolicy {
            warmup: Duration::from_secs(20),
            ..policy()
        };
        let r0 = record(&p);
        assert_eq!(r0.revision, 1);
        let r1 = r0.evaluate(&p, &tick(5, vec![healthy(5, 1)], vec![]));
        assert_eq!(r1.revision, 2, "reasons appeared");
        let same = r1.evaluate(&p, &tick(6, vec![healthy(5, 1)], vec![]));
        assert_eq!(same.revision, 2, "same evidence, same revision");
        let r2 = same.evaluate(&p, &tick(10, vec![healthy(5, 2)], vec![]));
        assert_eq!(r2.revision, 2, "a new run that changes no reason");
        assert_eq!(r2.checks[0].runs, 2, "…still refreshes the summary");
        let r3 = r2.evaluate(&p, &tick(15, vec![healthy(5, 3)], vec![]));
        assert_eq!(r3.revision, 3, "INSUFFICIENT_SAMPLES went away");
        let r4 = r3.evaluate(&p, &tick(20, vec![healthy(5, 4)], vec![]));
        assert_eq!(r4.phase, Phase::Verifying);
        assert_eq!(r4.revision, 4, "warmup ended");
        let r5 = r4.evaluate(
            &p,
            &tick(25, vec![healthy(5, 5)], vec![rule("x", RuleState::Pending)]),
        );
        assert_eq!(r5.revision, 5, "a rule went pending");
        let r6 = r5.evaluate(&p, &tick(300, vec![healthy(5, 60)], vec![]));
        assert_eq!((r6.verdict, r6.revision), (Verdict::Pass, 6));
        assert_eq!(r6.evaluate(&p, &tick(900, vec![], vec![])).revision, 6);
    }

    #[test]
    fn cancel_and_supersede_conclude_a_pending_verdict_with_hold() {
        let p = policy();
        let r = record(&p).evaluate(&p, &tick(10, vec![healthy(5, 2)], vec![]));
        let c = r.cancel(t(20));
        assert_eq!(
            (c.verdict, c.decision, c.phase),
            (Verdict::Cancelled, Decision::Hold, Phase::Concluded)
        );
        assert_eq!(c.concluded_at, Some(t(20)));
        assert_eq!(c.revision, r.revision + 1);
        assert_eq!(c.evaluate(&p, &tick(300, vec![healthy(5, 60)], vec![])), c);
        let s = r.supersede(t(20), "shop-2.0.1-8813");
        assert_eq!(
            (s.verdict, s.decision),
            (Verdict::Superseded, Decision::Hold)
        );
        assert_eq!(s.reasons[0].code, ReasonCode::Superseded);
        assert!(s.reasons[0].message.contains("shop-2.0.1-8813"));
    }

    #[test]
    fn json_has_the_design_shape_and_round_trips() {
        let p = policy();
        let mut c = check(
            "checkout-journey",
            true,
            vec![run(5, Status::Fail, 30), run(10, Status::Fail, 30)],
        );
        c.baseline = Some(baseline(11.7));
        c.last_failure = Some(RunDetail {
            started_at: t(10),
            step: Some("login".to_string()),
            message: "HTTP 500 (expected 200)".to_string(),
            observed: Some(serde_json::json!({ "status": 500 })),
        });
        let r = record(&p).evaluate(&p, &tick(12, vec![c], vec![]));
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "id",
            "service",
            "version",
            "phase",
            "verdict",
            "decision",
            "evaluation_health",
            "revision",
            "started_at",
            "concluded_at",
            "reasons",
            "checks",
        ] {
            assert!(keys.contains(&k), "missing {k}: {keys:?}");
        }
        assert_eq!(v["phase"], "concluded");
        assert_eq!(v["verdict"], "fail");
        assert_eq!(v["decision"], "rollback");
        assert_eq!(v["evaluation_health"], "ok");
        assert_eq!(v["started_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["concluded_at"], "2023-11-14T22:13:32.000Z");
        let reason = &v["reasons"][0];
        assert_eq!(reason["code"], "CRITICAL_CHECK_FAILED");
        assert_eq!(reason["check"], "checkout-journey");
        assert_eq!(reason["step"], "login");
        assert_eq!(
            reason["message"],
            "login failed 2 consecutive runs: HTTP 500 (expected 200)"
        );
        assert_eq!(reason["observed"]["status"], 500);
        assert_eq!(reason["evidence"], "/api/v1/checks/checkout-journey");
        let row = &v["checks"][0];
        for k in [
            "check",
            "status",
            "runs",
            "failures",
            "latency_p95_ms",
            "baseline_p95_ms",
        ] {
            assert!(row.get(k).is_some(), "checks[] lacks {k}");
        }
        assert_eq!(row["status"], "failed");
        assert_eq!(row["baseline_p95_ms"], 11.7);

        let back: VerdictRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let pending: VerdictRecord =
            serde_json::from_str(&serde_json::to_string(&record(&p)).unwrap()).unwrap();
        assert_eq!(pending.concluded_at, None);

        // Inputs and policy round-trip too (they may be stored for replay).
        let input = tick(12, vec![healthy(5, 2)], vec![rule("r", RuleState::NoData)]);
        let text = serde_json::to_string(&input).unwrap();
        assert!(text.contains(r#""status":"pass""#) && text.contains(r#""duration_ms":10.0"#));
        assert_eq!(serde_json::from_str::<TickInput>(&text).unwrap(), input);
        let pt = serde_json::to_string(&p).unwrap();
        assert!(pt.contains(r#""min_duration":"5m""#), "{pt}");
        assert_eq!(serde_json::from_str::<VerdictPolicy>(&pt).unwrap(), p);
        assert_eq!(
            serde_json::from_str::<VerdictPolicy>("{}").unwrap(),
            VerdictPolicy::default()
        );
    }

    #[test]
    fn policy_from_deploy_config() {
        let d = DeployConfig {
            window: Duration::from_secs(1800),
            interval: Duration::from_secs(5),
            warmup: Duration::from_secs(30),
            min_duration: Duration::from_secs(120),
            max_duration: Duration::from_secs(600),
            baseline: Duration::from_secs(1800),
            critical_failures: 3,
        };
        let p = VerdictPolicy::from(&d);
        assert_eq!(p.warmup, Duration::from_secs(30));
        assert_eq!(p.min_duration, Duration::from_secs(120));
        assert_eq!(p.max_duration, Duration::from_secs(600));
        assert_eq!(p.critical_failures, 3);
        assert_eq!(p.min_samples, 3);
        assert_eq!(p.regression, RegressionPolicy::default());
    }

    #[test]
    fn run_and_baseline_from_history_types() {
        let s = Sample {
            at_ms: (T0 + 7) * 1000 + 250,
            duration_us: 12_500,
            status: Status::Degraded,
            reason: Reason::Assertion,
        };
        let r = Run::of_sample(&s);
        assert_eq!(r.started_at, t(7) + Duration::from_millis(250));
        assert_eq!(r.duration, Duration::from_micros(12_500));
        assert_eq!(r.sample(), s);
        let stats = WindowStats::of([s, s].iter());
        let b = Baseline::of_stats(&stats);
        assert_eq!((b.judged, b.errors, b.latency_p95_ms), (2, 0, Some(12.5)));
        let mut o = Outcome::fail(Reason::Status, "HTTP 503, expected 200");
        o.observations
            .set("status", crate::checks::Observation::Number(503.0));
        let d = RunDetail::of_outcome(&o);
        assert_eq!(d.step, None);
        assert_eq!(d.message, "HTTP 503, expected 200");
        assert_eq!(d.observed, Some(serde_json::json!({ "status": 503.0 })));
    }
}
