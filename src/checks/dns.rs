//! The `dns` check. (Stub: being written; its parse reports the type as not available yet.)

use super::assert::{Assertion, QueryScope};
use super::outcome::Outcome;
use crate::config::reader::{Cx, TableReader};

/// What `expect` may ask of a dns check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &[],
    observations: &[],
};

/// A validated dns check.
#[derive(Debug)]
pub struct DnsSpec {}

impl DnsSpec {
    /// Reads the dns keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<DnsSpec> {
        super::not_available("dns", t, cx)
    }

    /// One run.
    pub async fn run(&self, _expect: &[Assertion]) -> Outcome {
        Outcome::error(super::Reason::Internal, "not available")
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}
