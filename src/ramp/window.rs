//! The guard's window: which outcomes a ramp step's verdict counts. Only the step's
//! own: outcomes are kept in 10 s buckets, and the window starts at the first bucket
//! that begins at or after the step's start, so no outcome from before the step (an
//! earlier step, or the failures of a rolled-back attempt moments ago) is counted; at
//! most the step's first 10 s are not counted either.

use super::guard::Sample;
use crate::store::{Bucket, EnvName, Store, StoreError};
use cohort_sdk::Ramp;

/// The buckets the guard counts for a step, `first..=last`; empty while `last` is
/// before `first` (the step began less than a bucket ago).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub first: Bucket,
    pub last: Bucket,
}

impl Window {
    /// The window of `ramp`'s current step at `now_ms`.
    pub fn of(ramp: &Ramp, now_ms: u64) -> Window {
        Window { first: Bucket::first_at_or_after(ramp.step_started_ms), last: Bucket::containing(now_ms) }
    }

    /// When the first counted bucket starts (ms since the epoch).
    pub fn start_ms(self) -> u64 {
        self.first.start_ms()
    }
}

/// The baseline's and the candidate's outcomes in the window of `ramp`'s current step
/// at `now_ms`. Other versions' outcomes are ignored.
pub async fn samples(
    store: &dyn Store,
    env: &EnvName,
    key: &str,
    baseline: &str,
    ramp: &Ramp,
    now_ms: u64,
) -> Result<(Sample, Sample), StoreError> {
    let window = Window::of(ramp, now_ms);
    let (mut b, mut c) = (Sample::default(), Sample::default());
    if window.last < window.first {
        return Ok((b, c));
    }
    for counts in store.outcomes(env, key, window.first, window.last).await? {
        let side = if counts.version == baseline {
            &mut b
        } else if counts.version == ramp.candidate {
            &mut c
        } else {
            continue;
        };
        side.total = side.total.saturating_add(counts.ok.saturating_add(counts.error));
        side.errors = side.errors.saturating_add(counts.error);
    }
    Ok((b, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EmbeddedStore, OutcomeCount};
    use cohort_sdk::{RampGuard, RampState, RampStep};

    fn ramp(step_started_ms: u64) -> Ramp {
        Ramp {
            candidate: "v2".into(),
            steps: vec![
                RampStep { buckets: 5_000, nodes: None, hold_ms: Some(3_600_000) },
                RampStep { buckets: 100_000, nodes: None, hold_ms: None },
            ],
            guard: RampGuard {
                max_error_rate_increase: 0.01,
                max_error_rate: Some(0.05),
                min_samples: 500,
                confidence: 0.99,
            },
            state: RampState::Running,
            step: 0,
            step_started_ms,
            extensions: 0,
            reason: None,
            guard_figures: None,
            progress_deadline_ms: None,
            max_unavailable: None,
        }
    }

    fn counts(version: &str, ok: u64, error: u64) -> Vec<OutcomeCount> {
        vec![OutcomeCount { release: "checkout".into(), version: version.into(), ok, error }]
    }

    #[test]
    fn the_window_starts_at_the_next_bucket_boundary_at_or_after_the_step() {
        // A step started 3.5 s into the bucket [120 s, 130 s) counts from 130 s on.
        assert_eq!(Window::of(&ramp(123_500), 125_000).start_ms(), 130_000);
        assert!(Window::of(&ramp(123_500), 129_999).last < Window::of(&ramp(123_500), 129_999).first, "empty");
        assert_eq!(Window::of(&ramp(123_500), 130_000).last.start_ms(), 130_000);
        // A step that starts on a boundary counts its first bucket.
        assert_eq!(Window::of(&ramp(120_000), 120_000).start_ms(), 120_000);
    }

    #[tokio::test]
    async fn a_restarted_ramp_does_not_count_the_rolled_back_attempts_failures() {
        let dir = tempfile::tempdir().expect("dir");
        let store = EmbeddedStore::open(dir.path(), 10).expect("opens");
        let env = EnvName::parse("production").expect("env");
        let record = |at_ms: u64, version: &'static str, ok: u64, error: u64| {
            let store = &store;
            let env = &env;
            async move { store.record_outcomes(env, Bucket::containing(at_ms), &counts(version, ok, error)).await }
        };
        // Minute 2 is [120 s, 180 s). The first attempt failed at 121 s and 126 s and
        // was rolled back; the ramp restarts at 127.5 s, in the same minute and the same
        // bucket as the last failures.
        record(121_000, "v2", 10, 20).await.expect("recorded");
        record(126_000, "v2", 30, 70).await.expect("recorded");
        record(126_500, "v1", 100, 0).await.expect("recorded");
        let restarted = ramp(127_500);
        let at = |now| samples(&store, &env, "checkout", "v1", &restarted, now);
        assert_eq!(at(129_000).await.expect("read"), (Sample::default(), Sample::default()));
        // Its own outcomes, from the next bucket on, are counted; other versions are not.
        record(130_000, "v2", 99, 1).await.expect("recorded");
        record(141_000, "v1", 50, 0).await.expect("recorded");
        record(141_000, "v3", 0, 50).await.expect("recorded");
        let (b, c) = at(145_000).await.expect("read");
        assert_eq!((b, c), (Sample { total: 50, errors: 0 }, Sample { total: 100, errors: 1 }));
        // The window ends at now: a bucket after `now` is not read.
        record(150_000, "v2", 0, 9).await.expect("recorded");
        assert_eq!(at(149_999).await.expect("read").1, Sample { total: 100, errors: 1 });
    }
}
