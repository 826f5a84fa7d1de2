//! Release management: the domain operations behind the admin API. Each takes domain
//! types, validates fully before anything reaches the store ("compile on write"), writes
//! one compare-and-set, and makes the change visible in this instance's snapshot at
//! once (read-your-writes) before answering.

use crate::snapshots::{Applied, EnvSnapshot, Snapshots};
use crate::store::{Action, AuditEntry, AuditQuery, Change, EnvName, Store, StoreError, Write, WriteMeta};
use crate::sync::reload;
use cohort_sdk::{CompiledRelease, Condition, Release, Rule, buckets_to_percent, percent_to_buckets};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How often an unconditional write (kill, allocation without `If-Match`) retries after
/// losing a compare-and-set to a concurrent writer.
const UNCONDITIONAL_RETRIES: usize = 8;

/// Domain failures; the HTTP layer maps them to statuses.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The request describes an invalid release.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request conflicts with the release's state (e.g. a ramp is running).
    #[error("{0}")]
    Conflict(String),
    /// The environment does not exist; `nearest` is the closest existing name.
    #[error("environment `{env}` does not exist")]
    EnvironmentNotFound { env: String, nearest: Option<String> },
    /// Store refusals and outages.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReleaseError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ReleaseError::Invalid { field: field.into(), message: message.into() }
    }
}

/// A release as the API takes it: allocation in percent (at most three decimals).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInput {
    /// Required on create; on replace it may be omitted but must match the path.
    #[serde(default)]
    pub key: Option<String>,
    /// Versions, baseline first.
    pub versions: Vec<String>,
    /// Unit attribute.
    #[serde(default)]
    pub unit: Option<String>,
    /// Hash salt.
    #[serde(default)]
    pub salt: Option<String>,
    /// Bucketing algorithm; recorded as `xxh3-slots-v1` when omitted.
    #[serde(default)]
    pub bucketing: Option<String>,
    /// Candidate → percent.
    #[serde(default)]
    pub allocation: BTreeMap<String, f64>,
    /// Unit value → version.
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    /// Targeting rules: `{"when": [conditions], "serve": version}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<Rule>,
    /// Split audience: `{"attr", "op", "values"}` conditions.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub audience: Vec<Condition>,
    /// Version → typed value (boolean, string, number or object; one type).
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Value>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Rolling deployments: the fleet whose nodes this release assigns (unit `node_id`).
    #[serde(default)]
    pub fleet: Option<String>,
    /// Rolling deployments: an exact node count for the candidate.
    #[serde(default)]
    pub fleet_nodes: Option<u32>,
}

/// A release as the API shows it: allocation in percent, plus its revision.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReleaseView {
    pub key: String,
    pub versions: Vec<String>,
    pub unit: String,
    pub salt: String,
    pub bucketing: String,
    pub allocation: BTreeMap<String, f64>,
    pub overrides: BTreeMap<String, String>,
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<Rule>,
    #[schema(value_type = Vec<Object>)]
    pub audience: Vec<Condition>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, serde_json::Value>,
    pub killed: bool,
    pub kill_reason: Option<String>,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ramp: Option<cohort_sdk::Ramp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_nodes: Option<u32>,
    pub revision: u64,
}

impl ReleaseView {
    /// The view of `release` at `revision`.
    pub fn new(release: &Release, revision: u64) -> Self {
        ReleaseView {
            key: release.key.clone(),
            versions: release.versions.clone(),
            unit: release.unit.clone(),
            salt: release.effective_salt().to_owned(),
            bucketing: release.bucketing.clone(),
            allocation: release.allocation.iter().map(|(v, &b)| (v.clone(), buckets_to_percent(b))).collect(),
            overrides: release.overrides.clone(),
            rules: release.rules.clone(),
            audience: release.audience.clone(),
            values: release.values.clone(),
            killed: release.killed,
            kill_reason: release.kill_reason.clone(),
            description: release.description.clone(),
            ramp: release.ramp.clone(),
            fleet: release.fleet.clone(),
            fleet_nodes: release.fleet_nodes,
            revision,
        }
    }
}

/// The environment's kill state as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnvView {
    pub environment: String,
    pub revision: u64,
    pub kill_all: bool,
    pub kill_reason: Option<String>,
}

fn to_buckets(field: &str, percent: f64) -> Result<u32, ReleaseError> {
    percent_to_buckets(percent).ok_or_else(|| {
        ReleaseError::invalid(field, format!("{percent} is not a percent between 0 and 100 with at most 3 decimals"))
    })
}

/// Builds and validates a release from API input. Nothing invalid gets past this.
pub fn build_release(input: ReleaseInput, path_key: Option<&str>) -> Result<Release, ReleaseError> {
    let key = match (input.key, path_key) {
        (Some(body), Some(path)) if body != path => {
            return Err(ReleaseError::invalid("key", format!("body key `{body}` differs from the URL's `{path}`")));
        }
        (Some(key), _) => key,
        (None, Some(path)) => path.to_owned(),
        (None, None) => return Err(ReleaseError::invalid("key", "a release needs a key")),
    };
    let mut release = Release::new(&key, input.versions);
    let unit_given = input.unit.is_some();
    if let Some(unit) = input.unit {
        release.unit = unit;
    }
    release.salt = input.salt;
    if let Some(bucketing) = input.bucketing {
        release.bucketing = bucketing;
    }
    for (version, percent) in input.allocation {
        let buckets = to_buckets(&format!("allocation.{version}"), percent)?;
        release.allocation.insert(version, buckets);
    }
    release.overrides = input.overrides;
    release.rules = input.rules;
    release.audience = input.audience;
    release.values = input.values;
    release.description = input.description.unwrap_or_default();
    if let Some(fleet) = input.fleet {
        if !crate::fleet::valid_name(&fleet) {
            return Err(ReleaseError::invalid("fleet", "1 to 128 of letters, digits, `-`, `_`, `.`"));
        }
        if release.versions.len() != 2 {
            return Err(ReleaseError::invalid("versions", "a fleet release has a baseline and one candidate"));
        }
        if !release.overrides.is_empty() {
            return Err(ReleaseError::invalid(
                "overrides",
                "a fleet release's overrides are its node batches, set by cohort",
            ));
        }
        if !unit_given {
            release.unit = "node_id".to_owned();
        }
        release.fleet = Some(fleet);
        release.fleet_nodes = input.fleet_nodes;
    } else if input.fleet_nodes.is_some() {
        return Err(ReleaseError::invalid("fleet_nodes", "only for fleet releases"));
    }
    validate(release)
}

fn validate(release: Release) -> Result<Release, ReleaseError> {
    CompiledRelease::compile(release)
        .map(CompiledRelease::into_release)
        .map_err(|e| ReleaseError::Invalid { field: e.field, message: e.message })
}

/// Who made a change, for logs and the audit log: the token's `sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The release operations of one instance.
#[derive(Clone)]
pub struct Releases {
    store: Arc<dyn Store>,
    snapshots: Arc<Snapshots>,
    pending: Arc<crate::pending::PendingKills>,
}

impl Releases {
    /// Operations over `store`, keeping `snapshots` current.
    pub fn new(store: Arc<dyn Store>, snapshots: Arc<Snapshots>) -> Self {
        Releases { store, snapshots, pending: Arc::new(crate::pending::PendingKills::in_memory()) }
    }

    /// These operations with kills that cannot reach the store journalled in `pending`.
    pub fn with_pending(self, pending: Arc<crate::pending::PendingKills>) -> Self {
        Releases { pending, ..self }
    }

    /// The journal of kills served but not yet stored.
    pub fn pending(&self) -> &Arc<crate::pending::PendingKills> {
        &self.pending
    }

    /// The snapshots this instance serves.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The store (for domain modules that write beside releases, like outcomes).
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// `env`'s snapshot, or the error naming the nearest existing environment.
    pub fn require_env(&self, env: &EnvName) -> Result<Arc<EnvSnapshot>, ReleaseError> {
        self.snapshots.get(env).ok_or_else(|| crate::environments::env_not_found(&self.snapshots, env))
    }

    /// Every release of `env`, from the snapshot (answers during a store outage).
    pub fn list(&self, env: &EnvName) -> Result<(EnvView, Vec<ReleaseView>), ReleaseError> {
        let snap = self.require_env(env)?;
        let releases = snap
            .snapshot
            .releases()
            .map(|r| ReleaseView::new(r.release(), snap.revisions.get(r.key()).copied().unwrap_or(0)))
            .collect();
        Ok((env_view(env, &snap), releases))
    }

    /// The environment's kill state.
    pub fn environment(&self, env: &EnvName) -> Result<EnvView, ReleaseError> {
        Ok(env_view(env, &*self.require_env(env)?))
    }

    /// One release, from the snapshot.
    pub fn get(&self, env: &EnvName, key: &str) -> Result<ReleaseView, ReleaseError> {
        let snap = self.require_env(env)?;
        let release = snap.snapshot.get(key).ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
        Ok(ReleaseView::new(release.release(), snap.revisions.get(key).copied().unwrap_or(0)))
    }

    /// Creates a release.
    pub async fn create(&self, env: &EnvName, actor: &Actor, input: ReleaseInput) -> Result<ReleaseView, ReleaseError> {
        let release = build_release(input, None)?;
        let meta = WriteMeta::now(&actor.0, Action::Create, None);
        let change = self.write(env, Write::Create(release.clone()), &meta).await?;
        tracing::info!(%env, release = %release.key, revision = change.revision, %actor, action = "create", "release written");
        Ok(ReleaseView::new(&release, change.revision))
    }

    /// Replaces a release at revision `expected`.
    pub async fn replace(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        input: ReleaseInput,
        expected: u64,
    ) -> Result<ReleaseView, ReleaseError> {
        let mut release = build_release(input, Some(key))?;
        // Kill state is changed through kill/unkill only, so a replace never revives a
        // killed release by accident.
        if let Some(current) = self.current(env, key).await? {
            release.killed = current.0.killed;
            release.kill_reason = current.0.kill_reason;
            release.ramp = current.0.ramp;
            if release.fleet.is_some() && release.fleet == current.0.fleet {
                release.overrides = current.0.overrides;
            }
        }
        let meta = WriteMeta::now(&actor.0, Action::Update, None);
        let change = self.write(env, Write::Update { release: release.clone(), expected }, &meta).await?;
        tracing::info!(%env, release = %key, revision = change.revision, %actor, action = "update", "release written");
        Ok(ReleaseView::new(&release, change.revision))
    }

    /// Deletes a release.
    pub async fn delete(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        expected: Option<u64>,
    ) -> Result<u64, ReleaseError> {
        let meta = WriteMeta::now(&actor.0, Action::Delete, None);
        let change = self.write(env, Write::Delete { key: key.to_owned(), expected }, &meta).await?;
        tracing::info!(%env, release = %key, revision = change.revision, %actor, action = "delete", "release written");
        Ok(change.revision)
    }

    /// Sets some candidates' allocation (percent); others keep theirs.
    pub async fn set_allocation(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        percents: BTreeMap<String, f64>,
        expected: Option<u64>,
    ) -> Result<ReleaseView, ReleaseError> {
        if percents.is_empty() {
            return Err(ReleaseError::invalid(
                "percent",
                "name at least one candidate, e.g. {\"percent\": {\"v2\": 10}}",
            ));
        }
        let mut buckets = BTreeMap::new();
        for (version, percent) in percents {
            let b = to_buckets(&format!("percent.{version}"), percent)?;
            buckets.insert(version, b);
        }
        let view = self
            .modify(env, key, expected, WriteMeta::now(&actor.0, Action::Allocation, None), |release| {
                if let Some(ramp) = release.ramp.as_ref().filter(|r| !r.state.is_finished())
                    && buckets.contains_key(&ramp.candidate)
                {
                    return Err(ReleaseError::Conflict(format!(
                        "a ramp of `{}` is {}; pause and abort it (or let it finish) before setting its share by hand",
                        ramp.candidate,
                        ramp.state.as_str()
                    )));
                }
                for (version, b) in &buckets {
                    release.allocation.insert(version.clone(), *b);
                }
                Ok(())
            })
            .await?;
        Ok(view)
    }

    /// Turns a release's kill switch on or off.
    pub async fn set_killed(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        killed: bool,
        reason: Option<String>,
    ) -> Result<ReleaseView, ReleaseError> {
        let action = if killed { Action::Kill } else { Action::Unkill };
        if reason.as_ref().is_some_and(|r| r.len() > 1_024) {
            return Err(ReleaseError::invalid("reason", "at most 1024 bytes"));
        }
        self.modify(env, key, None, WriteMeta::now(&actor.0, action, reason.clone()), |release| {
            release.killed = killed;
            release.kill_reason = reason.clone().filter(|_| killed);
            // A kill freezes a running ramp; it stays paused after the unkill until
            // someone resumes it deliberately.
            if let Some(ramp) = release.ramp.as_mut().filter(|r| killed && r.state == cohort_sdk::RampState::Running) {
                ramp.state = cohort_sdk::RampState::Paused;
                ramp.reason = Some("killed".to_owned());
            }
            Ok(())
        })
        .await
    }

    /// Turns the environment kill switch on or off.
    pub async fn set_kill_all(
        &self,
        env: &EnvName,
        actor: &Actor,
        on: bool,
        reason: Option<String>,
    ) -> Result<EnvView, ReleaseError> {
        if reason.as_ref().is_some_and(|r| r.len() > 1_024) {
            return Err(ReleaseError::invalid("reason", "at most 1024 bytes"));
        }
        let action = if on { Action::KillAll } else { Action::UnkillAll };
        let meta = WriteMeta::now(&actor.0, action, reason.clone());
        let change = self.write(env, Write::KillAll { on, reason: reason.clone() }, &meta).await?;
        tracing::info!(%env, revision = change.revision, %actor, %action, "environment kill switch written");
        Ok(EnvView {
            environment: env.to_string(),
            revision: change.revision,
            kill_all: on,
            kill_reason: reason.filter(|_| on),
        })
    }

    /// Read-modify-write of one release. With `expected`, one attempt (a stale revision
    /// is the caller's conflict); without, retries against the latest stored state.
    pub(crate) async fn modify(
        &self,
        env: &EnvName,
        key: &str,
        expected: Option<u64>,
        meta: WriteMeta,
        edit: impl Fn(&mut Release) -> Result<(), ReleaseError>,
    ) -> Result<ReleaseView, ReleaseError> {
        let (actor, action) = (meta.actor.as_str(), meta.action);
        let mut attempt = 0;
        loop {
            let (mut release, revision) =
                self.current(env, key).await?.ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
            if let Some(expected) = expected.filter(|&e| e != revision) {
                return Err(StoreError::RevisionMismatch { key: key.to_owned(), expected, current: revision }.into());
            }
            edit(&mut release)?;
            let release = validate(release)?;
            let write = Write::Update { release: release.clone(), expected: expected.unwrap_or(revision) };
            match self.write(env, write, &meta).await {
                Ok(change) => {
                    tracing::info!(%env, release = %key, revision = change.revision, %actor, %action, "release written");
                    return Ok(ReleaseView::new(&release, change.revision));
                }
                Err(ReleaseError::Store(StoreError::RevisionMismatch { .. }))
                    if expected.is_none() && attempt < UNCONDITIONAL_RETRIES =>
                {
                    attempt += 1;
                    // Someone else wrote meanwhile: catch up and try again.
                    reload(&*self.store, &self.snapshots, env).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The release and its revision as this instance serves them.
    ///
    /// A release whose kill switch this instance serves without the store having it (a
    /// pending kill) is read from the store instead: the decision to write must be made
    /// against what is stored, not against what is served.
    async fn current(&self, env: &EnvName, key: &str) -> Result<Option<(Release, u64)>, ReleaseError> {
        if self.snapshots.overlay(env).releases.contains_key(key) {
            let data = self.store.load(env).await?;
            return Ok(data.releases.into_iter().find(|r| r.release.key == key).map(|r| (r.release, r.revision)));
        }
        let snap = self.snapshots.get(env).unwrap_or_default();
        Ok(snap.snapshot.get(key).map(|r| (r.release().clone(), snap.revisions.get(key).copied().unwrap_or(0))))
    }

    /// A page of the audit log, newest first.
    pub async fn audit(&self, env: &EnvName, query: &AuditQuery) -> Result<Vec<AuditEntry>, ReleaseError> {
        Ok(self.store.audit(env, query).await?)
    }

    /// One store write (with its audit entry), then the change into the local snapshot.
    /// Refused before the store when `env` does not exist or its store went backwards;
    /// the store itself refuses a write below this instance's high-water mark, so a
    /// write is never acknowledged that this instance would not serve.
    async fn write(&self, env: &EnvName, write: Write, meta: &WriteMeta) -> Result<Change, ReleaseError> {
        self.require_env(env)?;
        let watch = self.snapshots.watch();
        if let Some(regression) = watch.regressed(env) {
            return Err(regression.error(env).into());
        }
        let meta = WriteMeta { floor: watch.mark(env), ..meta.clone() };
        let change = match self.store.write(env, write, &meta).await {
            Ok(change) => change,
            Err(error @ StoreError::Regressed { stored, .. }) => {
                crate::sync::flag_regressed(&self.snapshots, env, Some(stored));
                return Err(error.into());
            }
            Err(StoreError::EnvironmentNotFound(_)) => {
                // This instance holds the environment: the store lost it.
                crate::sync::flag_regressed(&self.snapshots, env, None);
                return Err(watch.regressed(env).map_or_else(
                    || StoreError::EnvironmentNotFound(env.to_string()),
                    |regression| regression.error(env),
                ))?;
            }
            Err(error) => return Err(error.into()),
        };
        if self.snapshots.apply(env, &change) == Applied::Gap {
            // Another instance wrote in between; the reload brings both changes.
            if let Err(error) = reload(&*self.store, &self.snapshots, env).await {
                tracing::warn!(%env, %error, "reload after write failed; the follower will catch up");
            }
        }
        Ok(change)
    }
}

fn env_view(env: &EnvName, snap: &crate::snapshots::EnvSnapshot) -> EnvView {
    EnvView {
        environment: env.to_string(),
        revision: snap.revision(),
        kill_all: snap.snapshot.kill_all(),
        kill_reason: snap.kill_reason.clone(),
    }
}
