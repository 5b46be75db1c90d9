//! The `tls` check. (Stub: being written; its parse reports the type as not available yet.)

use super::assert::{Assertion, QueryScope};
use super::outcome::Outcome;
use crate::config::reader::{Cx, TableReader};

/// What `expect` may ask of a tls check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &[],
    observations: &[],
};

/// A validated tls check.
#[derive(Debug)]
pub struct TlsSpec {}

impl TlsSpec {
    /// Reads the tls keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<TlsSpec> {
        super::not_available("tls", t, cx)
    }

    /// One run.
    pub async fn run(&self, _expect: &[Assertion]) -> Outcome {
        Outcome::error(super::Reason::Internal, "not available")
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}
