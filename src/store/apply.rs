//! The compare-and-set rules of a write, applied to in-memory data. The embedded store
//! runs them directly; the Redis store runs the same rules in its Lua script (and the
//! shared store test suite holds both to them).

use super::{Change, ChangeKind, EnvData, StoreError, StoredRelease, Write};

/// Applies `write` to `env`, returning the change it makes. `env` is left untouched on
/// error.
pub(crate) fn apply(env: &mut EnvData, write: Write) -> Result<Change, StoreError> {
    let position = |env: &EnvData, key: &str| env.releases.binary_search_by(|r| r.release.key.as_str().cmp(key));
    let revision = env.revision + 1;
    let kind = match write {
        Write::Create(release) => {
            let Err(at) = position(env, &release.key) else {
                return Err(StoreError::AlreadyExists(release.key));
            };
            env.releases.insert(at, StoredRelease { revision, release: release.clone() });
            ChangeKind::Upsert { release }
        }
        Write::Update { release, expected } => {
            let at = position(env, &release.key).map_err(|_| StoreError::NotFound(release.key.clone()))?;
            let current = env.releases[at].revision;
            if current != expected {
                return Err(StoreError::RevisionMismatch { key: release.key, expected, current });
            }
            env.releases[at] = StoredRelease { revision, release: release.clone() };
            ChangeKind::Upsert { release }
        }
        Write::Delete { key, expected } => {
            let at = position(env, &key).map_err(|_| StoreError::NotFound(key.clone()))?;
            let current = env.releases[at].revision;
            if let Some(expected) = expected.filter(|&e| e != current) {
                return Err(StoreError::RevisionMismatch { key, expected, current });
            }
            env.releases.remove(at);
            ChangeKind::Delete { key }
        }
        Write::KillAll { on, reason } => {
            env.kill_all = on;
            env.kill_reason = reason.clone().filter(|_| on);
            ChangeKind::KillAll { on, reason: env.kill_reason.clone() }
        }
    };
    env.revision = revision;
    Ok(Change { revision, kind })
}
