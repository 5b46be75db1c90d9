//! The `postgres` check: a fresh connection per run, `query` (default `SELECT 1`) inside a
//! read-only transaction whose statement timeout ends just before the check's own timeout
//! (so the server cancels the query and says so before the runner gives up), then a clean
//! close. The query goes through the simple query protocol, so every column type arrives as
//! text. The connection future is driven inside the run future, never spawned: a run cut
//! by the runner's timeout drops the socket with it and leaves nothing behind.
//!
//! The pieces the `mysql` check shares (the `tls` table, the statement budget, the guard
//! against transaction control in `query`, the result as assertions see it, password
//! masking) are in [`shared`] at the end of this file.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

use self::shared::{Dialect, ResultSet, TlsMode};
use super::assert::{Assertion, QueryScope};
use super::outcome::{Outcome, Reason};
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader};

/// What `expect` may ask of a postgres check.
pub const SCOPE: QueryScope = shared::SCOPE;

/// A validated postgres check, with its TLS connector ready.
pub struct PostgresSpec {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    query: String,
    /// The check's timeout, from which the statement timeout is derived.
    timeout: Duration,
    dsn: Secret,
    /// The password as written in the DSN and as sent, for masking and redaction.
    passwords: Vec<String>,
    /// "host:port" list, for messages.
    target: String,
}

impl fmt::Debug for PostgresSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSpec")
            .field("target", &self.target)
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .field("ssl_mode", &self.config.get_ssl_mode())
            .field("query", &self.query)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresSpec {
    /// Reads the postgres keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<PostgresSpec> {
        let dsn: Option<At<Secret>> = t.req("dsn", cx);
        let query = shared::read_query(t, cx, Dialect::Postgres);
        let timeout = shared::check_timeout(t);
        let tls = t
            .get("tls")
            .map(|v| shared::read_tls(v, cx, Dialect::Postgres));
        let dsn = dsn?;
        let mut config = parse_dsn(&dsn, cx)?;
        let connector = match &tls {
            None => no_verify_connector(),
            Some(None) => return None,
            Some(Some(table)) => {
                config.ssl_mode(match table.mode {
                    TlsMode::Disable => SslMode::Disable,
                    TlsMode::Prefer => SslMode::Prefer,
                    TlsMode::Require => SslMode::Require,
                });
                match shared::client_config(table) {
                    Ok(c) => MakeRustlsConnect::new(c),
                    Err(m) => {
                        cx.error(table.span.clone(), format!("tls: {m}"));
                        return None;
                    }
                }
            }
        };
        if config.get_application_name().is_none() {
            config.application_name("bakewatch");
        }
        let mut passwords = Vec::new();
        if let Some(p) = config.get_password() {
            passwords.push(String::from_utf8_lossy(p).into_owned());
        }
        if let Some(raw) = url::Url::parse(dsn.value.expose())
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
        {
            passwords.push(raw);
        }
        passwords.retain(|p| !p.is_empty());
        passwords.dedup();
        let target = target_of(&config);
        Some(PostgresSpec {
            config,
            tls: connector,
            query: query?,
            timeout,
            dsn: dsn.value,
            passwords,
            target,
        })
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        let mut out = self.passwords.clone();
        out.push(self.dsn.expose().to_string());
        out
    }

    /// Sets the check's effective timeout, from which the statement timeout is derived.
    /// `parse` reads the check table's own `timeout` (see [`shared::check_timeout`]) but
    /// cannot see `[defaults] timeout`; the config layer can.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// One run: connect, query in a read-only transaction, close, judge.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let (client, connection) = match self.config.connect(self.tls.clone()).await {
            Ok(pair) => pair,
            Err(e) => return self.failure(Phase::Connect, &e, Duration::ZERO),
        };
        let mut connection = pin!(connection);
        let mut connection_done = false;
        let budget = shared::statement_budget(self.timeout, start.elapsed());
        let result = {
            let mut session = pin!(self.session(&client, budget));
            let mut ended: Option<Result<(), tokio_postgres::Error>> = None;
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = session.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                if !connection_done && let Poll::Ready(c) = connection.as_mut().poll(cx) {
                    connection_done = true;
                    ended = Some(c);
                    // The server's last words (a FATAL such as "terminating connection due
                    // to administrator command") may just have reached the session.
                    if let Poll::Ready(r) = session.as_mut().poll(cx) {
                        return Poll::Ready(r);
                    }
                }
                match ended.take() {
                    Some(c) => Poll::Ready(Err((Phase::Session, c.err()))),
                    None => Poll::Pending,
                }
            })
            .await
        };
        let total = start.elapsed();
        // Dropping the client makes the connection send Terminate and shut the socket; no
        // reply is awaited, and the runner's timeout still bounds this.
        drop(client);
        if !connection_done {
            let _ = connection.await;
        }
        match result {
            Ok(rs) => shared::judged(expect, rs, total),
            Err((phase, Some(e))) => self.failure(phase, &e, budget),
            Err((_, None)) => Outcome::fail(
                Reason::Connect,
                format!(
                    "connect: the server closed the connection ({})",
                    self.target
                ),
            ),
        }
    }

    /// The statements of one run on an open connection.
    async fn session(
        &self,
        client: &Client,
        budget: Duration,
    ) -> Result<ResultSet, (Phase, Option<tokio_postgres::Error>)> {
        // One message, one round trip: in the simple query protocol a failing statement
        // skips the rest of the message, so the query never runs outside the read-only
        // transaction. Transaction-scoped settings only: behind a transaction-pooling
        // PgBouncer a session SET would outlive this check on a shared server connection.
        let text = format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {}; {}",
            budget.as_millis().max(1),
            self.query
        );
        let messages = client
            .simple_query(&text)
            .await
            .map_err(|e| (Phase::Query, Some(e)))?;
        // Observations come from the last statement that returns rows.
        let mut last: Option<ResultSet> = None;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(_) => last = Some(ResultSet::default()),
                SimpleQueryMessage::Row(row) => {
                    let rs = last.get_or_insert_with(ResultSet::default);
                    if rs.rows == 0 {
                        rs.value = row.try_get(0).ok().flatten().map(shared::cap_value);
                    }
                    rs.rows += 1;
                }
                _ => {}
            }
        }
        Ok(last.unwrap_or_default())
    }

    fn failure(&self, phase: Phase, e: &tokio_postgres::Error, budget: Duration) -> Outcome {
        let (reason, message) = classify(phase, e, budget, &self.target);
        let message = shared::mask(shared::one_line(&message), &self.passwords);
        match reason {
            Reason::Config | Reason::Internal => Outcome::error(reason, message),
            _ => Outcome::fail(reason, message),
        }
    }
}

/// Where a run was when it failed; the same error means different things at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Query,
    /// The connection itself ended while statements were running.
    Session,
}

fn parse_dsn(dsn: &At<Secret>, cx: &mut Cx) -> Option<tokio_postgres::Config> {
    let text = dsn.value.expose();
    if let Some(scheme) = shared::dsn_scheme(text)
        && !matches!(scheme, "postgres" | "postgresql")
    {
        cx.error(
            dsn.span.clone(),
            format!(
                "dsn: scheme {scheme:?} is not postgres:// or postgresql:// (or write key=value pairs: \"host=… user=… dbname=…\")"
            ),
        );
        return None;
    }
    let config: tokio_postgres::Config = match text.parse() {
        Ok(c) => c,
        Err(e) => {
            let detail = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            cx.error(dsn.span.clone(), format!("dsn: {e}{detail}"));
            return None;
        }
    };
    let mut ok = true;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        cx.error(dsn.span.clone(), "dsn: names no host");
        ok = false;
    }
    if config.get_user().is_none() {
        cx.error(dsn.span.clone(), "dsn: names no user");
        ok = false;
    }
    ok.then_some(config)
}

fn target_of(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let hosts: Vec<String> = if config.get_hosts().is_empty() {
        config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, a)| match a {
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", port(i)),
                std::net::IpAddr::V4(a) => format!("{a}:{}", port(i)),
            })
            .collect()
    } else {
        config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| match h {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
                Host::Tcp(name) => format!("{name}:{}", port(i)),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect()
    };
    hosts.join(",")
}

/// The connector used when the check has no `tls` table: the DSN's `sslmode` decides, with
/// libpq's meaning (`prefer` and `require` encrypt without verifying the certificate).
fn no_verify_connector() -> MakeRustlsConnect {
    static CONNECTOR: OnceLock<MakeRustlsConnect> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| MakeRustlsConnect::new(shared::no_verify_config()))
        .clone()
}

/// SQLSTATEs, from the PostgreSQL manual's appendix A.
mod sqlstate {
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const QUERY_CANCELED: &str = "57014";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CRASH_SHUTDOWN: &str = "57P02";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
}

fn classify(
    phase: Phase,
    e: &tokio_postgres::Error,
    budget: Duration,
    target: &str,
) -> (Reason, String) {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let msg = db.message();
        return match code {
            sqlstate::INVALID_PASSWORD | sqlstate::INVALID_AUTHORIZATION => {
                (Reason::Auth, format!("auth: {msg}"))
            }
            sqlstate::QUERY_CANCELED if msg.contains("statement timeout") => (
                Reason::Timeout,
                format!(
                    "timeout: the server cancelled the query at its {} statement timeout (set just below the check's timeout)",
                    shared::show_ms(budget)
                ),
            ),
            sqlstate::ADMIN_SHUTDOWN
            | sqlstate::CRASH_SHUTDOWN
            | sqlstate::CANNOT_CONNECT_NOW
            | sqlstate::TOO_MANY_CONNECTIONS
            | sqlstate::INVALID_CATALOG_NAME => {
                (Reason::Connect, format!("connect: {msg} (SQLSTATE {code})"))
            }
            c if c.starts_with("08") => {
                (Reason::Connect, format!("connect: {msg} (SQLSTATE {code})"))
            }
            _ if phase == Phase::Connect => {
                (Reason::Connect, format!("connect: {msg} (SQLSTATE {code})"))
            }
            _ => (Reason::Query, format!("query: {msg} (SQLSTATE {code})")),
        };
    }
    let inner = shared::innermost(e);
    // tokio-postgres does not expose its error kinds; its Display names them.
    match e.to_string().as_str() {
        "error performing TLS handshake" => (Reason::Tls, format!("tls: {inner}")),
        "authentication error" => (Reason::Auth, format!("auth: {inner}")),
        "timeout waiting for server" => (
            Reason::Timeout,
            format!("timeout: connecting to {target} (connect_timeout of the DSN)"),
        ),
        "invalid configuration" | "invalid connection string" => {
            (Reason::Config, format!("config: {inner}"))
        }
        "error connecting to server" => shared::connect_error(e, target),
        "error communicating with the server" | "connection closed" => {
            let what = if phase == Phase::Connect {
                "connect"
            } else {
                "connect: connection lost"
            };
            match shared::io_error(e) {
                Some(io) => (
                    Reason::Connect,
                    format!("{what}: {} ({target})", shared::io_text(io)),
                ),
                None => (Reason::Connect, format!("{what} ({target})")),
            }
        }
        other => (Reason::Protocol, format!("protocol: {other}: {inner}")),
    }
}

/// What the `postgres` and `mysql` checks share.
pub(crate) mod shared {
    use std::ops::Range;
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::ClientConfig;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use crate::checks::assert::{Assertion, Measured, QueryScope, judge};
    use crate::checks::outcome::{Observation, Observations, Outcome, Reason, Status};
    use crate::config::reader::{At, Cx, TableReader, Value, parse_config_duration};

    /// What `expect` may ask of a postgres or mysql check.
    pub const SCOPE: QueryScope = QueryScope {
        response: false,
        durations: &["total"],
        observations: &["value", "rows"],
    };

    /// The timeout of a check without its own `timeout` key (`[defaults] timeout`'s default).
    pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

    /// Longest `value` kept as an observation; longer text is cut at a character boundary.
    pub const MAX_VALUE_BYTES: usize = 4096;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Dialect {
        Postgres,
        Mysql,
    }

    /// The scheme of a URL DSN (`postgres` of `postgres://…`). `None` for key=value DSNs:
    /// the text before a later `://` there may hold the password, and is never shown.
    pub fn dsn_scheme(text: &str) -> Option<&str> {
        let (scheme, _) = text.split_once("://")?;
        let mut chars = scheme.chars();
        let is_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        is_scheme.then_some(scheme)
    }

    /// The check's timeout as written on its table. The config layer reads (and reports)
    /// `timeout` before the type's keys; a check without one gets the built-in default
    /// here unless the config layer sets the effective one with `set_timeout`.
    pub fn check_timeout(t: &mut TableReader) -> Duration {
        t.get("timeout")
            .and_then(|v| v.get_ref().as_str().map(str::to_owned))
            .and_then(|s| parse_config_duration(&s).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_CHECK_TIMEOUT)
    }

    /// The server-side statement timeout of a run: what is left of the check's timeout
    /// after connecting, minus a margin (a tenth of the timeout, 20 ms to 1 s) so that the
    /// server cancels the query, and says so, before the runner drops the connection.
    pub fn statement_budget(timeout: Duration, elapsed: Duration) -> Duration {
        let margin = (timeout / 10).clamp(Duration::from_millis(20), Duration::from_secs(1));
        timeout
            .saturating_sub(elapsed)
            .saturating_sub(margin)
            .max(Duration::from_millis(1))
    }

    pub fn show_ms(d: Duration) -> String {
        format!("{}ms", d.as_millis())
    }

    /// `query` (default `SELECT 1`): not empty, and free of statements that would end or
    /// loosen the read-only transaction and statement timeout the check sets up.
    pub fn read_query(t: &mut TableReader, cx: &mut Cx, dialect: Dialect) -> Option<String> {
        let Some(q) = t.opt::<At<String>>("query", cx) else {
            return (!t.has("query")).then(|| "SELECT 1".to_string());
        };
        let statements = statements(&q.value, dialect);
        if statements.iter().all(|s| s.trim().is_empty()) {
            cx.error(q.span, "query: is empty");
            return None;
        }
        for s in &statements {
            if let Some(problem) = forbidden(s) {
                cx.error(q.span, format!("query: {problem}"));
                return None;
            }
        }
        Some(q.value)
    }

    const TRANSACTION_CONTROL: &[&str] = &[
        "BEGIN",
        "START",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "SAVEPOINT",
        "RELEASE",
        "RESET",
        "DISCARD",
        "LOCK",
        "UNLOCK",
        "XA",
    ];

    const GUARDED_SETTINGS: &[&str] = &[
        "TRANSACTION",
        "READ_ONLY",
        "STATEMENT_TIMEOUT",
        "MAX_STATEMENT_TIME",
        "MAX_EXECUTION_TIME",
    ];

    /// Why one statement (its code, outside literals and comments) is not allowed.
    fn forbidden(code: &str) -> Option<String> {
        let upper = code.to_ascii_uppercase();
        let mut words = upper.split_whitespace();
        let first = words.next()?;
        if TRANSACTION_CONTROL.contains(&first) {
            return Some(format!(
                "`{first}` would end or change the read-only transaction bakewatch runs the query in; leave transaction control out"
            ));
        }
        if matches!(first, "SET" | "PREPARE")
            && let Some(g) = GUARDED_SETTINGS.iter().find(|g| upper.contains(**g))
        {
            return Some(format!(
                "a `{first}` touching {g} would loosen the read-only transaction or the statement timeout bakewatch sets; leave it out"
            ));
        }
        None
    }

    /// The statements of `sql` split at `;`, each reduced to its code: string literals,
    /// quoted identifiers, comments and dollar-quoted bodies become a space.
    pub fn statements(sql: &str, dialect: Dialect) -> Vec<String> {
        let b = sql.as_bytes();
        let mysql = dialect == Dialect::Mysql;
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$';
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut i = 0;
        // Skips a quoted run opened at `i`, returns the index after it.
        let skip_quoted = |mut i: usize, q: u8, backslash: bool| -> usize {
            i += 1;
            while i < b.len() {
                if backslash && b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == q {
                    if b.get(i + 1) == Some(&q) {
                        i += 2;
                        continue;
                    }
                    return i + 1;
                }
                i += 1;
            }
            i
        };
        while i < b.len() {
            let c = b[i];
            let next = b.get(i + 1).copied();
            let prev = i.checked_sub(1).map(|p| b[p]);
            match c {
                b'\'' => {
                    // PostgreSQL processes backslashes only in E'…' strings.
                    let e_string = !mysql
                        && matches!(prev, Some(b'E' | b'e'))
                        && i.checked_sub(2).is_none_or(|p| !ident(b[p]));
                    i = skip_quoted(i, b'\'', mysql || e_string);
                    cur.push(' ');
                }
                b'"' => {
                    i = skip_quoted(i, b'"', mysql);
                    cur.push(' ');
                }
                b'`' if mysql => {
                    i = skip_quoted(i, b'`', false);
                    cur.push(' ');
                }
                b'-' if next == Some(b'-') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    cur.push(' ');
                }
                b'#' if mysql => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    cur.push(' ');
                }
                b'/' if next == Some(b'*') => {
                    // PostgreSQL nests block comments; MySQL does not.
                    let mut depth = 0usize;
                    while i < b.len() {
                        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') && (depth == 0 || !mysql) {
                            depth += 1;
                            i += 2;
                        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        } else {
                            i += 1;
                        }
                    }
                    cur.push(' ');
                }
                b'$' if !mysql && prev.is_none_or(|p| !ident(p)) => {
                    // A dollar quote: $$…$$ or $tag$…$tag$ (a tag does not start with a digit).
                    let tag_end = b[i + 1..]
                        .iter()
                        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
                        .map(|n| i + 1 + n);
                    match tag_end {
                        Some(end)
                            if b[end] == b'$'
                                && b.get(i + 1).is_none_or(|c| !c.is_ascii_digit()) =>
                        {
                            let tag = &b[i..=end];
                            let body = end + 1;
                            i = b[body..]
                                .windows(tag.len())
                                .position(|w| w == tag)
                                .map_or(b.len(), |p| body + p + tag.len());
                            cur.push(' ');
                        }
                        _ => {
                            cur.push('$');
                            i += 1;
                        }
                    }
                }
                b';' => {
                    out.push(std::mem::take(&mut cur));
                    i += 1;
                }
                c => {
                    cur.push(if c.is_ascii() { c as char } else { ' ' });
                    i += 1;
                }
            }
        }
        out.push(cur);
        out
    }

    // -----------------------------------------------------------------------------------------
    // TLS

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TlsMode {
        Disable,
        Prefer,
        Require,
    }

    /// A validated `tls` table; files are read (and their PEM checked) at load.
    pub struct TlsTable {
        pub mode: TlsMode,
        pub verify: bool,
        /// The `ca_file` PEM and its certificates: they replace the system roots.
        pub ca: Option<(Vec<u8>, Vec<CertificateDer<'static>>)>,
        /// `cert_file` and `key_file` PEMs and their parsed forms.
        pub identity: Option<Identity>,
        pub span: Range<usize>,
    }

    pub struct Identity {
        pub cert_pem: Vec<u8>,
        pub key_pem: Vec<u8>,
        pub chain: Vec<CertificateDer<'static>>,
        pub key: PrivateKeyDer<'static>,
    }

    /// Reads `tls = { mode, ca_file, cert_file, key_file, verify }`. Present, it means
    /// `mode = "require"` unless told otherwise, with the certificate verified.
    pub fn read_tls(v: &Value<'_>, cx: &mut Cx, dialect: Dialect) -> Option<TlsTable> {
        let before = cx.diags.len();
        let mut t = TableReader::new(v, "tls", cx)?;
        let mode = match t.opt::<At<String>>("mode", cx) {
            None => Some(TlsMode::Require),
            Some(m) => match m.value.as_str() {
                "disable" => Some(TlsMode::Disable),
                "require" => Some(TlsMode::Require),
                "prefer" if dialect == Dialect::Postgres => Some(TlsMode::Prefer),
                "prefer" => {
                    cx.error(
                        m.span,
                        "mode: \"prefer\" is not available for mysql (its client cannot fall back to plain text); use \"require\" or \"disable\"",
                    );
                    None
                }
                other => {
                    let modes = if dialect == Dialect::Postgres {
                        "\"disable\", \"prefer\" or \"require\""
                    } else {
                        "\"disable\" or \"require\""
                    };
                    cx.error(m.span, format!("mode: {other:?} is not {modes}"));
                    None
                }
            },
        };
        let ca_file: Option<At<std::path::PathBuf>> = t.opt("ca_file", cx);
        let cert_file: Option<At<std::path::PathBuf>> = t.opt("cert_file", cx);
        let key_file: Option<At<std::path::PathBuf>> = t.opt("key_file", cx);
        let verify = t.or("verify", true, cx);
        t.finish(cx);
        let read =
            |f: &At<std::path::PathBuf>, key: &str, cx: &mut Cx| match std::fs::read(&f.value) {
                Ok(b) => Some(b),
                Err(e) => {
                    cx.error(
                        f.span.clone(),
                        format!("{key}: cannot read {}: {}", f.value.display(), e.kind()),
                    );
                    None
                }
            };
        let ca = ca_file.as_ref().and_then(|f| {
            let pem = read(f, "ca_file", cx)?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                cx.error(
                    f.span.clone(),
                    format!("ca_file: {} holds no PEM certificate", f.value.display()),
                );
                return None;
            }
            Some((pem, certs))
        });
        let identity = match (&cert_file, &key_file) {
            (Some(c), Some(k)) => match (read(c, "cert_file", cx), read(k, "key_file", cx)) {
                (Some(cert_pem), Some(key_pem)) => {
                    let chain: Vec<CertificateDer<'static>> =
                        CertificateDer::pem_slice_iter(&cert_pem)
                            .filter_map(Result::ok)
                            .collect();
                    let key = PrivateKeyDer::from_pem_slice(&key_pem).ok();
                    if chain.is_empty() {
                        cx.error(
                            c.span.clone(),
                            format!("cert_file: {} holds no PEM certificate", c.value.display()),
                        );
                    }
                    if key.is_none() {
                        cx.error(
                            k.span.clone(),
                            format!("key_file: {} holds no PEM private key", k.value.display()),
                        );
                    }
                    key.filter(|_| !chain.is_empty()).map(|key| Identity {
                        cert_pem,
                        key_pem,
                        chain,
                        key,
                    })
                }
                _ => None,
            },
            (None, None) => None,
            _ => {
                cx.error(
                    v.span(),
                    "tls: a client certificate needs both `cert_file` and `key_file`",
                );
                None
            }
        };
        if cx.diags.len() != before {
            return None;
        }
        Some(TlsTable {
            mode: mode?,
            verify,
            ca,
            identity,
            span: v.span(),
        })
    }

    /// The crypto provider of every TLS connection bakewatch makes: aws-lc-rs.
    pub fn provider() -> Arc<CryptoProvider> {
        static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
        PROVIDER
            .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .clone()
    }

    /// A rustls client config for a `tls` table (built once, at load).
    pub fn client_config(t: &TlsTable) -> Result<ClientConfig, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if !t.verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(crate::checks::tls::HandshakeOnly(
                    provider(),
                )))
        } else if let Some((_, certs)) = &t.ca {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c.clone()).map_err(|e| format!("ca_file: {e}"))?;
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(platform_verifier()?)
        };
        let mut config = match &t.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| format!("cert_file / key_file: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(config)
    }

    /// The system's roots, loaded once for every check that verifies against them.
    fn platform_verifier() -> Result<Arc<dyn ServerCertVerifier>, String> {
        static VERIFIER: std::sync::OnceLock<Result<Arc<dyn ServerCertVerifier>, String>> =
            std::sync::OnceLock::new();
        VERIFIER
            .get_or_init(|| {
                rustls_platform_verifier::Verifier::new(provider())
                    .map(|v| Arc::new(v) as Arc<dyn ServerCertVerifier>)
                    .map_err(|e| format!("cannot load the system's root certificates: {e}"))
            })
            .clone()
    }

    /// Encryption without certificate verification (`verify = false`, and libpq's meaning of
    /// `sslmode=prefer|require` when the check has no `tls` table).
    pub fn no_verify_config() -> ClientConfig {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::checks::tls::HandshakeOnly(
                provider(),
            )))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        config
    }

    // -----------------------------------------------------------------------------------------
    // Results

    /// What one run read: the row count and the first column of the first row (None for
    /// NULL or no row) of the last statement that returned rows.
    #[derive(Debug, Default)]
    pub struct ResultSet {
        pub rows: u64,
        pub value: Option<String>,
    }

    /// `s` cut to [`MAX_VALUE_BYTES`] at a character boundary.
    pub fn cap_value(s: &str) -> String {
        if s.len() <= MAX_VALUE_BYTES {
            return s.to_string();
        }
        let mut end = MAX_VALUE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    }

    /// The outcome of a run whose query succeeded: observations `value` (absent for NULL
    /// or no row) and `rows`, then the assertions.
    pub fn judged(expect: &[Assertion], rs: ResultSet, total: Duration) -> Outcome {
        let mut observations = Observations::default();
        if let Some(v) = &rs.value {
            observations.set("value", Observation::Text(v.clone()));
        }
        observations.set("rows", Observation::Number(rs.rows as f64));
        let subject = Measured {
            observations,
            total,
        };
        let j = judge(expect, &subject, false);
        let mut outcome = Outcome::new(j.status, j.reason, j.message);
        if j.status == Status::Pass {
            outcome.message = summary(&rs);
        }
        outcome.failed_assertions = j.failures;
        outcome.observations = subject.observations;
        outcome
    }

    fn summary(rs: &ResultSet) -> String {
        let rows = match rs.rows {
            1 => "1 row".to_string(),
            n => format!("{n} rows"),
        };
        match (&rs.value, rs.rows) {
            (_, 0) => rows,
            (None, _) => format!("{rows}, value NULL"),
            (Some(v), _) => {
                let shown: String = v.chars().take(60).collect();
                let more = if shown.len() < v.len() { "…" } else { "" };
                format!("{rows}, value {:?}", format!("{shown}{more}"))
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Messages

    /// Replaces every password occurrence with `****`.
    pub fn mask(mut text: String, passwords: &[String]) -> String {
        for p in passwords {
            if !p.is_empty() && text.contains(p.as_str()) {
                text = text.replace(p.as_str(), "****");
            }
        }
        text
    }

    /// Messages are one line.
    pub fn one_line(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The deepest error in a chain: the one that says what actually happened.
    pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
        let mut cur = e;
        while let Some(next) = cur.source() {
            cur = next;
        }
        cur.to_string()
    }

    /// The first I/O error in a chain.
    pub fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return Some(io);
            }
            cur = err.source();
        }
        None
    }

    /// An I/O error in a few words, without "(os error N)".
    pub fn io_text(io: &std::io::Error) -> String {
        use std::io::ErrorKind as K;
        match io.kind() {
            K::ConnectionRefused => "connection refused".to_string(),
            K::ConnectionReset => "connection reset by the server".to_string(),
            K::ConnectionAborted => "connection aborted".to_string(),
            K::UnexpectedEof => "the server closed the connection".to_string(),
            K::TimedOut => "timed out".to_string(),
            K::HostUnreachable => "host unreachable".to_string(),
            K::NetworkUnreachable => "network unreachable".to_string(),
            K::BrokenPipe => "the server closed the connection (broken pipe)".to_string(),
            _ => {
                let s = io.to_string();
                match s.find(" (os error") {
                    Some(i) => s[..i].to_string(),
                    None => s,
                }
            }
        }
    }

    /// A failure to reach the server: `dns` when the name did not resolve, else `connect`.
    pub fn connect_error(e: &(dyn std::error::Error + 'static), target: &str) -> (Reason, String) {
        match io_error(e) {
            Some(io) if io.to_string().contains("failed to lookup address") => {
                (Reason::Dns, format!("dns: cannot resolve {target}: {io}"))
            }
            Some(io) => (
                Reason::Connect,
                format!("connect: {} ({target})", io_text(io)),
            ),
            None => (
                Reason::Connect,
                format!("connect: {} ({target})", innermost(e)),
            ),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn first_words(sql: &str, d: Dialect) -> Vec<String> {
            statements(sql, d)
                .iter()
                .filter_map(|s| s.split_whitespace().next().map(str::to_ascii_uppercase))
                .collect()
        }

        #[test]
        fn statements_skip_literals_comments_and_dollar_quotes() {
            let pg = Dialect::Postgres;
            assert_eq!(first_words("SELECT 1", pg), ["SELECT"]);
            assert_eq!(
                first_words("SELECT ';commit'; -- ; commit\nSELECT 2", pg),
                ["SELECT", "SELECT"]
            );
            assert_eq!(
                first_words("DO $x$ BEGIN; COMMIT; END $x$; SELECT $$;$$", pg),
                ["DO", "SELECT"]
            );
            assert_eq!(
                first_words("/* a /* nested */ ; */ SELECT 1", pg),
                ["SELECT"]
            );
            assert_eq!(first_words("SELECT E'\\'; COMMIT'", pg), ["SELECT"]);
            assert_eq!(
                first_words("SELECT 'a\\'; COMMIT", pg),
                ["SELECT", "COMMIT"]
            );
            assert_eq!(first_words("SELECT a$b; COMMIT", pg), ["SELECT", "COMMIT"]);
            let my = Dialect::Mysql;
            assert_eq!(first_words("SELECT 'a\\'; COMMIT'", my), ["SELECT"]);
            assert_eq!(first_words("SELECT 1 # ; COMMIT\n", my), ["SELECT"]);
            assert_eq!(first_words("SELECT `;commit`", my), ["SELECT"]);
        }

        #[test]
        fn transaction_control_is_forbidden() {
            for sql in [
                "COMMIT; INSERT INTO t VALUES (1)",
                "select 1; rollback",
                "SET TRANSACTION READ WRITE",
                "set local statement_timeout = 0",
                "SET SESSION max_statement_time = 0",
                "set default_transaction_read_only = off",
                "END",
            ] {
                let bad = statements(sql, Dialect::Postgres)
                    .iter()
                    .any(|s| forbidden(s).is_some());
                assert!(bad, "{sql:?} should be refused");
            }
            for sql in [
                "SELECT 1",
                "SET search_path TO app; SELECT count(*) FROM orders",
                "SELECT 'commit'",
                "SELECT * FROM transactions",
                "WITH x AS (SELECT 1) SELECT * FROM x",
            ] {
                let bad = statements(sql, Dialect::Postgres)
                    .iter()
                    .any(|s| forbidden(s).is_some());
                assert!(!bad, "{sql:?} should be accepted");
            }
        }

        #[test]
        fn the_statement_budget_ends_before_the_timeout() {
            let s = Duration::from_secs(1);
            assert_eq!(
                statement_budget(s, Duration::ZERO),
                Duration::from_millis(900)
            );
            assert_eq!(
                statement_budget(s, Duration::from_millis(100)),
                Duration::from_millis(800)
            );
            assert_eq!(
                statement_budget(Duration::from_secs(30), Duration::ZERO),
                Duration::from_secs(29)
            );
            assert_eq!(
                statement_budget(Duration::from_millis(100), Duration::ZERO),
                Duration::from_millis(80)
            );
            assert_eq!(
                statement_budget(s, Duration::from_secs(2)),
                Duration::from_millis(1)
            );
        }

        #[test]
        fn masking_and_capping() {
            assert_eq!(
                mask("auth failed for pw s3cr3t".into(), &["s3cr3t".into()]),
                "auth failed for pw ****"
            );
            let long = "é".repeat(MAX_VALUE_BYTES);
            let capped = cap_value(&long);
            assert!(capped.len() <= MAX_VALUE_BYTES && capped.chars().all(|c| c == 'é'));
            assert_eq!(one_line("a\n  b\tc"), "a b c");
        }
    }
}
