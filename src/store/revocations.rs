//! Token revocations as the store keeps them: per environment, written like any other
//! change (compare-and-set, revision bump, change record, audit entry in one step), so
//! every instance following the environment learns of them within its follow latency.

use serde::{Deserialize, Serialize};

/// One revoked token (`jti`) or subject (`sub`: its tokens issued at or before
/// `revoked_at`). Exactly one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revocation {
    /// The revoked token's `jti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The revoked subject: its tokens with `iat <= revoked_at` are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// When it was revoked, seconds since the Unix epoch.
    pub revoked_at: u64,
    /// When it is forgotten (seconds since the Unix epoch): by then every token it can
    /// refuse has expired, as no token may live longer than the longest allowed TTL.
    pub expires_at: u64,
    /// Written by a revocation for every environment (`*`): it refuses the token or
    /// subject whatever environment its token names.
    #[serde(default)]
    pub all_environments: bool,
    /// Who revoked it (the revoking token's `sub`).
    pub actor: String,
    /// Why, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Revocation {
    /// Its identity within an environment (`jti:<id>`, `sub:<name>`): revoking the same
    /// token or subject again replaces the earlier revocation.
    pub fn key(&self) -> String {
        match (&self.jti, &self.sub) {
            (Some(jti), _) => format!("jti:{jti}"),
            (None, Some(sub)) => format!("sub:{sub}"),
            (None, None) => String::new(),
        }
    }

    /// Whether it is still in force at `now` (seconds).
    pub fn in_force(&self, now: u64) -> bool {
        self.expires_at > now
    }
}

/// Replaces or adds `revocation` in `list` (kept in key order) and drops the
/// revocations that expired by its time; returns the one it replaced.
pub(crate) fn insert(list: &mut Vec<Revocation>, revocation: Revocation) -> Option<Revocation> {
    let now = revocation.revoked_at;
    list.retain(|r| r.in_force(now));
    let key = revocation.key();
    match list.binary_search_by(|r| r.key().cmp(&key)) {
        Ok(at) => Some(std::mem::replace(&mut list[at], revocation)),
        Err(at) => {
            list.insert(at, revocation);
            None
        }
    }
}
