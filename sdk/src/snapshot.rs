//! One environment's releases and kill state, compiled and ready to evaluate.

use crate::compile::CompiledRelease;
use crate::context::Context;
use crate::decision::Decision;
use crate::error::CompileError;
use crate::model::Release;
use crate::value::Resolved;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// Hashes release keys for the snapshot's map with one XXH3 call per key. The streaming
/// hasher a `BuildHasher` would otherwise use costs ~170 instructions for an 8-byte key
/// (state set-up, two buffered updates); this costs ~40. Not part of the bucketing
/// format: only this process's map layout depends on it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyHasherBuilder;

/// See [`KeyHasherBuilder`].
#[derive(Debug, Default)]
pub(crate) struct KeyHasher(u64);

impl BuildHasher for KeyHasherBuilder {
    type Hasher = KeyHasher;
    #[inline]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    #[inline]
    fn write_u8(&mut self, byte: u8) {
        // `str`'s Hash writes a 0xff terminator; fold it in without another XXH3 pass.
        self.0 = self.0.rotate_left(8) ^ u64::from(byte);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The wire form of an environment's configuration: what the server serves at
/// `GET /v1/envs/{env}/snapshot` and what a bootstrap file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotData {
    /// The environment revision this snapshot reflects.
    pub revision: u64,
    /// The environment's kill switch.
    #[serde(default)]
    pub kill_all: bool,
    /// Every release of the environment.
    #[serde(default)]
    pub releases: Vec<Release>,
}

/// An immutable, compiled environment. Share it behind an `Arc` and swap in a new one on
/// change; evaluating borrows it and never locks or allocates.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    revision: u64,
    kill_all: bool,
    /// Keys are shared (`Arc<str>`): a change copies the map of a large environment
    /// without allocating a key per release.
    releases: HashMap<Arc<str>, Arc<CompiledRelease>, KeyHasherBuilder>,
}

impl Snapshot {
    /// Compiles every release; fails on the first invalid one.
    pub fn compile(data: SnapshotData) -> Result<Self, CompileError> {
        let mut releases = HashMap::with_capacity_and_hasher(data.releases.len(), KeyHasherBuilder);
        for release in data.releases {
            let compiled = CompiledRelease::compile(release)?;
            releases.insert(compiled.key().into(), Arc::new(compiled));
        }
        Ok(Snapshot { revision: data.revision, kill_all: data.kill_all, releases })
    }

    /// Compiles what it can: releases that fail to compile (say, written by a newer
    /// server with an algorithm this SDK does not know) are left out and returned, so
    /// the rest keeps working and those evaluate as not found.
    pub fn compile_lenient(data: SnapshotData) -> (Self, Vec<(String, CompileError)>) {
        let mut rejected = Vec::new();
        let mut releases = HashMap::with_capacity_and_hasher(data.releases.len(), KeyHasherBuilder);
        for release in data.releases {
            let key = release.key.clone();
            match CompiledRelease::compile(release) {
                Ok(compiled) => {
                    releases.insert(Arc::from(key), Arc::new(compiled));
                }
                Err(e) => rejected.push((key, e)),
            }
        }
        (Snapshot { revision: data.revision, kill_all: data.kill_all, releases }, rejected)
    }

    /// Evaluates release `key` for `ctx`. Never fails: an unknown key gives a decision
    /// without a version and reason `ERROR` / `FLAG_NOT_FOUND`.
    #[inline]
    pub fn evaluate(&self, key: &str, ctx: &Context) -> Decision<'_> {
        match self.releases.get(key) {
            Some(release) => release.evaluate(self.kill_all, ctx),
            None => Decision::NOT_FOUND,
        }
    }

    /// Evaluates like [`Snapshot::evaluate`] and adds the served version's value (its
    /// declared value, or its name). Allocates nothing.
    #[inline]
    pub fn resolve(&self, key: &str, ctx: &Context) -> Resolved<'_> {
        match self.releases.get(key) {
            Some(release) => release.resolve(self.kill_all, ctx),
            None => Resolved::NOT_FOUND,
        }
    }

    /// The environment revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether the environment's kill switch is on.
    pub fn kill_all(&self) -> bool {
        self.kill_all
    }

    /// A release by key.
    pub fn get(&self, key: &str) -> Option<&Arc<CompiledRelease>> {
        self.releases.get(key)
    }

    /// Number of releases.
    pub fn len(&self) -> usize {
        self.releases.len()
    }

    /// True when the environment has no releases.
    pub fn is_empty(&self) -> bool {
        self.releases.is_empty()
    }

    /// Releases in no particular order: for scans that do not show their order (no
    /// sorting, no allocation).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<CompiledRelease>> {
        self.releases.values()
    }

    /// Releases in key order.
    pub fn releases(&self) -> impl Iterator<Item = &Arc<CompiledRelease>> {
        let mut all: Vec<_> = self.releases.values().collect();
        all.sort_by(|a, b| a.key().cmp(b.key()));
        all.into_iter()
    }

    /// A new snapshot at `revision` with `release` added or replaced. Other releases
    /// are shared, not recompiled.
    #[must_use]
    pub fn with_release(&self, revision: u64, release: Arc<CompiledRelease>) -> Self {
        let mut next = self.clone();
        next.revision = revision;
        match next.releases.get_mut(release.key()) {
            Some(slot) => *slot = release,
            None => _ = next.releases.insert(release.key().into(), release),
        }
        next
    }

    /// A new snapshot at `revision` without release `key`.
    #[must_use]
    pub fn without_release(&self, revision: u64, key: &str) -> Self {
        let mut next = self.clone();
        next.revision = revision;
        next.releases.remove(key);
        next
    }

    /// A new snapshot at `revision` with the kill switch set.
    #[must_use]
    pub fn with_kill_all(&self, revision: u64, kill_all: bool) -> Self {
        let mut next = self.clone();
        next.revision = revision;
        next.kill_all = kill_all;
        next
    }

    /// The wire form.
    pub fn to_data(&self) -> SnapshotData {
        SnapshotData {
            revision: self.revision,
            kill_all: self.kill_all,
            releases: self.releases().map(|r| r.release().clone()).collect(),
        }
    }
}
