//! Keeps this instance's snapshots in step with the store: an initial load, one
//! follower per environment reading the change stream (blocking read, resuming from the
//! last applied revision), and a periodic revision check that heals any gap and finds
//! environments created elsewhere. A store outage only pauses them: evaluation goes on
//! from the snapshot, and they catch up by themselves when the store returns.

use crate::snapshots::{Applied, Snapshots};
use crate::store::{EnvName, Store, StoreError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

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
}

impl Syncer {
    /// A syncer over `store` feeding `snapshots`.
    pub fn new(store: Arc<dyn Store>, snapshots: Arc<Snapshots>, settings: SyncSettings) -> Self {
        Syncer { store, snapshots, settings }
    }

    /// Loads every environment once. Start-up waits for this before serving `/readyz`.
    pub async fn load_all(&self) -> Result<(), StoreError> {
        for env in self.store.environments().await? {
            reload(&*self.store, &self.snapshots, &env).await?;
        }
        self.snapshots.mark_ready();
        Ok(())
    }

    /// Runs followers and the resync loop until `shutdown` flips to true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut followed: HashSet<EnvName> = HashSet::new();
        let mut followers = JoinSet::new();
        let mut interval = tokio::time::interval(self.settings.resync_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut outage = false;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = interval.tick() => {}
            }
            match self.resync().await {
                Ok(envs) => {
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
                    if !outage {
                        tracing::warn!(store = self.store.kind(), %error, "store unreachable; serving from the last snapshot");
                        outage = true;
                    }
                }
            }
        }
        followers.shutdown().await;
    }

    /// Compares every environment's revision with the store and reloads those behind.
    async fn resync(&self) -> Result<Vec<EnvName>, StoreError> {
        let envs = self.store.environments().await?;
        for env in &envs {
            let stored = self.store.revision(env).await?;
            if stored != self.snapshots.revision(env) || self.snapshots.get(env).is_none() {
                reload(&*self.store, &self.snapshots, env).await?;
            }
        }
        if !self.snapshots.is_ready() {
            self.snapshots.mark_ready();
        }
        Ok(envs)
    }
}

/// Loads `env` from the store and swaps it in.
pub async fn reload(store: &dyn Store, snapshots: &Snapshots, env: &EnvName) -> Result<(), StoreError> {
    let data = store.load(env).await?;
    let revision = data.revision;
    if snapshots.replace(env, data) {
        tracing::debug!(%env, revision, "environment reloaded");
    }
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
