//! Who may do what: JWT bearer tokens scoped to an environment and a set of actions
//! (docs/security.md). Verification is in [`verify`], the first secret in [`secret`],
//! offline minting in [`mint`]; the HTTP extractor lives in `api::auth`.

pub mod jwks;
pub mod mint;
pub mod secret;
pub mod verify;

use crate::store::EnvName;
use serde::{Deserialize, Serialize};

pub use verify::Verifier;

/// An action class a token may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Evaluate, snapshot, stream.
    Eval,
    /// Read admin routes and the audit log.
    Read,
    /// Create, update, delete releases; allocations; ramps.
    Write,
    /// Kill, unkill, kill-all, unkill-all.
    Kill,
    /// Everything.
    Admin,
    /// Outcome reports (`POST …/events`), which ramp guards act on: server SDKs hold
    /// `eval report`; the `eval` token shipped inside browser apps cannot report.
    Report,
}

impl Scope {
    const ALL: [Scope; 6] = [Scope::Eval, Scope::Read, Scope::Write, Scope::Kill, Scope::Admin, Scope::Report];

    /// The name in a token's `scope` claim.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Eval => "eval",
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Kill => "kill",
            Scope::Admin => "admin",
            Scope::Report => "report",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

/// The scopes a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Parses a space-separated `scope` claim. Unknown names are ignored (a newer
    /// issuer may know more), so they grant nothing.
    pub fn parse(claim: &str) -> Scopes {
        Scopes(claim.split_whitespace().filter_map(Scope::parse).fold(0, |acc, s| acc | s.bit()))
    }

    /// Whether these scopes allow `needed`. `admin` allows everything and `write`
    /// includes `read` (a team that changes releases must see them); nothing else is
    /// implied — a `kill` token only kills.
    pub fn allow(self, needed: Scope) -> bool {
        let has = |s: Scope| self.0 & s.bit() != 0;
        has(Scope::Admin) || has(needed) || (needed == Scope::Read && has(Scope::Write))
    }

    /// Whether these scopes name `scope` itself (nothing implied).
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The longest lifetime a token with these scopes may have: the smallest limit over
    /// its scopes (the longest of all when it names none).
    pub fn max_ttl(self, limits: &crate::config::MaxTtlSettings) -> std::time::Duration {
        [
            (Scope::Eval, limits.eval),
            (Scope::Report, limits.report),
            (Scope::Read, limits.read),
            (Scope::Write, limits.write),
            (Scope::Kill, limits.kill),
            (Scope::Admin, limits.admin),
        ]
        .into_iter()
        .filter(|(scope, _)| self.contains(*scope))
        .map(|(_, limit)| limit)
        .min()
        .unwrap_or_else(|| limits.all().into_iter().max().unwrap_or_default())
    }

    /// The scope names, space separated.
    pub fn to_claim(self) -> String {
        Scope::ALL.iter().filter(|s| self.0 & s.bit() != 0).map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }
}

/// The environments a token may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvScope {
    /// `*`.
    Any,
    /// One environment.
    One(EnvName),
}

impl EnvScope {
    /// Parses an `env` claim.
    pub fn parse(claim: &str) -> Option<EnvScope> {
        if claim == "*" { Some(EnvScope::Any) } else { EnvName::parse(claim).ok().map(EnvScope::One) }
    }

    fn allows(&self, env: &EnvName) -> bool {
        match self {
            EnvScope::Any => true,
            EnvScope::One(e) => e == env,
        }
    }
}

impl std::fmt::Display for EnvScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvScope::Any => f.write_str("*"),
            EnvScope::One(e) => write!(f, "{e}"),
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who (recorded in the audit log).
    pub sub: String,
    /// Where.
    pub env: EnvScope,
    /// What.
    pub scopes: Scopes,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch (0 when the token does not say).
    pub iat: u64,
    /// The token's id, when it has one (`cohort token mint` always gives one): what a
    /// revocation by `jti` names.
    pub jti: Option<String>,
}

impl Principal {
    /// Checks that this principal may do `needed` in `env`.
    pub fn authorize(&self, needed: Scope, env: &EnvName) -> Result<(), AuthError> {
        self.authorize_any(&[needed], env)
    }

    /// Checks that this principal may do any of `accepted` in `env`.
    pub fn authorize_any(&self, accepted: &[Scope], env: &EnvName) -> Result<(), AuthError> {
        if !self.env.allows(env) {
            return Err(AuthError::WrongEnvironment { token: self.env.to_string(), route: env.to_string() });
        }
        if !accepted.iter().any(|s| self.scopes.allow(*s)) {
            let needed = accepted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("` or `");
            return Err(AuthError::MissingScope { needed, have: self.scopes.to_claim() });
        }
        Ok(())
    }
}

/// The claims of a cohort token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who.
    pub sub: String,
    /// One environment or `*`.
    pub env: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at.
    #[serde(default)]
    pub iat: u64,
    /// Issuer, when the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Token id (random, from `cohort token mint`), for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Why a request is not allowed. The first group answers 401, the last two 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this route needs a bearer token: Authorization: Bearer <token> (mint one with `cohort token mint`)")]
    MissingToken,
    #[error("the bearer token is malformed: {0}")]
    Malformed(String),
    #[error("the token's signature does not verify with this server's keys")]
    BadSignature,
    #[error("the token has expired; mint a new one")]
    Expired,
    #[error("tokens signed with `{0}` are not accepted here")]
    UnsupportedAlgorithm(String),
    #[error("the token's claims are not acceptable: {0}")]
    InvalidClaims(String),
    #[error("the token's signing key is not usable here: {0}")]
    UnknownKey(String),
    #[error("the token lacks the `{needed}` scope (it has: {have})")]
    MissingScope { needed: String, have: String },
    #[error("the token is for environment `{token}`, not `{route}`")]
    WrongEnvironment { token: String, route: String },
    #[error("the token has been revoked{0}; ask for a new one")]
    Revoked(String),
}

impl AuthError {
    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed(_) => "malformed_token",
            AuthError::BadSignature => "invalid_signature",
            AuthError::Expired => "token_expired",
            AuthError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            AuthError::InvalidClaims(_) => "invalid_claims",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::MissingScope { .. } => "missing_scope",
            AuthError::WrongEnvironment { .. } => "wrong_environment",
            AuthError::Revoked(_) => "token_revoked",
        }
    }

    /// 403 rather than 401: the caller is known but not allowed.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::MissingScope { .. } | AuthError::WrongEnvironment { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_allow_what_they_say_and_admin_allows_all() {
        let kill = Scopes::parse("kill");
        assert!(kill.allow(Scope::Kill));
        assert!(!kill.allow(Scope::Write) && !kill.allow(Scope::Read) && !kill.allow(Scope::Eval));
        let write = Scopes::parse("write");
        assert!(write.allow(Scope::Read) && write.allow(Scope::Write) && !write.allow(Scope::Kill));
        let admin = Scopes::parse("admin");
        assert!(Scope::ALL.iter().all(|s| admin.allow(*s)));
        assert_eq!(Scopes::parse("eval  read bogus").to_claim(), "eval read");
    }

    #[test]
    fn a_tokens_longest_ttl_is_the_smallest_over_its_scopes() {
        let limits = crate::config::MaxTtlSettings::default();
        let days = |d: u64| std::time::Duration::from_secs(d * 86_400);
        assert_eq!(Scopes::parse("eval").max_ttl(&limits), days(365));
        assert_eq!(Scopes::parse("eval read").max_ttl(&limits), days(90));
        assert_eq!(Scopes::parse("eval admin").max_ttl(&limits), days(30));
        assert_eq!(Scopes::default().max_ttl(&limits), days(365), "no scope: the longest");
    }

    #[test]
    fn only_report_or_admin_may_report_outcomes() {
        assert!(!Scopes::parse("eval").allow(Scope::Report), "a browser's token cannot report");
        assert!(!Scopes::parse("eval read write kill").allow(Scope::Report));
        let server_sdk = Scopes::parse("eval report");
        assert!(server_sdk.allow(Scope::Report) && server_sdk.allow(Scope::Eval) && !server_sdk.allow(Scope::Read));
        assert!(Scopes::parse("admin").allow(Scope::Report));
        assert_eq!(server_sdk.to_claim(), "eval report");
    }
}
