//! What this instance knows about its store beyond the data: the highest revision it has
//! seen per environment (its high-water mark), which environments the store holds an
//! older state of than that (regressed), and whether the store answers at all.
//!
//! The store can go backwards — Redis restarted from an older dump, emptied, or a lagging
//! replica promoted. An instance must notice rather than adopt the older data: it keeps
//! serving its last good snapshot, refuses writes there ([`StoreError::Regressed`]) and
//! says so (ERROR log, `cohort_store_regressed`, `/readyz`) until an operator reseeds the
//! store above the mark. The marks are kept in the data directory
//! (`high-water.json`, written by temp file + fsync + rename) so that a restarted
//! instance still knows what it had seen.

use crate::store::durable::write_atomically;
use crate::store::{EnvName, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file of marks inside the data directory.
pub const HIGH_WATER_FILE: &str = "high-water.json";

/// The folder of last good snapshots inside the data directory, one file per
/// environment: what a restarted instance serves when it finds its store went backwards.
pub const LAST_GOOD_DIR: &str = "last-good";

/// Why an environment's stored state is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Regression {
    /// The store's revision when found (`None`: the environment vanished from it).
    pub stored: Option<u64>,
    /// The highest revision this instance had seen.
    pub seen: u64,
    /// When it was found, ms since the epoch.
    pub since_ms: u64,
}

impl Regression {
    /// As the store error a refused write answers.
    pub fn error(&self, env: &EnvName) -> StoreError {
        StoreError::Regressed { env: env.to_string(), stored: self.stored.unwrap_or(0), seen: self.seen }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Marks {
    /// Environment → highest revision seen.
    #[serde(default)]
    environments: BTreeMap<EnvName, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    marks: Marks,
    dirty: bool,
    regressed: BTreeMap<EnvName, Regression>,
    unreachable: Option<String>,
}

/// The store as this instance sees it. Cheap to share behind an `Arc`; every method
/// takes a short lock and never waits on I/O except [`StoreWatch::persist`].
#[derive(Debug, Default)]
pub struct StoreWatch {
    path: Option<PathBuf>,
    last_good: Option<PathBuf>,
    inner: Mutex<Inner>,
}

/// The marks file cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the high-water marks {path}: {message}")]
pub struct WatchError {
    pub path: PathBuf,
    pub message: String,
}

impl StoreWatch {
    /// Marks kept in memory only (tests, tools).
    pub fn in_memory() -> Self {
        StoreWatch::default()
    }

    /// Marks kept in `data_dir`, loading those a previous run left.
    pub fn open(data_dir: &Path) -> Result<Self, WatchError> {
        let path = data_dir.join(HIGH_WATER_FILE);
        let error = |message: String| WatchError { path: path.clone(), message };
        let marks = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| error(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Marks::default(),
            Err(e) => return Err(error(e.to_string())),
        };
        Ok(StoreWatch {
            path: Some(path),
            last_good: Some(data_dir.join(LAST_GOOD_DIR)),
            inner: Mutex::new(Inner { marks, ..Inner::default() }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `env` was served at `revision`.
    pub fn observe(&self, env: &EnvName, revision: u64) {
        let mut inner = self.lock();
        let raised = match inner.marks.environments.get_mut(env) {
            Some(mark) if *mark >= revision => false,
            Some(mark) => {
                *mark = revision;
                true
            }
            None => {
                inner.marks.environments.insert(env.clone(), revision);
                true
            }
        };
        inner.dirty |= raised;
    }

    /// The highest revision seen for `env` (0 when never seen).
    pub fn mark(&self, env: &EnvName) -> u64 {
        self.lock().marks.environments.get(env).copied().unwrap_or(0)
    }

    /// Whether `env` was ever seen by this instance (or a previous run of it).
    pub fn knows(&self, env: &EnvName) -> bool {
        self.lock().marks.environments.contains_key(env)
    }

    /// Every environment ever seen.
    pub fn known(&self) -> Vec<EnvName> {
        self.lock().marks.environments.keys().cloned().collect()
    }

    /// True when no environment was ever seen: a new deployment.
    pub fn is_new(&self) -> bool {
        self.lock().marks.environments.is_empty()
    }

    /// Forgets `env`: it was deleted on purpose.
    pub fn forget(&self, env: &EnvName) {
        let mut inner = self.lock();
        if inner.marks.environments.remove(env).is_some() {
            inner.dirty = true;
        }
        inner.regressed.remove(env);
    }

    /// Flags `env` as regressed; true when it was not flagged before (log then).
    pub fn set_regressed(&self, env: &EnvName, stored: Option<u64>) -> bool {
        let mut inner = self.lock();
        let seen = inner.marks.environments.get(env).copied().unwrap_or(0);
        if inner.regressed.contains_key(env) {
            return false;
        }
        let since_ms = crate::ramp::now_ms();
        inner.regressed.insert(env.clone(), Regression { stored, seen, since_ms });
        true
    }

    /// Clears the flag (after a reseed); true when it was set.
    pub fn clear_regressed(&self, env: &EnvName) -> bool {
        self.lock().regressed.remove(env).is_some()
    }

    /// Why `env` is regressed, if it is.
    pub fn regressed(&self, env: &EnvName) -> Option<Regression> {
        self.lock().regressed.get(env).cloned()
    }

    /// Every regressed environment.
    pub fn all_regressed(&self) -> BTreeMap<EnvName, Regression> {
        self.lock().regressed.clone()
    }

    /// Records whether the store answered (`None`) or why not.
    pub fn set_unreachable(&self, why: Option<String>) {
        self.lock().unreachable = why;
    }

    /// Why the store does not answer, if it does not.
    pub fn unreachable(&self) -> Option<String> {
        self.lock().unreachable.clone()
    }

    /// Keeps `data` as `env`'s last good state (blocking I/O: call it off the runtime).
    pub fn keep_last_good(&self, env: &EnvName, data: &crate::store::EnvData) -> std::io::Result<()> {
        let Some(dir) = &self.last_good else { return Ok(()) };
        let bytes = serde_json::to_vec(data).map_err(std::io::Error::other)?;
        write_atomically(&dir.join(format!("{env}.json")), &bytes)
    }

    /// `env`'s last good state as a previous run kept it, if any.
    pub fn last_good(&self, env: &EnvName) -> Option<crate::store::EnvData> {
        let path = self.last_good.as_ref()?.join(format!("{env}.json"));
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(data) => Some(data),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "the last good snapshot cannot be read");
                None
            }
        }
    }

    /// Writes the marks if they changed since the last write.
    pub fn persist(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let bytes = {
            let mut inner = self.lock();
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            serde_json::to_vec_pretty(&inner.marks).map_err(std::io::Error::other)?
        };
        let result = write_atomically(path, &bytes);
        if result.is_err() {
            self.lock().dirty = true;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> EnvName {
        EnvName::parse(name).expect("env")
    }

    #[test]
    fn marks_only_rise_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let watch = StoreWatch::open(dir.path()).expect("opens");
        assert!(watch.is_new());
        watch.observe(&env("production"), 7);
        watch.observe(&env("production"), 3);
        watch.observe(&env("staging"), 0);
        assert_eq!(watch.mark(&env("production")), 7);
        watch.persist().expect("persists");

        let again = StoreWatch::open(dir.path()).expect("reopens");
        assert_eq!(again.mark(&env("production")), 7);
        assert!(again.knows(&env("staging")));
        again.forget(&env("staging"));
        assert!(!again.knows(&env("staging")));
    }

    #[test]
    fn a_regression_is_flagged_once_and_cleared() {
        let watch = StoreWatch::in_memory();
        watch.observe(&env("production"), 9);
        assert!(watch.set_regressed(&env("production"), Some(4)));
        assert!(!watch.set_regressed(&env("production"), None));
        let regression = watch.regressed(&env("production")).expect("flagged");
        assert_eq!((regression.stored, regression.seen), (Some(4), 9));
        assert!(watch.clear_regressed(&env("production")));
        assert!(watch.regressed(&env("production")).is_none());
    }
}
