//! Per-check recent outcomes, kept compact: a ring of 16-byte [`Sample`]s bounded by age and
//! count, plus the last full [`Outcome`] (and the last non-passing one) for the API. Window
//! statistics (failure ratio, latency percentiles) are computed from the ring on demand.
//!
//! Numeric observations are kept only for the names a rule needs (`value:<observation>`
//! signals, see [`History::track_value`]): one 16-byte [`ValueSample`] ring per tracked name,
//! bounded like the sample ring, so a check no rule reads a value of pays nothing for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::checks::{Outcome, Reason, Status};
use crate::util::unix_millis;

/// One run, in a few bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Start of the run, milliseconds since the epoch.
    pub at_ms: u64,
    /// Run time in microseconds (saturating at ~71 minutes).
    pub duration_us: u32,
    pub status: Status,
    pub reason: Reason,
}

impl Sample {
    pub fn of(outcome: &Outcome) -> Sample {
        Sample {
            at_ms: unix_millis(outcome.started_at),
            duration_us: u32::try_from(outcome.duration.as_micros()).unwrap_or(u32::MAX),
            status: outcome.status,
            reason: outcome.reason,
        }
    }

    pub fn duration(&self) -> Duration {
        Duration::from_micros(u64::from(self.duration_us))
    }
}

/// One numeric observation of one run, for `value:<observation>` rule signals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueSample {
    /// Start of the run, milliseconds since the epoch.
    pub at_ms: u64,
    pub value: f64,
}

/// The recent values of one tracked observation.
#[derive(Debug)]
struct ValueRing {
    name: Box<str>,
    ring: VecDeque<ValueSample>,
}

/// Statistics over a trailing window of samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowStats {
    pub runs: u32,
    pub pass: u32,
    pub degraded: u32,
    pub fail: u32,
    pub error: u32,
    /// fail / (pass + degraded + fail): errors are bakewatch's own trouble, not the target's,
    /// so they count in neither numerator nor denominator. None without judged runs.
    pub failure_ratio: Option<f64>,
    /// error / runs.
    pub error_ratio: Option<f64>,
    /// Latency percentiles (nearest rank) over judged runs, in milliseconds.
    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

impl WindowStats {
    /// Computes the statistics of `samples`.
    pub fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> WindowStats {
        let mut s = WindowStats::default();
        let mut latencies: Vec<u32> = Vec::new();
        for x in samples {
            s.runs += 1;
            match x.status {
                Status::Pass => s.pass += 1,
                Status::Degraded => s.degraded += 1,
                Status::Fail => s.fail += 1,
                Status::Error => s.error += 1,
            }
            if x.status != Status::Error {
                latencies.push(x.duration_us);
            }
        }
        let judged = s.pass + s.degraded + s.fail;
        if judged > 0 {
            s.failure_ratio = Some(f64::from(s.fail) / f64::from(judged));
        }
        if s.runs > 0 {
            s.error_ratio = Some(f64::from(s.error) / f64::from(s.runs));
        }
        latencies.sort_unstable();
        let q = |p: f64| percentile(&latencies, p).map(|us| f64::from(us) / 1000.0);
        s.latency_p50_ms = q(0.50);
        s.latency_p90_ms = q(0.90);
        s.latency_p95_ms = q(0.95);
        s.latency_p99_ms = q(0.99);
        s
    }

    /// Runs that judged the target (pass, degraded, fail): every run but the errors.
    pub fn judged(&self) -> u32 {
        self.pass + self.degraded + self.fail
    }
}

/// A check's statistics over the pre-deploy period, frozen into a deployment record at
/// registration (DESIGN §5) and stored with it: the reference of the rule engine's
/// `latency_p95_ratio` / `failure_ratio_delta` signals and of the verdict's baseline
/// regression. Latencies are in milliseconds, like [`WindowStats`] and the API's
/// `baseline_p95_ms`; the `*_s()` helpers give seconds for the rule engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Baseline {
    /// Judged runs (pass, degraded, fail) the statistics stand on; errors are not counted.
    pub judged: u32,
    /// Error runs in the period: counted in none of the statistics.
    pub errors: u32,
    /// fail / judged; None without judged runs.
    pub failure_ratio: Option<f64>,
    /// Nearest-rank latency percentiles of the judged runs, in milliseconds.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

impl Baseline {
    /// From the statistics of the baseline period.
    pub fn of_stats(stats: &WindowStats) -> Baseline {
        Baseline {
            judged: stats.judged(),
            errors: stats.error,
            failure_ratio: stats.failure_ratio,
            latency_p50_ms: stats.latency_p50_ms,
            latency_p95_ms: stats.latency_p95_ms,
            latency_p99_ms: stats.latency_p99_ms,
        }
    }

    /// The statistics of `samples`.
    pub fn of_samples<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Baseline {
        Baseline::of_stats(&WindowStats::of(samples.into_iter()))
    }

    /// The baseline of the `period` before `at` (a deployment's registration): the runs that
    /// started in `[at - period, at]`, so runs after registration never leak into it.
    pub fn of(history: &History, at: SystemTime, period: Duration) -> Baseline {
        Baseline::of_samples(history.samples_in(at, period))
    }

    /// All runs of the period, errors included.
    pub fn runs(&self) -> u32 {
        self.judged.saturating_add(self.errors)
    }

    /// Latency p50 in seconds.
    pub fn latency_p50_s(&self) -> Option<f64> {
        self.latency_p50_ms.map(ms_to_s)
    }

    /// Latency p95 in seconds.
    pub fn latency_p95_s(&self) -> Option<f64> {
        self.latency_p95_ms.map(ms_to_s)
    }

    /// Latency p99 in seconds.
    pub fn latency_p99_s(&self) -> Option<f64> {
        self.latency_p99_ms.map(ms_to_s)
    }
}

fn ms_to_s(ms: f64) -> f64 {
    ms / 1000.0
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `p` of the
/// values at or below it.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The recent history of one check.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<Sample>,
    max_samples: usize,
    retention: Duration,
    consecutive_failures: u32,
    last: Option<Arc<Outcome>>,
    /// The most recent outcome that was not a pass, so its message stays visible after recovery.
    last_problem: Option<Arc<Outcome>>,
    /// Numeric observations that rules read, one ring per name (usually none or one).
    values: Vec<ValueRing>,
}

impl History {
    pub fn new(retention: Duration, max_samples: usize) -> History {
        History {
            samples: VecDeque::new(),
            max_samples,
            retention,
            consecutive_failures: 0,
            last: None,
            last_problem: None,
            values: Vec::new(),
        }
    }

    /// Applies new limits (after a reload); what is now too much or too old goes at the
    /// next record.
    pub fn set_limits(&mut self, retention: Duration, max_samples: usize) {
        self.retention = retention;
        self.max_samples = max_samples.max(1);
        while self.samples.len() > self.max_samples {
            self.samples.pop_front();
        }
        for v in &mut self.values {
            while v.ring.len() > self.max_samples {
                v.ring.pop_front();
            }
        }
    }

    /// Starts keeping the numeric observation `name` of every judged run (not `error`
    /// runs: their readings are bakewatch's own trouble). Idempotent; earlier runs are not
    /// recovered, so call it when the check's history is created or its rules change.
    pub fn track_value(&mut self, name: &str) {
        if !self.tracks_value(name) {
            self.values.push(ValueRing {
                name: name.into(),
                ring: VecDeque::new(),
            });
        }
    }

    /// Keeps exactly `names` tracked (after a reload): rings of names still wanted keep
    /// their values, the others are dropped.
    pub fn set_tracked_values<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let names: Vec<&str> = names.into_iter().collect();
        self.values.retain(|v| names.contains(&v.name.as_ref()));
        for n in names {
            self.track_value(n);
        }
    }

    /// Whether the observation `name` is being kept.
    pub fn tracks_value(&self, name: &str) -> bool {
        self.values.iter().any(|v| v.name.as_ref() == name)
    }

    /// Adds an outcome and drops what is too old or too many.
    pub fn record(&mut self, outcome: Arc<Outcome>) {
        let sample = Sample::of(&outcome);
        push_bounded(&mut self.samples, self.max_samples, sample);
        let horizon = sample
            .at_ms
            .saturating_sub(self.retention.as_millis() as u64);
        while self.samples.front().is_some_and(|s| s.at_ms < horizon) {
            self.samples.pop_front();
        }
        shrink_if_sparse(&mut self.samples);
        for v in &mut self.values {
            let reading = outcome
                .observations
                .get(&v.name)
                .and_then(|o| o.as_f64())
                .filter(|x| x.is_finite());
            if let Some(value) = reading
                && outcome.status != Status::Error
            {
                let value = ValueSample {
                    at_ms: sample.at_ms,
                    value,
                };
                push_bounded(&mut v.ring, self.max_samples, value);
            }
            while v.ring.front().is_some_and(|s| s.at_ms < horizon) {
                v.ring.pop_front();
            }
            shrink_if_sparse(&mut v.ring);
        }
        match outcome.status {
            Status::Fail => self.consecutive_failures += 1,
            Status::Pass | Status::Degraded => self.consecutive_failures = 0,
            // An error says nothing about the target: the streak neither grows nor resets.
            Status::Error => {}
        }
        if outcome.status != Status::Pass {
            self.last_problem = Some(outcome.clone());
        }
        self.last = Some(outcome);
    }

    /// Puts back samples kept in the store (oldest first), so window statistics and frozen
    /// baselines survive a restart. Full outcomes are not kept across restarts.
    pub fn restore(&mut self, samples: impl IntoIterator<Item = Sample>) {
        for sample in samples {
            push_bounded(&mut self.samples, self.max_samples, sample);
            match sample.status {
                Status::Fail => self.consecutive_failures += 1,
                Status::Pass | Status::Degraded => self.consecutive_failures = 0,
                Status::Error => {}
            }
        }
    }

    pub fn last(&self) -> Option<&Arc<Outcome>> {
        self.last.as_ref()
    }

    pub fn last_problem(&self) -> Option<&Arc<Outcome>> {
        self.last_problem.as_ref()
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The newest `n` samples, newest first.
    pub fn recent(&self, n: usize) -> impl Iterator<Item = &Sample> {
        self.samples.iter().rev().take(n)
    }

    /// Statistics over the samples that started within `over` before `now`.
    pub fn window(&self, now: SystemTime, over: Duration) -> WindowStats {
        let from = unix_millis(now).saturating_sub(over.as_millis() as u64);
        WindowStats::of(self.samples.iter().filter(|s| s.at_ms >= from))
    }

    /// The samples that started in `[now - over, now]`, oldest first.
    pub fn samples_in(&self, now: SystemTime, over: Duration) -> impl Iterator<Item = &Sample> {
        let (from, to) = span_ms(now, over);
        self.samples
            .iter()
            .filter(move |s| (from..=to).contains(&s.at_ms))
    }

    /// The values of the tracked observation `name` from runs started in `[now - over, now]`,
    /// oldest first; empty when `name` is not tracked.
    pub fn values_in(
        &self,
        name: &str,
        now: SystemTime,
        over: Duration,
    ) -> impl Iterator<Item = &ValueSample> {
        let (from, to) = span_ms(now, over);
        self.values
            .iter()
            .filter(move |v| v.name.as_ref() == name)
            .flat_map(|v| v.ring.iter())
            .filter(move |s| (from..=to).contains(&s.at_ms))
    }
}

fn span_ms(now: SystemTime, over: Duration) -> (u64, u64) {
    let to = unix_millis(now);
    (to.saturating_sub(over.as_millis() as u64), to)
}

/// Samples a full ring grows by. A ring fills for as long as the retention (two hours of
/// 10 s runs are 720 samples): grown by doubling it would end at 1,024 slots, 30 % of them
/// never used; grown by this step it ends within one step of what it holds.
const RING_STEP: usize = 64;

/// Appends `item`, dropping the oldest first when the ring holds `max`.
fn push_bounded<T>(ring: &mut VecDeque<T>, max: usize, item: T) {
    while ring.len() >= max.max(1) {
        ring.pop_front();
    }
    if ring.len() == ring.capacity() {
        ring.reserve_exact(RING_STEP.min(max - ring.len()).max(1));
    }
    ring.push_back(item);
}

/// Keeps a ring's memory proportional to what it holds after a burst.
fn shrink_if_sparse<T>(ring: &mut VecDeque<T>) {
    if ring.capacity() > 64 && ring.capacity() > 4 * ring.len() {
        ring.shrink_to(ring.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Observation;

    fn outcome(at_s: u64, status: Status, ms: u64) -> Arc<Outcome> {
        let mut o = Outcome::new(status, Reason::Ok, "");
        o.started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(at_s);
        o.duration = Duration::from_millis(ms);
        Arc::new(o)
    }

    #[test]
    fn a_filling_ring_grows_by_steps_not_by_doubling() {
        // Two hours of a 10 s check under the default limits.
        let mut h = History::new(Duration::from_secs(7200), 4096);
        h.track_value("x");
        for i in 0..720u64 {
            let mut o = Outcome::new(Status::Pass, Reason::Ok, "");
            o.started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + 10 * i);
            o.observations.set("x", Observation::Number(i as f64));
            h.record(Arc::new(o));
        }
        assert_eq!(h.len(), 720);
        assert!(
            h.samples.capacity() < 720 + RING_STEP,
            "{}",
            h.samples.capacity()
        );
        assert_eq!(h.values[0].ring.len(), 720);
        assert!(h.values[0].ring.capacity() < 720 + RING_STEP);
        // A ring at its count bound stays there.
        let mut h = History::new(Duration::from_secs(7200), 100);
        for i in 0..1000 {
            h.record(outcome(1_000_000 + i, Status::Pass, 1));
        }
        assert_eq!(h.len(), 100);
        assert!(h.samples.capacity() < 100 + RING_STEP);
    }

    #[test]
    fn sample_is_compact() {
        assert!(std::mem::size_of::<Sample>() <= 16);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(95));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn window_counts_only_recent_runs_and_ignores_errors_in_ratio() {
        let mut h = History::new(Duration::from_secs(3600), 1000);
        for i in 0..10 {
            h.record(outcome(1000 + i, Status::Pass, 10 + i));
        }
        h.record(outcome(1010, Status::Fail, 100));
        h.record(outcome(1011, Status::Error, 5));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1012);
        let all = h.window(now, Duration::from_secs(60));
        assert_eq!((all.runs, all.pass, all.fail, all.error), (12, 10, 1, 1));
        assert_eq!(all.failure_ratio, Some(1.0 / 11.0));
        assert_eq!(all.latency_p50_ms, Some(15.0));
        assert_eq!(all.latency_p99_ms, Some(100.0));
        // Only the last 3 seconds: runs at 1009, 1010, 1011.
        let recent = h.window(now, Duration::from_secs(3));
        assert_eq!(recent.runs, 3);
        assert_eq!(recent.failure_ratio, Some(0.5));
    }

    #[test]
    fn consecutive_failures_reset_on_pass_and_ignore_errors() {
        let mut h = History::new(Duration::from_secs(3600), 100);
        h.record(outcome(1, Status::Fail, 1));
        h.record(outcome(2, Status::Error, 1));
        h.record(outcome(3, Status::Fail, 1));
        assert_eq!(h.consecutive_failures(), 2);
        h.record(outcome(4, Status::Degraded, 1));
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.last_problem().unwrap().status, Status::Degraded);
    }

    fn with_value(at_s: u64, status: Status, name: &'static str, v: Observation) -> Arc<Outcome> {
        let mut o = Outcome::new(status, Reason::Ok, "");
        o.started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(at_s);
        o.observations.set(name, v);
        Arc::new(o)
    }

    #[test]
    fn value_sample_is_compact() {
        assert!(std::mem::size_of::<ValueSample>() <= 16);
    }

    #[test]
    fn only_tracked_numeric_values_of_judged_runs_are_kept() {
        let mut h = History::new(Duration::from_secs(3600), 100);
        h.record(with_value(
            1,
            Status::Pass,
            "value",
            Observation::Number(1.0),
        ));
        assert!(!h.tracks_value("value"));
        h.track_value("value");
        h.track_value("value");
        h.record(with_value(
            2,
            Status::Pass,
            "value",
            Observation::Number(2.0),
        ));
        h.record(with_value(
            3,
            Status::Fail,
            "value",
            Observation::Text(" 3.5 ".into()),
        ));
        h.record(with_value(
            4,
            Status::Error,
            "value",
            Observation::Number(99.0),
        ));
        h.record(with_value(
            5,
            Status::Pass,
            "value",
            Observation::Text("n/a".into()),
        ));
        h.record(with_value(
            6,
            Status::Pass,
            "rows",
            Observation::Number(7.0),
        ));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let got: Vec<f64> = h
            .values_in("value", now, Duration::from_secs(60))
            .map(|v| v.value)
            .collect();
        assert_eq!(got, vec![2.0, 3.5]);
        assert_eq!(h.values_in("rows", now, Duration::from_secs(60)).count(), 0);
        // Only runs inside the window count.
        let recent = h.values_in("value", now, Duration::from_secs(7)).count();
        assert_eq!(recent, 1);
    }

    #[test]
    fn value_rings_are_bounded_and_follow_the_tracked_set() {
        let mut h = History::new(Duration::from_secs(100), 10);
        h.set_tracked_values(["a", "b"]);
        for i in 0..30 {
            let mut o = Outcome::pass("");
            o.started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(i);
            o.observations.set("a", Observation::Number(i as f64));
            o.observations.set("b", Observation::Bool(true));
            h.record(Arc::new(o));
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(30);
        let all = Duration::from_secs(1000);
        assert_eq!(h.values_in("a", now, all).count(), 10);
        assert_eq!(h.values_in("a", now, all).next().unwrap().value, 20.0);
        h.set_tracked_values(["a"]);
        assert!(h.tracks_value("a") && !h.tracks_value("b"));
        assert_eq!(
            h.values_in("a", now, all).count(),
            10,
            "kept across a reload"
        );
        h.record(with_value(
            1000,
            Status::Pass,
            "x",
            Observation::Number(0.0),
        ));
        assert_eq!(h.values_in("a", now, all).count(), 0, "aged out");
    }

    #[test]
    fn samples_in_is_bounded_on_both_sides() {
        let mut h = History::new(Duration::from_secs(3600), 100);
        for i in 0..10 {
            h.record(outcome(100 + i, Status::Pass, 1));
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(105);
        let ats: Vec<u64> = h
            .samples_in(now, Duration::from_secs(2))
            .map(|s| s.at_ms / 1000)
            .collect();
        assert_eq!(ats, vec![103, 104, 105]);
    }

    #[test]
    fn ring_is_bounded_by_count_and_age() {
        let mut h = History::new(Duration::from_secs(100), 50);
        for i in 0..80 {
            h.record(outcome(i, Status::Pass, 1));
        }
        assert_eq!(h.len(), 50);
        h.record(outcome(1000, Status::Pass, 1));
        assert_eq!(h.len(), 1, "samples older than the retention are dropped");
    }
}
