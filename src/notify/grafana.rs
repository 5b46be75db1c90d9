//! The `grafana` receiver: deployment markers. A registered deployment becomes an annotation
//! (tagged `bakewatch`, `deployment`, service, environment, version and the configured
//! `tags`); its verdict turns that annotation into a region from registration to verdict,
//! tagged `verdict:<verdict>`. The annotation id Grafana answers is the [`Sent::reference`]
//! the outbox hands back with the verdict.
//!
//! Alerts are not annotations: `send` ignores them.
//!
//! ```toml
//! [[notifier]]
//! name = "grafana"
//! type = "grafana"
//! url = "https://grafana.example.com"
//! token = { env = "GRAFANA_TOKEN" }     # a service account token (annotations:write)
//! tags = ["shop"]
//! dashboard_uid = "deploys"             # optional: only on this dashboard
//! events = ["deployment_registered", "verdict"]
//! ```

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::shared;
use super::{DeploymentEvent, Event, Notification, SendError, Sent};
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader};

#[derive(Debug)]
pub struct Grafana {
    url: Url,
    token: Option<Secret>,
    tags: Vec<String>,
    dashboard_uid: Option<String>,
    client: reqwest::Client,
    timeout: Duration,
}

impl Grafana {
    pub fn parse(t: &mut TableReader, cx: &mut Cx, timeout: Duration) -> Option<Grafana> {
        let before = cx.diags.len();
        let url = shared::req_url(t, cx, "url");
        let token = t.opt::<At<Secret>>("token", cx).and_then(|s| {
            if s.value.expose().trim().is_empty() {
                cx.error(s.span, "token: is empty");
                None
            } else {
                Some(s.value)
            }
        });
        let tags: Vec<At<String>> = t.or("tags", Vec::new(), cx);
        for tag in &tags {
            if tag.value.trim().is_empty() {
                cx.error(tag.span.clone(), "tags: a tag may not be empty");
            }
        }
        let dashboard_uid = t.opt::<At<String>>("dashboard_uid", cx).and_then(|u| {
            if u.value.trim().is_empty() {
                cx.error(u.span, "dashboard_uid: is empty");
                None
            } else {
                Some(u.value)
            }
        });
        let client = shared::build_client(t, cx, timeout, true);
        if cx.diags.len() > before {
            return None;
        }
        Some(Grafana {
            url: url?,
            token,
            tags: tags.into_iter().map(|t| t.value).collect(),
            dashboard_uid,
            client: client?,
            timeout,
        })
    }

    pub async fn send(&self, n: &Notification, reference: Option<&str>) -> Result<Sent, SendError> {
        // Only a numeric id is put in a path.
        let reference =
            reference.filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()));
        let result = match &n.event {
            Event::Alert(_) => return Ok(Sent::default()),
            Event::DeploymentRegistered(d) => {
                let body = self.annotation(n, d, false);
                match reference {
                    // Sent before (the outbox retried after a lost answer): update it.
                    Some(id) => self.update(id, &body).await,
                    None => self.create(&body).await,
                }
            }
            Event::Verdict(d) => {
                let body = self.annotation(n, d, true);
                match reference {
                    Some(id) => match self.update(id, &body).await {
                        // The marker was deleted meanwhile: a new region instead.
                        Err(e) if e.message.starts_with("HTTP 404") => self.create(&body).await,
                        r => r,
                    },
                    None => self.create(&body).await,
                }
            }
        };
        result.map_err(|e| shared::scrub(e, &self.secret_values()))
    }

    pub fn secret_values(&self) -> Vec<String> {
        let mut out = shared::secret_strings(self.token.iter());
        out.extend(shared::url_secrets(&self.url));
        out
    }

    /// The annotation's fields; with `verdict`, a region ending at the verdict.
    fn annotation(&self, n: &Notification, d: &DeploymentEvent, verdict: bool) -> Value {
        let r = &d.deployment;
        let mut tags = vec![
            "bakewatch".to_string(),
            "deployment".to_string(),
            r.service.clone(),
        ];
        if !r.environment.is_empty() {
            tags.push(r.environment.clone());
        }
        tags.push(r.version.clone());
        tags.extend(self.tags.iter().cloned());
        let mut text = format!("{} (deployment {})", n.title(), r.id);
        if verdict {
            tags.push(format!("verdict:{}", d.verdict));
            for reason in &d.reasons {
                text.push_str("\n- ");
                text.push_str(reason);
            }
        }
        tags.retain(|t| !t.is_empty());
        let mut body = json!({
            "time": shared::epoch_ms(&d.started_at),
            "tags": tags,
            "text": text,
        });
        if verdict {
            let end = d.concluded_at.as_deref().unwrap_or(n.created_at.as_str());
            body["timeEnd"] = json!(shared::epoch_ms(end));
        }
        if let Some(uid) = &self.dashboard_uid {
            body["dashboardUID"] = json!(uid);
        }
        body
    }

    fn request(&self, method: Method, url: Url, body: &Value) -> reqwest::RequestBuilder {
        let req = self
            .client
            .request(method, url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match &self.token {
            Some(token) => req.bearer_auth(token.expose()),
            None => req,
        }
    }

    /// POST a new annotation; its id is the reference.
    async fn create(&self, body: &Value) -> Result<Sent, SendError> {
        let url = shared::join(&self.url, "/api/annotations");
        let answer = shared::execute(self.request(Method::POST, url, body), self.timeout).await?;
        let id = serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|v| match &v["id"] {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            });
        Ok(Sent { reference: id })
    }

    /// PATCH annotation `id`; the reference stays.
    async fn update(&self, id: &str, body: &Value) -> Result<Sent, SendError> {
        let url = shared::join(&self.url, &format!("/api/annotations/{id}"));
        shared::execute(self.request(Method::PATCH, url, body), self.timeout).await?;
        Ok(Sent {
            reference: Some(id.to_string()),
        })
    }
}
