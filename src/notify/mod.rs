//! Notifications (DESIGN §8): what is sent ([`Notification`]: an alert firing or resolving, a
//! deployment registered, a verdict concluded), to whom (`[[notifier]]`: one module per
//! receiver type), and how nothing is lost on the way (the persisted outbox in
//! [`outbox`]: retries with backoff and jitter, at-least-once with a stable dedup key).
//!
//! A receiver only renders and sends one notification; it never retries, sleeps or stores
//! anything itself. Its error says whether trying again could help ([`SendError::retry`]) and
//! never carries a secret (URLs with tokens, passwords, routing keys are not echoed).

pub mod alertmanager;
pub mod email;
pub mod grafana;
pub mod outbox;
pub mod pagerduty;
pub(crate) mod shared;
pub mod slack;
pub mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::reader::{Cx, TableReader};
use crate::rules::{Comparison, ThresholdSource};

/// Every notifier type DESIGN names.
pub const NOTIFIER_TYPES: &[&str] = &[
    "email",
    "webhook",
    "slack",
    "pagerduty",
    "alertmanager",
    "grafana",
];

/// Deployment events a notifier can subscribe to with `events = [...]`.
pub const EVENT_NAMES: &[&str] = &["deployment_registered", "verdict"];

/// One notification, as queued in the outbox and as the `webhook` receiver posts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per notification (dedup key + what happened + when): receivers that
    /// deduplicate deliveries use it, since delivery is at-least-once.
    pub id: String,
    /// Stable across the notifications of one alert instance or one deployment: rule + check
    /// (+ deployment) for alerts, `deployment:<id>` for deployment events. PagerDuty's
    /// `dedup_key`, Grafana's annotation, Alertmanager's identity all hang on it.
    pub dedup_key: String,
    /// When bakewatch decided to send it (RFC 3339).
    pub created_at: String,
    /// The status page of the daemon that sent it (`[server] external_url`).
    pub link: String,
    #[serde(flatten)]
    pub event: Event,
}

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Alert(AlertEvent),
    DeploymentRegistered(DeploymentEvent),
    Verdict(DeploymentEvent),
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// An alert instance (rule × check) that fired, is still firing (a repeat), or resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub status: AlertStatus,
    pub rule: String,
    pub check: String,
    pub service: String,
    pub severity: String,
    /// `failure_ratio`, `latency_p95`, `value:free_ratio`, … or `no_data` for a check that
    /// stopped producing outcomes.
    pub signal: String,
    /// The signal's latest value (seconds for latency); None when there was none.
    pub value: Option<f64>,
    pub comparison: Comparison,
    pub threshold: f64,
    /// Steady or post-deploy (tightened inside the deployment window).
    pub threshold_source: ThresholdSource,
    pub for_seconds: f64,
    /// The rule's trailing window (`over`).
    pub window_seconds: f64,
    /// One line for people: `failure_ratio 0.031 above 0.005 (post-deploy) for 30s`.
    pub summary: String,
    /// When the condition became true (RFC 3339).
    pub starts_at: String,
    /// When it resolved (RFC 3339); None while firing.
    pub ends_at: Option<String>,
    /// The service's current deployment when the alert fired, if any.
    pub deployment: Option<DeploymentRef>,
    /// Firing fails the deployment's verdict.
    pub rollback: bool,
}

/// Which deployment a notification concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRef {
    pub id: String,
    pub service: String,
    pub version: String,
    pub environment: String,
}

/// A deployment registered, or its verdict concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentEvent {
    pub deployment: DeploymentRef,
    /// Registration time (RFC 3339).
    pub started_at: String,
    /// `pending` at registration; then `pass`, `fail`, `inconclusive`, `cancelled`,
    /// `superseded`.
    pub verdict: String,
    /// `wait`, `proceed`, `rollback`, `hold`.
    pub decision: String,
    /// The verdict's reasons, one line each.
    pub reasons: Vec<String>,
    /// When the verdict concluded (RFC 3339).
    pub concluded_at: Option<String>,
}

impl Notification {
    /// A one-line title: `[FIRING] api-error-rate on api-health (shop)`,
    /// `shop 2.0.0 deployed to prod`, `shop 2.0.0: verdict fail (rollback)`.
    pub fn title(&self) -> String {
        match &self.event {
            Event::Alert(a) => {
                let service = if a.service.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", a.service)
                };
                format!(
                    "[{}] {} on {}{service}",
                    a.status.as_str().to_ascii_uppercase(),
                    a.rule,
                    a.check
                )
            }
            Event::DeploymentRegistered(d) => {
                let env = if d.deployment.environment.is_empty() {
                    String::new()
                } else {
                    format!(" to {}", d.deployment.environment)
                };
                format!(
                    "{} {} deployed{env}",
                    d.deployment.service, d.deployment.version
                )
            }
            Event::Verdict(d) => format!(
                "{} {}: verdict {} ({})",
                d.deployment.service, d.deployment.version, d.verdict, d.decision
            ),
        }
    }
}

/// What a successful send returns: a receiver-side reference to keep (Grafana's annotation
/// id), handed back on the next send with the same dedup key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    pub reference: Option<String>,
}

/// Why a send did not go through. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// False when trying again cannot help (the receiver rejected the payload: a 4xx other
    /// than 408 / 429, a bad address): the notification is dropped and counted.
    pub retry: bool,
}

impl SendError {
    pub fn retry(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retry: true,
        }
    }

    pub fn reject(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retry: false,
        }
    }

    /// From an HTTP answer that was not 2xx: 408, 429 and 5xx are worth retrying.
    /// The body is cut to 200 characters, marked with "…" when cut, so a secret that the
    /// answer echoes and the cut splits is still recognised (see `runtime::Redactor`).
    pub fn from_status(status: u16, body: &str) -> SendError {
        let shown: String = body.chars().take(200).collect();
        let cut = if shown.len() < body.len() { "…" } else { "" };
        let shown = shown.trim();
        let message = if shown.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {shown}{cut}")
        };
        SendError {
            message,
            retry: status == 408 || status == 429 || status >= 500,
        }
    }
}

/// A receiver, validated and ready to send (clients built at load).
#[derive(Debug)]
pub enum Receiver {
    Email(email::Email),
    Webhook(webhook::Webhook),
    Slack(slack::Slack),
    PagerDuty(pagerduty::PagerDuty),
    Alertmanager(alertmanager::Alertmanager),
    Grafana(grafana::Grafana),
}

macro_rules! each_receiver {
    ($self:expr, $r:ident => $body:expr) => {
        match $self {
            Receiver::Email($r) => $body,
            Receiver::Webhook($r) => $body,
            Receiver::Slack($r) => $body,
            Receiver::PagerDuty($r) => $body,
            Receiver::Alertmanager($r) => $body,
            Receiver::Grafana($r) => $body,
        }
    };
}

impl Receiver {
    /// Reads the type's own keys from a `[[notifier]]` table (`timeout` is the notifier's:
    /// every send ends within it). `None` when a problem was reported.
    pub fn parse(
        kind: &str,
        timeout: Duration,
        t: &mut TableReader,
        cx: &mut Cx,
    ) -> Option<Receiver> {
        match kind {
            "email" => email::Email::parse(t, cx, timeout).map(Receiver::Email),
            "webhook" => webhook::Webhook::parse(t, cx, timeout).map(Receiver::Webhook),
            "slack" => slack::Slack::parse(t, cx, timeout).map(Receiver::Slack),
            "pagerduty" => pagerduty::PagerDuty::parse(t, cx, timeout).map(Receiver::PagerDuty),
            "alertmanager" => {
                alertmanager::Alertmanager::parse(t, cx, timeout).map(Receiver::Alertmanager)
            }
            "grafana" => grafana::Grafana::parse(t, cx, timeout).map(Receiver::Grafana),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Receiver::Email(_) => "email",
            Receiver::Webhook(_) => "webhook",
            Receiver::Slack(_) => "slack",
            Receiver::PagerDuty(_) => "pagerduty",
            Receiver::Alertmanager(_) => "alertmanager",
            Receiver::Grafana(_) => "grafana",
        }
    }

    /// Sends one notification. `reference` is what the previous successful send with the same
    /// dedup key returned in [`Sent::reference`].
    pub async fn send(&self, n: &Notification, reference: Option<&str>) -> Result<Sent, SendError> {
        each_receiver!(self, r => r.send(n, reference).await)
    }

    /// Values to scrub from logs and errors.
    pub fn secret_values(&self) -> Vec<String> {
        each_receiver!(self, r => r.secret_values())
    }

    /// While an alert fires, it is sent again at least this often (Alertmanager forgets an
    /// alert that is not re-sent before its `endsAt`). None: only the rule's `repeat`.
    pub fn resend(&self) -> Option<Duration> {
        match self {
            Receiver::Alertmanager(a) => Some(a.resend()),
            _ => None,
        }
    }
}
