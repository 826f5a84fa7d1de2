//! Outcome counts reported by SDKs (`track`), aggregated per minute per (release,
//! version). Ramp guards compare candidate and baseline error rates from them.

use serde::{Deserialize, Serialize};

/// How long per-minute counts are kept.
pub const OUTCOME_TTL_SECS: u64 = 2 * 24 * 3_600;

/// Counts for one (release, version) in one report or one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutcomeCount {
    /// Release key.
    pub release: String,
    /// Version name.
    pub version: String,
    /// Successful outcomes.
    pub ok: u64,
    /// Failed outcomes.
    pub error: u64,
}

/// One minute's counts for one version of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MinuteCounts {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    /// Version name.
    pub version: String,
    /// Successful outcomes.
    pub ok: u64,
    /// Failed outcomes.
    pub error: u64,
}

/// The field name of a (release, version) pair in a minute's Redis hash / embedded map.
/// The unit separator cannot appear in validated names.
pub(crate) fn field(release: &str, version: &str) -> String {
    format!("{release}\u{1f}{version}")
}

/// Splits [`field`] back.
pub(crate) fn split_field(field: &str) -> Option<(&str, &str)> {
    field.split_once('\u{1f}')
}
