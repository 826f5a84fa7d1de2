//! The store can go backwards or away; an acknowledged kill is served all the same.
//! Real `redis-server` processes restarted from an older dump, emptied, stopped.

use crate::helpers::{
    Backend, TestApp, assert_error, eventually, run_cohort, spawn_app, spawn_app_with, unique_prefix,
};
use crate::redis_harness::RedisServer;
use redis::Commands;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);

fn user() -> Value {
    json!({"targetingKey": "user-1"})
}

async fn reason(app: &TestApp, key: &str) -> Value {
    app.decision("production", key, user()).await["reason"].clone()
}

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let r = app.client.get(app.url("/readyz")).send().await.expect("readyz");
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

async fn kill(app: &TestApp, key: &str, why: &str) -> reqwest::Response {
    app.post(&app.env_url("production", &format!("/releases/{key}/kill")), &json!({"reason": why})).await
}

async fn regressed(app: &TestApp) -> bool {
    readyz(app).await.1["store_state"] == "regressed"
}

async fn kill_entries(app: &TestApp, key: &str) -> usize {
    let audit = app.get_json(app.env_url("production", &format!("/audit?release={key}&limit=100"))).await;
    audit["entries"].as_array().map_or(0, |entries| entries.iter().filter(|e| e["action"] == "kill").count())
}

async fn spawn_on(redis: &RedisServer, prefix: &str, dir: &Path) -> TestApp {
    let dir = dir.to_path_buf();
    spawn_app_with(Backend::Redis { server: redis, prefix }, move |s| s.store.data_dir = dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_redis_restarted_from_an_older_dump_is_served_and_reseeding_brings_every_instance_back() {
    let mut redis = RedisServer::start_with_snapshots();
    let prefix = unique_prefix();
    let a = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    a.given_release("production", "shop1", 100.0).await;
    redis.save();
    for key in ["shop2", "shop3"] {
        a.given_release("production", key, 100.0).await;
    }
    assert!(eventually(CONVERGE, || async { b.served_revision("production").await == 3 }).await);

    // Redis dies and comes back from the dump taken at revision 1.
    redis.kill();
    redis.start_again();
    assert!(eventually(CONVERGE, || async { regressed(&a).await && regressed(&b).await }).await, "both notice");
    let (status, ready) = readyz(&a).await;
    assert_eq!(status, StatusCode::OK, "a regressed store leaves the instance serving: {ready}");
    assert_eq!(ready["regressed"]["production"]["stored"], 1);
    assert_eq!(ready["regressed"]["production"]["seen"], 3);
    let metrics = a.client.get(a.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("cohort_store_regressed{environment=\"production\"} 1"), "{metrics}");

    // Every instance still serves its last good snapshot, never the older data.
    assert_eq!(b.decision("production", "shop3", user()).await["version"], "v2");
    // A kill is never acknowledged-and-unserved: this instance serves it at once.
    let r = kill(&a, "shop2", "5xx spike").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.expect("json");
    assert_eq!((body["persisted"].clone(), body["killed"].clone()), (json!(false), json!(true)));
    assert_eq!(reason(&a, "shop2").await, "DISABLED");
    // Other writes are refused, naming the way out; nothing reaches the older data.
    let r = a.set_percent("production", "shop1", json!({"v2": 1}), None).await;
    let message = assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "store_regressed").await;
    assert!(message.contains("cohort store reseed"), "{message}");
    assert_eq!(
        redis.connection().get::<_, Option<u64>>(format!("{prefix}:{{production}}:rev")).ok().flatten(),
        Some(1)
    );

    // The operator reseeds from A: the store gets A's snapshot, pending kill included,
    // above every revision anyone saw; B trusts it again and serves the kill.
    let r = a.post(&a.env_url("production", "/store/reseed"), &json!({"reason": "redis restored an old dump"})).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap_or_default());
    assert!(eventually(CONVERGE, || async { reason(&b, "shop2").await == "DISABLED" }).await, "B serves the kill");
    assert!(eventually(CONVERGE, || async { !regressed(&b).await && !regressed(&a).await }).await);
    assert!(eventually(CONVERGE, || async { a.state.releases.pending().list().is_empty() }).await);
    assert_eq!(a.set_percent("production", "shop1", json!({"v2": 1}), None).await.status(), StatusCode::OK);
    let audit = a.get_json(a.env_url("production", "/audit?limit=5")).await;
    assert_eq!(audit["entries"][1]["action"], "store-reseed", "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseed_from_an_instance_that_saw_less_is_refused_naming_the_one_that_saw_more() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    a.given_release("production", "checkout", 100.0).await;
    a.given_release("production", "search", 100.0).await;
    assert_eq!(kill(&a, "search", "5xx spike").await.status(), StatusCode::OK);
    // Redis loses its data: A had served revision 3, and says so in the store.
    redis.flushall();
    assert!(eventually(CONVERGE, || async { regressed(&a).await }).await);
    let seen_key = format!("{prefix}:{{production}}:seen");
    assert!(
        eventually(CONVERGE, || async { redis.connection().hlen::<_, u64>(&seen_key).unwrap_or(0) > 0 }).await,
        "the regressed instance reports what it had served"
    );
    // A new instance starts over on the empty store: it has seen nothing.
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    assert!(!regressed(&b).await);

    // The tired operator reseeds from B: refused, naming A, which served more (the kill
    // among it), and nothing is written.
    let r = b.post(&b.env_url("production", "/store/reseed"), &json!({"reason": "redis lost its data"})).await;
    let message = assert_error(r, StatusCode::CONFLICT, "reseed_behind").await;
    let a_port = a.address.rsplit(':').next().unwrap_or_default().to_owned();
    assert!(message.contains(&format!(":{a_port} has served production up to revision 3")), "{message}");
    assert!(message.contains("force"), "{message}");
    let audit = b.get_json(b.env_url("production", "/audit?limit=10")).await;
    assert!(!audit.to_string().contains("store-reseed"), "nothing written: {audit}");

    // From A, the reseed goes through; B, which had seen less, follows it.
    let r = a.post(&a.env_url("production", "/store/reseed"), &json!({"reason": "redis lost its data"})).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap_or_default());
    assert!(eventually(CONVERGE, || async { reason(&b, "search").await == "DISABLED" }).await, "B serves the kill");
    // (Staging, emptied too, stays regressed on A until it is reseeded in turn.)
    assert_eq!(readyz(&a).await.1["regressed"]["production"], Value::Null);
    // `force` reseeds from an instance behind the others all the same (after the reseed
    // from A, B is not behind anyone; the flag is accepted either way).
    let r = b.post(&b.env_url("production", "/store/reseed"), &json!({"force": true})).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_emptied_by_flushall_is_never_adopted_and_a_kill_is_still_served() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let app = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    app.given_release("production", "checkout", 100.0).await;
    redis.flushall();
    assert!(eventually(CONVERGE, || async { regressed(&app).await }).await, "the vanished environment is noticed");
    assert_eq!(readyz(&app).await.1["regressed"]["production"]["stored"], Value::Null);
    assert_eq!(app.decision("production", "checkout", user()).await["version"], "v2", "last good snapshot");
    let r = kill(&app, "checkout", "bad deploy").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(reason(&app, "checkout").await, "DISABLED");
    // The default environments are not re-created over the loss.
    assert!(redis.connection().get::<_, Option<u64>>(format!("{prefix}:{{production}}:rev")).expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_sent_to_two_instances_while_redis_is_down_are_served_then_persisted_and_audited_once() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("dir");
    let a = spawn_on(&redis, &prefix, dir.path()).await;
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    a.given_release("production", "checkout", 100.0).await;
    a.given_release("production", "search", 100.0).await;
    assert!(eventually(CONVERGE, || async { b.served_revision("production").await == 2 }).await);

    redis.kill();
    for app in [&a, &b] {
        let r = kill(app, "checkout", "5xx spike").await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().await.unwrap_or_default());
        assert_eq!(reason(app, "checkout").await, "DISABLED");
    }
    // Only A is told to kill `search`, and A restarts before Redis is back: its journal
    // keeps the kill.
    assert_eq!(kill(&a, "search", "also bad").await.status(), StatusCode::ACCEPTED);
    a.stop().await;
    assert!(dir.path().join(cohort::pending::PENDING_FILE).exists());
    redis.start_again();
    let a = spawn_on(&redis, &prefix, dir.path()).await;

    assert!(eventually(CONVERGE, || async { reason(&a, "search").await == "DISABLED" }).await);
    assert!(eventually(CONVERGE, || async { reason(&b, "search").await == "DISABLED" }).await, "B gets A's kill");
    for app in [&a, &b] {
        assert!(eventually(CONVERGE, || async { app.state.releases.pending().list().is_empty() }).await);
        assert_eq!(reason(app, "checkout").await, "DISABLED");
    }
    let stored = a.get_json(a.env_url("production", "/releases/checkout")).await;
    assert_eq!((stored["killed"].clone(), stored["kill_reason"].clone()), (json!(true), json!("5xx spike")));
    assert_eq!(kill_entries(&a, "checkout").await, 1, "two instances, one audited kill");
    assert_eq!(kill_entries(&a, "search").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unkill_while_redis_is_down_cancels_the_pending_kill() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let app = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    app.given_release("production", "checkout", 100.0).await;
    redis.kill();
    assert_eq!(kill(&app, "checkout", "oops").await.status(), StatusCode::ACCEPTED);
    let r = app.post(&app.env_url("production", "/releases/checkout/unkill"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(reason(&app, "checkout").await, "SPLIT");
    redis.start_again();
    assert!(eventually(CONVERGE, || async { app.state.releases.pending().list().is_empty() }).await);
    assert_eq!(kill_entries(&app, "checkout").await, 0, "the cancelled kill was never written");
    assert_eq!(reason(&app, "checkout").await, "SPLIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unkill_while_redis_is_down_keeps_a_journalled_kill_of_a_release_that_was_killed_already() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let app = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    app.given_release("production", "checkout", 100.0).await;
    assert_eq!(kill(&app, "checkout", "bad deploy").await.status(), StatusCode::OK);
    redis.kill();
    assert_eq!(kill(&app, "checkout", "still bad").await.status(), StatusCode::ACCEPTED, "a new reason, journalled");
    let r = app.post(&app.env_url("production", "/releases/checkout/unkill"), &json!({})).await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unkill_needs_store").await;
    assert_eq!(reason(&app, "checkout").await, "DISABLED");
    assert_eq!(app.state.releases.pending().list().len(), 1, "the journalled kill is kept");
    redis.start_again();
    assert!(eventually(CONVERGE, || async { app.state.releases.pending().list().is_empty() }).await);
    let stored = app.get_json(app.env_url("production", "/releases/checkout")).await;
    assert_eq!((stored["killed"].clone(), stored["kill_reason"].clone()), (json!(true), json!("still bad")));
}

/// A cancels a kill it journalled while B's kill of the same release went through the
/// store: once the store answers A again, A serves what it holds — B's kill — and does
/// not keep serving the release live at that revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_kill_gives_way_to_a_kill_the_store_took_meanwhile() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = spawn_app_with(Backend::Redis { server: &redis, prefix: &prefix }, |s| {
        // No replay (nor resync) of its own during the test: the test replays.
        s.store.resync_interval_ms = 3_600_000;
    })
    .await;
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    a.given_release("production", "checkout", 100.0).await;
    redis.kill();
    assert_eq!(kill(&a, "checkout", "oops").await.status(), StatusCode::ACCEPTED);
    redis.start_again();
    let audit = b.env_url("production", "/audit?limit=1");
    assert!(
        eventually(CONVERGE, || async { b.client.get(&audit).send().await.is_ok_and(|r| r.status().is_success()) })
            .await
    );
    assert_eq!(kill(&b, "checkout", "really bad").await.status(), StatusCode::OK, "B's kill, stored");
    let stored = b.served_revision("production").await;
    assert!(eventually(CONVERGE, || async { a.served_revision("production").await >= stored }).await);
    redis.kill();
    let r = a.post(&a.env_url("production", "/releases/checkout/unkill"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "A's own kill cancelled");
    assert_eq!(reason(&a, "checkout").await, "SPLIT");
    redis.start_again();
    assert!(
        eventually(CONVERGE, || async {
            a.state.releases.replay_pending().await;
            a.state.releases.pending().list().is_empty()
        })
        .await
    );
    assert_eq!(reason(&a, "checkout").await, "DISABLED", "A serves the kill the store holds");
}

/// Redis down, then a kill answered 202 and journalled; Redis back, and before the
/// journal is replayed (the replay loop is held off), an unkill answered 200 though the
/// store already holds the release live, so nothing is written. Then the journal is
/// replayed. Returns the app, to check what is served and stored.
async fn unkill_before_the_replay_of_a_kill() -> (TestApp, RedisServer) {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let app = spawn_app_with(Backend::Redis { server: &redis, prefix: &prefix }, |s| {
        // No replay (nor resync) of its own during the test: the test replays.
        s.store.resync_interval_ms = 3_600_000;
    })
    .await;
    app.given_release("production", "checkout", 100.0).await;
    let url = |route: &str| app.env_url("production", &format!("/releases/checkout/{route}"));
    redis.kill();
    let r = app.post(&url("kill"), &json!({"reason": "incident 7"})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "the kill journalled while Redis is down");
    redis.start_again();
    let audit = app.env_url("production", "/audit?limit=1");
    assert!(
        eventually(CONVERGE, || async { app.client.get(&audit).send().await.is_ok_and(|r| r.status().is_success()) })
            .await
    );
    let r = app.post(&url("unkill"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK, "the unkill answered by the store");
    app.state.releases.replay_pending().await;
    assert!(app.state.releases.pending().list().is_empty(), "the journalled kill is superseded");
    (app, redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unkill_answered_by_the_store_is_not_undone_by_the_replay_of_an_earlier_kill() {
    let (app, _redis) = unkill_before_the_replay_of_a_kill().await;
    assert_eq!(reason(&app, "checkout").await, "SPLIT", "served as unkilled");
    let release = app.get_json(app.env_url("production", "/releases/checkout")).await;
    assert_eq!(release["killed"], false, "stored as unkilled: {release}");
    assert_eq!(kill_entries(&app, "checkout").await, 0, "the superseded kill was never written");
}

/// Two instances on one Redis with `checkout` killed (and, with `all`, the environment
/// under kill-all), as stored. Redis goes down; B is asked to lift the kill, then A to
/// kill: the later request is a kill, so once Redis is back both serve it killed — an
/// unkill never waits in B's journal to undo A's kill (which writes nothing, the store
/// holding it killed already, so leaves no revision to be ordered by).
async fn unkill_on_b_then_kill_on_a_while_redis_is_down(all: bool) {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    a.given_release("production", "checkout", 100.0).await;
    let (kill_route, unkill_route) =
        if all { ("/kill-all", "/unkill-all") } else { ("/releases/checkout/kill", "/releases/checkout/unkill") };
    assert_eq!(
        a.post(&a.env_url("production", kill_route), &json!({"reason": "bad deploy"})).await.status(),
        StatusCode::OK
    );
    assert!(eventually(CONVERGE, || async { reason(&b, "checkout").await == "DISABLED" }).await, "B follows the kill");
    redis.kill();
    // B has seen Redis go (a write sent on the dropped connection would be unconfirmed).
    assert!(eventually(CONVERGE, || async { readyz(&b).await.1["store_state"] == "unreachable" }).await);

    let refused = b.post(&b.env_url("production", unkill_route), &json!({})).await;
    let message = assert_error(refused, StatusCode::SERVICE_UNAVAILABLE, "unkill_needs_store").await;
    assert!(message.contains("stays killed"), "{message}");
    assert_eq!(reason(&b, "checkout").await, "DISABLED", "B still serves the kill");
    let r = a.post(&a.env_url("production", kill_route), &json!({"reason": "still bad"})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "A's kill served and journalled");

    redis.start_again();
    for app in [&a, &b] {
        assert!(eventually(CONVERGE, || async { app.state.releases.pending().list().is_empty() }).await);
    }
    for (name, app) in [("A", &a), ("B", &b)] {
        assert_eq!(reason(app, "checkout").await, "DISABLED", "{name} serves the acknowledged kill");
    }
    let stored = if all {
        a.get_json(a.env_url("production", "")).await["kill_all"].clone()
    } else {
        a.get_json(a.env_url("production", "/releases/checkout")).await["killed"].clone()
    };
    assert_eq!(stored, true, "stored killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_acknowledged_after_an_unkill_asked_of_another_instance_while_redis_is_down_stays() {
    unkill_on_b_then_kill_on_a_while_redis_is_down(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_all_acknowledged_after_an_unkill_all_asked_of_another_instance_while_redis_is_down_stays() {
    unkill_on_b_then_kill_on_a_while_redis_is_down(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_all_while_redis_is_down_is_served_at_once_and_written_when_it_is_back() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let app = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    app.given_release("production", "checkout", 100.0).await;
    redis.kill();
    let r = app.post(&app.env_url("production", "/kill-all"), &json!({"reason": "incident 42"})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.expect("json");
    assert_eq!((body["kill_all"].clone(), body["persisted"].clone()), (json!(true), json!(false)));
    assert_eq!(reason(&app, "checkout").await, "DISABLED");
    // A polling SDK holding revision 1 is not told "unchanged": the local kill changes
    // the snapshot's ETag though the revision stays.
    let polled = app
        .client
        .get(app.env_url("production", "/snapshot"))
        .header("If-None-Match", "\"1\"")
        .send()
        .await
        .expect("snapshot");
    assert_eq!(polled.status(), StatusCode::OK);
    assert_eq!(polled.headers()["etag"], "\"1.1\"");
    let snapshot: Value = polled.json().await.expect("json");
    assert_eq!((snapshot["revision"].clone(), snapshot["kill_all"].clone()), (json!(1), json!(true)));
    redis.start_again();
    assert!(eventually(CONVERGE, || async { app.state.releases.pending().list().is_empty() }).await);
    let env = app.get_json(app.env_url("production", "")).await;
    assert_eq!((env["kill_all"].clone(), env["kill_reason"].clone()), (json!(true), json!("incident 42")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_while_redis_is_down_is_alive_unready_and_becomes_ready() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    redis.kill();
    let app = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    let health = app.client.get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let r = app.client.get(app.url("/readyz")).send().await.expect("readyz");
    let message = assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    assert!(message.contains("redis"), "the reason is given: {message}");
    redis.start_again();
    assert!(eventually(CONVERGE, || async { readyz(&app).await.0 == StatusCode::OK }).await, "ready once loaded");
    app.given_release("production", "checkout", 5.0).await;
}

#[tokio::test]
async fn a_kill_in_a_mistyped_environment_is_not_found_and_names_the_nearest() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app.post(&app.env_url("prodution", "/kill-all"), &json!({})).await;
    let message = assert_error(r, StatusCode::NOT_FOUND, "environment_not_found").await;
    assert!(message.contains("`production`"), "{message}");
    for path in ["/releases", "", "/releases/checkout/kill"] {
        let r = if path.ends_with("kill") {
            app.post(&app.env_url("prodution", path), &json!({})).await
        } else {
            app.client.get(app.env_url("prodution", path)).send().await.expect("sent")
        };
        assert_error(r, StatusCode::NOT_FOUND, "environment_not_found").await;
    }
    let r = app.create_release("prodution", json!({"key": "checkout", "versions": ["v1", "v2"]})).await;
    assert_error(r, StatusCode::NOT_FOUND, "environment_not_found").await;
    // An SDK or application configured with the typo is told so, not handed an empty
    // configuration to install.
    let r = app.evaluate("prodution", json!({"targetingKey": "u1"}), None).await;
    assert_error(r, StatusCode::NOT_FOUND, "environment_not_found").await;
    let r = app.client.get(app.env_url("prodution", "/snapshot")).send().await.expect("sent");
    assert_error(r, StatusCode::NOT_FOUND, "environment_not_found").await;
    let envs = app.get_json(app.url("/v1/envs")).await;
    let names: Vec<&str> =
        envs["environments"].as_array().expect("list").iter().filter_map(|e| e["environment"].as_str()).collect();
    assert_eq!(names, ["production", "staging"], "nothing was created by the typo");
}

#[tokio::test]
async fn environments_are_created_by_admins_listed_and_deleted_only_when_empty() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_environment("qa").await;
    let r = app.post(&app.url("/v1/envs"), &json!({"name": "qa"})).await;
    assert_error(r, StatusCode::CONFLICT, "environment_exists").await;
    let r = app.post(&app.url("/v1/envs"), &json!({"name": "Bad Name"})).await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_environment").await;
    let writer = crate::helpers::client_with(&crate::helpers::token("dev", "*", "write"));
    let r = writer.post(app.url("/v1/envs")).json(&json!({"name": "dev"})).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;

    app.given_release("qa", "checkout", 5.0).await;
    let r = app.client.delete(app.env_url("qa", "")).send().await.expect("sent");
    assert_error(r, StatusCode::CONFLICT, "environment_not_empty").await;
    let r = app.client.delete(app.env_url("qa", "/releases/checkout")).send().await.expect("sent");
    assert!(r.status().is_success(), "{}", r.status());
    let r = app.client.delete(app.env_url("qa", "")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.client.get(app.env_url("qa", "/releases")).send().await.expect("sent");
    assert_error(r, StatusCode::NOT_FOUND, "environment_not_found").await;
    // A production-only reader sees only production.
    let reader = crate::helpers::client_with(&crate::helpers::token("ro", "production", "read"));
    let envs: Value = reader.get(app.url("/v1/envs")).send().await.expect("sent").json().await.expect("json");
    assert_eq!(envs["environments"].as_array().map(Vec::len), Some(1), "{envs}");
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_kills_on_several_instances_while_redis_is_down_and_reseeds() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    a.given_release("production", "checkout", 100.0).await;
    assert!(eventually(CONVERGE, || async { b.served_revision("production").await == 1 }).await);
    let admin = crate::helpers::token("oncall", "*", "admin");

    redis.kill();
    let servers = format!("{},{}", a.address, b.address);
    let out = run_cohort(&a, admin.clone(), &["kill", "checkout", "--reason", "5xx", "--server", &servers]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    for app in [&a, &b] {
        assert!(text.contains(&format!("{}: killed checkout on this instance", app.address)), "{text}");
        assert_eq!(reason(app, "checkout").await, "DISABLED");
    }
    assert!(text.contains("NOT yet persisted"), "{text}");
    redis.start_again();
    for app in [&a, &b] {
        assert!(eventually(CONVERGE, || async { app.state.releases.pending().list().is_empty() }).await);
    }
    assert_eq!(kill_entries(&a, "checkout").await, 1);

    // Environments and the reconciliation command.
    let out = run_cohort(&a, admin.clone(), &["kill-all", "--env", "prodution"]).await;
    assert_eq!(out.status.code(), Some(3), "not found");
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `production`?"));
    let out = run_cohort(&a, admin.clone(), &["env", "create", "qa"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_cohort(&a, admin.clone(), &["env", "list"]).await;
    let list = stdout(&out);
    assert!(list.contains("production") && list.contains("qa") && list.contains("staging"), "{list}");
    let out = run_cohort(&a, admin.clone(), &["store", "reseed", "--reason", "drill"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).starts_with("reseeded production from"), "{}", stdout(&out));
    let out = run_cohort(&a, admin, &["unkill", "checkout"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(eventually(CONVERGE, || async { reason(&b, "checkout").await == "SPLIT" }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_after_the_store_lost_its_data_serves_its_last_good_snapshot() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_on(&redis, &prefix, dir.path()).await;
    app.given_release("production", "checkout", 100.0).await;
    assert_eq!(kill(&app, "checkout", "bad deploy").await.status(), StatusCode::OK);
    let kept = dir.path().join(cohort::store_watch::LAST_GOOD_DIR).join("production.json");
    let written = || async {
        std::fs::read(&kept)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["revision"] == 2)
    };
    assert!(eventually(CONVERGE, written).await, "the served state is kept in the data directory");
    app.stop().await;

    redis.flushall();
    let app = spawn_on(&redis, &prefix, dir.path()).await;
    assert!(eventually(CONVERGE, || async { regressed(&app).await }).await);
    assert_eq!(reason(&app, "checkout").await, "DISABLED", "the acknowledged kill is still served");
    let r = app.set_percent("production", "checkout", json!({"v2": 1}), None).await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "store_regressed").await;
}
