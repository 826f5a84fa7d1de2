//! The audit log's types: who changed what, when, why, from what to what. Entries are
//! written by the stores in the same atomic step as the change they describe.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a write does, in the audit log's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Delete,
    Allocation,
    Kill,
    Unkill,
    KillAll,
    UnkillAll,
    RampStart,
    RampAdvance,
    RampExtend,
    RampPause,
    RampResume,
    RampRollback,
    RampAbort,
    RampComplete,
    Promote,
    FleetAssign,
    StoreReseed,
    TokenRevoke,
}

impl Action {
    /// The name stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Allocation => "allocation",
            Action::Kill => "kill",
            Action::Unkill => "unkill",
            Action::KillAll => "kill-all",
            Action::UnkillAll => "unkill-all",
            Action::RampStart => "ramp-start",
            Action::RampAdvance => "ramp-advance",
            Action::RampExtend => "ramp-extend",
            Action::RampPause => "ramp-pause",
            Action::RampResume => "ramp-resume",
            Action::RampRollback => "ramp-rollback",
            Action::RampAbort => "ramp-abort",
            Action::RampComplete => "ramp-complete",
            Action::Promote => "promote",
            Action::FleetAssign => "fleet-assign",
            Action::StoreReseed => "store-reseed",
            Action::TokenRevoke => "token-revoke",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Action> {
        [
            Action::Create,
            Action::Update,
            Action::Delete,
            Action::Allocation,
            Action::Kill,
            Action::Unkill,
            Action::KillAll,
            Action::UnkillAll,
            Action::RampStart,
            Action::RampAdvance,
            Action::RampExtend,
            Action::RampPause,
            Action::RampResume,
            Action::RampRollback,
            Action::RampAbort,
            Action::RampComplete,
            Action::Promote,
            Action::FleetAssign,
            Action::StoreReseed,
            Action::TokenRevoke,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The who/what/why that goes with a write into the audit log.
#[derive(Debug, Clone)]
pub struct WriteMeta {
    /// The token's `sub`.
    pub actor: String,
    /// What the write does.
    pub action: Action,
    /// Why, when the caller said.
    pub reason: Option<String>,
    /// Wall-clock time of the write, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The lowest environment revision the store may be at for the write to be
    /// accepted: the writer's high-water mark, so a store that went backwards refuses
    /// the write instead of acknowledging one no instance will serve (0: no check).
    pub floor: u64,
}

impl WriteMeta {
    /// A write by `actor` now.
    pub fn now(actor: &str, action: Action, reason: Option<String>) -> Self {
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        WriteMeta { actor: actor.to_owned(), action, reason, time_ms, floor: 0 }
    }
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The environment revision the change produced (unique, increasing).
    pub revision: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Who (the token's `sub`).
    pub actor: String,
    /// What.
    pub action: Action,
    /// Which release (`None` for environment-wide actions).
    #[serde(default)]
    pub release: Option<String>,
    /// The release (or environment kill state) before; `None` on create.
    #[serde(default)]
    pub before: Option<serde_json::Value>,
    /// The release (or environment kill state) after; `None` on delete.
    #[serde(default)]
    pub after: Option<serde_json::Value>,
    /// Why, when given.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A page of the audit log: newest first, optionally one release, strictly before a
/// revision.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this release's entries.
    pub release: Option<String>,
    /// Only entries with a revision below this.
    pub before: Option<u64>,
    /// At most this many.
    pub limit: usize,
}

impl AuditQuery {
    /// Whether `entry` belongs to the page (ignoring the limit).
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.before.is_none_or(|b| entry.revision < b)
            && self.release.as_ref().is_none_or(|r| entry.release.as_ref() == Some(r))
    }
}

/// The audit entry of a reseed: the stored revision before, the seeded state after.
pub(crate) fn reseed_entry(stored: u64, seed: &super::EnvData, meta: &WriteMeta) -> AuditEntry {
    AuditEntry {
        revision: seed.revision,
        time_ms: meta.time_ms,
        actor: meta.actor.clone(),
        action: meta.action,
        release: None,
        before: Some(serde_json::json!({"revision": stored})),
        after: Some(serde_json::json!({
            "revision": seed.revision,
            "kill_all": seed.kill_all,
            "releases": seed.releases.iter().map(|r| r.release.key.as_str()).collect::<Vec<_>>(),
        })),
        reason: meta.reason.clone(),
    }
}
