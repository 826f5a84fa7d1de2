//! Environments exist on purpose: created explicitly (admin scope), listed, deleted only
//! when empty. A write, kill or read in an environment that does not exist is refused
//! with the nearest existing name, so a typo (`prodution`) never creates one.
//!
//! Also the operator's reconciliation of a store that went backwards
//! ([`Environments::reseed`]): this instance's served snapshot is written back above
//! every revision it has seen, with one audit entry.

use crate::releases::{Actor, ReleaseError};
use crate::snapshots::{EnvSnapshot, Snapshots};
use crate::store::{Action, EnvName, Store, StoreError, WriteMeta};
use serde::Serialize;
use std::sync::Arc;

/// One environment as `GET /v1/envs` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnvSummary {
    pub environment: String,
    pub revision: u64,
    pub releases: usize,
    pub kill_all: bool,
    /// Why writes are refused, when the store went backwards for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub regressed: Option<crate::store_watch::Regression>,
}

/// What `cohort store reseed` did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReseedReport {
    pub environment: String,
    /// The revision the store now holds the snapshot at.
    pub revision: u64,
    /// The revision the store was at before.
    pub previous: u64,
    /// Releases written.
    pub releases: usize,
}

/// The closest of `names` to `wanted` (a likely typo), if any is close.
pub fn nearest<'a>(wanted: &str, names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    names
        .into_iter()
        .map(|name| (strsim::levenshtein(wanted, name), name))
        .filter(|(distance, name)| *distance <= (name.len().max(wanted.len()) / 3).max(2))
        .min()
        .map(|(_, name)| name.to_owned())
}

/// Environment operations of one instance.
#[derive(Clone)]
pub struct Environments {
    store: Arc<dyn Store>,
    snapshots: Arc<Snapshots>,
}

impl Environments {
    /// Operations over `store`, keeping `snapshots` current.
    pub fn new(store: Arc<dyn Store>, snapshots: Arc<Snapshots>) -> Self {
        Environments { store, snapshots }
    }

    /// Every environment this instance serves.
    pub fn list(&self) -> Vec<EnvSummary> {
        let mut envs = self.snapshots.environments();
        envs.sort();
        envs.iter().filter_map(|env| self.snapshots.get(env).map(|snap| summary(&self.snapshots, env, &snap))).collect()
    }

    /// Creates `env`.
    pub async fn create(&self, env: &EnvName, actor: &Actor) -> Result<EnvSummary, ReleaseError> {
        let revision = self.store.create_environment(env).await?;
        self.snapshots.create(env, revision);
        tracing::info!(%env, revision, %actor, action = "env-create", "environment created");
        let snap = self.snapshots.get(env).unwrap_or_default();
        Ok(summary(&self.snapshots, env, &snap))
    }

    /// Deletes `env`, which must hold no releases.
    pub async fn delete(&self, env: &EnvName, actor: &Actor) -> Result<u64, ReleaseError> {
        let revision = self.store.delete_environment(env).await.map_err(|e| not_found(&self.snapshots, e))?;
        self.snapshots.remove(env);
        self.snapshots.watch().forget(env);
        tracing::info!(%env, revision, %actor, action = "env-delete", "environment deleted");
        Ok(revision)
    }

    /// Writes this instance's snapshot of `env` back to the store above every revision
    /// it has seen (and above the store's), clearing the regression: the operator's
    /// answer to a store that went backwards. Kills this instance holds but the store
    /// never took are part of the snapshot, so they are written too.
    pub async fn reseed(
        &self,
        env: &EnvName,
        actor: &Actor,
        reason: Option<String>,
        force: bool,
    ) -> Result<ReseedReport, ReleaseError> {
        let snap = self.snapshots.get(env).ok_or_else(|| env_not_found(&self.snapshots, env))?;
        let served = self.snapshots.watch().mark(env).max(snap.revision());
        if !force {
            // Another instance that served more would have its revisions (kills among
            // them) overwritten by this instance's older state: refused, naming it.
            let reports = self.store.seen_reports(env).await?;
            if let Some((instance, seen)) = reports.into_iter().max_by_key(|(_, seen)| *seen)
                && seen > served
            {
                return Err(ReleaseError::ReseedBehind { env: env.to_string(), served, instance, seen });
            }
        }
        let previous = match self.store.revision(env).await {
            Ok(revision) => revision,
            Err(StoreError::EnvironmentNotFound(_)) => 0,
            Err(e) => return Err(e.into()),
        };
        let revision = previous.max(served) + 1;
        let mut data = snap.to_data();
        data.revision = revision;
        data.reseeded_at = revision;
        for release in &mut data.releases {
            release.revision = revision;
        }
        let releases = data.releases.len();
        let meta = WriteMeta::now(&actor.0, Action::StoreReseed, reason);
        self.store.reseed(env, &data, &meta).await?;
        self.snapshots.watch().clear_regressed(env);
        self.snapshots.replace(env, data);
        self.snapshots.settle_all(env);
        tracing::warn!(%env, revision, previous, releases, %actor, "store reseeded from this instance's snapshot");
        Ok(ReseedReport { environment: env.to_string(), revision, previous, releases })
    }
}

fn summary(snapshots: &Snapshots, env: &EnvName, snap: &EnvSnapshot) -> EnvSummary {
    EnvSummary {
        environment: env.to_string(),
        revision: snap.revision(),
        releases: snap.snapshot.len(),
        kill_all: snap.snapshot.kill_all(),
        regressed: snapshots.watch().regressed(env),
    }
}

/// The error for an environment this instance does not hold, naming the nearest one.
pub fn env_not_found(snapshots: &Snapshots, env: &EnvName) -> ReleaseError {
    let names = snapshots.environments();
    ReleaseError::EnvironmentNotFound {
        env: env.to_string(),
        nearest: nearest(env.as_str(), names.iter().map(EnvName::as_str)),
    }
}

fn not_found(snapshots: &Snapshots, error: StoreError) -> ReleaseError {
    match error {
        StoreError::EnvironmentNotFound(name) => match EnvName::parse(&name) {
            Ok(env) => env_not_found(snapshots, &env),
            Err(_) => ReleaseError::EnvironmentNotFound { env: name, nearest: None },
        },
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_name_is_a_likely_typo_or_nothing() {
        let names = ["production", "staging"];
        assert_eq!(nearest("prodution", names).as_deref(), Some("production"));
        assert_eq!(nearest("stagin", names).as_deref(), Some("staging"));
        assert_eq!(nearest("qa", names), None);
    }
}
