//! One environment's files under `envs/<env>/`: `snapshot.json` (the environment as of
//! the end of journal generation G, written whole, atomically) and `journal-<g>.log` for
//! every g > G (one record per write since). Loading reads the snapshot and replays the
//! newer journals; compaction folds journals into a new snapshot in the background.
//!
//! Crash safety of compaction comes from generations: the writer first moves on to a new
//! journal, then the compactor writes a snapshot covering the old ones (temp + fsync +
//! rename) and only then deletes them. A crash before the rename leaves the old snapshot
//! and every journal; after it, the new snapshot says which journals it covers and the
//! loader ignores (and removes) those that are left.

use super::OpenError;
use super::journal::{self, Journal};
use crate::store::durable::write_atomically;
use crate::store::{AuditEntry, Change, ChangeKind, EnvData, StoredRelease, revocations_insert};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// The directory holding one subdirectory per environment.
pub const ENVS_DIR: &str = "envs";
const SNAPSHOT_FILE: &str = "snapshot.json";
const FORMAT: u32 = 2;

/// What is stored for an environment that exists or existed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EnvState {
    /// It exists: its data and its audit log (newest last, capped at the retention).
    Live { data: Box<EnvData>, audit: VecDeque<AuditEntry> },
    /// It was deleted on purpose at `revision` (a tombstone).
    Deleted { revision: u64 },
}

/// One journal record: one acknowledged write.
// Records are written and dropped at once; boxing the change would only add an
// indirection (as for `ChangeKind`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The environment was created (or re-created) at `revision`.
    Created { revision: u64 },
    /// A configuration write and its audit entry.
    Write { change: Change, audit: AuditEntry },
    /// An operator's reseed: the whole new state and its audit entry.
    Reseed { data: Box<EnvData>, audit: AuditEntry },
    /// The environment was deleted at `revision`.
    Deleted { revision: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    /// Journals of this generation and older are folded in.
    through_journal: u64,
    state: Option<EnvState>,
}

/// An environment's files, read.
#[derive(Debug)]
pub struct Loaded {
    /// `None`: the directory holds no environment (created, but the creation was never
    /// acknowledged).
    pub state: Option<EnvState>,
    /// The newest journal generation read and its whole records' length, or the first
    /// generation to write when there is none.
    pub generation: u64,
    pub journal_len: u64,
    /// Journals the snapshot already covers (left by a crash during compaction).
    pub stale: Vec<PathBuf>,
}

/// The journal file of generation `generation`.
pub fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation:020}.log"))
}

fn journals(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let generation = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("journal-")?.strip_suffix(".log")?.parse::<u64>().ok());
        if let Some(generation) = generation {
            found.push((generation, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads the environment in `dir`: its snapshot, then its journals up to generation
/// `up_to` (all when `None`). Only when reading all may the newest journal end in a torn
/// record, which is dropped with a warning; any other damage is an error naming the file.
pub fn load(dir: &Path, retention: usize, up_to: Option<u64>) -> Result<Loaded, OpenError> {
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let corrupt = |path: &Path, message: String| OpenError::Corrupt { path: path.to_owned(), message };
    let snapshot = match std::fs::read(&snapshot_path) {
        Ok(bytes) => {
            let snapshot: Snapshot =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&snapshot_path, e.to_string()))?;
            if snapshot.format != FORMAT {
                let message = format!("unknown format {} (this version reads format {FORMAT})", snapshot.format);
                return Err(corrupt(&snapshot_path, message));
            }
            snapshot
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Snapshot { format: FORMAT, through_journal: 0, state: None }
        }
        Err(source) => return Err(OpenError::Io { path: snapshot_path, source }),
    };
    let all = journals(dir).map_err(|source| OpenError::Io { path: dir.to_owned(), source })?;
    let (stale, newer): (Vec<_>, Vec<_>) = all.into_iter().partition(|(g, _)| *g <= snapshot.through_journal);
    let newer: Vec<_> = newer.into_iter().filter(|(g, _)| up_to.is_none_or(|u| *g <= u)).collect();
    let mut state = snapshot.state;
    let mut generation = snapshot.through_journal + 1;
    let mut journal_len = 0;
    for (i, (g, path)) in newer.iter().enumerate() {
        let contents = journal::read(path).map_err(|e| match e {
            journal::ReadError::Io(source) => OpenError::Io { path: path.clone(), source },
            corrupt_record => corrupt(path, corrupt_record.to_string()),
        })?;
        if let Some(tail) = &contents.torn_tail {
            if up_to.is_some() || i + 1 < newer.len() {
                return Err(corrupt(path, format!("a damaged record in a finished journal: {tail}")));
            }
            tracing::warn!(
                journal = %path.display(),
                %tail,
                "the journal ends in a torn record (a write cut short by a crash, never acknowledged); dropping it"
            );
        }
        for (n, payload) in contents.records.iter().enumerate() {
            let record: Record = serde_json::from_slice(payload)
                .map_err(|e| corrupt(path, format!("record {n} does not decode: {e}")))?;
            replay(&mut state, record, retention).map_err(|message| corrupt(path, format!("record {n}: {message}")))?;
        }
        generation = *g;
        journal_len = contents.valid_len;
    }
    Ok(Loaded { state, generation, journal_len, stale: stale.into_iter().map(|(_, p)| p).collect() })
}

/// Applies one journal record to an environment's state. Records the state already
/// holds (a revision at or below its own) are skipped; a gap is an error.
pub fn replay(state: &mut Option<EnvState>, record: Record, retention: usize) -> Result<(), String> {
    match record {
        Record::Created { revision } => match state {
            None | Some(EnvState::Deleted { .. }) => {
                *state = Some(EnvState::Live {
                    data: Box::new(EnvData { revision, ..EnvData::default() }),
                    audit: VecDeque::new(),
                });
            }
            Some(EnvState::Live { data, .. }) if data.revision >= revision => {}
            Some(EnvState::Live { .. }) => return Err("creation of an environment that exists".into()),
        },
        Record::Write { change, audit: entry } => {
            let Some(EnvState::Live { data, audit }) = state else {
                return Err(format!("write at revision {} to an environment that does not exist", change.revision));
            };
            if change.revision <= data.revision {
                return Ok(());
            }
            if change.revision != data.revision + 1 {
                return Err(format!("revision {} follows revision {}", change.revision, data.revision));
            }
            apply_change(data, change)?;
            push_audit(audit, entry, retention);
        }
        Record::Reseed { data: seeded, audit: entry } => {
            let mut audit = match state.take() {
                Some(EnvState::Live { data, audit }) if data.revision >= seeded.revision => {
                    *state = Some(EnvState::Live { data, audit });
                    return Ok(());
                }
                Some(EnvState::Live { audit, .. }) => audit,
                _ => VecDeque::new(),
            };
            push_audit(&mut audit, entry, retention);
            *state = Some(EnvState::Live { data: seeded, audit });
        }
        Record::Deleted { revision } => match state {
            Some(EnvState::Live { data, .. }) if data.revision == revision => {
                *state = Some(EnvState::Deleted { revision });
            }
            Some(EnvState::Deleted { revision: r }) if *r == revision => {}
            _ => return Err(format!("deletion at revision {revision} of an environment not at that revision")),
        },
    }
    Ok(())
}

/// Appends `entry`, dropping the oldest beyond `retention`.
pub fn push_audit(audit: &mut VecDeque<AuditEntry>, entry: AuditEntry, retention: usize) {
    audit.push_back(entry);
    while audit.len() > retention {
        audit.pop_front();
    }
}

/// Applies a recorded change (which the write already validated) to `data`.
fn apply_change(data: &mut EnvData, change: Change) -> Result<(), String> {
    let position = |data: &EnvData, key: &str| data.releases.binary_search_by(|r| r.release.key.as_str().cmp(key));
    match change.kind {
        ChangeKind::Upsert { release } => match position(data, &release.key) {
            Ok(at) => data.releases[at] = StoredRelease { revision: change.revision, release },
            Err(at) => data.releases.insert(at, StoredRelease { revision: change.revision, release }),
        },
        ChangeKind::Delete { key } => {
            let at = position(data, &key).map_err(|_| format!("deletion of `{key}`, which does not exist"))?;
            data.releases.remove(at);
        }
        ChangeKind::KillAll { on, reason } => {
            data.kill_all = on;
            data.kill_reason = reason;
        }
        ChangeKind::Revoke { revocation } => {
            revocations_insert(&mut data.revocations, revocation);
        }
    }
    data.revision = change.revision;
    Ok(())
}

/// Writes `state` as the snapshot of `dir` covering journals up to `through_journal`.
pub fn write_snapshot(dir: &Path, through_journal: u64, state: Option<EnvState>) -> std::io::Result<()> {
    let snapshot = Snapshot { format: FORMAT, through_journal, state };
    let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
    write_atomically(&dir.join(SNAPSHOT_FILE), &bytes)
}

/// Creates journal `generation` in `dir`, durably (the directory entry is synced).
pub fn new_journal(dir: &Path, generation: u64) -> std::io::Result<Journal> {
    let journal = Journal::open(&journal_path(dir, generation), 0)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(journal)
}

/// Folds the journals of `dir` up to generation `through` into a new snapshot, then
/// removes them. Reads the files, not the store's memory, so it holds no lock the
/// writers need.
pub fn compact(dir: &Path, through: u64, retention: usize) -> Result<(), String> {
    let loaded = load(dir, retention, Some(through)).map_err(|e| e.to_string())?;
    write_snapshot(dir, through, loaded.state)
        .map_err(|e| format!("cannot write {}: {e}", dir.join(SNAPSHOT_FILE).display()))?;
    remove_stale(dir).map_err(|e| format!("cannot remove compacted journals in {}: {e}", dir.display()))
}

/// Removes the journals the snapshot of `dir` covers.
pub fn remove_stale(dir: &Path) -> std::io::Result<()> {
    let through = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => serde_json::from_slice::<Snapshot>(&bytes).map_err(std::io::Error::other)?.through_journal,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut removed = false;
    for (generation, path) in journals(dir)? {
        if generation <= through {
            std::fs::remove_file(path)?;
            removed = true;
        }
    }
    if removed {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
