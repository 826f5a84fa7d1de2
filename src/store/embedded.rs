//! The embedded store: everything in memory, persisted in the data directory, reloaded
//! at start. No setup; one instance — enforced: the store holds an exclusive lock on the
//! directory's lock file for its whole life (see `DirLock`).
//!
//! Persistence is one directory per environment (`envs/<env>/`, see [`env_files`]): an
//! append-only journal with one checksummed record per write (the change and its audit
//! entry), synced before the write is acknowledged, and a snapshot rewritten in the
//! background when the journal has grown past `compact_after_bytes`. A write therefore
//! costs one small append and one `fdatasync` however many releases the store holds,
//! and environments never wait on each other's data. Outcome counts, which SDKs report
//! continuously, are not journalled: they go to `outcomes.json` at most every
//! [`OUTCOME_SAVE_INTERVAL`] and on shutdown.
//!
//! Concurrency: one async mutex serialises writers and is held across the journal
//! append, so the journal and memory never disagree about the order of changes. Writes
//! are rare and evaluation never touches this store (it reads the server's snapshot), so
//! the mutex costs nothing on the hot path.

mod env_files;
mod journal;
mod legacy;

use super::apply::apply;
use super::durable::write_atomically;
use super::outcomes::{field, split_field};
use super::{
    AuditEntry, AuditQuery, Bucket, BucketCounts, Change, EnvData, EnvName, NodeReport, OUTCOME_TTL_SECS, OutcomeCount,
    Revocation, SdkAck, Store, StoreError, StoredRelease, Write, WriteMeta,
};
use async_trait::async_trait;
use env_files::{ENVS_DIR, EnvState, Record};
use journal::Journal;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

pub use legacy::{LEGACY_FILE, MIGRATED_FILE};

/// The lock file's name inside the data directory: its lock marks the directory's one
/// writer, its content is that writer's pid.
pub const LOCK_FILE: &str = "cohort.lock";
/// Outcome counts of every environment, inside the data directory.
pub const OUTCOMES_FILE: &str = "outcomes.json";
/// The default journal size past which an environment's snapshot is rewritten.
pub const DEFAULT_COMPACT_AFTER_BYTES: u64 = 8 * 1024 * 1024;
/// How often, at most, reported outcome counts are written to [`OUTCOMES_FILE`] while
/// reports arrive (and always on shutdown): a crash loses at most this much of them.
pub const OUTCOME_SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// How many recent changes per environment are kept for followers.
const HISTORY: usize = 1_024;

/// Errors opening the data directory; they stop start-up and name the file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory or file cannot be read or created.
    #[error("cannot use data file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file exists but is not a valid cohort data file (edited, corrupt, or damaged
    /// before its last record).
    #[error(
        "data file {path} is corrupt and was not loaded: {message}. Restore the data directory from a backup or move it away to start empty"
    )]
    Corrupt { path: PathBuf, message: String },
    /// Another process holds the directory. Two writers would both acknowledge writes
    /// at the same revision and the files would keep only one of them.
    #[error(
        "data directory {dir} is in use by another cohort process ({}); only one process may use an embedded data directory: stop that one or give this one another --data-dir",
        holder_text(*.holder)
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it into the lock file (`None` if it has not yet).
        holder: Option<u32>,
    },
}

fn holder_text(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("pid {pid}"),
        None => "pid not yet written".to_owned(),
    }
}

/// The data directory's exclusive lock, held as long as this value lives.
///
/// An advisory `flock`-style lock on [`LOCK_FILE`] (std's [`std::fs::File::try_lock`]):
/// the kernel drops it when the process ends however it ends, so a lock file left by a
/// crashed process holds no lock and does not block the next start. The file itself is
/// never deleted — removing it while another process waits to lock it would let two
/// processes each hold a lock on a different file of the same name.
#[derive(Debug)]
struct DirLock {
    file: std::fs::File,
}

impl DirLock {
    /// Takes the lock on `dir`'s lock file (creating it) and writes this process's pid
    /// into it, or says which process holds it.
    fn acquire(dir: &Path) -> Result<DirLock, OpenError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| OpenError::Io { path: path.clone(), source };
        // Not truncated on open: until the lock is ours, the content is the holder's pid.
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                // Best effort: the holder may be between taking the lock and writing.
                let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(OpenError::Locked { dir: dir.to_owned(), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first also releases it if a
        // child process ever inherited the descriptor.
        let _ = self.file.unlock();
    }
}

/// Bucket start (ms since the epoch) → `release\x1fversion` → (ok, error).
type OutcomeBuckets = BTreeMap<u64, BTreeMap<String, (u64, u64)>>;

/// How the embedded store keeps its files.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedOptions {
    /// Audit entries kept per environment (at least 1).
    pub audit_retention: usize,
    /// Journal size past which an environment's snapshot is rewritten in the background.
    pub compact_after_bytes: u64,
}

impl EmbeddedOptions {
    /// Keeps `audit_retention` audit entries, compacts at the default size.
    pub fn new(audit_retention: usize) -> Self {
        EmbeddedOptions { audit_retention, compact_after_bytes: DEFAULT_COMPACT_AFTER_BYTES }
    }
}

/// One environment's memory and its open journal.
struct EnvSlot {
    /// `None` while nothing acknowledged exists in its directory.
    state: Option<EnvState>,
    journal: Arc<std::sync::Mutex<Journal>>,
    /// The generation `journal` is.
    generation: u64,
    history: VecDeque<Change>,
    /// A compaction of this environment runs in the background.
    compacting: Arc<AtomicBool>,
}

impl EnvSlot {
    fn live(&self) -> Option<(&EnvData, &VecDeque<AuditEntry>)> {
        match &self.state {
            Some(EnvState::Live { data, audit }) => Some((&**data, audit)),
            _ => None,
        }
    }
}

struct State {
    envs: BTreeMap<EnvName, EnvSlot>,
    outcomes: BTreeMap<EnvName, OutcomeBuckets>,
    /// Bumped by every change to `outcomes`; the file knows which one it holds.
    outcomes_seq: u64,
    outcomes_saved_at: Instant,
    /// SDK acknowledgements: liveness data, deliberately not persisted.
    acks: HashMap<EnvName, HashMap<String, SdkAck>>,
    /// Fleet heartbeats, also liveness data: (environment, fleet) → node → report.
    nodes: HashMap<(EnvName, String), HashMap<String, NodeReport>>,
}

/// The embedded store.
pub struct EmbeddedStore {
    dir: PathBuf,
    state: Mutex<State>,
    /// Bumped after every committed write; wakes [`Store::changes_after`] waiters.
    written: watch::Sender<u64>,
    options: EmbeddedOptions,
    /// The sequence number of the outcome counts in [`OUTCOMES_FILE`]; held while
    /// writing it, so two saves never interleave and an older one never lands last.
    outcomes_saved: Arc<std::sync::Mutex<u64>>,
    /// This store is the data directory's one writer for as long as it lives; a
    /// compaction still running keeps the directory locked until it is done.
    lock: Arc<DirLock>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`, keeping the newest `audit_retention`
    /// audit entries per environment. Fails with [`OpenError::Locked`] while another
    /// store (in this process or another) has the directory.
    pub fn open(data_dir: &Path, audit_retention: usize) -> Result<Self, OpenError> {
        Self::open_with(data_dir, EmbeddedOptions::new(audit_retention))
    }

    /// [`EmbeddedStore::open`] with every option. A directory holding the first layout
    /// (`cohort.json`) is converted on the way (see [`legacy`]).
    pub fn open_with(data_dir: &Path, options: EmbeddedOptions) -> Result<Self, OpenError> {
        let options = EmbeddedOptions { audit_retention: options.audit_retention.max(1), ..options };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::Io { path, source }
        };
        std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        // Before reading the files: what they hold is only current if no one else writes.
        let lock = DirLock::acquire(data_dir)?;
        let envs_dir = data_dir.join(ENVS_DIR);
        let legacy = data_dir.join(LEGACY_FILE);
        let mut legacy_outcomes = None;
        if !envs_dir.exists() {
            if legacy.exists() {
                legacy_outcomes = Some(legacy::migrate(data_dir, options.audit_retention)?);
            } else {
                std::fs::create_dir_all(&envs_dir).map_err(io(&envs_dir))?;
                std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io(data_dir))?;
            }
        } else if legacy.exists() {
            // Converted, but stopped before the old file was renamed.
            legacy::finish(data_dir)?;
        }

        let mut envs = BTreeMap::new();
        for entry in std::fs::read_dir(&envs_dir).map_err(io(&envs_dir))? {
            let path = entry.map_err(io(&envs_dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| EnvName::parse(n).ok()) else {
                tracing::warn!(path = %path.display(), "ignoring a file that is not an environment's directory");
                continue;
            };
            if !path.is_dir() {
                continue;
            }
            let loaded = env_files::load(&path, options.audit_retention, None)?;
            if !loaded.stale.is_empty() {
                // Left by a crash between a compaction's snapshot and its clean-up.
                env_files::remove_stale(&path).map_err(io(&path))?;
            }
            let journal_path = env_files::journal_path(&path, loaded.generation);
            let journal = Journal::open(&journal_path, loaded.journal_len).map_err(io(&journal_path))?;
            std::fs::File::open(&path).and_then(|d| d.sync_all()).map_err(io(&path))?;
            envs.insert(
                name,
                EnvSlot {
                    state: loaded.state,
                    journal: Arc::new(std::sync::Mutex::new(journal)),
                    generation: loaded.generation,
                    history: VecDeque::new(),
                    compacting: Arc::new(AtomicBool::new(false)),
                },
            );
        }

        let outcomes_path = data_dir.join(OUTCOMES_FILE);
        let mut outcomes: BTreeMap<EnvName, OutcomeBuckets> = match std::fs::read(&outcomes_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| OpenError::Corrupt { path: outcomes_path.clone(), message: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(OpenError::Io { path: outcomes_path, source }),
        };
        if let Some(converted) = legacy_outcomes {
            outcomes = converted;
            let bytes = serde_json::to_vec(&outcomes)
                .map_err(|e| OpenError::Corrupt { path: outcomes_path.clone(), message: e.to_string() })?;
            write_atomically(&outcomes_path, &bytes).map_err(io(&outcomes_path))?;
        }

        Ok(EmbeddedStore {
            dir: data_dir.to_owned(),
            state: Mutex::new(State {
                envs,
                outcomes,
                outcomes_seq: 0,
                outcomes_saved_at: Instant::now(),
                acks: HashMap::new(),
                nodes: HashMap::new(),
            }),
            written: watch::channel(0).0,
            options,
            outcomes_saved: Arc::new(std::sync::Mutex::new(0)),
            lock: Arc::new(lock),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of `env`'s files.
    pub fn env_dir(&self, env: &EnvName) -> PathBuf {
        self.dir.join(ENVS_DIR).join(env.as_str())
    }

    /// The slot of `env`, creating its directory and first journal when it has none.
    fn slot_or_new<'a>(
        &self,
        envs: &'a mut BTreeMap<EnvName, EnvSlot>,
        env: &EnvName,
    ) -> Result<&'a mut EnvSlot, StoreError> {
        if !envs.contains_key(env) {
            let dir = self.env_dir(env);
            let unavailable =
                |e: std::io::Error| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()));
            std::fs::create_dir_all(&dir).map_err(unavailable)?;
            std::fs::File::open(self.dir.join(ENVS_DIR)).and_then(|d| d.sync_all()).map_err(unavailable)?;
            let journal = env_files::new_journal(&dir, 1).map_err(unavailable)?;
            envs.insert(
                env.clone(),
                EnvSlot {
                    state: None,
                    journal: Arc::new(std::sync::Mutex::new(journal)),
                    generation: 1,
                    history: VecDeque::new(),
                    compacting: Arc::new(AtomicBool::new(false)),
                },
            );
        }
        envs.get_mut(env).ok_or_else(|| StoreError::EnvironmentNotFound(env.to_string()))
    }

    /// Appends `record` to `slot`'s journal and syncs it; past the compaction size, moves
    /// on to a new journal and folds the finished ones into a snapshot in the background.
    async fn append(&self, env: &EnvName, slot: &mut EnvSlot, record: &Record) -> Result<(), StoreError> {
        let payload = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let journal = slot.journal.clone();
        let rotate_to = (!slot.compacting.load(Ordering::Acquire)).then_some(slot.generation + 1);
        let (dir, limit) = (self.env_dir(env), self.options.compact_after_bytes);
        let rotated = tokio::task::spawn_blocking(move || {
            let mut journal = journal.lock().unwrap_or_else(PoisonError::into_inner);
            journal
                .append(&payload)
                .map_err(|e| StoreError::Unavailable(format!("cannot write {}: {e}", journal.path().display())))?;
            let Some(next) = rotate_to.filter(|_| journal.len() >= limit) else { return Ok(None) };
            match env_files::new_journal(&dir, next) {
                Ok(new) => {
                    *journal = new;
                    Ok(Some(next))
                }
                Err(error) => {
                    // The write is durable; compaction waits for the next one.
                    tracing::warn!(%error, dir = %dir.display(), "cannot start a new journal; compaction postponed");
                    Ok(None)
                }
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("journal writer stopped: {e}")))??;
        if let Some(next) = rotated {
            slot.generation = next;
            slot.compacting.store(true, Ordering::Release);
            let (flag, lock, retention) = (slot.compacting.clone(), self.lock.clone(), self.options.audit_retention);
            let dir = self.env_dir(env);
            tokio::task::spawn_blocking(move || {
                let _lock = lock;
                let started = Instant::now();
                match env_files::compact(&dir, next - 1, retention) {
                    Ok(()) => {
                        tracing::debug!(dir = %dir.display(), took_ms = started.elapsed().as_millis() as u64, "compacted")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "compaction failed; the journals are kept and it is retried later")
                    }
                }
                flag.store(false, Ordering::Release);
            });
        }
        Ok(())
    }

    /// Writes the outcome counts to [`OUTCOMES_FILE`] (dropping expired ones first).
    /// The returned task writes them; callers that need them durable await it.
    fn save_outcomes(&self, state: &mut State, now_ms: u64) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let oldest = Bucket::containing(now_ms.saturating_sub(OUTCOME_TTL_SECS * 1_000)).start_ms();
        for buckets in state.outcomes.values_mut() {
            *buckets = buckets.split_off(&oldest);
        }
        state.outcomes.retain(|_, b| !b.is_empty());
        state.outcomes_seq += 1;
        state.outcomes_saved_at = Instant::now();
        let seq = state.outcomes_seq;
        let bytes = serde_json::to_vec(&state.outcomes);
        let (saved, path) = (self.outcomes_saved.clone(), self.dir.join(OUTCOMES_FILE));
        tokio::task::spawn_blocking(move || {
            let bytes = bytes.map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let mut saved = saved.lock().unwrap_or_else(PoisonError::into_inner);
            if *saved < seq {
                write_atomically(&path, &bytes)
                    .map_err(|e| StoreError::Unavailable(format!("cannot write {}: {e}", path.display())))?;
                *saved = seq;
            }
            Ok(())
        })
    }

    fn committed(&self) {
        self.written.send_modify(|n| *n += 1);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a write may change in memory, kept to put back if its record cannot be written:
/// a write touches one release (or the kill switch, or the revocations), so undoing it
/// costs nothing like copying the environment.
struct Undo {
    revision: u64,
    kill_all: bool,
    kill_reason: Option<String>,
    release: Option<(String, Option<StoredRelease>)>,
    revocations: Option<Vec<Revocation>>,
}

impl Undo {
    fn capture(data: &EnvData, write: &Write) -> Undo {
        let key = match write {
            Write::Create(release) | Write::Update { release, .. } => Some(release.key.as_str()),
            Write::Delete { key, .. } => Some(key.as_str()),
            Write::KillAll { .. } | Write::Revoke(_) => None,
        };
        let release = key.map(|key| {
            let current = data.releases.binary_search_by(|r| r.release.key.as_str().cmp(key)).ok();
            (key.to_owned(), current.map(|at| data.releases[at].clone()))
        });
        Undo {
            revision: data.revision,
            kill_all: data.kill_all,
            kill_reason: data.kill_reason.clone(),
            release,
            revocations: matches!(write, Write::Revoke(_)).then(|| data.revocations.clone()),
        }
    }

    fn restore(self, data: &mut EnvData) {
        data.revision = self.revision;
        data.kill_all = self.kill_all;
        data.kill_reason = self.kill_reason;
        if let Some((key, before)) = self.release {
            let at = data.releases.binary_search_by(|r| r.release.key.as_str().cmp(&key));
            match (at, before) {
                (Ok(at), Some(before)) => data.releases[at] = before,
                (Ok(at), None) => _ = data.releases.remove(at),
                (Err(at), Some(before)) => data.releases.insert(at, before),
                (Err(_), None) => {}
            }
        }
        if let Some(revocations) = self.revocations {
            data.revocations = revocations;
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn environments(&self) -> Result<Vec<EnvName>, StoreError> {
        let state = self.state.lock().await;
        Ok(state.envs.iter().filter(|(_, s)| s.live().is_some()).map(|(e, _)| e.clone()).collect())
    }

    async fn deleted_environments(&self) -> Result<Vec<(EnvName, u64)>, StoreError> {
        let state = self.state.lock().await;
        Ok(state
            .envs
            .iter()
            .filter_map(|(e, s)| match s.state {
                Some(EnvState::Deleted { revision }) => Some((e.clone(), revision)),
                _ => None,
            })
            .collect())
    }

    async fn create_environment(&self, env: &EnvName) -> Result<u64, StoreError> {
        let mut state = self.state.lock().await;
        let slot = self.slot_or_new(&mut state.envs, env)?;
        let revision = match slot.state {
            Some(EnvState::Live { .. }) => return Err(StoreError::EnvironmentExists(env.to_string())),
            Some(EnvState::Deleted { revision }) => revision,
            None => 0,
        };
        self.append(env, slot, &Record::Created { revision }).await?;
        slot.state =
            Some(EnvState::Live { data: Box::new(EnvData { revision, ..EnvData::default() }), audit: VecDeque::new() });
        drop(state);
        self.committed();
        Ok(revision)
    }

    async fn delete_environment(&self, env: &EnvName) -> Result<u64, StoreError> {
        let mut state = self.state.lock().await;
        let slot = state.envs.get_mut(env).filter(|s| s.live().is_some());
        let Some(slot) = slot else { return Err(StoreError::EnvironmentNotFound(env.to_string())) };
        let Some((data, _)) = slot.live() else { return Err(StoreError::EnvironmentNotFound(env.to_string())) };
        if !data.releases.is_empty() {
            return Err(StoreError::EnvironmentNotEmpty { env: env.to_string(), releases: data.releases.len() });
        }
        let revision = data.revision;
        self.append(env, slot, &Record::Deleted { revision }).await?;
        slot.state = Some(EnvState::Deleted { revision });
        slot.history.clear();
        state.outcomes.remove(env);
        drop(state);
        self.committed();
        Ok(revision)
    }

    async fn reseed(&self, env: &EnvName, seed: &EnvData, meta: &WriteMeta) -> Result<u64, StoreError> {
        let retention = self.options.audit_retention;
        let mut state = self.state.lock().await;
        let slot = self.slot_or_new(&mut state.envs, env)?;
        let (stored, kept, mut audit) = match &slot.state {
            Some(EnvState::Live { data, audit }) => (data.revision, data.revocations.clone(), audit.clone()),
            _ => (0, Vec::new(), VecDeque::new()),
        };
        if seed.revision <= stored {
            return Err(StoreError::Regressed { env: env.to_string(), stored, seen: seed.revision });
        }
        let mut next = EnvData { reseeded_at: seed.revision, ..seed.clone() };
        // Revocations stored meanwhile stay: a reseed must never bring a revoked token
        // back (the Redis store keeps them the same way).
        for kept in kept {
            if !next.revocations.iter().any(|r| r.key() == kept.key()) {
                let at = next.revocations.partition_point(|r| r.key() < kept.key());
                next.revocations.insert(at, kept);
            }
        }
        let entry = super::audit::reseed_entry(stored, seed, meta);
        let next = Box::new(next);
        let record = Record::Reseed { data: next, audit: entry };
        self.append(env, slot, &record).await?;
        let (next, entry) = match record {
            Record::Reseed { data, audit } => (data, audit),
            _ => return Err(StoreError::Corrupt("a reseed record changed kind".into())),
        };
        env_files::push_audit(&mut audit, entry, retention);
        slot.state = Some(EnvState::Live { data: next, audit });
        // No change record describes a reseed: followers find the jump and reload.
        slot.history.clear();
        drop(state);
        self.committed();
        Ok(seed.revision)
    }

    async fn load(&self, env: &EnvName) -> Result<EnvData, StoreError> {
        let state = self.state.lock().await;
        state
            .envs
            .get(env)
            .and_then(EnvSlot::live)
            .map(|(data, _)| data.clone())
            .ok_or_else(|| StoreError::EnvironmentNotFound(env.to_string()))
    }

    async fn revision(&self, env: &EnvName) -> Result<u64, StoreError> {
        let state = self.state.lock().await;
        Ok(state.envs.get(env).and_then(EnvSlot::live).map_or(0, |(data, _)| data.revision))
    }

    async fn write(&self, env: &EnvName, write: Write, meta: &WriteMeta) -> Result<Change, StoreError> {
        let mut state = self.state.lock().await;
        let not_found = || StoreError::EnvironmentNotFound(env.to_string());
        let slot = state.envs.get_mut(env).ok_or_else(not_found)?;
        let Some(EnvState::Live { data, .. }) = &mut slot.state else { return Err(not_found()) };
        // Applied in place (copying 10,000 releases per write is what this layout
        // avoids); undone if the record cannot be written.
        let undo = Undo::capture(data, &write);
        let (change, entry) = apply(env.as_str(), data, write, meta)?;
        let record = Record::Write { change: change.clone(), audit: entry.clone() };
        if let Err(error) = self.append(env, slot, &record).await {
            if let Some(EnvState::Live { data, .. }) = &mut slot.state {
                undo.restore(data);
            }
            return Err(error);
        }
        if let Some(EnvState::Live { audit, .. }) = &mut slot.state {
            env_files::push_audit(audit, entry, self.options.audit_retention);
        }
        if slot.history.len() == HISTORY {
            slot.history.pop_front();
        }
        slot.history.push_back(change.clone());
        drop(state);
        self.committed();
        Ok(change)
    }

    async fn audit(&self, env: &EnvName, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let state = self.state.lock().await;
        Ok(state
            .envs
            .get(env)
            .and_then(EnvSlot::live)
            .map(|(_, entries)| entries.iter().rev().filter(|e| query.matches(e)).take(query.limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn record_outcomes(&self, env: &EnvName, bucket: Bucket, counts: &[OutcomeCount]) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let slots = state.outcomes.entry(env.clone()).or_default().entry(bucket.start_ms()).or_default();
        for count in counts {
            let slot = slots.entry(field(&count.release, &count.version)).or_default();
            slot.0 = slot.0.saturating_add(count.ok);
            slot.1 = slot.1.saturating_add(count.error);
        }
        if state.outcomes_saved_at.elapsed() >= OUTCOME_SAVE_INTERVAL {
            // In the background: a report is not acknowledged as durable.
            let saving = self.save_outcomes(&mut state, now_ms());
            tokio::spawn(async move {
                if let Ok(Err(error)) = saving.await {
                    tracing::warn!(%error, "could not save outcome counts; retried with the next report");
                }
            });
        }
        Ok(())
    }

    async fn outcomes(
        &self,
        env: &EnvName,
        release: &str,
        from: Bucket,
        to: Bucket,
    ) -> Result<Vec<BucketCounts>, StoreError> {
        let Some((first, last)) = Bucket::span(from, to) else { return Ok(Vec::new()) };
        let state = self.state.lock().await;
        let Some(buckets) = state.outcomes.get(env) else { return Ok(Vec::new()) };
        let mut counts = Vec::new();
        for (&bucket_start_ms, slots) in buckets.range(first.start_ms()..=last.start_ms()) {
            for (key, &(ok, error)) in slots {
                if let Some((_, version)) = split_field(key).filter(|(r, _)| *r == release) {
                    counts.push(BucketCounts { bucket_start_ms, version: version.to_owned(), ok, error });
                }
            }
        }
        Ok(counts)
    }

    async fn heartbeat(&self, env: &EnvName, fleet: &str, report: &NodeReport) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        state.nodes.entry((env.clone(), fleet.to_owned())).or_default().insert(report.node.clone(), report.clone());
        Ok(())
    }

    async fn fleet_nodes(&self, env: &EnvName, fleet: &str, since_ms: u64) -> Result<Vec<NodeReport>, StoreError> {
        let mut state = self.state.lock().await;
        let Some(nodes) = state.nodes.get_mut(&(env.clone(), fleet.to_owned())) else { return Ok(Vec::new()) };
        nodes.retain(|_, n| n.seen_ms >= since_ms);
        let mut live: Vec<NodeReport> = nodes.values().cloned().collect();
        live.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(live)
    }

    async fn try_lease(&self, _name: &str, _holder: &str, _ttl: Duration) -> Result<bool, StoreError> {
        // One process owns the data directory: it always drives.
        Ok(true)
    }

    async fn record_ack(&self, env: &EnvName, ack: &SdkAck) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        state.acks.entry(env.clone()).or_default().insert(ack.sdk_id.clone(), ack.clone());
        Ok(())
    }

    async fn sdk_acks(&self, env: &EnvName, since_ms: u64) -> Result<Vec<SdkAck>, StoreError> {
        let mut state = self.state.lock().await;
        let Some(acks) = state.acks.get_mut(env) else { return Ok(Vec::new()) };
        acks.retain(|_, ack| ack.seen_ms >= since_ms);
        let mut all: Vec<SdkAck> = acks.values().cloned().collect();
        all.sort_by(|a, b| a.sdk_id.cmp(&b.sdk_id));
        Ok(all)
    }

    async fn forget_sdk(&self, env: &EnvName, sdk_id: &str, up_to_connection: u64) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if let Some(acks) = state.acks.get_mut(env)
            && acks.get(sdk_id).is_some_and(|ack| ack.connection <= up_to_connection)
        {
            acks.remove(sdk_id);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let saving = self.save_outcomes(&mut state, now_ms());
        drop(state);
        saving.await.map_err(|e| StoreError::Unavailable(format!("outcome writer stopped: {e}")))?
    }

    async fn changes_after(&self, env: &EnvName, after: u64, wait: Duration) -> Result<Vec<Change>, StoreError> {
        let mut written = self.written.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let state = self.state.lock().await;
                let newer: Vec<Change> = state
                    .envs
                    .get(env)
                    .map(|s| s.history.iter().filter(|c| c.revision > after).cloned().collect())
                    .unwrap_or_default();
                if !newer.is_empty() {
                    return Ok(newer);
                }
                // Mark the current write count as seen before releasing the lock, so a
                // write that lands after this check wakes us.
                written.borrow_and_update();
            }
            if tokio::time::timeout_at(deadline, written.changed()).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}
