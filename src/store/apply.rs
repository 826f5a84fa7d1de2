//! The compare-and-set rules of a write, applied to in-memory data. The embedded store
//! runs them directly; the Redis store runs the same rules in its Lua script (and the
//! shared store test suite holds both to them).

use super::{AuditEntry, Change, ChangeKind, EnvData, StoreError, StoredRelease, Write, WriteMeta};
use serde_json::{Value, json};

/// The environment kill state as the audit log shows it.
pub(crate) fn kill_state(on: bool, reason: Option<&str>) -> Value {
    match reason.filter(|_| on) {
        Some(reason) => json!({"kill_all": on, "kill_reason": reason}),
        None => json!({"kill_all": on}),
    }
}

/// Applies `write` to `env` (named `name`), returning the change it makes and its audit
/// entry. `env` is left untouched on error.
pub(crate) fn apply(
    name: &str,
    env: &mut EnvData,
    write: Write,
    meta: &WriteMeta,
) -> Result<(Change, AuditEntry), StoreError> {
    if env.revision < meta.floor {
        return Err(StoreError::Regressed { env: name.to_owned(), stored: env.revision, seen: meta.floor });
    }
    let position = |env: &EnvData, key: &str| env.releases.binary_search_by(|r| r.release.key.as_str().cmp(key));
    let to_value = |r: &cohort_sdk::Release| serde_json::to_value(r).map_err(|e| StoreError::Corrupt(e.to_string()));
    let revision = env.revision + 1;
    let (kind, release, before, after) = match write {
        Write::Create(release) => {
            let Err(at) = position(env, &release.key) else {
                return Err(StoreError::AlreadyExists(release.key));
            };
            let after = to_value(&release)?;
            env.releases.insert(at, StoredRelease { revision, release: release.clone() });
            (ChangeKind::Upsert { release: release.clone() }, Some(release.key), None, Some(after))
        }
        Write::Update { release, expected } => {
            let at = position(env, &release.key).map_err(|_| StoreError::NotFound(release.key.clone()))?;
            let current = env.releases[at].revision;
            if current != expected {
                return Err(StoreError::RevisionMismatch { key: release.key, expected, current });
            }
            let before = to_value(&env.releases[at].release)?;
            let after = to_value(&release)?;
            env.releases[at] = StoredRelease { revision, release: release.clone() };
            (ChangeKind::Upsert { release: release.clone() }, Some(release.key), Some(before), Some(after))
        }
        Write::Delete { key, expected } => {
            let at = position(env, &key).map_err(|_| StoreError::NotFound(key.clone()))?;
            let current = env.releases[at].revision;
            if let Some(expected) = expected.filter(|&e| e != current) {
                return Err(StoreError::RevisionMismatch { key, expected, current });
            }
            let before = to_value(&env.releases[at].release)?;
            env.releases.remove(at);
            (ChangeKind::Delete { key: key.clone() }, Some(key), Some(before), None)
        }
        Write::KillAll { on, reason } => {
            let before = kill_state(env.kill_all, env.kill_reason.as_deref());
            env.kill_all = on;
            env.kill_reason = reason.filter(|_| on);
            let after = kill_state(on, env.kill_reason.as_deref());
            (ChangeKind::KillAll { on, reason: env.kill_reason.clone() }, None, Some(before), Some(after))
        }
        Write::Revoke(revocation) => {
            let after = serde_json::to_value(&revocation).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let replaced = super::revocations::insert(&mut env.revocations, revocation.clone());
            let before = replaced.map(|r| serde_json::to_value(r).map_err(|e| StoreError::Corrupt(e.to_string())));
            (ChangeKind::Revoke { revocation }, None, before.transpose()?, Some(after))
        }
    };
    env.revision = revision;
    let entry = AuditEntry {
        revision,
        time_ms: meta.time_ms,
        actor: meta.actor.clone(),
        action: meta.action,
        release,
        before,
        after,
        reason: meta.reason.clone(),
    };
    Ok((Change { revision, kind }, entry))
}
