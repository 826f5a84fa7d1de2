//! Release management: the domain operations behind the admin API. Each takes domain
//! types, validates fully before anything reaches the store ("compile on write"), writes
//! one compare-and-set, and makes the change visible in this instance's snapshot at
//! once (read-your-writes) before answering.

use crate::snapshots::{Applied, EnvSnapshot, KillTarget, Snapshots};
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
    /// The request conflicts with the release's state (e.g. a ramp is already running).
    #[error("{0}")]
    Conflict(String),
    /// The environment does not exist; `nearest` is the closest existing name.
    #[error("environment `{env}` does not exist")]
    EnvironmentNotFound { env: String, nearest: Option<String> },
    /// The write would move a ramped release's allocation behind its ramp's back (see
    /// [`ramp_guard`]); the message names the commands that hand control back.
    #[error("{0}")]
    RampActive(String),
    /// An unkill (or unkill-all) the store cannot take now. Only kills are served
    /// before the store has them: an unkill served by one instance alone could not be
    /// ordered against a kill another instance acknowledged meanwhile, so it waits for
    /// the store, and the kill stays served — the safe state.
    #[error(
        "the store cannot take this unkill of {target} now ({source}); an unkill is only written through the store, so wherever {target} is killed it stays killed. Retry once the store takes writes again (GET /readyz)"
    )]
    UnkillNeedsStore { target: String, source: StoreError },
    /// A reseed from an instance that served less of the environment than another
    /// instance reported: it would overwrite what that instance served.
    #[error(
        "{instance} has served {env} up to revision {seen}, this instance only up to {served}: a reseed from here would overwrite what it served, kills included. Reseed from {instance}, or pass `force` to reseed from here anyway"
    )]
    ReseedBehind { env: String, served: u64, instance: String, seen: u64 },
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
#[schema(example = json!({
    "key": "dark-mode", "versions": ["off", "on"], "values": {"off": false, "on": true}, "allocation": {"on": 10},
    "rules": [{"when": [{"attr": "country", "op": "in", "values": ["NZ"]}], "serve": "on"}],
    "audience": [{"attr": "app_version", "op": "semver_gte", "values": ["2.0.0"]}]
}))]
pub struct ReleaseInput {
    /// Required on create; on replace it may be omitted but must match the path.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$", min_length = 1, max_length = 128, example = "checkout")]
    pub key: Option<String>,
    /// Versions, baseline first.
    #[schema(schema_with = cohort_sdk::openapi::versions)]
    pub versions: Vec<String>,
    /// Unit attribute.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, example = "targetingKey")]
    pub unit: Option<String>,
    /// Hash salt.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub salt: Option<String>,
    /// Bucketing algorithm; recorded as `xxh3-slots-v1` when omitted.
    #[serde(default)]
    #[schema(schema_with = crate::api::openapi::bucketing)]
    pub bucketing: Option<String>,
    /// Candidate → percent. On replace, omitting it keeps the current allocation (a
    /// ramp's share survives an edit of the rules); `{}` clears it.
    #[serde(default)]
    #[schema(schema_with = crate::api::openapi::percents)]
    pub allocation: Option<BTreeMap<String, f64>>,
    /// Unit value → version.
    #[serde(default)]
    #[schema(schema_with = crate::api::openapi::overrides)]
    pub overrides: BTreeMap<String, String>,
    /// Targeting rules: `{"when": [conditions], "serve": version}`.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub rules: Vec<Rule>,
    /// Split audience: `{"attr", "op", "values"}` conditions.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub audience: Vec<Condition>,
    /// Version → typed value (boolean, string, number or object; one type).
    #[serde(default)]
    #[schema(schema_with = cohort_sdk::openapi::values)]
    pub values: BTreeMap<String, serde_json::Value>,
    /// Free text.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// Rolling deployments: the fleet whose nodes this release assigns (unit `node_id`).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]+$", min_length = 1, max_length = 128)]
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
    pub rules: Vec<Rule>,
    pub audience: Vec<Condition>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = cohort_sdk::openapi::values)]
    pub values: BTreeMap<String, serde_json::Value>,
    pub killed: bool,
    pub kill_reason: Option<String>,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
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
    validate(assemble(input, path_key, None)?)
}

/// A release from API input, not yet validated (a replace checks the ramp rule first, so
/// a refused write says why it is refused rather than what else is wrong with it). An
/// omitted `allocation` is `current`'s.
fn assemble(input: ReleaseInput, path_key: Option<&str>, current: Option<&Release>) -> Result<Release, ReleaseError> {
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
    match input.allocation {
        Some(percents) => {
            for (version, percent) in percents {
                let buckets = to_buckets(&format!("allocation.{version}"), percent)?;
                release.allocation.insert(version, buckets);
            }
        }
        None => release.allocation = current.map(|c| c.allocation.clone()).unwrap_or_default(),
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
    Ok(release)
}

/// The one rule every write path asks before changing a release (replace, allocation,
/// delete, promote, and any later import or console): **only the ramp moves a ramped
/// release's allocation**. While a ramp is running or paused, `next` (`None` for a
/// delete) may not change the candidate's share or slot, nor remove the candidate or the
/// baseline. Everything else — rules, overrides, description, other candidates — may
/// change. Promoting the ramp's own candidate (the ramp ends with it) is the one way to
/// change the baseline. Kept in one function so no route can drift from it.
pub fn ramp_guard(current: &Release, next: Option<&Release>) -> Result<(), ReleaseError> {
    let Some(ramp) = current.ramp.as_ref().filter(|r| !r.state.is_finished()) else { return Ok(()) };
    let candidate = ramp.candidate.as_str();
    let refuse = |what: String| {
        Err(ReleaseError::RampActive(format!(
            "a ramp of `{candidate}` is {state} on `{key}`, and only the ramp moves its allocation: {what} is \
             refused. Run `cohort ramp pause {key}` to hold the ramp or `cohort ramp abort {key}` to end it, then retry",
            state = ramp.state.as_str(),
            key = current.key,
        )))
    };
    let Some(next) = next else { return refuse("deleting the release".to_owned()) };
    if next.ramp.is_none() && next.baseline() == Some(candidate) {
        return Ok(());
    }
    if next.baseline() != current.baseline() {
        return refuse(format!(
            "making `{}` the baseline instead of `{}`",
            next.baseline().unwrap_or_default(),
            current.baseline().unwrap_or_default()
        ));
    }
    // A candidate's units are those of its slot (docs/evaluation.md): moving the slot
    // moves users in and out of the candidate as surely as changing its share.
    let slot = |r: &Release| (r.versions.iter().position(|v| v == candidate), r.versions.len());
    if slot(next).0.is_none() {
        return refuse(format!("removing the candidate `{candidate}`"));
    }
    if slot(next) != slot(current) {
        return refuse(format!("adding, removing or reordering versions around `{candidate}`"));
    }
    let share = |r: &Release| r.allocation.get(candidate).copied().unwrap_or(0);
    if share(next) != share(current) {
        return refuse(format!(
            "setting `{candidate}` from {} % to {} %",
            buckets_to_percent(share(current)),
            buckets_to_percent(share(next))
        ));
    }
    if next.fleet != current.fleet || next.fleet_nodes != current.fleet_nodes {
        return refuse(format!("changing the fleet or node count of `{candidate}`"));
    }
    Ok(())
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
    /// Orders journalling a kill against writing a journalled one, so a replay never
    /// writes an intent a newer kill or unkill has replaced.
    pub(crate) pending_order: Arc<tokio::sync::Mutex<()>>,
}

impl Releases {
    /// Operations over `store`, keeping `snapshots` current.
    pub fn new(store: Arc<dyn Store>, snapshots: Arc<Snapshots>) -> Self {
        Releases {
            store,
            snapshots,
            pending: Arc::new(crate::pending::PendingKills::in_memory()),
            pending_order: Arc::default(),
        }
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
        let releases =
            snap.snapshot.releases().map(|r| ReleaseView::new(r.release(), snap.revision_of(r.key()))).collect();
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
        Ok(ReleaseView::new(release.release(), snap.revision_of(key)))
    }

    /// Creates a release.
    pub async fn create(&self, env: &EnvName, actor: &Actor, input: ReleaseInput) -> Result<ReleaseView, ReleaseError> {
        let release = build_release(input, None)?;
        let meta = WriteMeta::now(&actor.0, Action::Create, None);
        let change = self.write(env, Write::Create(release.clone()), &meta).await?;
        tracing::info!(%env, release = %release.key, revision = change.revision, %actor, action = "create", "release written");
        Ok(ReleaseView::new(&release, change.revision))
    }

    /// Replaces a release at revision `expected`. An omitted `allocation` keeps the
    /// current one; the ramp rule ([`ramp_guard`]) decides whether the rest may change.
    pub async fn replace(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        input: ReleaseInput,
        expected: u64,
    ) -> Result<ReleaseView, ReleaseError> {
        let current = self.current_at(env, key, Some(expected)).await?;
        let mut release = assemble(input, Some(key), current.as_ref().map(|(r, _)| r))?;
        // Kill state is changed through kill/unkill only, so a replace never revives a
        // killed release by accident.
        if let Some((current, _)) = current {
            if release.fleet.is_some() && release.fleet == current.fleet {
                release.overrides = current.overrides.clone();
            }
            release.killed = current.killed;
            release.kill_reason = current.kill_reason.clone();
            release.ramp = current.ramp.clone();
            ramp_guard(&current, Some(&release))?;
        }
        let release = validate(release)?;
        let meta = WriteMeta::now(&actor.0, Action::Update, None);
        let change = self.write(env, Write::Update { release: release.clone(), expected }, &meta).await?;
        tracing::info!(%env, release = %key, revision = change.revision, %actor, action = "update", "release written");
        Ok(ReleaseView::new(&release, change.revision))
    }

    /// Deletes a release, refused while a ramp runs ([`ramp_guard`]). The delete is a
    /// compare-and-set at the revision the rule was checked against, so a ramp started
    /// meanwhile (on any instance) is never deleted from under itself.
    pub async fn delete(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        expected: Option<u64>,
    ) -> Result<u64, ReleaseError> {
        let meta = WriteMeta::now(&actor.0, Action::Delete, None);
        let mut attempt = 0;
        loop {
            let (release, revision) =
                self.current_at(env, key, expected).await?.ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
            if let Some(expected) = expected.filter(|&e| e != revision) {
                return Err(StoreError::RevisionMismatch { key: key.to_owned(), expected, current: revision }.into());
            }
            ramp_guard(&release, None)?;
            match self.write(env, Write::Delete { key: key.to_owned(), expected: Some(revision) }, &meta).await {
                Ok(change) => {
                    tracing::info!(%env, release = %key, revision = change.revision, %actor, action = "delete", "release written");
                    return Ok(change.revision);
                }
                Err(ReleaseError::Store(StoreError::RevisionMismatch { .. }))
                    if expected.is_none() && attempt < UNCONDITIONAL_RETRIES =>
                {
                    attempt += 1;
                    reload(&*self.store, &self.snapshots, env).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets some candidates' allocation (percent); others keep theirs. A ramped
    /// candidate's share is the ramp's ([`ramp_guard`]).
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
                let before = release.clone();
                for (version, b) in &buckets {
                    release.allocation.insert(version.clone(), *b);
                }
                ramp_guard(&before, Some(release))
            })
            .await?;
        Ok(view)
    }

    /// Turns a release's kill switch on or off. Idempotent: a kill of a killed release
    /// (or an unkill of a live one) writes nothing and answers the current state, so a
    /// second on-call engineer repeating the kill neither erases the incident's reason
    /// nor adds noise to the audit log; only a new non-empty reason replaces the reason.
    pub async fn set_killed(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        killed: bool,
        reason: Option<String>,
    ) -> Result<ReleaseView, ReleaseError> {
        let action = if killed { Action::Kill } else { Action::Unkill };
        let reason = check_reason(reason)?;
        let unchanged = |release: &Release| {
            let running = release.ramp.as_ref().is_some_and(|r| r.state == cohort_sdk::RampState::Running);
            release.killed == killed
                && (!killed || reason.is_none() || release.kill_reason == reason)
                && !(killed && running)
        };
        if self.current(env, key).await?.is_some_and(|(release, _)| unchanged(&release)) {
            // The snapshot may lag the store (another instance unkilled): confirm against
            // the store before answering "nothing to do" to a kill.
            reload(&*self.store, &self.snapshots, env).await?;
            if let Some((release, revision)) = self.current(env, key).await?.filter(|(r, _)| unchanged(r)) {
                tracing::info!(%env, release = %key, revision, %actor, %action, "kill switch already in that state; nothing written");
                return Ok(ReleaseView::new(&release, revision));
            }
        }
        self.modify(env, key, None, WriteMeta::now(&actor.0, action, reason.clone()), |release| {
            release.kill_reason = match (killed, &reason) {
                (false, _) => None,
                (true, Some(reason)) => Some(reason.clone()),
                (true, None) => release.kill_reason.clone().filter(|_| release.killed),
            };
            release.killed = killed;
            // A kill freezes a running ramp; it stays paused after the unkill until
            // someone resumes it deliberately.
            if let Some(ramp) = release.ramp.as_mut().filter(|r| killed && r.state == cohort_sdk::RampState::Running) {
                ramp.state = cohort_sdk::RampState::Paused;
                ramp.reason = Some(crate::ramp::KILLED.to_owned());
            }
            Ok(())
        })
        .await
    }

    /// Turns the environment kill switch on or off; idempotent like [`Self::set_killed`].
    /// Pausing the environment's running ramps is [`crate::ramp::Ramps::set_kill_all`]'s
    /// part.
    pub async fn set_kill_all(
        &self,
        env: &EnvName,
        actor: &Actor,
        on: bool,
        reason: Option<String>,
    ) -> Result<EnvView, ReleaseError> {
        let reason = check_reason(reason)?;
        let action = if on { Action::KillAll } else { Action::UnkillAll };
        let unchanged = |view: &EnvView| view.kill_all == on && (!on || reason.is_none() || view.kill_reason == reason);
        if unchanged(&self.current_env(env).await?) {
            // As for a release: never answer "already killed" from a lagging snapshot.
            reload(&*self.store, &self.snapshots, env).await?;
            let view = self.current_env(env).await?;
            if unchanged(&view) {
                tracing::info!(%env, revision = view.revision, %actor, %action, "environment kill switch already in that state; nothing written");
                return Ok(view);
            }
        }
        // A kill-all without a reason keeps the reason of the kill-all already in force.
        let stored_reason = match (on, &reason) {
            (false, _) => None,
            (true, Some(reason)) => Some(reason.clone()),
            (true, None) => self.current_env(env).await?.kill_reason,
        };
        let meta = WriteMeta::now(&actor.0, action, reason);
        let change = self.write(env, Write::KillAll { on, reason: stored_reason.clone() }, &meta).await?;
        tracing::info!(%env, revision = change.revision, %actor, %action, "environment kill switch written");
        Ok(EnvView {
            environment: env.to_string(),
            revision: change.revision,
            kill_all: on,
            kill_reason: stored_reason,
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
            let found = match self.current(env, key).await? {
                Some(found) => Some(found),
                // This instance's snapshot may lag the store (a release created through
                // another instance a moment ago): ask the store before answering 404.
                None if reload(&*self.store, &self.snapshots, env).await.is_ok() => self.current(env, key).await?,
                None => None,
            };
            let (mut release, revision) = found.ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
            if let Some(expected) = expected.filter(|&e| e != revision) {
                return Err(StoreError::RevisionMismatch { key: key.to_owned(), expected, current: revision }.into());
            }
            let before = release.clone();
            edit(&mut release)?;
            if release == before {
                // A write that changes nothing writes nothing (and audits nothing): a kill
                // two instances replay after an outage lands once.
                return Ok(ReleaseView::new(&release, revision));
            }
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

    /// The release and its revision, caught up with the store first when this instance's
    /// snapshot does not hold the revision the caller expects (it may lag a write made
    /// through another instance, and a rule checked against stale state is no rule).
    async fn current_at(
        &self,
        env: &EnvName,
        key: &str,
        expected: Option<u64>,
    ) -> Result<Option<(Release, u64)>, ReleaseError> {
        let current = self.current(env, key).await?;
        match (expected, &current) {
            (Some(expected), Some((_, revision))) if *revision == expected => Ok(current),
            (None, Some(_)) => Ok(current),
            _ => {
                reload(&*self.store, &self.snapshots, env).await?;
                self.current(env, key).await
            }
        }
    }

    /// The release and its revision as this instance serves them.
    ///
    /// A release whose kill switch this instance serves without the store having it (a
    /// pending kill) is read from the store instead: the decision to write must be made
    /// against what is stored, not against what is served.
    async fn current(&self, env: &EnvName, key: &str) -> Result<Option<(Release, u64)>, ReleaseError> {
        self.require_env(env)?;
        if self.snapshots.lays_kill(env, &KillTarget::Release(key.to_owned())) {
            let data = self.store.load(env).await?;
            return Ok(data.releases.into_iter().find(|r| r.release.key == key).map(|r| (r.release, r.revision)));
        }
        let snap = self.snapshots.get(env).unwrap_or_default();
        Ok(snap.snapshot.get(key).map(|r| (r.release().clone(), snap.revision_of(key))))
    }

    /// The environment's kill state as stored: from the snapshot, or from the store while
    /// this instance serves a kill-all the store has not taken (see [`Self::current`]).
    async fn current_env(&self, env: &EnvName) -> Result<EnvView, ReleaseError> {
        let served = self.environment(env)?;
        if !self.snapshots.lays_kill(env, &KillTarget::Environment) {
            return Ok(served);
        }
        let data = self.store.load(env).await?;
        Ok(EnvView {
            environment: env.to_string(),
            revision: data.revision,
            kill_all: data.kill_all,
            kill_reason: data.kill_reason.filter(|_| data.kill_all),
        })
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
        self.commit(env, write, meta).await
    }

    /// [`Releases::write`] for the other changes an environment takes (revocations): the
    /// same floor, regression handling and read-your-writes.
    pub(crate) async fn commit(&self, env: &EnvName, write: Write, meta: &WriteMeta) -> Result<Change, ReleaseError> {
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
                let seen = watch.mark(env);
                return Err(StoreError::Regressed { env: env.to_string(), stored: 0, seen }.into());
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

/// A kill reason as stored: at most 1 KiB, and blank means none (so it never replaces
/// the reason of the kill in force).
fn check_reason(reason: Option<String>) -> Result<Option<String>, ReleaseError> {
    if reason.as_ref().is_some_and(|r| r.len() > 1_024) {
        return Err(ReleaseError::invalid("reason", "at most 1024 bytes"));
    }
    Ok(reason.filter(|r| !r.trim().is_empty()))
}

fn env_view(env: &EnvName, snap: &crate::snapshots::EnvSnapshot) -> EnvView {
    EnvView {
        environment: env.to_string(),
        revision: snap.revision(),
        kill_all: snap.snapshot.kill_all(),
        kill_reason: snap.kill_reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::{Ramp, RampGuard, RampState, RampStep};

    fn ramped(state: RampState) -> Release {
        let mut release = Release::new("checkout", ["v1", "v2", "v3"]);
        release.allocation.insert("v2".into(), 10_000);
        release.ramp = Some(Ramp {
            candidate: "v2".into(),
            steps: vec![RampStep { buckets: 10_000, nodes: None, hold_ms: Some(1_000) }],
            guard: RampGuard { max_error_rate_increase: 0.01, max_error_rate: None, min_samples: 10, confidence: 0.99 },
            state,
            step: 0,
            step_started_ms: 0,
            extensions: 0,
            reason: None,
            guard_figures: None,
            progress_deadline_ms: None,
            max_unavailable: None,
        });
        release
    }

    fn refused(current: &Release, next: Option<&Release>) -> bool {
        matches!(ramp_guard(current, next), Err(ReleaseError::RampActive(_)))
    }

    #[test]
    fn a_running_or_paused_ramp_owns_its_candidates_share() {
        for state in [RampState::Running, RampState::Paused] {
            let current = ramped(state);
            let mut other = current.clone();
            other.allocation.insert("v3".into(), 5_000);
            other.description = "edited".into();
            assert!(ramp_guard(&current, Some(&other)).is_ok(), "other candidates and fields may change");
            let mut jump = current.clone();
            jump.allocation.insert("v2".into(), 40_000);
            assert!(refused(&current, Some(&jump)));
            let mut cleared = current.clone();
            cleared.allocation.clear();
            assert!(refused(&current, Some(&cleared)), "an absent share is 0 %");
            let mut removed = current.clone();
            removed.versions.retain(|v| v != "v2");
            assert!(refused(&current, Some(&removed)));
            let mut moved = current.clone();
            moved.versions.swap(1, 2);
            assert!(refused(&current, Some(&moved)), "moving the slot moves users");
            assert!(refused(&current, None), "delete");
        }
    }

    #[test]
    fn only_the_ramps_own_candidate_may_be_promoted() {
        let current = ramped(RampState::Running);
        let promote = |version: &str| {
            let mut next = current.clone();
            next.versions.retain(|v| v != version);
            next.versions.insert(0, version.to_owned());
            next.allocation.clear();
            next.ramp = None;
            next
        };
        assert!(ramp_guard(&current, Some(&promote("v2"))).is_ok());
        assert!(refused(&current, Some(&promote("v3"))));
    }

    #[test]
    fn a_finished_ramp_guards_nothing() {
        for state in [RampState::Completed, RampState::Aborted, RampState::RolledBack] {
            assert!(ramp_guard(&ramped(state), None).is_ok());
        }
    }
}
