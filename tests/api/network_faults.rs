//! A cohort instance reaching its Redis through a misbehaving network (the fault proxy of
//! `fault_proxy.rs`): latency, dropped connections, a partition that hangs connections.
//! Evaluation never depends on the store, so it must never fail; writes either succeed or
//! answer 503 within the command timeout (plus a generous margin: this is a correctness
//! bound, not a speed assertion); a kill is served at once whatever the network does; and
//! after healing, writes work again and the instance catches up, without a restart.

use crate::fault_proxy::FaultProxy;
use crate::helpers::{Backend, TestApp, eventually, spawn_app, spawn_app_with, unique_prefix};
use crate::redis_harness::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(20);
/// No write may take longer than this, whatever the network does: the test apps' command
/// timeout is 1 s, and a write issues a few commands one after the other.
const WRITE_BOUND: Duration = Duration::from_secs(10);

/// Evaluations sent in a loop while faults come and go, and what became of them.
#[derive(Default)]
struct Evaluations {
    answered: AtomicU64,
    failed: AtomicU64,
    slowest_ms: AtomicU64,
    stop: AtomicBool,
}

impl Evaluations {
    /// Evaluates `checkout` on `app` in `tasks` loops until [`Evaluations::finish`].
    fn start(app: &TestApp, tasks: usize) -> (Arc<Evaluations>, Vec<tokio::task::JoinHandle<()>>) {
        let tally = Arc::new(Evaluations::default());
        let handles = (0..tasks)
            .map(|task| {
                let (tally, client, url) =
                    (tally.clone(), app.client.clone(), app.env_url("production", "/evaluate"));
                tokio::spawn(async move {
                    let mut unit = 0u64;
                    while !tally.stop.load(Ordering::Relaxed) {
                        unit += 1;
                        let body = json!({"context": {"targetingKey": format!("user-{task}-{unit}")}, "releases": ["checkout"]});
                        let started = Instant::now();
                        let answer = client.post(&url).json(&body).timeout(Duration::from_secs(5)).send().await;
                        let ok = match answer {
                            Ok(r) if r.status() == StatusCode::OK => r
                                .json::<Value>()
                                .await
                                .is_ok_and(|b| matches!(b["results"]["checkout"]["version"].as_str(), Some("v1" | "v2"))),
                            _ => false,
                        };
                        let counter = if ok { &tally.answered } else { &tally.failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                        tally.slowest_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        (tally, handles)
    }

    /// Stops the loops; (answered, failed, slowest in ms).
    async fn finish(&self, handles: Vec<tokio::task::JoinHandle<()>>) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in handles {
            handle.await.expect("evaluation loop");
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (load(&self.answered), load(&self.failed), load(&self.slowest_ms))
    }
}

/// Instance A reaches Redis through `proxy`; instance B reaches it directly.
async fn instances(redis: &RedisServer, proxy: &FaultProxy, prefix: &str) -> (TestApp, TestApp) {
    let a = through(proxy, redis, prefix).await;
    let b = spawn_app(Backend::Redis { server: redis, prefix }).await;
    (a, b)
}

/// An instance that reaches Redis through `proxy`.
async fn through(proxy: &FaultProxy, redis: &RedisServer, prefix: &str) -> TestApp {
    let url: cohort::config::RedisUrl = serde_json::from_value(json!(proxy.redis_url())).expect("a redis url");
    spawn_app_with(Backend::Redis { server: redis, prefix }, move |s| {
        s.store.redis_url = url;
        s.rate_limit.evaluate_per_address = 0;
    })
    .await
}

/// Heals `proxy` and waits until the command it held reached Redis and was answered:
/// past its deadline, it wrote nothing (the store still at revision 2) and left no
/// `action` entry in `app`'s audit log.
async fn the_held_change_wrote_nothing(
    proxy: &FaultProxy,
    redis: &RedisServer,
    prefix: &str,
    app: &TestApp,
    action: &str,
) {
    proxy.heal();
    assert!(
        eventually(CONVERGE, || async { proxy.answers_after_hold() >= 1 }).await,
        "the held {action} reached redis and was answered"
    );
    assert_eq!(stored_revision(redis, prefix), 2, "the late {action} wrote nothing");
    let audit = app.get_json(app.env_url("production", "/audit?limit=100")).await;
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    assert!(!entries.iter().any(|e| e["action"] == action), "no {action} in the audit log: {audit}");
}

/// A write's answer (`None`: no answer within [`WRITE_BOUND`]) and how long it took.
async fn timed(request: reqwest::RequestBuilder) -> (Option<StatusCode>, Duration) {
    let started = Instant::now();
    let status = request.timeout(WRITE_BOUND).send().await.ok().map(|r| r.status());
    (status, started.elapsed())
}

fn set_percent(app: &TestApp, key: &str, percent: u32) -> reqwest::RequestBuilder {
    app.client
        .post(app.env_url("production", &format!("/releases/{key}/allocation")))
        .json(&json!({"percent": {"v2": percent}}))
}

async fn allocation(app: &TestApp, key: &str) -> Value {
    app.get_json(app.env_url("production", &format!("/releases/{key}"))).await["allocation"]["v2"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evaluation_never_fails_and_writes_never_hang_through_latency_and_dropped_connections() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::in_front_of(&redis.url()).await;
    let prefix = unique_prefix();
    let (a, _b) = instances(&redis, &proxy, &prefix).await;
    a.given_release("production", "checkout", 50.0).await;
    let (evaluations, loops) = Evaluations::start(&a, 2);

    // Latency well under the command timeout: slower, but every write succeeds.
    proxy.latency(Duration::from_millis(40));
    for percent in 1..=5 {
        let (status, took) = timed(set_percent(&a, "checkout", percent)).await;
        assert_eq!(status, Some(StatusCode::OK), "a write with 40 ms each way succeeds (took {took:?})");
    }

    // Dropped connections: a write may be refused (503), never left hanging.
    proxy.latency(Duration::ZERO);
    proxy.drop_connections(0.1);
    let (mut written, mut refused, mut slowest) = (0, 0, Duration::ZERO);
    for percent in 10..40 {
        let (status, took) = timed(set_percent(&a, "checkout", percent)).await;
        slowest = slowest.max(took);
        match status {
            Some(s) if s.is_success() => written += 1,
            Some(StatusCode::SERVICE_UNAVAILABLE) => refused += 1,
            other => panic!("a write through dropped connections answered {other:?} after {took:?}"),
        }
    }

    // Healed: writes succeed again without a restart.
    proxy.heal();
    assert!(
        eventually(CONVERGE, || async {
            set_percent(&a, "checkout", 42).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await,
        "writes work again once the network heals"
    );
    assert_eq!(allocation(&a, "checkout").await, 42.0);
    let (answered, failed, slowest_eval) = evaluations.finish(loops).await;
    println!(
        "network faults: latency + drops: {answered} evaluations answered, {failed} failed (slowest {slowest_eval} ms); \
         writes under drops: {written} written, {refused} refused (slowest {slowest:?})"
    );
    assert_eq!(failed, 0, "no evaluation fails whatever the network to Redis does");
    assert!(answered > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_from_redis_turns_writes_into_503s_serves_kills_at_once_and_heals_without_a_restart() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::in_front_of(&redis.url()).await;
    let prefix = unique_prefix();
    let (a, b) = instances(&redis, &proxy, &prefix).await;
    a.given_release("production", "checkout", 50.0).await;
    a.given_release("production", "search", 100.0).await;
    assert!(eventually(CONVERGE, || async { b.served_revision("production").await == 2 }).await);
    let (evaluations, loops) = Evaluations::start(&a, 2);

    // A blackhole: A's connections hang, they are not refused.
    proxy.partition();
    let partitioned = Instant::now();
    let revision =
        a.get_json(a.env_url("production", "/releases/checkout")).await["revision"].as_u64().expect("revision");
    let conditional = set_percent(&a, "checkout", 10).header("If-Match", format!("\"{revision}\""));
    let (status, took) = timed(conditional).await;
    assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE), "a write in a partition is refused, not hung ({took:?})");
    let kill = a.client.post(a.env_url("production", "/releases/search/kill")).json(&json!({"reason": "partition"}));
    let (started, answer) = (Instant::now(), kill.timeout(WRITE_BOUND).send().await.expect("the kill is answered"));
    let kill_took = started.elapsed();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let body: Value = answer.json().await.expect("json");
    assert_eq!((body["persisted"].clone(), body["killed"].clone()), (json!(false), json!(true)));
    assert_eq!(a.decision("production", "search", json!({"targetingKey": "u"})).await["reason"], "DISABLED");
    // Meanwhile B, which reaches Redis, writes.
    assert_eq!(set_percent(&b, "checkout", 77).send().await.expect("sent").status(), StatusCode::OK);
    // The partition lasts well beyond the command timeout.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(partitioned.elapsed())).await;
    let (status, took_later) = timed(set_percent(&a, "checkout", 20)).await;
    assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE), "still refused later in the partition ({took_later:?})");
    assert_eq!(a.decision("production", "search", json!({"targetingKey": "u"})).await["reason"], "DISABLED");
    let partition_lasted = partitioned.elapsed();

    // Healed: no restart. A catches up with B's write, writes its pending kill once,
    // and takes writes again.
    proxy.heal();
    let healed = Instant::now();
    assert!(
        eventually(CONVERGE, || async { allocation(&a, "checkout").await == 77.0 }).await,
        "A catches up with what B wrote during the partition"
    );
    assert!(
        eventually(CONVERGE, || async { a.state.releases.pending().list().is_empty() }).await,
        "pending kill written"
    );
    let caught_up = healed.elapsed();
    assert!(
        eventually(CONVERGE, || async {
            b.decision("production", "search", json!({"targetingKey": "u"})).await["reason"] == "DISABLED"
        })
        .await,
        "B serves the kill A took during the partition"
    );
    assert!(
        eventually(CONVERGE, || async {
            set_percent(&a, "checkout", 30).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await,
        "writes through A work again"
    );
    // The conditional write refused during the partition was not applied over B's later
    // one when its bytes finally reached Redis: its If-Match no longer held.
    let audit = b.get_json(b.env_url("production", "/audit?limit=100")).await;
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    let kills = entries.iter().filter(|e| e["action"] == "kill" && e["release"] == "search").count();
    assert_eq!(kills, 1, "one audited kill: {audit}");
    let allocations: Vec<Value> = entries
        .iter()
        .filter(|e| e["action"] == "allocation")
        .map(|e| e["after"]["allocation"]["v2"].clone())
        .collect();
    // (The audit log keeps the stored release: allocations in bucket units, 10 % = 10000.)
    assert!(!allocations.contains(&json!(10_000)), "the refused If-Match write was never applied: {allocations:?}");

    let (answered, failed, slowest_eval) = evaluations.finish(loops).await;
    println!(
        "network faults: partition of {partition_lasted:?}: {answered} evaluations answered, {failed} failed \
         (slowest {slowest_eval} ms); refused write answered in {took:?} and {took_later:?}; kill (202) in {kill_took:?}; \
         caught up {caught_up:?} after healing"
    );
    assert_eq!(failed, 0, "no evaluation fails during a partition from Redis");
}

/// The revision Redis itself holds for `production` (read directly, not through cohort).
fn stored_revision(redis: &RedisServer, prefix: &str) -> u64 {
    let client = redis::Client::open(redis.url()).expect("a redis url");
    let mut conn = client.get_connection().expect("connects to redis");
    redis::cmd("GET").arg(format!("{prefix}:{{production}}:rev")).query(&mut conn).expect("reads the revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unkill_held_in_the_network_past_its_answer_is_refused_when_it_reaches_redis() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::in_front_of(&redis.url()).await;
    let prefix = unique_prefix();
    let (a, b) = instances(&redis, &proxy, &prefix).await;
    b.given_release("production", "checkout", 50.0).await;
    let kill = json!({"reason": "5xx"});
    assert_eq!(b.post(&b.env_url("production", "/releases/checkout/kill"), &kill).await.status(), StatusCode::OK);
    assert!(eventually(CONVERGE, || async { a.served_revision("production").await == 2 }).await);

    // A's unkill reaches Redis only after A gave up on it: held in the network, as TCP
    // holds a segment it keeps retransmitting until a partition ends.
    proxy.hold(b"unkill");
    let unkill = a.post(&a.env_url("production", "/releases/checkout/unkill"), &json!({})).await;
    assert_eq!(unkill.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = unkill.json().await.expect("json");
    assert_eq!(body["error"]["code"], "store_unconfirmed", "{body}");
    // Told so, the on-call engineer kills again through B: the store still holds the
    // kill, so nothing is written, and the kill is acknowledged.
    let again = b.post(&b.env_url("production", "/releases/checkout/kill"), &kill).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.expect("json")["revision"], 2);

    // The held unkill arrives and Redis runs it: past its deadline, it changes nothing.
    the_held_change_wrote_nothing(&proxy, &redis, &prefix, &b, "unkill").await;
    for app in [&a, &b] {
        assert_eq!(app.decision("production", "checkout", json!({"targetingKey": "u"})).await["reason"], "DISABLED");
    }
    // A writes again once the network is whole.
    assert!(
        eventually(CONVERGE, || async {
            a.post(&a.env_url("production", "/releases/checkout/unkill"), &json!({})).await.status() == StatusCode::OK
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reseed_held_in_the_network_past_its_answer_does_not_overwrite_a_kill_acknowledged_since() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::in_front_of(&redis.url()).await;
    let prefix = unique_prefix();
    let a = through(&proxy, &redis, &prefix).await;
    a.given_release("production", "checkout", 100.0).await;
    // An earlier reseed, so Redis knows the script, as a deployment that
    // ever reseeded does: a script Redis does not know is refused whenever it arrives.
    let first = a.post(&a.env_url("production", "/store/reseed"), &json!({"reason": "drill"})).await;
    assert_eq!(first.status(), StatusCode::OK);
    // Redis loses its data (not its scripts): A has served revision 2 and stops trusting
    // the store.
    redis.flushall();
    assert!(eventually(CONVERGE, || async { a.get_json(a.url("/readyz")).await["store_state"] == "regressed" }).await);

    // The operator reseeds from A; the reseed is held in the network past A's answer.
    proxy.hold(b"store-reseed");
    let reseed = a.post(&a.env_url("production", "/store/reseed"), &json!({"reason": "redis lost its data"})).await;
    assert_eq!(reseed.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = reseed.json().await.expect("json");
    assert_eq!(body["error"]["code"], "store_unconfirmed", "{body}");

    // Meanwhile a new instance, which never saw the lost revisions, starts over on the
    // empty store and acknowledges a kill at revision 2 — below the held reseed's seed (3).
    let c = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    c.given_release("production", "checkout", 100.0).await;
    let kill = c.post(&c.env_url("production", "/releases/checkout/kill"), &json!({"reason": "5xx"})).await;
    assert_eq!(kill.status(), StatusCode::OK);
    assert_eq!(kill.json::<Value>().await.expect("json")["revision"], 2);

    // The held reseed reaches Redis: past its deadline, it overwrites nothing.
    the_held_change_wrote_nothing(&proxy, &redis, &prefix, &c, "store-reseed").await;
    assert_eq!(c.decision("production", "checkout", json!({"targetingKey": "u"})).await["reason"], "DISABLED");
}
