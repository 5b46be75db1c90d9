//! The daemon lifecycle and the one-shot commands: load config, start the HTTP server and the
//! scheduler under one cancellation token, wait for a signal, shut down in order.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::OutputFormat;
use crate::config::{self, ConfigError};
use crate::metrics::Metrics;
use crate::report;
use crate::runtime::Runtime;
use crate::scheduler::{self, Heartbeat};

/// How long running checks may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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

/// `bakewatch run`.
pub async fn run_daemon(path: &Path) -> Result<(), AppError> {
    // Signal handlers first: until they exist, a signal kills the process outright.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

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
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let rt = Arc::new(Runtime::new(config, metrics).with_events(events_tx));

    // Storage before the listener: nothing is accepted that could not be kept.
    let store = crate::store::Store::open(&store_path)
        .await
        .with_context(|| format!("opening storage {}", store_path.display()))?;
    let shutdown = CancellationToken::new();
    let deployments = crate::deployments::Deployments::open(rt.clone(), store, shutdown.clone())
        .await
        .context("loading deployments from storage")?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;

    let tracker = TaskTracker::new();
    let state = crate::http::AppState {
        rt: rt.clone(),
        deployments: Some(deployments.clone()),
    };
    let server = tokio::spawn(crate::http::serve(listener, state, shutdown.clone()));
    let deploy_task = tokio::spawn(crate::deployments::run(
        deployments.clone(),
        events_rx,
        shutdown.clone(),
    ));
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
        shutdown.clone(),
    ));
    let heartbeat = Arc::new(Heartbeat::default());
    scheduler::start(rt.clone(), &tracker, shutdown.clone(), heartbeat);
    rt.ready.store(true, Ordering::Release);
    tracing::info!(
        listen = %bound,
        checks = rt.checks.len(),
        config = %path.display(),
        "bakewatch started"
    );

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                tracing::warn!("SIGHUP received: config reload is not implemented in this version; keeping the running config");
            }
        }
    }

    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "checks still running at the end of the grace period were abandoned");
    }
    if let Err(e) = deploy_task.await {
        tracing::warn!(error = %e, "deployments task ended abnormally");
    }
    // A send in progress is abandoned: it stays queued and goes out after the restart.
    if let Err(e) = outbox_task.await {
        tracing::warn!(error = %e, "notification task ended abnormally");
    }
    let served = server.await;
    // Last: everything that could still write has stopped; queued writes are flushed.
    let store = deployments.store().clone();
    drop(deployments);
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
