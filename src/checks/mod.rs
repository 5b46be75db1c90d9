//! Check types and their shared pieces: the [`Outcome`] of a run, the assertion vocabulary,
//! and one module per type. A probe only probes: the runner ([`crate::runtime`]) owns the
//! timeout and the bookkeeping.
//!
//! Adding a check type touches its own file, a variant and the match arms here, an example
//! in `checks/`, tests and a README line.

pub mod assert;
pub mod command;
pub mod dns;
pub mod filesystem;
pub mod http;
mod http_direct;
pub mod memcached;
pub mod mysql;
pub mod outcome;
pub mod postgres;
pub mod prometheus;
pub mod redis;
pub mod tcp;
pub mod tls;

use std::ops::Range;

pub use outcome::{AssertionFailure, Observation, Observations, Outcome, Reason, Status};

use crate::config::reader::{Cx, TableReader};
use assert::{Assertion, QueryScope};

/// Every check type DESIGN names.
pub const KNOWN_TYPES: &[&str] = &[
    "http",
    "tcp",
    "dns",
    "tls",
    "postgres",
    "mysql",
    "redis",
    "memcached",
    "filesystem",
    "command",
    "prometheus",
    "journey",
];

/// For a type whose module is not written yet: one clear error, no follow-on noise.
pub(crate) fn not_available<T>(kind: &str, t: &mut TableReader, cx: &mut Cx) -> Option<T> {
    t.accept_unread();
    cx.error(
        t.span_of("type"),
        format!("type: check type {kind:?} is not available in this version yet"),
    );
    None
}

/// Runs `$body` with `$spec` bound to the variant's inner spec, for every variant.
macro_rules! each_type {
    ($self:expr, $spec:ident => $body:expr) => {
        match $self {
            CheckSpec::Http($spec) => $body,
            CheckSpec::Tcp($spec) => $body,
            CheckSpec::Dns($spec) => $body,
            CheckSpec::Tls($spec) => $body,
            CheckSpec::Postgres($spec) => $body,
            CheckSpec::Mysql($spec) => $body,
            CheckSpec::Redis($spec) => $body,
            CheckSpec::Memcached($spec) => $body,
            CheckSpec::Filesystem($spec) => $body,
            CheckSpec::Command($spec) => $body,
            CheckSpec::Prometheus($spec) => $body,
            CheckSpec::Journey($spec) => $body,
        }
    };
}

/// The type-specific part of a check, validated and ready to run.
// One per configured check, behind an `Arc`: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CheckSpec {
    Http(http::HttpSpec),
    Tcp(tcp::TcpSpec),
    Dns(dns::DnsSpec),
    Tls(tls::TlsSpec),
    Postgres(postgres::PostgresSpec),
    Mysql(mysql::MysqlSpec),
    Redis(redis::RedisSpec),
    Memcached(memcached::MemcachedSpec),
    Filesystem(filesystem::FilesystemSpec),
    Command(command::CommandSpec),
    Prometheus(prometheus::PrometheusSpec),
    Journey(crate::journey::JourneySpec),
}

impl CheckSpec {
    /// Reads the type's own keys from the check's table (`timeout` is the check's).
    pub fn parse(
        kind: &str,
        kind_span: Range<usize>,
        timeout: std::time::Duration,
        t: &mut TableReader,
        cx: &mut Cx,
    ) -> Option<CheckSpec> {
        match kind {
            "http" => http::HttpSpec::parse(t, cx).map(CheckSpec::Http),
            "tcp" => tcp::TcpSpec::parse(t, cx).map(CheckSpec::Tcp),
            "dns" => dns::DnsSpec::parse(t, cx).map(CheckSpec::Dns),
            "tls" => tls::TlsSpec::parse(t, cx).map(CheckSpec::Tls),
            // SQL checks derive the server-side statement timeout from the check's own.
            "postgres" => postgres::PostgresSpec::parse(t, cx).map(|mut s| {
                s.set_timeout(timeout);
                CheckSpec::Postgres(s)
            }),
            "mysql" => mysql::MysqlSpec::parse(t, cx).map(|mut s| {
                s.set_timeout(timeout);
                CheckSpec::Mysql(s)
            }),
            "redis" => redis::RedisSpec::parse(t, cx).map(CheckSpec::Redis),
            "memcached" => memcached::MemcachedSpec::parse(t, cx).map(CheckSpec::Memcached),
            "filesystem" => filesystem::FilesystemSpec::parse(t, cx).map(CheckSpec::Filesystem),
            "command" => command::CommandSpec::parse(t, cx).map(CheckSpec::Command),
            "prometheus" => prometheus::PrometheusSpec::parse(t, cx).map(CheckSpec::Prometheus),
            "journey" => crate::journey::JourneySpec::parse(t, cx, timeout).map(CheckSpec::Journey),
            other if KNOWN_TYPES.contains(&other) => not_available(other, t, cx),
            other => {
                t.accept_unread();
                let hint = crate::config::reader::closest(other, KNOWN_TYPES)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                cx.error(
                    kind_span,
                    format!("type: unknown check type {other:?}{hint}"),
                );
                None
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            CheckSpec::Http(_) => "http",
            CheckSpec::Tcp(_) => "tcp",
            CheckSpec::Dns(_) => "dns",
            CheckSpec::Tls(_) => "tls",
            CheckSpec::Postgres(_) => "postgres",
            CheckSpec::Mysql(_) => "mysql",
            CheckSpec::Redis(_) => "redis",
            CheckSpec::Memcached(_) => "memcached",
            CheckSpec::Filesystem(_) => "filesystem",
            CheckSpec::Command(_) => "command",
            CheckSpec::Prometheus(_) => "prometheus",
            CheckSpec::Journey(_) => "journey",
        }
    }

    /// What `expect` may ask of this type.
    pub fn scope(&self) -> &'static QueryScope {
        match self {
            CheckSpec::Http(_) => &http::SCOPE,
            CheckSpec::Tcp(_) => &tcp::SCOPE,
            CheckSpec::Dns(_) => &dns::SCOPE,
            CheckSpec::Tls(_) => &tls::SCOPE,
            CheckSpec::Postgres(_) => &postgres::SCOPE,
            CheckSpec::Mysql(_) => &mysql::SCOPE,
            CheckSpec::Redis(_) => &redis::SCOPE,
            CheckSpec::Memcached(_) => &memcached::SCOPE,
            CheckSpec::Filesystem(_) => &filesystem::SCOPE,
            CheckSpec::Command(_) => &command::SCOPE,
            CheckSpec::Prometheus(_) => &prometheus::SCOPE,
            CheckSpec::Journey(_) => &crate::journey::SCOPE,
        }
    }

    /// Whether running out of time means "could not judge" (`error`) rather than "the target
    /// is too slow" (`fail`): true for types that query a source about the target.
    pub fn timeout_is_error(&self) -> bool {
        matches!(self, CheckSpec::Prometheus(_))
    }

    /// Whether the request itself (not only an expectation) names `{{ deployment.* }}`: such a
    /// check cannot run before its service's first deployment.
    pub fn uses_deployment(&self) -> bool {
        match self {
            CheckSpec::Http(s) => s.uses_deployment(),
            CheckSpec::Journey(s) => s.uses_deployment(),
            _ => false,
        }
    }

    /// Assertions inside the type's own settings (journey steps) naming `{{ deployment.* }}`.
    pub fn deployment_assertions(&self) -> Vec<String> {
        match self {
            CheckSpec::Journey(s) => s.deployment_assertions(),
            _ => Vec::new(),
        }
    }

    /// One run, without timeout (the runner adds it).
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        each_type!(self, spec => spec.run(expect).await)
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        each_type!(self, spec => spec.secret_values())
    }
}
