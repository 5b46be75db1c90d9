//! Every metric family of DESIGN §7 that exists so far, defined here and nowhere else.
//! Per-check label handles are looked up once ([`CheckMetrics`]) and kept, so recording an
//! outcome touches atomics only, never the families' hash maps.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    Opts, Registry, TextEncoder,
};

use crate::checks::outcome::StepStatus;
use crate::checks::{Outcome, Reason, Status};

/// Buckets for check and scheduler durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The observation (Unix seconds) that feeds `cert_expiry_timestamp_seconds` rather than
/// `check_value`: set by the `tls` check and by `http` checks over https.
pub const CERT_EXPIRY_OBSERVATION: &str = "cert_expiry_timestamp";

/// The registry and all families.
pub struct Metrics {
    registry: Registry,
    check_success: GaugeVec,
    check_degraded: GaugeVec,
    check_runs_total: IntCounterVec,
    check_failures_total: IntCounterVec,
    check_duration_seconds: HistogramVec,
    check_last_run_timestamp_seconds: GaugeVec,
    check_value: GaugeVec,
    cert_expiry_timestamp_seconds: GaugeVec,
    journey_step_duration_seconds: HistogramVec,
    journey_step_success: GaugeVec,
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

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("bakewatch".into()), None).expect("static prefix is valid");
        let check_labels = &["check", "service", "type"];
        let m = Metrics {
            check_success: GaugeVec::new(
                opts(
                    "check_success",
                    "1 when the check's last outcome was pass or degraded, else 0.",
                ),
                check_labels,
            )
            .expect("valid metric"),
            check_degraded: GaugeVec::new(
                opts(
                    "check_degraded",
                    "1 when the check's last outcome was degraded (a warn assertion failed).",
                ),
                check_labels,
            )
            .expect("valid metric"),
            check_runs_total: IntCounterVec::new(
                opts("check_runs_total", "Check runs by outcome status."),
                &["check", "service", "type", "status"],
            )
            .expect("valid metric"),
            check_failures_total: IntCounterVec::new(
                opts(
                    "check_failures_total",
                    "Failed or errored check runs by reason.",
                ),
                &["check", "service", "type", "reason"],
            )
            .expect("valid metric"),
            check_duration_seconds: HistogramVec::new(
                HistogramOpts::new("check_duration_seconds", "Duration of check runs.")
                    .buckets(DURATION_BUCKETS.to_vec()),
                check_labels,
            )
            .expect("valid metric"),
            check_last_run_timestamp_seconds: GaugeVec::new(
                opts(
                    "check_last_run_timestamp_seconds",
                    "Start time of the check's last run, Unix seconds.",
                ),
                check_labels,
            )
            .expect("valid metric"),
            check_value: GaugeVec::new(
                opts(
                    "check_value",
                    "Numeric observations of the check's last run.",
                ),
                &["check", "service", "observation"],
            )
            .expect("valid metric"),
            cert_expiry_timestamp_seconds: GaugeVec::new(
                opts(
                    "cert_expiry_timestamp_seconds",
                    "Expiry (notAfter) of the certificate the check's target presented, Unix seconds.",
                ),
                &["check", "service"],
            )
            .expect("valid metric"),
            journey_step_duration_seconds: HistogramVec::new(
                HistogramOpts::new("journey_step_duration_seconds", "Duration of journey steps, retries included.")
                    .buckets(DURATION_BUCKETS.to_vec()),
                &["check", "service", "step"],
            )
            .expect("valid metric"),
            journey_step_success: GaugeVec::new(
                opts("journey_step_success", "1 when the journey step passed (or degraded) in the last run, 0 when it failed or was skipped."),
                &["check", "service", "step"],
            )
            .expect("valid metric"),
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
            Box::new(m.check_success.clone()),
            Box::new(m.check_degraded.clone()),
            Box::new(m.check_runs_total.clone()),
            Box::new(m.check_failures_total.clone()),
            Box::new(m.check_duration_seconds.clone()),
            Box::new(m.check_last_run_timestamp_seconds.clone()),
            Box::new(m.check_value.clone()),
            Box::new(m.cert_expiry_timestamp_seconds.clone()),
            Box::new(m.journey_step_duration_seconds.clone()),
            Box::new(m.journey_step_success.clone()),
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

    /// Label handles for one check. Counters and the histogram appear at once with zero
    /// values; `check_success`, `check_degraded` and the last-run time only after the first
    /// run, so a restart never reports a check as failing before it has run.
    pub fn for_check(&self, check: &str, service: &str, kind: &'static str) -> CheckMetrics {
        let l = [check, service, kind];
        let runs = Status::ALL.map(|s| {
            self.check_runs_total
                .with_label_values(&[check, service, kind, s.as_str()])
        });
        CheckMetrics {
            labels: (check.to_string(), service.to_string(), kind),
            success: OnceLock::new(),
            degraded: OnceLock::new(),
            last_run: OnceLock::new(),
            status_families: (
                self.check_success.clone(),
                self.check_degraded.clone(),
                self.check_last_run_timestamp_seconds.clone(),
            ),
            runs,
            failures: Default::default(),
            duration: self.check_duration_seconds.with_label_values(&l),
            values: Mutex::new(HashMap::new()),
            failures_family: self.check_failures_total.clone(),
            value_family: self.check_value.clone(),
            cert_expiry: OnceLock::new(),
            cert_expiry_family: self.cert_expiry_timestamp_seconds.clone(),
            steps: Mutex::new(HashMap::new()),
            step_families: (
                self.journey_step_duration_seconds.clone(),
                self.journey_step_success.clone(),
            ),
        }
    }

    /// Removes every series of a check (when a reload drops it).
    pub fn remove_check(&self, m: &CheckMetrics) {
        let (check, service, kind) = &m.labels;
        let (check, service) = (check.as_str(), service.as_str());
        let l = [check, service, kind];
        let _ = self.check_success.remove_label_values(&l);
        let _ = self.check_degraded.remove_label_values(&l);
        let _ = self.check_duration_seconds.remove_label_values(&l);
        let _ = self
            .check_last_run_timestamp_seconds
            .remove_label_values(&l);
        for s in Status::ALL {
            let _ = self
                .check_runs_total
                .remove_label_values(&[check, service, kind, s.as_str()]);
        }
        for r in Reason::ALL {
            let _ =
                self.check_failures_total
                    .remove_label_values(&[check, service, kind, r.as_str()]);
        }
        for name in m.values.lock().expect("not poisoned").keys() {
            let _ = self
                .check_value
                .remove_label_values(&[check, service, name]);
        }
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of valid metrics cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The series of one check, resolved once.
pub struct CheckMetrics {
    /// check, service, type.
    labels: (String, String, &'static str),
    success: OnceLock<Gauge>,
    degraded: OnceLock<Gauge>,
    last_run: OnceLock<Gauge>,
    /// check_success, check_degraded, check_last_run_timestamp_seconds.
    status_families: (GaugeVec, GaugeVec, GaugeVec),
    /// Indexed like [`Status::ALL`].
    runs: [IntCounter; 4],
    /// Created on the first failure with each reason, indexed like [`Reason::ALL`].
    failures: [OnceLock<IntCounter>; 13],
    duration: Histogram,
    /// `check_value` handles by observation name, created on first sight.
    values: Mutex<HashMap<String, Gauge>>,
    failures_family: IntCounterVec,
    value_family: GaugeVec,
    cert_expiry: OnceLock<Gauge>,
    cert_expiry_family: GaugeVec,
    /// Journey step series by step name, created on first sight.
    steps: Mutex<HashMap<String, (Histogram, Gauge)>>,
    step_families: (HistogramVec, GaugeVec),
}

impl CheckMetrics {
    fn record_steps(&self, o: &Outcome) {
        let (check, service, _) = &self.labels;
        let (durations, successes) = &self.step_families;
        let mut steps = self.steps.lock().expect("not poisoned");
        for r in &o.steps {
            let (duration, success) = match steps.get(&r.name) {
                Some(handles) => handles,
                None => {
                    let l = [check.as_str(), service.as_str(), r.name.as_str()];
                    let handles = (
                        durations.with_label_values(&l),
                        successes.with_label_values(&l),
                    );
                    steps.entry(r.name.clone()).or_insert(handles)
                }
            };
            let ok = matches!(r.status, StepStatus::Pass | StepStatus::Degraded);
            success.set(if ok { 1.0 } else { 0.0 });
            if r.status != StepStatus::Skipped {
                duration.observe(r.duration_ms / 1000.0);
            }
        }
    }

    /// Records one outcome.
    pub fn record(&self, o: &Outcome) {
        let (check, service, kind) = &self.labels;
        let l = [check.as_str(), service.as_str(), kind];
        let (success, degraded, last_run) = &self.status_families;
        let gauge = |cell: &OnceLock<Gauge>, family: &GaugeVec| {
            cell.get_or_init(|| family.with_label_values(&l)).clone()
        };
        gauge(&self.success, success).set(if o.status.is_success() { 1.0 } else { 0.0 });
        gauge(&self.degraded, degraded).set(if o.status == Status::Degraded {
            1.0
        } else {
            0.0
        });
        gauge(&self.last_run, last_run).set(crate::util::unix_seconds(o.started_at));
        let si = Status::ALL
            .iter()
            .position(|s| *s == o.status)
            .expect("status in ALL");
        self.runs[si].inc();
        if matches!(o.status, Status::Fail | Status::Error) {
            let ri = Reason::ALL
                .iter()
                .position(|r| *r == o.reason)
                .expect("reason in ALL");
            self.failures[ri]
                .get_or_init(|| {
                    self.failures_family.with_label_values(&[
                        check.as_str(),
                        service.as_str(),
                        kind,
                        o.reason.as_str(),
                    ])
                })
                .inc();
        }
        self.duration.observe(o.duration.as_secs_f64());
        if !o.steps.is_empty() {
            self.record_steps(o);
        }
        if o.observations.iter().any(|(_, v)| v.as_f64().is_some()) {
            let (check, service, _) = &self.labels;
            let mut values = self.values.lock().expect("not poisoned");
            for (name, v) in o.observations.iter() {
                let Some(x) = v.as_f64() else { continue };
                if name == CERT_EXPIRY_OBSERVATION {
                    self.cert_expiry
                        .get_or_init(|| {
                            self.cert_expiry_family
                                .with_label_values(&[check.as_str(), service.as_str()])
                        })
                        .set(x);
                    continue;
                }
                match values.get(name.as_ref()) {
                    Some(g) => g.set(x),
                    None => {
                        let g = self.value_family.with_label_values(&[
                            check.as_str(),
                            service.as_str(),
                            name,
                        ]);
                        g.set(x);
                        values.insert(name.to_string(), g);
                    }
                }
            }
        }
    }
}
