//! Outcome reports from SDKs (`track`): validated, then added to the store's per-minute
//! counts that ramp guards and `GET …/health` read.

use crate::store::{EnvName, MinuteCounts, OutcomeCount, Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most (release, version) counts in one report.
pub const MAX_BATCH: usize = 1_000;
/// Most outcomes one count may carry (a typo guard, not a rate limit).
const MAX_COUNT: u64 = 1_000_000_000;

/// A report that cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The current minute since the Unix epoch.
pub fn current_minute() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Validates a batch and adds it to the current minute. Counts for the same pair are
/// merged first, so the store sees each pair once.
pub async fn record(store: &dyn Store, env: &EnvName, batch: Vec<OutcomeCount>) -> Result<usize, EventsError> {
    if batch.len() > MAX_BATCH {
        return Err(EventsError::Invalid(format!("at most {MAX_BATCH} counts per report, got {}", batch.len())));
    }
    let mut merged: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for (i, count) in batch.into_iter().enumerate() {
        if !valid_name(&count.release) || !valid_name(&count.version) {
            return Err(EventsError::Invalid(format!(
                "[{i}]: `release` and `version` must be release and version names"
            )));
        }
        if count.ok > MAX_COUNT || count.error > MAX_COUNT {
            return Err(EventsError::Invalid(format!("[{i}]: counts above {MAX_COUNT} are refused")));
        }
        let slot = merged.entry((count.release, count.version)).or_default();
        slot.0 += count.ok;
        slot.1 += count.error;
    }
    let counts: Vec<OutcomeCount> = merged
        .into_iter()
        .map(|((release, version), (ok, error))| OutcomeCount { release, version, ok, error })
        .collect();
    store.record_outcomes(env, current_minute(), &counts).await?;
    Ok(counts.len())
}

/// A version's totals over a window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionHealth {
    pub ok: u64,
    pub error: u64,
    /// `error / (ok + error)`, `None` without samples.
    pub error_rate: Option<f64>,
}

/// Totals per version of `release` over the last `minutes` minutes (this one included).
pub async fn health(
    store: &dyn Store,
    env: &EnvName,
    release: &str,
    minutes: u64,
) -> Result<(BTreeMap<String, VersionHealth>, Vec<MinuteCounts>), EventsError> {
    let to = current_minute();
    let from = to.saturating_sub(minutes.saturating_sub(1));
    let counts = store.outcomes(env, release, from, to).await?;
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for c in &counts {
        let t = totals.entry(c.version.clone()).or_default();
        t.0 += c.ok;
        t.1 += c.error;
    }
    let health = totals
        .into_iter()
        .map(|(version, (ok, error))| {
            let total = ok + error;
            let error_rate = (total > 0).then(|| error as f64 / total as f64);
            (version, VersionHealth { ok, error, error_rate })
        })
        .collect();
    Ok((health, counts))
}
