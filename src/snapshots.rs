//! The in-memory snapshots every evaluation reads, one per environment.
//!
//! Concurrency story: readers `load()` an `Arc` of an immutable map of immutable
//! environment snapshots (arc-swap: no lock, no contention, a few atomic ops) and
//! evaluate against it. Writers — the request that made a change, the change-stream
//! follower, the periodic resync — build a new map and swap it in under a small mutex
//! that only orders writers; readers never wait for it. Every swap is announced, still
//! under that mutex so announcements come in revision order, on a broadcast channel for
//! whoever streams changes onward ([`crate::stream`]); the channel never blocks a writer.
//!
//! Each environment snapshot carries a bounded [`History`] of the changes that led to
//! it, swapped together with it, so one `load()` gives a subscriber a consistent pair
//! (state at revision R, changes up to R) to resume from — still without a lock.

use crate::store::{Change, ChangeKind, EnvData, EnvName};
use actix_web::web::Bytes;
use arc_swap::ArcSwap;
use cohort_sdk::{CompiledRelease, Snapshot, SnapshotData};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;

/// The environments by name. Looked up on every evaluation: foldhash rather than
/// SipHash (names come from the store, not from callers, and are validated anyway).
type EnvMap = HashMap<EnvName, Arc<EnvSnapshot>, foldhash::fast::RandomState>;

/// Changes kept per environment for resuming subscribers, unless configured.
pub const DEFAULT_HISTORY: usize = 1_024;

/// Capacity of the announcement channel. A subscriber that lags this far behind is told
/// so ([`broadcast::error::RecvError::Lagged`]) and must treat every environment as
/// reloaded.
const ANNOUNCEMENTS: usize = 1_024;

/// One environment as this instance serves it.
#[derive(Debug, Clone, Default)]
pub struct EnvSnapshot {
    /// Compiled releases and the kill switch, at `snapshot.revision()`.
    pub snapshot: Snapshot,
    /// Each release's revision (its `ETag`).
    pub revisions: HashMap<String, u64>,
    /// Why the environment kill switch is on.
    pub kill_reason: Option<String>,
    /// The most recent changes up to `snapshot.revision()`, for resuming subscribers.
    pub history: History,
    /// `snapshot` in its wire form (`SnapshotData` as JSON), rendered on first request:
    /// every SDK that starts or polls without a match asks for the same bytes.
    wire: OnceLock<Bytes>,
    /// The releases indexed for the HTTP routes, built on first request.
    index: OnceLock<ReleaseIndex>,
}

/// An environment's releases as the HTTP evaluation routes look them up.
#[derive(Debug, Clone, Default)]
pub struct ReleaseIndex {
    /// By the bytes of their key: a requested key is looked up as the request spelled it,
    /// and checked as UTF-8 only when the environment does not hold it.
    by_key: HashMap<Box<[u8]>, Arc<CompiledRelease>, foldhash::fast::RandomState>,
    /// In key order, for answers about every release.
    sorted: Vec<Arc<CompiledRelease>>,
}

impl ReleaseIndex {
    /// Indexes `snapshot`'s releases.
    pub fn of(snapshot: &Snapshot) -> Self {
        ReleaseIndex {
            by_key: snapshot.iter().map(|r| (r.key().as_bytes().into(), Arc::clone(r))).collect(),
            sorted: snapshot.releases().cloned().collect(),
        }
    }

    /// The release whose key is `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Arc<CompiledRelease>> {
        self.by_key.get(key)
    }

    /// Every release, in key order.
    pub fn sorted(&self) -> &[Arc<CompiledRelease>] {
        &self.sorted
    }
}

impl EnvSnapshot {
    /// The environment revision.
    pub fn revision(&self) -> u64 {
        self.snapshot.revision()
    }

    /// The releases indexed for lookups by key bytes and in key order, built once per
    /// revision (on first use, so a change is never delayed by it).
    pub fn index(&self) -> &ReleaseIndex {
        self.index.get_or_init(|| ReleaseIndex::of(&self.snapshot))
    }

    /// The snapshot as `GET …/snapshot` serves it and event streams start with, rendered
    /// once per revision (empty only if it could not be serialised, which plain data
    /// with string keys never fails).
    pub fn wire_json(&self) -> Bytes {
        self.wire
            .get_or_init(|| {
                // Plain data with string keys: serialising it into memory cannot fail.
                serde_json::to_vec(&self.snapshot.to_data()).map(Bytes::from).unwrap_or_default()
            })
            .clone()
    }

    fn from_data(env: &EnvName, data: EnvData) -> Self {
        let revisions = data.releases.iter().map(|r| (r.release.key.clone(), r.revision)).collect();
        let (snapshot, rejected) = Snapshot::compile_lenient(SnapshotData {
            revision: data.revision,
            kill_all: data.kill_all,
            releases: data.releases.into_iter().map(|r| r.release).collect(),
        });
        for (key, error) in rejected {
            tracing::error!(%env, release = %key, %error, "stored release does not compile; it evaluates as not found");
        }
        let history = History::starting_at(data.revision);
        EnvSnapshot { snapshot, revisions, kill_reason: data.kill_reason, history, ..EnvSnapshot::default() }
    }
}

/// The changes of one environment between `base` and the snapshot's revision, oldest
/// first and contiguous (`base + 1`, `base + 2`, …). A full reload starts it afresh at
/// the loaded revision: what happened before is unknown.
#[derive(Debug, Clone, Default)]
pub struct History {
    base: u64,
    changes: VecDeque<Arc<Change>>,
}

impl History {
    /// An empty history at `revision`.
    pub fn starting_at(revision: u64) -> Self {
        History { base: revision, changes: VecDeque::new() }
    }

    /// The revision the history ends at.
    pub fn revision(&self) -> u64 {
        self.base + self.changes.len() as u64
    }

    /// Every change after `revision`, or `None` when some of them are no longer held
    /// (too old, before a reload) or `revision` is ahead of this history.
    pub fn after(&self, revision: u64) -> Option<impl Iterator<Item = &Arc<Change>>> {
        if revision < self.base || revision > self.revision() {
            return None;
        }
        let skip = usize::try_from(revision - self.base).ok()?;
        Some(self.changes.iter().skip(skip))
    }

    /// This history with `change` (the next revision) appended, keeping at most `limit`.
    fn with(&self, change: Arc<Change>, limit: usize) -> Self {
        let mut next = self.clone();
        next.changes.push_back(change);
        while next.changes.len() > limit {
            next.changes.pop_front();
            next.base += 1;
        }
        next
    }
}

/// What a swap did, as announced to subscribers.
#[derive(Debug, Clone)]
pub enum Update {
    /// One change, the next revision, was applied.
    Applied(Arc<Change>),
    /// The environment was replaced by a full load (start-up, a gap, an outage healed);
    /// no change record describes the difference.
    Reloaded,
}

/// One announcement: `env` is now served at `revision` because of `update`.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The environment.
    pub env: EnvName,
    /// Its revision after the swap.
    pub revision: u64,
    /// What happened.
    pub update: Update,
}

/// How [`Snapshots::apply`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The change is now served.
    Applied,
    /// The snapshot already had it.
    AlreadyApplied,
    /// Changes between the snapshot and this one are missing: reload the environment.
    Gap,
}

/// Every environment's snapshot.
pub struct Snapshots {
    envs: ArcSwap<EnvMap>,
    writer: Mutex<()>,
    ready: AtomicBool,
    changed: broadcast::Sender<Announcement>,
    history_limit: usize,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots::with_history(DEFAULT_HISTORY)
    }
}

impl Snapshots {
    /// Snapshots keeping up to `limit` changes per environment for resuming subscribers.
    pub fn with_history(limit: usize) -> Self {
        Snapshots {
            envs: ArcSwap::default(),
            writer: Mutex::new(()),
            ready: AtomicBool::new(false),
            changed: broadcast::channel(ANNOUNCEMENTS).0,
            history_limit: limit,
        }
    }

    /// The environment's current snapshot (`None` if nothing was ever written there).
    #[inline]
    pub fn get(&self, env: &EnvName) -> Option<Arc<EnvSnapshot>> {
        self.envs.load().get(env).cloned()
    }

    /// Names of the environments held.
    pub fn environments(&self) -> Vec<EnvName> {
        self.envs.load().keys().cloned().collect()
    }

    /// The revision served for `env` (0 when unknown).
    pub fn revision(&self, env: &EnvName) -> u64 {
        self.get(env).map_or(0, |s| s.revision())
    }

    /// True once the first full load finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the first full load done.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Subscribes to the announcements of every swap, in revision order per environment.
    pub fn subscribe(&self) -> broadcast::Receiver<Announcement> {
        self.changed.subscribe()
    }

    /// Replaces `env` with freshly loaded data, unless what is served is already newer
    /// (a follower may have applied changes while the load was in flight).
    pub fn replace(&self, env: &EnvName, data: EnvData) -> bool {
        let _writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.revision(env);
        if data.revision < current {
            if data.revision + 1_000 < current {
                tracing::error!(%env, store = data.revision, served = current, "store revision is far behind the served snapshot; keeping the snapshot");
            }
            return false;
        }
        if data.revision == current && self.get(env).is_some() {
            return false;
        }
        let revision = data.revision;
        self.swap(env, Arc::new(EnvSnapshot::from_data(env, data)));
        self.announce(env, revision, Update::Reloaded);
        true
    }

    /// Applies one change if it is the next one.
    pub fn apply(&self, env: &EnvName, change: &Change) -> Applied {
        let _writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.get(env).unwrap_or_default();
        if change.revision <= current.revision() {
            return Applied::AlreadyApplied;
        }
        if change.revision != current.revision() + 1 {
            return Applied::Gap;
        }
        let rev = change.revision;
        let mut next = EnvSnapshot { kill_reason: current.kill_reason.clone(), ..EnvSnapshot::default() };
        let mut revisions = current.revisions.clone();
        next.snapshot = match &change.kind {
            ChangeKind::Upsert { release } => match CompiledRelease::compile(release.clone()) {
                Ok(compiled) => {
                    revisions.insert(release.key.clone(), rev);
                    current.snapshot.with_release(rev, Arc::new(compiled))
                }
                Err(error) => {
                    tracing::error!(%env, release = %release.key, %error, "changed release does not compile; it evaluates as not found");
                    revisions.remove(&release.key);
                    current.snapshot.without_release(rev, &release.key)
                }
            },
            ChangeKind::Delete { key } => {
                revisions.remove(key);
                current.snapshot.without_release(rev, key)
            }
            ChangeKind::KillAll { on, reason } => {
                next.kill_reason = reason.clone().filter(|_| *on);
                current.snapshot.with_kill_all(rev, *on)
            }
        };
        next.revisions = revisions;
        let change = Arc::new(change.clone());
        next.history = current.history.with(Arc::clone(&change), self.history_limit);
        self.swap(env, Arc::new(next));
        self.announce(env, rev, Update::Applied(change));
        Applied::Applied
    }

    fn swap(&self, env: &EnvName, snapshot: Arc<EnvSnapshot>) {
        let mut map = EnvMap::clone(&self.envs.load());
        map.insert(env.clone(), snapshot);
        self.envs.store(Arc::new(map));
    }

    fn announce(&self, env: &EnvName, revision: u64, update: Update) {
        // No subscriber is fine.
        let _ = self.changed.send(Announcement { env: env.clone(), revision, update });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvName {
        EnvName::parse("production").expect("env")
    }

    fn kill(revision: u64) -> Change {
        Change { revision, kind: ChangeKind::KillAll { on: true, reason: None } }
    }

    fn revisions<'a>(changes: impl Iterator<Item = &'a Arc<Change>>) -> Vec<u64> {
        changes.map(|c| c.revision).collect()
    }

    #[test]
    fn the_history_keeps_the_latest_changes_and_restarts_at_a_reload() {
        let snapshots = Snapshots::with_history(3);
        for revision in 1..=5 {
            assert_eq!(snapshots.apply(&env(), &kill(revision)), Applied::Applied);
        }
        let current = snapshots.get(&env()).expect("env");
        assert_eq!(current.history.revision(), 5);
        assert_eq!(current.history.after(2).map(revisions), Some(vec![3, 4, 5]));
        assert_eq!(current.history.after(4).map(revisions), Some(vec![5]));
        assert_eq!(current.history.after(5).map(revisions), Some(vec![]));
        assert!(current.history.after(1).is_none(), "change 2 is no longer held");
        assert!(current.history.after(6).is_none(), "ahead of the history");

        assert!(snapshots.replace(&env(), EnvData { revision: 9, ..EnvData::default() }));
        let reloaded = snapshots.get(&env()).expect("env");
        assert!(reloaded.history.after(5).is_none(), "what led to the reload is unknown");
        assert_eq!(reloaded.history.after(9).map(revisions), Some(vec![]));
    }

    #[tokio::test]
    async fn every_swap_is_announced_with_what_happened() {
        let snapshots = Snapshots::default();
        let mut announcements = snapshots.subscribe();
        snapshots.apply(&env(), &kill(1));
        snapshots.replace(&env(), EnvData { revision: 4, ..EnvData::default() });
        let first = announcements.recv().await.expect("announced");
        assert!(matches!(&first.update, Update::Applied(change) if change.revision == 1));
        let second = announcements.recv().await.expect("announced");
        assert_eq!(second.revision, 4);
        assert!(matches!(second.update, Update::Reloaded));
    }
}
