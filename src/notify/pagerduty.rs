//! The `pagerduty` receiver: Events API v2. An alert triggers (firing) or resolves an
//! incident keyed by the notification's `dedup_key`, so repeats and retries land on the same
//! incident; deployment events go out as Change Events.
//!
//! ```toml
//! [[notifier]]
//! name = "oncall"
//! type = "pagerduty"
//! routing_key = { env = "PAGERDUTY_ROUTING_KEY" }
//! # url = "https://events.pagerduty.com"   (the default; EU accounts use events.eu.pagerduty.com)
//! ```

use std::time::Duration;

use reqwest::Url;
use serde_json::{Value, json};

use super::shared;
use super::{AlertStatus, Event, Notification, SendError, Sent};
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader};

pub const DEFAULT_URL: &str = "https://events.pagerduty.com";

/// PagerDuty cuts summaries at 1024 characters; we do it ourselves so nothing is rejected.
const MAX_SUMMARY: usize = 1024;

#[derive(Debug)]
pub struct PagerDuty {
    routing_key: Secret,
    url: Url,
    client: reqwest::Client,
    timeout: Duration,
}

impl PagerDuty {
    pub fn parse(t: &mut TableReader, cx: &mut Cx, timeout: Duration) -> Option<PagerDuty> {
        let before = cx.diags.len();
        let routing_key = t.req::<At<Secret>>("routing_key", cx).and_then(|k| {
            if k.value.expose().trim().is_empty() {
                cx.error(k.span, "routing_key: is empty");
                None
            } else {
                Some(k.value)
            }
        });
        let url = shared::opt_url(t, cx, "url");
        let client = shared::build_client(t, cx, timeout, false);
        if cx.diags.len() > before {
            return None;
        }
        let url = match url {
            Ok(Some(u)) => u,
            _ => Url::parse(DEFAULT_URL).expect("the default URL parses"),
        };
        Some(PagerDuty {
            routing_key: routing_key?,
            url,
            client: client?,
            timeout,
        })
    }

    pub async fn send(&self, n: &Notification, reference: Option<&str>) -> Result<Sent, SendError> {
        let _ = reference;
        let (path, body) = match &n.event {
            Event::Alert(_) => ("/v2/enqueue", self.alert_event(n)),
            _ => ("/v2/change/enqueue", self.change_event(n)),
        };
        shared::post_json(
            &self.client,
            shared::join(&self.url, path),
            &body,
            self.timeout,
        )
        .await
        .map(|_| Sent::default())
        .map_err(|e| shared::scrub(e, &self.secret_values()))
    }

    pub fn secret_values(&self) -> Vec<String> {
        let mut out = shared::secret_strings([&self.routing_key]);
        out.extend(shared::url_secrets(&self.url));
        out
    }

    /// A trigger or resolve event.
    fn alert_event(&self, n: &Notification) -> Value {
        let Event::Alert(a) = &n.event else {
            unreachable!("only alerts are events");
        };
        let (action, timestamp) = match a.status {
            AlertStatus::Firing => ("trigger", a.starts_at.as_str()),
            AlertStatus::Resolved => (
                "resolve",
                a.ends_at.as_deref().unwrap_or(n.created_at.as_str()),
            ),
        };
        let summary = if a.summary.is_empty() {
            n.title()
        } else {
            format!("{}: {}", n.title(), a.summary)
        };
        let mut payload = json!({
            "summary": cut(&summary, MAX_SUMMARY),
            "source": "bakewatch",
            "severity": severity(&a.severity),
            "timestamp": normalize_time(timestamp),
            "component": a.check,
            "class": a.signal,
            "custom_details": shared::alert_details(a, &n.link),
        });
        if !a.service.is_empty() {
            payload["group"] = json!(a.service);
        }
        let mut body = json!({
            "routing_key": self.routing_key.expose(),
            "event_action": action,
            "dedup_key": n.dedup_key,
            "payload": payload,
            "client": "bakewatch",
        });
        if !n.link.is_empty() {
            body["client_url"] = json!(n.link);
            body["links"] = links(&n.link);
        }
        body
    }

    /// A change event (deployment registered, verdict).
    fn change_event(&self, n: &Notification) -> Value {
        let (d, timestamp) = match &n.event {
            Event::DeploymentRegistered(d) => (d, d.started_at.as_str()),
            Event::Verdict(d) => (
                d,
                d.concluded_at.as_deref().unwrap_or(n.created_at.as_str()),
            ),
            Event::Alert(_) => unreachable!("alerts are not change events"),
        };
        let mut body = json!({
            "routing_key": self.routing_key.expose(),
            "payload": {
                "summary": cut(&n.title(), MAX_SUMMARY),
                "timestamp": normalize_time(timestamp),
                "source": "bakewatch",
                "custom_details": shared::deployment_details(d, &n.link),
            },
        });
        if !n.link.is_empty() {
            body["links"] = links(&n.link);
        }
        body
    }
}

fn links(link: &str) -> Value {
    json!([{"href": link, "text": "bakewatch"}])
}

/// A rule's severity as one of PagerDuty's four.
pub fn severity(s: &str) -> &'static str {
    match s.to_ascii_lowercase().as_str() {
        "critical" => "critical",
        "error" => "error",
        "warning" | "warn" => "warning",
        _ => "info",
    }
}

/// RFC 3339 in UTC when it parses; as given otherwise.
fn normalize_time(s: &str) -> String {
    shared::parse_time(s)
        .map(shared::rfc3339)
        .unwrap_or_else(|| s.to_string())
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_map_to_pagerduty_levels() {
        assert_eq!(severity("critical"), "critical");
        assert_eq!(severity("error"), "error");
        assert_eq!(severity("warn"), "warning");
        assert_eq!(severity("Warning"), "warning");
        assert_eq!(severity("page"), "info");
        assert_eq!(severity(""), "info");
    }

    #[test]
    fn long_summaries_are_cut() {
        let s = "x".repeat(2000);
        assert_eq!(cut(&s, MAX_SUMMARY).chars().count(), MAX_SUMMARY);
    }
}
