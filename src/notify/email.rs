//! The `email` receiver: a plain-text mail per notification, over SMTP (lettre, rustls).
//!
//! `smtp` takes lettre's URL forms: `smtp://host:port` (plain, for a local relay),
//! `smtp://host:587?tls=required` (STARTTLS, refused if the server does not offer it),
//! `smtp://host:587?tls=opportunistic` (STARTTLS when offered) and `smtps://host:465`
//! (implicit TLS). Credentials go in `username` / `password`, never in the URL; a password
//! is not sent in clear text to another host. `ca_file` replaces the system roots with a
//! private CA.
//!
//! ```toml
//! [[notifier]]
//! name = "mail"
//! type = "email"
//! smtp = "smtp://mail.example.com:587?tls=required"
//! username = "bakewatch"
//! password = { env = "SMTP_PASSWORD" }
//! from = "bakewatch <bakewatch@example.com>"
//! to = ["oncall@example.com"]
//! ```
//!
//! The transport is built once at load, without a connection pool: each mail is one SMTP
//! session (and building a pool needs a running runtime, which `validate` does not have).

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::shared;
use super::{Event, Notification, SendError, Sent};
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader};

/// Header carrying the notification's dedup key (stable across one alert's mails).
pub const DEDUP_HEADER: &str = "X-Bakewatch-Dedup-Key";
/// Header carrying the notification's id (unique per notification).
pub const ID_HEADER: &str = "X-Bakewatch-Id";

pub const DEFAULT_SUBJECT_PREFIX: &str = "[bakewatch] ";

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtp://` without `tls`: plain text.
    None,
    /// `?tls=opportunistic`: STARTTLS when offered.
    Opportunistic,
    /// `?tls=required`: STARTTLS or fail.
    Required,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// The parts of an `smtp` URL.
#[derive(Debug)]
struct Endpoint {
    host: String,
    port: u16,
    security: Security,
}

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// For `Debug`: `smtps://host:port`.
    endpoint: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject_prefix: String,
    password: Option<Secret>,
    timeout: Duration,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("smtp", &self.endpoint)
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Email {
    pub fn parse(t: &mut TableReader, cx: &mut Cx, timeout: Duration) -> Option<Email> {
        let before = cx.diags.len();
        let smtp: Option<At<String>> = t.req("smtp", cx);
        let endpoint = smtp.as_ref().and_then(|u| match parse_smtp_url(&u.value) {
            Ok(e) => Some(e),
            Err(m) => {
                cx.error(u.span.clone(), format!("smtp: {m}"));
                None
            }
        });
        let username: Option<At<String>> = t.opt("username", cx);
        let password: Option<At<Secret>> = t.opt("password", cx);
        let from = t
            .req::<At<String>>("from", cx)
            .and_then(|f| mailbox("from", &f, cx));
        let to = t.req::<At<Vec<At<String>>>>("to", cx).and_then(|list| {
            if list.value.is_empty() {
                cx.error(list.span, "to: give at least one address");
                return None;
            }
            let boxes: Vec<Option<Mailbox>> =
                list.value.iter().map(|a| mailbox("to", a, cx)).collect();
            boxes.into_iter().collect::<Option<Vec<_>>>()
        });
        let ca_file: Option<At<PathBuf>> = t.opt("ca_file", cx);
        let subject_prefix: String = t.or("subject_prefix", DEFAULT_SUBJECT_PREFIX.to_string(), cx);

        let credentials = match (&username, &password) {
            (Some(u), Some(p)) => Some(Credentials::new(
                u.value.clone(),
                p.value.expose().to_string(),
            )),
            (Some(u), None) if !t.has("password") => {
                cx.error(u.span.clone(), "username: needs `password` too");
                None
            }
            (None, Some(p)) => {
                cx.error(p.span.clone(), "password: needs `username` too");
                None
            }
            _ => None,
        };
        if let (Some(e), Some(_), Some(u)) = (&endpoint, &credentials, &smtp)
            && e.security == Security::None
            && !is_loopback(&e.host)
        {
            cx.error(
                u.span.clone(),
                "smtp: the password would travel in clear text: use `?tls=required` or `smtps://`",
            );
        }

        let mut roots: Option<Certificate> = None;
        if let Some(ca) = &ca_file {
            match std::fs::read(&ca.value) {
                Err(e) => cx.error(
                    ca.span.clone(),
                    format!("ca_file: cannot read {}: {}", ca.value.display(), e.kind()),
                ),
                Ok(pem) => match Certificate::from_pem(&pem) {
                    Ok(c) if pem_has_cert(&pem) => roots = Some(c),
                    _ => cx.error(
                        ca.span.clone(),
                        format!("ca_file: {} holds no PEM certificate", ca.value.display()),
                    ),
                },
            }
            if endpoint
                .as_ref()
                .is_some_and(|e| e.security == Security::None)
            {
                cx.error(
                    ca.span.clone(),
                    "ca_file: the `smtp` URL does not use TLS (add `?tls=required` or use `smtps://`)",
                );
            }
        }
        if cx.diags.len() > before {
            return None;
        }
        let endpoint = endpoint?;

        let tls = if endpoint.security == Security::None {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(endpoint.host.clone());
            if let Some(roots) = roots {
                // A private CA replaces the system roots: trust exactly what is named.
                params = params
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(roots);
            }
            let params = match params.build() {
                Ok(p) => p,
                Err(e) => {
                    cx.error(
                        smtp.map(|u| u.span).unwrap_or_else(|| t.span.clone()),
                        format!("smtp: cannot set up TLS: {e}"),
                    );
                    return None;
                }
            };
            match endpoint.security {
                Security::Opportunistic => Tls::Opportunistic(params),
                Security::Required => Tls::Required(params),
                _ => Tls::Wrapper(params),
            }
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(endpoint.host.clone())
                .port(endpoint.port)
                .tls(tls)
                .timeout(Some(timeout));
        if let Some(c) = credentials {
            builder = builder.credentials(c);
        }
        let scheme = if endpoint.security == Security::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        Some(Email {
            transport: builder.build(),
            endpoint: format!("{scheme}://{}:{}", endpoint.host, endpoint.port),
            from: from?,
            to: to?,
            subject_prefix,
            password: password.map(|p| p.value),
            timeout,
        })
    }

    pub async fn send(&self, n: &Notification, reference: Option<&str>) -> Result<Sent, SendError> {
        let _ = reference;
        let message = self.message(n)?;
        let result = match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(SendError::retry(format!(
                "smtp: no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
            Ok(Ok(_)) => Ok(Sent::default()),
            Ok(Err(e)) => Err(smtp_error(&e)),
        };
        result.map_err(|e| shared::scrub(e, &self.secret_values()))
    }

    pub fn secret_values(&self) -> Vec<String> {
        shared::secret_strings(self.password.iter())
    }

    /// The mail: subject = prefix + title, a plain-text body.
    fn message(&self, n: &Notification) -> Result<Message, SendError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!("{}{}", self.subject_prefix, n.title()))
            // A fresh `<uuid@hostname>`: every mail is its own message.
            .message_id(None)
            .header(ContentType::TEXT_PLAIN)
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(DEDUP_HEADER),
                n.dedup_key.clone(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(ID_HEADER),
                n.id.clone(),
            ));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(body(n))
            .map_err(|e| SendError::reject(format!("cannot build the mail: {e}")))
    }
}

/// The plain-text body: a lead line, then the facts.
pub fn body(n: &Notification) -> String {
    let lead = match &n.event {
        Event::Alert(a) if a.status == super::AlertStatus::Resolved => {
            format!("Alert {} on {} has resolved.", a.rule, a.check)
        }
        Event::Alert(a) => format!("Alert {} on {} is firing.", a.rule, a.check),
        Event::DeploymentRegistered(d) => format!(
            "Deployment {} of {} {} was registered; bakewatch is watching it.",
            d.deployment.id, d.deployment.service, d.deployment.version
        ),
        Event::Verdict(d) => format!(
            "Deployment {} of {} {} concluded: verdict {}, decision {}.",
            d.deployment.id, d.deployment.service, d.deployment.version, d.verdict, d.decision
        ),
    };
    format!(
        "{lead}\n\n{}\n-- \nSent by bakewatch {}\n",
        shared::describe(n),
        env!("CARGO_PKG_VERSION")
    )
}

/// SMTP's answer as a [`SendError`]: a permanent (5xx) rejection is final, anything else
/// (4xx, connection, TLS, timeout) may pass on another try.
fn smtp_error(e: &lettre::transport::smtp::Error) -> SendError {
    let text = format!("smtp: {e}");
    if e.is_permanent() {
        SendError::reject(text)
    } else {
        SendError::retry(text)
    }
}

fn mailbox(key: &str, a: &At<String>, cx: &mut Cx) -> Option<Mailbox> {
    match a.value.parse::<Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            cx.error(
                a.span.clone(),
                format!("{key}: {:?} is not an email address ({e})", a.value),
            );
            None
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn pem_has_cert(pem: &[u8]) -> bool {
    String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----")
}

/// Parses lettre's URL forms. Messages do not repeat the URL (it might hold a password).
fn parse_smtp_url(text: &str) -> Result<Endpoint, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("put credentials in `username` and `password`, not in the URL".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err("the URL has no host".into()),
    };
    if url.path().len() > 1 {
        return Err(format!("unexpected path {:?}", url.path()));
    }
    let mut tls = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "tls" if tls.is_none() => tls = Some(v.into_owned()),
            other => return Err(format!("unknown URL parameter {other:?} (only `tls`)")),
        }
    }
    let (security, default_port) = match (url.scheme(), tls.as_deref()) {
        ("smtp", None) => (Security::None, 25),
        ("smtp", Some("required")) => (Security::Required, 587),
        ("smtp", Some("opportunistic")) => (Security::Opportunistic, 587),
        ("smtp", Some(other)) => {
            return Err(format!(
                "tls={other:?}: use `tls=required` or `tls=opportunistic`"
            ));
        }
        ("smtps", None) => (Security::Implicit, 465),
        ("smtps", Some(_)) => return Err("smtps:// is always TLS: drop `?tls=`".into()),
        (other, _) => return Err(format!("scheme {other:?} is not smtp or smtps")),
    };
    Ok(Endpoint {
        host,
        port: url.port().unwrap_or(default_port),
        security,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_take_lettres_forms() {
        let e = parse_smtp_url("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.security),
            ("127.0.0.1", 2525, Security::None)
        );
        let e = parse_smtp_url("smtp://mail.example.com?tls=required").unwrap();
        assert_eq!((e.port, e.security), (587, Security::Required));
        let e = parse_smtp_url("smtp://mail.example.com:587?tls=opportunistic").unwrap();
        assert_eq!(e.security, Security::Opportunistic);
        let e = parse_smtp_url("smtps://mail.example.com").unwrap();
        assert_eq!((e.port, e.security), (465, Security::Implicit));
        let e = parse_smtp_url("smtp://[::1]:25").unwrap();
        assert_eq!(e.host, "::1");
    }

    #[test]
    fn bad_smtp_urls_are_refused_without_echoing_credentials() {
        let e = parse_smtp_url("smtps://u:hunter2@mail.example.com").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(parse_smtp_url("http://mail.example.com").is_err());
        assert!(parse_smtp_url("smtp://mail.example.com?tls=always").is_err());
        assert!(parse_smtp_url("smtps://mail.example.com?tls=required").is_err());
        assert!(parse_smtp_url("smtp://mail.example.com?port=1").is_err());
        assert!(parse_smtp_url("mail.example.com").is_err());
    }
}
