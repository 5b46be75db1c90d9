//! The `filesystem` check. (Stub: being written; its parse reports the type as not available yet.)

use super::assert::{Assertion, QueryScope};
use super::outcome::Outcome;
use crate::config::reader::{Cx, TableReader};

/// What `expect` may ask of a filesystem check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &[],
    observations: &[],
};

/// A validated filesystem check.
#[derive(Debug)]
pub struct FilesystemSpec {}

impl FilesystemSpec {
    /// Reads the filesystem keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<FilesystemSpec> {
        super::not_available("filesystem", t, cx)
    }

    /// One run.
    pub async fn run(&self, _expect: &[Assertion]) -> Outcome {
        Outcome::error(super::Reason::Internal, "not available")
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}
