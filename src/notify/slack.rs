//! The `slack` receiver: an incoming-webhook message (a `text` fallback and Block Kit
//! blocks: the title, the facts as fields, a link to the daemon's status page).
//!
//! The webhook URL is a credential (whoever has it can post to the channel): it is a
//! [`Secret`], and neither config diagnostics nor send errors ever show it.
//!
//! ```toml
//! [[notifier]]
//! name = "ops-channel"
//! type = "slack"
//! url = { env = "SLACK_WEBHOOK_URL" }
//! ```

use std::time::Duration;

use reqwest::Url;
use serde_json::{Value, json};

use super::shared;
use super::{Event, Notification, SendError, Sent};
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader};

/// Slack shows at most ten fields in a section.
const MAX_FIELDS: usize = 10;

#[derive(Debug)]
pub struct Slack {
    url: Secret,
    /// The same URL, parsed; never printed.
    parsed: ParsedUrl,
    client: reqwest::Client,
    timeout: Duration,
}

/// A parsed URL whose `Debug` does not show it.
struct ParsedUrl(Url);

impl std::fmt::Debug for ParsedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Url(<redacted>)")
    }
}

impl Slack {
    pub fn parse(t: &mut TableReader, cx: &mut Cx, timeout: Duration) -> Option<Slack> {
        let before = cx.diags.len();
        let url = t.req::<At<Secret>>("url", cx).and_then(|u| {
            match shared::check_http_url(u.value.expose(), true) {
                Ok(parsed) => Some((u.value, parsed)),
                Err(m) => {
                    cx.error(u.span, format!("url: {m}"));
                    None
                }
            }
        });
        let client = shared::build_client(t, cx, timeout, false);
        if cx.diags.len() > before {
            return None;
        }
        let (url, parsed) = url?;
        Some(Slack {
            url,
            parsed: ParsedUrl(parsed),
            client: client?,
            timeout,
        })
    }

    pub async fn send(&self, n: &Notification, reference: Option<&str>) -> Result<Sent, SendError> {
        let _ = reference;
        // Errors are built without the URL (`shared::transport_error` drops it).
        shared::post_json(
            &self.client,
            self.parsed.0.clone(),
            &message(n),
            self.timeout,
        )
        .await
        .map(|_| Sent::default())
        .map_err(|e| shared::scrub(e, &self.secret_values()))
    }

    pub fn secret_values(&self) -> Vec<String> {
        let mut out = shared::secret_strings([&self.url]);
        // The token part alone, should anything print the path without the host.
        let path = self.parsed.0.path();
        if path.len() > 1 {
            out.push(path.to_string());
        }
        out
    }
}

/// Escapes text for Slack's mrkdwn.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", esc(value))})
}

/// The message body.
pub fn message(n: &Notification) -> Value {
    let title = n.title();
    let mut text = title.clone();
    let mut fields: Vec<Value> = Vec::new();
    let mut extra: Vec<Value> = Vec::new();
    match &n.event {
        Event::Alert(a) => {
            if !a.summary.is_empty() {
                text.push('\n');
                text.push_str(&a.summary);
            }
            fields.push(field("Check", &a.check));
            if !a.service.is_empty() {
                fields.push(field("Service", &a.service));
            }
            fields.push(field(
                "Value",
                &format!("{} = {}", a.signal, shared::value_text(a.value)),
            ));
            fields.push(field("Threshold", &shared::threshold_text(a)));
            fields.push(field(
                "For / window",
                &format!(
                    "{} / {}",
                    shared::seconds_text(a.for_seconds),
                    shared::seconds_text(a.window_seconds)
                ),
            ));
            if let Some(d) = &a.deployment {
                fields.push(field("Deployment", &shared::deployment_text(d)));
            }
            if !a.severity.is_empty() {
                fields.push(field("Severity", &a.severity));
            }
        }
        Event::DeploymentRegistered(d) | Event::Verdict(d) => {
            let r = &d.deployment;
            fields.push(field("Service", &r.service));
            fields.push(field("Version", &r.version));
            if !r.environment.is_empty() {
                fields.push(field("Environment", &r.environment));
            }
            fields.push(field("Deployment", &r.id));
            if matches!(n.event, Event::Verdict(_)) {
                fields.push(field("Verdict", &d.verdict));
                fields.push(field("Decision", &d.decision));
            }
            if !d.reasons.is_empty() {
                text.push('\n');
                text.push_str(&d.reasons.join("\n"));
                let reasons: Vec<String> =
                    d.reasons.iter().map(|r| format!("• {}", esc(r))).collect();
                extra.push(json!({
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": reasons.join("\n")},
                }));
            }
        }
    }
    fields.truncate(MAX_FIELDS);
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": format!("*{}*", esc(&title))},
    })];
    blocks.push(json!({"type": "section", "fields": fields}));
    blocks.extend(extra);
    if !n.link.is_empty() {
        let href = n.link.replace('>', "%3E").replace('|', "%7C");
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("<{href}|Open in bakewatch>")}],
        }));
    }
    json!({"text": text, "blocks": blocks})
}
