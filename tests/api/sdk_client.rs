//! The SDK client (`cohort-sdk`, feature `client`) against real servers: it gets ready,
//! evaluates like the server, receives kills by push, survives outages on its last
//! snapshot, starts from a bootstrap file, and falls back to polling.

use crate::helpers::{
    Backend, TestApp, eventually, respawn_embedded_on, spawn_app, spawn_app_with, token, unique_prefix,
};
use crate::redis_harness::RedisServer;
use crate::sse::DEADLINE;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use cohort::store::EnvName;
use cohort_sdk::client::{Client, ClientBuilder, SyncMode};
use cohort_sdk::{Context, ErrorCode, Reason};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A client of `env` at `base_url` with an `eval` token and quick retries. Polling is
/// slowed to an hour unless a test asks for it, so that whatever arrives came by push.
fn sdk(base_url: &str, env: &str) -> ClientBuilder {
    Client::builder(base_url, env, token("sdk", env, "eval"))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
        .poll_interval(Duration::from_secs(3_600))
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
}

fn user(id: &str) -> Context {
    Context::with_targeting_key(id)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

async fn subscribed(app: &TestApp, env: &str, count: usize) -> bool {
    let env = EnvName::parse(env).expect("env");
    eventually(DEADLINE, || async { app.state.streams.subscribers(&env) == count }).await
}

async fn killed(client: &Client, release: &str) -> bool {
    eventually(DEADLINE, || async { client.version(release, &user("u-1"), "v1").reason == Reason::Disabled }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_client_gets_ready_and_evaluates_locally_like_the_server() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 30.0).await;
    let client = sdk(&app.address, "production").build().expect("client");
    assert!(client.wait_ready(DEADLINE).await, "ready");
    assert_eq!(client.revision(), 1);
    for i in 0..300 {
        let unit = format!("user-{i}");
        let server = app.decision("production", "checkout", json!({"targetingKey": unit})).await;
        let local = client.version("checkout", &user(&unit), "v1");
        assert_eq!(server["version"], local.version(), "{unit}");
        assert_eq!(server["reason"], local.reason.as_str());
        assert_eq!(server["bucket"], json!(local.bucket));
    }
}

/// Releases that exercise every step of the evaluation order.
fn varied_releases() -> Vec<Value> {
    vec![
        json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 30}}),
        json!({"key": "search", "versions": ["v1", "v2", "v3"], "salt": "search-2024",
               "allocation": {"v2": 20.5, "v3": 12.125}}),
        json!({"key": "pricing", "versions": ["v1", "v2", "v3"], "allocation": {"v2": 40},
               "overrides": {"user-7": "v3", "user-4242": "v2"},
               "rules": [{"when": [{"attr": "country", "op": "in", "values": ["NZ"]},
                                   {"attr": "plan", "op": "eq", "values": ["pro"]}], "serve": "v3"}],
               "audience": [{"attr": "app_version", "op": "semver_gte", "values": ["2.4.0"]}]}),
        json!({"key": "tenants", "versions": ["v1", "v2"], "unit": "tenant_id", "allocation": {"v2": 50}}),
    ]
}

/// Unit `i`'s context: a user, mostly with a country, a plan and an app version, and
/// a tenant for two thirds of them.
fn varied_context(i: usize) -> Value {
    let mut ctx = json!({"targetingKey": format!("user-{i}")});
    ctx["country"] = json!(["NZ", "US", "FR", "DE", "JP"][i % 5]);
    ctx["plan"] = json!(["free", "pro"][i % 2]);
    if !i.is_multiple_of(7) {
        ctx["app_version"] = json!(["2.3.9", "2.4.0", "3.0.1"][i % 3]);
    }
    if !i.is_multiple_of(3) {
        ctx["tenant_id"] = json!(format!("tenant-{}", i % 97));
    }
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_client_decides_exactly_like_the_server_for_ten_thousand_units() {
    use futures_util::StreamExt;
    const UNITS: usize = 10_000;
    // Ten thousand evaluations from one loopback address, as fast as they go: the
    // per-address limit is not what this test is about.
    let app = spawn_app_with(Backend::Embedded, |s| s.rate_limit.evaluate_per_address = 0).await;
    let releases = varied_releases();
    for release in &releases {
        assert_eq!(app.create_release("production", release.clone()).await.status(), StatusCode::CREATED);
    }
    let keys: Vec<&str> = releases.iter().filter_map(|r| r["key"].as_str()).collect();
    let client = sdk(&app.address, "production").build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    assert!(eventually(DEADLINE, || async { client.revision() == releases.len() as u64 }).await, "all releases");

    // One request per unit for every release, a few in flight at a time.
    let url = app.env_url("production", "/evaluate");
    let answers: Vec<(usize, Value)> = futures_util::stream::iter(0..UNITS)
        .map(|i| {
            let request = app.client.post(&url).json(&json!({"context": varied_context(i), "releases": keys}));
            async move {
                let response = request.send().await.expect("sent");
                assert_eq!(response.status(), StatusCode::OK);
                (i, response.json::<Value>().await.expect("json"))
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(answers.len(), UNITS);

    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for (i, answer) in answers {
        assert_eq!(answer["revision"], client.revision(), "same configuration");
        let ctx: Context = serde_json::from_value(varied_context(i)).expect("context");
        for key in &keys {
            let server = &answer["results"][*key];
            let local = client.version(key, &ctx, "default");
            let what = format!("unit {i}, release {key}: server {server}, local {local:?}");
            assert_eq!(server["version"], local.version(), "{what}");
            assert_eq!(server["reason"], local.reason.as_str(), "{what}");
            assert_eq!(server["bucket"], json!(local.bucket), "{what}");
            assert_eq!(server["error"], json!(local.error.map(|e| e.as_str())), "{what}");
            *seen.entry(format!("{}/{}", local.reason.as_str(), local.version())).or_default() += 1;
        }
    }
    // Every branch of the evaluation order was taken.
    for expected in
        ["SPLIT/v1", "SPLIT/v2", "SPLIT/v3", "TARGETING_MATCH/v3", "TARGETING_MATCH/v2", "DEFAULT/v1", "ERROR/v1"]
    {
        assert!(seen.contains_key(expected), "{expected} in {seen:?}");
    }
}

#[tokio::test]
async fn a_release_the_client_does_not_know_gives_the_default_with_flag_not_found() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 100.0).await;
    let client = sdk(&app.address, "production").build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    let answer = client.version("no-such-release", &user("u-1"), "stable");
    assert_eq!(answer.version(), "stable");
    assert_eq!(answer.reason, Reason::Error);
    assert_eq!(answer.error, Some(ErrorCode::FlagNotFound));
    assert_eq!(answer.version_index, None);
    assert!(!client.is_enabled("no-such-release", &user("u-1")));
    assert!(client.is_enabled("checkout", &user("u-1")), "100 % on the candidate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_reaches_an_sdk_client_by_push() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 100.0).await;
    app.given_release("production", "search", 100.0).await;
    let client = sdk(&app.address, "production").build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    assert_eq!(client.version("checkout", &user("u-1"), "v1").version(), "v2");
    assert!(subscribed(&app, "production", 1).await, "the client follows the stream");
    let mut revisions = client.subscribe();

    let r = app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({"reason": "5xx"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(killed(&client, "checkout").await, "the release kill arrived");
    assert_eq!(client.version("checkout", &user("u-1"), "v1").version(), "v1", "baseline while killed");
    assert_eq!(client.version("search", &user("u-1"), "v1").version(), "v2");
    assert!(tokio::time::timeout(DEADLINE, revisions.changed()).await.is_ok(), "subscribers are told");

    app.post(&app.env_url("production", "/kill-all"), &json!({"reason": "incident"})).await;
    assert!(killed(&client, "search").await, "the environment kill arrived");
    assert_eq!(client.revision(), 4);
}

#[tokio::test]
async fn an_sdk_client_starts_from_its_bootstrap_file_when_the_server_is_unreachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bootstrap.json");
    let bootstrap = json!({
        "revision": 12,
        "kill_all": false,
        "releases": [{"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 100000}}]
    });
    std::fs::write(&file, bootstrap.to_string()).expect("write");
    let client = sdk(&format!("http://127.0.0.1:{}", closed_port()), "production")
        .bootstrap_file(&file)
        .build()
        .expect("client");
    assert!(client.is_ready(), "the bootstrap is in use as soon as the client is built");
    assert!(client.wait_ready(Duration::from_millis(1)).await);
    assert_eq!(client.revision(), 12);
    let answer = client.version("checkout", &user("u-1"), "v1");
    assert_eq!((answer.version(), answer.reason), ("v2", Reason::Split));

    let missing = sdk("http://127.0.0.1:1", "production").bootstrap_file(dir.path().join("missing.json")).build();
    assert!(missing.is_err(), "a bootstrap file that cannot be read is a build error");
    let nothing = sdk(&format!("http://127.0.0.1:{}", closed_port()), "production").build().expect("client");
    assert!(!nothing.wait_ready(Duration::from_millis(200)).await, "no service, no bootstrap: not ready");
    assert_eq!(nothing.version("checkout", &user("u-1"), "v1").error, Some(ErrorCode::FlagNotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_client_keeps_its_snapshot_while_the_server_is_down_and_catches_up_when_it_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app(Backend::EmbeddedAt(dir.path())).await;
    let port = app.port;
    app.given_release("production", "checkout", 100.0).await;
    let client = sdk(&app.address, "production").build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    assert!(subscribed(&app, "production", 1).await);

    app.stop().await;
    let down = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(down.is_err(), "the server is down");
    for i in 0..100 {
        let answer = client.version("checkout", &user(&format!("u-{i}")), "v1");
        assert_eq!((answer.version(), answer.reason), ("v2", Reason::Split), "answers from the last snapshot");
    }
    assert_eq!(client.revision(), 1);

    let app = respawn_embedded_on(dir.path(), port).await;
    assert!(subscribed(&app, "production", 1).await, "the client reconnected");
    let r = app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(killed(&client, "checkout").await, "the change made after the restart arrived");
    assert_eq!(client.revision(), 2);
}

/// Counts of what a [`spawn_stream_blocking_proxy`] saw.
#[derive(Default)]
struct Seen {
    streams: AtomicUsize,
    polls: AtomicUsize,
}

/// A proxy in front of `upstream` whose stream route always fails (as behind a proxy
/// that cuts long-lived responses) while snapshots pass through.
async fn spawn_stream_blocking_proxy(upstream: String) -> (String, Arc<Seen>) {
    async fn stream(seen: web::Data<Seen>) -> HttpResponse {
        seen.streams.fetch_add(1, Ordering::Relaxed);
        HttpResponse::BadGateway().finish()
    }
    async fn snapshot(req: HttpRequest, upstream: web::Data<String>, seen: web::Data<Seen>) -> HttpResponse {
        seen.polls.fetch_add(1, Ordering::Relaxed);
        let mut forward = reqwest::Client::new().get(format!("{}{}", upstream.get_ref(), req.path()));
        for name in ["authorization", "if-none-match"] {
            if let Some(value) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
                forward = forward.header(name, value);
            }
        }
        let Ok(answer) = forward.send().await else { return HttpResponse::BadGateway().finish() };
        let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16());
        let mut response = HttpResponse::build(status.unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY));
        if let Some(etag) = answer.headers().get("etag").and_then(|v| v.to_str().ok()) {
            response.insert_header(("etag", etag.to_owned()));
        }
        response.body(answer.bytes().await.unwrap_or_default())
    }
    let seen = web::Data::new(Seen::default());
    let upstream = web::Data::new(upstream);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let counts = seen.clone().into_inner();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(seen.clone())
            .app_data(upstream.clone())
            .route("/v1/envs/{env}/stream", web::get().to(stream))
            .route("/v1/envs/{env}/snapshot", web::get().to(snapshot))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    (address, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_client_falls_back_to_polling_when_the_stream_route_fails() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 100.0).await;
    let (proxy, seen) = spawn_stream_blocking_proxy(app.address.clone()).await;
    let client = sdk(&proxy, "production").poll_interval(Duration::from_millis(50)).build().expect("client");
    assert!(client.wait_ready(DEADLINE).await, "ready from a polled snapshot");
    assert_eq!(client.version("checkout", &user("u-1"), "v1").version(), "v2");

    app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({})).await;
    assert!(killed(&client, "checkout").await, "the kill arrived by polling");
    assert!(seen.streams.load(Ordering::Relaxed) >= 1, "the stream was tried");
    let polls = seen.polls.load(Ordering::Relaxed);
    assert!(eventually(DEADLINE, || async { seen.polls.load(Ordering::Relaxed) > polls }).await, "polling goes on");
    assert!(
        eventually(DEADLINE, || async { seen.streams.load(Ordering::Relaxed) >= 3 }).await,
        "and so do attempts to stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_client_in_poll_mode_follows_changes() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let client = sdk(&app.address, "production")
        .mode(SyncMode::Poll)
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    assert!(!client.is_enabled("checkout", &user("u-1")));
    app.set_percent("production", "checkout", json!({"v2": 100}), None).await;
    assert!(eventually(DEADLINE, || async { client.is_enabled("checkout", &user("u-1")) }).await);
    assert!(subscribed(&app, "production", 0).await, "no stream in poll mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_written_on_one_instance_reaches_an_sdk_client_of_another() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    a.given_release("production", "checkout", 100.0).await;
    assert!(eventually(DEADLINE, || async { b.served_revision("production").await == 1 }).await, "B has it");

    let client = sdk(&b.address, "production").build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    assert!(subscribed(&b, "production", 1).await);
    assert_eq!(client.version("checkout", &user("u-1"), "v1").version(), "v2");

    let r = a.post(&a.env_url("production", "/releases/checkout/kill"), &json!({"reason": "from A"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(killed(&client, "checkout").await, "A's kill reached B's SDK client");
    let body: Value = a.post(&a.env_url("production", "/kill-all"), &json!({})).await.json().await.expect("json");
    assert!(body.is_object());
    assert!(eventually(DEADLINE, || async { client.snapshot().kill_all() }).await, "and so does a kill-all");
}
