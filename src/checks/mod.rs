//! Check types and their shared pieces: the [`Outcome`] of a run, the assertion vocabulary,
//! and one module per type. A probe only probes: the runner ([`crate::runtime`]) owns the
//! timeout and the bookkeeping.
//!
//! Adding a check type touches its own file, a variant and three match arms here, an example
//! in `checks/`, tests and a README line.

pub mod assert;
pub mod http;
pub mod outcome;

use std::ops::Range;

pub use outcome::{AssertionFailure, Observation, Observations, Outcome, Reason, Status};

use crate::config::reader::{Cx, TableReader};
use assert::{Assertion, QueryScope};

/// Every check type DESIGN names, and whether this build runs it yet.
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

/// The type-specific part of a check, validated and ready to run.
#[derive(Debug)]
pub enum CheckSpec {
    Http(http::HttpSpec),
}

impl CheckSpec {
    /// Reads the type's own keys from the check's table.
    pub fn parse(
        kind: &str,
        kind_span: Range<usize>,
        t: &mut TableReader,
        cx: &mut Cx,
    ) -> Option<CheckSpec> {
        match kind {
            "http" => http::HttpSpec::parse(t, cx).map(CheckSpec::Http),
            other if KNOWN_TYPES.contains(&other) => {
                t.accept_unread();
                cx.error(
                    kind_span,
                    format!("type: check type {other:?} is not available in this version yet"),
                );
                None
            }
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
        }
    }

    /// What `expect` may ask of this type.
    pub fn scope(&self) -> &'static QueryScope {
        match self {
            CheckSpec::Http(_) => &http::SCOPE,
        }
    }

    /// One run, without timeout (the runner adds it).
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        match self {
            CheckSpec::Http(h) => h.run(expect).await,
        }
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        match self {
            CheckSpec::Http(h) => h.secret_values(),
        }
    }
}
