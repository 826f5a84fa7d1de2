//! Every refusal of the auth layer, with its exact status and code, and the scope rules.

use crate::helpers::{Backend, TEST_SECRET, TestApp, assert_error, client_with, spawn_app, spawn_app_with, token};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn claims(exp: u64) -> Value {
    json!({"sub": "mallory", "env": "*", "scope": "admin", "exp": exp, "iat": now()})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).expect("signs")
}

async fn evaluate_with(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(app.env_url("production", "/evaluate")).json(&json!({"context": {}}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("sent")
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_with_401_and_the_reason() {
    let app = spawn_app(Backend::Embedded).await;
    let r = evaluate_with(&app, None).await;
    assert!(r.headers().get("www-authenticate").is_some());
    assert_error(r, StatusCode::UNAUTHORIZED, "missing_token").await;

    let r = evaluate_with(&app, Some("not-a-jwt")).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "malformed_token").await;

    let expired = sign(Algorithm::HS256, &EncodingKey::from_secret(TEST_SECRET.as_bytes()), &claims(now() - 3_600));
    let r = evaluate_with(&app, Some(&expired)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "token_expired").await;

    let wrong_key = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-of-thirty-two-bytes!!"),
        &claims(now() + 600),
    );
    let r = evaluate_with(&app, Some(&wrong_key)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    // `alg: none`: a header and claims with an empty signature.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims(now() + 600).to_string());
    let none = format!("{header}.{body}.");
    let r = evaluate_with(&app, Some(&none)).await;
    let message = assert_error(r, StatusCode::UNAUTHORIZED, "unsupported_algorithm").await;
    assert!(message.contains("none"), "{message}");

    // An RS256 token when no RS256 key is configured.
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).expect("key")).expect("pem");
    let r = evaluate_with(&app, Some(&sign(Algorithm::RS256, &rsa, &claims(now() + 600)))).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unsupported_algorithm").await;

    let r = reqwest::Client::new()
        .post(app.env_url("production", "/evaluate"))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .json(&json!({"context": {}}))
        .send()
        .await
        .expect("sent");
    assert_error(r, StatusCode::UNAUTHORIZED, "missing_token").await;
}

#[tokio::test]
async fn public_keys_verify_their_own_algorithm_and_hs_rs_confusion_is_refused() {
    let app = spawn_app_with(Backend::Embedded, |s| {
        s.auth.rs256_public_key_file = fixture("rs256-public.pem");
        s.auth.eddsa_public_key_file = fixture("eddsa-public.pem");
    })
    .await;
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).expect("key")).expect("pem");
    let r = evaluate_with(&app, Some(&sign(Algorithm::RS256, &rsa, &claims(now() + 600)))).await;
    assert_eq!(r.status(), StatusCode::OK, "an identity provider's RS256 token is accepted");
    let ed = EncodingKey::from_ed_pem(&std::fs::read(fixture("eddsa-private.pem")).expect("key")).expect("pem");
    let r = evaluate_with(&app, Some(&sign(Algorithm::EdDSA, &ed, &claims(now() + 600)))).await;
    assert_eq!(r.status(), StatusCode::OK, "an EdDSA token is accepted");

    // The classic confusion: HS256 "signed" with the RS256 public key as the HMAC secret.
    let public_pem = std::fs::read(fixture("rs256-public.pem")).expect("key");
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(&public_pem), &claims(now() + 600));
    let r = evaluate_with(&app, Some(&forged)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    // And an RS256 header on an HMAC-signed token.
    let mut header = Header::new(Algorithm::HS256);
    header.alg = Algorithm::HS256;
    let hs = encode(&header, &claims(now() + 600), &EncodingKey::from_secret(&public_pem)).expect("signs");
    let mut parts: Vec<&str> = hs.split('.').collect();
    let rs_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    parts[0] = &rs_header;
    let r = evaluate_with(&app, Some(&parts.join("."))).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(Backend::Embedded, |s| {
        s.auth.issuer = "https://idp.example".into();
        s.auth.audience = "cohort".into();
    })
    .await;
    let key = EncodingKey::from_secret(TEST_SECRET.as_bytes());
    let mut good = claims(now() + 600);
    good["iss"] = json!("https://idp.example");
    good["aud"] = json!("cohort");
    let r = evaluate_with(&app, Some(&sign(Algorithm::HS256, &key, &good))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut wrong = good.clone();
    wrong["iss"] = json!("https://evil.example");
    let r = evaluate_with(&app, Some(&sign(Algorithm::HS256, &key, &wrong))).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_claims").await;
    let mut wrong = good;
    wrong["aud"] = json!("someone-else");
    let r = evaluate_with(&app, Some(&sign(Algorithm::HS256, &key, &wrong))).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_claims").await;
}

#[tokio::test]
async fn an_eval_token_can_evaluate_but_not_write_or_read_admin_routes() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 5.0).await;
    let sdk = client_with(&token("sdk-key", "production", "eval"));
    let r = sdk
        .post(app.env_url("production", "/evaluate"))
        .json(&json!({"context": {"targetingKey": "u"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = sdk
        .post(app.env_url("production", "/releases"))
        .json(&json!({"key": "x", "versions": ["a", "b"]}))
        .send()
        .await
        .expect("sent");
    let message = assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
    assert!(message.contains("write"), "{message}");
    let r = sdk.get(app.env_url("production", "/releases")).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
    let r = sdk.post(app.env_url("production", "/releases/checkout/kill")).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
}

#[tokio::test]
async fn a_kill_token_can_kill_and_unkill_but_not_change_an_allocation() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 5.0).await;
    let oncall = client_with(&token("oncall", "production", "kill"));
    let r = oncall
        .post(app.env_url("production", "/releases/checkout/kill"))
        .json(&json!({"reason": "pager"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = oncall.post(app.env_url("production", "/releases/checkout/unkill")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = oncall.post(app.env_url("production", "/kill-all")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = oncall.post(app.env_url("production", "/unkill-all")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = oncall
        .post(app.env_url("production", "/releases/checkout/allocation"))
        .json(&json!({"percent": {"v2": 50}}))
        .send()
        .await
        .expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
    let r = oncall.delete(app.env_url("production", "/releases/checkout")).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
}

#[tokio::test]
async fn a_production_token_cannot_touch_staging() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("staging", "checkout", 5.0).await;
    let prod_admin = client_with(&token("alice", "production", "admin"));
    let r = prod_admin.get(app.env_url("staging", "/releases")).send().await.expect("sent");
    let message = assert_error(r, StatusCode::FORBIDDEN, "wrong_environment").await;
    assert!(message.contains("production") && message.contains("staging"), "{message}");
    let r =
        prod_admin.post(app.env_url("staging", "/evaluate")).json(&json!({"context": {}})).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "wrong_environment").await;
    let r = prod_admin.get(app.env_url("production", "/releases")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    // A write token may read (it must see revisions to write conditionally).
    let team = client_with(&token("team", "staging", "write"));
    let r = team.get(app.env_url("staging", "/releases/checkout")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_routes_need_no_token() {
    let app = spawn_app(Backend::Embedded).await;
    for path in ["/healthz", "/readyz"] {
        let r = reqwest::Client::new().get(app.url(path)).send().await.expect("sent");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_from_the_command_line_is_accepted() {
    let app = spawn_app(Backend::Embedded).await;
    let config = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(config.path(), format!("[auth]\nhs256_secret = \"{TEST_SECRET}\"\n")).expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["token", "mint", "--sub", "alice", "--env", "production", "--scope", "write", "--ttl", "8h", "--config"])
        .arg(config.path())
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let minted = String::from_utf8(output.stdout).expect("utf8").trim().to_owned();
    let r = client_with(&minted)
        .post(app.env_url("production", "/releases"))
        .json(&json!({"key": "checkout", "versions": ["v1", "v2"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::CREATED);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["token", "mint", "--sub", "alice", "--env", "Prod!", "--scope", "write", "--config"])
        .arg(config.path())
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
}
