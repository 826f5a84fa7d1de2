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

use crate::revocations::RevocationIndex;
use crate::store::{Change, ChangeKind, EnvData, EnvName, Revocation};
use crate::store_watch::StoreWatch;
use actix_web::web::Bytes;
use arc_swap::ArcSwap;
use cohort_sdk::{CompiledRelease, Snapshot, SnapshotData};
use std::collections::{BTreeMap, HashMap, VecDeque};
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
    /// Each release's revision (its `ETag`); keys shared, so a change copies this map
    /// without allocating a key per release.
    revisions: HashMap<Arc<str>, u64>,
    /// Why the environment kill switch is on.
    pub kill_reason: Option<String>,
    /// The most recent changes up to `snapshot.revision()`, for resuming subscribers.
    pub history: History,
    /// How many times kills the store has not yet acknowledged ([`Overlay`]) changed
    /// what is served at this revision; 0 when the store's state is served as it is.
    /// Part of the snapshot's `ETag`, so a polling SDK sees such a kill too.
    pub local: u32,
    /// Token revocations stored in this environment (see [`crate::revocations`]).
    pub revocations: Arc<Vec<Revocation>>,
    /// `snapshot` in its wire form (`SnapshotData` as JSON), rendered on first request:
    /// every SDK that starts or polls without a match asks for the same bytes.
    wire: OnceLock<Bytes>,
    /// The releases in key order, for answers about every release: sorted on first
    /// request, so a change is never delayed by it (lookups by key use `snapshot`).
    sorted: OnceLock<Vec<Arc<CompiledRelease>>>,
}

impl EnvSnapshot {
    /// The environment revision.
    pub fn revision(&self) -> u64 {
        self.snapshot.revision()
    }

    /// What is served, in order: the revision, then the local kills laid over it.
    pub fn version(&self) -> (u64, u32) {
        (self.revision(), self.local)
    }

    /// The `ETag` value of what is served: the revision, with the local generation when
    /// kills the store has not taken are laid over it (`"7"`, `"7.1"`).
    pub fn etag(&self) -> String {
        if self.local == 0 { self.revision().to_string() } else { format!("{}.{}", self.revision(), self.local) }
    }

    /// Release `key`'s revision (its `ETag`); 0 when this snapshot does not hold it.
    pub fn revision_of(&self, key: &str) -> u64 {
        self.revisions.get(key).copied().unwrap_or(0)
    }

    /// An environment serving `snapshot` as it is, with no per-release revisions.
    #[cfg(test)]
    pub(crate) fn serving(snapshot: Snapshot) -> Self {
        EnvSnapshot { snapshot, ..EnvSnapshot::default() }
    }

    /// Every release in key order, sorted once per revision (on first use).
    pub fn sorted(&self) -> &[Arc<CompiledRelease>] {
        self.sorted.get_or_init(|| self.snapshot.releases().cloned().collect())
    }

    /// The release whose key has these bytes (a key the request spelled; not UTF-8 is
    /// no release).
    pub fn release(&self, key: &[u8]) -> Option<&Arc<CompiledRelease>> {
        std::str::from_utf8(key).ok().and_then(|key| self.snapshot.get(key))
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

    /// This snapshot as stored data: what `cohort store reseed` writes back and what an
    /// instance keeps in its data directory as its last good state.
    pub fn to_data(&self) -> EnvData {
        let kill_all = self.snapshot.kill_all();
        EnvData {
            revision: self.revision(),
            kill_all,
            kill_reason: self.kill_reason.clone().filter(|_| kill_all),
            releases: self
                .snapshot
                .releases()
                .map(|r| crate::store::StoredRelease {
                    revision: self.revision_of(r.key()),
                    release: r.release().clone(),
                })
                .collect(),
            reseeded_at: 0,
            revocations: self.revocations.to_vec(),
        }
    }

    fn from_data(env: &EnvName, data: EnvData) -> Self {
        let revisions = data.releases.iter().map(|r| (Arc::from(r.release.key.as_str()), r.revision)).collect();
        let (snapshot, rejected) = Snapshot::compile_lenient(SnapshotData {
            revision: data.revision,
            kill_all: data.kill_all,
            releases: data.releases.into_iter().map(|r| r.release).collect(),
        });
        for (key, error) in rejected {
            tracing::error!(%env, release = %key, %error, "stored release does not compile; it evaluates as not found");
        }
        let history = History::starting_at(data.revision);
        EnvSnapshot {
            snapshot,
            revisions,
            kill_reason: data.kill_reason,
            history,
            revocations: Arc::new(data.revocations),
            ..EnvSnapshot::default()
        }
    }
}

/// The changes of one environment between `base` and the snapshot's revision, oldest
/// first and contiguous (`base + 1`, `base + 2`, …). A full reload starts it afresh at
/// the loaded revision: what happened before is unknown.
#[derive(Debug, Clone, Default)]
pub struct History {
    base: u64,
    changes: VecDeque<Arc<Change>>,
    /// Set when the state served differs from what the changes describe (a local kill
    /// was laid over it): resuming subscribers must take a full snapshot.
    detached: bool,
}

impl History {
    /// An empty history at `revision`.
    pub fn starting_at(revision: u64) -> Self {
        History { base: revision, changes: VecDeque::new(), detached: false }
    }

    /// The revision the history ends at.
    pub fn revision(&self) -> u64 {
        self.base + self.changes.len() as u64
    }

    /// Every change after `revision`, or `None` when some of them are no longer held
    /// (too old, before a reload) or `revision` is ahead of this history.
    pub fn after(&self, revision: u64) -> Option<impl Iterator<Item = &Arc<Change>>> {
        if self.detached || revision < self.base || revision > self.revision() {
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

/// A kill state this instance serves although the store has not acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KillState {
    /// Killed (or, for an environment, kill-all on).
    pub on: bool,
    /// Why.
    pub reason: Option<String>,
}

/// The kills of one environment that this instance applied while its store could not
/// take them (down or regressed): laid over whatever the store says, in every snapshot
/// and change this instance serves, until they are written ([`crate::pending`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// The environment kill switch.
    pub kill_all: Option<KillState>,
    /// Release key → its kill switch.
    pub releases: BTreeMap<String, KillState>,
}

impl Overlay {
    fn is_empty(&self) -> bool {
        self.kill_all.is_none() && self.releases.is_empty()
    }

    fn patch_release(&self, release: &mut cohort_sdk::Release) {
        if let Some(state) = self.releases.get(&release.key) {
            release.killed = state.on;
            release.kill_reason = state.reason.clone().filter(|_| state.on);
        }
    }

    fn patch_data(&self, data: &mut EnvData) {
        if let Some(state) = &self.kill_all {
            data.kill_all = state.on;
            data.kill_reason = state.reason.clone().filter(|_| state.on);
        }
        for stored in &mut data.releases {
            self.patch_release(&mut stored.release);
        }
    }

    fn patch_change(&self, change: &Change) -> Change {
        let mut change = change.clone();
        match &mut change.kind {
            ChangeKind::Upsert { release } => self.patch_release(release),
            ChangeKind::KillAll { on, reason } => {
                if let Some(state) = &self.kill_all {
                    *on = state.on;
                    *reason = state.reason.clone().filter(|_| state.on);
                }
            }
            ChangeKind::Delete { .. } | ChangeKind::Revoke { .. } => {}
        }
        change
    }
}

/// What a local kill targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "snake_case")]
pub enum KillTarget {
    /// One release.
    Release(String),
    /// The environment (kill-all).
    Environment,
}

/// Every environment's snapshot.
pub struct Snapshots {
    envs: ArcSwap<EnvMap>,
    /// Orders writers; holds the local kills laid over the store's state.
    writer: Mutex<HashMap<EnvName, Overlay>>,
    watch: Arc<StoreWatch>,
    ready: AtomicBool,
    changed: broadcast::Sender<Announcement>,
    history_limit: usize,
    /// Every environment's token revocations, indexed for the check of each request;
    /// rebuilt by the swaps that change them.
    revocations: ArcSwap<RevocationIndex>,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots::with_history(DEFAULT_HISTORY)
    }
}

impl Snapshots {
    /// Snapshots keeping up to `limit` changes per environment for resuming subscribers.
    pub fn with_history(limit: usize) -> Self {
        Snapshots::new(limit, Arc::new(StoreWatch::in_memory()))
    }

    /// Snapshots keeping up to `limit` changes per environment, raising `watch`'s
    /// high-water marks with every revision they serve.
    pub fn new(limit: usize, watch: Arc<StoreWatch>) -> Self {
        Snapshots {
            envs: ArcSwap::default(),
            writer: Mutex::new(HashMap::new()),
            watch,
            ready: AtomicBool::new(false),
            changed: broadcast::channel(ANNOUNCEMENTS).0,
            history_limit: limit,
            revocations: ArcSwap::default(),
        }
    }

    /// The environment's current snapshot (`None` if nothing was ever written there).
    #[inline]
    pub fn get(&self, env: &EnvName) -> Option<Arc<EnvSnapshot>> {
        self.envs.load().get(env).cloned()
    }

    /// The token revocations of every environment held, indexed.
    #[inline]
    pub fn revocations(&self) -> arc_swap::Guard<Arc<RevocationIndex>> {
        self.revocations.load()
    }

    /// Names of the environments held.
    pub fn environments(&self) -> Vec<EnvName> {
        self.envs.load().keys().cloned().collect()
    }

    /// The revision served for `env` (0 when unknown).
    pub fn revision(&self, env: &EnvName) -> u64 {
        self.get(env).map_or(0, |s| s.revision())
    }

    /// What this instance knows about its store (high-water marks, regressions).
    pub fn watch(&self) -> &Arc<StoreWatch> {
        &self.watch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EnvName, Overlay>> {
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Serves `state` for `target` in `env` at once, over whatever the store says, until
    /// [`Snapshots::settle`]: a kill the store could not take. The revision stays; the
    /// snapshot's `local` generation rises and subscribers get the whole snapshot.
    /// `false` when the environment or the release is not held here.
    pub fn lay_kill(&self, env: &EnvName, target: &KillTarget, state: KillState) -> bool {
        let mut overlays = self.lock();
        let Some(current) = self.get(env) else { return false };
        let rev = current.revision();
        let snapshot = match target {
            KillTarget::Environment => current.snapshot.with_kill_all(rev, state.on),
            KillTarget::Release(key) => {
                let Some(release) = current.snapshot.get(key) else { return false };
                let mut release = release.release().clone();
                release.killed = state.on;
                release.kill_reason = state.reason.clone().filter(|_| state.on);
                match CompiledRelease::compile(release) {
                    Ok(compiled) => current.snapshot.with_release(rev, Arc::new(compiled)),
                    Err(_) => return false,
                }
            }
        };
        let overlay = overlays.entry(env.clone()).or_default();
        let kill_reason = match target {
            KillTarget::Environment => {
                overlay.kill_all = Some(state.clone());
                state.reason.clone().filter(|_| state.on)
            }
            KillTarget::Release(key) => {
                overlay.releases.insert(key.clone(), state);
                current.kill_reason.clone()
            }
        };
        let mut history = current.history.clone();
        history.detached = true;
        let next = EnvSnapshot {
            snapshot,
            revisions: current.revisions.clone(),
            kill_reason,
            history,
            local: current.local + 1,
            revocations: Arc::clone(&current.revocations),
            ..EnvSnapshot::default()
        };
        self.swap(env, Arc::new(next));
        self.announce(env, rev, Update::Reloaded);
        true
    }

    /// Lays a journalled kill over `env` before it is loaded (start-up): every later load
    /// and change of it is served with the kill.
    pub fn restore_kill(&self, env: &EnvName, target: KillTarget, state: KillState) {
        let mut overlays = self.lock();
        let overlay = overlays.entry(env.clone()).or_default();
        match target {
            KillTarget::Environment => overlay.kill_all = Some(state),
            KillTarget::Release(key) => {
                overlay.releases.insert(key, state);
            }
        }
    }

    /// Stops laying `target`'s local kill over the store's state: the store has it now.
    pub fn settle(&self, env: &EnvName, target: &KillTarget) {
        let mut overlays = self.lock();
        if let Some(overlay) = overlays.get_mut(env) {
            match target {
                KillTarget::Environment => overlay.kill_all = None,
                KillTarget::Release(key) => {
                    overlay.releases.remove(key);
                }
            }
            if overlay.is_empty() {
                overlays.remove(env);
            }
        }
    }

    /// Stops laying every local kill over `env` (the store took the served state whole).
    pub fn settle_all(&self, env: &EnvName) {
        self.lock().remove(env);
    }

    /// Whether a local kill of `target` is laid over `env` (the served state then differs
    /// from the stored one).
    pub fn lays_kill(&self, env: &EnvName, target: &KillTarget) -> bool {
        self.lock().get(env).is_some_and(|overlay| match target {
            KillTarget::Environment => overlay.kill_all.is_some(),
            KillTarget::Release(key) => overlay.releases.contains_key(key),
        })
    }

    /// The local kills laid over `env`.
    pub fn overlay(&self, env: &EnvName) -> Overlay {
        self.lock().get(env).cloned().unwrap_or_default()
    }

    /// Drops `env` (deleted on purpose).
    pub fn remove(&self, env: &EnvName) {
        let mut overlays = self.lock();
        overlays.remove(env);
        let mut map = EnvMap::clone(&self.envs.load());
        if map.remove(env).is_some() {
            self.reindex(&map);
            self.envs.store(Arc::new(map));
        }
    }

    /// Adds an environment created just now, empty at `revision`, unless it is held.
    pub fn create(&self, env: &EnvName, revision: u64) {
        let _overlays = self.lock();
        if self.get(env).is_none() {
            let data = EnvData { revision, ..EnvData::default() };
            self.swap(env, Arc::new(EnvSnapshot::from_data(env, data)));
            self.announce(env, revision, Update::Reloaded);
        }
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
        self.replace_with(env, data, false)
    }

    /// Replaces `env` with freshly loaded data even at the revision already served: what
    /// is served was a local kill laid over the store's state, now settled.
    pub fn refresh(&self, env: &EnvName, data: EnvData) -> bool {
        self.replace_with(env, data, true)
    }

    fn replace_with(&self, env: &EnvName, mut data: EnvData, same_revision: bool) -> bool {
        let overlays = self.lock();
        let current = self.revision(env);
        if data.revision < current {
            if data.revision + 1_000 < current {
                tracing::error!(%env, store = data.revision, served = current, "store revision is far behind the served snapshot; keeping the snapshot");
            }
            return false;
        }
        if data.revision == current && self.get(env).is_some() && !same_revision {
            return false;
        }
        let revision = data.revision;
        let overlay = overlays.get(env);
        if let Some(overlay) = overlay {
            overlay.patch_data(&mut data);
        }
        let mut next = EnvSnapshot::from_data(env, data);
        if overlay.is_some() {
            next.local = 1;
            next.history.detached = true;
        }
        self.swap(env, Arc::new(next));
        self.announce(env, revision, Update::Reloaded);
        true
    }

    /// Applies one change if it is the next one.
    pub fn apply(&self, env: &EnvName, change: &Change) -> Applied {
        let overlays = self.lock();
        let patched;
        let change = match overlays.get(env) {
            Some(overlay) => {
                patched = overlay.patch_change(change);
                &patched
            }
            None => change,
        };
        let current = self.get(env).unwrap_or_default();
        if change.revision <= current.revision() {
            return Applied::AlreadyApplied;
        }
        if change.revision != current.revision() + 1 {
            return Applied::Gap;
        }
        let rev = change.revision;
        let mut next = EnvSnapshot {
            kill_reason: current.kill_reason.clone(),
            local: current.local,
            revocations: Arc::clone(&current.revocations),
            ..EnvSnapshot::default()
        };
        let mut revisions = current.revisions.clone();
        next.snapshot = match &change.kind {
            ChangeKind::Upsert { release } => match CompiledRelease::compile(release.clone()) {
                Ok(compiled) => {
                    match revisions.get_mut(release.key.as_str()) {
                        Some(revision) => *revision = rev,
                        None => _ = revisions.insert(Arc::from(release.key.as_str()), rev),
                    }
                    current.snapshot.with_release(rev, Arc::new(compiled))
                }
                Err(error) => {
                    tracing::error!(%env, release = %release.key, %error, "changed release does not compile; it evaluates as not found");
                    revisions.remove(release.key.as_str());
                    current.snapshot.without_release(rev, &release.key)
                }
            },
            ChangeKind::Delete { key } => {
                revisions.remove(key.as_str());
                current.snapshot.without_release(rev, key)
            }
            ChangeKind::KillAll { on, reason } => {
                next.kill_reason = reason.clone().filter(|_| *on);
                current.snapshot.with_kill_all(rev, *on)
            }
            ChangeKind::Revoke { revocation } => {
                let mut revocations = current.revocations.to_vec();
                crate::store::revocations_insert(&mut revocations, revocation.clone());
                next.revocations = Arc::new(revocations);
                current.snapshot.with_kill_all(rev, current.snapshot.kill_all())
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
        self.watch.observe(env, snapshot.revision());
        let mut map = EnvMap::clone(&self.envs.load());
        let before = map.insert(env.clone(), Arc::clone(&snapshot));
        let revocations_changed = match &before {
            Some(before) => {
                let unchanged = Arc::ptr_eq(&before.revocations, &snapshot.revocations)
                    || (before.revocations.is_empty() && snapshot.revocations.is_empty());
                !unchanged
            }
            None => !snapshot.revocations.is_empty(),
        };
        if revocations_changed {
            // Before the environments: a request never sees a revocation's revision
            // served without the revocation in force.
            self.reindex(&map);
        }
        self.envs.store(Arc::new(map));
    }

    fn reindex(&self, map: &EnvMap) {
        let index = RevocationIndex::build(map.iter().map(|(env, snap)| (env, snap.revocations.as_slice())));
        self.revocations.store(Arc::new(index));
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
