//! The `prometheus` check. (Stub: being written; its parse reports the type as not available yet.)

use super::assert::{Assertion, QueryScope};
use super::outcome::Outcome;
use crate::config::reader::{Cx, TableReader};

/// What `expect` may ask of a prometheus check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &[],
    observations: &[],
};

/// A validated prometheus check.
#[derive(Debug)]
pub struct PrometheusSpec {}

impl PrometheusSpec {
    /// Reads the prometheus keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<PrometheusSpec> {
        super::not_available("prometheus", t, cx)
    }

    /// One run.
    pub async fn run(&self, _expect: &[Assertion]) -> Outcome {
        Outcome::error(super::Reason::Internal, "not available")
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}
