//! The ramp driver loop: every instance runs it; the one holding the store's lease
//! drives. Each tick walks the running ramps of the served snapshot and lets
//! [`super::Ramps::drive`] decide and apply (compare-and-set) their transitions.

use super::{DRIVER_ACTOR, Ramps, now_ms};
use crate::snapshots::Snapshots;
use crate::store::Store;
use cohort_sdk::RampState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The lease's name in the store.
pub const LEASE: &str = "ramp-driver";

/// The driver of one instance.
pub struct Driver {
    ramps: Ramps,
    store: Arc<dyn Store>,
    snapshots: Arc<Snapshots>,
    holder: String,
    tick: Duration,
    lease: Duration,
}

impl Driver {
    /// A driver identified as `holder` in the lease.
    pub fn new(
        ramps: Ramps,
        store: Arc<dyn Store>,
        snapshots: Arc<Snapshots>,
        holder: String,
        tick: Duration,
        lease: Duration,
    ) -> Self {
        Driver { ramps, store, snapshots, holder, tick, lease }
    }

    /// Ticks until `shutdown` flips.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut driving = false;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = interval.tick() => {}
            }
            match self.store.try_lease(LEASE, &self.holder, self.lease).await {
                Ok(true) => {
                    if !driving {
                        tracing::info!(holder = %self.holder, "driving ramps");
                        driving = true;
                    }
                }
                Ok(false) => {
                    driving = false;
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "ramp lease unavailable");
                    driving = false;
                    continue;
                }
            }
            self.tick_once().await;
        }
    }

    /// One pass over every running ramp.
    pub async fn tick_once(&self) {
        for env in self.snapshots.environments() {
            if let Err(error) = self.ramps.fleets().reconcile(&env).await {
                tracing::warn!(%env, %error, "fleet reconcile failed; retrying next tick");
            }
            let Some(snapshot) = self.snapshots.get(&env) else { continue };
            for release in snapshot.snapshot.iter() {
                let running = release.release().ramp.as_ref().is_some_and(|r| r.state == RampState::Running);
                if !running {
                    continue;
                }
                let revision = snapshot.revision_of(release.key());
                // Nothing advances under a kill. A ramp still running under one (a crash
                // between kill-all and its pauses, a kill-all by another instance) is
                // paused here instead of driven.
                if snapshot.snapshot.kill_all() || release.release().killed {
                    if let Err(error) = self.ramps.freeze(&env, DRIVER_ACTOR, release.key(), Some(revision)).await {
                        tracing::warn!(%env, release = %release.key(), %error, "pausing a killed ramp failed; retrying next tick");
                    }
                    continue;
                }
                if let Err(error) = self.ramps.drive(&env, release.key(), revision, now_ms()).await {
                    tracing::warn!(%env, release = %release.key(), %error, "ramp step failed; retrying next tick");
                }
            }
        }
    }
}
