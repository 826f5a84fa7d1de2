//! Highly available Redis: a store on a cluster or behind sentinels follows a failover by
//! itself, and "acknowledged" means "replicated" when `store.min_replicas_ack` asks for it.

use crate::helpers::{Backend, assert_error, eventually, spawn_app_with, unique_prefix};
use crate::redis_harness::RedisServer;
use crate::redis_topology::{RedisCluster, RedisSentinelSet};
use crate::store_suite::CLUSTER;
use cohort::config::{RedisUrl, StoreKind};
use cohort::store::redis::{RedisOptions, RedisTopology};
use cohort::store::{Action, EnvName, RedisStore, Store, StoreError, Write, WriteMeta};
use cohort_sdk::Release;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(20);

fn user() -> Value {
    json!({"targetingKey": "user-1"})
}

fn production() -> EnvName {
    EnvName::parse("production").expect("valid env")
}

fn meta() -> WriteMeta {
    WriteMeta::now("ha-test", Action::Update, None)
}

fn release(key: &str) -> Release {
    Release::new(key, ["v1", "v2"]).with_allocation("v2", 50_000)
}

/// Writes `key` until the store takes it (a failover window answers errors), at most
/// `CONVERGE`; returns the errors seen before. A create that timed out may have been
/// applied: finding it on a retry counts as taken.
async fn write_until_taken(store: &RedisStore, key: &str) -> Vec<StoreError> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut errors = Vec::new();
    loop {
        match store.write(&production(), Write::Create(release(key)), &meta()).await {
            Ok(_) => return errors,
            Err(StoreError::AlreadyExists(_)) if !errors.is_empty() => return errors,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "writes never resumed: {errors:?} {error}");
                errors.push(error);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Two stores on `topology` under one prefix: one acknowledging only replicated writes
/// (`min_replicas_ack = 1`), one not (for the failover window, when the new primary has
/// no replica yet).
async fn stores(topology: RedisTopology) -> (RedisStore, RedisStore) {
    let plain =
        RedisOptions { command_timeout: Duration::from_secs(2), ..RedisOptions::new(topology, unique_prefix()) };
    let replicated = RedisOptions { min_replicas_ack: 1, replication_timeout: Duration::from_secs(1), ..plain.clone() };
    let replicated = RedisStore::connect(replicated).await.expect("connects");
    let plain = RedisStore::connect(plain).await.expect("connects");
    (replicated, plain)
}

fn keys(data: &cohort::store::EnvData) -> Vec<&str> {
    data.releases.iter().map(|r| r.release.key.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_no_replica_confirms_is_a_503_naming_its_revision_and_a_kill_is_still_served() {
    // A single server has no replica: `WAIT 1` can only time out.
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let app = spawn_app_with(Backend::Redis { server: &redis, prefix: &prefix }, |s| {
        s.store.min_replicas_ack = 1;
        s.store.replication_timeout_ms = 100;
    })
    .await;
    let r = app
        .create_release("production", json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 100.0}}))
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_replicated", "{body}");
    assert_eq!(body["error"]["revision"], 1, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("revision 1") && message.contains("0 of the 1 replica"), "{message}");
    // It is in the store all the same, and served once the follower reads it.
    assert!(eventually(CONVERGE, || async { app.served_revision("production").await == 1 }).await);

    // A kill the replicas do not confirm is served at once and journalled (202).
    let r = app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({"reason": "5xx"})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.expect("json");
    assert_eq!((body["persisted"].clone(), body["killed"].clone()), (json!(false), json!(true)), "{body}");
    assert_eq!(app.decision("production", "checkout", user()).await["reason"], "DISABLED");
    let r = app.post(&app.env_url("production", "/kill-all"), &json!({"reason": "incident"})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Other writes keep answering 503 not_replicated.
    let r = app.set_percent("production", "checkout", json!({"v2": 1}), None).await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "not_replicated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_serve_each_others_replicated_writes() {
    let prefix = unique_prefix();
    let on_cluster = |s: &mut cohort::config::Settings| {
        s.store.kind = StoreKind::Redis;
        s.store.redis_url = RedisUrl::default();
        s.store.redis_cluster_urls = CLUSTER.urls().into_iter().map(RedisUrl::new).collect();
        s.store.redis_prefix = prefix.clone();
        s.store.min_replicas_ack = 1;
        s.store.command_timeout_ms = 5_000;
        s.store.replication_timeout_ms = 2_000;
    };
    let a = spawn_app_with(Backend::Embedded, on_cluster).await;
    let b = spawn_app_with(Backend::Embedded, on_cluster).await;
    a.given_release("production", "checkout", 100.0).await;
    a.given_environment("eu").await;
    a.given_release("eu", "search", 100.0).await;
    assert!(eventually(CONVERGE, || async { b.served_revision("production").await == 1 }).await);
    assert_eq!(b.decision("production", "checkout", user()).await["version"], "v2");
    let r = b.post(&b.env_url("production", "/releases/checkout/kill"), &json!({"reason": "bad"})).await;
    assert_eq!(r.status(), StatusCode::OK, "a replicated kill is persisted");
    assert!(
        eventually(CONVERGE, || async { a.decision("production", "checkout", user()).await["reason"] == "DISABLED" })
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_store_writes_again_by_itself_after_its_master_fails_over() {
    let mut cluster = RedisCluster::start();
    let (replicated, plain) = stores(RedisTopology::Cluster { urls: cluster.urls() }).await;
    replicated.create_environment(&production()).await.expect("creates");
    assert!(write_until_taken(&replicated, "before").await.is_empty());
    let rev_key = replicated.env_keys(&production())[2].clone();
    let killed = cluster.kill_master_of(&rev_key);
    // Until the replica takes over, writes fail clearly (never hang); then they resume.
    let errors = write_until_taken(&plain, "after").await;
    assert!(errors.iter().all(|e| matches!(e, StoreError::Unavailable(_) | StoreError::Unconfirmed(_))), "{errors:?}");
    cluster.wait_for_failover();
    assert_ne!(cluster.master_of(&rev_key), killed);
    assert_eq!(keys(&plain.load(&production()).await.expect("loads")), ["after", "before"], "nothing replicated lost");
    // The old master rejoins as a replica: replicated writes are acknowledged again.
    cluster.restart(killed);
    let errors = write_until_taken(&replicated, "later").await;
    assert!(errors.iter().all(|e| matches!(e, StoreError::Unavailable(_) | StoreError::Unconfirmed(_))), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_store_follows_the_primary_across_a_failover() {
    let mut set = RedisSentinelSet::start();
    let topology = RedisTopology::Sentinel {
        master_name: set.master_name().to_owned(),
        sentinels: set.sentinel_urls(),
        username: None,
        password: None,
        db: 0,
    };
    let (replicated, plain) = stores(topology).await;
    replicated.create_environment(&production()).await.expect("creates");
    assert!(write_until_taken(&replicated, "before").await.is_empty());
    let old = set.kill_primary();
    let new = set.wait_for_new_primary();
    assert_ne!(old, new);
    let errors = write_until_taken(&plain, "after").await;
    assert!(errors.iter().all(|e| matches!(e, StoreError::Unavailable(_) | StoreError::Unconfirmed(_))), "{errors:?}");
    assert_eq!(keys(&plain.load(&production()).await.expect("loads")), ["after", "before"], "nothing replicated lost");
    // The old primary comes back as a replica; the store stays on the new primary. The
    // replicated store's idle connection went down with the old primary: its first
    // command may fail (never re-sent: it may have run), the next asks the sentinels.
    set.restart(old);
    let errors = write_until_taken(&replicated, "later").await;
    assert!(
        errors.len() <= 1
            && errors.iter().all(|e| matches!(e, StoreError::Unavailable(_) | StoreError::Unconfirmed(_))),
        "{errors:?}"
    );
    assert_eq!(set.primary_port(), new);
}
