//! Pieces the receivers share: the HTTP client every HTTP receiver builds at load, one POST
//! with a deadline and the mapping of its failures to [`SendError`], URL keys, and the plain
//! text that describes a notification (mail bodies, Alertmanager descriptions).
//!
//! Error text never names a URL (a Slack URL *is* a credential, others may carry tokens in
//! their query) and is scrubbed of the receiver's secrets before it leaves a receiver.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;

use super::{AlertEvent, DeploymentEvent, DeploymentRef, Event, Notification, SendError};
use crate::checks::http::innermost;
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader};
use crate::rules::ThresholdSource;

/// `User-Agent` of every notification request.
pub(crate) const USER_AGENT: &str = concat!("bakewatch/", env!("CARGO_PKG_VERSION"));

/// How much of a receiver's answer is read (error bodies are cut to 200 characters anyway).
const MAX_ANSWER: usize = 64 * 1024;

/// The client builder every HTTP receiver starts from: no environment proxy (a notification
/// goes where the config says), no redirects (a POST is not replayed elsewhere, and a 3xx is
/// reported as the receiver's answer), and the notifier's timeout on the whole request.
pub(crate) fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
}

/// Reads the optional `tls` table (same keys as an http check's) when the receiver type has
/// one (`tls_key`), then builds the client. Problems are reported; `None` when there was one.
pub(crate) fn build_client(
    t: &mut TableReader,
    cx: &mut Cx,
    timeout: Duration,
    tls_key: bool,
) -> Option<reqwest::Client> {
    let mut builder = client_builder(timeout);
    if tls_key && let Some(v) = t.get("tls") {
        builder = crate::checks::http::apply_tls(builder, v, cx)?;
    }
    match builder.build() {
        Ok(c) => Some(c),
        Err(e) => {
            cx.error(
                t.span.clone(),
                format!("cannot build the HTTP client: {}", innermost(&e)),
            );
            None
        }
    }
}

/// Checks that `text` is an http(s) URL with a host. The message never repeats the text when
/// `secret` is set.
pub(crate) fn check_http_url(text: &str, secret: bool) -> Result<Url, String> {
    // `user:password@` in a URL is a credential too.
    let shown = if secret || text.contains('@') {
        "the URL".to_string()
    } else {
        format!("{text:?}")
    };
    let url = Url::parse(text).map_err(|e| format!("{shown} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(format!("{shown} has no host")),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

/// A required http(s) URL key, reported at its value.
pub(crate) fn req_url(t: &mut TableReader, cx: &mut Cx, key: &'static str) -> Option<Url> {
    let u: At<String> = t.req(key, cx)?;
    check_http_url(&u.value, false)
        .map_err(|m| cx.error(u.span, format!("{key}: {m}")))
        .ok()
}

/// An optional http(s) URL key, reported at its value. `Err(())` when it was bad.
pub(crate) fn opt_url(
    t: &mut TableReader,
    cx: &mut Cx,
    key: &'static str,
) -> Result<Option<Url>, ()> {
    if t.get(key).is_none() {
        return Ok(None);
    }
    // Present but not a string: already reported.
    let u = t.opt::<At<String>>(key, cx).ok_or(())?;
    check_http_url(&u.value, false)
        .map(Some)
        .map_err(|m| cx.error(u.span, format!("{key}: {m}")))
}

/// `base` with `path` (starting with `/`) appended to its path: `http://h/am` + `/api/v2/alerts`.
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// The password of a `http://user:password@host/` URL, as values to scrub: as written, percent-
/// decoded, and inside the `Authorization: Basic` header it is sent as (which a receiver may
/// echo into an error).
pub(crate) fn url_secrets(url: &Url) -> Vec<String> {
    let Some(password) = url.password().filter(|p| !p.is_empty()) else {
        return Vec::new();
    };
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .map_or_else(|| s.to_string(), |(_, v)| v.into_owned())
    };
    let plain = decode(password);
    let mut out = vec![
        password.to_string(),
        crate::util::basic_credential(&decode(url.username()), &plain),
    ];
    if plain != password {
        out.push(plain);
    }
    out
}

/// Secret values worth scrubbing: every non-empty one.
pub(crate) fn secret_strings<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Vec<String> {
    secrets
        .into_iter()
        .map(|s| s.expose().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Replaces every secret value in an error's message (a receiver may echo what it was sent).
pub(crate) fn scrub(mut e: SendError, secrets: &[String]) -> SendError {
    for s in secrets {
        if !s.is_empty() && e.message.contains(s.as_str()) {
            e.message = e.message.replace(s.as_str(), "<redacted>");
        }
    }
    e
}

/// A transport failure (no answer): always worth retrying. The text has no URL.
pub(crate) fn transport_error(e: reqwest::Error) -> SendError {
    let e = e.without_url();
    let inner = innermost(&e);
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    SendError::retry(format!("{what}: {inner}"))
}

/// Sends `req` once and reads the answer: the body of a 2xx, or the [`SendError`] of any other
/// status or of a transport failure. Ends within `timeout` whatever the receiver does.
pub(crate) async fn execute(
    req: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<String, SendError> {
    let no_answer = || {
        SendError::retry(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))
    };
    let attempt = async {
        let mut resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                no_answer()
            } else {
                transport_error(e)
            }
        })?;
        let status = resp.status().as_u16();
        let mut body: Vec<u8> = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_ANSWER.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= MAX_ANSWER {
                        break;
                    }
                }
                Ok(None) => break,
                // A 2xx whose body broke off still delivered the notification.
                Err(_) if (200..300).contains(&status) => break,
                Err(e) => return Err(transport_error(e)),
            }
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(SendError::from_status(status, &body))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(no_answer()),
    }
}

/// POSTs `body` as JSON.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: Url,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<String, SendError> {
    let req = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    execute(req, timeout).await
}

// ---------------------------------------------------------------------------------------------
// Times

/// An RFC 3339 time, or None when it does not parse.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Milliseconds since the epoch of an RFC 3339 time (now when it does not parse).
pub(crate) fn epoch_ms(s: &str) -> i64 {
    parse_time(s).unwrap_or_else(Utc::now).timestamp_millis()
}

/// RFC 3339 with milliseconds, in UTC.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------------
// Describing a notification

/// A signal value for people: `0.031`, or `no data`.
pub(crate) fn value_text(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v}"),
        None => "no data".to_string(),
    }
}

pub(crate) fn source_text(s: ThresholdSource) -> &'static str {
    match s {
        ThresholdSource::Steady => "steady",
        ThresholdSource::PostDeploy => "post-deploy",
    }
}

/// `above 0.005 (post-deploy)`.
pub(crate) fn threshold_text(a: &AlertEvent) -> String {
    format!(
        "{} {} ({})",
        a.comparison.as_str(),
        a.threshold,
        source_text(a.threshold_source)
    )
}

/// A number of seconds as `30s`, `5m`, `1h 30m`.
pub(crate) fn seconds_text(s: f64) -> String {
    if s.is_finite() && s >= 0.0 {
        humantime::format_duration(Duration::from_millis((s * 1000.0).round() as u64)).to_string()
    } else {
        format!("{s}s")
    }
}

/// `shop 2.0.0 in prod (id d-42)`.
pub(crate) fn deployment_text(d: &DeploymentRef) -> String {
    let env = if d.environment.is_empty() {
        String::new()
    } else {
        format!(" in {}", d.environment)
    };
    format!("{} {}{env} (id {})", d.service, d.version, d.id)
}

/// The notification as plain text, one `Label: value` line each (mail bodies, Alertmanager
/// descriptions).
pub(crate) fn describe(n: &Notification) -> String {
    let mut lines: Vec<(&str, String)> = Vec::new();
    match &n.event {
        Event::Alert(a) => describe_alert(a, &mut lines),
        Event::DeploymentRegistered(d) | Event::Verdict(d) => describe_deployment(d, &mut lines),
    }
    if !n.link.is_empty() {
        lines.push(("Link", n.link.clone()));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in lines {
        let mut rows = v.lines();
        let first = rows.next().unwrap_or("");
        out.push_str(&format!("{:<width$} {first}\n", format!("{k}:")));
        for more in rows {
            out.push_str(&format!("{:<width$} {more}\n", ""));
        }
    }
    out
}

fn describe_alert(a: &AlertEvent, lines: &mut Vec<(&'static str, String)>) {
    lines.push(("Status", a.status.as_str().to_string()));
    let severity = if a.severity.is_empty() {
        String::new()
    } else {
        format!(" (severity {})", a.severity)
    };
    lines.push(("Rule", format!("{}{severity}", a.rule)));
    lines.push(("Check", a.check.clone()));
    if !a.service.is_empty() {
        lines.push(("Service", a.service.clone()));
    }
    lines.push(("Signal", format!("{} = {}", a.signal, value_text(a.value))));
    let source = match a.threshold_source {
        ThresholdSource::PostDeploy => "post-deploy threshold, tightened",
        ThresholdSource::Steady => "steady threshold",
    };
    lines.push((
        "Threshold",
        format!("{} {} ({source})", a.comparison.as_str(), a.threshold),
    ));
    lines.push(("For", seconds_text(a.for_seconds)));
    lines.push(("Window", seconds_text(a.window_seconds)));
    if !a.summary.is_empty() {
        lines.push(("Summary", a.summary.clone()));
    }
    if let Some(d) = &a.deployment {
        lines.push(("Deployment", deployment_text(d)));
    }
    lines.push(("Started", a.starts_at.clone()));
    if let Some(end) = &a.ends_at {
        lines.push(("Resolved", end.clone()));
    }
    if a.rollback {
        lines.push((
            "Rollback",
            "firing fails the deployment's verdict".to_string(),
        ));
    }
}

fn describe_deployment(d: &DeploymentEvent, lines: &mut Vec<(&'static str, String)>) {
    let r = &d.deployment;
    lines.push(("Service", r.service.clone()));
    lines.push(("Version", r.version.clone()));
    if !r.environment.is_empty() {
        lines.push(("Environment", r.environment.clone()));
    }
    lines.push(("Deployment", r.id.clone()));
    lines.push(("Verdict", d.verdict.clone()));
    lines.push(("Decision", d.decision.clone()));
    if !d.reasons.is_empty() {
        let reasons: Vec<String> = d.reasons.iter().map(|r| format!("- {r}")).collect();
        lines.push(("Reasons", reasons.join("\n")));
    }
    lines.push(("Started", d.started_at.clone()));
    if let Some(c) = &d.concluded_at {
        lines.push(("Concluded", c.clone()));
    }
}

/// The alert's facts as JSON (PagerDuty's `custom_details`).
pub(crate) fn alert_details(a: &AlertEvent, link: &str) -> serde_json::Value {
    serde_json::json!({
        "status": a.status.as_str(),
        "rule": a.rule,
        "check": a.check,
        "service": a.service,
        "severity": a.severity,
        "signal": a.signal,
        "value": a.value,
        "comparison": a.comparison.as_str(),
        "threshold": a.threshold,
        "threshold_source": source_text(a.threshold_source),
        "for_seconds": a.for_seconds,
        "window_seconds": a.window_seconds,
        "summary": a.summary,
        "starts_at": a.starts_at,
        "ends_at": a.ends_at,
        "deployment": a.deployment,
        "rollback": a.rollback,
        "link": link,
    })
}

/// The deployment event's facts as JSON.
pub(crate) fn deployment_details(d: &DeploymentEvent, link: &str) -> serde_json::Value {
    serde_json::json!({
        "deployment_id": d.deployment.id,
        "service": d.deployment.service,
        "version": d.deployment.version,
        "environment": d.deployment.environment,
        "verdict": d.verdict,
        "decision": d.decision,
        "reasons": d.reasons,
        "started_at": d.started_at,
        "concluded_at": d.concluded_at,
        "link": link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_a_base_path() {
        let base = Url::parse("http://127.0.0.1:9093/am/").unwrap();
        assert_eq!(
            join(&base, "/api/v2/alerts").as_str(),
            "http://127.0.0.1:9093/am/api/v2/alerts"
        );
        let base = Url::parse("http://127.0.0.1:9093").unwrap();
        assert_eq!(
            join(&base, "/api/v2/alerts").as_str(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
    }

    #[test]
    fn scrub_removes_secrets() {
        let e = scrub(
            SendError::reject("HTTP 400: bad key R0UT1NG"),
            &["R0UT1NG".to_string()],
        );
        assert_eq!(e.message, "HTTP 400: bad key <redacted>");
        assert!(!e.retry);
    }

    #[test]
    fn seconds_read_well() {
        assert_eq!(seconds_text(300.0), "5m");
        assert_eq!(seconds_text(30.0), "30s");
        assert_eq!(seconds_text(0.5), "500ms");
    }

    #[test]
    fn secret_urls_are_not_echoed() {
        let e = check_http_url("ftp://hooks.example/T000/SECRET", true).unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        let e = check_http_url("hooks example/SECRET", true).unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        // A password in a URL is not echoed either.
        let e = check_http_url("http://u:PASSWORD@/x", false).unwrap_err();
        assert!(!e.contains("PASSWORD"), "{e}");
        // Scrubbed: the password, and the `Authorization: Basic` value it is sent as.
        let url = check_http_url("http://u:PASSWORD@127.0.0.1/", false).unwrap();
        assert_eq!(
            url_secrets(&url),
            vec!["PASSWORD".to_string(), "dTpQQVNTV09SRA==".to_string()]
        );
        // Percent-encoded, also as the receiver sees it decoded.
        let url = check_http_url("http://u%40x:P%40SS+W@127.0.0.1/", false).unwrap();
        assert_eq!(
            url_secrets(&url),
            vec![
                "P%40SS+W".to_string(),
                crate::util::basic_credential("u@x", "P@SS+W"),
                "P@SS+W".to_string()
            ]
        );
    }
}
