//! `GET …/snapshot` and `GET …/stream` over HTTP: ETags, the event stream's shape,
//! resumption, heartbeats, kills pushed to subscribers, and slow subscribers.

use crate::helpers::{Backend, TestApp, client_with, eventually, spawn_app, spawn_app_with, token};
use crate::sse::{DEADLINE, EventReader};
use cohort::store::EnvName;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// An HTTP client carrying an SDK's token (`eval` on `env`).
fn sdk_http(env: &str) -> reqwest::Client {
    client_with(&token("sdk", env, "eval"))
}

async fn open_stream(app: &TestApp, env: &str, last_event_id: Option<u64>) -> EventReader {
    let mut request = sdk_http(env).get(app.env_url(env, "/stream"));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.expect("stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    EventReader::new(response)
}

fn env(name: &str) -> EnvName {
    EnvName::parse(name).expect("env")
}

#[tokio::test]
async fn the_snapshot_carries_its_revision_as_etag_and_answers_304_when_unchanged() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 5.0).await;
    let sdk = sdk_http("production");
    let url = app.env_url("production", "/snapshot");

    let r = sdk.get(&url).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["revision"], 1);
    assert_eq!(body["kill_all"], false);
    assert_eq!(body["releases"][0]["key"], "checkout");
    assert_eq!(body["releases"][0]["allocation"]["v2"], 5_000, "allocation in bucket units");

    let r = sdk.get(&url).header("If-None-Match", "\"1\"").send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert!(r.bytes().await.expect("body").is_empty());

    app.set_percent("production", "checkout", json!({"v2": 10}), None).await;
    let r = sdk.get(&url).header("If-None-Match", "\"1\"").send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK, "a stale ETag gets the new snapshot");
    assert_eq!(r.headers()["etag"], "\"2\"");
    assert_eq!(r.json::<Value>().await.expect("json")["releases"][0]["allocation"]["v2"], 10_000);
}

#[tokio::test]
async fn an_environment_never_written_has_revision_zero_and_no_releases() {
    let app = spawn_app(Backend::Embedded).await;
    let r = sdk_http("staging").get(app.env_url("staging", "/snapshot")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"0\"");
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"revision": 0, "kill_all": false, "releases": []}));
}

#[tokio::test]
async fn the_snapshot_and_the_stream_refuse_a_request_without_a_token() {
    let app = spawn_app(Backend::Embedded).await;
    let anonymous = reqwest::Client::new();
    for path in ["/snapshot", "/stream"] {
        let r = anonymous.get(app.env_url("production", path)).send().await.expect("sent");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn the_stream_starts_with_the_snapshot() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 5.0).await;
    let mut stream = open_stream(&app, "production", None).await;
    let first = stream.expect_event().await;
    assert_eq!(first.event, "snapshot");
    assert_eq!(first.id, Some(1));
    let data = first.json();
    assert_eq!(data["revision"], 1);
    assert_eq!(data["releases"][0]["key"], "checkout");
}

#[tokio::test]
async fn a_change_arrives_as_a_change_event_with_its_revision_as_id() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 5.0).await;
    let mut stream = open_stream(&app, "production", None).await;
    assert_eq!(stream.expect_event().await.event, "snapshot");

    app.set_percent("production", "checkout", json!({"v2": 10}), None).await;
    let change = stream.expect_event().await;
    assert_eq!((change.event.as_str(), change.id), ("change", Some(2)));
    let data = change.json();
    assert_eq!(data["revision"], 2);
    assert_eq!(data["type"], "upsert");
    assert_eq!(data["release"]["allocation"]["v2"], 10_000);

    app.post(&app.env_url("production", "/kill-all"), &json!({"reason": "incident 7"})).await;
    let change = stream.expect_event().await;
    assert_eq!(change.id, Some(3));
    assert_eq!(change.json(), json!({"revision": 3, "type": "kill_all", "on": true, "reason": "incident 7"}));

    let r = app.client.delete(app.env_url("production", "/releases/checkout")).send().await.expect("sent");
    assert!(r.status().is_success(), "{}", r.status());
    let change = stream.expect_event().await;
    assert_eq!(change.json(), json!({"revision": 4, "type": "delete", "key": "checkout"}));
}

#[tokio::test]
async fn resuming_with_last_event_id_replays_only_the_missed_changes() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 1.0).await;
    for percent in [2, 3, 4] {
        app.set_percent("production", "checkout", json!({"v2": percent}), None).await;
    }
    let mut stream = open_stream(&app, "production", Some(2)).await;
    let third = stream.expect_event().await;
    assert_eq!((third.event.as_str(), third.id), ("change", Some(3)));
    assert_eq!(third.json()["release"]["allocation"]["v2"], 3_000);
    assert_eq!(stream.expect_event().await.id, Some(4));
    // Nothing else was queued: the next event is the next change, not a snapshot.
    app.set_percent("production", "checkout", json!({"v2": 5}), None).await;
    let fifth = stream.expect_event().await;
    assert_eq!((fifth.event.as_str(), fifth.id), ("change", Some(5)));

    // Up to date already: nothing to replay, just what comes next.
    let mut current = open_stream(&app, "production", Some(5)).await;
    app.set_percent("production", "checkout", json!({"v2": 6}), None).await;
    let sixth = current.expect_event().await;
    assert_eq!((sixth.event.as_str(), sixth.id), ("change", Some(6)));
}

#[tokio::test]
async fn a_last_event_id_older_than_the_history_gets_a_fresh_snapshot() {
    let app = spawn_app_with(Backend::Embedded, |s| s.server.stream_history = 2).await;
    app.given_release("production", "checkout", 1.0).await;
    for percent in [2, 3, 4, 5] {
        app.set_percent("production", "checkout", json!({"v2": percent}), None).await;
    }
    let mut stream = open_stream(&app, "production", Some(1)).await;
    let first = stream.expect_event().await;
    assert_eq!((first.event.as_str(), first.id), ("snapshot", Some(5)));
    assert_eq!(first.json()["releases"][0]["allocation"]["v2"], 5_000);
    // An unreadable id counts as none: a snapshot too.
    let response = sdk_http("production")
        .get(app.env_url("production", "/stream"))
        .header("Last-Event-ID", "not-a-revision")
        .send()
        .await
        .expect("sent");
    let mut stream = EventReader::new(response);
    assert_eq!(stream.expect_event().await.event, "snapshot");
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeat_comments() {
    let app = spawn_app_with(Backend::Embedded, |s| s.server.sse_heartbeat_ms = 20).await;
    let mut stream = open_stream(&app, "production", None).await;
    assert_eq!(stream.next_frame().await.expect("snapshot").event, "snapshot");
    let frame = stream.next_frame().await.expect("a heartbeat");
    assert!(frame.is_heartbeat(), "{frame:?}");
    assert_eq!(frame.comments, ["heartbeat"]);
}

#[tokio::test]
async fn a_kill_is_pushed_to_every_stream_subscriber() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut stream = open_stream(&app, "production", None).await;
        assert_eq!(stream.expect_event().await.event, "snapshot");
        streams.push(stream);
    }
    let r = app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({"reason": "5xx"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    for stream in &mut streams {
        let change = stream.expect_event().await;
        assert_eq!(change.id, Some(2));
        assert_eq!(change.json()["release"]["killed"], true);
    }
    app.post(&app.env_url("production", "/kill-all"), &json!({})).await;
    for stream in &mut streams {
        let change = stream.expect_event().await;
        assert_eq!((change.json()["type"].clone(), change.json()["on"].clone()), (json!("kill_all"), json!(true)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_does_not_delay_others_and_is_dropped() {
    let app = spawn_app_with(Backend::Embedded, |s| s.server.stream_buffer = 4).await;
    // Every change of this release is a ~200 KB event, so a few of them fill the socket
    // buffers of a subscriber that does not read.
    let overrides: serde_json::Map<String, Value> = (0..1_000).map(|i| (format!("{i:0>200}"), json!("v2"))).collect();
    let r =
        app.create_release("production", json!({"key": "big", "versions": ["v1", "v2"], "overrides": overrides})).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let sdk = sdk_http("production");
    let url = app.env_url("production", "/stream");
    let mut stuck = sdk.get(&url).send().await.expect("stream opens");
    let mut reader = open_stream(&app, "production", None).await;
    assert_eq!(reader.expect_event().await.event, "snapshot");
    let production = env("production");
    assert!(eventually(DEADLINE, || async { app.state.streams.subscribers(&production) == 2 }).await);

    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        while let Some(event) = reader.next_event().await {
            if seen_tx.send(event.id).is_err() {
                break;
            }
        }
    });
    let mut writes = 0;
    while app.state.streams.subscribers(&production) == 2 {
        assert!(writes < 500, "the subscriber that never reads was never dropped");
        writes += 1;
        let percent = if writes % 2 == 0 { 1 } else { 2 };
        let r = app.set_percent("production", "big", json!({"v2": percent}), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        // The reading subscriber gets each change while the other one is stuck.
        let id = tokio::time::timeout(DEADLINE, seen.recv()).await.expect("the reader is not delayed");
        assert_eq!(id, Some(Some(1 + writes)), "the reader gets every change, in order");
    }
    assert_eq!(app.state.streams.subscribers(&production), 1, "only the stuck subscriber was dropped");

    // The dropped stream ends after what was already on its way.
    let ended = tokio::time::timeout(DEADLINE, async { while stuck.chunk().await.expect("chunk").is_some() {} }).await;
    assert!(ended.is_ok(), "the dropped subscriber's stream ends");
    collector.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_ends_every_stream_cleanly() {
    let app = spawn_app(Backend::Embedded).await;
    let mut stream = open_stream(&app, "production", None).await;
    assert_eq!(stream.expect_event().await.event, "snapshot");
    let stopping = tokio::spawn(app.stop());
    assert!(stream.next_event().await.is_none(), "the stream ends instead of being cut");
    tokio::time::timeout(DEADLINE, stopping).await.expect("the server stops").expect("stop task");
}
