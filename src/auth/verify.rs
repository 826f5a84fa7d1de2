//! Token verification with a bounded cache of verified tokens, so that auth costs the
//! evaluation path one cache lookup rather than a signature check.

use super::{AuthError, Claims, EnvScope, Principal, Scopes};
use crate::config::{AuthSettings, Secret};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use quick_cache::sync::Cache;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Keys that cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot load the {what} public key from {path}: {message}")]
pub struct KeyError {
    what: &'static str,
    path: String,
    message: String,
}

/// Verifies bearer tokens: HS256 with the server's secret, and RS256/EdDSA with the
/// configured public keys. Each algorithm only ever verifies with its own key, so an
/// HS256 token "signed" with a public key (HS/RS confusion) and `alg: none` are refused.
pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    cache: Cache<Box<str>, Arc<Principal>>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn pem(path: &Path, what: &'static str) -> Result<Option<Vec<u8>>, KeyError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    std::fs::read(path).map(Some).map_err(|e| KeyError {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

impl Verifier {
    /// A verifier for `secret` plus the public keys named in `settings`.
    pub fn new(secret: &Secret, settings: &AuthSettings) -> Result<Self, KeyError> {
        let mut keys = vec![(Algorithm::HS256, DecodingKey::from_secret(secret.expose().as_bytes()))];
        let path = &settings.rs256_public_key_file;
        if let Some(bytes) = pem(path, "RS256")? {
            let key = DecodingKey::from_rsa_pem(&bytes).map_err(|e| KeyError {
                what: "RS256",
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            keys.push((Algorithm::RS256, key));
        }
        let path = &settings.eddsa_public_key_file;
        if let Some(bytes) = pem(path, "EdDSA")? {
            let key = DecodingKey::from_ed_pem(&bytes).map_err(|e| KeyError {
                what: "EdDSA",
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            keys.push((Algorithm::EdDSA, key));
        }
        let set = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Verifier {
            keys,
            issuer: set(&settings.issuer),
            audience: set(&settings.audience),
            leeway: settings.leeway_secs,
            cache: Cache::new(settings.token_cache_entries.max(1)),
        })
    }

    /// Verifies `token` (without the `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let now = now_secs();
        if let Some(principal) = self.cache.get(token) {
            if principal.exp + self.leeway > now {
                return Ok(principal);
            }
            self.cache.remove(token);
            return Err(AuthError::Expired);
        }
        let principal = Arc::new(self.verify_uncached(token)?);
        // Oversized tokens are verified every time rather than allowed to churn the cache.
        if token.len() <= 4_096 {
            self.cache.insert(token.into(), Arc::clone(&principal));
        }
        Ok(principal)
    }

    fn verify_uncached(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token).map_err(|_| header_error(token))?;
        let key = self
            .keys
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .map(|(_, key)| key)
            .ok_or_else(|| AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm => AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg)),
            ErrorKind::InvalidIssuer => AuthError::InvalidClaims("wrong issuer (`iss`)".into()),
            ErrorKind::InvalidAudience => AuthError::InvalidClaims("wrong audience (`aud`)".into()),
            ErrorKind::MissingRequiredClaim(c) => AuthError::InvalidClaims(format!("missing `{c}`")),
            ErrorKind::ImmatureSignature => AuthError::InvalidClaims("not valid yet (`nbf`)".into()),
            ErrorKind::Json(e) => AuthError::InvalidClaims(e.to_string()),
            other => AuthError::Malformed(format!("{other:?}")),
        })?;
        let claims = data.claims;
        let env = EnvScope::parse(&claims.env)
            .ok_or_else(|| AuthError::InvalidClaims(format!("`env` is `{}`, not an environment or `*`", claims.env)))?;
        if claims.sub.trim().is_empty() {
            return Err(AuthError::InvalidClaims("`sub` is empty".into()));
        }
        Ok(Principal {
            sub: claims.sub,
            env,
            scopes: Scopes::parse(&claims.scope),
            exp: claims.exp,
            iat: claims.iat,
            jti: claims.jti.filter(|j| !j.is_empty()),
        })
    }
}

/// Says why a header did not parse: `alg: none` (and other unknown algorithms) gets
/// its own answer, anything else is malformed.
fn header_error(token: &str) -> AuthError {
    let alg = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|header| header.get("alg").and_then(|a| a.as_str()).map(str::to_owned));
    match alg {
        Some(alg) => AuthError::UnsupportedAlgorithm(alg),
        None => AuthError::Malformed("not a JWT (header.payload.signature)".into()),
    }
}
