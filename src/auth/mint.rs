//! Minting HS256 tokens offline from the configured secret (`cohort token mint`).

use super::{Claims, EnvScope, Scopes};
use crate::config::{MaxTtlSettings, Secret};
use jsonwebtoken::{EncodingKey, Header, encode};
use rand::RngCore as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A token request that cannot be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("`{0}` is not an environment name or `*`")]
    Env(String),
    #[error("no known scope in `{0}`; use eval, report, read, write, kill or admin")]
    Scope(String),
    #[error("the subject must not be empty")]
    Subject,
    #[error("the TTL must be above 0 (e.g. 8h, 30d)")]
    ZeroTtl,
    #[error(
        "a token with scope `{scope}` may live at most {max} (auth.max_ttl), not {ttl}; mint a shorter one or raise the limit"
    )]
    TtlTooLong { scope: String, ttl: String, max: String },
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Checks `ttl` for a token with `scope` against the configured limits: above zero and
/// at most the smallest limit over its scopes.
pub fn check_ttl(scope: &str, ttl: Duration, limits: &MaxTtlSettings) -> Result<(), MintError> {
    if ttl.is_zero() {
        return Err(MintError::ZeroTtl);
    }
    let scopes = Scopes::parse(&scope.replace(',', " "));
    if scopes == Scopes::default() {
        return Err(MintError::Scope(scope.to_owned()));
    }
    let max = scopes.max_ttl(limits);
    if ttl > max {
        return Err(MintError::TtlTooLong { scope: scopes.to_claim(), ttl: human(ttl), max: human(max) });
    }
    Ok(())
}

/// A lifetime as configured (`30d`, `12h`), humantime's words otherwise.
pub fn human(ttl: Duration) -> String {
    match ttl.as_secs() {
        s if s > 0 && s % 86_400 == 0 && ttl.subsec_nanos() == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 && ttl.subsec_nanos() == 0 => format!("{}h", s / 3_600),
        _ => humantime::format_duration(ttl).to_string(),
    }
}

/// A fresh token id: 128 random bits, hex.
pub fn new_jti() -> String {
    let mut bytes = [0_u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Signs a token for `sub` in `env` with `scope`, valid for `ttl` from now, with a
/// fresh `jti` (see [`check_ttl`] for the configured limits).
pub fn mint(secret: &Secret, sub: &str, env: &str, scope: &str, ttl: Duration) -> Result<String, MintError> {
    if sub.trim().is_empty() {
        return Err(MintError::Subject);
    }
    if ttl.is_zero() {
        return Err(MintError::ZeroTtl);
    }
    EnvScope::parse(env).ok_or_else(|| MintError::Env(env.to_owned()))?;
    let scopes = Scopes::parse(&scope.replace(',', " "));
    if scopes == Scopes::default() {
        return Err(MintError::Scope(scope.to_owned()));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = Claims {
        sub: sub.to_owned(),
        env: env.to_owned(),
        scope: scopes.to_claim(),
        exp: now.saturating_add(ttl.as_secs()),
        iat: now,
        iss: None,
        jti: Some(new_jti()),
    };
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.expose().as_bytes()))
        .map_err(|e| MintError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_must_be_above_zero_and_within_the_scopes_limit() {
        let limits = MaxTtlSettings::default();
        let days = |d: u64| Duration::from_secs(d * 86_400);
        assert!(matches!(check_ttl("eval", Duration::ZERO, &limits), Err(MintError::ZeroTtl)));
        assert!(matches!(check_ttl("eval", days(365_000), &limits), Err(MintError::TtlTooLong { .. })));
        assert!(check_ttl("eval", days(365), &limits).is_ok());
        assert!(matches!(check_ttl("eval,admin", days(31), &limits), Err(MintError::TtlTooLong { .. })));
        assert!(check_ttl("eval admin", days(30), &limits).is_ok());
        let secret = Secret::new("s".repeat(32));
        assert!(matches!(mint(&secret, "a", "production", "eval", Duration::ZERO), Err(MintError::ZeroTtl)));
    }
}
