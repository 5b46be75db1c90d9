//! When each check runs. One sleeping task per check (cheap in tokio), so a slow check only
//! ever delays itself; a global semaphore bounds how many run at once; a deterministic
//! per-check offset spreads checks with the same interval. Missed ticks are skipped, never
//! bunched. `scheduler_lag_seconds` records how late each run started.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Schedule;
use crate::runtime::{CheckState, Runtime};

/// A liveness signal of the scheduler: bumped whenever a check loop wakes, and every
/// [`HEARTBEAT_TICK`] by the scheduler's own ticker (so an idle daemon, whose checks are all
/// far apart, still beats). The systemd watchdog is fed only while it moves
/// ([`watchdog_alive`]). Monotonic: wall-clock jumps neither stop nor fake it.
pub struct Heartbeat {
    base: Instant,
    /// Milliseconds since `base` of the last beat.
    last: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// Milliseconds after the heartbeat's creation of the last beat.
    pub fn last_millis(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// How long ago the last beat was.
    pub fn age(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_millis()))
    }
}

/// How often the scheduler's ticker beats the [`Heartbeat`] when no check wakes.
pub const HEARTBEAT_TICK: Duration = Duration::from_secs(1);

/// Whether the scheduler counts as alive with its last heartbeat `age` ago, for a systemd
/// watchdog of `interval`: a heartbeat older than the interval (and than three ticks, so a
/// short watchdog never outruns the ticker) means the scheduler is wedged, and the watchdog
/// is no longer fed, so systemd restarts the service.
pub fn watchdog_alive(age: Duration, interval: Duration) -> bool {
    age <= interval.max(HEARTBEAT_TICK * 3)
}

/// The offset of a check's first run within `spread`, stable across restarts (a hash of the
/// name, as Prometheus does for scrape targets).
pub fn start_offset(name: &str, spread: Duration) -> Duration {
    if spread.is_zero() {
        return Duration::ZERO;
    }
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    let nanos = spread.as_nanos() as u64;
    Duration::from_nanos(h.finish() % nanos.max(1))
}

/// The next due instant of an interval schedule after `due` (the last due time), skipping
/// whole intervals that have already passed at `now`.
pub fn next_interval_due(due: Instant, interval: Duration, now: Instant) -> Instant {
    let next = due + interval;
    if next > now {
        return next;
    }
    let behind = now - next;
    let skip = (behind.as_nanos() / interval.as_nanos().max(1)) as u32 + 1;
    next + interval * skip
}

/// The next cron fire time after now, as an `Instant`.
fn next_cron_due(expr: &crate::cronexpr::CronExpr) -> Option<Instant> {
    let now_wall = chrono::Local::now();
    let next = expr.next_after(&now_wall)?;
    let wait = (next - now_wall).to_std().unwrap_or(Duration::ZERO);
    Some(Instant::now() + wait)
}

/// Starts one loop per check, and the heartbeat ticker, on `tracker`; they stop when
/// `shutdown` is cancelled (a run in progress then finishes on its own, still tracked).
pub fn start(
    rt: Arc<Runtime>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    heartbeat: Arc<Heartbeat>,
) {
    let permits = Arc::new(Semaphore::new(rt.config.scheduler.concurrency));
    let spread = rt.config.scheduler.jitter;
    heartbeat.beat();
    for check in rt.checks.clone() {
        tracker.spawn(check_loop(
            rt.clone(),
            check,
            permits.clone(),
            shutdown.clone(),
            heartbeat.clone(),
            spread,
        ));
    }
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => heartbeat.beat(),
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

/// When an interval check runs first: after a reload, one interval after its last run
/// (kept with its history) so a reload does not run every check at once; else at its
/// offset within the spread.
fn first_due(check: &CheckState, every: Duration, spread: Duration) -> Instant {
    let now = Instant::now();
    let last = check
        .history
        .lock()
        .expect("not poisoned")
        .last()
        .map(|o| o.started_at);
    if let Some(last) = last {
        let since = SystemTime::now()
            .duration_since(last)
            .unwrap_or(Duration::ZERO);
        return now + every.saturating_sub(since);
    }
    now + start_offset(&check.config.name, spread.min(every))
}

async fn check_loop(
    rt: Arc<Runtime>,
    check: Arc<CheckState>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    heartbeat: Arc<Heartbeat>,
    spread: Duration,
) {
    let schedule = check.config.schedule.clone();
    let mut due = match &schedule {
        Schedule::Interval(every) => first_due(&check, *every, spread),
        Schedule::Cron(expr) => match next_cron_due(expr) {
            Some(d) => d,
            None => {
                tracing::warn!(check = %check.config.name, cron = %expr, "cron expression never fires; check not scheduled");
                return;
            }
        },
    };
    // Inside the service's post-deploy window the check runs every `deploy.interval`.
    let service = check.config.service.clone();
    let deploy_every = rt.config.deploy.interval;
    let cadence_in_window = match &schedule {
        Schedule::Interval(every) => deploy_every.min(*every),
        Schedule::Cron(_) => deploy_every,
    };
    let mut windows = rt.windows.subscribe();
    let mut last_start: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            Ok(()) = windows.changed() => {
                // A window opened: move to the post-deploy cadence now, not after the
                // current (possibly long) sleep.
                if rt.windows.is_active(&service, SystemTime::now()) {
                    let now = Instant::now();
                    let sooner = last_start.map_or(now, |t| t + cadence_in_window).max(now);
                    due = due.min(sooner);
                }
                continue;
            }
            _ = shutdown.cancelled() => return,
        }
        heartbeat.beat();
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.cancelled() => return,
        };
        let started = Instant::now();
        let lag = started.saturating_duration_since(due);
        rt.metrics.scheduler_lag_seconds.observe(lag.as_secs_f64());
        last_start = Some(started);
        rt.run_check(&check).await;
        drop(permit);
        let now = Instant::now();
        due = if rt.windows.is_active(&service, SystemTime::now()) {
            next_interval_due(due.max(started), cadence_in_window, now)
        } else {
            match &schedule {
                Schedule::Interval(every) => next_interval_due(due, *every, now),
                Schedule::Cron(expr) => match next_cron_due(expr) {
                    Some(d) => d,
                    None => return,
                },
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_and_within_the_spread() {
        let spread = Duration::from_secs(10);
        let a = start_offset("api-health", spread);
        assert_eq!(a, start_offset("api-health", spread));
        assert!(a < spread);
        assert_eq!(start_offset("x", Duration::ZERO), Duration::ZERO);
        // Different names land in different places (spreading is the point).
        let distinct: std::collections::HashSet<_> = (0..50)
            .map(|i| start_offset(&format!("check-{i}"), spread))
            .collect();
        assert!(distinct.len() > 40);
    }

    #[test]
    fn the_watchdog_is_fed_only_while_the_heartbeat_is_fresh() {
        let wd = Duration::from_secs(30);
        assert!(watchdog_alive(Duration::ZERO, wd));
        assert!(watchdog_alive(Duration::from_secs(29), wd));
        assert!(watchdog_alive(wd, wd));
        // A wedged scheduler: no beat for longer than the interval.
        assert!(!watchdog_alive(Duration::from_secs(31), wd));
        assert!(!watchdog_alive(Duration::from_secs(3600), wd));
        // A short watchdog never outruns the ticker's period.
        let short = Duration::from_millis(400);
        assert!(watchdog_alive(Duration::from_millis(1500), short));
        assert!(!watchdog_alive(
            HEARTBEAT_TICK * 3 + Duration::from_millis(1),
            short
        ));
    }

    #[test]
    fn missed_intervals_are_skipped_not_bunched() {
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(
            next_interval_due(t0, every, t0 + Duration::from_secs(1)),
            t0 + every
        );
        // A run that took 35 s: the next due time is the first one still in the future.
        assert_eq!(
            next_interval_due(t0, every, t0 + Duration::from_secs(35)),
            t0 + Duration::from_secs(40)
        );
        assert_eq!(
            next_interval_due(t0, every, t0 + Duration::from_secs(10)),
            t0 + Duration::from_secs(20)
        );
    }
}
