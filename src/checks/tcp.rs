//! The `tcp` check. (Stub: being written; its parse reports the type as not available yet.)

use super::assert::{Assertion, QueryScope};
use super::outcome::Outcome;
use crate::config::reader::{Cx, TableReader};

/// What `expect` may ask of a tcp check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &[],
    observations: &[],
};

/// A validated tcp check.
#[derive(Debug)]
pub struct TcpSpec {}

impl TcpSpec {
    /// Reads the tcp keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<TcpSpec> {
        super::not_available("tcp", t, cx)
    }

    /// One run.
    pub async fn run(&self, _expect: &[Assertion]) -> Outcome {
        Outcome::error(super::Reason::Internal, "not available")
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}
