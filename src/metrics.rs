//! Every metric family of DESIGN §7 that exists so far, defined here and nowhere else.
//!
//! Two kinds of storage, one exposition:
//! - the per-check families (`check_*`, `cert_expiry_timestamp_seconds`, `journey_step_*`)
//!   live in [`CheckMetrics`]: plain atomics per check, created once per check (and shared by
//!   the next generation after a reload), so recording an outcome touches atomics only;
//!   [`Metrics::render`] writes them straight into the text exposition with label strings
//!   escaped once, because with thousands of checks they are nearly all of `/metrics`
//!   (10,000 checks: about 280,000 samples) and the `prometheus` crate's gather step
//!   allocates several strings per sample;
//! - the daemon-wide families (scheduler lag, deployments, verdicts, alerts, notifications,
//!   reloads, build info) are `prometheus` crate collectors in a registry, encoded by its
//!   `TextEncoder`.
//!
//! Families come out sorted by name and series sorted by their label values in label-name
//! order, as the `prometheus` crate's registry does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::checks::outcome::StepStatus;
use crate::checks::{Outcome, Reason, Status};

/// Buckets for check and scheduler durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets for how late runs start: fine between 5 and 100 ms, where a scheduler under load
/// sits and where its goal (p99 < 50 ms) has to be read off.
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0, 5.0,
];

/// The observation (Unix seconds) that feeds `cert_expiry_timestamp_seconds` rather than
/// `check_value`: set by the `tls` check and by `http` checks over https.
pub const CERT_EXPIRY_OBSERVATION: &str = "cert_expiry_timestamp";

const PREFIX: &str = "bakewatch_";

/// The registry of the daemon-wide families, and the per-check series.
pub struct Metrics {
    registry: Registry,
    /// Per-check series by (check, service, type): what the per-check families render.
    checks: Mutex<BTreeMap<SeriesKey, Arc<CheckSeries>>>,
    /// `,le="…"} ` of each [`DURATION_BUCKETS`] bound, formatted once.
    duration_les: Vec<String>,
    /// Size of the last exposition, to size the next one's buffer.
    last_len: AtomicUsize,
    pub scheduler_lag_seconds: Histogram,
    /// 1 while a service is inside its post-deploy window.
    pub deployment_window_active: GaugeVec,
    /// 1 for the current deployment of each service (old label sets are removed).
    pub deployment_info: GaugeVec,
    /// State set: 1 for the current deployment's verdict, 0 for the others.
    pub verdict: GaugeVec,
    /// Alert instances by rule, severity and state (pending, firing).
    pub alerts: GaugeVec,
    /// Delivery attempts by notifier and result: sent, failed (will retry), dropped (given
    /// up: too old or rejected).
    pub notifications_total: IntCounterVec,
    /// Notifications waiting in the outbox, by notifier.
    pub notification_queue_depth: GaugeVec,
    pub config_last_reload_successful: Gauge,
    pub config_last_reload_success_timestamp_seconds: Gauge,
}

type SeriesKey = (String, String, &'static str);

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("bakewatch".into()), None).expect("static prefix is valid");
        let m = Metrics {
            checks: Mutex::new(BTreeMap::new()),
            duration_les: DURATION_BUCKETS
                .iter()
                .map(|b| format!(",le=\"{}\"}} ", fmt_f64(*b)))
                .collect(),
            last_len: AtomicUsize::new(16 * 1024),
            deployment_window_active: GaugeVec::new(
                opts("deployment_window_active", "1 while the service is inside its post-deploy window."),
                &["service"],
            )
            .expect("valid metric"),
            deployment_info: GaugeVec::new(
                opts("deployment_info", "The current deployment of each service; always 1."),
                &["service", "environment", "version", "id"],
            )
            .expect("valid metric"),
            verdict: GaugeVec::new(
                opts("verdict", "Verdict of the service's current deployment, as a state set."),
                &["service", "verdict"],
            )
            .expect("valid metric"),
            alerts: GaugeVec::new(
                opts("alerts", "Alert instances by rule, severity and state."),
                &["rule", "severity", "state"],
            )
            .expect("valid metric"),
            notifications_total: IntCounterVec::new(
                opts(
                    "notifications_total",
                    "Notification delivery attempts by notifier and result (sent, failed, dropped).",
                ),
                &["notifier", "result"],
            )
            .expect("valid metric"),
            notification_queue_depth: GaugeVec::new(
                opts(
                    "notification_queue_depth",
                    "Notifications waiting in the outbox, by notifier.",
                ),
                &["notifier"],
            )
            .expect("valid metric"),
            scheduler_lag_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "scheduler_lag_seconds",
                    "How late check runs started after they were due.",
                )
                .buckets(LAG_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            config_last_reload_successful: Gauge::with_opts(opts(
                "config_last_reload_successful",
                "1 when the last config load or reload succeeded.",
            ))
            .expect("valid metric"),
            config_last_reload_success_timestamp_seconds: Gauge::with_opts(opts(
                "config_last_reload_success_timestamp_seconds",
                "Time of the last successful config load or reload, Unix seconds.",
            ))
            .expect("valid metric"),
            registry,
        };
        let build_info = GaugeVec::new(
            opts("build_info", "Build of this bakewatch; always 1."),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("BAKEWATCH_REVISION").unwrap_or("unknown"),
            ])
            .set(1.0);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.scheduler_lag_seconds.clone()),
            Box::new(m.deployment_window_active.clone()),
            Box::new(m.deployment_info.clone()),
            Box::new(m.verdict.clone()),
            Box::new(m.alerts.clone()),
            Box::new(m.notifications_total.clone()),
            Box::new(m.notification_queue_depth.clone()),
            Box::new(m.config_last_reload_successful.clone()),
            Box::new(m.config_last_reload_success_timestamp_seconds.clone()),
            Box::new(build_info),
        ];
        for c in collectors {
            m.registry.register(c).expect("each family registered once");
        }
        m
    }

    /// The series of one check. Counters and the histogram appear at once with zero values;
    /// `check_success`, `check_degraded` and the last-run time only after the first run, so
    /// a restart never reports a check as failing before it has run. A check that keeps its
    /// name, service and type across a reload keeps its series (the same handles).
    pub fn for_check(&self, check: &str, service: &str, kind: &'static str) -> CheckMetrics {
        let key = (check.to_string(), service.to_string(), kind);
        let mut checks = self.checks.lock().expect("not poisoned");
        let series = checks
            .entry(key)
            .or_insert_with(|| Arc::new(CheckSeries::new(check, service, kind)))
            .clone();
        CheckMetrics { series }
    }

    /// Removes every series of a check (when a reload drops it).
    pub fn remove_check(&self, m: &CheckMetrics) {
        let s = &m.series;
        let key = (s.name.clone(), s.service_name.clone(), s.kind);
        let mut checks = self.checks.lock().expect("not poisoned");
        if checks.get(&key).is_some_and(|c| Arc::ptr_eq(c, s)) {
            checks.remove(&key);
        }
    }

    /// The Prometheus text exposition of everything, in one string.
    pub fn render(&self) -> String {
        let mut exposition = self.exposition();
        let mut out = String::with_capacity(self.last_len.load(Ordering::Relaxed) / 8 * 9);
        while exposition.write_part(&mut out, usize::MAX) {}
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }

    /// The same exposition as an HTTP body written as it is sent, in parts of about
    /// [`BODY_PART`] bytes: with thousands of checks the text is tens of MiB, and one buffer
    /// that size per scrape costs the daemon its size again in memory the allocator keeps
    /// (glibc raises its mmap threshold after the first free, so later buffers come from,
    /// and stay in, the heap); parts also let other tasks run between them.
    pub fn render_body(&self) -> axum::body::Body {
        let stream = futures_util::stream::unfold(self.exposition(), |mut e| async move {
            let mut part = String::with_capacity(BODY_PART + BODY_PART / 2);
            // Families without samples write nothing: no empty parts.
            while part.is_empty() {
                if !e.write_part(&mut part, BODY_PART) {
                    return None;
                }
            }
            Some((Ok::<_, std::convert::Infallible>(part), e))
        });
        axum::body::Body::from_stream(stream)
    }

    /// A snapshot of the series, and the families in name order.
    fn exposition(&self) -> Exposition {
        let checks: Vec<Arc<CheckSeries>> = self
            .checks
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect();
        let mut registered = self.registry.gather().into_iter().peekable();
        let mut parts = Vec::new();
        for family in PER_CHECK {
            // The registry's families that sort before this one first.
            while let Some(f) = registered
                .next_if(|f| f.name().strip_prefix(PREFIX).unwrap_or(f.name()) < family.name)
            {
                parts.push(Part::Registered(f));
            }
            parts.push(Part::PerCheck(family));
        }
        parts.extend(registered.map(Part::Registered));
        Exposition {
            parts,
            checks,
            les: self.duration_les.clone(),
            part: 0,
            next_check: 0,
            started: false,
        }
    }
}

/// About how many bytes each part of a streamed exposition holds. A part stays well below
/// glibc's mmap threshold (128 KiB): a freed buffer above it raises the threshold, and from
/// then on such buffers come from (and stay in) the heap.
const BODY_PART: usize = 64 * 1024;
/// Checks of a per-check family written at a time: a check's duration histogram is ~2 KiB,
/// so a part ends at most ~32 KiB past [`BODY_PART`].
const CHECKS_PER_STEP: usize = 16;

/// One family of the exposition.
enum Part {
    Registered(MetricFamily),
    PerCheck(&'static Family),
}

/// An exposition being written: where it is.
struct Exposition {
    parts: Vec<Part>,
    checks: Vec<Arc<CheckSeries>>,
    les: Vec<String>,
    /// The family being written, and its next check.
    part: usize,
    next_check: usize,
    /// Whether that family's header is written.
    started: bool,
}

impl Exposition {
    /// Appends the next part, about `size` bytes or more (a family of the registry, or up to
    /// [`CHECKS_PER_STEP`] checks of a per-check family, at a time); false when everything
    /// was written.
    fn write_part(&mut self, out: &mut String, size: usize) -> bool {
        if self.part >= self.parts.len() {
            return false;
        }
        let start = out.len();
        while out.len() - start < size && self.part < self.parts.len() {
            match &self.parts[self.part] {
                Part::Registered(f) => {
                    encode_family(f, out);
                    self.part += 1;
                }
                Part::PerCheck(family) => {
                    let end = (self.next_check + CHECKS_PER_STEP).min(self.checks.len());
                    let checks = &self.checks[self.next_check..end];
                    family.render(checks, &self.les, out, &mut self.started);
                    self.next_check = end;
                    if end == self.checks.len() {
                        self.part += 1;
                        self.next_check = 0;
                        self.started = false;
                    }
                }
            }
        }
        true
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn encode_family(f: &MetricFamily, out: &mut String) {
    TextEncoder::new()
        .encode_utf8(std::slice::from_ref(f), out)
        .expect("text encoding of valid metrics cannot fail");
}

// ---------------------------------------------------------------------------------------------
// Per-check storage

/// An f64 gauge that may not exist yet.
struct Cell(AtomicU64);

/// The bits of "no value yet": a NaN no arithmetic produces (set() stores the canonical NaN).
const UNSET: u64 = 0x7ff8_0000_dead_beef;

impl Cell {
    fn unset() -> Cell {
        Cell(AtomicU64::new(UNSET))
    }

    fn set(&self, v: f64) {
        let v = if v.is_nan() { f64::NAN } else { v };
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    fn get(&self) -> Option<f64> {
        let bits = self.0.load(Ordering::Relaxed);
        (bits != UNSET).then(|| f64::from_bits(bits))
    }
}

/// A histogram over fixed bounds: one counter per bucket (the last one past the largest
/// bound) and the sum. The count is the total of the buckets, so it always matches them.
struct Hist {
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Hist {
    fn new(bounds: &[f64]) -> Hist {
        Hist {
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn observe(&self, bounds: &[f64], v: f64) {
        let i = if v.is_nan() {
            bounds.len()
        } else {
            bounds.partition_point(|b| *b < v)
        };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + v).to_bits();
            match self
                .sum
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// The series of one journey step.
struct StepSeries {
    /// `check="…",service="…",step="…"`, escaped.
    labels: String,
    duration: Hist,
    success: Cell,
}

/// Everything recorded for one check.
struct CheckSeries {
    name: String,
    service_name: String,
    kind: &'static str,
    /// `check="…"`, `service="…"`, `type="…"`: escaped once.
    check_label: String,
    service_label: String,
    type_label: String,
    /// `check="…",service="…"` and `check="…",service="…",type="…"`.
    check_service: String,
    labels: String,
    success: Cell,
    degraded: Cell,
    last_run: Cell,
    /// Indexed like [`Status::ALL`].
    runs: [AtomicU64; 4],
    /// Indexed like [`Reason::ALL`]; a series appears with its first failure.
    failures: [AtomicU64; 13],
    duration: Hist,
    /// `check_value` by observation name, created on first sight.
    values: Mutex<BTreeMap<String, f64>>,
    cert_expiry: Cell,
    /// Journey step series by step name, created on first sight.
    steps: Mutex<BTreeMap<String, StepSeries>>,
}

impl CheckSeries {
    fn new(check: &str, service: &str, kind: &'static str) -> CheckSeries {
        CheckSeries {
            name: check.to_string(),
            service_name: service.to_string(),
            kind,
            check_label: label("check", check),
            service_label: label("service", service),
            type_label: label("type", kind),
            check_service: format!("{},{}", label("check", check), label("service", service)),
            labels: format!(
                "{},{},{}",
                label("check", check),
                label("service", service),
                label("type", kind)
            ),
            success: Cell::unset(),
            degraded: Cell::unset(),
            last_run: Cell::unset(),
            runs: Default::default(),
            failures: Default::default(),
            duration: Hist::new(DURATION_BUCKETS),
            values: Mutex::new(BTreeMap::new()),
            cert_expiry: Cell::unset(),
            steps: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The series of one check, resolved once (see [`Metrics::for_check`]).
pub struct CheckMetrics {
    series: Arc<CheckSeries>,
}

impl CheckMetrics {
    fn record_steps(&self, o: &Outcome) {
        let mut steps = self.series.steps.lock().expect("not poisoned");
        for r in &o.steps {
            let step = match steps.get(&r.name) {
                Some(s) => s,
                None => steps.entry(r.name.clone()).or_insert_with(|| StepSeries {
                    labels: format!("{},{}", self.series.check_service, label("step", &r.name)),
                    duration: Hist::new(DURATION_BUCKETS),
                    success: Cell::unset(),
                }),
            };
            let ok = matches!(r.status, StepStatus::Pass | StepStatus::Degraded);
            step.success.set(if ok { 1.0 } else { 0.0 });
            if r.status != StepStatus::Skipped {
                step.duration
                    .observe(DURATION_BUCKETS, r.duration_ms / 1000.0);
            }
        }
    }

    /// Records one outcome.
    pub fn record(&self, o: &Outcome) {
        let s = &self.series;
        s.success.set(if o.status.is_success() { 1.0 } else { 0.0 });
        s.degraded.set(if o.status == Status::Degraded {
            1.0
        } else {
            0.0
        });
        s.last_run.set(crate::util::unix_seconds(o.started_at));
        let si = Status::ALL
            .iter()
            .position(|x| *x == o.status)
            .expect("status in ALL");
        s.runs[si].fetch_add(1, Ordering::Relaxed);
        if matches!(o.status, Status::Fail | Status::Error) {
            let ri = Reason::ALL
                .iter()
                .position(|r| *r == o.reason)
                .expect("reason in ALL");
            s.failures[ri].fetch_add(1, Ordering::Relaxed);
        }
        s.duration
            .observe(DURATION_BUCKETS, o.duration.as_secs_f64());
        if !o.steps.is_empty() {
            self.record_steps(o);
        }
        if o.observations.iter().any(|(_, v)| v.as_f64().is_some()) {
            let mut values = s.values.lock().expect("not poisoned");
            for (name, v) in o.observations.iter() {
                let Some(x) = v.as_f64() else { continue };
                if name == CERT_EXPIRY_OBSERVATION {
                    s.cert_expiry.set(x);
                    continue;
                }
                match values.get_mut(name.as_ref()) {
                    Some(slot) => *slot = x,
                    None => {
                        values.insert(name.to_string(), x);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The text exposition of the per-check families

/// How a per-check family writes: (family, checks, `le` suffixes, output, header written).
type RenderFn = fn(&Family, &[Arc<CheckSeries>], &[String], &mut String, &mut bool);

struct Family {
    /// Without the `bakewatch_` prefix.
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    /// Writes the samples of `checks` (a slice of all of them: an exposition may be written in
    /// parts); the family's header goes before its first sample, once: `started` says whether
    /// it has been written.
    render: RenderFn,
}

/// Sorted by name.
const PER_CHECK: &[Family] = &[
    Family {
        name: "cert_expiry_timestamp_seconds",
        help: "Expiry (notAfter) of the certificate the check's target presented, Unix seconds.",
        kind: "gauge",
        render: |f, checks, _, out, started| {
            // Labels: check, service.
            let series = f.series_head("");
            f.gauges(checks, out, started, |c, out, head| {
                if let Some(v) = c.cert_expiry.get() {
                    head(out);
                    sample(out, &series, &c.check_service, v);
                }
            });
        },
    },
    Family {
        name: "check_degraded",
        help: "1 when the check's last outcome was degraded (a warn assertion failed).",
        kind: "gauge",
        render: |f, checks, _, out, started| f.cell(checks, out, started, |c| &c.degraded),
    },
    Family {
        name: "check_duration_seconds",
        help: "Duration of check runs.",
        kind: "histogram",
        render: |f, checks, les, out, started| {
            f.start(checks, out, started);
            let heads = HistHeads::new(f.name);
            for c in checks {
                histogram(out, &heads, &c.labels, les, &c.duration);
            }
        },
    },
    Family {
        name: "check_failures_total",
        help: "Failed or errored check runs by reason.",
        kind: "counter",
        render: |f, checks, _, out, started| {
            // Labels: check, reason, service, type; reasons in name order.
            f.gauges(checks, out, started, |c, out, head| {
                for &ri in REASONS_BY_NAME.iter() {
                    let n = c.failures[ri].load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    head(out);
                    out.push_str(PREFIX);
                    out.push_str(f.name);
                    out.push('{');
                    out.push_str(&c.check_label);
                    out.push_str(",reason=\"");
                    out.push_str(Reason::ALL[ri].as_str());
                    out.push_str("\",");
                    out.push_str(&c.service_label);
                    out.push(',');
                    out.push_str(&c.type_label);
                    out.push_str("} ");
                    push_u64(out, n);
                    out.push('\n');
                }
            });
        },
    },
    Family {
        name: "check_last_run_timestamp_seconds",
        help: "Start time of the check's last run, Unix seconds.",
        kind: "gauge",
        render: |f, checks, _, out, started| f.cell(checks, out, started, |c| &c.last_run),
    },
    Family {
        name: "check_runs_total",
        help: "Check runs by outcome status.",
        kind: "counter",
        render: |f, checks, _, out, started| {
            f.start(checks, out, started);
            // Labels: check, service, status, type; statuses in name order.
            let head = f.series_head("");
            let statuses: Vec<String> = Status::ALL
                .iter()
                .map(|s| format!(",status=\"{}\",", s.as_str()))
                .collect();
            for c in checks {
                for &si in STATUSES_BY_NAME.iter() {
                    out.push_str(&head);
                    out.push_str(&c.check_service);
                    out.push_str(&statuses[si]);
                    out.push_str(&c.type_label);
                    out.push_str("} ");
                    push_u64(out, c.runs[si].load(Ordering::Relaxed));
                    out.push('\n');
                }
            }
        },
    },
    Family {
        name: "check_success",
        help: "1 when the check's last outcome was pass or degraded, else 0.",
        kind: "gauge",
        render: |f, checks, _, out, started| f.cell(checks, out, started, |c| &c.success),
    },
    Family {
        name: "check_value",
        help: "Numeric observations of the check's last run.",
        kind: "gauge",
        render: |f, checks, _, out, started| {
            // Labels: check, observation, service.
            f.gauges(checks, out, started, |c, out, head| {
                let values = c.values.lock().expect("not poisoned");
                for (name, v) in values.iter() {
                    head(out);
                    out.push_str(PREFIX);
                    out.push_str(f.name);
                    out.push('{');
                    out.push_str(&c.check_label);
                    out.push_str(",observation=\"");
                    push_escaped(out, name);
                    out.push_str("\",");
                    out.push_str(&c.service_label);
                    out.push_str("} ");
                    push_f64(out, *v);
                    out.push('\n');
                }
            });
        },
    },
    Family {
        name: "journey_step_duration_seconds",
        help: "Duration of journey steps, retries included.",
        kind: "histogram",
        render: |f, checks, les, out, started| {
            // Labels: check, service, step.
            let heads = HistHeads::new(f.name);
            f.gauges(checks, out, started, |c, out, head| {
                let steps = c.steps.lock().expect("not poisoned");
                for s in steps.values() {
                    head(out);
                    histogram(out, &heads, &s.labels, les, &s.duration);
                }
            });
        },
    },
    Family {
        name: "journey_step_success",
        help: "1 when the journey step passed (or degraded) in the last run, 0 when it failed or was skipped.",
        kind: "gauge",
        render: |f, checks, _, out, started| {
            let series = f.series_head("");
            f.gauges(checks, out, started, |c, out, head| {
                let steps = c.steps.lock().expect("not poisoned");
                for s in steps.values() {
                    if let Some(v) = s.success.get() {
                        head(out);
                        sample(out, &series, &s.labels, v);
                    }
                }
            });
        },
    },
];

/// Indices into [`Status::ALL`] / [`Reason::ALL`] in label-value order (how the series of a
/// family sort).
const STATUSES_BY_NAME: [usize; 4] = sorted_indices(&["pass", "degraded", "fail", "error"]);
const REASONS_BY_NAME: [usize; 13] = sorted_indices(&[
    "ok",
    "dns",
    "connect",
    "tls",
    "timeout",
    "status",
    "assertion",
    "query",
    "auth",
    "protocol",
    "no_data",
    "config",
    "internal",
]);

/// The indices of `names` in byte order (a selection sort: compile time, a dozen names).
const fn sorted_indices<const N: usize>(names: &[&str; N]) -> [usize; N] {
    const fn less(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let mut i = 0;
        while i < a.len() && i < b.len() {
            if a[i] != b[i] {
                return a[i] < b[i];
            }
            i += 1;
        }
        a.len() < b.len()
    }
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = i;
        i += 1;
    }
    let mut i = 0;
    while i < N {
        let mut min = i;
        let mut j = i + 1;
        while j < N {
            if less(names[out[j]], names[out[min]]) {
                min = j;
            }
            j += 1;
        }
        let t = out[i];
        out[i] = out[min];
        out[min] = t;
        i += 1;
    }
    out
}

impl Family {
    fn head(&self, out: &mut String) {
        out.push_str("# HELP ");
        out.push_str(PREFIX);
        out.push_str(self.name);
        out.push(' ');
        out.push_str(self.help);
        out.push_str("\n# TYPE ");
        out.push_str(PREFIX);
        out.push_str(self.name);
        out.push(' ');
        out.push_str(self.kind);
        out.push('\n');
    }

    /// `bakewatch_<name><suffix>{`.
    fn series_head(&self, suffix: &str) -> String {
        format!("{PREFIX}{}{suffix}{{", self.name)
    }

    fn render(
        &self,
        checks: &[Arc<CheckSeries>],
        les: &[String],
        out: &mut String,
        started: &mut bool,
    ) {
        (self.render)(self, checks, les, out, started);
    }

    /// The header of a family every check has samples in, before the first one.
    fn start(&self, checks: &[Arc<CheckSeries>], out: &mut String, started: &mut bool) {
        if !checks.is_empty() && !*started {
            *started = true;
            self.head(out);
        }
    }

    /// Calls `each` for every check with a `head` function that writes the family's header
    /// before the first sample (a family without samples writes nothing, as the registry
    /// leaves out empty families).
    fn gauges(
        &self,
        checks: &[Arc<CheckSeries>],
        out: &mut String,
        started: &mut bool,
        mut each: impl FnMut(&CheckSeries, &mut String, &mut dyn FnMut(&mut String)),
    ) {
        let mut head = |out: &mut String| {
            if !*started {
                *started = true;
                self.head(out);
            }
        };
        for c in checks {
            each(c, out, &mut head);
        }
    }

    /// A gauge family with the check, service and type labels, from one cell per check.
    fn cell(
        &self,
        checks: &[Arc<CheckSeries>],
        out: &mut String,
        started: &mut bool,
        cell: impl Fn(&CheckSeries) -> &Cell,
    ) {
        let series = self.series_head("");
        self.gauges(checks, out, started, |c, out, head| {
            if let Some(v) = cell(c).get() {
                head(out);
                sample(out, &series, &c.labels, v);
            }
        });
    }
}

/// `<series><labels>} <v>`, where `series` is `bakewatch_<name>{`.
fn sample(out: &mut String, series: &str, labels: &str, v: f64) {
    out.push_str(series);
    out.push_str(labels);
    out.push_str("} ");
    push_f64(out, v);
    out.push('\n');
}

/// `bakewatch_<name>_bucket{`, `…_sum{`, `…_count{`.
struct HistHeads {
    bucket: String,
    sum: String,
    count: String,
}

impl HistHeads {
    fn new(name: &str) -> HistHeads {
        HistHeads {
            bucket: format!("{PREFIX}{name}_bucket{{"),
            sum: format!("{PREFIX}{name}_sum{{"),
            count: format!("{PREFIX}{name}_count{{"),
        }
    }
}

/// A histogram's samples: cumulative buckets (`les` are the `,le="…"} ` suffixes), `+Inf`,
/// sum and count.
fn histogram(out: &mut String, heads: &HistHeads, labels: &str, les: &[String], h: &Hist) {
    let mut cumulative = 0;
    for (i, le) in les.iter().enumerate() {
        cumulative += h.counts[i].load(Ordering::Relaxed);
        out.push_str(&heads.bucket);
        out.push_str(labels);
        out.push_str(le);
        push_u64(out, cumulative);
        out.push('\n');
    }
    cumulative += h.counts[les.len()].load(Ordering::Relaxed);
    out.push_str(&heads.bucket);
    out.push_str(labels);
    out.push_str(",le=\"+Inf\"} ");
    push_u64(out, cumulative);
    out.push('\n');
    out.push_str(&heads.sum);
    out.push_str(labels);
    out.push_str("} ");
    push_f64(out, f64::from_bits(h.sum.load(Ordering::Relaxed)));
    out.push('\n');
    out.push_str(&heads.count);
    out.push_str(labels);
    out.push_str("} ");
    push_u64(out, cumulative);
    out.push('\n');
}

/// `name="value"` with the value escaped for the text format.
fn label(name: &str, value: &str) -> String {
    let mut s = String::with_capacity(name.len() + value.len() + 3);
    s.push_str(name);
    s.push_str("=\"");
    push_escaped(&mut s, value);
    s.push('"');
    s
}

/// A label value escaped: `\` → `\\`, `"` → `\"`, newline → `\n`.
fn push_escaped(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
}

/// A sample value as the text format writes it (as the `prometheus` crate does, except that
/// infinities are `+Inf` / `-Inf`).
fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
        if v < 0.0 {
            out.push('-');
        }
        push_u64(out, v.abs() as u64);
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

fn fmt_f64(v: f64) -> String {
    let mut s = String::new();
    push_f64(&mut s, v);
    s
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use prometheus::{HistogramVec, IntCounterVec};

    use super::*;
    use crate::checks::Observation;
    use crate::checks::outcome::StepReport;

    fn outcome(status: Status, reason: Reason, ms: u64, at: u64) -> Outcome {
        let mut o = Outcome::new(status, reason, "m");
        o.duration = Duration::from_millis(ms);
        o.started_at = SystemTime::UNIX_EPOCH + Duration::from_millis(at);
        o
    }

    fn step(name: &str, status: StepStatus, ms: f64) -> StepReport {
        let mut s = StepReport::skipped(name, "GET /".into(), false);
        s.status = status;
        s.duration_ms = ms;
        s
    }

    /// What the three checks below record.
    fn outcomes() -> Vec<(&'static str, &'static str, &'static str, Outcome)> {
        let mut web = outcome(Status::Pass, Reason::Ok, 12, 1_764_300_000_123);
        web.observations.set("status", Observation::Number(200.0));
        web.observations
            .set("ttfb", Observation::Duration(Duration::from_micros(1500)));
        web.observations
            .set("body", Observation::Text("not a number".into()));
        web.observations
            .set(CERT_EXPIRY_OBSERVATION, Observation::Number(1.9e9));
        let web_fail = outcome(Status::Fail, Reason::Status, 7, 1_764_300_010_456);
        let web_timeout = outcome(Status::Fail, Reason::Timeout, 70_000, 1_764_300_020_000);
        let mut journey = outcome(Status::Degraded, Reason::Assertion, 340, 1_764_300_000_000);
        journey.steps = vec![
            step("log \"in\"", StepStatus::Pass, 120.0),
            step("search\\all", StepStatus::Fail, 2.5),
            step("cart", StepStatus::Skipped, 0.0),
        ];
        let db_error = outcome(Status::Error, Reason::Config, 0, 1_764_300_000_000);
        vec![
            ("web", "shop \"eu\"", "http", web),
            ("web", "shop \"eu\"", "http", web_fail),
            ("web", "shop \"eu\"", "http", web_timeout),
            ("checkout", "shop", "journey", journey),
            ("db", "", "postgres", db_error),
        ]
    }

    /// The same outcomes recorded the way bakewatch did before, with the `prometheus`
    /// crate's vectors, and encoded by its registry: the reference exposition.
    fn reference() -> String {
        let registry = Registry::new_custom(Some("bakewatch".into()), None).unwrap();
        let l = &["check", "service", "type"];
        let success = GaugeVec::new(
            opts(
                "check_success",
                "1 when the check's last outcome was pass or degraded, else 0.",
            ),
            l,
        )
        .unwrap();
        let degraded = GaugeVec::new(
            opts(
                "check_degraded",
                "1 when the check's last outcome was degraded (a warn assertion failed).",
            ),
            l,
        )
        .unwrap();
        let runs = IntCounterVec::new(
            opts("check_runs_total", "Check runs by outcome status."),
            &["check", "service", "type", "status"],
        )
        .unwrap();
        let failures = IntCounterVec::new(
            opts(
                "check_failures_total",
                "Failed or errored check runs by reason.",
            ),
            &["check", "service", "type", "reason"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new("check_duration_seconds", "Duration of check runs.")
                .buckets(DURATION_BUCKETS.to_vec()),
            l,
        )
        .unwrap();
        let last = GaugeVec::new(
            opts(
                "check_last_run_timestamp_seconds",
                "Start time of the check's last run, Unix seconds.",
            ),
            l,
        )
        .unwrap();
        let value = GaugeVec::new(
            opts(
                "check_value",
                "Numeric observations of the check's last run.",
            ),
            &["check", "service", "observation"],
        )
        .unwrap();
        let cert = GaugeVec::new(
            opts(
                "cert_expiry_timestamp_seconds",
                "Expiry (notAfter) of the certificate the check's target presented, Unix seconds.",
            ),
            &["check", "service"],
        )
        .unwrap();
        let step_duration = HistogramVec::new(
            HistogramOpts::new(
                "journey_step_duration_seconds",
                "Duration of journey steps, retries included.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["check", "service", "step"],
        )
        .unwrap();
        let step_success = GaugeVec::new(
            opts("journey_step_success", "1 when the journey step passed (or degraded) in the last run, 0 when it failed or was skipped."),
            &["check", "service", "step"],
        )
        .unwrap();
        for (check, service, kind, _) in outcomes() {
            for s in Status::ALL {
                runs.with_label_values(&[check, service, kind, s.as_str()]);
            }
            duration.with_label_values(&[check, service, kind]);
        }
        for (check, service, kind, o) in outcomes() {
            let l = [check, service, kind];
            success
                .with_label_values(&l)
                .set(if o.status.is_success() { 1.0 } else { 0.0 });
            degraded
                .with_label_values(&l)
                .set(if o.status == Status::Degraded {
                    1.0
                } else {
                    0.0
                });
            last.with_label_values(&l)
                .set(crate::util::unix_seconds(o.started_at));
            runs.with_label_values(&[check, service, kind, o.status.as_str()])
                .inc();
            if matches!(o.status, Status::Fail | Status::Error) {
                failures
                    .with_label_values(&[check, service, kind, o.reason.as_str()])
                    .inc();
            }
            duration
                .with_label_values(&l)
                .observe(o.duration.as_secs_f64());
            for r in &o.steps {
                let sl = [check, service, r.name.as_str()];
                let ok = matches!(r.status, StepStatus::Pass | StepStatus::Degraded);
                let g = step_success.with_label_values(&sl);
                g.set(if ok { 1.0 } else { 0.0 });
                let h = step_duration.with_label_values(&sl);
                if r.status != StepStatus::Skipped {
                    h.observe(r.duration_ms / 1000.0);
                }
            }
            for (name, v) in o.observations.iter() {
                let Some(x) = v.as_f64() else { continue };
                if name == CERT_EXPIRY_OBSERVATION {
                    cert.with_label_values(&[check, service]).set(x);
                } else {
                    value.with_label_values(&[check, service, name]).set(x);
                }
            }
        }
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(success),
            Box::new(degraded),
            Box::new(runs),
            Box::new(failures),
            Box::new(duration),
            Box::new(last),
            Box::new(value),
            Box::new(cert),
            Box::new(step_duration),
            Box::new(step_success),
        ];
        for c in collectors {
            registry.register(c).unwrap();
        }
        let mut out = String::new();
        TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut out)
            .unwrap();
        out
    }

    fn per_check_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| {
                PER_CHECK.iter().any(|f| {
                    l.contains(&format!("{PREFIX}{} ", f.name))
                        || l.contains(&format!("{PREFIX}{}{{", f.name))
                        || l.contains(&format!("{PREFIX}{}_", f.name))
                })
            })
            .collect()
    }

    #[test]
    fn the_per_check_families_render_exactly_as_the_prometheus_registry_did() {
        let m = Metrics::new();
        let mut handles = Vec::new();
        for (check, service, kind, o) in outcomes() {
            let h = m.for_check(check, service, kind);
            h.record(&o);
            handles.push(h);
        }
        let ours = m.render();
        let want = reference();
        assert_eq!(per_check_lines(&ours), per_check_lines(&want), "{ours}");
        // The daemon-wide families are still there, in name order with the others.
        assert!(ours.contains("# TYPE bakewatch_scheduler_lag_seconds histogram"));
        assert!(ours.contains("bakewatch_build_info{"));
        let names: Vec<&str> = ours
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "families once each, sorted by name");
    }

    #[tokio::test]
    async fn the_streamed_body_is_the_same_exposition_in_parts() {
        let m = Metrics::new();
        let mut handles = Vec::new();
        for i in 0..1500 {
            for (check, service, kind, o) in outcomes() {
                let h = m.for_check(&format!("{check}-{i:04}"), service, kind);
                h.record(&o);
                handles.push(h);
            }
        }
        let text = m.render();
        assert!(text.len() > 4 * BODY_PART, "{}", text.len());
        let body = axum::body::to_bytes(m.render_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap(), text);
        // Nothing but the daemon-wide families: the same too.
        let empty = Metrics::new();
        let body = axum::body::to_bytes(empty.render_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap(), empty.render());
    }

    #[test]
    fn a_check_renders_its_counters_and_histogram_before_its_first_run() {
        let m = Metrics::new();
        let _h = m.for_check("api", "shop", "http");
        let text = m.render();
        assert!(text.contains(
            "bakewatch_check_runs_total{check=\"api\",service=\"shop\",status=\"pass\",type=\"http\"} 0\n"
        ));
        assert!(text.contains(
            "bakewatch_check_duration_seconds_bucket{check=\"api\",service=\"shop\",type=\"http\",le=\"+Inf\"} 0\n"
        ));
        assert!(!text.contains("bakewatch_check_success"), "{text}");
        assert!(!text.contains("bakewatch_check_failures_total"), "{text}");
    }

    #[test]
    fn a_reloaded_check_keeps_its_series_and_a_removed_one_loses_them() {
        let m = Metrics::new();
        let old = m.for_check("api", "shop", "http");
        old.record(&outcome(Status::Fail, Reason::Connect, 3, 1_000));
        // The next generation's handles for the same labels: the same series.
        let new = m.for_check("api", "shop", "http");
        new.record(&outcome(Status::Pass, Reason::Ok, 3, 2_000));
        let text = m.render();
        assert!(text.contains("bakewatch_check_runs_total{check=\"api\",service=\"shop\",status=\"fail\",type=\"http\"} 1\n"));
        assert!(text.contains("bakewatch_check_runs_total{check=\"api\",service=\"shop\",status=\"pass\",type=\"http\"} 1\n"));
        assert!(text.contains("bakewatch_check_failures_total{check=\"api\",reason=\"connect\",service=\"shop\",type=\"http\"} 1\n"));
        assert!(text.contains("bakewatch_check_duration_seconds_count{check=\"api\",service=\"shop\",type=\"http\"} 2\n"));
        // Moved to another service: the old series go, the new ones start at zero.
        let moved = m.for_check("api", "web", "http");
        m.remove_check(&new);
        let text = m.render();
        assert!(!text.contains("service=\"shop\""), "{text}");
        assert!(text.contains("bakewatch_check_runs_total{check=\"api\",service=\"web\",status=\"pass\",type=\"http\"} 0\n"));
        // A late record into the removed series does not bring them back.
        old.record(&outcome(Status::Pass, Reason::Ok, 3, 3_000));
        assert!(!m.render().contains("service=\"shop\""));
        drop(moved);
    }

    #[test]
    fn values_are_written_as_the_text_format_wants() {
        let f = |v: f64| fmt_f64(v);
        assert_eq!(f(0.0), "0");
        assert_eq!(f(1.0), "1");
        assert_eq!(f(-3.0), "-3");
        assert_eq!(f(0.0025), "0.0025");
        assert_eq!(f(1_764_300_000.123), "1764300000.123");
        assert_eq!(f(1e21), format!("{}", 1e21));
        assert_eq!(f(f64::INFINITY), "+Inf");
        assert_eq!(f(f64::NEG_INFINITY), "-Inf");
        assert_eq!(f(f64::NAN), "NaN");
        let mut s = String::new();
        push_u64(&mut s, u64::MAX);
        assert_eq!(s, u64::MAX.to_string());
        assert_eq!(label("step", "a\"b\\c\nd"), "step=\"a\\\"b\\\\c\\nd\"");
    }

    #[test]
    fn lag_buckets_resolve_the_goal() {
        assert!(LAG_BUCKETS.contains(&0.05));
        assert!(LAG_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
