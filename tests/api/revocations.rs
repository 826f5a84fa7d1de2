//! Token lifecycle: minted tokens carry a `jti`; revocations by `jti` or by subject are
//! stored per environment, reach every instance like a change, and are checked after
//! the token cache; token lifetimes are bounded per scope.

use crate::helpers::{
    Backend, TEST_SECRET, TestApp, assert_error, client_with, eventually, run_cohort, spawn_app, token, unique_prefix,
};
use crate::redis_harness::RedisServer;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header, encode};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// The claims of a token, unverified.
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

fn jti(token: &str) -> String {
    payload(token)["jti"].as_str().expect("a jti").to_owned()
}

/// An HS256 token with the test secret and exactly these claims.
fn signed(claims: &Value) -> String {
    encode(&Header::default(), claims, &EncodingKey::from_secret(TEST_SECRET.as_bytes())).expect("signs")
}

async fn evaluate(app: &TestApp, env: &str, token: &str) -> reqwest::Response {
    client_with(token)
        .post(app.env_url(env, "/evaluate"))
        .json(&json!({"context": {"targetingKey": "u-1"}}))
        .send()
        .await
        .expect("sent")
}

async fn revoke(app: &TestApp, env: &str, body: Value) -> reqwest::Response {
    app.post(&app.env_url(env, "/revocations"), &body).await
}

#[tokio::test]
async fn minted_tokens_carry_a_random_jti_that_the_verified_caller_keeps() {
    let app = spawn_app(Backend::Embedded).await;
    let (first, second) = (token("alice", "production", "eval"), token("alice", "production", "eval"));
    let claims = payload(&first);
    assert_eq!(jti(&first).len(), 32, "128 random bits in hex: {claims}");
    assert_ne!(jti(&first), jti(&second), "each token its own id");
    let principal = app.state.verifier.verify(&first).expect("verifies");
    assert_eq!(principal.jti.as_deref(), Some(jti(&first).as_str()));
    assert_eq!(principal.iat, claims["iat"].as_u64().expect("iat"));
    assert!(principal.iat > 0 && principal.exp == principal.iat + 3_600);
}

#[tokio::test]
async fn a_cached_token_is_refused_on_its_next_request_once_its_jti_is_revoked() {
    let app = spawn_app(Backend::Embedded).await;
    let (revoked, other) = (token("app", "production", "eval"), token("app", "production", "eval"));
    for _ in 0..2 {
        // The second request is answered from the token cache.
        assert_eq!(evaluate(&app, "production", &revoked).await.status(), StatusCode::OK);
    }
    let r = revoke(&app, "production", json!({"jti": jti(&revoked), "reason": "leaked in a log"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    assert_eq!((body["jti"].as_str(), body["actor"].as_str()), (Some(jti(&revoked).as_str()), Some("test-admin")));
    assert!(body["expires_at"].as_u64() > body["revoked_at"].as_u64(), "{body}");

    let message =
        assert_error(evaluate(&app, "production", &revoked).await, StatusCode::UNAUTHORIZED, "token_revoked").await;
    assert!(message.contains("revoked"), "{message}");
    assert_eq!(evaluate(&app, "production", &other).await.status(), StatusCode::OK, "only that token");
    // Every authenticated route: the OFREP routes too.
    let ofrep = client_with(&revoked)
        .post(app.url("/ofrep/v1/evaluate/flags"))
        .json(&json!({"context": {"targetingKey": "u-1"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(ofrep.status(), StatusCode::UNAUTHORIZED);

    let listed = app.get_json(app.env_url("production", "/revocations")).await;
    assert_eq!(listed["revocations"][0]["jti"].as_str(), Some(jti(&revoked).as_str()), "{listed}");
    assert_eq!(listed["revocations"][0]["reason"], "leaked in a log");
    let audit = app.get_json(app.env_url("production", "/audit")).await;
    let entry = &audit["entries"][0];
    assert_eq!((entry["action"].as_str(), entry["actor"].as_str()), (Some("token-revoke"), Some("test-admin")));
    assert_eq!(entry["after"]["jti"].as_str(), Some(jti(&revoked).as_str()), "{entry}");
    // The other environment is not touched.
    let staging = app.get_json(app.env_url("staging", "/revocations")).await;
    assert_eq!(staging["revocations"], json!([]));
}

#[tokio::test]
async fn revoking_a_subject_refuses_its_tokens_issued_until_then_but_not_later_ones() {
    let app = spawn_app(Backend::Embedded).await;
    let old = token("bob", "production", "read");
    let someone_else = token("carol", "production", "read");
    let r = revoke(&app, "production", json!({"sub": "bob", "reason": "left the team"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let revoked_at = r.json::<Value>().await.expect("json")["revoked_at"].as_u64().expect("revoked_at");
    let get = |t: String| {
        let url = app.env_url("production", "/releases");
        async move { client_with(&t).get(url).send().await.expect("sent") }
    };
    assert_error(get(old).await, StatusCode::UNAUTHORIZED, "token_revoked").await;
    assert_eq!(get(someone_else).await.status(), StatusCode::OK);
    // Issued in the revocation's second: not provably after it, so refused.
    let same_second = signed(&json!({"sub": "bob", "env": "production", "scope": "read",
        "iat": revoked_at, "exp": revoked_at + 600, "jti": "same-second"}));
    assert_error(get(same_second).await, StatusCode::UNAUTHORIZED, "token_revoked").await;
    // Given new tokens afterwards, bob works again.
    let newer = signed(&json!({"sub": "bob", "env": "production", "scope": "read",
        "iat": revoked_at + 1, "exp": revoked_at + 600, "jti": "newer"}));
    assert_eq!(get(newer).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_revocation_needs_exactly_one_of_jti_and_sub_and_an_admin_token() {
    let app = spawn_app(Backend::Embedded).await;
    for body in [json!({}), json!({"jti": "a", "sub": "b"}), json!({"jti": "  "}), json!({"jti": "x".repeat(1_025)})] {
        let r = revoke(&app, "production", body.clone()).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let writer = client_with(&token("team", "production", "write kill"));
    let r =
        writer.post(app.env_url("production", "/revocations")).json(&json!({"sub": "x"})).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
    let local_admin = client_with(&token("ops", "production", "admin"));
    let r = local_admin.post(app.url("/v1/revocations")).json(&json!({"sub": "x"})).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "wrong_environment").await;
    let r = revoke(&app, "nowhere", json!({"sub": "x"})).await;
    assert_error(r, StatusCode::NOT_FOUND, "environment_not_found").await;
}

#[tokio::test]
async fn a_revocation_for_every_environment_refuses_star_tokens_and_each_environments_tokens() {
    let app = spawn_app(Backend::Embedded).await;
    let everywhere = token("edge", "*", "eval");
    let staging_only = token("dave", "staging", "eval");
    for env in ["production", "staging"] {
        assert_eq!(evaluate(&app, env, &everywhere).await.status(), StatusCode::OK);
    }
    let r = app.post(&app.url("/v1/revocations"), &json!({"jti": jti(&everywhere)})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["environments"], json!(["production", "staging"]), "{body}");
    assert_eq!(body["revocation"]["all_environments"], true);
    for env in ["production", "staging"] {
        assert_error(evaluate(&app, env, &everywhere).await, StatusCode::UNAUTHORIZED, "token_revoked").await;
    }
    // By subject for every environment: a one-environment token of that subject too, and
    // environments created afterwards are covered as well. (The token is minted before the
    // revocation: one minted after it, in a later second, is a new token and works.)
    let qa = token("dave", "qa", "eval");
    let r = app.post(&app.url("/v1/revocations"), &json!({"sub": "dave"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_error(evaluate(&app, "staging", &staging_only).await, StatusCode::UNAUTHORIZED, "token_revoked").await;
    app.given_environment("qa").await;
    assert_error(evaluate(&app, "qa", &qa).await, StatusCode::UNAUTHORIZED, "token_revoked").await;
    let listed = app.get_json(app.url("/v1/revocations")).await;
    assert_eq!(listed["revocations"].as_array().map(Vec::len), Some(4), "two per environment: {listed}");
}

#[tokio::test]
async fn a_star_token_revoked_in_one_environment_is_refused_in_all() {
    let app = spawn_app(Backend::Embedded).await;
    let everywhere = token("edge", "*", "eval");
    let r = revoke(&app, "staging", json!({"jti": jti(&everywhere)})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // One credential for every environment: revoked anywhere, it is revoked.
    assert_error(evaluate(&app, "production", &everywhere).await, StatusCode::UNAUTHORIZED, "token_revoked").await;
    // A production token of the same subject is not revoked by staging's revocation.
    let r = revoke(&app, "staging", json!({"sub": "erin"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(evaluate(&app, "production", &token("erin", "production", "eval")).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_instance_reaches_a_second_one_through_redis() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    let (by_jti, by_sub) = (token("app", "production", "eval"), token("frank", "production", "eval"));
    for t in [&by_jti, &by_sub] {
        // B has verified and cached both.
        assert_eq!(evaluate(&b, "production", t).await.status(), StatusCode::OK);
    }
    assert_eq!(revoke(&a, "production", json!({"jti": jti(&by_jti)})).await.status(), StatusCode::CREATED);
    assert_eq!(revoke(&a, "production", json!({"sub": "frank"})).await.status(), StatusCode::CREATED);
    for t in [&by_jti, &by_sub] {
        let refused = eventually(Duration::from_secs(15), || async {
            evaluate(&b, "production", t).await.status() == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(refused, "B refuses the token A revoked");
        assert_error(evaluate(&b, "production", t).await, StatusCode::UNAUTHORIZED, "token_revoked").await;
    }
    let listed = b.get_json(b.env_url("production", "/revocations")).await;
    assert_eq!(listed["revocations"].as_array().map(Vec::len), Some(2), "{listed}");
    // A third instance started afterwards loads them with the environment.
    let c = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            evaluate(&c, "production", &by_jti).await.status() == StatusCode::UNAUTHORIZED
        })
        .await
    );
}

#[tokio::test]
async fn the_server_refuses_tokens_living_longer_than_their_scopes_allow() {
    let app = spawn_app(Backend::Embedded).await;
    let iat = now();
    let claims = |scope: &str, days: u64| json!({"sub": "x", "env": "production", "scope": scope, "iat": iat, "exp": iat + days * 86_400});
    let r = evaluate(&app, "production", &signed(&claims("eval", 365))).await;
    assert_eq!(r.status(), StatusCode::OK, "eval may live a year");
    let r = client_with(&signed(&claims("admin", 31))).get(app.env_url("production", "/releases")).send().await;
    let message = assert_error(r.expect("sent"), StatusCode::UNAUTHORIZED, "invalid_claims").await;
    assert!(message.contains("auth.max_ttl"), "{message}");
    let r = evaluate(&app, "production", &signed(&claims("eval", 366))).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_claims").await;
    // Without `iat`, the expiry may be at most the limit away.
    let far = signed(&json!({"sub": "x", "env": "production", "scope": "eval", "exp": iat + 400 * 86_400}));
    assert_error(evaluate(&app, "production", &far).await, StatusCode::UNAUTHORIZED, "invalid_claims").await;
}

fn mint(ttl: &str, scope: &str, config: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["token", "mint", "--sub", "alice", "--env", "production", "--scope", scope, "--ttl", ttl, "--config"])
        .arg(config)
        .output()
        .expect("runs")
}

#[test]
fn mint_refuses_a_zero_ttl_and_one_beyond_the_scopes_limit() {
    let config = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(config.path(), format!("[auth]\nhs256_secret = \"{TEST_SECRET}\"\n[auth.max_ttl]\nread = \"7d\"\n"))
        .expect("write");
    for (ttl, scope, says) in [
        ("0s", "eval", "above 0"),
        ("1000y", "eval", "at most 365d"),
        ("31d", "admin", "at most 30d"),
        ("8d", "eval,read", "at most 7d"),
    ] {
        let out = mint(ttl, scope, config.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--ttl {ttl} --scope {scope}: {stderr}");
        assert!(stderr.contains(says) && stderr.contains("--ttl"), "--ttl {ttl}: {stderr}");
    }
    let out = mint("7d", "read", config.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let minted = String::from_utf8(out.stdout).expect("utf8");
    let claims = payload(minted.trim());
    assert_eq!(claims["exp"].as_u64().zip(claims["iat"].as_u64()).map(|(e, i)| e - i), Some(7 * 86_400));
    assert!(claims["jti"].is_string(), "{claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_revoke_and_token_revocations_from_the_command_line() {
    let app = spawn_app(Backend::Embedded).await;
    let admin = token("oncall", "*", "admin");
    let victim = token("app", "production", "eval");
    let out = run_cohort(&app, admin.clone(), &["token", "revoke", "--jti", &jti(&victim), "--reason", "leaked"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("revoked jti {} in production", jti(&victim))), "{stdout}");
    assert_error(evaluate(&app, "production", &victim).await, StatusCode::UNAUTHORIZED, "token_revoked").await;

    let out = run_cohort(&app, admin.clone(), &["token", "revoke", "--sub", "mallory", "--env", "*"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("revoked sub mallory in production, staging"), "{stdout}");

    let out = run_cohort(&app, admin.clone(), &["token", "revocations"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("REVOKED") && header.contains("REASON"), "{table}");
    assert!(table.contains(&format!("jti {}", jti(&victim))) && table.contains("leaked"), "{table}");
    assert!(table.contains("production (*)") && table.contains("sub mallory"), "{table}");
    assert!(table.contains("oncall"), "the actor: {table}");

    let out = run_cohort(&app, admin.clone(), &["token", "revocations", "--env", "*"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("staging (*)"), "every environment's: {table}");

    // Neither or both of --jti and --sub: a usage error, nothing sent.
    let out = run_cohort(&app, admin.clone(), &["token", "revoke"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run_cohort(&app, admin, &["token", "revoke", "--jti", "a", "--sub", "b"]).await;
    assert_eq!(out.status.code(), Some(2));
    // A token that may not revoke: refused by the server, exit 1.
    let out = run_cohort(&app, token("ro", "production", "read"), &["token", "revoke", "--sub", "x"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn event_streams_carry_a_revocation_as_a_revision_step_without_its_contents() {
    let app = spawn_app(Backend::Embedded).await;
    let response = client_with(&token("sdk", "production", "eval"))
        .get(app.env_url("production", "/stream"))
        .send()
        .await
        .expect("stream opens");
    let mut stream = crate::sse::EventReader::new(response);
    let first = stream.expect_event().await;
    assert_eq!((first.event.as_str(), first.id), ("snapshot", Some(0)));
    let r = revoke(&app, "production", json!({"sub": "someone-secret", "reason": "private"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let change = stream.expect_event().await;
    assert_eq!((change.event.as_str(), change.id), ("change", Some(1)));
    assert_eq!(change.json(), json!({"revision": 1, "type": "revoke"}), "public eval tokens read streams");
    // The Rust SDK applies it as a step and stays in sync.
    let sdk = cohort_sdk::client::Client::builder(&app.address, "production", token("sdk", "production", "eval"))
        .build()
        .expect("client");
    assert!(sdk.wait_ready(Duration::from_secs(10)).await, "ready");
    assert_eq!(revoke(&app, "production", json!({"jti": "x"})).await.status(), StatusCode::CREATED);
    assert!(eventually(Duration::from_secs(10), || async { sdk.revision() == 2 }).await, "the SDK follows");
}
