//! The `mysql` check (MySQL and MariaDB): a fresh connection per run, `query` (default
//! `SELECT 1`) inside a read-only transaction with a server-side statement timeout just below
//! the check's own timeout, then `COM_QUIT`. The query goes through the text protocol, so
//! every column arrives as text.
//!
//! The session is made read-only twice: `SET SESSION TRANSACTION READ ONLY` (a DDL statement
//! implicitly commits, and the transactions after it stay read-only) and `START TRANSACTION
//! READ ONLY`. The statement timeout is MariaDB's `max_statement_time` (seconds) or MySQL's
//! `max_execution_time` (milliseconds, SELECTs only), chosen by the server version and
//! switched when the server does not know the variable.
//!
//! Cancellation: when the runner's timeout drops a run in the middle of a command,
//! mysql_async closes the socket; dropped between reading rows, it hands the connection to
//! a background task that drains the rest of the result, which the server-side statement
//! timeout bounds.

use std::fmt;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{
    ClientIdentity, Conn, DriverError, IoError, Opts, OptsBuilder, Row, SslOpts, Value,
};

use super::assert::{Assertion, QueryScope};
use super::outcome::{Outcome, Reason};
use super::postgres::shared::{self, Dialect, ResultSet, TlsMode, TlsTable};
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader};

/// What `expect` may ask of a mysql check.
pub const SCOPE: QueryScope = shared::SCOPE;

/// Client-side packet limit; rows larger than this fail the run.
const MAX_PACKET: usize = 64 << 20;

/// MySQL / MariaDB error codes.
mod code {
    pub const DBACCESS_DENIED: u16 = 1044;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const BAD_DB: u16 = 1049;
    pub const CON_COUNT: u16 = 1040;
    pub const SERVER_SHUTDOWN: u16 = 1053;
    pub const HOST_IS_BLOCKED: u16 = 1129;
    pub const HOST_NOT_PRIVILEGED: u16 = 1130;
    pub const UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
    pub const ACCESS_DENIED_NO_PASSWORD: u16 = 1698;
    pub const CONNECTION_KILLED: u16 = 1927;
    /// MariaDB: max_statement_time exceeded.
    pub const STATEMENT_TIMEOUT: u16 = 1969;
    /// MySQL: max_execution_time exceeded.
    pub const QUERY_TIMEOUT: u16 = 3024;
}

/// A validated mysql check.
pub struct MysqlSpec {
    opts: Opts,
    query: String,
    /// The check's timeout, from which the statement timeout is derived.
    timeout: Duration,
    dsn: Secret,
    passwords: Vec<String>,
    /// "host:port", for messages.
    target: String,
}

impl fmt::Debug for MysqlSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlSpec")
            .field("target", &self.target)
            .field("user", &self.opts.user())
            .field("db_name", &self.opts.db_name())
            .field("tls", &self.opts.ssl_opts().is_some())
            .field("query", &self.query)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MysqlSpec {
    /// Reads the mysql keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<MysqlSpec> {
        let dsn: Option<At<Secret>> = t.req("dsn", cx);
        let query = shared::read_query(t, cx, Dialect::Mysql);
        let timeout = shared::check_timeout(t);
        let tls = t
            .get("tls")
            .map(|v| shared::read_tls(v, cx, Dialect::Mysql));
        let dsn = dsn?;
        let (opts, url) = parse_dsn(&dsn, cx)?;
        let mut builder = OptsBuilder::from_opts(opts.clone());
        // mysql_async keeps the brackets of an IPv6 URL host and then fails to resolve it.
        if let Some(url::Host::Ipv6(ip)) = url.host() {
            builder = builder.ip_or_hostname(ip.to_string());
        }
        // The check measures the TCP path it was given: no switch to the unix socket the
        // server advertises (mysql_async's default on loopback), unless the DSN asks.
        if !url.query_pairs().any(|(k, _)| k == "prefer_socket") {
            builder = builder.prefer_socket(false);
        }
        // Both known: no `SELECT @@max_allowed_packet, @@wait_timeout` round trip per run.
        if opts.max_allowed_packet().is_none() {
            builder = builder.max_allowed_packet(Some(MAX_PACKET));
        }
        if opts.wait_timeout().is_none() {
            builder = builder.wait_timeout(Some(28_800));
        }
        match &tls {
            None => {}
            Some(None) => return None,
            Some(Some(table)) => builder = builder.ssl_opts(ssl_opts(table)),
        }
        let opts = Opts::from(builder);
        let mut passwords = Vec::new();
        if let Some(p) = opts.pass() {
            passwords.push(p.to_string());
        }
        if let Some(raw) = url.password() {
            passwords.push(raw.to_string());
        }
        passwords.retain(|p| !p.is_empty());
        passwords.dedup();
        let target = match opts.ip_or_hostname() {
            h if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{}", opts.tcp_port()),
            h => format!("{h}:{}", opts.tcp_port()),
        };
        Some(MysqlSpec {
            opts,
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

    /// See [`super::postgres::PostgresSpec::set_timeout`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// One run: connect, query in a read-only transaction, quit, judge.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let mut conn = match Conn::new(self.opts.clone()).await {
            Ok(c) => c,
            Err(e) => return self.failure(Phase::Connect, &e, Duration::ZERO),
        };
        let budget = shared::statement_budget(self.timeout, start.elapsed());
        let result = self.session(&mut conn, budget).await;
        let total = start.elapsed();
        // COM_QUIT; the server rolls the transaction back. Bounded by the runner's timeout.
        let _ = conn.disconnect().await;
        match result {
            Ok(rs) => shared::judged(expect, rs, total),
            Err(e) => self.failure(Phase::Query, &e, budget),
        }
    }

    /// Statement timeout, read-only session and transaction, and the query: one round trip
    /// (a failing statement ends a multi-statement query, so the query never runs unguarded).
    async fn session(
        &self,
        conn: &mut Conn,
        budget: Duration,
    ) -> Result<ResultSet, mysql_async::Error> {
        const READ_ONLY: &str = "SET SESSION TRANSACTION READ ONLY; START TRANSACTION READ ONLY";
        // MariaDB reports 10.x and later; MySQL 5.x, 8.x, 9.x. A server that does not know
        // the variable gets the other one, then none (MySQL before 5.7.8, MariaDB before 10.1:
        // only the runner's timeout bounds the query).
        let mariadb_first = conn.server_version().0 >= 10;
        for mariadb in [mariadb_first, !mariadb_first] {
            let (variable, set) = if mariadb {
                (
                    "max_statement_time",
                    format!(
                        "SET SESSION max_statement_time = {:.3}",
                        budget.as_secs_f64().max(0.001)
                    ),
                )
            } else {
                (
                    "max_execution_time",
                    format!(
                        "SET SESSION max_execution_time = {}",
                        budget.as_millis().max(1)
                    ),
                )
            };
            let text = format!("{set}; {READ_ONLY}; {}", self.query);
            match read_rows(conn, &text).await {
                Err(mysql_async::Error::Server(e))
                    if e.code == code::UNKNOWN_SYSTEM_VARIABLE && e.message.contains(variable) => {}
                other => return other,
            }
        }
        read_rows(conn, &format!("{READ_ONLY}; {}", self.query)).await
    }

    fn failure(&self, phase: Phase, e: &mysql_async::Error, budget: Duration) -> Outcome {
        let (reason, message) = classify(phase, e, budget, &self.target);
        let message = shared::mask(shared::one_line(&message), &self.passwords);
        match reason {
            Reason::Config | Reason::Internal => Outcome::error(reason, message),
            _ => Outcome::fail(reason, message),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Query,
}

/// Runs `text` and reads every result set; observations come from the last statement that
/// returns rows.
async fn read_rows(conn: &mut Conn, text: &str) -> Result<ResultSet, mysql_async::Error> {
    let mut result = conn.query_iter(text).await?;
    let mut last: Option<ResultSet> = None;
    loop {
        if result.columns().is_some_and(|c| !c.is_empty()) {
            last = Some(ResultSet::default());
        }
        while let Some(row) = result.next().await? {
            let rs = last.get_or_insert_with(ResultSet::default);
            if rs.rows == 0 {
                rs.value = first_value(&row);
            }
            rs.rows += 1;
        }
        if result.is_empty() {
            // An error of a later statement waits as the pending result: this surfaces it.
            result.next().await?;
            break;
        }
    }
    Ok(last.unwrap_or_default())
}

/// The first column of a text-protocol row as text; None for NULL or no column.
fn first_value(row: &Row) -> Option<String> {
    let v = row.as_ref(0)?;
    Some(match v {
        Value::NULL => return None,
        Value::Bytes(b) => shared::cap_value(&String::from_utf8_lossy(b)),
        Value::Int(n) => n.to_string(),
        Value::UInt(n) => n.to_string(),
        Value::Float(n) => n.to_string(),
        Value::Double(n) => n.to_string(),
        other => other.as_sql(true).trim_matches('\'').to_string(),
    })
}

/// The DSN as mysql_async options, and as a URL (for its query keys and raw password).
fn parse_dsn(dsn: &At<Secret>, cx: &mut Cx) -> Option<(Opts, url::Url)> {
    let text = dsn.value.expose();
    let text = match shared::dsn_scheme(text) {
        Some("mysql") => text.to_string(),
        Some("mariadb") => format!("mysql://{}", &text["mariadb://".len()..]),
        Some(scheme) => {
            cx.error(
                dsn.span.clone(),
                format!("dsn: scheme {scheme:?} is not mysql:// or mariadb://"),
            );
            return None;
        }
        None => {
            cx.error(
                dsn.span.clone(),
                "dsn: expected a URL such as \"mysql://user:password@host:3306/database\"",
            );
            return None;
        }
    };
    let url = match url::Url::parse(&text) {
        Ok(u) => u,
        Err(e) => {
            cx.error(dsn.span.clone(), format!("dsn: not a URL: {e}"));
            return None;
        }
    };
    match Opts::from_url(&text) {
        Ok(opts) => Some((opts, url)),
        Err(e) => {
            cx.error(dsn.span.clone(), format!("dsn: {e}"));
            None
        }
    }
}

fn ssl_opts(t: &TlsTable) -> Option<SslOpts> {
    if t.mode == TlsMode::Disable {
        return None;
    }
    let mut ssl = SslOpts::default().with_danger_accept_invalid_certs(!t.verify);
    if let Some((pem, _)) = &t.ca {
        // A private CA replaces the built-in roots: trust exactly what the check names.
        ssl = ssl
            .with_root_certs(vec![pem.clone().into()])
            .with_disable_built_in_roots(true);
    }
    if let Some(id) = &t.identity {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            id.cert_pem.clone().into(),
            id.key_pem.clone().into(),
        )));
    }
    Some(ssl)
}

fn classify(
    phase: Phase,
    e: &mysql_async::Error,
    budget: Duration,
    target: &str,
) -> (Reason, String) {
    use mysql_async::Error as E;
    match e {
        E::Server(s) => {
            let msg = &s.message;
            match s.code {
                code::ACCESS_DENIED
                | code::ACCESS_DENIED_NO_PASSWORD
                | code::DBACCESS_DENIED
                | code::HOST_NOT_PRIVILEGED
                | code::HOST_IS_BLOCKED => (Reason::Auth, format!("auth: {msg}")),
                code::STATEMENT_TIMEOUT | code::QUERY_TIMEOUT => (
                    Reason::Timeout,
                    format!(
                        "timeout: the server cancelled the query at its {} statement timeout (set just below the check's timeout)",
                        shared::show_ms(budget)
                    ),
                ),
                code::BAD_DB
                | code::CON_COUNT
                | code::SERVER_SHUTDOWN
                | code::CONNECTION_KILLED => (
                    Reason::Connect,
                    format!("connect: {msg} (error {})", s.code),
                ),
                c if phase == Phase::Connect => {
                    (Reason::Connect, format!("connect: {msg} (error {c})"))
                }
                c => (Reason::Query, format!("query: {msg} (error {c})")),
            }
        }
        E::Io(IoError::Tls(t)) => (Reason::Tls, format!("tls: {t}")),
        E::Io(IoError::Io(io)) => {
            if let Some(inner) = io.get_ref()
                && inner.is::<rustls::Error>()
            {
                (Reason::Tls, format!("tls: {inner}"))
            } else if phase == Phase::Connect {
                shared::connect_error(io, target)
            } else {
                (
                    Reason::Connect,
                    format!(
                        "connect: connection lost: {} ({target})",
                        shared::io_text(io)
                    ),
                )
            }
        }
        E::Driver(DriverError::NoClientSslFlagFromServer) => (
            Reason::Tls,
            format!("tls: the server at {target} does not offer TLS"),
        ),
        E::Driver(DriverError::ConnectionClosed) => (
            Reason::Connect,
            format!("connect: the server closed the connection ({target})"),
        ),
        E::Driver(
            d @ (DriverError::CleartextPluginDisabled
            | DriverError::UnknownAuthPlugin { .. }
            | DriverError::MysqlOldPasswordDisabled),
        ) => (Reason::Auth, format!("auth: {d}")),
        E::Driver(d) => (Reason::Protocol, format!("protocol: {d}")),
        E::Url(u) => (Reason::Config, format!("config: {u}")),
        E::Other(o) => (Reason::Protocol, format!("protocol: {o}")),
    }
}
