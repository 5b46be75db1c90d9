//! bakewatch keeps watch over a service after each deployment and all the time in between:
//! it runs deep health checks on schedules, keeps their recent history, and exposes every
//! result as Prometheus metrics and over a JSON API.
//!
//! # Layout
//!
//! - [`config`]: raw TOML → validated [`config::Config`]; every problem as `file:line:col`.
//! - [`checks`]: the [`checks::Outcome`] of a run, the shared assertion vocabulary
//!   ([`checks::assert`]), and one module per check type.
//! - [`journey`]: the `journey` check type: ordered HTTP steps with captures, cookies,
//!   retries, budgets and cleanup.
//! - [`template`]: `{{ }}` templates (journey captures, secrets, deployment variables).
//! - [`cronexpr`]: POSIX crontab expressions on top of the `cron` crate.
//! - [`scheduler`]: when each check runs (interval / cron, jitter, concurrency limit).
//! - [`runtime`]: the one path an outcome flows through (timeout, redaction, history,
//!   metrics, logs).
//! - [`history`]: compact per-check recent outcomes and window statistics.
//! - [`deployments`]: registration, supersede, cancel, baseline freeze, the post-deploy
//!   window, and the task that evaluates rules and verdicts as outcomes arrive.
//! - [`alerting`]: alert states → notifications (repeat, resolve, no data), persisted.
//! - [`rules`]: the rule engine: signals, steady vs post-deploy thresholds, alert states.
//! - [`metrics`]: every metric family, defined in one place.
//! - [`notify`]: notifications: what is sent, the receivers, and the persisted outbox.
//! - [`verdict`]: a deployment's verdict as a pure state machine over outcomes and baseline.
//! - [`store`]: durable state in one SQLite file (deployments, outcomes, rule states, outbox).
//! - [`http`]: the axum server: `/metrics`, health endpoints, the JSON API.
//! - [`report`]: `bakewatch once` output (table, JSON, JUnit).
//! - [`app`]: the daemon lifecycle (reload on SIGHUP, shutdown) and the one-shot commands.
//! - [`sdnotify`]: the systemd notification protocol (ready, status, reload, watchdog).
//! - [`client`]: `deploy` / `verdict`: register with and wait on one or more daemons over HTTP.
//! - [`cli`]: command-line definitions.

pub mod alerting;
pub mod app;
pub mod checks;
pub mod cli;
pub mod client;
pub mod config;
pub mod cronexpr;
pub mod deployments;
pub mod history;
pub mod http;
pub mod journey;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod rules;
pub mod runtime;
pub mod scheduler;
pub mod sdnotify;
pub mod store;
pub mod template;
pub mod util;
pub mod verdict;
