//! The `alertmanager` receiver: alerts POSTed to Alertmanager's `/api/v2/alerts`, where its
//! routing, grouping, silences and inhibitions take over.
//!
//! Alertmanager forgets an alert whose `endsAt` has passed, so while an alert fires it is
//! sent again at least every `resend` (see [`super::Receiver::resend`]) with `endsAt` four
//! `resend`s ahead: should bakewatch stop, Alertmanager resolves the alert by itself. A
//! resolved alert is sent with its real `endsAt`. An alert's identity in Alertmanager is its
//! label set (`alertname` = rule, `check`, `service`, `severity`, `source`), the same for every
//! notification of one alert instance.
//!
//! Deployment events are not alerts: configuration does not route them here, and `send`
//! ignores them.
//!
//! ```toml
//! [[notifier]]
//! name = "am"
//! type = "alertmanager"
//! url = "http://127.0.0.1:9093"
//! resend = "1m"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use reqwest::Url;
use serde_json::json;

use super::shared;
use super::{AlertStatus, Event, Notification, SendError, Sent};
use crate::config::reader::{At, Cx, TableReader};

/// Default `resend`.
pub const DEFAULT_RESEND: Duration = Duration::from_secs(60);

/// `endsAt` of a firing alert is this many `resend`s after it was sent.
const ENDS_AFTER_RESENDS: u32 = 4;

#[derive(Debug)]
pub struct Alertmanager {
    /// `{url}/api/v2/alerts`.
    alerts_url: Url,
    resend: Duration,
    client: reqwest::Client,
    timeout: Duration,
}

impl Alertmanager {
    pub fn parse(t: &mut TableReader, cx: &mut Cx, timeout: Duration) -> Option<Alertmanager> {
        let before = cx.diags.len();
        let url = shared::req_url(t, cx, "url");
        let resend = match t.opt::<At<Duration>>("resend", cx) {
            Some(r) if r.value.is_zero() => {
                cx.error(r.span, "resend: must be more than zero");
                DEFAULT_RESEND
            }
            Some(r) => r.value,
            None => DEFAULT_RESEND,
        };
        let client = shared::build_client(t, cx, timeout, true);
        if cx.diags.len() > before {
            return None;
        }
        Some(Alertmanager {
            alerts_url: shared::join(&url?, "/api/v2/alerts"),
            resend,
            client: client?,
            timeout,
        })
    }

    pub async fn send(&self, n: &Notification, reference: Option<&str>) -> Result<Sent, SendError> {
        let _ = reference;
        let Some(alert) = self.alert(n) else {
            return Ok(Sent::default());
        };
        shared::post_json(
            &self.client,
            self.alerts_url.clone(),
            &json!([alert]),
            self.timeout,
        )
        .await
        .map(|_| Sent::default())
        .map_err(|e| shared::scrub(e, &self.secret_values()))
    }

    pub fn secret_values(&self) -> Vec<String> {
        shared::url_secrets(&self.alerts_url)
    }

    pub fn resend(&self) -> Duration {
        self.resend
    }

    /// The alert as Alertmanager's API takes it; None for deployment events.
    fn alert(&self, n: &Notification) -> Option<serde_json::Value> {
        let Event::Alert(a) = &n.event else {
            return None;
        };
        let mut labels = BTreeMap::new();
        labels.insert("alertname", a.rule.clone());
        labels.insert("check", a.check.clone());
        if !a.service.is_empty() {
            labels.insert("service", a.service.clone());
        }
        if !a.severity.is_empty() {
            labels.insert("severity", a.severity.clone());
        }
        labels.insert("source", "bakewatch".to_string());

        let mut annotations = BTreeMap::new();
        let summary = if a.summary.is_empty() {
            n.title()
        } else {
            a.summary.clone()
        };
        annotations.insert("summary", summary);
        annotations.insert("description", shared::describe(n));
        annotations.insert("signal", a.signal.clone());
        annotations.insert("value", shared::value_text(a.value));
        annotations.insert("threshold", shared::threshold_text(a));
        annotations.insert("window", shared::seconds_text(a.window_seconds));
        if let Some(d) = &a.deployment {
            annotations.insert("deployment_id", d.id.clone());
            annotations.insert("deployment_version", d.version.clone());
            if !d.environment.is_empty() {
                annotations.insert("deployment_environment", d.environment.clone());
            }
        }

        let sent_at = shared::parse_time(&n.created_at).unwrap_or_else(Utc::now);
        let ends_at = match (a.status, &a.ends_at) {
            (AlertStatus::Resolved, Some(end)) => time(end),
            (AlertStatus::Resolved, None) => shared::rfc3339(sent_at),
            (AlertStatus::Firing, _) => {
                let ahead = self.resend.saturating_mul(ENDS_AFTER_RESENDS);
                let ahead = chrono::Duration::from_std(ahead).unwrap_or(chrono::Duration::MAX);
                shared::rfc3339(
                    sent_at
                        .checked_add_signed(ahead)
                        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC),
                )
            }
        };
        let mut alert = json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": time(&a.starts_at),
            "endsAt": ends_at,
        });
        if !n.link.is_empty() {
            alert["generatorURL"] = json!(n.link);
        }
        Some(alert)
    }
}

/// RFC 3339 in UTC when it parses; as given otherwise.
fn time(s: &str) -> String {
    shared::parse_time(s)
        .map(shared::rfc3339)
        .unwrap_or_else(|| s.to_string())
}
