//! The `redis` check: a fresh connection per run (TCP, or TLS for `rediss://`), then `PING`, or
//! a SET / GET / DEL round trip on a unique key with a TTL, plus the INFO fields the check names
//! as observations. All commands of a run (AUTH and SELECT included) go out in one write and
//! the replies are read in order, each bounded in size, so a run costs one round trip after
//! the connect. The TLS config is built once at load.
//!
//! The RESP2 exchange is written here instead of going through the `redis` crate: a probe needs
//! the server's own error text (the crate replaces AUTH errors with a generic one), bounded
//! reads, and a TLS config built once (the crate builds one per connection, loading the system
//! roots each time, and cannot turn verification off without an extra feature).
//!
//! This module also holds [`Endpoint`], the `host:port` that is resolved and connected per run,
//! shared with the memcached check.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};
use tokio::net::TcpStream;

use super::assert::{Assertion, Measured, QueryScope, judge};
use super::outcome::{Observation, Observations, Outcome, Reason, Status};
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader, Value, closest, parse_config_duration};

/// What `expect` may ask of a redis check: the duration, and any INFO field it lists.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &["total"],
    observations: &["*"],
};

/// The port of `redis://host` without one.
const DEFAULT_PORT: u16 = 6379;

/// Default prefix of the round-trip key.
pub const DEFAULT_KEY_PREFIX: &str = "bakewatch:";

/// TTL of the round-trip key when the check's timeout comes from `[defaults]` (which a check
/// type does not see): long enough for any sensible timeout, short enough to clean up after
/// a run cancelled between SET and DEL.
const FALLBACK_TTL: Duration = Duration::from_secs(60);

/// Longest reply line (status, error, integer, bulk header) accepted.
const MAX_LINE: usize = 16 * 1024;

/// Largest bulk reply accepted (INFO is a few KiB).
const MAX_BULK: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ping,
    Roundtrip,
}

const MODES: &[&str] = &["ping", "roundtrip"];

/// A validated redis check.
pub struct RedisSpec {
    endpoint: Endpoint,
    tls: Option<Tls>,
    mode: Mode,
    key_prefix: String,
    ttl_ms: u64,
    /// INFO fields to report as observations.
    info: Vec<String>,
    /// AUTH and SELECT, encoded once (holds the password: never printed).
    preamble: Vec<u8>,
    /// Which replies the preamble produces, in order.
    preamble_steps: Vec<Step>,
    /// The password as written and as sent (they differ when percent-encoded in the URL).
    secrets: Vec<String>,
}

impl fmt::Debug for RedisSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSpec")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .field("mode", &self.mode)
            .field("key_prefix", &self.key_prefix)
            .field("ttl_ms", &self.ttl_ms)
            .field("info", &self.info)
            .field("preamble_steps", &self.preamble_steps)
            .finish_non_exhaustive()
    }
}

/// What one reply answers, to judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Auth,
    Select(u32),
    Ping,
    Set,
    Get,
    Del,
    Info,
}

impl Step {
    fn command(self) -> &'static str {
        match self {
            Step::Auth => "AUTH",
            Step::Select(_) => "SELECT",
            Step::Ping => "PING",
            Step::Set => "SET",
            Step::Get => "GET",
            Step::Del => "DEL",
            Step::Info => "INFO",
        }
    }
}

impl RedisSpec {
    pub(crate) fn secret_values(&self) -> Vec<String> {
        self.secrets.clone()
    }

    /// Reads the redis keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<RedisSpec> {
        let before = cx.diags.len();
        let url =
            t.req::<At<Secret>>("url", cx)
                .and_then(|u| match RedisUrl::parse(u.value.expose()) {
                    Ok(parsed) => Some(parsed),
                    Err(m) => {
                        cx.error(u.span, format!("url: {m}"));
                        None
                    }
                });
        let username: Option<At<Secret>> = t.opt("username", cx);
        let password: Option<At<Secret>> = t.opt("password", cx);
        let mode = match t.opt::<At<String>>("mode", cx) {
            None => Some(Mode::Ping),
            Some(m) => match m.value.as_str() {
                "ping" => Some(Mode::Ping),
                "roundtrip" => Some(Mode::Roundtrip),
                other => {
                    let hint = closest(other, MODES)
                        .map(|k| format!(" (did you mean {k:?}?)"))
                        .unwrap_or_default();
                    cx.error(
                        m.span,
                        format!("mode: {other:?} is not \"ping\" or \"roundtrip\"{hint}"),
                    );
                    None
                }
            },
        };
        let key_prefix = match t.opt::<At<String>>("key_prefix", cx) {
            None => DEFAULT_KEY_PREFIX.to_string(),
            Some(p) => {
                if mode == Some(Mode::Ping) {
                    cx.error(
                        p.span.clone(),
                        "key_prefix: only used with mode = \"roundtrip\"",
                    );
                }
                if p.value.len() > 1024 {
                    cx.error(p.span.clone(), "key_prefix: longer than 1024 bytes");
                }
                p.value
            }
        };
        let mut info = Vec::new();
        if let Some(fields) = t.opt::<Vec<At<String>>>("info", cx) {
            for f in fields {
                if f.value.is_empty()
                    || f.value
                        .chars()
                        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
                {
                    cx.error(
                        f.span,
                        format!("info: {:?} is not an INFO field name", f.value),
                    );
                } else if !info.contains(&f.value) {
                    info.push(f.value);
                }
            }
        }
        let ttl = peek_timeout(t).map_or(FALLBACK_TTL, |d| (d * 2).max(Duration::from_secs(1)));
        let tls_value = t.get("tls");
        let url = url?;
        let tls = match (url.tls, tls_value) {
            (true, v) => parse_tls(v, &url.endpoint, cx),
            (false, Some(v)) => {
                cx.error(v.span(), "tls: needs a rediss:// url");
                None
            }
            (false, None) => None,
        };

        // Credentials: in the URL or as keys, not both.
        let mut secrets = Vec::new();
        let mut user = url.username.clone();
        let mut pass = url.password.clone();
        if let Some(u) = username {
            if user.is_some() {
                cx.error(
                    u.span,
                    "username: the url already has a username; give it in one place",
                );
            } else {
                user = Some(u.value.expose().to_string());
            }
        }
        if let Some(p) = password {
            if pass.is_some() {
                cx.error(
                    p.span,
                    "password: the url already has a password; give it in one place",
                );
            } else {
                pass = Some(p.value.expose().to_string());
            }
        }
        if let Some(raw) = &url.raw_password {
            secrets.push(raw.clone());
        }
        if let Some(p) = &pass {
            secrets.push(p.clone());
        }
        if user.is_some() && pass.is_none() {
            cx.error(
                t.span_of("username"),
                "username: a username needs a password (AUTH takes both)",
            );
        }
        if cx.diags.len() > before {
            return None;
        }

        let mut preamble = Vec::new();
        let mut preamble_steps = Vec::new();
        if let Some(p) = &pass {
            match &user {
                Some(u) => encode(&mut preamble, &[b"AUTH", u.as_bytes(), p.as_bytes()]),
                None => encode(&mut preamble, &[b"AUTH", p.as_bytes()]),
            }
            preamble_steps.push(Step::Auth);
        }
        if url.db != 0 {
            encode(&mut preamble, &[b"SELECT", url.db.to_string().as_bytes()]);
            preamble_steps.push(Step::Select(url.db));
        }
        Some(RedisSpec {
            endpoint: url.endpoint,
            tls,
            mode: mode?,
            key_prefix,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            info,
            preamble,
            preamble_steps,
            secrets,
        })
    }

    /// One run: connect, send every command at once, judge the replies in order.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let mut observations = Observations::default();
        let result = self.exchange(&mut observations).await;
        let total = start.elapsed();
        match result {
            Err(fault) => {
                let mut o = Outcome::fail(fault.reason, self.scrub(fault.message));
                o.observations = observations;
                o
            }
            Ok(summary) => {
                let subject = Measured {
                    observations,
                    total,
                };
                let j = judge(expect, &subject, false);
                let mut o = Outcome::new(j.status, j.reason, j.message);
                if j.status == Status::Pass {
                    o.message = summary.to_string();
                }
                o.failed_assertions = j.failures;
                o.observations = subject.observations;
                o
            }
        }
    }

    async fn exchange(&self, observations: &mut Observations) -> Result<&'static str, Fault> {
        let tcp = self.endpoint.connect().await?;
        match &self.tls {
            None => self.talk(tcp, observations).await,
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| Fault::new(Reason::Tls, format!("tls: {}", io_text(&e))))?;
                self.talk(stream, observations).await
            }
        }
    }

    async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        observations: &mut Observations,
    ) -> Result<&'static str, Fault> {
        let mut request = self.preamble.clone();
        let mut steps = self.preamble_steps.clone();
        let mut value = String::new();
        match self.mode {
            Mode::Ping => {
                encode(&mut request, &[b"PING"]);
                steps.push(Step::Ping);
            }
            Mode::Roundtrip => {
                // Key and value are random: neither another run nor a stale key can match.
                let key = format!("{}{:016x}", self.key_prefix, rand::random::<u64>());
                value = format!("{:016x}", rand::random::<u64>());
                let ttl = self.ttl_ms.to_string();
                encode(
                    &mut request,
                    &[
                        b"SET",
                        key.as_bytes(),
                        value.as_bytes(),
                        b"PX",
                        ttl.as_bytes(),
                    ],
                );
                encode(&mut request, &[b"GET", key.as_bytes()]);
                encode(&mut request, &[b"DEL", key.as_bytes()]);
                steps.extend([Step::Set, Step::Get, Step::Del]);
            }
        }
        if !self.info.is_empty() {
            encode(&mut request, &[b"INFO"]);
            steps.push(Step::Info);
        }
        stream
            .write_all(&request)
            .await
            .map_err(|e| conversation_fault(&e))?;
        stream.flush().await.map_err(|e| conversation_fault(&e))?;
        let mut reader = tokio::io::BufReader::new(stream);
        let mut line = Vec::new();
        for step in steps {
            let reply = read_reply(&mut reader, &mut line, step).await?;
            self.judge_reply(step, reply, value.as_bytes(), observations)?;
        }
        Ok(match self.mode {
            Mode::Ping => "PONG",
            Mode::Roundtrip => "SET, GET and DEL ok",
        })
    }

    fn judge_reply(
        &self,
        step: Step,
        reply: Reply,
        value: &[u8],
        observations: &mut Observations,
    ) -> Result<(), Fault> {
        let cmd = step.command();
        if let Reply::Error(e) = &reply {
            let code = e.split_whitespace().next().unwrap_or("");
            let reason = match (step, code) {
                (Step::Auth, _) | (_, "NOAUTH" | "WRONGPASS" | "NOPERM") => Reason::Auth,
                _ => Reason::Query,
            };
            let message = match (step, reason) {
                (Step::Auth, _) => format!("auth: {e}"),
                (_, Reason::Auth) => format!("auth: {cmd}: {e}"),
                (Step::Select(db), _) => format!("query: SELECT {db}: {e}"),
                _ => format!("query: {cmd}: {e}"),
            };
            return Err(Fault::new(reason, message));
        }
        let ok = match (step, &reply) {
            (Step::Auth | Step::Select(_) | Step::Set, Reply::Status(s)) => s == "OK",
            (Step::Ping, Reply::Status(s)) => s == "PONG",
            (Step::Get, Reply::Bulk(Some(got))) if got == value => true,
            (Step::Get, Reply::Bulk(Some(got))) => {
                return Err(Fault::new(
                    Reason::Protocol,
                    format!(
                        "protocol: GET returned {}, not the value just SET",
                        show(got)
                    ),
                ));
            }
            (Step::Get, Reply::Bulk(None)) => {
                return Err(Fault::new(
                    Reason::Protocol,
                    "protocol: GET returned nil for the key just SET",
                ));
            }
            (Step::Del, Reply::Integer(_)) => true,
            (Step::Info, Reply::Bulk(Some(text))) => {
                self.observe_info(&String::from_utf8_lossy(text), observations);
                true
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Fault::new(
                Reason::Protocol,
                format!("protocol: unexpected reply to {cmd}: {}", reply.describe()),
            ))
        }
    }

    /// Sets the listed INFO fields found in `text` (`field:value` lines); numbers when they parse.
    fn observe_info(&self, text: &str, observations: &mut Observations) {
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if let Some(field) = self.info.iter().find(|f| *f == name) {
                let value = value.trim();
                let obs = match value.parse::<f64>() {
                    Ok(n) if n.is_finite() => Observation::Number(n),
                    _ => Observation::Text(value.to_string()),
                };
                observations.set(field.clone(), obs);
            }
        }
    }

    /// Server text may echo what it was sent (a misdirected check against an echo service):
    /// the password never reaches a message, even before the runner's own redaction.
    fn scrub(&self, mut message: String) -> String {
        for s in &self.secrets {
            if !s.is_empty() && message.contains(s.as_str()) {
                message = message.replace(s.as_str(), "<redacted>");
            }
        }
        message
    }
}

/// Reads the check's own `timeout` without reporting anything (the caller validates it).
pub(crate) fn peek_timeout(t: &mut TableReader) -> Option<Duration> {
    let v = t.get("timeout")?;
    // Capped like every config duration (the check's own reading reports one too long).
    parse_config_duration(v.get_ref().as_str()?).ok()
}

/// Appends one command as a RESP array of bulk strings.
fn encode(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

// ---------------------------------------------------------------------------------------------
// Replies.

/// One RESP2 reply, as far as these commands produce them (none of them answers an array).
#[derive(Debug)]
enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    /// A well-formed array header: never a valid answer here.
    Array(i64),
}

impl Reply {
    fn describe(&self) -> String {
        match self {
            Reply::Status(s) => format!("+{}", show(s.as_bytes())),
            Reply::Error(e) => format!("-{}", show(e.as_bytes())),
            Reply::Integer(n) => format!("integer {n}"),
            Reply::Bulk(None) => "nil".to_string(),
            Reply::Bulk(Some(b)) => format!("bulk {}", show(b)),
            Reply::Array(n) => format!("an array of {n}"),
        }
    }
}

/// Reads one reply; anything that is not RESP2 is a protocol fault.
async fn read_reply<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    step: Step,
) -> Result<Reply, Fault> {
    let cmd = step.command();
    read_line(r, line, MAX_LINE)
        .await
        .map_err(|f| f.context(&format!("before the reply to {cmd}")))?;
    let text = &line[..line.len() - 2];
    let garbage = || {
        Fault::new(
            Reason::Protocol,
            format!("protocol: not a redis reply to {cmd}: {}", show(text)),
        )
    };
    let (&kind, rest) = text.split_first().ok_or_else(garbage)?;
    let rest_str = || std::str::from_utf8(rest).map_err(|_| garbage());
    let number = || rest_str()?.parse::<i64>().map_err(|_| garbage());
    Ok(match kind {
        b'+' => Reply::Status(rest_str()?.to_string()),
        b'-' => Reply::Error(String::from_utf8_lossy(rest).into_owned()),
        b':' => Reply::Integer(number()?),
        b'*' => Reply::Array(number()?),
        b'$' => {
            let n = number()?;
            if n == -1 {
                return Ok(Reply::Bulk(None));
            }
            let n = usize::try_from(n).map_err(|_| garbage())?;
            if n > MAX_BULK {
                return Err(Fault::new(
                    Reason::Protocol,
                    format!(
                        "protocol: the reply to {cmd} is {n} bytes, more than the {MAX_BULK} accepted"
                    ),
                ));
            }
            let mut data = vec![0; n + 2];
            r.read_exact(&mut data)
                .await
                .map_err(|e| conversation_fault(&e).context(&format!("in the reply to {cmd}")))?;
            if !data.ends_with(b"\r\n") {
                return Err(Fault::new(
                    Reason::Protocol,
                    format!("protocol: the bulk reply to {cmd} does not end with CRLF"),
                ));
            }
            data.truncate(n);
            Reply::Bulk(Some(data))
        }
        _ => return Err(garbage()),
    })
}

/// Reads one CRLF-terminated line of at most `max` bytes into `line` (CRLF included).
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> Result<(), Fault> {
    line.clear();
    let n = (&mut *r)
        .take(max as u64)
        .read_until(b'\n', line)
        .await
        .map_err(|e| conversation_fault(&e))?;
    if n == 0 {
        return Err(Fault::new(
            Reason::Protocol,
            "protocol: connection closed by the server",
        ));
    }
    if line.ends_with(b"\r\n") {
        return Ok(());
    }
    Err(if n == max {
        Fault::new(
            Reason::Protocol,
            format!("protocol: a reply line longer than {max} bytes"),
        )
    } else if line.ends_with(b"\n") {
        Fault::new(
            Reason::Protocol,
            format!("protocol: a reply line without CR: {}", show(line)),
        )
    } else {
        Fault::new(
            Reason::Protocol,
            format!(
                "protocol: connection closed by the server in the middle of a line: {}",
                show(line)
            ),
        )
    })
}

/// Server bytes for a message: at most 80 characters, control characters escaped.
pub(crate) fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        if i == 80 {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Faults.

/// Why a run failed before anything could be judged.
#[derive(Debug)]
pub(crate) struct Fault {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

impl Fault {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Fault {
        Fault {
            reason,
            message: message.into(),
        }
    }

    /// Adds where it happened to a "connection closed" style message.
    pub(crate) fn context(mut self, place: &str) -> Fault {
        if self.reason == Reason::Protocol && self.message.ends_with("by the server") {
            self.message.push(' ');
            self.message.push_str(place);
        }
        self
    }
}

/// An I/O error after the connection was made: TLS when rustls says so, else the peer broke
/// the conversation (protocol).
pub(crate) fn conversation_fault(e: &io::Error) -> Fault {
    if is_tls(e) {
        Fault::new(Reason::Tls, format!("tls: {}", io_text(e)))
    } else {
        Fault::new(Reason::Protocol, format!("protocol: {}", io_text(e)))
    }
}

fn is_tls(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// An I/O error in a few lowercase words, without the "(os error N)" tail.
pub(crate) fn io_text(e: &io::Error) -> String {
    if let Some(inner) = e.get_ref() {
        return inner.to_string();
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset by the server".to_string(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
        io::ErrorKind::UnexpectedEof => "connection closed by the server".to_string(),
        io::ErrorKind::BrokenPipe => "connection closed by the server (broken pipe)".to_string(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Where to connect.

/// A `host:port` to connect to, resolved per run (an IP address is parsed once at load).
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

impl Endpoint {
    /// Parses `"host:port"` or `"[v6]:port"`.
    pub(crate) fn parse_address(s: &str) -> Result<Endpoint, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Self::check_port(addr.port(), s).map(|()| Endpoint::Addr(addr));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} is not \"host:port\""));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: port {port:?} is not a number from 1 to 65535"))?;
        Self::check_port(port, s)?;
        if host.starts_with('[') || host.contains(':') {
            return Err(format!(
                "{s:?} is not \"host:port\" (an IPv6 address goes in brackets: \"[::1]:{port}\")"
            ));
        }
        Self::from_host(host, port).map_err(|m| format!("{s:?}: {m}"))
    }

    fn check_port(port: u16, s: &str) -> Result<(), String> {
        if port == 0 {
            Err(format!("{s:?}: port 0 is not a port to connect to"))
        } else {
            Ok(())
        }
    }

    /// From a host name or IP address (without brackets) and a port.
    pub(crate) fn from_host(host: &str, port: u16) -> Result<Endpoint, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Endpoint::Addr(SocketAddr::new(ip, port)));
        }
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(format!("{host:?} is not a host name or IP address"));
        }
        Ok(Endpoint::Name {
            host: host.to_string(),
            port,
        })
    }

    /// Resolves (names only) and connects, trying each address in turn.
    pub(crate) async fn connect(&self) -> Result<TcpStream, Fault> {
        let connect = |addr: SocketAddr| async move {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok::<_, io::Error>(s)
        };
        let connect_fault =
            |e: io::Error| Fault::new(Reason::Connect, format!("connect: {}", io_text(&e)));
        match self {
            Endpoint::Addr(addr) => connect(*addr).await.map_err(connect_fault),
            Endpoint::Name { host, port } => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| {
                        Fault::new(
                            Reason::Dns,
                            format!("dns: cannot resolve {host}: {}", io_text(&e)),
                        )
                    })?
                    .collect();
                let mut last = None;
                for addr in addrs {
                    match connect(addr).await {
                        Ok(s) => return Ok(s),
                        Err(e) => last = Some(e),
                    }
                }
                Err(match last {
                    Some(e) => connect_fault(e),
                    None => Fault::new(Reason::Dns, format!("dns: {host} has no address")),
                })
            }
        }
    }

    /// The host as a TLS server name.
    fn server_name(&self) -> Result<ServerName<'static>, String> {
        match self {
            Endpoint::Addr(a) => Ok(ServerName::IpAddress(a.ip().into())),
            Endpoint::Name { host, .. } => ServerName::try_from(host.clone())
                .map_err(|_| format!("{host:?} is not a valid TLS server name")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The URL.

/// `redis://[user:pass@]host[:port][/db]` or `rediss://…`.
struct RedisUrl {
    tls: bool,
    endpoint: Endpoint,
    username: Option<String>,
    password: Option<String>,
    /// The password as written in the URL, when percent-encoded differently.
    raw_password: Option<String>,
    db: u32,
}

impl RedisUrl {
    /// Parses the URL; messages never repeat it (it may hold a password).
    fn parse(s: &str) -> Result<RedisUrl, String> {
        let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(format!(
                    "scheme {other:?} is not redis:// or rediss:// (TLS)"
                ));
            }
        };
        let port = url.port().unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err("port 0 is not a port to connect to".to_string());
        }
        let endpoint = match url.host() {
            None => return Err("the url has no host".to_string()),
            Some(url::Host::Ipv4(ip)) => Endpoint::Addr(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Ipv6(ip)) => Endpoint::Addr(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Domain(d)) => Endpoint::from_host(&percent_decode(d)?, port)?,
        };
        let path = url.path();
        let db = match path.trim_start_matches('/') {
            "" => 0,
            n => n.parse::<u32>().map_err(|_| {
                format!("the path must be the database number, e.g. \"/0\" (found {path:?})")
            })?,
        };
        if url.query().is_some() {
            return Err("query parameters are not supported (the database goes in the path, TLS options in `tls`)".to_string());
        }
        if url.fragment().is_some() {
            return Err("a fragment (`#…`) is not supported".to_string());
        }
        let username = Some(percent_decode(url.username())?).filter(|u| !u.is_empty());
        let (password, raw_password) = match url.password() {
            None => (None, None),
            Some(raw) => {
                let decoded = percent_decode(raw)?;
                let raw = (decoded != raw).then(|| raw.to_string());
                (Some(decoded), raw)
            }
        };
        if username.is_some() && password.is_none() {
            return Err("a username needs a password (redis://user:password@host)".to_string());
        }
        Ok(RedisUrl {
            tls,
            endpoint,
            username,
            password,
            raw_password,
            db,
        })
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("tls", &self.tls)
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// Decodes `%XX` escapes (the URL's user info and host).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the url")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape in the url that is not UTF-8".to_string())
}

// ---------------------------------------------------------------------------------------------
// TLS.

struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

/// Builds the TLS client for a `rediss://` URL from the optional `tls` table, once.
fn parse_tls(v: Option<&Value<'_>>, host: &Endpoint, cx: &mut Cx) -> Option<Tls> {
    let before = cx.diags.len();
    let mut ca_file: Option<At<PathBuf>> = None;
    let mut cert_file: Option<At<PathBuf>> = None;
    let mut key_file: Option<At<PathBuf>> = None;
    let mut server_name: Option<At<String>> = None;
    let mut verify = true;
    let span = v.map(Value::span);
    if let Some(v) = v {
        let mut t = TableReader::new(v, "tls", cx)?;
        ca_file = t.opt("ca_file", cx);
        cert_file = t.opt("cert_file", cx);
        key_file = t.opt("key_file", cx);
        server_name = t.opt("server_name", cx);
        verify = t.or("verify", true, cx);
        t.finish(cx);
    }
    let name = match server_name {
        Some(n) => match n.value.parse::<IpAddr>() {
            Ok(ip) => Some(ServerName::IpAddress(ip.into())),
            Err(_) => ServerName::try_from(n.value.clone())
                .map_err(|_| {
                    cx.error(
                        n.span.clone(),
                        format!("server_name: {:?} is not a valid TLS server name", n.value),
                    )
                })
                .ok(),
        },
        None => host
            .server_name()
            .map_err(|m| cx.error(span.clone().unwrap_or(0..0), format!("tls: {m}")))
            .ok(),
    };
    let read = |f: &At<PathBuf>, cx: &mut Cx| match std::fs::read(&f.value) {
        Ok(b) => Some(b),
        Err(e) => {
            cx.error(
                f.span.clone(),
                format!("cannot read {}: {}", f.value.display(), e.kind()),
            );
            None
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            cx.error(span.unwrap_or(0..0), format!("tls: {e}"));
            return None;
        }
    };
    let builder = if !verify {
        if let Some(ca) = &ca_file {
            cx.error(
                ca.span.clone(),
                "ca_file: has no effect with verify = false",
            );
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::checks::tls::HandshakeOnly(
                provider.clone(),
            )))
    } else if let Some(ca) = &ca_file {
        let pem = read(ca, cx)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            // A certificate the store cannot use is as good as absent: reported just below.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            cx.error(
                ca.span.clone(),
                format!(
                    "ca_file: {} holds no usable PEM certificate",
                    ca.value.display()
                ),
            );
            return None;
        }
        // A private CA replaces the system roots: trust exactly what the check names.
        builder.with_root_certificates(roots)
    } else {
        match rustls_platform_verifier::Verifier::new(provider.clone()) {
            Ok(verifier) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier)),
            Err(e) => {
                cx.error(
                    span.unwrap_or(0..0),
                    format!("tls: cannot use the system's root certificates: {e}"),
                );
                return None;
            }
        }
    };
    let config = match (&cert_file, &key_file) {
        (Some(c), Some(k)) => {
            let (cert_pem, key_pem) = (read(c, cx)?, read(k, cx)?);
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                .flatten()
                .collect();
            if chain.is_empty() {
                cx.error(
                    c.span.clone(),
                    format!("cert_file: {} holds no PEM certificate", c.value.display()),
                );
                return None;
            }
            let Ok(key) = PrivateKeyDer::from_pem_slice(&key_pem) else {
                cx.error(
                    k.span.clone(),
                    format!("key_file: {} holds no PEM private key", k.value.display()),
                );
                return None;
            };
            match builder.with_client_auth_cert(chain, key) {
                Ok(c) => c,
                Err(e) => {
                    cx.error(
                        c.span.clone(),
                        format!("cert_file / key_file: not a usable certificate and key: {e}"),
                    );
                    return None;
                }
            }
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(c), None) => {
            cx.error(
                c.span.clone(),
                "tls: a client certificate needs both `cert_file` and `key_file`",
            );
            return None;
        }
        (None, Some(k)) => {
            cx.error(
                k.span.clone(),
                "tls: a client certificate needs both `cert_file` and `key_file`",
            );
            return None;
        }
    };
    if cx.diags.len() > before {
        return None;
    }
    Some(Tls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name: name?,
    })
}

// ---------------------------------------------------------------------------------------------
// What assertions see.

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_credentials_and_database() {
        let u = RedisUrl::parse("redis://alice:p%40ss@127.0.0.1:6380/3").unwrap();
        assert!(!u.tls);
        assert!(matches!(u.endpoint, Endpoint::Addr(a) if a.port() == 6380));
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.raw_password.as_deref(), Some("p%40ss"));
        assert_eq!(u.db, 3);

        let u = RedisUrl::parse("rediss://:secret@cache.internal").unwrap();
        assert!(u.tls);
        assert!(
            matches!(&u.endpoint, Endpoint::Name { host, port: 6379 } if host == "cache.internal")
        );
        assert_eq!(u.username, None);
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.raw_password, None);

        let u = RedisUrl::parse("redis://[::1]:7000/").unwrap();
        assert!(matches!(u.endpoint, Endpoint::Addr(a) if a.ip().is_ipv6() && a.port() == 7000));
        assert_eq!(u.db, 0);
    }

    #[test]
    fn bad_urls_are_explained_without_repeating_them() {
        for (url, words) in [
            ("http://host:1/", "scheme \"http\""),
            ("redis://host/x", "database number"),
            ("redis://host/0?protocol=resp3", "query parameters"),
            ("redis://user@host", "needs a password"),
            ("redis:///0", "no host"),
        ] {
            let e = RedisUrl::parse(url).unwrap_err();
            assert!(e.contains(words), "{url}: {e}");
        }
        let e = RedisUrl::parse("redis://u:hunter22@host/x").unwrap_err();
        assert!(!e.contains("hunter22"), "{e}");
    }

    #[test]
    fn addresses_parse() {
        assert!(matches!(
            Endpoint::parse_address("127.0.0.1:11211"),
            Ok(Endpoint::Addr(_))
        ));
        assert!(matches!(
            Endpoint::parse_address("[::1]:11211"),
            Ok(Endpoint::Addr(_))
        ));
        assert!(matches!(
            Endpoint::parse_address("cache-1.internal:11211"),
            Ok(Endpoint::Name { port: 11211, .. })
        ));
        for bad in [
            "cache",
            "cache:",
            "cache:0",
            "cache:99999",
            "::1:11211",
            "a b:1",
            ":11211",
        ] {
            assert!(Endpoint::parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_encode_as_resp_arrays() {
        let mut b = Vec::new();
        encode(&mut b, &[b"GET", b"k"]);
        assert_eq!(b, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[tokio::test]
    async fn replies_parse_and_garbage_is_refused() {
        let mut line = Vec::new();
        let mut input: &[u8] = b"+PONG\r\n$3\r\nabc\r\n$-1\r\n:2\r\n-ERR no\r\n*1\r\n";
        let mut r = tokio::io::BufReader::new(&mut input);
        assert!(
            matches!(read_reply(&mut r, &mut line, Step::Ping).await, Ok(Reply::Status(s)) if s == "PONG")
        );
        assert!(
            matches!(read_reply(&mut r, &mut line, Step::Get).await, Ok(Reply::Bulk(Some(b))) if b == b"abc")
        );
        assert!(matches!(
            read_reply(&mut r, &mut line, Step::Get).await,
            Ok(Reply::Bulk(None))
        ));
        assert!(matches!(
            read_reply(&mut r, &mut line, Step::Del).await,
            Ok(Reply::Integer(2))
        ));
        assert!(
            matches!(read_reply(&mut r, &mut line, Step::Set).await, Ok(Reply::Error(e)) if e == "ERR no")
        );
        assert!(matches!(
            read_reply(&mut r, &mut line, Step::Set).await,
            Ok(Reply::Array(1))
        ));
        let e = read_reply(&mut r, &mut line, Step::Set).await.unwrap_err();
        assert_eq!(e.reason, Reason::Protocol);
        assert!(e.message.contains("closed"), "{}", e.message);

        for garbage in [
            &b"SSH-2.0-OpenSSH\r\n"[..],
            b"$abc\r\n",
            b"+PONG\n",
            b"$99999999999\r\n",
        ] {
            let mut input = garbage;
            let mut r = tokio::io::BufReader::new(&mut input);
            let e = read_reply(&mut r, &mut line, Step::Ping).await.unwrap_err();
            assert_eq!(e.reason, Reason::Protocol, "{garbage:?}");
        }
        let long = vec![b'+'; MAX_LINE + 10];
        let mut input = &long[..];
        let mut r = tokio::io::BufReader::new(&mut input);
        let e = read_reply(&mut r, &mut line, Step::Ping).await.unwrap_err();
        assert!(e.message.contains("longer than"), "{}", e.message);
    }
}
