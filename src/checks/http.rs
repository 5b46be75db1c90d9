//! The `http` check: one request, a fresh connection per run by default (so connect problems
//! are seen), the body read up to a cap, then the shared assertions. The client (and its
//! rustls config) is built once at load, never per run.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use super::assert::{Assertion, QueryScope, Subject, judge};
use super::outcome::{Observation, Observations, Outcome, Reason, Status};
use crate::config::Secret;
use crate::config::reader::{At, ByteSize, Cx, TableReader, to_json};
use crate::template::{DeploymentVars, Scope, Template};

/// What `expect` may ask of an http check.
pub const SCOPE: QueryScope = QueryScope {
    response: true,
    durations: &["total", "ttfb"],
    observations: &["status", "body_bytes", "cert_days"],
};

/// What every http check and journey step says it is.
const USER_AGENT: &str = concat!("bakewatch/", env!("CARGO_PKG_VERSION"));

/// Default cap on how much of a response body is read.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

#[derive(Debug)]
enum Body {
    None,
    Raw(String),
    Json(serde_json::Value),
    Form(Vec<(String, String)>),
}

/// `auth = { bearer = … }` or `{ username = …, password = … }` (shared with `prometheus`).
#[derive(Debug)]
pub(crate) enum Auth {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

impl Auth {
    /// Reads an `auth` table; every problem is reported.
    pub(crate) fn parse(v: &crate::config::reader::Value<'_>, cx: &mut Cx) -> Option<Auth> {
        parse_auth(v, cx)
    }

    /// What must never be shown: the secret, and for basic auth also the credential as the
    /// `Authorization` header carries it (base64), which a target may echo.
    pub(crate) fn secret_values(&self) -> Vec<String> {
        match self {
            Auth::Bearer(s) => vec![s.expose().to_string()],
            Auth::Basic { username, password } => vec![
                password.expose().to_string(),
                crate::util::basic_credential(username, password.expose()),
            ],
        }
    }

    /// Adds the Authorization header.
    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::Bearer(token) => req.bearer_auth(token.expose()),
            Auth::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
        }
    }
}

/// A header value: fixed (possibly a secret), or naming `{{ deployment.* }}`.
#[derive(Debug)]
enum HeaderVal {
    Fixed(Secret),
    Template(Template),
}

/// A validated http check, with its client ready.
#[derive(Debug)]
pub struct HttpSpec {
    /// The URL as written; with `{{ deployment.* }}` in it, rendered with stand-in values (to
    /// validate it at load), and `url_template` renders each run's.
    url: Url,
    url_template: Option<Template>,
    method: Method,
    headers: Vec<(HeaderName, HeaderVal)>,
    body: Body,
    auth: Option<Auth>,
    max_body: usize,
    client: reqwest::Client,
    /// Plain-http runs go the direct way ([`super::http_direct`]) unless keep-alive is on.
    direct: bool,
    follow_redirects: bool,
    user_agent: HeaderValue,
}

/// Redirects followed at most (reqwest's own limit for the reqwest path).
const MAX_REDIRECTS: usize = 10;

/// What a request produced: a response from either path.
enum Sent {
    Reqwest(reqwest::Response),
    Direct(super::http_direct::Response),
}

impl HttpSpec {
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether the URL or a header names `{{ deployment.* }}`.
    pub fn uses_deployment(&self) -> bool {
        self.url_template.is_some()
            || self
                .headers
                .iter()
                .any(|(_, v)| matches!(v, HeaderVal::Template(_)))
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .headers
            .iter()
            .filter_map(|(_, v)| match v {
                HeaderVal::Fixed(s) if s.is_from_source() => Some(s.expose().to_string()),
                _ => None,
            })
            .collect();
        out.extend(self.auth.iter().flat_map(Auth::secret_values));
        out
    }

    /// Reads the http keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<HttpSpec> {
        let mut url_template = None;
        let url = t.req::<At<String>>("url", cx).and_then(|u| {
            let text = match deployment_template(&u.value, "url") {
                Ok(Some(tpl)) => {
                    let sample = tpl.render(&Scope::of_deployment(Some(Arc::new(
                        DeploymentVars::sample(),
                    ))));
                    url_template = Some(tpl);
                    sample
                }
                Ok(None) => u.value.clone(),
                Err(m) => {
                    cx.error(u.span, m);
                    return None;
                }
            };
            parse_http_url(&text)
                .map_err(|m| cx.error(u.span, format!("url: {m}")))
                .ok()
        });
        let method = t
            .opt::<At<String>>("method", cx)
            .map_or(Some(Method::GET), |m| {
                Method::from_bytes(m.value.to_ascii_uppercase().as_bytes())
                    .map_err(|_| {
                        cx.error(
                            m.span,
                            format!("method: {:?} is not an HTTP method", m.value),
                        )
                    })
                    .ok()
            });
        let mut headers = Vec::new();
        if let Some(map) = t.opt::<BTreeMap<String, Secret>>("headers", cx) {
            for (name, value) in map {
                let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
                    cx.error(
                        t.span_of("headers"),
                        format!("headers: {name:?} is not a valid header name"),
                    );
                    continue;
                };
                let what = format!("headers.{name}");
                let value = if value.is_from_source() {
                    HeaderVal::Fixed(value)
                } else {
                    match deployment_template(value.expose(), &what) {
                        Ok(Some(tpl)) => HeaderVal::Template(tpl),
                        Ok(None) => HeaderVal::Fixed(value),
                        Err(m) => {
                            cx.error(t.span_of("headers"), m);
                            continue;
                        }
                    }
                };
                let shown = match &value {
                    HeaderVal::Fixed(s) => s.expose().to_string(),
                    HeaderVal::Template(tpl) => tpl.render(&Scope::of_deployment(Some(Arc::new(
                        DeploymentVars::sample(),
                    )))),
                };
                if HeaderValue::from_str(&shown).is_err() {
                    cx.error(
                        t.span_of("headers"),
                        format!("headers: the value of {name:?} is not a valid header value"),
                    );
                    continue;
                }
                headers.push((hn, value));
            }
        }
        let mut bodies = Vec::new();
        if let Some(raw) = t.opt::<String>("body", cx) {
            bodies.push(Body::Raw(raw));
        }
        if let Some(v) = t.get("json") {
            bodies.push(Body::Json(to_json(v.get_ref())));
        }
        if let Some(form) = t.opt::<BTreeMap<String, String>>("form", cx) {
            bodies.push(Body::Form(form.into_iter().collect()));
        }
        if bodies.len() > 1 {
            cx.error(
                t.span.clone(),
                "give at most one of `body`, `json` and `form`",
            );
        }
        let body = bodies.into_iter().next().unwrap_or(Body::None);
        let auth = t.get("auth").and_then(|v| parse_auth(v, cx));
        let follow_redirects = t.or("follow_redirects", true, cx);
        let keepalive = t.or("keepalive", false, cx);
        let max_body = t.or("max_body", ByteSize(DEFAULT_MAX_BODY), cx).0;
        // Over https, the leaf certificate's expiry is reported (`cert_days`).
        let tls_info = url.as_ref().is_some_and(|u| u.scheme() == "https");
        let built = match t.get("tls") {
            Some(v) => {
                apply_tls(client_builder(keepalive, follow_redirects, tls_info), v, cx)?.build()
            }
            None => shared_client(keepalive, follow_redirects, tls_info),
        };
        let client = match built {
            Ok(c) => c,
            Err(e) => {
                cx.error(
                    t.span.clone(),
                    format!("cannot build the HTTP client: {}", innermost(&e)),
                );
                return None;
            }
        };
        Some(HttpSpec {
            url: url?,
            url_template,
            method: method?,
            headers,
            body,
            auth,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            client,
            direct: !keepalive,
            follow_redirects,
            user_agent: HeaderValue::from_static(USER_AGENT),
        })
    }

    /// One run: request, read the body up to the cap, judge. Never returns early on a slow
    /// target by itself: the runner's timeout cancels this future.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let scope = Scope::of_deployment(crate::template::current());
        let url = match &self.url_template {
            None => self.url.clone(),
            Some(tpl) => match parse_http_url(&tpl.render(&scope)) {
                Ok(u) => u,
                Err(m) => return Outcome::error(Reason::Config, format!("url: {m}")),
            },
        };
        let mut req = self.client.request(self.method.clone(), url);
        for (name, value) in &self.headers {
            req = match value {
                HeaderVal::Fixed(v) => req.header(name, v.expose()),
                HeaderVal::Template(tpl) => match HeaderValue::from_str(&tpl.render(&scope)) {
                    Ok(v) => req.header(name, v),
                    Err(_) => {
                        return Outcome::error(
                            Reason::Config,
                            format!(
                                "header {name}: the rendered value is not a valid header value"
                            ),
                        );
                    }
                },
            };
        }
        if let Some(auth) = &self.auth {
            req = auth.apply(req);
        }
        req = match &self.body {
            Body::None => req,
            Body::Raw(s) => req.body(s.clone()),
            Body::Json(v) => req.json(v),
            Body::Form(f) => req.form(f),
        };
        let req = match req.build() {
            Ok(r) => r,
            Err(e) => return Outcome::error(Reason::Config, format!("request: {}", innermost(&e))),
        };
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err((reason, message)) => return Outcome::fail(reason, message),
        };
        let ttfb = start.elapsed();
        let status = match &resp {
            Sent::Reqwest(r) => r.status().as_u16(),
            Sent::Direct(r) => r.status,
        };
        let read = match resp {
            Sent::Reqwest(resp) => ResponseView::read(resp, self.max_body, ttfb, start).await,
            Sent::Direct(resp) => ResponseView::read_direct(resp, self.max_body, ttfb, start).await,
        };
        let (response, truncated) = match read {
            Ok(r) => r,
            Err((reason, message)) => {
                let mut o = Outcome::fail(
                    reason,
                    format!("HTTP {status}, reading the body: {message}"),
                );
                o.observations
                    .set("status", Observation::Number(f64::from(status)));
                return o;
            }
        };
        let j = judge(expect, &response, true);
        let mut outcome = Outcome::new(j.status, j.reason, j.message);
        if j.status == Status::Pass {
            outcome.message = format!("HTTP {status}");
        }
        if truncated {
            outcome
                .message
                .push_str(&format!(" (body truncated at {} bytes)", self.max_body));
        }
        outcome.failed_assertions = j.failures;
        outcome.observations = response.observations;
        outcome
            .observations
            .set("ttfb", Observation::Duration(ttfb));
        outcome
    }
}

impl HttpSpec {
    /// Sends a built request: plain http on the direct path (following redirects that stay on
    /// plain http there, and handing one that leaves it to reqwest), the rest with reqwest.
    async fn send(&self, req: reqwest::Request) -> Result<Sent, (Reason, String)> {
        if !self.direct || req.url().scheme() != "http" {
            return self.execute(req).await;
        }
        let mut req = match super::http_direct::Request::from_reqwest(req) {
            Ok(r) => r,
            Err(req) => return self.execute(*req).await,
        };
        for _ in 0..=MAX_REDIRECTS {
            let resp = super::http_direct::send(&req, &self.user_agent).await?;
            if !self.follow_redirects {
                return Ok(Sent::Direct(resp));
            }
            let Some(next) = super::http_direct::redirect(&req, resp.status, &resp.headers) else {
                return Ok(Sent::Direct(resp));
            };
            drop(resp);
            if next.url.scheme() != "http" {
                return self.execute(next.into_reqwest()).await;
            }
            req = next;
        }
        Err((Reason::Protocol, "redirect: too many redirects".to_string()))
    }

    /// The reqwest path.
    async fn execute(&self, req: reqwest::Request) -> Result<Sent, (Reason, String)> {
        self.client
            .execute(req)
            .await
            .map(Sent::Reqwest)
            .map_err(|e| classify(&e))
    }
}

/// A client as an http check uses it, before any `tls` settings.
fn client_builder(
    keepalive: bool,
    follow_redirects: bool,
    tls_info: bool,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        // Checks go straight to their target: an environment proxy would change what is measured.
        .no_proxy()
        .pool_max_idle_per_host(if keepalive { 4 } else { 0 })
        .redirect(if follow_redirects {
            reqwest::redirect::Policy::limited(MAX_REDIRECTS)
        } else {
            reqwest::redirect::Policy::none()
        })
        .tls_info(tls_info)
}

/// The client of every http check without a `tls` table that sets the same options. A client
/// carries its TLS setup — the system's root certificates, parsed: about 160 KB — so a client
/// per check cost 160 MB of memory with 1,000 checks (BENCHMARKS.md, memory). Checks sharing
/// one with `keepalive = true` share its idle connections too, which is what keep-alive asks.
fn shared_client(
    keepalive: bool,
    follow_redirects: bool,
    tls_info: bool,
) -> reqwest::Result<reqwest::Client> {
    type Key = (bool, bool, bool);
    static CLIENTS: std::sync::Mutex<BTreeMap<Key, reqwest::Client>> =
        std::sync::Mutex::new(BTreeMap::new());
    let key = (keepalive, follow_redirects, tls_info);
    let mut clients = CLIENTS.lock().expect("not poisoned");
    if let Some(c) = clients.get(&key) {
        return Ok(c.clone());
    }
    let c = client_builder(keepalive, follow_redirects, tls_info).build()?;
    clients.insert(key, c.clone());
    Ok(c)
}

/// A setting's text as a `{{ deployment.* }}` template, when it names one (`Ok(None)` for plain
/// text, where a `{{` without `deployment.` stays literal).
pub(crate) fn deployment_template(text: &str, what: &str) -> Result<Option<Template>, String> {
    if !text.contains("{{") {
        return Ok(None);
    }
    match Template::parse_deployment_only(text, what) {
        Ok(t) if t.uses_deployment() => Ok(Some(t)),
        Ok(_) => Ok(None),
        Err(e) if text.contains("deployment.") => Err(e),
        Err(_) => Ok(None),
    }
}

fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(format!("{s:?} has no host")),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

fn parse_auth(v: &crate::config::reader::Value<'_>, cx: &mut Cx) -> Option<Auth> {
    let mut t = TableReader::new(v, "auth", cx)?;
    let before = cx.diags.len();
    let bearer: Option<Secret> = t.opt("bearer", cx);
    let username: Option<String> = t.opt("username", cx);
    let password: Option<Secret> = t.opt("password", cx);
    t.finish(cx);
    match (bearer, username, password) {
        (Some(b), None, None) => Some(Auth::Bearer(b)),
        (None, Some(username), Some(password)) => Some(Auth::Basic { username, password }),
        // A value that did not resolve is already reported where it is written.
        _ if cx.diags.len() > before => None,
        _ => {
            cx.error(
                v.span(),
                "auth: write { bearer = … } or { username = …, password = … }",
            );
            None
        }
    }
}

pub(crate) fn apply_tls(
    mut builder: reqwest::ClientBuilder,
    v: &crate::config::reader::Value<'_>,
    cx: &mut Cx,
) -> Option<reqwest::ClientBuilder> {
    let mut t = TableReader::new(v, "tls", cx)?;
    let ca_file: Option<At<std::path::PathBuf>> = t.opt("ca_file", cx);
    let cert_file: Option<At<std::path::PathBuf>> = t.opt("cert_file", cx);
    let key_file: Option<At<std::path::PathBuf>> = t.opt("key_file", cx);
    let verify = t.or("verify", true, cx);
    t.finish(cx);
    let before = cx.diags.len();
    let read = |f: &At<std::path::PathBuf>, cx: &mut Cx| match std::fs::read(&f.value) {
        Ok(b) => Some(b),
        Err(e) => {
            cx.error(
                f.span.clone(),
                format!("cannot read {}: {}", f.value.display(), e.kind()),
            );
            None
        }
    };
    if let Some(ca) = &ca_file
        && let Some(pem) = read(ca, cx)
    {
        match reqwest::Certificate::from_pem_bundle(&pem) {
            // A private CA replaces the system roots: trust exactly what the check names.
            Ok(certs) if !certs.is_empty() => builder = builder.tls_certs_only(certs),
            _ => {
                cx.error(
                    ca.span.clone(),
                    format!("ca_file: {} holds no PEM certificate", ca.value.display()),
                );
            }
        }
    }
    match (&cert_file, &key_file) {
        (Some(c), Some(k)) => {
            if let (Some(mut cert), Some(key)) = (read(c, cx), read(k, cx)) {
                cert.push(b'\n');
                cert.extend_from_slice(&key);
                match reqwest::Identity::from_pem(&cert) {
                    Ok(id) => builder = builder.identity(id),
                    Err(_) => {
                        cx.error(
                            c.span.clone(),
                            "cert_file / key_file: not a PEM certificate and private key",
                        );
                    }
                }
            }
        }
        (None, None) => {}
        _ => {
            cx.error(
                v.span(),
                "tls: a client certificate needs both `cert_file` and `key_file`",
            );
        }
    }
    if !verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    (cx.diags.len() == before).then_some(builder)
}

/// Maps a client error to a reason and a short message (without the URL, which may be long).
pub fn classify(e: &reqwest::Error) -> (Reason, String) {
    let inner = innermost(e);
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    let mut is_tls = false;
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
            // `io::Error::source` skips the error it wraps (rustls' errors arrive that way).
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                is_tls = true;
            }
        }
        if err.downcast_ref::<rustls::Error>().is_some() {
            is_tls = true;
        }
        source = err.source();
    }
    let text = format!("{e:?}");
    if e.is_timeout() {
        (Reason::Timeout, format!("timed out: {inner}"))
    } else if text.contains("dns error") {
        (Reason::Dns, format!("dns: {inner}"))
    } else if is_tls || text.contains("InvalidCertificate") || text.contains("tls handshake") {
        (Reason::Tls, format!("tls: {inner}"))
    } else if e.is_connect() {
        (Reason::Connect, format!("connect: {inner}"))
    } else if e.is_redirect() {
        (Reason::Protocol, format!("redirect: {inner}"))
    } else {
        let _ = io_kind;
        (Reason::Protocol, format!("protocol: {inner}"))
    }
}

/// The deepest error in a chain: the one that says what actually happened.
/// The deepest error in a chain: the one that says what actually happened (and, for
/// reqwest, the one that does not repeat the URL).
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Where a response body comes from.
enum BodySource {
    Reqwest(reqwest::Response),
    Direct(super::http_direct::Response),
}

impl BodySource {
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, (Reason, String)> {
        match self {
            BodySource::Reqwest(r) => r.chunk().await.map_err(|e| classify(&e)),
            BodySource::Direct(r) => r.chunk().await,
        }
    }
}

/// A received response, as assertions see it (shared with journey steps).
pub(crate) struct ResponseView {
    status: u16,
    headers: HeaderMap,
    body: String,
    json: OnceLock<Option<serde_json::Value>>,
    total: Duration,
    ttfb: Duration,
    observations: Observations,
}

impl ResponseView {
    /// Reads the body (up to `max_body`; the flag says whether it was cut) and the
    /// certificate expiry of an https response. `start` is when the request began.
    pub(crate) async fn read(
        mut resp: reqwest::Response,
        max_body: usize,
        ttfb: Duration,
        start: Instant,
    ) -> Result<(ResponseView, bool), (Reason, String)> {
        let cert_expiry = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .and_then(super::tls::leaf_expiry);
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        let body = BodySource::Reqwest(resp);
        ResponseView::assemble(status, headers, cert_expiry, body, max_body, ttfb, start).await
    }

    /// [`ResponseView::read`] for a response of the direct path (plain http: no certificate).
    pub(crate) async fn read_direct(
        mut resp: super::http_direct::Response,
        max_body: usize,
        ttfb: Duration,
        start: Instant,
    ) -> Result<(ResponseView, bool), (Reason, String)> {
        let status = resp.status;
        let headers = std::mem::take(&mut resp.headers);
        let body = BodySource::Direct(resp);
        ResponseView::assemble(status, headers, None, body, max_body, ttfb, start).await
    }

    async fn assemble(
        status: u16,
        headers: HeaderMap,
        cert_expiry: Option<i64>,
        mut source: BodySource,
        max_body: usize,
        ttfb: Duration,
        start: Instant,
    ) -> Result<(ResponseView, bool), (Reason, String)> {
        let mut body = Vec::new();
        let mut truncated = false;
        loop {
            match source.chunk().await {
                Ok(Some(chunk)) => {
                    let room = max_body - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(e),
            }
        }
        let mut observations = Observations::default();
        observations.set("status", Observation::Number(f64::from(status)));
        observations.set("body_bytes", Observation::Number(body.len() as f64));
        if let Some(not_after) = cert_expiry {
            super::tls::expiry_observations(&mut observations, not_after, super::tls::unix_now());
        }
        let view = ResponseView {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            json: OnceLock::new(),
            total: start.elapsed(),
            ttfb,
            observations,
        };
        Ok((view, truncated))
    }
}

impl Subject for ResponseView {
    fn status(&self) -> Option<u16> {
        Some(self.status)
    }

    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    fn cookie_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|c| {
                let pair = c.split(';').next()?;
                let (n, v) = pair.split_once('=')?;
                (n.trim() == name).then(|| v.trim().trim_matches('"').to_string())
            })
            .collect()
    }

    fn body(&self) -> Option<&str> {
        Some(&self.body)
    }

    fn json(&self) -> Option<&serde_json::Value> {
        self.json
            .get_or_init(|| serde_json::from_str(&self.body).ok())
            .as_ref()
    }

    fn duration(&self, kind: &str) -> Option<Duration> {
        match kind {
            "total" => Some(self.total),
            "ttfb" => Some(self.ttfb),
            _ => None,
        }
    }

    fn observation(&self, name: &str) -> Option<&Observation> {
        self.observations.get(name)
    }
}
