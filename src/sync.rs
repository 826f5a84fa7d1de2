//! Keeps this instance's snapshots in step with the store: an initial load, one
//! follower per environment reading the change stream (blocking read, resuming from the
//! last applied revision), and a periodic revision check that heals any gap and finds
//! environments created elsewhere. A store outage only pauses them: evaluation goes on
//! from the snapshot, and they catch up by themselves when the store returns.
//!
//! A store that went backwards (an environment below this instance's high-water mark,
//! or gone without a deletion tombstone) is never adopted: the environment is flagged
//! regressed ([`crate::store_watch`]), its last good snapshot stays served, and only a
//! reseed above the mark (`cohort store reseed`) clears the flag.

use crate::snapshots::{Applied, Snapshots};
use crate::store::{EnvData, EnvName, Store, StoreError};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The environments a new deployment starts with, so that the two-command start works.
pub const DEFAULT_ENVIRONMENTS: [&str; 2] = ["production", "staging"];

/// Timing of the background sync.
#[derive(Debug, Clone, Copy)]
pub struct SyncSettings {
    /// How long one blocking read of the change stream waits.
    pub follow_block: Duration,
    /// How often revisions are compared with the store.
    pub resync_interval: Duration,
}

/// The background sync of one instance.
pub struct Syncer {
    store: Arc<dyn Store>,
    snapshots: Arc<Snapshots>,
    settings: SyncSettings,
    /// How this instance names itself to operators (`host:port`), in what it reports of
    /// regressed environments.
    label: String,
}

impl Syncer {
    /// A syncer over `store` feeding `snapshots`.
    pub fn new(store: Arc<dyn Store>, snapshots: Arc<Snapshots>, settings: SyncSettings) -> Self {
        Syncer { store, snapshots, settings, label: String::new() }
    }

    /// Names this instance in its reports of regressed environments
    /// ([`Store::report_seen`]).
    pub fn labelled(mut self, label: String) -> Self {
        self.label = label;
        self
    }

    /// Tells the store how far this instance had served each environment the store is
    /// behind, so that a reseed from an instance that saw less is refused. Best effort:
    /// repeated every resync while the environment stays regressed.
    async fn report_regressions(&self) {
        for (env, regression) in self.snapshots.watch().all_regressed() {
            if let Err(error) = self.store.report_seen(&env, &self.label, regression.seen).await {
                tracing::debug!(%env, %error, "could not report the revision seen of a regressed environment");
            }
        }
    }

    /// Loads every environment once. Start-up tries this before serving; when the store
    /// cannot be reached the instance starts unready and [`Syncer::run`] keeps trying.
    pub async fn load_all(&self) -> Result<(), StoreError> {
        self.resync().await.map(|_| ())
    }

    /// Creates the default environments in a store that has none, when this instance
    /// has never seen any (a new deployment, not a store that lost its data).
    async fn seed(&self, envs: &mut Vec<EnvName>) -> Result<(), StoreError> {
        if !envs.is_empty() || !self.snapshots.watch().is_new() || !self.store.deleted_environments().await?.is_empty()
        {
            return Ok(());
        }
        for name in DEFAULT_ENVIRONMENTS {
            let Ok(env) = EnvName::parse(name) else { continue };
            match self.store.create_environment(&env).await {
                Ok(_) | Err(StoreError::EnvironmentExists(_)) => {
                    tracing::info!(%env, "created the default environment");
                }
                // It exists, only its replication is unconfirmed: an empty environment.
                Err(error @ StoreError::NotReplicated { .. }) => {
                    tracing::warn!(%env, %error, "created the default environment");
                }
                Err(error) => return Err(error),
            }
        }
        *envs = self.store.environments().await?;
        Ok(())
    }

    /// Runs followers and the resync loop until `shutdown` flips to true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut followed: HashSet<EnvName> = HashSet::new();
        let mut followers = JoinSet::new();
        let mut interval = tokio::time::interval(self.settings.resync_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut outage = false;
        let mut kept: HashMap<EnvName, (u64, u32)> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = interval.tick() => {}
            }
            let resynced = self.resync().await;
            self.keep(&mut kept).await;
            if resynced.is_ok() {
                self.report_regressions().await;
            }
            match resynced {
                Ok(envs) => {
                    self.snapshots.watch().set_unreachable(None);
                    if outage {
                        tracing::info!(store = self.store.kind(), "store reachable again; snapshots resynced");
                        outage = false;
                    }
                    for env in envs {
                        if followed.insert(env.clone()) {
                            followers.spawn(follow(
                                Arc::clone(&self.store),
                                Arc::clone(&self.snapshots),
                                env,
                                self.settings.follow_block,
                                shutdown.clone(),
                            ));
                        }
                    }
                }
                Err(error) => {
                    self.snapshots.watch().set_unreachable(Some(error.to_string()));
                    if !outage {
                        tracing::warn!(store = self.store.kind(), %error, "store unreachable; serving from the last snapshot");
                        outage = true;
                    }
                }
            }
        }
        followers.shutdown().await;
    }

    /// Writes the high-water marks, and the served state of every environment that
    /// changed since (unless regressed), to the data directory.
    async fn keep(&self, kept: &mut HashMap<EnvName, (u64, u32)>) {
        let mut changed = Vec::new();
        for env in self.snapshots.environments() {
            let Some(snap) = self.snapshots.get(&env) else { continue };
            let version = (snap.revision(), snap.local);
            if self.snapshots.watch().regressed(&env).is_none() && kept.get(&env) != Some(&version) {
                kept.insert(env.clone(), version);
                changed.push((env, snap));
            }
        }
        let watch = Arc::clone(self.snapshots.watch());
        // Copying a large environment out of its snapshot takes milliseconds: off the
        // runtime's threads, like the writing.
        let written = tokio::task::spawn_blocking(move || {
            watch.persist()?;
            for (env, snap) in changed {
                watch.keep_last_good(&env, &snap.to_data())?;
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        if let Ok(Err(error)) = written {
            tracing::error!(%error, "cannot write the high-water marks or the last good snapshots to the data directory");
        }
    }

    /// Compares every environment's revision with the store: reloads those behind, finds
    /// new ones, drops deleted ones and flags those that went backwards.
    async fn resync(&self) -> Result<Vec<EnvName>, StoreError> {
        let mut envs = self.store.environments().await?;
        self.seed(&mut envs).await?;
        let watch = self.snapshots.watch();
        let listed: BTreeSet<&EnvName> = envs.iter().collect();
        let mut missing: BTreeSet<EnvName> = watch.known().into_iter().collect();
        missing.extend(self.snapshots.environments());
        missing.retain(|env| !listed.contains(env));
        if !missing.is_empty() {
            let deleted: HashSet<EnvName> =
                self.store.deleted_environments().await?.into_iter().map(|(env, _)| env).collect();
            for env in missing {
                if deleted.contains(&env) {
                    tracing::info!(%env, "environment deleted; no longer served");
                    self.snapshots.remove(&env);
                    watch.forget(&env);
                } else {
                    flag_regressed(&self.snapshots, &env, None);
                }
            }
        }
        for env in &envs {
            // What this instance had seen is taken before the store is read: a change
            // landing in between must not look like the store going backwards.
            let seen = seen(&self.snapshots, env);
            let stored = self.store.revision(env).await?;
            check(&*self.store, &self.snapshots, env, stored, seen).await?;
        }
        if !self.snapshots.is_ready() {
            self.snapshots.mark_ready();
        }
        Ok(envs)
    }
}

/// Flags `env` regressed (logging at ERROR the first time). An instance that holds no
/// snapshot of it (it restarted after the store went backwards) serves the last good
/// state it kept in its data directory.
pub fn flag_regressed(snapshots: &Snapshots, env: &EnvName, stored: Option<u64>) {
    let watch = snapshots.watch();
    if snapshots.get(env).is_none()
        && let Some(data) = watch.last_good(env)
    {
        tracing::warn!(%env, revision = data.revision, "serving the last good snapshot kept in the data directory");
        snapshots.replace(env, data);
    }
    if watch.set_regressed(env, stored) {
        let seen = watch.mark(env);
        match stored {
            Some(stored) => tracing::error!(
                %env, stored, seen,
                "the store went backwards: it holds an older state than this instance has served. Keeping the last good snapshot and refusing writes; reconcile with `cohort store reseed`"
            ),
            None => tracing::error!(
                %env, seen,
                "the environment vanished from the store (data loss?). Keeping the last good snapshot and refusing writes; reconcile with `cohort store reseed`"
            ),
        }
    }
}

/// Brings `env` in step with a store at revision `stored`, unless the store is behind
/// what this instance has seen.
async fn check(
    store: &dyn Store,
    snapshots: &Snapshots,
    env: &EnvName,
    stored: u64,
    seen: u64,
) -> Result<(), StoreError> {
    let watch = snapshots.watch();
    if let Some(regression) = watch.regressed(env) {
        // Only a reseed above what this instance had seen makes the store trustworthy
        // again; writes on top of the older data do not.
        let data = store.load(env).await?;
        if data.reseeded_at > regression.seen && data.revision >= seen {
            tracing::warn!(%env, revision = data.revision, "the store was reseeded; serving it again");
            watch.clear_regressed(env);
            adopt(snapshots, env, data);
        }
        return Ok(());
    }
    if stored < seen && watch.knows(env) {
        // Deleted on purpose while it was being listed, or gone backwards?
        if store.deleted_environments().await?.iter().any(|(deleted, _)| deleted == env) {
            tracing::info!(%env, "environment deleted; no longer served");
            snapshots.remove(env);
            watch.forget(env);
            return Ok(());
        }
        // A reseed from this instance may have landed since `stored` was read: it clears
        // the flag only after the store took it, so a second reading sees it, and the
        // instance is not flagged again over its own reseed (with a mark that reseed
        // could then never be above).
        let again = store.revision(env).await?;
        if again < self::seen(snapshots, env) {
            flag_regressed(snapshots, env, Some(again));
        }
        return Ok(());
    }
    let current = snapshots.revision(env);
    if stored > current && snapshots.get(env).is_some() && catch_up(store, snapshots, env, current, stored).await? {
        return Ok(());
    }
    if stored != snapshots.revision(env) || snapshots.get(env).is_none() {
        reload(store, snapshots, env).await?;
    }
    Ok(())
}

/// Applies the changes after `current` from the store's change log, so that an instance
/// a few changes behind (its follower or a writer not there yet) catches up the way
/// subscribers expect — one `change` event each — rather than with a whole reloaded
/// snapshot. False when the log cannot bring it to `stored` (trimmed, a gap): reload.
async fn catch_up(
    store: &dyn Store,
    snapshots: &Snapshots,
    env: &EnvName,
    current: u64,
    stored: u64,
) -> Result<bool, StoreError> {
    for change in store.changes_after(env, current, Duration::ZERO).await? {
        if snapshots.apply(env, &change) == Applied::Gap {
            return Ok(false);
        }
    }
    Ok(snapshots.revision(env) >= stored)
}

/// The highest revision of `env` this instance has served (or a previous run of it).
fn seen(snapshots: &Snapshots, env: &EnvName) -> u64 {
    snapshots.watch().mark(env).max(snapshots.revision(env))
}

fn adopt(snapshots: &Snapshots, env: &EnvName, data: EnvData) {
    let revision = data.revision;
    if snapshots.replace(env, data) {
        tracing::debug!(%env, revision, "environment reloaded");
    }
}

/// Loads `env` from the store and swaps it in.
pub async fn reload(store: &dyn Store, snapshots: &Snapshots, env: &EnvName) -> Result<(), StoreError> {
    if snapshots.watch().regressed(env).is_some() {
        return Ok(());
    }
    let seen = seen(snapshots, env);
    let data = match store.load(env).await {
        Err(StoreError::EnvironmentNotFound(_)) if snapshots.watch().knows(env) => {
            flag_regressed(snapshots, env, None);
            return Ok(());
        }
        other => other?,
    };
    if data.revision < seen {
        flag_regressed(snapshots, env, Some(data.revision));
        return Ok(());
    }
    adopt(snapshots, env, data);
    Ok(())
}

/// Follows one environment's change stream.
async fn follow(
    store: Arc<dyn Store>,
    snapshots: Arc<Snapshots>,
    env: EnvName,
    block: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if snapshots.watch().regressed(&env).is_some() {
            // Changes written on top of older data are not this environment's history.
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(block) => continue,
            }
        }
        let after = snapshots.revision(&env);
        let read = tokio::select! {
            _ = shutdown.changed() => return,
            read = store.changes_after(&env, after, block) => read,
        };
        match read {
            Ok(changes) => {
                backoff = Duration::from_millis(100);
                for change in &changes {
                    if snapshots.apply(&env, change) == Applied::Gap {
                        tracing::debug!(%env, after, revision = change.revision, "gap in the change stream; reloading");
                        if let Err(error) = reload(&*store, &snapshots, &env).await {
                            tracing::debug!(%env, %error, "reload failed");
                        }
                        break;
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%env, %error, "change stream read failed; retrying");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}
