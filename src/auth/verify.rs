//! Token verification with a bounded cache of verified tokens, so that auth costs the
//! evaluation path one cache lookup rather than a signature check.

use super::jwks::{Jwks, JwksConfigError, Miss};
use super::{AuthError, Claims, EnvScope, Principal, Scopes};
use crate::config::{AuthSettings, Secret};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use quick_cache::sync::Cache;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Keys that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A PEM public key file.
    #[error("cannot load the {what} public key from {path}: {message}")]
    Pem { what: &'static str, path: String, message: String },
    /// The JWKS URL.
    #[error(transparent)]
    Jwks(#[from] JwksConfigError),
}

/// Verifies bearer tokens: HS256 with the server's secret, RS256/EdDSA with the
/// configured PEM public keys, and the algorithms of the identity provider's JWKS keys
/// (by `kid`). Each algorithm only ever verifies with its own key, so an HS256 token
/// "signed" with a public key (HS/RS confusion) and `alg: none` are refused; a JWKS key
/// never verifies an HMAC token.
pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    jwks: Option<Arc<Jwks>>,
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
    std::fs::read(path).map(Some).map_err(|e| KeyError::Pem {
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
            let key = DecodingKey::from_rsa_pem(&bytes).map_err(|e| KeyError::Pem {
                what: "RS256",
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            keys.push((Algorithm::RS256, key));
        }
        let path = &settings.eddsa_public_key_file;
        if let Some(bytes) = pem(path, "EdDSA")? {
            let key = DecodingKey::from_ed_pem(&bytes).map_err(|e| KeyError::Pem {
                what: "EdDSA",
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            keys.push((Algorithm::EdDSA, key));
        }
        let set = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Verifier {
            keys,
            jwks: Jwks::from_settings(settings)?.map(Arc::new),
            issuer: set(&settings.issuer),
            audience: set(&settings.audience),
            leeway: settings.leeway_secs,
            cache: Cache::new(settings.token_cache_entries.max(1)),
        })
    }

    /// Fetches the identity provider's keys once, when `auth.jwks_url` is set, waiting
    /// `limit` at most (start-up goes on without them; [`Verifier::key_refresh`] keeps
    /// trying).
    pub async fn fetch_keys(&self, limit: Duration) {
        if let Some(jwks) = &self.jwks {
            jwks.fetch_at_start(limit).await;
        }
    }

    /// The task that keeps the identity provider's keys fresh, when `auth.jwks_url` is
    /// set. When a key disappears from the set the verified-token cache is emptied, so a
    /// token signed by a withdrawn key stops working at the next fetch rather than at its
    /// expiry.
    pub fn key_refresh(
        self: &Arc<Self>,
        stop: watch::Receiver<bool>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let jwks = Arc::clone(self.jwks.as_ref()?);
        let verifier = Arc::downgrade(self);
        let on_removal = move || {
            if let Some(verifier) = verifier.upgrade() {
                verifier.cache.clear();
            }
        };
        Some(jwks.run(on_removal, stop))
    }

    fn key_removals(&self) -> u64 {
        self.jwks.as_ref().map_or(0, |jwks| jwks.removals())
    }

    /// Verifies `token` (without the `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let now = now_secs();
        if let Some(principal) = self.cache.get(token) {
            // The same bound jsonwebtoken applies (`exp + leeway >= now` is still valid), so
            // a token does not flip between accepted and refused around its expiry.
            if principal.exp + self.leeway >= now {
                return Ok(principal);
            }
            self.cache.remove(token);
            return Err(AuthError::Expired);
        }
        let removals = self.key_removals();
        let principal = Arc::new(self.verify_uncached(token)?);
        // Oversized tokens are verified every time rather than allowed to churn the cache.
        if token.len() <= 4_096 {
            self.cache.insert(token.into(), Arc::clone(&principal));
            // A key left the set while this token was verified (perhaps with it): the
            // cache was emptied, and this entry must not outlive that.
            if self.key_removals() != removals {
                self.cache.remove(token);
            }
        }
        Ok(principal)
    }

    /// [`Verifier::verify`], except that a token naming a key the identity provider's set
    /// lacks waits for the early fetch it asked for (bounded) and is verified once more:
    /// a key published a moment ago works from its first token.
    pub async fn verify_settled(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let result = self.verify(token);
        let (Err(AuthError::UnknownKey(_)), Some(jwks)) = (&result, &self.jwks) else { return result };
        jwks.settled().await;
        self.verify(token)
    }

    fn verify_uncached(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token).map_err(|_| header_error(token))?;
        // HMAC is cohort's own secret (minted tokens); every other algorithm is an
        // identity provider's, and only those must carry the configured `iss`/`aud`. An
        // HMAC token never reaches a JWKS key, whatever `kid` it names.
        let from_idp = !matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        let validation = self.validation(header.alg, from_idp);
        let static_key = self.keys.iter().find(|(alg, _)| *alg == header.alg).map(|(_, key)| key);
        let decoded = match (&self.jwks, header.kid.as_deref()) {
            (Some(jwks), Some(kid)) if from_idp => {
                match jwks.with_key(kid, header.alg, |key| decode::<Claims>(token, key, &validation)) {
                    Ok(decoded) => decoded,
                    Err(miss) => match static_key {
                        Some(key) => decode::<Claims>(token, key, &validation),
                        None => return Err(AuthError::UnknownKey(miss_reason(&miss, kid, header.alg))),
                    },
                }
            }
            _ => {
                let key = static_key.ok_or_else(|| match (&self.jwks, from_idp) {
                    (Some(_), true) => AuthError::UnknownKey(format!(
                        "the {:?} token names no key (`kid`) of the identity provider's key set",
                        header.alg
                    )),
                    _ => AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg)),
                })?;
                decode::<Claims>(token, key, &validation)
            }
        };
        let data = decoded.map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm => AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg)),
            ErrorKind::InvalidIssuer => AuthError::InvalidClaims("wrong issuer (`iss`)".into()),
            ErrorKind::InvalidAudience => AuthError::InvalidClaims("wrong audience (`aud`)".into()),
            ErrorKind::MissingRequiredClaim(c) => AuthError::InvalidClaims(format!("missing `{c}`")),
            // A JWKS key's type does not fit the token's algorithm (checked at load; kept
            // as a second line).
            ErrorKind::InvalidKeyFormat | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey => {
                AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg))
            }
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

impl Verifier {
    /// What a token signed with `alg` must satisfy. When `auth.issuer`/`auth.audience`
    /// are set, an identity provider's token without `iss`/`aud` is refused like one with
    /// a wrong value (jsonwebtoken only compares claims that are present unless they are
    /// required).
    fn validation(&self, alg: Algorithm, from_idp: bool) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                if from_idp {
                    required.push("iss");
                }
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                if from_idp {
                    required.push("aud");
                }
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

fn miss_reason(miss: &Miss, kid: &str, alg: Algorithm) -> String {
    match miss {
        Miss::NotLoaded => {
            "the identity provider's keys (auth.jwks_url) have not been fetched yet; retry shortly".to_owned()
        }
        Miss::UnknownKid => {
            format!("no key `{kid}` in the identity provider's key set (it is being fetched again; retry shortly)")
        }
        Miss::WrongAlgorithm => format!("the identity provider's key `{kid}` does not sign {alg:?} tokens"),
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
