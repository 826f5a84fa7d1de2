//! The journal of kills this instance served while its store could not take them (down,
//! or regressed): the on-call engineer's one lever keeps working exactly when things go
//! wrong. Each kill, unkill, kill-all or unkill-all is laid over the served snapshot at
//! once ([`crate::snapshots::Snapshots::lay_kill`]), answered 202 `"persisted": false`,
//! and recorded here — one entry per target, the latest intent wins, so a later unkill
//! cancels a pending kill — in `pending-kills.json` in the data directory (temp file +
//! fsync + rename), so a restarted instance still serves it. When the store is usable
//! again each entry is written through the ordinary domain operation (idempotent: a kill
//! another instance already wrote is not written twice) and then dropped.

use crate::snapshots::{KillState, KillTarget};
use crate::store::EnvName;
use crate::store_watch::{WatchError, write_atomically};
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
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| WatchError { path: path.clone(), message: e.to_string() })?,
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
