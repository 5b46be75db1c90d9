//! Alerting (DESIGN §8): turns alert states into notifications, and remembers what it sent.
//!
//! After every rule evaluation ([`crate::deployments`] owns it) [`Alerting::process`] looks at
//! each alert instance (rule × check) and decides what to queue in the [`Outbox`]:
//! - a **firing** instance is notified once per episode (an episode starts at `fired_at`) to
//!   the rule's notifiers, then again every `repeat` (the rule's) or every `resend` (an
//!   Alertmanager notifier's, so Alertmanager never times it out), whichever is sooner;
//! - a **resolved** instance whose firing was notified is notified once more, as resolved, to
//!   the notifiers with `send_resolved` (both the rule's and the notifier's);
//! - **no data**: a check watched by a rule with `notify_no_data` (the default) that has not
//!   started a run for 3 intervals (plus its timeout) fires the built-in `no_data` alert to
//!   those rules' notifiers, and resolves it when runs come back.
//!
//! What was sent is kept per instance in a [`Mark`] and persisted with the instance in the
//! store's `rule_states`, so after a restart a firing alert is still firing and is not sent
//! again before its `repeat`. The notifications and the marks that record them are committed
//! in one transaction: after a crash both are there or neither is (and then the next
//! evaluation plans them again), so a firing that was queued always gets its resolve.
//!
//! Deployment events (`deployment_registered`, `verdict`) go to the notifiers whose `events`
//! name them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{Config, RuleConfig, Schedule};
use crate::notify::outbox::Outbox;
use crate::notify::{AlertEvent, AlertStatus, DeploymentEvent, DeploymentRef, Event, Notification};
use crate::rules::{self, AlertState, Comparison, Instance, RuleState, ThresholdSource};
use crate::runtime::Runtime;
use crate::store::{Store, StoreError};
use crate::util::{rfc3339, unix_millis};

/// The built-in rule name of "this check stopped producing outcomes".
pub const NO_DATA_RULE: &str = "no_data";

/// Runs missed before a check counts as stale.
const NO_DATA_INTERVALS: u32 = 3;

/// What was sent for one alert instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// The `fired_at` of the episode that was notified as firing.
    pub episode: Option<SystemTime>,
    /// When a firing notification was last queued, per notifier (for `repeat` / `resend`).
    pub sent: BTreeMap<String, SystemTime>,
    /// The episode's resolve was notified (or was not to be).
    pub resolved: bool,
    /// The service's deployment when the episode began: part of the dedup key, so the
    /// resolve carries the same key as the trigger.
    pub deployment: Option<DeploymentRef>,
}

/// The persisted form of one (rule, check): the instance and its mark.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    instance: Instance,
    #[serde(default)]
    mark: Mark,
}

/// A check without runs for too long: the `no_data` alert's instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoDataInstance {
    pub state: AlertState,
    /// When its last run started (or the daemon, if it never ran since).
    pub last_run: SystemTime,
    /// How long without a run makes it stale.
    pub threshold: Duration,
    pub fired_at: Option<SystemTime>,
    pub resolved_at: Option<SystemTime>,
}

/// Alert notifications and their bookkeeping.
pub struct Alerting {
    rt: Arc<Runtime>,
    store: Store,
    outbox: Arc<Outbox>,
    marks: Mutex<BTreeMap<(String, String), Mark>>,
    no_data: Mutex<BTreeMap<String, NoDataInstance>>,
    /// What was last written to the store per (rule, check): state and mark.
    persisted: Mutex<BTreeMap<(String, String), (AlertState, Mark)>>,
}

impl Alerting {
    /// Loads saved rule states (returned for the rule engine to continue from) and marks.
    pub async fn open(
        rt: Arc<Runtime>,
        store: Store,
        outbox: Arc<Outbox>,
    ) -> Result<(Arc<Alerting>, BTreeMap<String, RuleState>), StoreError> {
        let mut states: BTreeMap<String, RuleState> = BTreeMap::new();
        let mut marks = BTreeMap::new();
        let mut persisted = BTreeMap::new();
        let mut no_data = BTreeMap::new();
        for row in store.load_rule_states().await? {
            let key = (row.rule.clone(), row.check.clone());
            if row.rule == NO_DATA_RULE {
                if let Ok(saved) = serde_json::from_value::<SavedNoData>(row.state) {
                    persisted.insert(key.clone(), (saved.instance.state, saved.mark.clone()));
                    marks.insert(key, saved.mark);
                    no_data.insert(row.check, saved.instance);
                }
                continue;
            }
            // A rule or check a reload removed: forget it.
            let known_rule = rt.config.rules.iter().any(|r| r.name == row.rule);
            if !known_rule || rt.check(&row.check).is_none() {
                continue;
            }
            match serde_json::from_value::<Saved>(row.state) {
                Ok(saved) => {
                    persisted.insert(key.clone(), (saved.instance.state, saved.mark.clone()));
                    marks.insert(key, saved.mark);
                    states
                        .entry(row.rule)
                        .or_default()
                        .instances
                        .insert(row.check, saved.instance);
                }
                Err(e) => {
                    tracing::warn!(rule = %row.rule, check = %row.check, error = %e, "saved alert state unreadable; starting it afresh")
                }
            }
        }
        let me = Arc::new(Alerting {
            rt,
            store,
            outbox,
            marks: Mutex::new(marks),
            no_data: Mutex::new(no_data),
            persisted: Mutex::new(persisted),
        });
        Ok((me, states))
    }

    /// The alerting of a reloaded runtime over the same store: what was sent (marks), the
    /// `no_data` instances and what was persisted carry over for rules and checks that still
    /// exist, so a firing alert stays firing and is not notified again before its repeat.
    pub fn reloaded(&self, rt: Arc<Runtime>, outbox: Arc<Outbox>) -> Arc<Alerting> {
        let known = |rule: &str, check: &str| {
            rt.check(check).is_some()
                && (rule == NO_DATA_RULE || rt.config.rules.iter().any(|r| r.name == rule))
        };
        let marks = kept(&self.marks, |(r, c)| known(r, c));
        let persisted = kept(&self.persisted, |(r, c)| known(r, c));
        let no_data = kept(&self.no_data, |c| rt.check(c).is_some());
        Arc::new(Alerting {
            rt,
            store: self.store.clone(),
            outbox,
            marks: Mutex::new(marks),
            no_data: Mutex::new(no_data),
            persisted: Mutex::new(persisted),
        })
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The `no_data` alerts that are firing, for `GET /api/v1/alerts` and `bakewatch_alerts`.
    pub fn no_data_alerts(&self) -> Vec<rules::Alert> {
        let nd = self.no_data.lock().expect("not poisoned");
        nd.iter()
            .filter(|(_, i)| i.state == AlertState::Firing)
            .map(|(check, i)| rules::Alert {
                rule: NO_DATA_RULE.into(),
                check: check.clone(),
                severity: "warning".into(),
                state: AlertState::Firing,
                signal: NO_DATA_RULE.into(),
                value: i
                    .fired_at
                    .and_then(|f| f.duration_since(i.last_run).ok())
                    .map(|d| d.as_secs_f64()),
                comparison: Comparison::Above,
                threshold: i.threshold.as_secs_f64(),
                threshold_source: ThresholdSource::Steady,
                for_seconds: 0.0,
                since: rfc3339(i.last_run + i.threshold),
                fired_at: i.fired_at.map(rfc3339),
                no_data: None,
                rollback: false,
                message: no_data_summary(check, i),
            })
            .collect()
    }

    /// Queues what `states` (just evaluated at `now`) call for, and persists what changed.
    pub async fn process(&self, states: &BTreeMap<String, RuleState>, now: SystemTime) {
        let mut queue: Vec<(String, Notification)> = Vec::new();
        let mut changed: Vec<((String, String), serde_json::Value, AlertState, Mark)> = Vec::new();
        {
            let mut marks = self.marks.lock().expect("not poisoned");
            for rule in &self.rt.config.rules {
                let Some(state) = states.get(&rule.name) else {
                    continue;
                };
                for (check, inst) in &state.instances {
                    let key = (rule.name.clone(), check.clone());
                    let mark = marks.entry(key.clone()).or_default();
                    let before = mark.clone();
                    self.plan(rule, check, inst, mark, now, &mut queue);
                    let persisted = self.persisted.lock().expect("not poisoned");
                    let dirty = persisted
                        .get(&key)
                        .is_none_or(|(s, m)| *s != inst.state || *m != *mark)
                        || before != *mark;
                    drop(persisted);
                    if dirty {
                        let saved = Saved {
                            instance: inst.clone(),
                            mark: mark.clone(),
                        };
                        if let Ok(v) = serde_json::to_value(&saved) {
                            changed.push((key, v, inst.state, mark.clone()));
                        }
                    }
                }
            }
            self.plan_no_data(now, &mut marks, &mut queue, &mut changed);
        }
        if queue.is_empty() && changed.is_empty() {
            return;
        }
        // The notifications and the marks that record them go in one transaction.
        let mut queued = Vec::with_capacity(queue.len());
        for (notifier, n) in &queue {
            match Outbox::queued(notifier, n) {
                Ok(q) => queued.push(q),
                Err(e) => {
                    tracing::error!(notifier = %notifier, error = %e, "cannot queue a notification")
                }
            }
        }
        let mut states = Vec::with_capacity(changed.len());
        let mut saved = Vec::with_capacity(changed.len());
        for ((rule, check), value, state, mark) in changed {
            states.push((rule.clone(), check.clone(), value));
            saved.push(((rule, check), state, mark));
        }
        match self.store.put_rule_states_queuing(states, queued).await {
            Ok(()) => {
                self.outbox.wake();
                let mut persisted = self.persisted.lock().expect("not poisoned");
                for (key, state, mark) in saved {
                    persisted.insert(key, (state, mark));
                }
            }
            Err(e) => {
                // Nothing was queued or saved: put the marks back as they were stored, so
                // the next evaluation plans these notifications again. (Marks before
                // persisted, as above.)
                tracing::error!(error = %e, "cannot queue notifications and save the alert states; will retry");
                let mut marks = self.marks.lock().expect("not poisoned");
                let persisted = self.persisted.lock().expect("not poisoned");
                for (key, _, _) in saved {
                    match persisted.get(&key) {
                        Some((_, mark)) => marks.insert(key, mark.clone()),
                        None => marks.remove(&key),
                    };
                }
            }
        }
    }

    /// What one rule instance calls for now; updates its mark.
    fn plan(
        &self,
        rule: &RuleConfig,
        check: &str,
        inst: &Instance,
        mark: &mut Mark,
        now: SystemTime,
        queue: &mut Vec<(String, Notification)>,
    ) {
        let service = self
            .rt
            .check(check)
            .map(|c| c.config.service.clone())
            .unwrap_or_default();
        match inst.state {
            AlertState::Firing => {
                let new_episode = inst.fired_at.is_some() && mark.episode != inst.fired_at;
                if new_episode {
                    *mark = Mark {
                        episode: inst.fired_at,
                        sent: BTreeMap::new(),
                        resolved: false,
                        deployment: self.deployment_of(&service),
                    };
                }
                for notifier in &rule.notify {
                    let due = match mark.sent.get(notifier) {
                        None => true,
                        Some(last) => self.repeat_every(rule, notifier).is_some_and(|every| {
                            now.duration_since(*last).unwrap_or_default() >= every
                        }),
                    };
                    if due {
                        let event =
                            alert_event(rule, check, &service, inst, mark, AlertStatus::Firing);
                        queue.push((
                            notifier.clone(),
                            self.notification(
                                dedup_key(rule, check, mark),
                                Event::Alert(event),
                                AlertStatus::Firing.as_str(),
                                now,
                                check,
                            ),
                        ));
                        mark.sent.insert(notifier.clone(), now);
                    }
                }
            }
            AlertState::Resolved => {
                if mark.episode.is_some() && !mark.resolved {
                    if rule.send_resolved {
                        for notifier in &rule.notify {
                            if !mark.sent.contains_key(notifier) || !self.sends_resolved(notifier) {
                                continue;
                            }
                            let event = alert_event(
                                rule,
                                check,
                                &service,
                                inst,
                                mark,
                                AlertStatus::Resolved,
                            );
                            queue.push((
                                notifier.clone(),
                                self.notification(
                                    dedup_key(rule, check, mark),
                                    Event::Alert(event),
                                    AlertStatus::Resolved.as_str(),
                                    now,
                                    check,
                                ),
                            ));
                        }
                    }
                    mark.resolved = true;
                }
            }
            AlertState::Inactive | AlertState::Pending => {}
        }
    }

    /// The `no_data` alert of each check some `notify_no_data` rule watches.
    fn plan_no_data(
        &self,
        now: SystemTime,
        marks: &mut BTreeMap<(String, String), Mark>,
        queue: &mut Vec<(String, Notification)>,
        changed: &mut Vec<((String, String), serde_json::Value, AlertState, Mark)>,
    ) {
        let config = &self.rt.config;
        let mut nd = self.no_data.lock().expect("not poisoned");
        for c in &self.rt.checks {
            let cfg = &c.config;
            let notifiers: BTreeSet<&String> = config
                .rules
                .iter()
                .filter(|r| r.notify_no_data && rules::watches(r, &cfg.name, &cfg.service))
                .flat_map(|r| r.notify.iter())
                .collect();
            if notifiers.is_empty() {
                continue;
            }
            let last_start = c
                .history
                .lock()
                .expect("not poisoned")
                .recent(1)
                .next()
                .map(|s| s.at_ms);
            let started = unix_millis(self.rt.started_at);
            let last_ms = last_start.unwrap_or(started).max(started);
            let last_run = SystemTime::UNIX_EPOCH + Duration::from_millis(last_ms);
            let threshold = stale_after(&cfg.schedule, cfg.timeout, config, last_run);
            let stale = now.duration_since(last_run).unwrap_or_default() > threshold;
            let prev = nd.get(&cfg.name).cloned();
            let mut inst = prev.clone().unwrap_or(NoDataInstance {
                state: AlertState::Inactive,
                last_run,
                threshold,
                fired_at: None,
                resolved_at: None,
            });
            inst.last_run = last_run;
            inst.threshold = threshold;
            match (stale, inst.state) {
                (true, AlertState::Firing) => {}
                (true, _) => {
                    inst.state = AlertState::Firing;
                    inst.fired_at = Some(now);
                    inst.resolved_at = None;
                    tracing::warn!(check = %cfg.name, last_run = %rfc3339(last_run), "check produced no outcome for too long: no_data alert firing");
                }
                (false, AlertState::Firing) => {
                    inst.state = AlertState::Resolved;
                    inst.resolved_at = Some(now);
                    tracing::info!(check = %cfg.name, "check runs again: no_data alert resolved");
                }
                (false, _) => {}
            }
            let key = (NO_DATA_RULE.to_string(), cfg.name.clone());
            let mark = marks.entry(key.clone()).or_default();
            let before = mark.clone();
            let dedup = format!("{NO_DATA_RULE}:{}", cfg.name);
            let event = |status: AlertStatus, inst: &NoDataInstance| AlertEvent {
                status,
                rule: NO_DATA_RULE.into(),
                check: cfg.name.clone(),
                service: cfg.service.clone(),
                severity: "warning".into(),
                signal: NO_DATA_RULE.into(),
                value: now
                    .duration_since(inst.last_run)
                    .ok()
                    .map(|d| d.as_secs_f64()),
                comparison: Comparison::Above,
                threshold: inst.threshold.as_secs_f64(),
                threshold_source: ThresholdSource::Steady,
                for_seconds: 0.0,
                window_seconds: inst.threshold.as_secs_f64(),
                summary: no_data_summary(&cfg.name, inst),
                starts_at: rfc3339(inst.fired_at.unwrap_or(now)),
                ends_at: inst.resolved_at.map(rfc3339),
                deployment: None,
                rollback: false,
            };
            match inst.state {
                AlertState::Firing => {
                    if mark.episode != inst.fired_at {
                        *mark = Mark {
                            episode: inst.fired_at,
                            ..Mark::default()
                        };
                    }
                    for notifier in &notifiers {
                        let due = match mark.sent.get(*notifier) {
                            None => true,
                            Some(last) => self.resend_of(notifier).is_some_and(|every| {
                                now.duration_since(*last).unwrap_or_default() >= every
                            }),
                        };
                        if due {
                            queue.push((
                                (*notifier).clone(),
                                self.notification(
                                    dedup.clone(),
                                    Event::Alert(event(AlertStatus::Firing, &inst)),
                                    "firing",
                                    now,
                                    &cfg.name,
                                ),
                            ));
                            mark.sent.insert((*notifier).clone(), now);
                        }
                    }
                }
                AlertState::Resolved if mark.episode.is_some() && !mark.resolved => {
                    for notifier in &notifiers {
                        if mark.sent.contains_key(*notifier) && self.sends_resolved(notifier) {
                            queue.push((
                                (*notifier).clone(),
                                self.notification(
                                    dedup.clone(),
                                    Event::Alert(event(AlertStatus::Resolved, &inst)),
                                    "resolved",
                                    now,
                                    &cfg.name,
                                ),
                            ));
                        }
                    }
                    mark.resolved = true;
                }
                _ => {}
            }
            let state_changed = prev.as_ref().map(|p| p.state) != Some(inst.state);
            if state_changed || before != *mark {
                let saved = SavedNoData {
                    instance: inst.clone(),
                    mark: mark.clone(),
                };
                if let Ok(v) = serde_json::to_value(&saved) {
                    changed.push((key, v, inst.state, mark.clone()));
                }
            }
            nd.insert(cfg.name.clone(), inst);
        }
    }

    /// Queues a deployment event for the notifiers that subscribed to it.
    pub async fn deployment_event(&self, kind: DeploymentEventKind, e: DeploymentEvent) {
        for (notifier, notification) in self.deployment_notifications(kind, e) {
            if let Err(err) = self.outbox.push(&notifier, &notification).await {
                tracing::error!(notifier = %notifier, error = %err, "cannot queue a deployment notification");
            }
        }
    }

    /// The notifications of a deployment event, by notifier (those that subscribed to it),
    /// without queuing them: for a caller that queues them in its own store transaction.
    pub fn deployment_notifications(
        &self,
        kind: DeploymentEventKind,
        e: DeploymentEvent,
    ) -> Vec<(String, Notification)> {
        let name = match kind {
            DeploymentEventKind::Registered => "deployment_registered",
            DeploymentEventKind::Verdict => "verdict",
        };
        let dedup = format!("deployment:{}", e.deployment.id);
        let event = match kind {
            DeploymentEventKind::Registered => Event::DeploymentRegistered(e),
            DeploymentEventKind::Verdict => Event::Verdict(e),
        };
        let now = SystemTime::now();
        let mut out = Vec::new();
        for n in &self.rt.config.notifiers {
            if !n.events.iter().any(|x| x == name) {
                continue;
            }
            let mut notification = self.notification(dedup.clone(), event.clone(), name, now, "");
            if let Event::DeploymentRegistered(d) | Event::Verdict(d) = &notification.event {
                notification.link = format!(
                    "{}/api/v1/deployments/{}",
                    self.rt.config.server.external_url, d.deployment.id
                );
            }
            out.push((n.name.clone(), notification));
        }
        out
    }

    fn notification(
        &self,
        dedup_key: String,
        event: Event,
        what: &str,
        now: SystemTime,
        check: &str,
    ) -> Notification {
        let base = &self.rt.config.server.external_url;
        Notification {
            id: format!("{dedup_key}:{what}:{}", unix_millis(now)),
            dedup_key,
            created_at: rfc3339(now),
            // The status page, at the check's row (check names are letters, digits, - _ .).
            link: if check.is_empty() {
                format!("{base}/")
            } else {
                format!("{base}/#check-{check}")
            },
            event,
        }
    }

    /// The current deployment of `service`, for an alert that begins now.
    fn deployment_of(&self, service: &str) -> Option<DeploymentRef> {
        self.rt.deployed.latest(service).map(|d| DeploymentRef {
            id: d.id.clone(),
            service: service.to_string(),
            version: d.version.clone(),
            environment: d.environment.clone(),
        })
    }

    /// How often a firing alert is sent again to `notifier`: the sooner of the rule's
    /// `repeat` and the notifier's `resend`.
    fn repeat_every(&self, rule: &RuleConfig, notifier: &str) -> Option<Duration> {
        match (rule.repeat, self.resend_of(notifier)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn resend_of(&self, notifier: &str) -> Option<Duration> {
        self.rt
            .config
            .notifiers
            .iter()
            .find(|n| n.name == notifier)
            .and_then(|n| n.receiver.resend())
    }

    fn sends_resolved(&self, notifier: &str) -> bool {
        self.rt
            .config
            .notifiers
            .iter()
            .find(|n| n.name == notifier)
            .is_some_and(|n| n.send_resolved)
    }
}

/// The entries of `map` whose key passes `keep`, copied.
fn kept<K: Ord + Clone, V: Clone>(
    map: &Mutex<BTreeMap<K, V>>,
    keep: impl Fn(&K) -> bool,
) -> BTreeMap<K, V> {
    map.lock()
        .expect("not poisoned")
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedNoData {
    instance: NoDataInstance,
    #[serde(default)]
    mark: Mark,
}

/// Which deployment event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentEventKind {
    Registered,
    Verdict,
}

/// Rule + check (+ the deployment of the episode): the same for trigger, repeats and resolve.
fn dedup_key(rule: &RuleConfig, check: &str, mark: &Mark) -> String {
    match &mark.deployment {
        Some(d) => format!("{}:{check}:{}", rule.name, d.id),
        None => format!("{}:{check}", rule.name),
    }
}

fn alert_event(
    rule: &RuleConfig,
    check: &str,
    service: &str,
    inst: &Instance,
    mark: &Mark,
    status: AlertStatus,
) -> AlertEvent {
    AlertEvent {
        status,
        rule: rule.name.clone(),
        check: check.to_string(),
        service: service.to_string(),
        severity: rule.severity.clone(),
        signal: rules::signal_name(&rule.signal),
        value: inst.value,
        comparison: inst.threshold.comparison,
        threshold: inst.threshold.value,
        threshold_source: inst.threshold.source,
        for_seconds: inst.threshold.for_.as_secs_f64(),
        window_seconds: rule.over.as_secs_f64(),
        summary: inst.explain(rule),
        starts_at: rfc3339(
            inst.active_since
                .or(inst.fired_at)
                .unwrap_or(inst.evaluated_at),
        ),
        ends_at: match status {
            AlertStatus::Resolved => Some(rfc3339(inst.resolved_at.unwrap_or(inst.evaluated_at))),
            AlertStatus::Firing => None,
        },
        deployment: mark.deployment.clone(),
        rollback: rule.rollback,
    }
}

fn no_data_summary(check: &str, i: &NoDataInstance) -> String {
    format!(
        "check {check} started no run since {} (stale after {})",
        rfc3339(i.last_run),
        humantime::format_duration(Duration::from_secs(i.threshold.as_secs()))
    )
}

/// How long without a run makes a check stale: 3 of its intervals (for cron, 3 gaps after
/// its last run), plus its timeout and the start jitter.
fn stale_after(
    schedule: &Schedule,
    timeout: Duration,
    config: &Config,
    last_run: SystemTime,
) -> Duration {
    let every = match schedule {
        Schedule::Interval(i) => *i,
        Schedule::Cron(expr) => {
            let from: chrono::DateTime<chrono::Local> = last_run.into();
            expr.next_after(&from)
                .and_then(|next| (next - from).to_std().ok())
                .unwrap_or(Duration::from_secs(3600))
        }
    };
    every * NO_DATA_INTERVALS + timeout + config.scheduler.jitter
}
