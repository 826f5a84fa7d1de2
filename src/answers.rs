//! What each answer a worker thread serves needs beyond the evaluation itself, kept per
//! thread: the Prometheus counter of its (environment, release, version, reason) and, for
//! the evaluate route, the JSON text that never changes for that triple.
//!
//! A labelled lookup in a counter vector hashes every label value and takes a read lock
//! (≈230 instructions); writing `"key":{"version":…,"value":…,"reason":…` piece by piece
//! costs ≈300 more. On a 100-release evaluation both are paid per release. Here the
//! triple is keyed by the compiled release's identity, the version index and the reason
//! (a few instructions to hash). An entry holds its release's `Arc`, so that address
//! cannot be reused by another release while the entry exists; the map is emptied when
//! it reaches [`CAPACITY`] entries, and releases no snapshot holds any more are dropped
//! from it as it goes ([`Answers::make_room`]), which bounds what it keeps alive.
//!
//! The environment and label policy are not part of the key: a compiled release belongs
//! to one environment's snapshot of one application, so its address already names them.

use crate::metrics::Counting;
use cohort_sdk::{CompiledRelease, Decision, Reason};
use prometheus::IntCounter;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

/// Most entries a worker thread keeps.
const CAPACITY: usize = 8_192;

/// One (release, version, reason) triple's cached parts.
pub struct Answer {
    /// `cohort_evaluations_total{environment, release, version, reason}`.
    pub counter: IntCounter,
    /// Rendered on first use by the route that wants it.
    text: OnceCell<Box<[u8]>>,
}

impl Answer {
    /// The cached text, rendered by `render` the first time.
    pub fn text(&self, render: impl FnOnce() -> Vec<u8>) -> &[u8] {
        self.text.get_or_init(|| render().into_boxed_slice())
    }
}

type Key = (usize, usize, Reason);

/// One worker thread's answers, and how many were added since stale ones were dropped.
#[derive(Default)]
struct Answers {
    map: HashMap<Key, (Arc<CompiledRelease>, Answer), foldhash::fast::FixedState>,
    added: usize,
}

impl Answers {
    /// Makes room for one more entry. Every [`SWEEP_EVERY`] additions (additions only
    /// happen after a release changed or on first use), entries whose release no snapshot
    /// holds any more — the cache's `Arc` is the last — are dropped, so a replaced
    /// release is not kept alive for long; should live entries alone fill the map, it
    /// starts afresh.
    fn make_room(&mut self) {
        self.added += 1;
        if self.added < SWEEP_EVERY && self.map.len() < CAPACITY {
            return;
        }
        self.added = 0;
        self.map.retain(|_, (release, _)| Arc::strong_count(release) > 1);
        if self.map.len() >= CAPACITY {
            self.map.clear();
        }
    }
}

/// Additions between sweeps for stale entries.
const SWEEP_EVERY: usize = 256;

thread_local! {
    static ANSWERS: RefCell<Answers> = RefCell::default();
}

/// Calls `f` with the cached parts of `release`'s answer `decision`, building them the
/// first time (the counter as `counting` says). `None` for a decision without a version
/// (a key the environment does not hold), which has nothing to cache.
pub fn with<R>(
    counting: Counting<'_>,
    release: &Arc<CompiledRelease>,
    decision: &Decision<'_>,
    f: impl FnOnce(&Answer) -> R,
) -> Option<R> {
    let (version, index) = (decision.version?, decision.version_index?);
    let key = (Arc::as_ptr(release) as usize, index, decision.reason);
    Some(ANSWERS.with_borrow_mut(|answers| {
        if let Some((_, answer)) = answers.map.get(&key) {
            return f(answer);
        }
        answers.make_room();
        let (_, answer) = answers.map.entry(key).or_insert_with(|| {
            let counter = counting.counter(release, version, decision);
            (Arc::clone(release), Answer { counter, text: OnceCell::new() })
        });
        f(answer)
    }))
}

/// Entries this thread's map holds now.
#[cfg(test)]
fn cached() -> usize {
    ANSWERS.with_borrow(|answers| answers.map.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{METRICS, ReleaseLabels};
    use cohort_sdk::{Context, Release};

    const PER_RELEASE: Counting<'static> = Counting { env: "answers-test", labels: ReleaseLabels::PerRelease };

    fn compiled(key: &str, versions: [&str; 2]) -> Arc<CompiledRelease> {
        Arc::new(CompiledRelease::compile(Release::new(key, versions)).expect("compiles"))
    }

    #[test]
    fn a_release_replaced_under_the_same_key_gets_its_own_entry() {
        let ctx = Context::with_targeting_key("u1");
        let old = compiled("answers-test", ["v1", "v2"]);
        let d = old.evaluate(false, &ctx);
        assert_eq!(with(PER_RELEASE, &old, &d, |a| a.text(|| b"old".to_vec()).to_vec()), Some(b"old".to_vec()));
        assert_eq!(
            with(PER_RELEASE, &old, &d, |a| a.text(|| b"never".to_vec()).to_vec()),
            Some(b"old".to_vec()),
            "cached"
        );
        let renamed = compiled("answers-test", ["v1", "v9"]);
        let d = renamed.evaluate(false, &ctx);
        assert_eq!(with(PER_RELEASE, &renamed, &d, |a| a.text(|| b"new".to_vec()).to_vec()), Some(b"new".to_vec()));
    }

    #[test]
    fn replaced_releases_are_not_kept_alive() {
        let ctx = Context::with_targeting_key("u1");
        let first = compiled("answers-sweep-0", ["v1", "v2"]);
        with(PER_RELEASE, &first, &first.evaluate(false, &ctx), |_| ());
        let weak = Arc::downgrade(&first);
        drop(first);
        for i in 1..=SWEEP_EVERY {
            let release = compiled(&format!("answers-sweep-{i}"), ["v1", "v2"]);
            with(PER_RELEASE, &release, &release.evaluate(false, &ctx), |_| ());
        }
        assert!(weak.upgrade().is_none(), "the sweep dropped the only reference");
        assert!(cached() < SWEEP_EVERY, "released entries are gone: {}", cached());
    }

    #[test]
    fn counters_carry_the_decisions_labels() {
        let release = compiled("answers-labels", ["base", "cand"]);
        let d = release.evaluate(true, &Context::with_targeting_key("u1"));
        let labels = ["answers-test", "answers-labels", "base", "DISABLED"];
        let before = METRICS.evaluations.with_label_values(&labels).get();
        with(PER_RELEASE, &release, &d, |a| a.counter.inc());
        with(PER_RELEASE, &release, &d, |a| a.counter.inc());
        assert_eq!(METRICS.evaluations.with_label_values(&labels).get(), before + 2);
        assert_eq!(with(PER_RELEASE, &release, &Decision { version: None, version_index: None, ..d }, |_| ()), None);
    }

    #[test]
    fn aggregated_counters_name_the_environment_but_no_release() {
        let counting = Counting { env: "answers-aggregate", labels: ReleaseLabels::Aggregate };
        let labels = ["answers-aggregate", crate::metrics::ALL, crate::metrics::ALL, "DISABLED"];
        let before = METRICS.evaluations.with_label_values(&labels).get();
        for key in ["answers-agg-a", "answers-agg-b", "answers-agg-c"] {
            let release = compiled(key, ["base", "cand"]);
            let d = release.evaluate(true, &Context::with_targeting_key("u1"));
            with(counting, &release, &d, |a| a.counter.inc());
        }
        assert_eq!(METRICS.evaluations.with_label_values(&labels).get(), before + 3, "three releases, one series");
        let text = {
            let mut out = Vec::new();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &prometheus::core::Collector::collect(&METRICS.evaluations),
                &mut out,
            )
            .expect("encodes");
            String::from_utf8(out).expect("utf-8")
        };
        assert!(!text.contains("answers-agg-a"), "no series names a release: {text}");
    }
}
