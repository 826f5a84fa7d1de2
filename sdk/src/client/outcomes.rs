//! Outcome counting for `track`: per (release, version) counters in memory, bounded,
//! taken in batches by the flusher (`flush.rs`).
//!
//! The caller's cost is one short critical section (a hash lookup and two additions)
//! under a mutex that only the flusher otherwise takes, for as long as it needs to copy
//! the counts out — never across I/O. Counters of active pairs are kept (zeroed) from
//! one flush to the next, so tracking allocates only the first time a pair is seen;
//! a pair idle for a whole flush interval is forgotten. At most `max_pairs` pairs are
//! held: outcomes of a pair that does not fit are dropped and counted, and the flusher
//! reports them in a log line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// What happened when a unit was served a version, as [`Client::track`] reports it
/// (ramp guards compare the error rates of the candidate and the baseline).
///
/// [`Client::track`]: super::Client::track
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The request (or job, or page) served by the version succeeded.
    Ok,
    /// It failed in a way the version may be to blame for (a 5xx, an exception).
    Error,
}

/// Largest count one report entry may carry (the service refuses more).
const MAX_COUNT: u64 = 1_000_000_000;

/// One pair's counts, in the wire shape of `POST …/events`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct OutcomeCount {
    pub(crate) release: String,
    pub(crate) version: String,
    pub(crate) ok: u64,
    pub(crate) error: u64,
}

impl OutcomeCount {
    pub(crate) fn total(&self) -> u64 {
        self.ok.saturating_add(self.error)
    }
}

/// The counters shared by every clone of a client and its flusher.
pub(crate) struct Outcomes {
    counts: Mutex<Counts>,
    /// Outcomes lost: no room for their pair, refused by the service, or tracked after
    /// `close`.
    dropped: AtomicU64,
    closed: AtomicBool,
    /// Wakes the flusher early when `flush_size` outcomes are pending.
    pub(crate) flush_now: Notify,
    max_pairs: usize,
    flush_size: u64,
}

#[derive(Default)]
struct Counts {
    releases: HashMap<Box<str>, Vec<Pair>, Xxh3DefaultBuilder>,
    /// Pairs held (the sum of the vectors' lengths).
    pairs: usize,
    /// Outcomes counted since the last take.
    pending: u64,
}

struct Pair {
    version: Box<str>,
    ok: u64,
    error: u64,
}

impl Outcomes {
    /// Counters holding at most `max_pairs` pairs, asking for a flush every
    /// `flush_size` outcomes.
    pub(crate) fn new(max_pairs: usize, flush_size: u64) -> Self {
        Outcomes {
            counts: Mutex::new(Counts::default()),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            flush_now: Notify::new(),
            max_pairs,
            flush_size: flush_size.max(1),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Every update leaves the counters consistent, so a panic elsewhere while
        // holding the lock cannot corrupt them.
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one outcome of `version` of `release`. Never waits for I/O.
    #[inline]
    pub(crate) fn record(&self, release: &str, version: &str, outcome: Outcome) {
        if self.closed.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (ok, error) = match outcome {
            Outcome::Ok => (1, 0),
            Outcome::Error => (0, 1),
        };
        let flush = {
            let mut counts = self.counts();
            if !counts.add(release, version, ok, error, self.max_pairs) {
                drop(counts);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            counts.pending = counts.pending.saturating_add(1);
            counts.pending == self.flush_size
        };
        if flush {
            self.flush_now.notify_one();
        }
    }

    /// Every non-zero count, zeroing them; forgets pairs with nothing since the last
    /// take. Counts above what one report entry may carry stay for the next take.
    pub(crate) fn take(&self) -> Vec<OutcomeCount> {
        let mut counts = self.counts();
        let Counts { releases, pairs, pending } = &mut *counts;
        *pending = 0;
        let mut batch = Vec::new();
        releases.retain(|release, versions| {
            versions.retain_mut(|pair| {
                if pair.ok == 0 && pair.error == 0 {
                    *pairs -= 1;
                    return false;
                }
                let (ok, error) = (pair.ok.min(MAX_COUNT), pair.error.min(MAX_COUNT));
                pair.ok -= ok;
                pair.error -= error;
                batch.push(OutcomeCount { release: release.to_string(), version: pair.version.to_string(), ok, error });
                true
            });
            !versions.is_empty()
        });
        batch
    }

    /// Puts back counts a report could not deliver, to try again with the next one.
    /// What no longer fits is dropped and counted.
    pub(crate) fn restore(&self, batch: &[OutcomeCount]) {
        let mut counts = self.counts();
        for count in batch {
            if !counts.add(&count.release, &count.version, count.ok, count.error, self.max_pairs) {
                self.dropped.fetch_add(count.total(), Ordering::Relaxed);
            }
        }
    }

    /// Counts `n` outcomes as lost.
    pub(crate) fn drop_outcomes(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Outcomes lost so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// From now on, every outcome is dropped (and counted).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// The most pairs held at once.
    pub(crate) fn max_pairs(&self) -> usize {
        self.max_pairs
    }
}

impl Counts {
    /// Adds to the pair's counters, making room for a new pair if there is; false
    /// when there is none.
    fn add(&mut self, release: &str, version: &str, ok: u64, error: u64, max_pairs: usize) -> bool {
        if let Some(versions) = self.releases.get_mut(release) {
            return add_to(versions, &mut self.pairs, version, ok, error, max_pairs);
        }
        if self.pairs >= max_pairs {
            return false;
        }
        let versions = self.releases.entry(release.into()).or_insert_with(|| Vec::with_capacity(2));
        add_to(versions, &mut self.pairs, version, ok, error, max_pairs)
    }
}

fn add_to(versions: &mut Vec<Pair>, pairs: &mut usize, version: &str, ok: u64, error: u64, max_pairs: usize) -> bool {
    // A release has a handful of versions: a scan beats a second hash map.
    if let Some(pair) = versions.iter_mut().find(|p| &*p.version == version) {
        pair.ok = pair.ok.saturating_add(ok);
        pair.error = pair.error.saturating_add(error);
        return true;
    }
    if *pairs >= max_pairs {
        return false;
    }
    *pairs += 1;
    versions.push(Pair { version: version.into(), ok, error });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut batch: Vec<OutcomeCount>) -> Vec<(String, String, u64, u64)> {
        batch.sort_by(|a, b| (&a.release, &a.version).cmp(&(&b.release, &b.version)));
        batch.into_iter().map(|c| (c.release, c.version, c.ok, c.error)).collect()
    }

    fn row(release: &str, version: &str, ok: u64, error: u64) -> (String, String, u64, u64) {
        (release.into(), version.into(), ok, error)
    }

    #[test]
    fn outcomes_add_up_per_release_and_version_and_a_take_empties_them() {
        let outcomes = Outcomes::new(100, 1_000);
        for _ in 0..3 {
            outcomes.record("checkout", "v2", Outcome::Ok);
        }
        outcomes.record("checkout", "v2", Outcome::Error);
        outcomes.record("checkout", "v1", Outcome::Ok);
        outcomes.record("search", "v1", Outcome::Error);
        assert_eq!(
            sorted(outcomes.take()),
            [row("checkout", "v1", 1, 0), row("checkout", "v2", 3, 1), row("search", "v1", 0, 1)]
        );
        assert!(outcomes.take().is_empty(), "taken once");
        assert_eq!(outcomes.counts().pairs, 0, "idle pairs are forgotten");
        assert_eq!(outcomes.dropped(), 0);
    }

    #[test]
    fn a_full_table_drops_new_pairs_and_counts_them_but_keeps_counting_known_ones() {
        let outcomes = Outcomes::new(2, 1_000);
        outcomes.record("a", "v1", Outcome::Ok);
        outcomes.record("a", "v2", Outcome::Ok);
        outcomes.record("b", "v1", Outcome::Ok);
        outcomes.record("a", "v3", Outcome::Error);
        outcomes.record("a", "v1", Outcome::Ok);
        assert_eq!(outcomes.dropped(), 2);
        assert_eq!(sorted(outcomes.take()), [row("a", "v1", 2, 0), row("a", "v2", 1, 0)]);
    }

    #[test]
    fn undelivered_counts_are_restored_and_what_no_longer_fits_is_dropped() {
        let outcomes = Outcomes::new(2, 1_000);
        outcomes.record("a", "v1", Outcome::Ok);
        outcomes.record("a", "v2", Outcome::Error);
        let batch = outcomes.take();
        outcomes.record("a", "v1", Outcome::Ok);
        outcomes.restore(&batch);
        assert_eq!(sorted(outcomes.take()), [row("a", "v1", 2, 0), row("a", "v2", 0, 1)]);
        let batch = outcomes.take();
        assert!(batch.is_empty());
        outcomes.record("b", "v1", Outcome::Ok);
        outcomes.record("c", "v1", Outcome::Ok);
        outcomes.restore(&[OutcomeCount { release: "d".into(), version: "v1".into(), ok: 5, error: 2 }]);
        assert_eq!(outcomes.dropped(), 7);
    }

    #[test]
    fn the_flusher_is_woken_when_the_batch_size_is_reached_and_close_drops_the_rest() {
        let outcomes = Outcomes::new(10, 3);
        use futures_util::FutureExt;
        outcomes.record("a", "v1", Outcome::Ok);
        outcomes.record("a", "v1", Outcome::Ok);
        assert!(outcomes.flush_now.notified().now_or_never().is_none(), "not yet");
        outcomes.record("a", "v1", Outcome::Ok);
        assert!(outcomes.flush_now.notified().now_or_never().is_some(), "woken at the third");
        outcomes.close();
        outcomes.record("a", "v1", Outcome::Ok);
        assert_eq!(outcomes.dropped(), 1);
    }

    #[test]
    fn huge_counts_are_split_over_reports() {
        let outcomes = Outcomes::new(10, u64::MAX);
        outcomes.restore(&[OutcomeCount { release: "a".into(), version: "v1".into(), ok: MAX_COUNT + 5, error: 0 }]);
        assert_eq!(sorted(outcomes.take()), [row("a", "v1", MAX_COUNT, 0)]);
        assert_eq!(sorted(outcomes.take()), [row("a", "v1", 5, 0)]);
    }
}
