//! Minting HS256 tokens offline from the configured secret (`cohort token mint`).

use super::{Claims, EnvScope, Scopes};
use crate::config::Secret;
use jsonwebtoken::{EncodingKey, Header, encode};
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
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Signs a token for `sub` in `env` with `scope`, valid for `ttl` from now.
pub fn mint(secret: &Secret, sub: &str, env: &str, scope: &str, ttl: Duration) -> Result<String, MintError> {
    if sub.trim().is_empty() {
        return Err(MintError::Subject);
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
        exp: now + ttl.as_secs(),
        iat: now,
        iss: None,
    };
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.expose().as_bytes()))
        .map_err(|e| MintError::Sign(e.to_string()))
}
