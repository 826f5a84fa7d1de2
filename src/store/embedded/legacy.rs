//! The first embedded layout — one `cohort.json` holding every environment, rewritten
//! whole on every write — converted to the per-environment layout on first open.
//!
//! The conversion is built in `envs.migrating/`, synced, and renamed to `envs/` in one
//! step; only then is `cohort.json` renamed to `cohort.json.migrated` (kept, never
//! deleted). A crash before the first rename leaves the old file alone and the
//! conversion starts over; a crash between the two renames is finished on the next open.

use super::env_files::{ENVS_DIR, EnvState, write_snapshot};
use super::{OpenError, OutcomeBuckets};
use crate::store::{AuditEntry, EnvData, EnvName};
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

/// The old data file's name inside the data directory.
pub const LEGACY_FILE: &str = "cohort.json";
/// What the old data file is renamed to once converted.
pub const MIGRATED_FILE: &str = "cohort.json.migrated";
const LEGACY_FORMAT: u32 = 1;
const STAGING_DIR: &str = "envs.migrating";

#[derive(Debug, Default, Deserialize)]
struct FileData {
    format: u32,
    environments: BTreeMap<EnvName, EnvData>,
    #[serde(default)]
    audit: BTreeMap<EnvName, VecDeque<AuditEntry>>,
    /// Files written before 10 s buckets kept per-minute counts under `outcomes`: that
    /// field is ignored (short-lived data that cannot be split into buckets).
    #[serde(default)]
    outcome_buckets: BTreeMap<EnvName, OutcomeBuckets>,
    #[serde(default)]
    deleted: BTreeMap<EnvName, u64>,
}

/// Converts `data_dir/cohort.json` to `data_dir/envs/`, returning the outcome counts it
/// held (the caller keeps them with the others).
pub fn migrate(data_dir: &Path, retention: usize) -> Result<BTreeMap<EnvName, OutcomeBuckets>, OpenError> {
    let legacy = data_dir.join(LEGACY_FILE);
    let bytes = std::fs::read(&legacy).map_err(|source| OpenError::Io { path: legacy.clone(), source })?;
    let corrupt = |message: String| OpenError::Corrupt { path: legacy.clone(), message };
    let mut data: FileData = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if data.format != LEGACY_FORMAT {
        return Err(corrupt(format!("unknown format {} (this version reads format {LEGACY_FORMAT})", data.format)));
    }
    let staging = data_dir.join(STAGING_DIR);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| OpenError::Io { path, source }
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let mut states: Vec<(EnvName, EnvState)> = Vec::new();
    for (env, revision) in std::mem::take(&mut data.deleted) {
        states.push((env, EnvState::Deleted { revision }));
    }
    for (env, env_data) in std::mem::take(&mut data.environments) {
        let mut audit = data.audit.remove(&env).unwrap_or_default();
        while audit.len() > retention {
            audit.pop_front();
        }
        states.retain(|(e, _)| *e != env);
        states.push((env, EnvState::Live { data: Box::new(env_data), audit }));
    }
    for (env, state) in states {
        let dir = staging.join(env.as_str());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // Journal generation 1 is the first one after this snapshot.
        write_snapshot(&dir, 0, Some(state)).map_err(io(&dir))?;
    }
    sync_dir(&staging)?;
    let envs = data_dir.join(ENVS_DIR);
    std::fs::rename(&staging, &envs).map_err(io(&envs))?;
    sync_dir(data_dir)?;
    tracing::info!(from = %legacy.display(), to = %envs.display(), "converted the embedded data file to one journal per environment");
    finish(data_dir)?;
    Ok(data.outcome_buckets)
}

/// Renames the converted `cohort.json` out of the way, durably.
pub fn finish(data_dir: &Path) -> Result<(), OpenError> {
    let legacy = data_dir.join(LEGACY_FILE);
    let migrated = data_dir.join(MIGRATED_FILE);
    std::fs::rename(&legacy, &migrated).map_err(|source| OpenError::Io { path: legacy.clone(), source })?;
    sync_dir(data_dir)
}

fn sync_dir(dir: &Path) -> Result<(), OpenError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| OpenError::Io { path: dir.to_owned(), source })
}
