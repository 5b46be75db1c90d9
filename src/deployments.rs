//! Deployments: registration (idempotent on `id`), supersede, cancel, the frozen baseline,
//! the post-deploy window, and the task that evaluates rules and verdicts as outcomes arrive.
//!
//! The verdict logic itself is pure ([`crate::verdict`], [`crate::rules`]); this module feeds
//! it inputs, keeps what it answers in the store (nothing registered or concluded is lost on
//! `kill -9`), and wakes long-polling waiters when a verdict changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::history::Baseline;
use crate::rules::{self, AlertState, RuleState};
use crate::runtime::{OutcomeSink, Runtime};
use crate::store::{DeploymentRow, DeploymentState, Insertion, Store, StoreError};
use crate::template::DeploymentVars;
use crate::util::unix_millis;
use crate::verdict::{
    CheckInput, RuleSignal, RunDetail, TickInput, Verdict, VerdictPolicy, VerdictRecord,
};

/// How often time-based transitions (min / max duration, window end) are looked at when no
/// outcome arrives.
const TICK: Duration = Duration::from_secs(1);

/// Which services are inside their post-deploy window, and until when. Check loops watch
/// [`Windows::subscribe`] so a registration switches them to the post-deploy cadence at once.
pub struct Windows {
    until: RwLock<HashMap<String, SystemTime>>,
    changed: watch::Sender<u64>,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            until: RwLock::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl Windows {
    pub fn is_active(&self, service: &str, now: SystemTime) -> bool {
        !service.is_empty()
            && self
                .until
                .read()
                .expect("not poisoned")
                .get(service)
                .is_some_and(|until| now < *until)
    }

    /// Opens (or moves) a service's window to end at `until`; `None` closes it.
    pub fn set(&self, service: &str, until: Option<SystemTime>) {
        let mut map = self.until.write().expect("not poisoned");
        match until {
            Some(u) => {
                map.insert(service.to_string(), u);
            }
            None => {
                map.remove(service);
            }
        }
        drop(map);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Each service's latest deployment (cancelled ones aside): what `{{ deployment.* }}` in its
/// checks resolve to. Read by every check run, written on registration and cancel.
#[derive(Debug, Default)]
pub struct Latest {
    by_service: RwLock<HashMap<String, Arc<DeploymentVars>>>,
}

impl Latest {
    pub fn latest(&self, service: &str) -> Option<Arc<DeploymentVars>> {
        if service.is_empty() {
            return None;
        }
        self.by_service
            .read()
            .expect("not poisoned")
            .get(service)
            .cloned()
    }

    pub fn set(&self, service: &str, vars: Option<DeploymentVars>) {
        let mut map = self.by_service.write().expect("not poisoned");
        match vars {
            Some(v) => {
                map.insert(service.to_string(), Arc::new(v));
            }
            None => {
                map.remove(service);
            }
        }
    }
}

/// `POST /api/v1/deployments` body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub id: Option<String>,
    pub service: String,
    pub version: String,
    pub environment: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A deployment record, as stored and as `GET /api/v1/deployments/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub service: String,
    pub version: String,
    pub environment: String,
    pub labels: BTreeMap<String, String>,
    pub started_at: String,
    /// Per check: the statistics of the `deploy.baseline` before registration.
    pub baseline: BTreeMap<String, Baseline>,
    /// The verdict, with reasons, per-check summary now vs baseline, and late failures.
    pub verdict: VerdictRecord,
}

impl Deployment {
    /// What notifications say about it.
    fn event(&self) -> crate::notify::DeploymentEvent {
        let v = &self.verdict;
        crate::notify::DeploymentEvent {
            deployment: crate::notify::DeploymentRef {
                id: self.id.clone(),
                service: self.service.clone(),
                version: self.version.clone(),
                environment: self.environment.clone(),
            },
            started_at: self.started_at.clone(),
            verdict: v.verdict.as_str().to_string(),
            decision: v.decision.as_str().to_string(),
            reasons: v.reasons.iter().map(|r| r.message.clone()).collect(),
            concluded_at: v.concluded_at.map(crate::util::rfc3339),
        }
    }

    fn same_request(&self, r: &RegisterRequest) -> bool {
        self.service == r.service
            && self.version == r.version
            && self.environment == r.environment.clone().unwrap_or_default()
            && self.labels == r.labels
    }

    fn state(&self) -> DeploymentState {
        match self.verdict.verdict {
            Verdict::Pending => DeploymentState::Pending,
            Verdict::Pass => DeploymentState::Pass,
            Verdict::Fail => DeploymentState::Fail,
            Verdict::Inconclusive => DeploymentState::Inconclusive,
            Verdict::Cancelled => DeploymentState::Cancelled,
            Verdict::Superseded => DeploymentState::Superseded,
        }
    }

    fn row(&self, created_at_ms: u64) -> Result<DeploymentRow, StoreError> {
        Ok(DeploymentRow {
            id: self.id.clone(),
            service: self.service.clone(),
            environment: self.environment.clone(),
            version: self.version.clone(),
            labels: serde_json::to_value(&self.labels)?,
            created_at_ms,
            state: self.state(),
            record: serde_json::to_value(self)?,
            revision: self.verdict.revision,
            updated_at_ms: created_at_ms,
        })
    }

    fn of_row(row: &DeploymentRow) -> Result<Deployment, StoreError> {
        Ok(serde_json::from_value(row.record.clone())?)
    }
}

/// What a registration did.
#[derive(Debug)]
pub enum Registered {
    Created(Deployment),
    /// The same body again: nothing changed.
    Existing(Deployment),
    /// The id exists with a different body.
    Conflict(Deployment),
}

/// Why a request about deployments could not be served.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Invalid(String),
    #[error("no deployment {0:?}")]
    NotFound(String),
    #[error("deployment {0:?} is already concluded ({1})")]
    Concluded(String, Verdict),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// One deployment being verified or inside its window.
struct Active {
    deployment: Deployment,
    /// Its store revision of the whole record (verdict revisions plus late failures).
    stored_revision: u64,
    created_at_ms: u64,
}

/// The deployments of this daemon: registration, evaluation, waiters.
pub struct Deployments {
    rt: Arc<Runtime>,
    store: Store,
    policy: VerdictPolicy,
    /// Shared with the generations before and after a reload, so a long-poll that started
    /// on an older one still sees every change.
    active: Arc<Mutex<BTreeMap<String, Active>>>,
    /// Rule states by rule name (the rule engine's memory between ticks).
    rules: Mutex<BTreeMap<String, RuleState>>,
    /// Bumped whenever any verdict changes: long-pollers wait on it (shared like `active`).
    changed: Arc<watch::Sender<u64>>,
    /// Held by every evaluation and by a reload: a reload copies the rule states and alert
    /// marks between two evaluations, never during one.
    evaluating: Arc<tokio::sync::Mutex<()>>,
    /// Set by a reload under `evaluating`: this generation evaluates no more.
    retired: std::sync::atomic::AtomicBool,
    /// Cancelled at shutdown: long-polls answer at once instead of holding the server open.
    shutdown: CancellationToken,
    /// Alert and deployment notifications.
    alerting: Arc<crate::alerting::Alerting>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Deployments {
    /// Loads what the store holds (pending deployments and those still inside their window)
    /// and restores recent outcomes into the checks' histories.
    pub async fn open(
        rt: Arc<Runtime>,
        store: Store,
        shutdown: CancellationToken,
    ) -> Result<Arc<Deployments>, StoreError> {
        let now = SystemTime::now();
        let retention = rt.config.history.retention;
        let since = unix_millis(now).saturating_sub(retention.as_millis() as u64);
        for c in &rt.checks {
            let samples = store.outcomes_since(&c.config.name, since).await?;
            c.history.lock().expect("not poisoned").restore(samples);
        }
        let window = rt.config.deploy.window;
        let mut active = BTreeMap::new();
        for row in store.list_deployments(None, 500).await? {
            let d = Deployment::of_row(&row)?;
            let started = unix_millis(d.verdict.started_at);
            let in_window = started + window.as_millis() as u64 > unix_millis(now);
            if row.state == DeploymentState::Pending || in_window {
                active.insert(
                    d.id.clone(),
                    Active {
                        stored_revision: row.revision,
                        created_at_ms: row.created_at_ms,
                        deployment: d,
                    },
                );
            }
        }
        let outbox = crate::notify::outbox::Outbox::new(
            store.clone(),
            rt.metrics.clone(),
            rt.config.notifiers.iter().map(|n| n.name.clone()).collect(),
        );
        let (alerting, rule_states) =
            crate::alerting::Alerting::open(rt.clone(), store.clone(), outbox).await?;
        let me = Arc::new(Deployments {
            policy: VerdictPolicy::from_deploy(&rt.config.deploy),
            rt,
            store,
            active: Arc::new(Mutex::new(active)),
            rules: Mutex::new(rule_states),
            changed: Arc::new(watch::channel(0).0),
            evaluating: Arc::new(tokio::sync::Mutex::new(())),
            retired: std::sync::atomic::AtomicBool::new(false),
            shutdown,
            alerting,
        });
        me.refresh_windows(now);
        me.refresh_all_latest().await?;
        Ok(me)
    }

    /// [`Deployments::refresh_latest`] for every service a check names.
    async fn refresh_all_latest(&self) -> Result<(), StoreError> {
        let mut services: Vec<&str> = self
            .rt
            .checks
            .iter()
            .map(|c| c.config.service.as_str())
            .collect();
        services.sort_unstable();
        services.dedup();
        for service in services.into_iter().filter(|s| !s.is_empty()) {
            self.refresh_latest(service).await?;
        }
        Ok(())
    }

    /// The deployments of a reloaded runtime `rt` (see [`Runtime::reloaded`]), over the same
    /// store: the active deployments and long-pollers are shared; the rule states of rules
    /// and checks that still exist, and what was notified about them, carry over; checks new
    /// to this generation get their recent outcomes from the store. From here on `self`
    /// evaluates nothing (the deployments task moves to the new generation).
    pub async fn reload(&self, rt: Arc<Runtime>) -> Arc<Deployments> {
        let since = unix_millis(SystemTime::now())
            .saturating_sub(rt.config.history.retention.as_millis() as u64);
        for c in &rt.checks {
            if self.rt.check(&c.config.name).is_some() {
                continue;
            }
            match self.store.outcomes_since(&c.config.name, since).await {
                Ok(samples) => c.history.lock().expect("not poisoned").restore(samples),
                Err(e) => {
                    tracing::warn!(check = %c.config.name, error = %e, "cannot restore recent outcomes of a new check")
                }
            }
        }
        let outbox = crate::notify::outbox::Outbox::new(
            self.store.clone(),
            rt.metrics.clone(),
            rt.config.notifiers.iter().map(|n| n.name.clone()).collect(),
        );
        let _guard = self.evaluating.lock().await;
        self.retired
            .store(true, std::sync::atomic::Ordering::Release);
        let rules: BTreeMap<String, RuleState> = {
            let old = self.rules.lock().expect("not poisoned");
            old.iter()
                .filter(|(name, _)| rt.config.rules.iter().any(|r| &r.name == *name))
                .map(|(name, state)| {
                    let mut state = state.clone();
                    state.instances.retain(|check, _| rt.check(check).is_some());
                    (name.clone(), state)
                })
                .collect()
        };
        let alerting = self.alerting.reloaded(rt.clone(), outbox);
        let me = Arc::new(Deployments {
            policy: VerdictPolicy::from_deploy(&rt.config.deploy),
            rt,
            store: self.store.clone(),
            active: self.active.clone(),
            rules: Mutex::new(rules),
            changed: self.changed.clone(),
            evaluating: self.evaluating.clone(),
            retired: std::sync::atomic::AtomicBool::new(false),
            shutdown: self.shutdown.clone(),
            alerting,
        });
        drop(_guard);
        let now = SystemTime::now();
        me.refresh_windows(now);
        if let Err(e) = me.refresh_all_latest().await {
            tracing::warn!(error = %e, "cannot read the latest deployments");
        }
        me
    }

    /// The runtime this generation serves.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// `(service, version)` of each deployment still waiting for its verdict, oldest first.
    pub fn pending(&self) -> Vec<(String, String)> {
        let active = self.active.lock().expect("not poisoned");
        let mut out: Vec<(SystemTime, String, String)> = active
            .values()
            .filter(|a| a.deployment.verdict.verdict == Verdict::Pending)
            .map(|a| {
                (
                    a.deployment.verdict.started_at,
                    a.deployment.service.clone(),
                    a.deployment.version.clone(),
                )
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, s, v)| (s, v)).collect()
    }

    /// Re-reads which deployment `{{ deployment.* }}` in `service`'s checks name.
    async fn refresh_latest(&self, service: &str) -> Result<(), StoreError> {
        let vars = match self.store.latest_deployment(service).await? {
            Some(row) => Some(DeploymentVars {
                id: row.id,
                version: row.version,
                environment: row.environment,
            }),
            None => None,
        };
        self.rt.deployed.set(service, vars);
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The notification queue (its worker is started by the daemon).
    pub fn outbox(&self) -> Arc<crate::notify::outbox::Outbox> {
        self.alerting.outbox().clone()
    }

    /// Registers a deployment (DESIGN §5): idempotent on `id`; a newer deployment of the same
    /// service and environment supersedes a pending older one.
    pub async fn register(&self, req: RegisterRequest) -> Result<Registered, DeployError> {
        if req.service.trim().is_empty() || req.version.trim().is_empty() {
            return Err(DeployError::Invalid(
                "service and version must not be empty".into(),
            ));
        }
        if !self
            .rt
            .checks
            .iter()
            .any(|c| c.config.service == req.service)
        {
            return Err(DeployError::Invalid(format!(
                "no check has service {:?}: its verdict could never be judged",
                req.service
            )));
        }
        let now = SystemTime::now();
        let id = match &req.id {
            Some(id) if valid_id(id) => id.clone(),
            Some(id) => {
                return Err(DeployError::Invalid(format!(
                    "id {id:?}: use up to 128 letters, digits, '-', '_' and '.'"
                )));
            }
            None => format!(
                "{}-{}-{:08x}",
                req.service,
                req.version,
                rand::random::<u32>()
            )
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .take(128)
            .collect(),
        };
        if let Some(row) = self.store.get_deployment(&id).await? {
            let existing = Deployment::of_row(&row)?;
            return Ok(if existing.same_request(&req) {
                Registered::Existing(existing)
            } else {
                Registered::Conflict(existing)
            });
        }
        let baseline_period = self.rt.config.deploy.baseline;
        let baseline: BTreeMap<String, Baseline> = self
            .rt
            .checks
            .iter()
            .filter(|c| c.config.service == req.service)
            .map(|c| {
                let h = c.history.lock().expect("not poisoned");
                (
                    c.config.name.clone(),
                    Baseline::of(&h, now, baseline_period),
                )
            })
            .collect();
        let deployment = Deployment {
            verdict: VerdictRecord::new(&id, &req.service, &req.version, now, &self.policy),
            id: id.clone(),
            service: req.service.clone(),
            version: req.version.clone(),
            environment: req.environment.clone().unwrap_or_default(),
            labels: req.labels.clone(),
            started_at: crate::util::rfc3339(now),
            baseline,
        };
        let created_at_ms = unix_millis(now);
        // The registration is notified in the transaction that stores it: a crash cannot
        // keep one without the other (a client retrying after the crash gets 200 for a
        // deployment whose notification is already queued).
        let notifications = self
            .alerting
            .deployment_notifications(
                crate::alerting::DeploymentEventKind::Registered,
                deployment.event(),
            )
            .iter()
            .map(|(notifier, n)| crate::notify::outbox::Outbox::queued(notifier, n))
            .collect::<Result<Vec<_>, _>>()?;
        match self
            .store
            .insert_deployment_queuing(deployment.row(created_at_ms)?, notifications)
            .await?
        {
            // From here on, its service's checks name it (set at once: runs started after
            // registration count towards its verdict).
            Insertion::Inserted => {
                self.alerting.outbox().wake();
                self.rt.deployed.set(
                    &deployment.service,
                    Some(DeploymentVars {
                        id: id.clone(),
                        version: deployment.version.clone(),
                        environment: deployment.environment.clone(),
                    }),
                );
            }
            // A concurrent registration of the same id won the race.
            Insertion::Existing(row) => {
                let existing = Deployment::of_row(&row)?;
                return Ok(if existing.same_request(&req) {
                    Registered::Existing(existing)
                } else {
                    Registered::Conflict(existing)
                });
            }
        }
        // Supersede pending older deployments of the same service and environment.
        let superseded: Vec<(String, Deployment, u64)> = {
            let active = self.active.lock().expect("not poisoned");
            active
                .values()
                .filter(|a| {
                    a.deployment.service == deployment.service
                        && a.deployment.environment == deployment.environment
                        && a.deployment.verdict.verdict == Verdict::Pending
                })
                .map(|a| {
                    let mut d = a.deployment.clone();
                    d.verdict = d.verdict.supersede(now, &id);
                    (d.id.clone(), d, a.created_at_ms)
                })
                .collect()
        };
        for (old_id, d, created) in superseded {
            self.persist(&d, created).await?;
            tracing::info!(deployment = %old_id, by = %id, "deployment superseded");
            self.update_active(d, created);
        }
        tracing::info!(deployment = %id, service = %deployment.service, version = %deployment.version, "deployment registered");
        self.update_active(deployment.clone(), created_at_ms);
        self.refresh_windows(now);
        self.changed.send_modify(|n| *n += 1);
        Ok(Registered::Created(deployment))
    }

    /// Cancels a pending verification.
    pub async fn cancel(&self, id: &str) -> Result<Deployment, DeployError> {
        let row = self
            .store
            .get_deployment(id)
            .await?
            .ok_or_else(|| DeployError::NotFound(id.to_string()))?;
        let mut d = Deployment::of_row(&row)?;
        match d.verdict.verdict {
            Verdict::Cancelled => return Ok(d),
            Verdict::Pending => {}
            other => return Err(DeployError::Concluded(id.to_string(), other)),
        }
        d.verdict = d.verdict.cancel(SystemTime::now());
        self.persist(&d, row.created_at_ms).await?;
        self.refresh_latest(&d.service).await?;
        tracing::info!(deployment = %id, "deployment cancelled");
        self.update_active(d.clone(), row.created_at_ms);
        self.refresh_windows(SystemTime::now());
        self.changed.send_modify(|n| *n += 1);
        Ok(d)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Deployment>, DeployError> {
        if let Some(a) = self.active.lock().expect("not poisoned").get(id) {
            return Ok(Some(a.deployment.clone()));
        }
        match self.store.get_deployment(id).await? {
            Some(row) => Ok(Some(Deployment::of_row(&row)?)),
            None => Ok(None),
        }
    }

    pub async fn list(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Deployment>, DeployError> {
        let rows = self.store.list_deployments(service, limit).await?;
        let active = self.active.lock().expect("not poisoned");
        rows.iter()
            .map(|r| match active.get(&r.id) {
                Some(a) => Ok(a.deployment.clone()),
                None => Ok(Deployment::of_row(r)?),
            })
            .collect()
    }

    /// The verdict of `id`, at once when concluded, else when its revision moves past
    /// `seen` (the revision the caller has) or `wait` ends.
    pub async fn wait_verdict(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<VerdictRecord, DeployError> {
        let mut rx = self.changed.subscribe();
        let first = self
            .get(id)
            .await?
            .ok_or_else(|| DeployError::NotFound(id.to_string()))?
            .verdict;
        if first.is_concluded() || wait.is_zero() {
            return Ok(first);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.changed()) => matches!(r, Ok(Ok(()))),
                _ = self.shutdown.cancelled() => false,
            };
            match changed {
                true => {
                    let now = self
                        .get(id)
                        .await?
                        .ok_or_else(|| DeployError::NotFound(id.to_string()))?
                        .verdict;
                    if now.revision != first.revision || now.is_concluded() {
                        return Ok(now);
                    }
                }
                // Timed out, or the daemon is stopping: answer with what there is.
                false => {
                    return Ok(self
                        .get(id)
                        .await?
                        .ok_or_else(|| DeployError::NotFound(id.to_string()))?
                        .verdict);
                }
            }
        }
    }

    /// The pending and firing alerts (`GET /api/v1/alerts`), `no_data` ones included.
    pub fn alerts(&self) -> Vec<rules::Alert> {
        let states = self.rules.lock().expect("not poisoned");
        let mut out = rules::alerts(
            self.rt
                .config
                .rules
                .iter()
                .filter_map(|r| states.get(&r.name).map(|s| (r, s))),
        );
        out.extend(self.alerting.no_data_alerts());
        out
    }

    fn update_active(&self, d: Deployment, created_at_ms: u64) {
        let mut active = self.active.lock().expect("not poisoned");
        active.insert(
            d.id.clone(),
            Active {
                stored_revision: d.verdict.revision,
                created_at_ms,
                deployment: d,
            },
        );
    }

    async fn persist(&self, d: &Deployment, created_at_ms: u64) -> Result<(), StoreError> {
        let record = serde_json::to_value(d)?;
        // Late failures change the record without a verdict revision: store revisions count
        // every change, so they are the verdict revision plus the late failures recorded.
        let revision = d.verdict.revision + d.verdict.late_failures.len() as u64;
        let _ = created_at_ms;
        self.store
            .update_deployment(&d.id, d.state(), &record, revision)
            .await?;
        Ok(())
    }

    /// Windows follow each service's newest deployment that was not cancelled or superseded.
    fn refresh_windows(&self, now: SystemTime) {
        let window = self.rt.config.deploy.window;
        let mut latest: HashMap<&str, (SystemTime, &Deployment)> = HashMap::new();
        let active = self.active.lock().expect("not poisoned");
        for a in active.values() {
            let d = &a.deployment;
            if matches!(d.verdict.verdict, Verdict::Cancelled | Verdict::Superseded) {
                continue;
            }
            let started = d.verdict.started_at;
            if latest
                .get(d.service.as_str())
                .is_none_or(|(t, _)| started > *t)
            {
                latest.insert(&d.service, (started, d));
            }
        }
        let m = &self.rt.metrics;
        // Each service once, however many checks it has (this runs every tick).
        let services: std::collections::BTreeSet<&str> = self
            .rt
            .checks
            .iter()
            .map(|c| c.config.service.as_str())
            .filter(|s| !s.is_empty())
            .collect();
        for service in services {
            match latest.get(service) {
                Some((started, d)) => {
                    let until = *started + window;
                    let open = now < until;
                    if open != self.rt.windows.is_active(service, now) {
                        self.rt.windows.set(service, open.then_some(until));
                    }
                    m.deployment_window_active
                        .with_label_values(&[service])
                        .set(if open { 1.0 } else { 0.0 });
                    let _ = m.deployment_info.remove_label_values(&[service]);
                    for v in ["pending", "pass", "fail", "inconclusive"] {
                        m.verdict.with_label_values(&[service, v]).set(
                            if d.verdict.verdict.as_str() == v {
                                1.0
                            } else {
                                0.0
                            },
                        );
                    }
                    m.deployment_info
                        .with_label_values(&[service, &d.environment, &d.version, &d.id])
                        .set(1.0);
                }
                None => {
                    m.deployment_window_active
                        .with_label_values(&[service])
                        .set(0.0);
                }
            }
        }
    }

    /// Evaluates rules and every pending or in-window deployment at `now`.
    async fn tick(&self, now: SystemTime) {
        let _guard = self.evaluating.lock().await;
        if self.retired.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let states = self.evaluate_rules(now);
        self.alerting.process(&states, now).await;
        for a in self.alerting.no_data_alerts() {
            self.rt
                .metrics
                .alerts
                .with_label_values(&[&a.rule, &a.severity, a.state.as_str()])
                .inc();
        }
        let any_change = self.evaluate_deployments(now, None).await;
        self.refresh_windows(now);
        if any_change {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Between ticks, as outcomes arrive: re-evaluates the pending deployments of `services`
    /// (those whose checks just ran), so a verdict follows a failing run at once instead of at
    /// the next tick. Costs nothing while no deployment of theirs is pending.
    async fn evaluate_services(&self, services: &BTreeSet<Arc<str>>, now: SystemTime) {
        let pending = {
            let active = self.active.lock().expect("not poisoned");
            active.values().any(|a| {
                !a.deployment.verdict.is_concluded()
                    && services.contains(a.deployment.service.as_str())
            })
        };
        if !pending {
            return;
        }
        let _guard = self.evaluating.lock().await;
        if self.retired.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if self.evaluate_deployments(now, Some(services)).await {
            self.refresh_windows(now);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Evaluates the active deployments (of `only` these services' pending ones, if given) and
    /// stores what changed; whether anything did. The caller holds `evaluating`.
    async fn evaluate_deployments(
        &self,
        now: SystemTime,
        only: Option<&BTreeSet<Arc<str>>>,
    ) -> bool {
        let window = self.rt.config.deploy.window;
        let todo: Vec<(Deployment, u64, u64)> = {
            let active = self.active.lock().expect("not poisoned");
            active
                .values()
                .filter(|a| {
                    only.is_none_or(|s| {
                        !a.deployment.verdict.is_concluded()
                            && s.contains(a.deployment.service.as_str())
                    })
                })
                .map(|a| (a.deployment.clone(), a.stored_revision, a.created_at_ms))
                .collect()
        };
        let mut any_change = false;
        for (mut d, stored, created) in todo {
            let input = self.tick_input(&d, now);
            if d.verdict.is_concluded() {
                for f in d.verdict.late_failures_in(&input) {
                    d.verdict.record_late_failure(f);
                }
            } else {
                let before = d.verdict.verdict;
                d.verdict = d.verdict.evaluate(&self.policy, &input);
                if d.verdict.is_concluded() && before == Verdict::Pending {
                    let first = d
                        .verdict
                        .reasons
                        .first()
                        .map(|r| r.message.clone())
                        .unwrap_or_default();
                    tracing::info!(deployment = %d.id, service = %d.service, verdict = %d.verdict.verdict, reason = %first, "verdict concluded");
                    // Queued before the verdict is stored: a crash in between concludes it
                    // again after the restart and notifies twice, never not at all.
                    self.alerting
                        .deployment_event(crate::alerting::DeploymentEventKind::Verdict, d.event())
                        .await;
                }
            }
            let revision = d.verdict.revision + d.verdict.late_failures.len() as u64;
            if revision != stored {
                if let Err(e) = self.persist(&d, created).await {
                    tracing::error!(deployment = %d.id, error = %e, "cannot store the verdict; will retry");
                    continue;
                }
                any_change = true;
            }
            let keep = !d.verdict.is_concluded() || d.verdict.started_at + window > now;
            let mut active = self.active.lock().expect("not poisoned");
            if keep {
                active.insert(
                    d.id.clone(),
                    Active {
                        stored_revision: revision,
                        created_at_ms: created,
                        deployment: d,
                    },
                );
            } else {
                active.remove(&d.id);
            }
        }
        any_change
    }

    /// Evaluates every rule at `now`; returns the new states.
    fn evaluate_rules(&self, now: SystemTime) -> BTreeMap<String, RuleState> {
        let config = &self.rt.config;
        let baselines: HashMap<String, Baseline> = {
            // The current deployment of each service provides its checks' baselines.
            let active = self.active.lock().expect("not poisoned");
            let mut newest: HashMap<&str, &Deployment> = HashMap::new();
            for a in active.values() {
                let d = &a.deployment;
                if newest
                    .get(d.service.as_str())
                    .is_none_or(|n| d.verdict.started_at > n.verdict.started_at)
                {
                    newest.insert(&d.service, d);
                }
            }
            newest
                .values()
                .flat_map(|d| d.baseline.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect()
        };
        let mut states = self.rules.lock().expect("not poisoned");
        let m = &self.rt.metrics;
        m.alerts.reset();
        for rule in &config.rules {
            let watched: Vec<_> = self
                .rt
                .checks
                .iter()
                .filter(|c| rules::watches(rule, &c.config.name, &c.config.service))
                .collect();
            let guards: Vec<_> = watched
                .iter()
                .map(|c| c.history.lock().expect("not poisoned"))
                .collect();
            let inputs: Vec<rules::CheckInput<'_>> = watched
                .iter()
                .zip(&guards)
                .map(|(c, h)| rules::CheckInput {
                    check: &c.config.name,
                    history: h,
                    in_window: self.rt.windows.is_active(&c.config.service, now),
                    baseline: baselines.get(&c.config.name),
                })
                .collect();
            let prev = states.get(&rule.name).cloned().unwrap_or_default();
            let next = rules::evaluate(rule, &inputs, &prev, now);
            for (check, inst) in &next.instances {
                let was = prev.instance(check).map(|i| i.state);
                if was != Some(inst.state) && (was.is_some() || inst.state != AlertState::Inactive)
                {
                    tracing::info!(rule = %rule.name, check = %check, state = ?inst.state, detail = %inst.explain(rule), "alert state changed");
                }
                let state = match inst.state {
                    AlertState::Pending => "pending",
                    AlertState::Firing => "firing",
                    _ => continue,
                };
                m.alerts
                    .with_label_values(&[&rule.name, &rule.severity, state])
                    .inc();
            }
            states.insert(rule.name.clone(), next);
        }
        states.clone()
    }

    fn tick_input(&self, d: &Deployment, now: SystemTime) -> TickInput {
        let since = d.verdict.started_at;
        let checks = self
            .rt
            .checks
            .iter()
            .filter(|c| c.config.service == d.service)
            .map(|c| {
                let h = c.history.lock().expect("not poisoned");
                let age = now.duration_since(since).unwrap_or_default() + Duration::from_secs(1);
                let runs = h
                    .samples_in(now, age)
                    .filter(|s| unix_millis(since) <= s.at_ms)
                    .map(crate::verdict::Run::of_sample)
                    .collect();
                let problem = h
                    .last_problem()
                    .map(|o| (o.status, RunDetail::of_outcome(o)));
                let (last_failure, last_error) = match problem {
                    Some((crate::checks::Status::Fail, detail)) => (Some(detail), None),
                    Some((crate::checks::Status::Error, detail)) => (None, Some(detail)),
                    _ => (None, None),
                };
                CheckInput {
                    name: c.config.name.clone(),
                    critical: c.config.critical,
                    runs,
                    baseline: d.baseline.get(&c.config.name).cloned(),
                    last_failure,
                    last_error,
                }
            })
            .collect();
        let states = self.rules.lock().expect("not poisoned");
        let mut signals = Vec::new();
        for rule in self.rt.config.rules.iter().filter(|r| r.rollback) {
            let Some(state) = states.get(&rule.name) else {
                continue;
            };
            for (check, inst) in &state.instances {
                let Some(c) = self.rt.check(check) else {
                    continue;
                };
                if c.config.service != d.service {
                    continue;
                }
                let signal = match (inst.state, inst.condition) {
                    (AlertState::Firing, _) => crate::verdict::RuleState::Firing,
                    (AlertState::Pending, _) => crate::verdict::RuleState::Pending,
                    (_, None) => crate::verdict::RuleState::NoData,
                    _ => continue,
                };
                signals.push(RuleSignal {
                    rule: rule.name.clone(),
                    check: Some(check.clone()),
                    state: signal,
                    message: inst.explain(rule),
                });
            }
        }
        TickInput {
            now,
            checks,
            rules: signals,
        }
    }
}

/// The deployments task, always on the generation `current` holds (a reload replaces it):
/// every [`TICK`] it stores the outcomes recorded since (one transaction), evaluates rules,
/// alerts and every active deployment; between ticks, when a check of a service inside its
/// post-deploy window ran (`wake`), it re-evaluates that service's pending verdicts at once.
pub async fn run(
    current: watch::Receiver<Arc<Deployments>>,
    outcomes: OutcomeSink,
    mut wake: mpsc::UnboundedReceiver<Arc<str>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = SystemTime::now();
    // Outcomes are stored once a tick, in one transaction: a transaction per run cost more
    // than the runs with a few hundred checks (BENCHMARKS.md).
    let mut touched: BTreeSet<Arc<str>> = BTreeSet::new();
    loop {
        let full_tick = tokio::select! {
            _ = shutdown.cancelled() => {
                // Keep what already arrived.
                let batch = outcomes.take();
                let deployments = current.borrow().clone();
                if !batch.is_empty() && let Err(e) = deployments.store.append_outcomes(&batch).await {
                    tracing::warn!(error = %e, "cannot store the last outcomes");
                }
                return;
            }
            _ = tick.tick() => true,
            Some(service) = wake.recv() => {
                touched.insert(service);
                while let Ok(service) = wake.try_recv() {
                    touched.insert(service);
                }
                false
            }
        };
        let deployments = current.borrow().clone();
        if !full_tick {
            deployments
                .evaluate_services(&touched, SystemTime::now())
                .await;
            touched.clear();
            continue;
        }
        touched.clear();
        let rt = deployments.rt.clone();
        let batch = outcomes.take();
        if !batch.is_empty()
            && let Err(e) = deployments.store.append_outcomes(&batch).await
        {
            tracing::warn!(error = %e, "cannot store outcomes");
        }
        let now = SystemTime::now();
        deployments.tick(now).await;
        if now.duration_since(last_prune).unwrap_or_default() > Duration::from_secs(60) {
            last_prune = now;
            let retention = rt.config.history.retention;
            let horizon = unix_millis(now).saturating_sub(retention.as_millis() as u64);
            if let Err(e) = deployments.store.prune_outcomes(horizon).await {
                tracing::warn!(error = %e, "cannot prune old outcomes");
            }
            // Delivered or dropped notifications are kept a day for inspection.
            let keep = rt.config.notifications.max_age + Duration::from_secs(24 * 3600);
            let horizon = unix_millis(now).saturating_sub(keep.as_millis() as u64);
            if let Err(e) = deployments.store.prune_outbox(horizon).await {
                tracing::warn!(error = %e, "cannot prune old notifications");
            }
        }
    }
}
