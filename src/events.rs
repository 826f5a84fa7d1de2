//! Outcome reports from SDKs (`track`): checked against what the environment holds,
//! then added to the store's 10-second buckets that ramp guards and `GET …/health` read.
//! Time is an argument: callers pass the moment a report arrived or a window ends, so
//! tests choose it.
//!
//! What a report may name is bounded by the environment itself: a (release, version)
//! pair the environment's current snapshot does not hold refuses the whole report, so
//! nobody can grow the store by inventing names. On top of that each instance admits at
//! most `max_pairs_per_minute` distinct pairs per environment and minute (a set of
//! 8-byte hashes per environment, of that size at most), so memory stays bounded
//! whatever is sent.

use crate::config::EventsSettings;
use crate::store::{Bucket, BucketCounts, EnvName, OutcomeCount, Store, StoreError};
use cohort_sdk::Snapshot;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The most (release, version) counts one report may carry: the SDK's flush size.
pub const MAX_BATCH: usize = 1_000;
/// Most outcomes one count may carry (a typo guard, not a rate limit).
const MAX_COUNT: u64 = 1_000_000_000;
/// Most unknown pairs a refusal lists (it says how many there were in all).
pub const MAX_LISTED: usize = 20;

/// A (release, version) pair a report named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Pair {
    pub release: String,
    pub version: String,
}

/// A report that cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("{0}")]
    Invalid(String),
    /// Pairs the environment does not hold; nothing of the report was stored.
    #[error(
        "the report names {total} release/version pair(s) that environment `{env}` does not hold; nothing was recorded (first: {})",
        listed.iter().map(|p| format!("{}/{}", p.release, p.version)).collect::<Vec<_>>().join(", ")
    )]
    Unknown { env: String, listed: Vec<Pair>, total: usize },
    /// The environment took its share of distinct pairs this minute.
    #[error(
        "environment `{env}` already took {limit} distinct release/version pairs this minute (events.max_pairs_per_minute); retry in {retry_after_secs} s"
    )]
    TooManyPairs { env: String, limit: usize, retry_after_secs: u64 },
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

/// The distinct pairs each environment took in the current minute, on this instance.
#[derive(Debug)]
pub struct PairBudget {
    limit: usize,
    hasher: foldhash::fast::RandomState,
    minutes: Mutex<HashMap<EnvName, (u64, HashSet<u64>)>>,
}

impl PairBudget {
    /// At most `limit` distinct pairs per environment and minute.
    pub fn new(limit: usize) -> Self {
        PairBudget { limit, hasher: foldhash::fast::RandomState::default(), minutes: Mutex::new(HashMap::new()) }
    }

    fn hash(&self, release: &str, version: &str) -> u64 {
        self.hasher.hash_one((release, version))
    }

    /// Admits `pairs` into `env`'s minute of `now_ms`, all or nothing.
    fn admit(&self, env: &EnvName, pairs: &[OutcomeCount], now_ms: u64) -> Result<(), EventsError> {
        let minute = now_ms / 60_000;
        let hashes: Vec<u64> = pairs.iter().map(|c| self.hash(&c.release, &c.version)).collect();
        // A poisoned lock only means another report panicked mid-way; the set is still
        // a valid (if partial) count.
        let mut minutes = self.minutes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (at, seen) = minutes.entry(env.clone()).or_insert_with(|| (minute, HashSet::new()));
        if *at != minute {
            *at = minute;
            seen.clear();
            seen.shrink_to(self.limit.min(1_024));
        }
        let new = hashes.iter().filter(|h| !seen.contains(h)).count();
        if seen.len() + new > self.limit {
            let retry_after_secs = (60_000 - now_ms % 60_000).div_ceil(1_000).max(1);
            return Err(EventsError::TooManyPairs { env: env.to_string(), limit: self.limit, retry_after_secs });
        }
        seen.extend(hashes);
        Ok(())
    }
}

/// What recording outcome reports needs besides the store: the limits and this
/// instance's per-minute pair budget.
#[derive(Debug)]
pub struct Outcomes {
    max_pairs_per_report: usize,
    budget: PairBudget,
}

impl Outcomes {
    /// From the `[events]` settings.
    pub fn new(settings: &EventsSettings) -> Self {
        Outcomes {
            max_pairs_per_report: settings.max_pairs_per_report.clamp(1, MAX_BATCH),
            budget: PairBudget::new(settings.max_pairs_per_minute),
        }
    }

    /// Checks a report against `held` (the environment's current snapshot) and adds it
    /// to the bucket of `received_ms`, when it arrived; returns how many distinct pairs
    /// it counted. Counts for the same pair are merged first, so the store sees each
    /// pair once. A report naming anything `held` does not hold is refused whole.
    pub async fn record(
        &self,
        store: &dyn Store,
        env: &EnvName,
        held: &Snapshot,
        batch: Vec<OutcomeCount>,
        received_ms: u64,
    ) -> Result<usize, EventsError> {
        let limit = self.max_pairs_per_report;
        if batch.len() > limit {
            return Err(EventsError::Invalid(format!("at most {limit} counts per report, got {}", batch.len())));
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
        unknown_pairs(env, held, &counts)?;
        self.budget.admit(env, &counts, received_ms)?;
        store.record_outcomes(env, Bucket::containing(received_ms), &counts).await?;
        Ok(counts.len())
    }
}

/// Refuses `counts` if any names a release or version `held` does not hold, listing the
/// first [`MAX_LISTED`] of them.
fn unknown_pairs(env: &EnvName, held: &Snapshot, counts: &[OutcomeCount]) -> Result<(), EventsError> {
    let holds = |c: &OutcomeCount| held.get(&c.release).is_some_and(|r| r.release().versions.contains(&c.version));
    let total = counts.iter().filter(|c| !holds(c)).count();
    if total == 0 {
        return Ok(());
    }
    let listed = counts
        .iter()
        .filter(|c| !holds(c))
        .take(MAX_LISTED)
        .map(|c| Pair { release: c.release.clone(), version: c.version.clone() })
        .collect();
    Err(EventsError::Unknown { env: env.to_string(), listed, total })
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
    use cohort_sdk::{Release, SnapshotData};

    fn count(version: &str, ok: u64, error: u64) -> OutcomeCount {
        OutcomeCount { release: "checkout".into(), version: version.into(), ok, error }
    }

    fn pair(release: &str, version: &str) -> OutcomeCount {
        OutcomeCount { release: release.into(), version: version.into(), ok: 1, error: 0 }
    }

    /// An environment holding `checkout` (v1, v2) and `search` (a, b).
    fn held() -> Snapshot {
        let release = |key: &str, versions: [&str; 2]| -> Release {
            serde_json::from_value(serde_json::json!({"key": key, "versions": versions})).expect("a release")
        };
        Snapshot::compile(SnapshotData {
            revision: 1,
            kill_all: false,
            releases: vec![release("checkout", ["v1", "v2"]), release("search", ["a", "b"])],
        })
        .expect("compiles")
    }

    fn outcomes(max_pairs_per_minute: usize) -> Outcomes {
        Outcomes::new(&EventsSettings { max_pairs_per_report: MAX_BATCH, max_pairs_per_minute })
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
        let (held, outcomes) = (held(), outcomes(100));
        // Minute 10 is [600 000, 660 000) ms; now is 25 s into minute 12.
        let now = 12 * 60_000 + 25_000;
        for (at, errors) in [(9 * 60_000 + 59_999, 100), (10 * 60_000, 1), (11 * 60_000 + 30_000, 2), (now, 4)] {
            outcomes.record(&store, &env, &held, vec![count("v2", 10, errors)], at).await.expect("recorded");
        }
        let (versions, minutes) = health(&store, &env, "checkout", 3, now).await.expect("health");
        assert_eq!(versions["v2"].error, 1 + 2 + 4, "minute 9 is outside the last three");
        assert_eq!(minutes.iter().map(|m| m.minute).collect::<Vec<_>>(), vec![10, 11, 12]);
        let (versions, _) = health(&store, &env, "checkout", 1, now).await.expect("health");
        assert_eq!(versions["v2"].error, 4);
    }

    #[tokio::test]
    async fn a_report_naming_anything_the_environment_does_not_hold_stores_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let store = EmbeddedStore::open(dir.path(), 10).expect("opens");
        let env = EnvName::parse("production").expect("env");
        let (held, outcomes) = (held(), outcomes(100));
        let mut batch = vec![pair("checkout", "v2"), pair("checkout", "v3"), pair("search", "v1")];
        batch.extend((0..30).map(|i| pair(&format!("junk-{i}"), "v1")));
        let refused = outcomes.record(&store, &env, &held, batch, 1_000).await;
        let Err(EventsError::Unknown { listed, total, .. }) = refused else { panic!("refused: {refused:?}") };
        assert_eq!(total, 32, "checkout/v3, search/v1 and the 30 junk releases");
        assert_eq!(listed.len(), MAX_LISTED);
        assert!(listed.contains(&Pair { release: "checkout".into(), version: "v3".into() }));
        let (versions, _) = health(&store, &env, "checkout", 1, 1_000).await.expect("health");
        assert!(versions.is_empty(), "not even the known pair was stored: {versions:?}");
    }

    #[tokio::test]
    async fn each_environment_takes_a_bounded_number_of_distinct_pairs_per_minute() {
        let dir = tempfile::tempdir().expect("dir");
        let store = EmbeddedStore::open(dir.path(), 10).expect("opens");
        let env = EnvName::parse("production").expect("env");
        let (held, outcomes) = (held(), outcomes(3));
        let minute = 10 * 60_000;
        let three = vec![pair("checkout", "v1"), pair("checkout", "v2"), pair("search", "a")];
        outcomes.record(&store, &env, &held, three.clone(), minute).await.expect("three fit");
        outcomes.record(&store, &env, &held, three, minute + 1_000).await.expect("the same three again");
        let refused = outcomes.record(&store, &env, &held, vec![pair("search", "b")], minute + 45_500).await;
        assert!(
            matches!(refused, Err(EventsError::TooManyPairs { limit: 3, retry_after_secs: 15, .. })),
            "a fourth pair waits for the next minute: {refused:?}"
        );
        outcomes.record(&store, &env, &held, vec![pair("search", "b")], minute + 60_000).await.expect("next minute");
    }
}
