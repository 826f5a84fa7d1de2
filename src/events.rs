//! Outcome reports from SDKs (`track`): validated, then added to the store's 10-second
//! buckets that ramp guards and `GET …/health` read. Time is an argument: callers pass
//! the moment a report arrived or a window ends, so tests choose it.

use crate::store::{Bucket, BucketCounts, EnvName, OutcomeCount, Store, StoreError};
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

/// Now, in ms since the Unix epoch (0 on a clock set before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Validates a batch and adds it to the bucket of `received_ms`, when it arrived.
/// Counts for the same pair are merged first, so the store sees each pair once.
pub async fn record(
    store: &dyn Store,
    env: &EnvName,
    batch: Vec<OutcomeCount>,
    received_ms: u64,
) -> Result<usize, EventsError> {
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
    store.record_outcomes(env, Bucket::containing(received_ms), &counts).await?;
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

/// One minute's counts for one version of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// Totals per version of `release` over the last `minutes` whole minutes up to `now_ms`
/// (its minute included), and the counts per minute: the store's 10 s buckets summed.
pub async fn health(
    store: &dyn Store,
    env: &EnvName,
    release: &str,
    minutes: u64,
    now_ms: u64,
) -> Result<(BTreeMap<String, VersionHealth>, Vec<MinuteCounts>), EventsError> {
    let first_minute = (now_ms / 60_000).saturating_sub(minutes.saturating_sub(1));
    let from = Bucket::containing(first_minute.saturating_mul(60_000));
    let counts = store.outcomes(env, release, from, Bucket::containing(now_ms)).await?;
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for c in &counts {
        let t = totals.entry(c.version.clone()).or_default();
        t.0 = t.0.saturating_add(c.ok);
        t.1 = t.1.saturating_add(c.error);
    }
    let health = totals
        .into_iter()
        .map(|(version, (ok, error))| {
            let total = ok.saturating_add(error);
            let error_rate = (total > 0).then(|| error as f64 / total as f64);
            (version, VersionHealth { ok, error, error_rate })
        })
        .collect();
    Ok((health, per_minute(&counts)))
}

/// Sums bucket counts into minutes, ordered by minute then version.
fn per_minute(counts: &[BucketCounts]) -> Vec<MinuteCounts> {
    let mut minutes: BTreeMap<(u64, &str), (u64, u64)> = BTreeMap::new();
    for c in counts {
        let m = minutes.entry((c.bucket_start_ms / 60_000, c.version.as_str())).or_default();
        m.0 = m.0.saturating_add(c.ok);
        m.1 = m.1.saturating_add(c.error);
    }
    minutes
        .into_iter()
        .map(|((minute, version), (ok, error))| MinuteCounts { minute, version: version.to_owned(), ok, error })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    fn count(version: &str, ok: u64, error: u64) -> OutcomeCount {
        OutcomeCount { release: "checkout".into(), version: version.into(), ok, error }
    }

    #[test]
    fn buckets_add_up_per_minute_and_version() {
        let b = |start, version: &str, ok, error| BucketCounts {
            bucket_start_ms: start,
            version: version.into(),
            ok,
            error,
        };
        let summed =
            per_minute(&[b(60_000, "v2", 1, 1), b(110_000, "v2", 2, 0), b(120_000, "v2", 4, 4), b(60_000, "v1", 9, 0)]);
        let m = |minute, version: &str, ok, error| MinuteCounts { minute, version: version.into(), ok, error };
        assert_eq!(summed, vec![m(1, "v1", 9, 0), m(1, "v2", 3, 1), m(2, "v2", 4, 4)]);
    }

    #[tokio::test]
    async fn health_counts_the_last_whole_minutes_up_to_now() {
        let dir = tempfile::tempdir().expect("dir");
        let store = EmbeddedStore::open(dir.path(), 10).expect("opens");
        let env = EnvName::parse("production").expect("env");
        // Minute 10 is [600 000, 660 000) ms; now is 25 s into minute 12.
        let now = 12 * 60_000 + 25_000;
        for (at, errors) in [(9 * 60_000 + 59_999, 100), (10 * 60_000, 1), (11 * 60_000 + 30_000, 2), (now, 4)] {
            record(&store, &env, vec![count("v2", 10, errors)], at).await.expect("recorded");
        }
        let (versions, minutes) = health(&store, &env, "checkout", 3, now).await.expect("health");
        assert_eq!(versions["v2"].error, 1 + 2 + 4, "minute 9 is outside the last three");
        assert_eq!(minutes.iter().map(|m| m.minute).collect::<Vec<_>>(), vec![10, 11, 12]);
        let (versions, _) = health(&store, &env, "checkout", 1, now).await.expect("health");
        assert_eq!(versions["v2"].error, 4);
    }
}
