//! Outcome counts reported by SDKs (`track`), aggregated per 10-second [`Bucket`] per
//! (release, version). Ramp guards compare candidate and baseline error rates from
//! them; `GET …/health` sums them.

use serde::{Deserialize, Serialize};

/// How long outcome counts are kept.
pub const OUTCOME_TTL_SECS: u64 = 2 * 24 * 3_600;

/// The width of an outcome bucket. A ramp step's verdict may only count that step's
/// outcomes (docs/model.md, "Ramps and guards"), and the store cannot tell apart outcomes
/// of one bucket, so the width bounds how much of a step's start the guard ignores.
/// Ten seconds keeps that gap small while a day is still only 8 640 buckets.
pub const BUCKET_MS: u64 = 10_000;

/// Most buckets one read returns: a day of them, the longest window anything asks for
/// (`GET …/health?minutes=1440`). A longer range keeps its newest day.
pub const MAX_BUCKETS_PER_READ: u64 = 24 * 3_600 * 1_000 / BUCKET_MS;

/// One span of outcome time, `[start_ms, start_ms + BUCKET_MS)`, numbered from the Unix
/// epoch. Always aligned, so every instance files an outcome in the same bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket(u64);

impl Bucket {
    /// The bucket an outcome reported at `ms` (since the epoch) is counted in.
    pub const fn containing(ms: u64) -> Bucket {
        Bucket(ms / BUCKET_MS)
    }

    /// The first bucket that starts at or after `ms`: the first one that holds no
    /// outcome from before `ms`.
    pub const fn first_at_or_after(ms: u64) -> Bucket {
        Bucket(ms.div_ceil(BUCKET_MS))
    }

    /// When the bucket starts (ms since the epoch).
    pub const fn start_ms(self) -> u64 {
        self.0.saturating_mul(BUCKET_MS)
    }

    /// The first and last bucket a read of `from..=to` covers: `None` when `to < from`;
    /// at most [`MAX_BUCKETS_PER_READ`] buckets, the newest kept.
    pub fn span(from: Bucket, to: Bucket) -> Option<(Bucket, Bucket)> {
        (from <= to).then(|| (Bucket(from.0.max(to.0.saturating_sub(MAX_BUCKETS_PER_READ - 1))), to))
    }

    /// Every bucket of [`Bucket::span`], oldest first.
    pub fn range(from: Bucket, to: Bucket) -> impl Iterator<Item = Bucket> {
        Bucket::span(from, to).into_iter().flat_map(|(first, last)| (first.0..=last.0).map(Bucket))
    }
}

/// Counts for one (release, version) in one report.
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

/// One bucket's counts for one version of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketCounts {
    /// When the bucket starts (ms since the epoch; a multiple of [`BUCKET_MS`]).
    pub bucket_start_ms: u64,
    /// Version name.
    pub version: String,
    /// Successful outcomes.
    pub ok: u64,
    /// Failed outcomes.
    pub error: u64,
}

/// The field name of a (release, version) pair in a bucket's Redis hash / embedded map.
/// The unit separator cannot appear in validated names.
pub(crate) fn field(release: &str, version: &str) -> String {
    format!("{release}\u{1f}{version}")
}

/// The key suffix of a bucket's Redis hash. Named apart from the per-minute
/// `outcomes:{minute}` hashes of earlier versions, which simply expire.
pub(crate) fn bucket_key(bucket: Bucket) -> String {
    format!("outcome-bucket:{}", bucket.start_ms())
}

/// Splits [`field`] back.
pub(crate) fn split_field(field: &str) -> Option<(&str, &str)> {
    field.split_once('\u{1f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ten_seconds_aligned_to_the_epoch() {
        assert_eq!(Bucket::containing(0), Bucket::containing(9_999));
        assert_ne!(Bucket::containing(9_999), Bucket::containing(10_000));
        assert_eq!(Bucket::containing(123_456).start_ms(), 120_000);
    }

    #[test]
    fn the_first_bucket_at_or_after_rounds_up_except_on_a_boundary() {
        assert_eq!(Bucket::first_at_or_after(120_000).start_ms(), 120_000);
        assert_eq!(Bucket::first_at_or_after(120_001).start_ms(), 130_000);
        assert_eq!(Bucket::first_at_or_after(129_999).start_ms(), 130_000);
    }

    #[test]
    fn ranges_are_inclusive_empty_when_reversed_and_capped_to_the_newest_day() {
        let indices = |from, to| Bucket::range(Bucket(from), Bucket(to)).map(|b| b.0).collect::<Vec<_>>();
        assert_eq!(indices(5, 7), vec![5, 6, 7]);
        assert_eq!(indices(7, 7), vec![7]);
        assert!(indices(8, 7).is_empty());
        assert_eq!(Bucket::span(Bucket(8), Bucket(7)), None);
        let long = indices(0, 100_000);
        assert_eq!(long.len() as u64, MAX_BUCKETS_PER_READ);
        assert_eq!((long[0], long[long.len() - 1]), (100_000 - MAX_BUCKETS_PER_READ + 1, 100_000));
    }
}
