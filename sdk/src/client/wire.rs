//! The change events of the stream (`event: change`), and applying one to a snapshot.
//! Mirrors the server's change record: `{"revision", "type": "upsert" | "delete" |
//! "kill_all" | "revoke", …}`.

use crate::compile::CompiledRelease;
use crate::model::Release;
use crate::snapshot::Snapshot;
use serde::Deserialize;
use std::sync::Arc;

/// One change of an environment; `revision` is the environment revision after it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Change {
    pub(crate) revision: u64,
    #[serde(flatten)]
    pub(crate) kind: ChangeKind,
}

/// What changed.
// Changes are rare and short-lived; boxing the release would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ChangeKind {
    /// A release was created or replaced.
    Upsert { release: Release },
    /// A release was removed.
    Delete { key: String },
    /// The environment kill switch was set.
    KillAll { on: bool },
    /// A token was revoked on the server: nothing an SDK evaluates changed, only the
    /// revision moves on.
    Revoke,
    /// A kind this SDK does not know (a newer server): only a snapshot can catch up.
    #[serde(other)]
    Unknown,
}

/// Why a change could not be applied; either way a fresh snapshot is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApplyError {
    /// The change is not the next revision: some were missed.
    #[error("change {got} does not follow revision {have}")]
    Gap { have: u64, got: u64 },
    /// The change is of a kind this SDK does not know.
    #[error("change {0} is of an unknown kind")]
    Unknown(u64),
}

impl Change {
    /// The snapshot after this change, `None` when `current` already has it.
    pub(crate) fn apply(self, current: &Snapshot) -> Result<Option<Snapshot>, ApplyError> {
        let (have, revision) = (current.revision(), self.revision);
        if revision <= have {
            return Ok(None);
        }
        if revision != have + 1 {
            return Err(ApplyError::Gap { have, got: revision });
        }
        Ok(Some(match self.kind {
            ChangeKind::Upsert { release } => {
                let key = release.key.clone();
                match CompiledRelease::compile(release) {
                    Ok(compiled) => current.with_release(revision, Arc::new(compiled)),
                    Err(error) => {
                        tracing::warn!(release = %key, %error, "changed release does not compile; it evaluates as unknown");
                        current.without_release(revision, &key)
                    }
                }
            }
            ChangeKind::Delete { key } => current.without_release(revision, &key),
            ChangeKind::KillAll { on } => current.with_kill_all(revision, on),
            ChangeKind::Revoke => current.with_kill_all(revision, current.kill_all()),
            ChangeKind::Unknown => return Err(ApplyError::Unknown(revision)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::decision::Reason;
    use crate::snapshot::SnapshotData;

    fn parse(json: &str) -> Change {
        serde_json::from_str(json).expect("a change")
    }

    #[test]
    fn changes_apply_in_order_and_gaps_or_unknown_kinds_need_a_snapshot() {
        let snapshot = Snapshot::compile(SnapshotData { revision: 1, ..SnapshotData::default() }).expect("compiles");
        let upsert = parse(
            r#"{"revision": 2, "type": "upsert", "release": {"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 100000}}}"#,
        );
        let snapshot = upsert.apply(&snapshot).expect("applies").expect("new");
        let ctx = Context::with_targeting_key("u");
        assert_eq!(snapshot.evaluate("checkout", &ctx).version, Some("v2"));
        let kill = parse(r#"{"revision": 3, "type": "kill_all", "on": true, "reason": "incident"}"#);
        let snapshot = kill.apply(&snapshot).expect("applies").expect("new");
        assert_eq!(snapshot.evaluate("checkout", &ctx).reason, Reason::Disabled);
        assert!(
            parse(r#"{"revision": 3, "type": "delete", "key": "checkout"}"#).apply(&snapshot).expect("ok").is_none()
        );
        let gap = parse(r#"{"revision": 9, "type": "delete", "key": "checkout"}"#).apply(&snapshot);
        assert_eq!(gap.err(), Some(ApplyError::Gap { have: 3, got: 9 }));
        let revoke = parse(r#"{"revision": 4, "type": "revoke"}"#).apply(&snapshot).expect("applies").expect("new");
        assert_eq!((revoke.revision(), revoke.kill_all()), (4, true), "only the revision moves");
        let unknown = parse(r#"{"revision": 4, "type": "rename", "from": "a", "to": "b"}"#).apply(&snapshot);
        assert_eq!(unknown.err(), Some(ApplyError::Unknown(4)));
        let snapshot = parse(r#"{"revision": 4, "type": "delete", "key": "checkout"}"#)
            .apply(&snapshot)
            .expect("applies")
            .expect("new");
        assert_eq!(snapshot.evaluate("checkout", &ctx).version, None);
    }
}
