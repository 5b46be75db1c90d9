//! The daemon lifecycle and the one-shot commands: load config, start the HTTP server and the
//! scheduler under one cancellation token, tell systemd when ready, reload on SIGHUP or
//! `POST /-/reload` (a new generation of runtime, scheduler and deployments over the same
//! store and metrics), and on SIGTERM / SIGINT shut down in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checks::Status;
use crate::cli::OutputFormat;
use crate::config::{self, ConfigError};
use crate::deployments::Deployments;
use crate::http::reload::{Request as ReloadRequest, Summary};
use crate::metrics::Metrics;
use crate::report;
use crate::runtime::Runtime;
use crate::scheduler::{self, Heartbeat};
use crate::sdnotify::Notifier;

/// How long running checks may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often the systemd `STATUS=` line is recomputed (sent only when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Why a command did not succeed; `main` maps each to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// One generation of the daemon: what one loaded config runs. A reload starts the next one
/// and stops this one's check loops and notification worker.
struct Generation {
    rt: Arc<Runtime>,
    deployments: Arc<Deployments>,
    /// A child of the daemon's shutdown token: cancelled at shutdown or when replaced.
    token: CancellationToken,
    outbox_task: tokio::task::JoinHandle<()>,
}

/// What lives across generations.
struct Daemon {
    path: PathBuf,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    heartbeat: Arc<Heartbeat>,
    state: crate::http::AppState,
    current: tokio::sync::watch::Sender<Arc<Deployments>>,
    notifier: Arc<Notifier>,
}

impl Daemon {
    /// Starts the scheduler and the notification worker of a generation.
    fn start(&self, rt: Arc<Runtime>, deployments: Arc<Deployments>) -> Generation {
        let token = self.shutdown.child_token();
        let outbox_task = tokio::spawn(crate::notify::outbox::run(
            deployments.outbox(),
            crate::notify::outbox::Delivery {
                receivers: rt
                    .config
                    .notifiers
                    .iter()
                    .map(|n| (n.name.clone(), n.receiver.clone()))
                    .collect(),
                policy: rt.config.notifications.clone(),
                redactor: rt.redactor.clone(),
            },
            token.clone(),
        ));
        scheduler::start(
            rt.clone(),
            &self.tracker,
            token.clone(),
            self.heartbeat.clone(),
        );
        Generation {
            rt,
            deployments,
            token,
            outbox_task,
        }
    }

    /// Reloads the config (SIGHUP, `POST /-/reload`): validates the whole new config, then
    /// swaps generations; a bad config keeps `running` as it is. Logs one line either way.
    async fn reload(&self, running: &mut Generation) -> Result<Summary, Vec<String>> {
        self.notifier.reloading();
        let result = self.try_reload(running).await;
        let metrics = &running.rt.metrics;
        match &result {
            Ok(s) => {
                metrics.config_last_reload_successful.set(1.0);
                metrics
                    .config_last_reload_success_timestamp_seconds
                    .set(crate::util::unix_seconds(SystemTime::now()));
                tracing::info!(
                    config = %self.path.display(),
                    checks = s.checks,
                    kept = s.kept,
                    added = ?s.added,
                    removed = ?s.removed,
                    rules = s.rules,
                    "config reloaded"
                );
            }
            Err(errors) => {
                metrics.config_last_reload_successful.set(0.0);
                tracing::error!(
                    config = %self.path.display(),
                    errors = %errors.join("; "),
                    "config reload failed; keeping the running config"
                );
            }
        }
        self.notifier.ready();
        result
    }

    async fn try_reload(&self, running: &mut Generation) -> Result<Summary, Vec<String>> {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| vec![format!("loading the config: {e}")])?;
        let config = loaded.map_err(|e| {
            e.diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        })?;
        let old = running.rt.clone();
        let needs_restart = [
            (
                "[server] listen",
                old.config.server.listen != config.server.listen,
            ),
            (
                "[storage] path",
                old.config.storage.path != config.storage.path,
            ),
            (
                "[server] request_timeout",
                old.config.server.request_timeout != config.server.request_timeout,
            ),
        ];
        for (what, changed) in needs_restart {
            if changed {
                tracing::warn!(
                    setting = what,
                    "changed in the config: takes effect at the next restart, not on reload"
                );
            }
        }
        // The old loops stop scheduling first, so no new run records into a history that
        // is about to move; a run in flight finishes in the background (tracked).
        running.token.cancel();
        let (rt, kept) = Runtime::reloaded(config, &old);
        let rt = Arc::new(rt);
        let added: Vec<String> = rt
            .checks
            .iter()
            .filter(|c| old.check(&c.config.name).is_none())
            .map(|c| c.config.name.clone())
            .collect();
        let removed: Vec<String> = old
            .checks
            .iter()
            .filter(|c| rt.check(&c.config.name).is_none())
            .map(|c| c.config.name.clone())
            .collect();
        // Series whose labels no check of the new generation has go away.
        for c in &old.checks {
            let same = rt.check(&c.config.name).is_some_and(|n| {
                n.config.service == c.config.service && n.config.type_name() == c.config.type_name()
            });
            if !same {
                old.metrics.remove_check(&c.metrics);
            }
        }
        let deployments = running.deployments.reload(rt.clone()).await;
        let old_outbox = std::mem::replace(&mut running.outbox_task, tokio::spawn(async {}));
        if tokio::time::timeout(Duration::from_secs(5), old_outbox)
            .await
            .is_err()
        {
            tracing::warn!("the previous notification worker did not stop in time");
        }
        let next = self.start(rt.clone(), deployments.clone());
        rt.ready.store(true, Ordering::Release);
        self.state.swap(rt.clone(), Some(deployments.clone()));
        let _ = self.current.send(deployments);
        let summary = Summary {
            checks: rt.checks.len(),
            added,
            removed,
            kept: kept.len(),
            rules: rt.config.rules.len(),
        };
        *running = next;
        Ok(summary)
    }
}

/// The systemd `STATUS=` line: how many checks run, how many fail, and pending verdicts,
/// e.g. `12 checks, 1 failing; shop 2.0.0 pending`.
pub fn status_line(
    checks: usize,
    failing: usize,
    pending: &[(String, String)],
    reload_failed: bool,
) -> String {
    let mut s = format!(
        "{checks} check{}, {failing} failing",
        if checks == 1 { "" } else { "s" }
    );
    for (service, version) in pending {
        s.push_str(&format!("; {service} {version} pending"));
    }
    if reload_failed {
        s.push_str("; last reload failed (running the previous config)");
    }
    s
}

fn current_status(state: &crate::http::AppState) -> String {
    let rt = state.runtime();
    let failing = rt
        .checks
        .iter()
        .filter(|c| {
            c.history
                .lock()
                .expect("not poisoned")
                .last()
                .is_some_and(|o| matches!(o.status, Status::Fail | Status::Error))
        })
        .count();
    let pending = state.deployments().map(|d| d.pending()).unwrap_or_default();
    let reload_failed = rt.metrics.config_last_reload_successful.get() == 0.0;
    status_line(rt.checks.len(), failing, &pending, reload_failed)
}

/// Keeps systemd informed: `STATUS=` when it changes, `WATCHDOG=1` every half watchdog
/// interval while the scheduler's heartbeat is fresh. Runs until `stop`.
async fn notify_loop(
    notifier: Arc<Notifier>,
    state: crate::http::AppState,
    heartbeat: Arc<Heartbeat>,
    stop: CancellationToken,
) {
    let watchdog = crate::sdnotify::watchdog_interval();
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchdog_tick =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = String::new();
    let mut starving = false;
    if let Some(w) = watchdog {
        tracing::info!(interval = ?w, "feeding the systemd watchdog while the scheduler runs");
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = status_tick.tick() => {
                let status = current_status(&state);
                if status != last_status {
                    notifier.status(&status);
                    last_status = status;
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                let interval = watchdog.expect("guarded");
                let age = heartbeat.age();
                if scheduler::watchdog_alive(age, interval) {
                    notifier.watchdog();
                    starving = false;
                } else if !starving {
                    starving = true;
                    tracing::error!(heartbeat_age = ?age, "the scheduler has not made progress: no longer feeding the systemd watchdog");
                }
            }
        }
    }
}

/// `bakewatch run`.
pub async fn run_daemon(path: &Path) -> Result<(), AppError> {
    // Signal handlers first: until they exist, a signal kills the process outright.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let notifier = Arc::new(Notifier::from_env());

    let config = config::load(path)?;
    let metrics = Arc::new(Metrics::new());
    metrics.config_last_reload_successful.set(1.0);
    metrics
        .config_last_reload_success_timestamp_seconds
        .set(crate::util::unix_seconds(SystemTime::now()));
    let listen = config.server.listen;
    let store_path = config.storage.path.clone();
    if config.server.token.is_none() {
        tracing::warn!(listen = %listen, "no [server] token: registering and cancelling deployments is open to anyone who can reach the listener");
    }
    let (sink, wake_rx) = crate::runtime::OutcomeSink::new();
    let rt = Arc::new(Runtime::new(config, metrics).with_events(sink.clone()));

    // Storage before the listener: nothing is accepted that could not be kept.
    let store = crate::store::Store::open(&store_path)
        .await
        .with_context(|| format!("opening storage {}", store_path.display()))?;
    let shutdown = CancellationToken::new();
    let deployments = Deployments::open(rt.clone(), store, shutdown.clone())
        .await
        .context("loading deployments from storage")?;

    let listener =
        crate::http::listen(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;

    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<ReloadRequest>(4);
    let state =
        crate::http::AppState::new(rt.clone(), Some(deployments.clone())).with_reload(reload_tx);
    let server = tokio::spawn(crate::http::serve(
        listener,
        state.clone(),
        shutdown.clone(),
    ));
    let (current, current_rx) = tokio::sync::watch::channel(deployments.clone());
    let deploy_task = tokio::spawn(crate::deployments::run(
        current_rx,
        sink,
        wake_rx,
        shutdown.clone(),
    ));
    let daemon = Daemon {
        path: path.to_path_buf(),
        tracker: TaskTracker::new(),
        shutdown: shutdown.clone(),
        heartbeat: Arc::new(Heartbeat::default()),
        state: state.clone(),
        current,
        notifier: notifier.clone(),
    };
    let mut running = daemon.start(rt.clone(), deployments);
    rt.ready.store(true, Ordering::Release);
    tracing::info!(
        listen = %bound,
        checks = rt.checks.len(),
        config = %path.display(),
        "bakewatch started"
    );
    drop(rt);
    // Config, storage, listener and scheduler are up.
    notifier.ready();
    let notify_stop = CancellationToken::new();
    let notify_task = tokio::spawn(notify_loop(
        notifier.clone(),
        state.clone(),
        daemon.heartbeat.clone(),
        notify_stop.clone(),
    ));

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = daemon.reload(&mut running).await;
            }
            Some(req) = reload_rx.recv() => {
                tracing::info!("POST /-/reload: reloading the config");
                let _ = req.reply.send(daemon.reload(&mut running).await);
            }
        }
    }

    notifier.stopping();
    shutdown.cancel();
    reload_rx.close();
    daemon.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, daemon.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "checks still running at the end of the grace period were abandoned");
    }
    if let Err(e) = deploy_task.await {
        tracing::warn!(error = %e, "deployments task ended abnormally");
    }
    // A send in progress is abandoned: it stays queued and goes out after the restart.
    if let Err(e) = running.outbox_task.await {
        tracing::warn!(error = %e, "notification task ended abnormally");
    }
    let served = server.await;
    notify_stop.cancel();
    let _ = notify_task.await;
    // Last: everything that could still write has stopped; queued writes are flushed.
    let store = running.deployments.store().clone();
    drop(running.deployments);
    drop(daemon);
    drop(state);
    store.close().await;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context("HTTP server").into()),
        Err(e) => return Err(anyhow::anyhow!("HTTP server task: {e}").into()),
    }
    tracing::info!("bakewatch stopped");
    Ok(())
}

/// `bakewatch validate`: the summary line on success.
pub fn validate(path: &Path) -> Result<String, AppError> {
    let config = config::load(path)?;
    Ok(format!(
        "{}: OK ({} checks, {} rules, {} files)",
        path.display(),
        config.checks.len(),
        config.rules.len(),
        config.files.len()
    ))
}

/// `bakewatch once`: runs the chosen checks concurrently; returns the report and whether all passed.
pub async fn once(
    path: &Path,
    names: &[String],
    format: OutputFormat,
) -> Result<(String, bool), AppError> {
    let config = config::load(path)?;
    for n in names {
        if config.check(n).is_none() {
            let known: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
            return Err(AppError::Usage(format!(
                "no check named {n:?} (known: {})",
                known.join(", ")
            )));
        }
    }
    let concurrency = config.scheduler.concurrency;
    let rt = Arc::new(Runtime::new(config, Arc::new(Metrics::new())));
    let chosen: Vec<_> = rt
        .checks
        .iter()
        .filter(|c| names.is_empty() || names.contains(&c.config.name))
        .cloned()
        .collect();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for c in chosen {
        let (rt, permits) = (rt.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let o = rt.run_check(&c).await;
            (c, o)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(|e| anyhow::anyhow!("check task: {e}"))?);
    }
    let rows: Vec<report::Row> = results
        .iter()
        .map(|(c, o)| report::Row {
            check: &c.config,
            outcome: o.clone(),
        })
        .collect();
    let all_pass = rows.iter().all(|r| r.outcome.status.is_success());
    let text = match format {
        OutputFormat::Table => report::table(&rows),
        OutputFormat::Json => report::json(&rows),
        OutputFormat::Junit => report::junit(&rows),
    };
    Ok((text, all_pass))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_counts_checks_and_names_pending_verdicts() {
        assert_eq!(status_line(1, 0, &[], false), "1 check, 0 failing");
        assert_eq!(
            status_line(
                12,
                1,
                &[("shop".into(), "2.0.0".into()), ("api".into(), "7".into())],
                false
            ),
            "12 checks, 1 failing; shop 2.0.0 pending; api 7 pending"
        );
        assert!(
            status_line(3, 0, &[], true)
                .ends_with("last reload failed (running the previous config)")
        );
    }
}
