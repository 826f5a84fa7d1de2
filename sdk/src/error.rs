//! Why a release was refused when it was written.

use std::fmt;

/// A release that cannot be compiled: it is refused on write, never at evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Where in the release the problem is, as a JSON-ish path (`rules[2].when[0].op`).
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl CompileError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for CompileError {}
