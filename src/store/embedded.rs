//! The embedded store: everything in memory, persisted to one JSON file in the data
//! directory on every change (write to a temp file, fsync, rename, fsync the
//! directory), reloaded at start. No setup; one instance — enforced: the store holds an
//! exclusive lock on the directory's lock file for its whole life (see `DirLock`).
//!
//! Concurrency: one async mutex serialises writers, and is held across the file write so
//! that the file and memory never disagree about the order of changes. Writes are rare
//! and evaluation never touches this store (it reads the server's snapshot), so the
//! mutex costs nothing on the hot path.

use super::apply::apply;
use super::durable::write_atomically;
use super::outcomes::{field, split_field};
use super::{
    AuditEntry, AuditQuery, Bucket, BucketCounts, Change, EnvData, EnvName, NodeReport, OUTCOME_TTL_SECS, OutcomeCount,
    SdkAck, Store, StoreError, Write, WriteMeta,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// The data file's name inside the data directory.
pub const DATA_FILE: &str = "cohort.json";
/// The lock file's name inside the data directory: its lock marks the directory's one
/// writer, its content is that writer's pid.
pub const LOCK_FILE: &str = "cohort.lock";
const FORMAT: u32 = 1;

/// How many recent changes per environment are kept for followers.
const HISTORY: usize = 1_024;

/// Errors opening the data directory; they stop start-up and name the file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory or file cannot be read or created.
    #[error("cannot use data file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file exists but is not a valid cohort data file (torn, edited, corrupt).
    #[error(
        "data file {path} is corrupt and was not loaded: {message}. Restore it from a backup or move it away to start empty"
    )]
    Corrupt { path: PathBuf, message: String },
    /// Another process holds the directory. Two writers would both acknowledge writes
    /// at the same revision and the file would keep only one of them.
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

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileData {
    format: u32,
    environments: BTreeMap<EnvName, EnvData>,
    /// Newest last; capped at the retention count.
    #[serde(default)]
    audit: BTreeMap<EnvName, VecDeque<AuditEntry>>,
    /// Outcome counts: environment → 10 s bucket start → `release\x1fversion` →
    /// (ok, error). Kept in memory and written with the file (on every change and on
    /// shutdown). Files written before buckets kept per-minute counts under `outcomes`;
    /// a new name lets those load (their counts are dropped: short-lived data that
    /// cannot be split into buckets) and lets an older binary still read a newer file.
    #[serde(default)]
    outcome_buckets: BTreeMap<EnvName, OutcomeBuckets>,
    /// Environments deleted on purpose → the revision they had (see
    /// [`Store::deleted_environments`]).
    #[serde(default)]
    deleted: BTreeMap<EnvName, u64>,
}

struct State {
    data: FileData,
    history: HashMap<EnvName, VecDeque<Change>>,
    /// SDK acknowledgements: liveness data, deliberately not persisted.
    acks: HashMap<EnvName, HashMap<String, SdkAck>>,
    /// Fleet heartbeats, also liveness data: (environment, fleet) → node → report.
    nodes: HashMap<(EnvName, String), HashMap<String, NodeReport>>,
}

/// The embedded store.
pub struct EmbeddedStore {
    path: PathBuf,
    state: Mutex<State>,
    /// Bumped after every committed write; wakes [`Store::changes_after`] waiters.
    written: watch::Sender<u64>,
    /// Audit entries kept per environment.
    audit_retention: usize,
    /// This store is the data directory's one writer for as long as it lives.
    _lock: DirLock,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`, keeping the newest `audit_retention`
    /// audit entries per environment. Fails with [`OpenError::Locked`] while another
    /// store (in this process or another) has the directory.
    pub fn open(data_dir: &Path, audit_retention: usize) -> Result<Self, OpenError> {
        let path = data_dir.join(DATA_FILE);
        let io = |source| OpenError::Io { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        // Before reading the file: what it holds is only current if no one else writes it.
        let lock = DirLock::acquire(data_dir)?;
        let data = match std::fs::read(&path) {
            Ok(bytes) => {
                let data: FileData = serde_json::from_slice(&bytes)
                    .map_err(|e| OpenError::Corrupt { path: path.clone(), message: e.to_string() })?;
                if data.format != FORMAT {
                    return Err(OpenError::Corrupt {
                        path: path.clone(),
                        message: format!("unknown format {} (this version reads format {FORMAT})", data.format),
                    });
                }
                data
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileData { format: FORMAT, ..FileData::default() },
            Err(e) => return Err(io(e)),
        };
        Ok(EmbeddedStore {
            path,
            state: Mutex::new(State { data, history: HashMap::new(), acks: HashMap::new(), nodes: HashMap::new() }),
            written: watch::channel(0).0,
            audit_retention: audit_retention.max(1),
            _lock: lock,
        })
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Drops outcome counts older than their time to live.
fn prune_outcomes(data: &mut FileData, now_ms: u64) {
    let oldest = Bucket::containing(now_ms.saturating_sub(OUTCOME_TTL_SECS * 1_000)).start_ms();
    for buckets in data.outcome_buckets.values_mut() {
        *buckets = buckets.split_off(&oldest);
    }
}

impl EmbeddedStore {
    /// Writes the whole of `data` to the data file.
    async fn save(&self, data: &FileData) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| StoreError::Unavailable(format!("data file writer stopped: {e}")))?
            .map_err(|e| StoreError::Unavailable(format!("cannot write {}: {e}", self.path.display())))
    }

    /// Applies `edit` to a copy of the data, saves it, and keeps it only once saved: the
    /// file and memory never disagree.
    async fn commit<T>(&self, edit: impl FnOnce(&mut FileData) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut state = self.state.lock().await;
        let mut next = FileData {
            format: state.data.format,
            environments: state.data.environments.clone(),
            audit: state.data.audit.clone(),
            outcome_buckets: state.data.outcome_buckets.clone(),
            deleted: state.data.deleted.clone(),
        };
        let value = edit(&mut next)?;
        self.save(&next).await?;
        state.data = next;
        drop(state);
        self.written.send_modify(|n| *n += 1);
        Ok(value)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn environments(&self) -> Result<Vec<EnvName>, StoreError> {
        Ok(self.state.lock().await.data.environments.keys().cloned().collect())
    }

    async fn deleted_environments(&self) -> Result<Vec<(EnvName, u64)>, StoreError> {
        Ok(self.state.lock().await.data.deleted.iter().map(|(e, r)| (e.clone(), *r)).collect())
    }

    async fn create_environment(&self, env: &EnvName) -> Result<u64, StoreError> {
        self.commit(|data| {
            if data.environments.contains_key(env) {
                return Err(StoreError::EnvironmentExists(env.to_string()));
            }
            let revision = data.deleted.remove(env).unwrap_or(0);
            data.environments.insert(env.clone(), EnvData { revision, ..EnvData::default() });
            Ok(revision)
        })
        .await
    }

    async fn delete_environment(&self, env: &EnvName) -> Result<u64, StoreError> {
        let revision = self
            .commit(|data| {
                let current =
                    data.environments.get(env).ok_or_else(|| StoreError::EnvironmentNotFound(env.to_string()))?;
                if !current.releases.is_empty() {
                    return Err(StoreError::EnvironmentNotEmpty {
                        env: env.to_string(),
                        releases: current.releases.len(),
                    });
                }
                let revision = current.revision;
                data.environments.remove(env);
                data.audit.remove(env);
                data.outcome_buckets.remove(env);
                data.deleted.insert(env.clone(), revision);
                Ok(revision)
            })
            .await?;
        self.state.lock().await.history.remove(env);
        Ok(revision)
    }

    async fn reseed(&self, env: &EnvName, seed: &EnvData, meta: &WriteMeta) -> Result<u64, StoreError> {
        let retention = self.audit_retention;
        let revision = self
            .commit(|data| {
                let stored = data.environments.get(env).map_or(0, |e| e.revision);
                if seed.revision <= stored {
                    return Err(StoreError::Regressed { env: env.to_string(), stored, seen: seed.revision });
                }
                data.deleted.remove(env);
                let mut next = EnvData { reseeded_at: seed.revision, ..seed.clone() };
                // Revocations stored meanwhile stay: a reseed must never bring a revoked
                // token back (the Redis store keeps them the same way).
                for kept in data.environments.get(env).map(|e| e.revocations.clone()).unwrap_or_default() {
                    if !next.revocations.iter().any(|r| r.key() == kept.key()) {
                        let at = next.revocations.partition_point(|r| r.key() < kept.key());
                        next.revocations.insert(at, kept);
                    }
                }
                data.environments.insert(env.clone(), next);
                let audit = data.audit.entry(env.clone()).or_default();
                audit.push_back(super::audit::reseed_entry(stored, seed, meta));
                while audit.len() > retention {
                    audit.pop_front();
                }
                Ok(seed.revision)
            })
            .await?;
        // No change record describes a reseed: followers find the jump and reload.
        self.state.lock().await.history.remove(env);
        Ok(revision)
    }

    async fn load(&self, env: &EnvName) -> Result<EnvData, StoreError> {
        self.state
            .lock()
            .await
            .data
            .environments
            .get(env)
            .cloned()
            .ok_or_else(|| StoreError::EnvironmentNotFound(env.to_string()))
    }

    async fn revision(&self, env: &EnvName) -> Result<u64, StoreError> {
        Ok(self.state.lock().await.data.environments.get(env).map_or(0, |e| e.revision))
    }

    async fn write(&self, env: &EnvName, write: Write, meta: &WriteMeta) -> Result<Change, StoreError> {
        let mut state = self.state.lock().await;
        let mut next = state
            .data
            .environments
            .get(env)
            .cloned()
            .ok_or_else(|| StoreError::EnvironmentNotFound(env.to_string()))?;
        let (change, entry) = apply(env.as_str(), &mut next, write, meta)?;

        // Persist the new whole — data and audit entry in one file write — before
        // committing it in memory.
        prune_outcomes(&mut state.data, meta.time_ms);
        let previous = state.data.environments.insert(env.clone(), next);
        let audit = state.data.audit.entry(env.clone()).or_default();
        audit.push_back(entry);
        let trimmed = if audit.len() > self.audit_retention { audit.pop_front() } else { None };
        let bytes = serde_json::to_vec_pretty(&state.data).map_err(|e| StoreError::Corrupt(e.to_string()));
        let persisted = match bytes {
            Ok(bytes) => {
                let path = self.path.clone();
                tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("data file writer stopped: {e}")))
                    .and_then(|r| {
                        r.map_err(|e| StoreError::Unavailable(format!("cannot write {}: {e}", self.path.display())))
                    })
            }
            Err(e) => Err(e),
        };
        if let Err(e) = persisted {
            match previous {
                Some(previous) => state.data.environments.insert(env.clone(), previous),
                None => state.data.environments.remove(env),
            };
            if let Some(audit) = state.data.audit.get_mut(env) {
                audit.pop_back();
                if let Some(trimmed) = trimmed {
                    audit.push_front(trimmed);
                }
            }
            return Err(e);
        }

        let history = state.history.entry(env.clone()).or_default();
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(change.clone());
        drop(state);
        self.written.send_modify(|n| *n += 1);
        Ok(change)
    }

    async fn audit(&self, env: &EnvName, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let state = self.state.lock().await;
        Ok(state
            .data
            .audit
            .get(env)
            .map(|entries| entries.iter().rev().filter(|e| query.matches(e)).take(query.limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn record_outcomes(&self, env: &EnvName, bucket: Bucket, counts: &[OutcomeCount]) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let slots = state.data.outcome_buckets.entry(env.clone()).or_default().entry(bucket.start_ms()).or_default();
        for count in counts {
            let slot = slots.entry(field(&count.release, &count.version)).or_default();
            slot.0 = slot.0.saturating_add(count.ok);
            slot.1 = slot.1.saturating_add(count.error);
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
        let Some(buckets) = state.data.outcome_buckets.get(env) else { return Ok(Vec::new()) };
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
        // One process owns the data file: it always drives.
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
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        prune_outcomes(&mut state.data, now_ms);
        let bytes = serde_json::to_vec_pretty(&state.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| StoreError::Unavailable(format!("data file writer stopped: {e}")))?
            .map_err(|e| StoreError::Unavailable(format!("cannot write {}: {e}", self.path.display())))
    }

    async fn changes_after(&self, env: &EnvName, after: u64, wait: Duration) -> Result<Vec<Change>, StoreError> {
        let mut written = self.written.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let state = self.state.lock().await;
                let newer: Vec<Change> = state
                    .history
                    .get(env)
                    .map(|h| h.iter().filter(|c| c.revision > after).cloned().collect())
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
