//! The journal of kills this instance served while its store could not take them (down,
//! or regressed): the on-call engineer's one lever keeps working exactly when things go
//! wrong. A kill or kill-all is laid over the served snapshot at once
//! ([`crate::snapshots::Snapshots::lay_kill`]), answered 202 `"persisted": false`, and
//! recorded here, one entry per target, in `pending-kills.json` in the data directory
//! (temp file + fsync + rename), so a restarted instance still serves it. When the store
//! is usable again each entry is written through the ordinary domain operation
//! (idempotent: a kill another instance already wrote is not written twice) and then
//! dropped.
//!
//! Only kills are journalled. An unkill served by one instance alone could not be ordered
//! against a kill another instance acknowledged meanwhile — a kill of a release the store
//! already holds killed writes nothing, so it leaves no trace to order by — and replaying
//! it could undo that acknowledged kill. So an unkill waits for the store; while the store
//! is away it only cancels a kill this instance journalled and has not written. The entry
//! then stays as a cancellation (`on: false`): nothing to write, served as live until the
//! store answers, and then replaced by what the store holds.

use crate::releases::{Actor, EnvView, ReleaseError, ReleaseView, Releases};
use crate::snapshots::{KillState, KillTarget};
use crate::store::durable::write_atomically;
use crate::store::{EnvName, StoreError};
use crate::store_watch::WatchError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The journal's file inside the data directory.
pub const PENDING_FILE: &str = "pending-kills.json";

/// One kill served but not yet stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingKill {
    /// Where.
    pub env: EnvName,
    /// A release or the whole environment.
    pub target: KillTarget,
    /// On or off, and why.
    pub state: KillState,
    /// Who asked (the audit log's actor when it is written).
    pub actor: String,
    /// When it was asked, ms since the epoch.
    pub time_ms: u64,
    /// Whether this instance served the target killed already before it laid this kill
    /// over it (the first journalled kill's answer, when one replaced another): an unkill
    /// may cancel the journalled kill only when it was live. Absent in older journals.
    #[serde(default)]
    pub killed_before: bool,
}

/// The journal.
#[derive(Debug, Default)]
pub struct PendingKills {
    path: Option<PathBuf>,
    entries: Mutex<Vec<PendingKill>>,
}

impl PendingKills {
    /// A journal kept in memory only (tests, tools).
    pub fn in_memory() -> Self {
        PendingKills::default()
    }

    /// The journal in `data_dir`, with the entries a previous run left.
    pub fn open(data_dir: &Path) -> Result<Self, WatchError> {
        let path = data_dir.join(PENDING_FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| WatchError { path: path.clone(), message: e.to_string() })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(WatchError { path, message: e.to_string() }),
        };
        Ok(PendingKills { path: Some(path), entries: Mutex::new(entries) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PendingKill>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every pending kill, oldest first.
    pub fn list(&self) -> Vec<PendingKill> {
        self.lock().clone()
    }

    /// Records `kill`, replacing an earlier one for the same target, and makes it
    /// durable before returning.
    pub fn record(&self, kill: PendingKill) -> std::io::Result<()> {
        let mut entries = self.lock();
        entries.retain(|k| !(k.env == kill.env && k.target == kill.target));
        entries.push(kill);
        self.save(&entries)
    }

    /// Drops `kill` once the store has it, unless a newer intent replaced it meanwhile.
    pub fn remove(&self, kill: &PendingKill) -> std::io::Result<()> {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|k| k != kill);
        if entries.len() == before { Ok(()) } else { self.save(&entries) }
    }

    /// Drops every entry of `env` (the store took the served state whole: a reseed).
    pub fn remove_env(&self, env: &EnvName) -> std::io::Result<()> {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|k| &k.env != env);
        if entries.len() == before { Ok(()) } else { self.save(&entries) }
    }

    fn save(&self, entries: &[PendingKill]) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let bytes = serde_json::to_vec_pretty(entries).map_err(std::io::Error::other)?;
        write_atomically(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(key: &str, on: bool, time_ms: u64) -> PendingKill {
        PendingKill {
            env: EnvName::parse("production").expect("env"),
            target: KillTarget::Release(key.to_owned()),
            state: KillState { on, reason: Some("5xx".into()) },
            actor: "oncall".into(),
            time_ms,
            killed_before: false,
        }
    }

    #[test]
    fn the_latest_intent_per_target_survives_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let journal = PendingKills::open(dir.path()).expect("opens");
        journal.record(kill("checkout", true, 1)).expect("records");
        journal.record(kill("search", true, 2)).expect("records");
        journal.record(kill("checkout", false, 3)).expect("records");

        let reopened = PendingKills::open(dir.path()).expect("reopens");
        assert_eq!(reopened.list(), vec![kill("search", true, 2), kill("checkout", false, 3)]);
        // An entry superseded meanwhile is not dropped by the older one's write.
        reopened.remove(&kill("checkout", true, 1)).expect("removes");
        assert_eq!(reopened.list().len(), 2);
        reopened.remove(&kill("checkout", false, 3)).expect("removes");
        assert_eq!(reopened.list(), vec![kill("search", true, 2)]);
    }
}

/// A kill's answer: what is served now, and whether the store has it (`false`: served
/// by this instance and journalled, written when the store is usable again; 202).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KillAnswer<T> {
    #[serde(flatten)]
    pub view: T,
    pub persisted: bool,
}

/// Whether a failed kill should be served locally: the store cannot take it now — or
/// took it without the replicas asked for (`NotReplicated`: a failover could lose it,
/// so it is served and journalled like one the store did not take; the replay finds it
/// written and settles it, and a failover that lost it shows as a regression).
pub(crate) fn store_cannot_take(error: &ReleaseError) -> bool {
    matches!(
        error,
        ReleaseError::Store(
            StoreError::Unavailable(_)
                | StoreError::Unconfirmed(_)
                | StoreError::Regressed { .. }
                | StoreError::NotReplicated { .. }
        )
    )
}

/// The journal's order, held while a kill switch is written through the store when this
/// instance journalled an earlier intent for the same target (see
/// [`Releases::order_switch`]); empty, and lock-free, otherwise.
pub(crate) struct SwitchOrder<'a> {
    guard: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl Releases {
    /// Turns a release's kill switch on or off — through the store when it can take
    /// it, else at once on this instance and journalled (see the module doc).
    pub async fn kill_release(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        on: bool,
        reason: Option<String>,
    ) -> Result<KillAnswer<ReleaseView>, ReleaseError> {
        let target = KillTarget::Release(key.to_owned());
        let order = self.order_switch(env, &target).await;
        match self.set_killed(env, actor, key, on, reason.clone()).await {
            Ok(view) => {
                self.switched(order, env, &target).await;
                Ok(KillAnswer { view, persisted: true })
            }
            Err(error) if on && store_cannot_take(&error) => {
                let _order = self.hold(order).await;
                let served = self.require_env(env)?;
                let release = served.snapshot.get(key).ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
                let reason = reason.or_else(|| release.release().kill_reason.clone());
                self.serve_locally(env, actor, target, KillState { on, reason }, &error);
                let view = self.get(env, key)?;
                Ok(KillAnswer { view, persisted: false })
            }
            Err(error) if store_cannot_take(&error) => {
                self.unkill_without_store(order, env, &target, error).await?;
                Ok(KillAnswer { view: self.get(env, key)?, persisted: false })
            }
            Err(error) => Err(error),
        }
    }

    /// The fallback of an environment kill the store could not take (the caller,
    /// [`crate::ramp::Ramps::kill_environment`], pauses ramps when it is written).
    pub(crate) async fn kill_environment_locally(
        &self,
        order: SwitchOrder<'_>,
        env: &EnvName,
        actor: &Actor,
        on: bool,
        reason: Option<String>,
        why: ReleaseError,
    ) -> Result<KillAnswer<EnvView>, ReleaseError> {
        if !on {
            self.unkill_without_store(order, env, &KillTarget::Environment, why).await?;
            return Ok(KillAnswer { view: self.environment(env)?, persisted: false });
        }
        let _order = self.hold(order).await;
        let served = self.require_env(env)?;
        let reason = reason.or_else(|| served.kill_reason.clone());
        self.serve_locally(env, actor, KillTarget::Environment, KillState { on, reason }, &why);
        Ok(KillAnswer { view: self.environment(env)?, persisted: false })
    }

    /// An unkill of `target` the store could not take (`why`). It is never served on
    /// its own: it only cancels a kill this instance journalled and has not written —
    /// the typo'd kill an engineer takes back during the outage — when nothing was
    /// killed before it. The journal entry then becomes a cancellation: nothing to write,
    /// served as live until the store answers again, and then replaced by whatever the
    /// store holds (see [`Self::replay_pending`]). Otherwise it is refused
    /// ([`ReleaseError::UnkillNeedsStore`]) and the journal and what is served are left
    /// as they are. An unkill the store holds but could not confirm on its replicas
    /// (`NotReplicated`) supersedes the journalled kill like one it confirmed, and is
    /// answered with that error; one it did not answer (`Unconfirmed`) may have landed, and,
    /// with no kill of this instance's own to cancel, is answered with that error too.
    async fn unkill_without_store(
        &self,
        order: SwitchOrder<'_>,
        env: &EnvName,
        target: &KillTarget,
        why: ReleaseError,
    ) -> Result<(), ReleaseError> {
        if matches!(why, ReleaseError::Store(StoreError::NotReplicated { .. })) {
            self.switched(order, env, target).await;
            return Err(why);
        }
        let _order = self.hold(order).await;
        let journalled = self.pending().list().into_iter().find(|k| &k.env == env && &k.target == target);
        let kill = match journalled {
            Some(entry) if !entry.state.on => return Ok(()), // cancelled already
            Some(kill) if !kill.killed_before => kill,
            // Nothing this instance may take back on its own.
            _ => {
                return Err(match why {
                    ReleaseError::Store(StoreError::Unconfirmed(_)) => why,
                    ReleaseError::Store(source) => {
                        ReleaseError::UnkillNeedsStore { target: describe(env, target), source }
                    }
                    other => other,
                });
            }
        };
        tracing::warn!(
            %env, ?target, reason = %why,
            "an unkill cancels the kill this instance journalled and had not written; what the store holds is served again when it answers"
        );
        let cancelled = PendingKill { state: KillState { on: false, reason: None }, ..kill };
        if let Err(error) = self.pending().record(cancelled.clone()) {
            tracing::error!(%env, %error, "cannot journal a cancelled kill in the data directory; a restart serves the kill until the store answers");
        }
        self.snapshots().lay_kill(env, target, cancelled.state);
        Ok(())
    }

    /// Call before writing `target`'s kill switch through the store. When this instance
    /// journalled an earlier kill or unkill of `target` that the store does not have yet,
    /// the journal's order is held until [`Self::switched`]: the replay cannot write that
    /// older intent after this newer one (an unkill answered 200, then undone by the
    /// replay of the kill before it).
    pub(crate) async fn order_switch(&self, env: &EnvName, target: &KillTarget) -> SwitchOrder<'_> {
        let earlier = self.pending().list().iter().any(|k| &k.env == env && &k.target == target);
        SwitchOrder { guard: if earlier { Some(self.pending_order.lock().await) } else { None } }
    }

    /// The store took `target`'s switch (or already held it): what this instance had
    /// journalled for `target` before is superseded, dropped and no longer laid over
    /// the store's state.
    pub(crate) async fn switched(&self, order: SwitchOrder<'_>, env: &EnvName, target: &KillTarget) {
        if order.guard.is_none() {
            return;
        }
        for kill in self.pending().list().into_iter().filter(|k| &k.env == env && &k.target == target) {
            tracing::info!(%env, ?target, on = kill.state.on, "a journalled kill switch is superseded by a newer one the store took");
            self.settle_pending(&kill).await;
        }
    }

    /// The journal's order: the one `order` holds, or taken now.
    async fn hold<'a>(&'a self, order: SwitchOrder<'a>) -> tokio::sync::MutexGuard<'a, ()> {
        match order.guard {
            Some(guard) => guard,
            None => self.pending_order.lock().await,
        }
    }

    fn serve_locally(&self, env: &EnvName, actor: &Actor, target: KillTarget, state: KillState, why: &ReleaseError) {
        let journalled = self.pending().list().into_iter().find(|k| &k.env == env && k.target == target);
        let killed_before = journalled.map_or_else(
            || {
                let served = self.snapshots().get(env).unwrap_or_default();
                match &target {
                    KillTarget::Release(key) => served.snapshot.get(key).is_some_and(|r| r.release().killed),
                    KillTarget::Environment => served.snapshot.kill_all(),
                }
            },
            |k| k.killed_before,
        );
        let kill = PendingKill {
            killed_before,
            env: env.clone(),
            target: target.clone(),
            state: state.clone(),
            actor: actor.0.clone(),
            time_ms: crate::ramp::now_ms(),
        };
        if let Err(error) = self.pending().record(kill) {
            // Still served: losing it at a restart is better than not serving it now.
            tracing::error!(%env, %error, "cannot journal a pending kill in the data directory; it is served but a restart forgets it");
        }
        self.snapshots().lay_kill(env, &target, state.clone());
        tracing::warn!(
            %env, ?target, on = state.on, %actor, reason = %why,
            "the store cannot take this kill; served by this instance now and written when the store is usable"
        );
    }

    /// Drops `kill` from the journal and stops laying it over the store's state, which
    /// is served again as stored (the kill may have been dropped, or found written).
    async fn settle_pending(&self, kill: &PendingKill) {
        let loaded = self.store().load(&kill.env).await;
        self.settle_pending_with(kill, loaded);
    }

    /// [`Self::settle_pending`] with the store's state as just loaded.
    fn settle_pending_with(&self, kill: &PendingKill, loaded: Result<crate::store::EnvData, StoreError>) {
        self.snapshots().settle(&kill.env, &kill.target);
        if let Err(error) = self.pending().remove(kill) {
            tracing::error!(env = %kill.env, %error, "cannot update the journal of pending kills");
        }
        match loaded {
            Ok(data) if data.revision >= self.snapshots().revision(&kill.env) => {
                self.snapshots().refresh(&kill.env, data);
            }
            // Newer data arrives through the follower; a failed read through the resync.
            Ok(_) => {}
            Err(error) => tracing::debug!(env = %kill.env, %error, "reload after a settled kill failed"),
        }
    }

    /// Writes every pending kill the store can take now, through the ordinary domain
    /// operations (idempotent: one another instance already wrote is not written again),
    /// and stops laying it over the store's state. Returns how many were settled.
    pub async fn replay_pending(&self) -> usize {
        let mut settled = 0;
        for kill in self.pending().list() {
            if self.snapshots().watch().regressed(&kill.env).is_some() {
                continue;
            }
            let _order = self.pending_order.lock().await;
            if !self.pending().list().contains(&kill) {
                continue; // a newer kill or unkill replaced it; that one is written instead
            }
            if !kill.state.on {
                // A cancelled kill (or an unkill journalled by an earlier version, which
                // cannot be ordered against kills other instances took meanwhile): nothing
                // is written. Once the store answers, what it holds is served.
                let loaded = self.store().load(&kill.env).await;
                if loaded.is_err() {
                    continue;
                }
                tracing::info!(env = %kill.env, target = ?kill.target, "a cancelled kill is settled: what the store holds is served");
                self.settle_pending_with(&kill, loaded);
                settled += 1;
                continue;
            }
            let actor = Actor(kill.actor.clone());
            let reason = kill.state.reason.clone();
            let written = match &kill.target {
                KillTarget::Release(key) => {
                    self.set_killed(&kill.env, &actor, key, kill.state.on, reason).await.map(|_| ())
                }
                KillTarget::Environment => {
                    self.set_kill_all(&kill.env, &actor, kill.state.on, reason).await.map(|_| ())
                }
            };
            match written {
                Ok(()) => {}
                Err(ReleaseError::Store(StoreError::NotFound(_)) | ReleaseError::EnvironmentNotFound { .. }) => {
                    tracing::warn!(env = %kill.env, target = ?kill.target, "a pending kill's release or environment is gone; dropped");
                }
                Err(error) => {
                    tracing::debug!(env = %kill.env, %error, "pending kill not written yet");
                    continue;
                }
            }
            self.settle_pending(&kill).await;
            tracing::info!(env = %kill.env, target = ?kill.target, on = kill.state.on, "pending kill written to the store");
            settled += 1;
        }
        settled
    }
}

/// `target` as an error message names it.
fn describe(env: &EnvName, target: &KillTarget) -> String {
    match target {
        KillTarget::Release(key) => format!("`{key}`"),
        KillTarget::Environment => format!("environment `{env}`"),
    }
}

/// Writes pending kills whenever the store can take them, until `shutdown`.
pub async fn run(releases: Releases, every: std::time::Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = interval.tick() => {}
        }
        if !releases.pending().list().is_empty() {
            releases.replay_pending().await;
        }
    }
}
