//! Where release configuration lives. One [`Store`] trait, two implementations that pass
//! the same test suite: [`embedded`] (one JSON file, the default) and [`redis`]
//! (production, many instances).
//!
//! Every write is a compare-and-set that bumps the environment revision and records a
//! [`Change`]; instances follow the changes to keep their in-memory snapshots current.

mod apply;
mod audit;
pub mod durable;
pub mod embedded;
mod nodes;
mod outcomes;
pub mod redis;
mod revocations;
mod sdks;

use async_trait::async_trait;
use cohort_sdk::Release;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use audit::{Action, AuditEntry, AuditQuery, WriteMeta};
pub use embedded::EmbeddedStore;
pub use nodes::NodeReport;
pub use outcomes::{BUCKET_MS, Bucket, BucketCounts, MAX_BUCKETS_PER_READ, OUTCOME_TTL_SECS, OutcomeCount};
pub use redis::RedisStore;
pub use revocations::Revocation;
pub(crate) use revocations::insert as revocations_insert;
pub use sdks::SdkAck;

/// A validated environment name (`production`, `staging-eu`): 1 to 64 of `a-z 0-9 - _`.
/// Kept narrow because it is embedded in Redis keys (inside a `{hash tag}`) and URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    /// Validates `name`.
    pub fn parse(name: &str) -> Result<Self, InvalidEnvName> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok { Ok(EnvName(name.to_owned())) } else { Err(InvalidEnvName(name.to_owned())) }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EnvName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for EnvName {
    type Error = InvalidEnvName;
    fn try_from(s: String) -> Result<Self, InvalidEnvName> {
        EnvName::parse(&s)
    }
}

impl From<EnvName> for String {
    fn from(e: EnvName) -> String {
        e.0
    }
}

/// An environment name that is not one.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a valid environment name: 1 to 64 of lowercase letters, digits, `-`, `_`")]
pub struct InvalidEnvName(pub String);

/// A release and the revision it was last written at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRelease {
    /// The environment revision of the release's last write (its `ETag`).
    pub revision: u64,
    /// The configuration.
    pub release: Release,
}

/// Everything stored for one environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvData {
    /// Bumped by every write in the environment.
    pub revision: u64,
    /// The environment's kill switch.
    #[serde(default)]
    pub kill_all: bool,
    /// Why it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_reason: Option<String>,
    /// Releases in key order.
    #[serde(default)]
    pub releases: Vec<StoredRelease>,
    /// The revision of the last `cohort store reseed` (0: never): instances that found
    /// this environment regressed trust it again only after a reseed above what they saw.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reseeded_at: u64,
    /// Token revocations in force, in key order ([`Revocation::key`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocations: Vec<Revocation>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One compare-and-set write. Releases arrive validated (compiled) by the domain layer.
#[derive(Debug, Clone)]
pub enum Write {
    /// Create; fails with [`StoreError::AlreadyExists`] if the key is taken.
    Create(Release),
    /// Replace; fails with [`StoreError::RevisionMismatch`] unless the stored revision
    /// is `expected`.
    Update { release: Release, expected: u64 },
    /// Remove, optionally only at revision `expected`.
    Delete { key: String, expected: Option<u64> },
    /// Set the environment's kill switch.
    KillAll { on: bool, reason: Option<String> },
    /// Revoke a token or a subject (replacing an earlier revocation of the same one).
    Revoke(Revocation),
}

/// What a write changed, as followers see it. `revision` is the new environment
/// revision (and, for an upsert, the release's revision).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The environment revision after this change.
    pub revision: u64,
    /// What changed.
    #[serde(flatten)]
    pub kind: ChangeKind,
}

/// The kinds of change.
// Changes are rare and short-lived; boxing the release would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeKind {
    /// A release was created or replaced.
    Upsert { release: Release },
    /// A release was removed.
    Delete { key: String },
    /// The environment kill switch was set.
    KillAll { on: bool, reason: Option<String> },
    /// A token or subject was revoked. Event streams pass it on without the revocation
    /// itself (SDKs only move their revision on).
    Revoke { revocation: Revocation },
}

/// Store failures. The HTTP layer maps each to a status in one place.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Create of an existing key.
    #[error("release `{0}` already exists")]
    AlreadyExists(String),
    /// Update/delete of a missing key.
    #[error("release `{0}` does not exist")]
    NotFound(String),
    /// Compare-and-set lost.
    #[error("release `{key}` is at revision {current}, not {expected}")]
    RevisionMismatch { key: String, expected: u64, current: u64 },
    /// The backing store cannot be reached; nothing was written.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but the store did not answer (timed out, or the connection
    /// dropped): it may or may not have been applied.
    #[error("the store did not confirm the write: {0}")]
    Unconfirmed(String),
    /// Stored data that cannot be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The environment was never created (or was deleted).
    #[error("environment `{0}` does not exist")]
    EnvironmentNotFound(String),
    /// Create of an existing environment.
    #[error("environment `{0}` already exists")]
    EnvironmentExists(String),
    /// Delete of an environment that still holds releases.
    #[error("environment `{env}` still holds {releases} release(s); delete them first")]
    EnvironmentNotEmpty { env: String, releases: usize },
    /// The store holds an older state of the environment than this instance has seen
    /// (restarted from an older dump, emptied, failed over to a lagging replica).
    #[error(
        "the store went backwards for environment `{env}`: it is at revision {stored}, this instance has seen {seen}; nothing was written. An operator reconciles with `cohort store reseed`"
    )]
    Regressed { env: String, stored: u64, seen: u64 },
    /// The write is in the store at `revision` but fewer replicas than asked
    /// (`store.min_replicas_ack`) confirmed it in time: not acknowledged, since a
    /// failover could lose it.
    #[error(
        "written to environment `{env}` at revision {revision}, but {replicas} of the {wanted} replica(s) asked for confirmed it in time: not acknowledged (a failover could lose it); check the result before retrying"
    )]
    NotReplicated { env: String, revision: u64, replicas: u32, wanted: u32 },
}

/// Release configuration storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs (`embedded`, `redis`).
    fn kind(&self) -> &'static str;

    /// The environments that exist (created and not deleted).
    async fn environments(&self) -> Result<Vec<EnvName>, StoreError>;

    /// The environments deleted on purpose, with the revision each had when deleted: an
    /// instance that knew one drops it, where a missing one that is not listed here
    /// vanished (data loss).
    async fn deleted_environments(&self) -> Result<Vec<(EnvName, u64)>, StoreError>;

    /// Creates an empty environment. A re-created environment continues from the
    /// revision it was deleted at, so no instance ever sees its revision go backwards.
    async fn create_environment(&self, env: &EnvName) -> Result<u64, StoreError>;

    /// Deletes an environment that holds no releases, leaving a tombstone.
    async fn delete_environment(&self, env: &EnvName) -> Result<u64, StoreError>;

    /// Everything stored for `env`; [`StoreError::EnvironmentNotFound`] when it does not
    /// exist.
    async fn load(&self, env: &EnvName) -> Result<EnvData, StoreError>;

    /// The current environment revision (0 for an unknown environment).
    async fn revision(&self, env: &EnvName) -> Result<u64, StoreError>;

    /// Applies one compare-and-set write atomically: the data, the revision bump, the
    /// change record and the audit entry (from `meta`) land together or not at all. The
    /// write is refused, touching nothing, when the environment does not exist or its
    /// revision is below `meta.floor` (the writer's high-water mark: the store went
    /// backwards, [`StoreError::Regressed`]).
    async fn write(&self, env: &EnvName, write: Write, meta: &WriteMeta) -> Result<Change, StoreError>;

    /// Overwrites `env` with `data` at revision `data.revision` (which must be above the
    /// stored revision), with one audit entry from `meta`: the operator's reconciliation
    /// after the store went backwards. Creates the environment if it vanished.
    async fn reseed(&self, env: &EnvName, data: &EnvData, meta: &WriteMeta) -> Result<u64, StoreError>;

    /// Audit entries of `env`, newest first.
    async fn audit(&self, env: &EnvName, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    /// Changes with a revision above `after`, oldest first, waiting up to `wait` for one
    /// to arrive. Old changes are trimmed: a caller whose first change is not
    /// `after + 1` has missed some and must [`Store::load`] again.
    async fn changes_after(&self, env: &EnvName, after: u64, wait: Duration) -> Result<Vec<Change>, StoreError>;

    /// Adds SDK-reported outcome counts to `bucket`.
    async fn record_outcomes(&self, env: &EnvName, bucket: Bucket, counts: &[OutcomeCount]) -> Result<(), StoreError>;

    /// Per-bucket counts of `release`'s versions for the buckets `from..=to` (see
    /// [`Bucket::range`]: none when `to < from`, at most a day), oldest first.
    async fn outcomes(
        &self,
        env: &EnvName,
        release: &str,
        from: Bucket,
        to: Bucket,
    ) -> Result<Vec<BucketCounts>, StoreError>;

    /// Records an SDK instance's acknowledgement (replacing its previous one).
    async fn record_ack(&self, env: &EnvName, ack: &SdkAck) -> Result<(), StoreError>;

    /// Every SDK acknowledgement of `env` seen at or after `since_ms`; older ones are
    /// forgotten.
    async fn sdk_acks(&self, env: &EnvName, since_ms: u64) -> Result<Vec<SdkAck>, StoreError>;

    /// Forgets the SDK instance `sdk_id` at once (it said goodbye, or its stream
    /// ended) unless its latest acknowledgement came over a stream connection after
    /// `up_to_connection` — then it has reconnected and is alive. Atomic, so an
    /// acknowledgement landing meanwhile on another instance is never lost.
    async fn forget_sdk(&self, env: &EnvName, sdk_id: &str, up_to_connection: u64) -> Result<(), StoreError>;

    /// Records a fleet node's heartbeat (replacing its previous one).
    async fn heartbeat(&self, env: &EnvName, fleet: &str, report: &NodeReport) -> Result<(), StoreError>;

    /// The nodes of `fleet` that reported at or after `since_ms`; older ones are
    /// forgotten.
    async fn fleet_nodes(&self, env: &EnvName, fleet: &str, since_ms: u64) -> Result<Vec<NodeReport>, StoreError>;

    /// Takes or renews the lease `name` for `holder` for `ttl`; true when `holder` has
    /// it. One instance at a time drives ramps through it.
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Makes anything held only in memory durable (the embedded store's outcome
    /// counts); called on shutdown.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Records that the instance `instance` has served `env` up to revision `seen`,
    /// which the store is below (regressed there), so that a reseed from an instance that
    /// saw less can be refused: it would throw away what `instance` served, kills
    /// included. Cleared by the next reseed. A store one instance owns (embedded) has no
    /// one else to hear it.
    async fn report_seen(&self, _env: &EnvName, _instance: &str, _seen: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// What instances reported with [`Store::report_seen`] since the last reseed of `env`:
    /// instance → revision seen.
    async fn seen_reports(&self, _env: &EnvName) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_narrow() {
        assert!(EnvName::parse("production").is_ok());
        assert!(EnvName::parse("staging-eu_2").is_ok());
        for bad in ["", "Prod", "a{b}", "a:b", "with space", &"x".repeat(65)] {
            assert!(EnvName::parse(bad).is_err(), "{bad}");
        }
    }
}
