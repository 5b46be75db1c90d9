//! Per-check recent outcomes, kept compact: a ring of 16-byte [`Sample`]s bounded by age and
//! count, plus the last full [`Outcome`] (and the last non-passing one) for the API. Window
//! statistics (failure ratio, latency percentiles) are computed from the ring on demand.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

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
        }
    }

    /// Adds an outcome and drops what is too old or too many.
    pub fn record(&mut self, outcome: Arc<Outcome>) {
        let sample = Sample::of(&outcome);
        if self.samples.len() == self.max_samples {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        let horizon = sample
            .at_ms
            .saturating_sub(self.retention.as_millis() as u64);
        while self.samples.front().is_some_and(|s| s.at_ms < horizon) {
            self.samples.pop_front();
        }
        // Keep the ring's memory proportional to what it holds after a burst.
        if self.samples.capacity() > 64 && self.samples.capacity() > 4 * self.samples.len() {
            self.samples.shrink_to(self.samples.len() * 2);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(at_s: u64, status: Status, ms: u64) -> Arc<Outcome> {
        let mut o = Outcome::new(status, Reason::Ok, "");
        o.started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(at_s);
        o.duration = Duration::from_millis(ms);
        Arc::new(o)
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
