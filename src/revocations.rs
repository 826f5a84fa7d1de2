//! Token revocation: revoking a token (by `jti`) or everything a subject was given so far
//! (by `sub`), per environment, and the check every authenticated request passes.
//!
//! A revocation is a store write like any other ([`Write::Revoke`]): atomic with its
//! audit entry (`token-revoke`), a revision bump and a change record, so every instance
//! following the environment applies it within its follow latency, and a restarted one
//! loads it with the environment. The check runs after the token cache, against an index
//! this instance rebuilds whenever an environment's revocations change
//! ([`RevocationIndex`]), so a cached token is refused on its next request.
//!
//! Which revocations refuse a token:
//! - a token for one environment: those stored in that environment, and those written
//!   for every environment (`*`);
//! - a `*` token: those of any environment — it is one credential for all of them.
//!
//! A revocation for `*` is written to every environment (each write atomic on its own;
//! revoking again is harmless, so a partial failure is retried by running it again).
//! Revocations are forgotten once no token they can refuse is still valid: the server
//! refuses tokens living longer than `auth.max_ttl` allows, so after the longest limit
//! (plus the clock leeway) every token issued before the revocation has expired.

use crate::auth::{AuthError, EnvScope, Principal};
use crate::config::MaxTtlSettings;
use crate::releases::{Actor, ReleaseError, Releases};
use crate::snapshots::Snapshots;
use crate::store::{Action, EnvName, Revocation, Write, WriteMeta};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest `jti`, `sub` or reason accepted.
const MAX_FIELD: usize = 1_024;

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `POST …/revocations`: exactly one of `jti` and `sub`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The token's `jti` (printed by `cohort token mint`'s token, in its payload).
    #[serde(default)]
    pub jti: Option<String>,
    /// A subject: its tokens issued at or before now are refused; new ones work.
    #[serde(default)]
    pub sub: Option<String>,
    /// Why (recorded with the revocation and in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The revocations that apply to tokens, as this instance serves them.
#[derive(Debug, Default)]
pub struct RevocationIndex {
    /// Each environment's own.
    by_env: HashMap<EnvName, Entries>,
    /// Those written for every environment.
    all: Entries,
    /// Every environment's, together (what refuses a `*` token).
    any: Entries,
}

#[derive(Debug, Default)]
struct Entries {
    /// `jti` → when the revocation expires.
    jti: HashMap<String, u64>,
    /// `sub` → (revoked at, expires at).
    sub: HashMap<String, (u64, u64)>,
}

impl Entries {
    fn add(&mut self, r: &Revocation) {
        if let Some(jti) = &r.jti {
            let at = self.jti.entry(jti.clone()).or_default();
            *at = (*at).max(r.expires_at);
        }
        if let Some(sub) = &r.sub {
            let at = self.sub.entry(sub.clone()).or_default();
            *at = (at.0.max(r.revoked_at), at.1.max(r.expires_at));
        }
    }

    fn refuses(&self, principal: &Principal, now: u64) -> Option<&'static str> {
        if principal.jti.as_ref().and_then(|jti| self.jti.get(jti)).is_some_and(|&expires| expires > now) {
            return Some("jti");
        }
        match self.sub.get(&principal.sub) {
            // A token without `iat` cannot show it came after the revocation.
            Some(&(revoked_at, expires)) if expires > now && principal.iat <= revoked_at => Some("sub"),
            _ => None,
        }
    }
}

impl RevocationIndex {
    /// Indexes the revocations of `envs`.
    pub fn build<'a>(envs: impl IntoIterator<Item = (&'a EnvName, &'a [Revocation])>) -> Self {
        let mut index = RevocationIndex::default();
        for (env, list) in envs {
            if list.is_empty() {
                continue;
            }
            let entries = index.by_env.entry(env.clone()).or_default();
            for r in list {
                entries.add(r);
                index.any.add(r);
                if r.all_environments {
                    index.all.add(r);
                }
            }
        }
        index
    }

    /// Whether nothing is revoked anywhere (the common case: one branch per request).
    pub fn is_empty(&self) -> bool {
        self.by_env.is_empty()
    }

    /// Why `principal` is refused at `now`, if it is.
    pub fn check(&self, principal: &Principal, now: u64) -> Result<(), AuthError> {
        if self.is_empty() {
            return Ok(());
        }
        let by = match &principal.env {
            EnvScope::Any => self.any.refuses(principal, now),
            EnvScope::One(env) => self
                .by_env
                .get(env)
                .and_then(|e| e.refuses(principal, now))
                .or_else(|| self.all.refuses(principal, now)),
        };
        match by {
            Some("jti") => Err(AuthError::Revoked(" (by its `jti`)".into())),
            Some(_) => {
                Err(AuthError::Revoked(format!(" (every token of `{}` issued until its revocation)", principal.sub)))
            }
            None => Ok(()),
        }
    }
}

/// Revocations and the token lifetime limits, for one instance.
#[derive(Clone)]
pub struct Revocations {
    releases: Releases,
    snapshots: Arc<Snapshots>,
    max_ttl: MaxTtlSettings,
    leeway: u64,
    /// The shortest limit, with the leeway, in seconds.
    shortest: u64,
}

impl Revocations {
    /// Revocations written through `releases` (the store write path every change takes)
    /// and served from `snapshots`.
    pub fn new(releases: Releases, snapshots: Arc<Snapshots>, max_ttl: MaxTtlSettings, leeway_secs: u64) -> Self {
        let shortest = max_ttl.all().into_iter().min().unwrap_or_default().as_secs().saturating_add(leeway_secs);
        Revocations { releases, snapshots, max_ttl, leeway: leeway_secs, shortest }
    }

    /// The check of every authenticated request, after the token cache: a token living
    /// longer than its scopes allow (`exp - iat`, or with no `iat` an `exp` further away
    /// than that) is refused, and so is a revoked one.
    pub fn check(&self, principal: &Principal) -> Result<(), AuthError> {
        let now = now_secs();
        let from = if principal.iat == 0 { now } else { principal.iat };
        let lifetime = principal.exp.saturating_sub(from);
        // Most tokens live less than the shortest limit: no need to look at their scopes.
        if lifetime > self.shortest
            && lifetime > principal.scopes.max_ttl(&self.max_ttl).as_secs().saturating_add(self.leeway)
        {
            return Err(AuthError::InvalidClaims(format!(
                "the token lives longer than its scopes allow (auth.max_ttl: {})",
                crate::auth::mint::human(principal.scopes.max_ttl(&self.max_ttl))
            )));
        }
        self.snapshots.revocations().check(principal, now)
    }

    /// How long a revocation is kept: the longest any token may live, and the leeway.
    fn keep(&self) -> Duration {
        self.max_ttl.all().into_iter().max().unwrap_or_default() + Duration::from_secs(self.leeway)
    }

    fn revocation(&self, request: &RevokeRequest, actor: &Actor, all: bool) -> Result<Revocation, ReleaseError> {
        let field = |name: &str, value: &Option<String>| -> Result<Option<String>, ReleaseError> {
            let value = value.as_deref().map(str::trim).filter(|v| !v.is_empty());
            if value.is_some_and(|v| v.len() > MAX_FIELD) {
                return Err(ReleaseError::Invalid {
                    field: name.into(),
                    message: format!("at most {MAX_FIELD} bytes"),
                });
            }
            Ok(value.map(str::to_owned))
        };
        let (jti, sub, reason) =
            (field("jti", &request.jti)?, field("sub", &request.sub)?, field("reason", &request.reason)?);
        if jti.is_some() == sub.is_some() {
            return Err(ReleaseError::Invalid {
                field: "jti".into(),
                message: "give exactly one of `jti` (one token) and `sub` (every token of a subject)".into(),
            });
        }
        let now = now_secs();
        Ok(Revocation {
            jti,
            sub,
            revoked_at: now,
            expires_at: now + self.keep().as_secs(),
            all_environments: all,
            actor: actor.0.clone(),
            reason,
        })
    }

    /// Revokes in `env`.
    pub async fn revoke(
        &self,
        env: &EnvName,
        actor: &Actor,
        request: &RevokeRequest,
    ) -> Result<Revocation, ReleaseError> {
        let revocation = self.revocation(request, actor, false)?;
        self.write(env, actor, revocation).await
    }

    /// Revokes in every environment (`*`), returning the environments written.
    pub async fn revoke_everywhere(
        &self,
        actor: &Actor,
        request: &RevokeRequest,
    ) -> Result<(Revocation, Vec<EnvName>), ReleaseError> {
        let revocation = self.revocation(request, actor, true)?;
        let mut envs = self.snapshots.environments();
        envs.sort();
        for env in &envs {
            self.write(env, actor, revocation.clone()).await?;
        }
        Ok((revocation, envs))
    }

    async fn write(&self, env: &EnvName, actor: &Actor, revocation: Revocation) -> Result<Revocation, ReleaseError> {
        let meta = WriteMeta::now(&actor.0, Action::TokenRevoke, revocation.reason.clone());
        self.releases.commit(env, Write::Revoke(revocation.clone()), &meta).await?;
        tracing::info!(%env, %actor, action = "token-revoke", target = %revocation.key(), "token revoked");
        Ok(revocation)
    }

    /// The revocations in force in `env`, as this instance serves them.
    pub fn list(&self, env: &EnvName) -> Result<Vec<Revocation>, ReleaseError> {
        let snap = self.releases.require_env(env)?;
        let now = now_secs();
        Ok(snap.revocations.iter().filter(|r| r.in_force(now)).cloned().collect())
    }

    /// The revocations in force in every environment, with their environment.
    pub fn list_all(&self) -> Vec<(EnvName, Revocation)> {
        let now = now_secs();
        let mut envs = self.snapshots.environments();
        envs.sort();
        envs.into_iter()
            .filter_map(|env| self.snapshots.get(&env).map(|snap| (env, snap)))
            .flat_map(|(env, snap)| {
                snap.revocations
                    .iter()
                    .filter(|r| r.in_force(now))
                    .map(|r| (env.clone(), r.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
