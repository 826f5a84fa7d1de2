//! Keys from an identity provider's JWKS URL (`auth.jwks_url`), as Keycloak, Auth0,
//! Okta and Dex publish them: RSA (RS256/384/512, PS256/384/512), EC (ES256 on P-256,
//! ES384 on P-384) and OKP Ed25519 (EdDSA).
//!
//! The key set is fetched at start, again every `auth.jwks_refresh_secs`, and again when
//! a token names a `kid` the set lacks — at most once per `auth.jwks_min_refetch_secs`,
//! so a flood of made-up key ids cannot make cohort hammer the identity provider. A
//! failed fetch keeps the last good set. Only the [`Verifier`](super::Verifier) decides
//! whether a token is good; this module only answers "which key is `kid`, and for which
//! algorithms".

use crate::config::AuthSettings;
use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// How long one fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest key set document read (a real one is a few kilobytes).
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Smallest RSA modulus accepted (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// First retry delay while no key set could be fetched yet (doubles up to the refresh
/// interval, at most a minute).
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A JWKS URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("auth.jwks_url `{url}` is not usable: {message}")]
pub struct JwksConfigError {
    url: String,
    message: String,
}

/// Why a fetch failed (logged; the last good set stays in force).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach the JWKS URL: {0}")]
    Http(String),
    #[error("the JWKS URL answered {0}")]
    Status(u16),
    #[error("the key set is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("the key set is not a JSON Web Key Set: {0}")]
    Json(String),
    #[error("the key set holds no usable signing key ({0} ignored)")]
    NoUsableKey(usize),
}

/// One verification key of the set.
pub struct SigningKey {
    /// The algorithms this key may verify (the JWK's `alg` when it has one, else those
    /// its type and curve allow). Never an HMAC algorithm.
    pub algorithms: Vec<Algorithm>,
    /// The key.
    pub key: DecodingKey,
}

/// The keys of one fetch, by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, SigningKey>,
}

impl KeySet {
    /// Builds a set from a JWKS document. Keys that cannot verify signatures here
    /// (encryption keys, `oct` keys, unknown curves, weak or malformed keys, keys
    /// without a `kid`) are skipped, each with a reason; one odd key never costs the
    /// others.
    pub fn parse(document: &[u8]) -> Result<(KeySet, Vec<String>), FetchError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(document).map_err(|e| FetchError::Json(e.to_string()))?;
        let mut keys = HashMap::new();
        let mut skipped = Vec::new();
        for value in document.keys {
            let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            match serde_json::from_value::<Jwk>(value).map_err(|e| e.to_string()).and_then(|jwk| signing_key(&jwk)) {
                Ok(key) => match kid {
                    Some(kid) if !kid.is_empty() => {
                        if keys.insert(kid.clone(), key).is_some() {
                            skipped.push(format!("`{kid}`: a second key with the same kid replaced the first"));
                        }
                    }
                    _ => skipped.push("a key without a `kid`".to_owned()),
                },
                Err(reason) => skipped.push(format!("`{}`: {reason}", kid.as_deref().unwrap_or("(no kid)"))),
            }
        }
        if keys.is_empty() {
            return Err(FetchError::NoUsableKey(skipped.len()));
        }
        Ok((KeySet { keys }, skipped))
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.get(kid)
    }

    /// The key ids, sorted (for logs).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    fn lost_any_of(&self, old: &KeySet) -> bool {
        old.keys.keys().any(|kid| !self.keys.contains_key(kid))
    }
}

fn decoded_len(b64: &str) -> Result<usize, String> {
    URL_SAFE_NO_PAD.decode(b64.trim_end_matches('=')).map(|b| b.len()).map_err(|_| "not base64url".to_owned())
}

/// The verification key of a JWK and the algorithms it may verify, or why it is not one.
/// Lengths are checked here so that a malformed key is refused at load rather than when a
/// token arrives.
fn signing_key(jwk: &Jwk) -> Result<SigningKey, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (`use: enc`)".into());
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = decoded_len(&rsa.n)?;
            if n < MIN_RSA_MODULUS_BYTES {
                return Err(format!("an RSA key of {} bits (at least 2048 are needed)", n * 8));
            }
            if !(1..=8).contains(&decoded_len(&rsa.e)?) {
                return Err("an RSA exponent of an unusable size".into());
            }
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (alg, size) = match ec.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                _ => return Err(format!("an EC key on {:?}, which is not supported", ec.curve)),
            };
            if decoded_len(&ec.x)? != size || decoded_len(&ec.y)? != size {
                return Err("EC coordinates of the wrong size".into());
            }
            vec![alg]
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err(format!("an OKP key on {:?}, which is not supported", okp.curve));
            }
            if decoded_len(&okp.x)? != 32 {
                return Err("an Ed25519 key of the wrong size".into());
            }
            vec![Algorithm::EdDSA]
        }
        // A shared secret published in a key set would let anyone sign: never used.
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric (`oct`) key".into()),
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family,
        Some(alg) => {
            let alg = jwt_algorithm(alg).ok_or_else(|| format!("`alg: {alg}` is not a signature algorithm"))?;
            if !family.contains(&alg) {
                return Err(format!("`alg: {alg:?}` does not fit the key's type"));
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    Ok(SigningKey { algorithms, key })
}

fn jwt_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Why no JWKS key verifies a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No key set has been fetched yet.
    NotLoaded,
    /// The set has no key with this `kid`.
    UnknownKid,
    /// The key exists but is for other algorithms.
    WrongAlgorithm,
}

/// The identity provider's key set, kept fresh by [`Jwks::run`].
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    refresh: Duration,
    min_refetch: Duration,
    keys: ArcSwap<Option<KeySet>>,
    /// Bumped whenever a fetched set lacks a key the previous one had.
    removals: AtomicU64,
    refetch: Notify,
    last_on_demand: Mutex<Option<Instant>>,
    on_demand: AtomicU64,
    /// An early fetch was asked for and has not completed yet.
    asked: AtomicBool,
    /// Counts completed fetches (good or failed), for [`Jwks::settled`].
    fetched: watch::Sender<u64>,
}

impl Jwks {
    /// A key set for `settings.jwks_url`, or `None` when none is configured. Nothing is
    /// fetched until [`Jwks::run`].
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Jwks>, JwksConfigError> {
        let url = settings.jwks_url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let invalid = |message: String| JwksConfigError { url: url.to_owned(), message };
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(invalid("only http and https URLs are fetched".into()));
        }
        if settings.jwks_refresh_secs == 0 || settings.jwks_min_refetch_secs == 0 {
            return Err(invalid("auth.jwks_refresh_secs and auth.jwks_min_refetch_secs must be above 0".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Some(Jwks {
            url: url.to_owned(),
            client,
            refresh: Duration::from_secs(settings.jwks_refresh_secs),
            min_refetch: Duration::from_secs(settings.jwks_min_refetch_secs),
            keys: ArcSwap::from_pointee(None),
            removals: AtomicU64::new(0),
            refetch: Notify::new(),
            last_on_demand: Mutex::new(None),
            on_demand: AtomicU64::new(0),
            asked: AtomicBool::new(false),
            fetched: watch::channel(0).0,
        }))
    }

    /// Runs `check` against the key named `kid` if it may verify `alg`. A `kid` the set
    /// lacks (or no set yet) asks for an early fetch, rate-limited.
    pub fn with_key<T>(&self, kid: &str, alg: Algorithm, check: impl FnOnce(&DecodingKey) -> T) -> Result<T, Miss> {
        let guard = self.keys.load();
        let Some(set) = guard.as_ref() else {
            self.request_refetch();
            return Err(Miss::NotLoaded);
        };
        match set.get(kid) {
            None => {
                self.request_refetch();
                Err(Miss::UnknownKid)
            }
            Some(key) if !key.algorithms.contains(&alg) => Err(Miss::WrongAlgorithm),
            Some(key) => Ok(check(&key.key)),
        }
    }

    /// A counter that moves whenever a key disappears from the set: a token verified
    /// before it moved may have been verified with a key that is gone.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::SeqCst)
    }

    /// How many early fetches tokens with unknown key ids have asked for.
    pub fn on_demand_fetches(&self) -> u64 {
        self.on_demand.load(Ordering::Relaxed)
    }

    /// Asks the refresh task for an early fetch, at most once per `min_refetch`.
    fn request_refetch(&self) {
        let Ok(mut last) = self.last_on_demand.lock() else { return };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.min_refetch) {
            return;
        }
        *last = Some(now);
        drop(last);
        self.on_demand.fetch_add(1, Ordering::Relaxed);
        self.asked.store(true, Ordering::SeqCst);
        tracing::info!(url = %self.url, "a token names a key the identity provider's key set lacks; fetching it again");
        self.refetch.notify_one();
    }

    /// Waits for the early fetch a token naming an unknown key asked for, if one is under
    /// way — at most as long as a fetch may take — so that the first token signed with a
    /// newly published key is verified against the set that holds it rather than refused.
    /// Returns at once when no early fetch is pending (the rate limit turned the request
    /// down, or the key is simply not the identity provider's).
    pub async fn settled(&self) {
        if !self.asked.load(Ordering::SeqCst) {
            return;
        }
        let mut fetched = self.fetched.subscribe();
        // The fetch may have completed between the check and the subscription.
        if !self.asked.load(Ordering::SeqCst) {
            return;
        }
        let _ = tokio::time::timeout(FETCH_TIMEOUT, fetched.changed()).await;
    }

    async fn fetch(&self) -> Result<(KeySet, Vec<String>), FetchError> {
        let http = |e: reqwest::Error| FetchError::Http(e.to_string());
        let mut response =
            self.client.get(&self.url).header("Accept", "application/json").send().await.map_err(http)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::parse(&body)
    }

    /// Fetches once and installs the result; returns whether a set is in force.
    async fn refresh_once(&self, on_removal: &(impl Fn() + Send + Sync)) -> bool {
        let loaded = self.install(self.fetch().await, on_removal);
        self.asked.store(false, Ordering::SeqCst);
        self.fetched.send_modify(|n| *n += 1);
        loaded
    }

    fn install(
        &self,
        fetched: Result<(KeySet, Vec<String>), FetchError>,
        on_removal: &(impl Fn() + Send + Sync),
    ) -> bool {
        match fetched {
            Ok((set, skipped)) => {
                for reason in &skipped {
                    tracing::debug!(url = %self.url, key = %reason, "JWKS key skipped");
                }
                let old = self.keys.load_full();
                let lost = old.as_ref().as_ref().is_some_and(|old| set.lost_any_of(old));
                let changed = old.as_ref().as_ref().is_none_or(|old| old.kids() != set.kids());
                if changed {
                    tracing::info!(url = %self.url, kids = ?set.kids(), skipped = skipped.len(), "identity provider keys loaded");
                }
                self.keys.store(Arc::new(Some(set)));
                if lost {
                    // After the new set is in force: a verification that used an old key
                    // and finishes later sees the counter move and is not cached.
                    self.removals.fetch_add(1, Ordering::SeqCst);
                    on_removal();
                }
                true
            }
            Err(error) => {
                let loaded = self.keys.load().is_some();
                if loaded {
                    tracing::warn!(url = %self.url, %error, "cannot refresh the identity provider keys; keeping the last good set");
                } else {
                    tracing::error!(url = %self.url, %error, "cannot fetch the identity provider keys; their tokens are refused until it succeeds");
                }
                loaded
            }
        }
    }

    /// The first fetch, at start, bounded by `limit` so that an identity provider that
    /// does not answer delays start-up that long at most; [`Jwks::run`] keeps trying.
    pub async fn fetch_at_start(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.refresh_once(&|| {})).await.is_err() {
            tracing::error!(url = %self.url, "the identity provider's keys did not arrive in {limit:?}; their tokens are refused until they do");
        }
    }

    /// Keeps the key set fresh until `stop` turns true: every `refresh` (sooner, with
    /// a growing delay, while none could be fetched yet) and whenever a token asks for
    /// it. `on_removal` runs after a fetch that dropped a key.
    pub async fn run(self: Arc<Self>, on_removal: impl Fn() + Send + Sync, mut stop: watch::Receiver<bool>) {
        let mut retry = FIRST_RETRY;
        let mut loaded = self.keys.load().is_some();
        let mut fetch = !loaded;
        loop {
            if fetch {
                loaded = self.refresh_once(&on_removal).await;
            }
            fetch = true;
            let wait = if loaded {
                retry = FIRST_RETRY;
                self.refresh
            } else {
                let wait = retry;
                retry = (retry * 2).min(self.refresh).min(Duration::from_secs(60));
                wait
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.refetch.notified() => {}
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn parse(keys: serde_json::Value) -> Result<(KeySet, Vec<String>), FetchError> {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn each_key_type_gets_only_its_own_algorithms() {
        let (set, skipped) = parse(json!([
            {"kid": "rsa", "kty": "RSA", "use": "sig", "n": b64(&[0xc5; 256]), "e": "AQAB"},
            {"kid": "rsa-pinned", "kty": "RSA", "alg": "PS256", "n": b64(&[0xc5; 256]), "e": "AQAB"},
            {"kid": "p256", "kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            {"kid": "p384", "kty": "EC", "crv": "P-384", "alg": "ES384", "x": b64(&[1; 48]), "y": b64(&[2; 48])},
            {"kid": "ed", "kty": "OKP", "crv": "Ed25519", "x": b64(&[3; 32])},
        ]))
        .expect("parses");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(set.kids(), ["ed", "p256", "p384", "rsa", "rsa-pinned"]);
        let algs = |kid: &str| set.get(kid).expect("key").algorithms.clone();
        assert!(algs("rsa").contains(&Algorithm::RS256) && algs("rsa").contains(&Algorithm::PS512));
        assert_eq!(algs("rsa-pinned"), [Algorithm::PS256]);
        assert_eq!(algs("p256"), [Algorithm::ES256]);
        assert_eq!(algs("p384"), [Algorithm::ES384]);
        assert_eq!(algs("ed"), [Algorithm::EdDSA]);
        for kid in set.kids() {
            assert!(!algs(kid).iter().any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)));
        }
    }

    #[test]
    fn unusable_keys_are_skipped_and_the_rest_kept() {
        let (set, skipped) = parse(json!([
            {"kid": "secret", "kty": "oct", "k": b64(b"a shared secret anyone could sign with")},
            {"kid": "enc", "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": b64(&[0xc5; 256]), "e": "AQAB"},
            {"kid": "weak", "kty": "RSA", "n": b64(&[0xc5; 128]), "e": "AQAB"},
            {"kid": "short-ed", "kty": "OKP", "crv": "Ed25519", "x": b64(&[3; 8])},
            {"kid": "p521", "kty": "EC", "crv": "P-521", "x": b64(&[1; 66]), "y": b64(&[2; 66])},
            {"kid": "mismatch", "kty": "EC", "crv": "P-256", "alg": "RS256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            {"kty": "OKP", "crv": "Ed25519", "x": b64(&[3; 32])},
            {"kid": "odd", "kty": "something-new"},
            {"kid": "good", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": b64(&[3; 32])},
        ]))
        .expect("parses");
        assert_eq!(set.kids(), ["good"]);
        assert_eq!(skipped.len(), 8, "{skipped:?}");
        assert!(matches!(
            parse(json!([{"kid": "secret", "kty": "oct", "k": "c2VjcmV0"}])),
            Err(FetchError::NoUsableKey(1))
        ));
        assert!(matches!(KeySet::parse(b"<html>"), Err(FetchError::Json(_))));
    }

    #[test]
    fn a_flood_of_unknown_kids_asks_for_one_fetch_per_interval() {
        let settings = AuthSettings {
            jwks_url: "http://127.0.0.1:9/jwks".into(),
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 3_600,
            ..crate::config::Settings::load_with_env(None, &Default::default(), Default::default())
                .expect("defaults")
                .auth
        };
        let jwks = Jwks::from_settings(&settings).expect("valid").expect("configured");
        let (set, _) = parse(json!([{"kid": "a", "kty": "OKP", "crv": "Ed25519", "x": b64(&[3; 32])}])).expect("set");
        jwks.keys.store(Arc::new(Some(set)));
        for i in 0..1_000 {
            assert_eq!(jwks.with_key(&format!("made-up-{i}"), Algorithm::EdDSA, |_| ()), Err(Miss::UnknownKid));
        }
        assert_eq!(jwks.on_demand_fetches(), 1, "one early fetch for the whole flood");
        assert_eq!(jwks.with_key("a", Algorithm::RS256, |_| ()), Err(Miss::WrongAlgorithm));
        assert_eq!(jwks.with_key("a", Algorithm::EdDSA, |_| 7), Ok(7));
    }
}
