//! Identity-provider tokens: `iss`/`aud` required when configured, and keys from a JWKS
//! URL — served here by a small HTTP server on loopback that the test rotates — fetched
//! at start, on an unknown `kid` and periodically, with no restart.

use crate::helpers::{Backend, TEST_SECRET, TestApp, assert_error, eventually, spawn_app_with, token};
use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "cohort";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Admin claims with the expected issuer and audience.
fn claims() -> Value {
    json!({"sub": "idp-user", "env": "*", "scope": "admin", "exp": now() + 600, "iat": now(),
           "iss": ISSUER, "aud": AUDIENCE})
}

/// A signing key and its public JWK.
struct TestKey {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    /// The RSA fixture key (RS256 keys take long to generate in a debug build).
    fn rsa(kid: &'static str) -> TestKey {
        let pem = std::fs::read(fixture("rs256-private.pem")).expect("key");
        let encoding = EncodingKey::from_rsa_pem(&pem).expect("pem");
        TestKey::with_jwk(kid, Algorithm::RS256, encoding)
    }

    /// A P-256 key made now.
    fn ec(kid: &'static str) -> TestKey {
        use p256::pkcs8::EncodePrivateKey as _;
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let der = secret.to_pkcs8_der().expect("pkcs8");
        TestKey::with_jwk(kid, Algorithm::ES256, EncodingKey::from_ec_der(der.as_bytes()))
    }

    /// An Ed25519 key made now.
    fn ed25519(kid: &'static str) -> TestKey {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let der = signing.to_pkcs8_der().expect("pkcs8");
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
                         "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes())});
        TestKey { kid, alg: Algorithm::EdDSA, encoding: EncodingKey::from_ed_der(der.as_bytes()), jwk }
    }

    fn with_jwk(kid: &'static str, alg: Algorithm, encoding: EncodingKey) -> TestKey {
        let mut jwk: Jwk = Jwk::from_encoding_key(&encoding, alg).expect("public jwk");
        jwk.common.key_id = Some(kid.to_owned());
        let jwk = serde_json::to_value(jwk).expect("json");
        TestKey { kid, alg, encoding, jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        encode(&header, claims, &self.encoding).expect("signs")
    }
}

/// A JWKS endpoint on loopback: what it serves can be changed, and it counts fetches.
struct JwksServer {
    url: String,
    document: Arc<Mutex<(u16, Value)>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> JwksServer {
        let document = Arc::new(Mutex::new((200, Value::Null)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/certs", listener.local_addr().expect("addr"));
        let (served, counted) = (Arc::clone(&document), Arc::clone(&fetches));
        let server = HttpServer::new(move || {
            let (served, counted) = (Arc::clone(&served), Arc::clone(&counted));
            App::new().route(
                "/certs",
                web::get().to(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = served.lock().expect("lock").clone();
                    let status = actix_web::http::StatusCode::from_u16(status).expect("status");
                    async move { HttpResponse::build(status).json(body) }
                }),
            )
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        let jwks = JwksServer { url, document, fetches };
        jwks.serve(keys);
        jwks
    }

    fn serve(&self, keys: &[&TestKey]) {
        *self.document.lock().expect("lock") = (200, json!({"keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>()}));
    }

    fn fail(&self, status: u16) {
        self.document.lock().expect("lock").0 = status;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn app_with_jwks(jwks: &JwksServer) -> TestApp {
    let url = jwks.url.clone();
    spawn_app_with(Backend::Embedded, move |s| {
        s.auth.jwks_url = url;
        // Nothing periodic during the test: every fetch after the first is asked for.
        s.auth.jwks_refresh_secs = 3_600;
        s.auth.jwks_min_refetch_secs = 1;
        s.auth.issuer = ISSUER.into();
        s.auth.audience = AUDIENCE.into();
    })
    .await
}

async fn evaluate_with(app: &TestApp, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.env_url("production", "/evaluate"))
        .bearer_auth(token)
        .json(&json!({"context": {}}))
        .send()
        .await
        .expect("sent")
}

async fn accepted(app: &TestApp, token: &str) -> bool {
    evaluate_with(app, token).await.status() == StatusCode::OK
}

#[tokio::test]
async fn identity_provider_tokens_without_the_configured_issuer_or_audience_are_refused() {
    let app = spawn_app_with(Backend::Embedded, |s| {
        s.auth.rs256_public_key_file = fixture("rs256-public.pem");
        s.auth.issuer = ISSUER.into();
        s.auth.audience = AUDIENCE.into();
    })
    .await;
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).expect("key")).expect("pem");
    let sign = |claims: &Value| encode(&Header::new(Algorithm::RS256), claims, &rsa).expect("signs");

    assert_eq!(evaluate_with(&app, &sign(&claims())).await.status(), StatusCode::OK, "right iss and aud");
    for (claim, wrong) in [("iss", "https://evil.test"), ("aud", "someone-else")] {
        let mut absent = claims();
        absent.as_object_mut().expect("object").remove(claim);
        let message =
            assert_error(evaluate_with(&app, &sign(&absent)).await, StatusCode::UNAUTHORIZED, "invalid_claims").await;
        assert!(message.contains(&format!("missing `{claim}`")), "{message}");
        let mut wrong_value = claims();
        wrong_value[claim] = json!(wrong);
        let message =
            assert_error(evaluate_with(&app, &sign(&wrong_value)).await, StatusCode::UNAUTHORIZED, "invalid_claims")
                .await;
        assert!(message.contains(&format!("`{claim}`")), "{message}");
    }
    // Both absent (the token of the issue: full access before).
    let mut neither = claims();
    neither.as_object_mut().expect("object").retain(|k, _| k != "iss" && k != "aud");
    let r = evaluate_with(&app, &sign(&neither)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_claims").await;
    // An admin write with such a token is refused too.
    let r = reqwest::Client::new()
        .post(app.env_url("production", "/kill-all"))
        .bearer_auth(sign(&neither))
        .json(&json!({"reason": "attack"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // cohort's own minted HS256 tokens carry neither and keep working; a wrong one is
    // still refused.
    assert!(accepted(&app, &token("ci", "*", "admin")).await, "a minted token");
    let mut hs = claims();
    hs["iss"] = json!("https://evil.test");
    let forged = encode(&Header::default(), &hs, &EncodingKey::from_secret(TEST_SECRET.as_bytes())).expect("signs");
    assert_error(evaluate_with(&app, &forged).await, StatusCode::UNAUTHORIZED, "invalid_claims").await;
}

#[tokio::test]
async fn jwks_keys_rotate_without_a_restart_and_a_withdrawn_key_stops_working() {
    let (key1, key2) = (TestKey::rsa("key-1"), TestKey::ed25519("key-2"));
    let jwks = JwksServer::start(&[&key1]).await;
    let app = app_with_jwks(&jwks).await;
    assert_eq!(jwks.fetches(), 1, "fetched at start");
    let token1 = key1.sign(&claims());
    assert_eq!(evaluate_with(&app, &token1).await.status(), StatusCode::OK, "a key-1 token");

    // The identity provider rotates: key 2 is published and signs new tokens.
    let token2 = key2.sign(&claims());
    jwks.serve(&[&key1, &key2]);
    // Its very first request waits for the fetch its unknown kid asks for, and passes.
    assert_eq!(
        evaluate_with(&app, &token2).await.status(),
        StatusCode::OK,
        "the first key-2 token is accepted: the unknown kid made cohort fetch the keys again, and waited"
    );
    // No periodic fetch within the hour: the fetch after the first was asked for by the
    // unknown kid.
    assert_eq!(jwks.fetches(), 2, "one early fetch, asked for by the unknown kid");
    // The OpenFeature routes wait for it as well.
    let key3 = TestKey::ed25519("key-3");
    let mut production = claims();
    production["env"] = json!("production");
    let token3 = key3.sign(&production);
    jwks.serve(&[&key1, &key2, &key3]);
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the 1 s early-fetch limit
    let ofrep = app
        .client
        .post(app.url("/ofrep/v1/evaluate/flags"))
        .bearer_auth(&token3)
        .json(&json!({"context": {"targetingKey": "u-1"}}))
        .send()
        .await
        .expect("ofrep bulk request");
    assert_eq!(ofrep.status(), StatusCode::OK, "the first key-3 token is accepted on an OFREP route");
    assert!(accepted(&app, &token1).await, "key 1 is still published");

    // Key 1 is withdrawn. Its token was verified and cached before; after the next
    // fetch (asked for here by a token naming a kid nobody has) it is refused.
    jwks.serve(&[&key2]);
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the 1 s early-fetch limit
    let stranger = TestKey::ed25519("key-4").sign(&claims());
    assert!(
        eventually(Duration::from_secs(10), || async {
            let _ = evaluate_with(&app, &stranger).await;
            jwks.fetches() >= 4
        })
        .await,
        "an unknown kid asks for a fetch"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            evaluate_with(&app, &token1).await.status() == StatusCode::UNAUTHORIZED
        })
        .await,
        "a token signed by the withdrawn key is refused"
    );
    let message = assert_error(evaluate_with(&app, &token1).await, StatusCode::UNAUTHORIZED, "unknown_key").await;
    assert!(message.contains("key-1"), "{message}");
    assert!(accepted(&app, &token2).await, "key 2 keeps working");
    // A newly signed key-1 token is refused as well (not only the cached one).
    let mut fresh = claims();
    fresh["sub"] = json!("someone-new");
    assert_error(evaluate_with(&app, &key1.sign(&fresh)).await, StatusCode::UNAUTHORIZED, "unknown_key").await;
}

#[tokio::test]
async fn a_jwks_key_verifies_only_its_own_algorithm() {
    let (rsa, ec, ed) = (TestKey::rsa("rsa"), TestKey::ec("ec"), TestKey::ed25519("ed"));
    let jwks = JwksServer::start(&[&rsa, &ec, &ed]).await;
    let app = app_with_jwks(&jwks).await;
    for key in [&rsa, &ec, &ed] {
        assert!(accepted(&app, &key.sign(&claims())).await, "{:?} with its own key", key.alg);
    }
    // iss and aud are required of JWKS tokens as of any identity provider's.
    let mut no_aud = claims();
    no_aud.as_object_mut().expect("object").remove("aud");
    let message =
        assert_error(evaluate_with(&app, &ec.sign(&no_aud)).await, StatusCode::UNAUTHORIZED, "invalid_claims").await;
    assert!(message.contains("`aud`"), "{message}");

    // An HMAC token naming a JWKS key, "signed" with that key's public JWK as the
    // secret: HS256 only ever verifies with cohort's own secret.
    let public = rsa.jwk.to_string();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa".into());
    let confused = encode(&header, &claims(), &EncodingKey::from_secret(public.as_bytes())).expect("signs");
    assert_error(evaluate_with(&app, &confused).await, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let mut header = Header::new(Algorithm::HS384);
    header.kid = Some("rsa".into());
    let confused = encode(&header, &claims(), &EncodingKey::from_secret(public.as_bytes())).expect("signs");
    assert_error(evaluate_with(&app, &confused).await, StatusCode::UNAUTHORIZED, "unsupported_algorithm").await;

    // A real signature by one key presented under another key's id and algorithm.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa".into());
    let swapped = encode(&header, &claims(), &ec.encoding).expect("signs");
    let message = assert_error(evaluate_with(&app, &swapped).await, StatusCode::UNAUTHORIZED, "unknown_key").await;
    assert!(message.contains("does not sign ES256"), "{message}");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ec".into());
    let swapped = encode(&header, &claims(), &ed.encoding).expect("signs");
    assert_error(evaluate_with(&app, &swapped).await, StatusCode::UNAUTHORIZED, "unknown_key").await;
    // The right kid and algorithm but another key's signature.
    let impostor = TestKey::ed25519("ed");
    assert_error(evaluate_with(&app, &impostor.sign(&claims())).await, StatusCode::UNAUTHORIZED, "invalid_signature")
        .await;

    // `alg: none` with a kid.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"rsa"}"#),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert_error(evaluate_with(&app, &none).await, StatusCode::UNAUTHORIZED, "unsupported_algorithm").await;
    // An identity provider token with no kid when only a key set is configured.
    let no_kid = encode(&Header::new(Algorithm::EdDSA), &claims(), &ed.encoding).expect("signs");
    assert_error(evaluate_with(&app, &no_kid).await, StatusCode::UNAUTHORIZED, "unknown_key").await;
}

#[tokio::test]
async fn cohort_starts_while_the_jwks_url_fails_and_keeps_the_last_good_keys() {
    let key = TestKey::rsa("key-1");
    let jwks = JwksServer::start(&[&key]).await;
    jwks.fail(503);
    let app = app_with_jwks(&jwks).await;
    let idp_token = key.sign(&claims());

    // Minted tokens work; the identity provider's are refused with a reason.
    assert!(accepted(&app, &token("ci", "*", "admin")).await, "a minted token");
    let message = assert_error(evaluate_with(&app, &idp_token).await, StatusCode::UNAUTHORIZED, "unknown_key").await;
    assert!(message.contains("not been fetched yet"), "{message}");

    // The identity provider comes back: the keys arrive without a restart.
    jwks.serve(&[&key]);
    assert!(eventually(Duration::from_secs(15), || accepted(&app, &idp_token)).await, "keys arrive later");

    // It fails again: a fetch happens (asked for by an unknown kid) and fails, and the
    // last good keys stay in force.
    jwks.fail(500);
    let before = jwks.fetches();
    let stranger = TestKey::ed25519("key-9").sign(&claims());
    assert!(
        eventually(Duration::from_secs(10), || async {
            let _ = evaluate_with(&app, &stranger).await;
            jwks.fetches() > before
        })
        .await,
        "a fetch was tried"
    );
    let mut fresh = claims();
    fresh["sub"] = json!("not-cached-yet");
    assert!(accepted(&app, &key.sign(&fresh)).await, "the last good key set still verifies");
}
