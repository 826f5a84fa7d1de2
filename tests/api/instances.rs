//! Several instances on one Redis converge, and a Redis outage never stops evaluation.

use crate::helpers::{Backend, eventually, spawn_app, unique_prefix};
use crate::redis_harness::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_through_one_instance_is_evaluated_on_another() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;

    // B has never seen this environment: it discovers it, then follows its stream.
    a.given_release("production", "checkout", 0.0).await;
    let ctx = json!({"targetingKey": "user-1"});
    assert!(
        eventually(CONVERGE, || async { b.decision("production", "checkout", ctx.clone()).await["version"] == "v1" })
            .await,
        "B sees the new release"
    );
    let r = a.set_percent("production", "checkout", json!({"v2": 100}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        eventually(CONVERGE, || async { b.decision("production", "checkout", ctx.clone()).await["version"] == "v2" })
            .await,
        "B serves A's allocation"
    );
    // A kill through B reaches A.
    let r = b.post(&b.env_url("production", "/releases/checkout/kill"), &json!({"reason": "from b"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        eventually(CONVERGE, || async {
            a.decision("production", "checkout", ctx.clone()).await["reason"] == "DISABLED"
        })
        .await,
        "A serves B's kill"
    );
    // An unconditional write through A after B's write lands on top of it, not over it.
    let r = a.set_percent("production", "checkout", json!({"v2": 50}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["killed"], true, "A's allocation change kept B's kill");
    assert_eq!(a.served_revision("production").await, 4);
    assert!(eventually(CONVERGE, || async { b.served_revision("production").await == 4 }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_survives_a_redis_outage_and_writes_resume_after_it() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let app = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    app.given_release("production", "checkout", 100.0).await;
    let ctx = json!({"targetingKey": "user-1"});
    assert_eq!(app.decision("production", "checkout", ctx.clone()).await["version"], "v2");

    redis.kill();
    for _ in 0..20 {
        let d = app.decision("production", "checkout", ctx.clone()).await;
        assert_eq!(d["version"], "v2", "evaluation answers from the snapshot during the outage");
    }
    let r = app.set_percent("production", "checkout", json!({"v2": 10}), None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("json");
    // Refused before it was sent, or sent on the connection Redis dropped: either way a 503.
    assert!(matches!(body["error"]["code"].as_str(), Some("store_unavailable" | "store_unconfirmed")), "{body}");
    let r = app.create_release("production", json!({"key": "other", "versions": ["a", "b"]})).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = app.client.get(app.env_url("production", "/releases/checkout")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK, "reads are served from the snapshot too");

    redis.restart();
    assert!(
        eventually(CONVERGE, || async {
            app.set_percent("production", "checkout", json!({"v2": 0}), None).await.status() == StatusCode::OK
        })
        .await,
        "writes succeed again without restarting the server"
    );
    assert_eq!(app.decision("production", "checkout", ctx).await["version"], "v1");
    let r = app.create_release("production", json!({"key": "other", "versions": ["a", "b"]})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Nothing from the failed writes was half-written.
    let mut conn = redis.connection();
    let keys: Vec<String> =
        redis::cmd("HKEYS").arg(format!("{prefix}:{{production}}:releases")).query(&mut conn).expect("hkeys");
    assert_eq!(keys.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_catches_up_with_writes_made_elsewhere_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    a.given_release("production", "checkout", 0.0).await;
    // A loses its connections; B joins after the restart and writes.
    redis.kill();
    redis.restart();
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    for percent in [10, 20, 30] {
        let r = b.set_percent("production", "checkout", json!({"v2": percent}), None).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert!(eventually(CONVERGE, || async { a.served_revision("production").await == 4 }).await, "A resynced");
    let body: Value = a.get_release("production", "checkout").await.json().await.expect("json");
    assert_eq!(body["allocation"]["v2"], 30.0);
}

#[tokio::test]
async fn every_key_of_an_environment_hashes_to_one_cluster_slot() {
    let redis = RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
    let store = crate::store_suite::redis_store(&redis, "cohort").await;
    let mut conn = redis.connection();
    let env = cohort::store::EnvName::parse("production").expect("env");
    let slots: Vec<i64> = store
        .env_keys(&env)
        .iter()
        .map(|key| redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut conn).expect("keyslot"))
        .collect();
    assert_eq!(slots.len(), 8);
    assert!(slots.windows(2).all(|w| w[0] == w[1]), "one slot per environment: {slots:?}");
}
