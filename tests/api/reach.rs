//! Kill confirmation: SDKs acknowledge what they applied; `cohort kill --wait` reports
//! how many live SDKs have the kill and names the ones that do not, counts the stream
//! subscribers that cannot acknowledge, and never counts SDKs that are gone.

use crate::helpers::{
    Backend, TestApp, assert_error, client_with, eventually, reach, run_cohort, sdk_with_id as sdk, spawn_app,
    spawn_app_with, token, unique_prefix,
};
use crate::redis_harness::RedisServer;
use crate::sse::{DEADLINE, EventReader};
use crate::store_suite::{Fixture, embedded, redis};
use cohort::store::{EnvName, SdkAck};
use cohort_sdk::client::Client;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Output;

async fn cohort(app: &TestApp, args: &[&str]) -> Output {
    run_cohort(app, token("oncall", "production", "kill"), args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_wait_reports_every_connected_sdk_applying_the_kill() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let clients: Vec<Client> = (0..3).map(|i| sdk(&app, &format!("web-{i}"))).collect();
    for client in &clients {
        assert!(client.wait_ready(DEADLINE).await);
    }
    assert!(eventually(DEADLINE, || async { reach(&app, 1).await["applied"] == 3 }).await, "all three acknowledged");

    let o = cohort(&app, &["kill", "checkout", "--reason", "pager", "--wait"]).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("killed checkout at revision 2"), "{stdout}");
    assert!(stdout.contains("applied by 3/3 connected SDKs in"), "{stdout}");
    let r = reach(&app, 2).await;
    assert_eq!((r["connected"].clone(), r["applied"].clone()), (json!(3), json!(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_wait_prints_the_kill_on_stdout_and_exits_6_naming_a_live_sdk_that_did_not_apply_it() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let live = sdk(&app, "web-live");
    assert!(live.wait_ready(DEADLINE).await);
    // An SDK that acknowledged revision 1 and then stopped hearing anything.
    let stuck = client_with(&token("sdk", "production", "eval"));
    let r = stuck
        .post(app.env_url("production", "/ack"))
        .json(&json!({"sdk_id": "web-stuck", "revision": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let o = cohort(&app, &["kill-all", "--wait", "--wait-timeout", "1s"]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(6), "not confirmed: {stdout}{stderr}");
    assert!(stdout.starts_with("KILL-ALL ON in production at revision 2\n"), "the kill succeeded: {stdout}");
    assert!(stdout.contains("applied by 1/2 connected SDKs after"), "{stdout}");
    assert!(stdout.contains("web-stuck") && !stdout.contains("web-live"), "{stdout}");
    assert!(!stderr.contains("KILL-ALL") && !stderr.contains("killed"), "no success reported as an error: {stderr}");
    assert!(stderr.contains("1 live SDK(s) did not confirm revision 2 within"), "{stderr}");
    assert_eq!(
        live.version("checkout", &cohort_sdk::Context::with_targeting_key("u"), "v1").reason,
        cohort_sdk::Reason::Disabled
    );
}

#[tokio::test]
async fn acknowledgements_are_validated_and_scoped() {
    let app = spawn_app(Backend::Embedded).await;
    let sdk = client_with(&token("sdk", "production", "eval"));
    let url = app.env_url("production", "/ack");
    let r = sdk.post(&url).json(&json!({"sdk_id": "", "revision": 1})).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = sdk.post(&url).json(&json!({"sdk_id": "a b", "revision": 1})).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = sdk.post(&url).json(&json!({"sdk_id": "web-1"})).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = sdk.post(&url).json(&json!({"sdk_id": "web-1", "gone": true})).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "a goodbye needs no revision");
    let r = sdk.get(app.env_url("production", "/reach?revision=1")).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
    let r = app.client.get(app.env_url("production", "/reach")).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
}

/// Opens `url` as a raw SSE client with `token` and extra `headers`, and reads its first
/// event, so the server has it registered and written to.
async fn open_stream(url: String, token: &str, headers: &[(&str, &str)]) -> EventReader {
    let mut request = client_with(token).get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("connected");
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = EventReader::new(response);
    assert!(reader.next_event().await.is_some(), "a first event");
    reader
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_wait_counts_raw_sse_and_ofrep_subscribers_as_delivered_and_succeeds() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let eval = token("browser", "production", "eval");
    let _raw = open_stream(app.env_url("production", "/stream"), &eval, &[]).await;
    let _ofrep = open_stream(app.url("/ofrep/v1/events"), &eval, &[]).await;
    assert_eq!(reach(&app, 1).await["delivered_only_total"], 2);

    let o = cohort(&app, &["kill", "checkout", "--wait"]).await;
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("killed checkout at revision 2"), "{stdout}");
    assert!(stdout.contains("no acknowledging SDK is connected to confirm revision 2"), "{stdout}");
    assert!(
        stdout.contains("delivered to 2/2 stream subscribers that cannot acknowledge (OFREP, raw SSE)"),
        "{stdout}"
    );
    let r = reach(&app, 2).await;
    assert_eq!(
        (&r["delivered_only"], &r["acknowledging_total"], &r["confirmed"]),
        (&json!(2), &json!(0), &json!(true)),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_that_closed_cleanly_is_not_counted() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let live = sdk(&app, "web-live");
    let closing = sdk(&app, "web-closing");
    for client in [&live, &closing] {
        assert!(client.wait_ready(DEADLINE).await);
    }
    assert!(eventually(DEADLINE, || async { reach(&app, 1).await["acknowledged"] == 2 }).await, "both acknowledged");

    // A rolling restart of the application: this instance shuts down cleanly.
    closing.close().await;
    let r = reach(&app, 1).await;
    assert_eq!(r["acknowledging_total"], 1, "gone at once, not after 90 s: {r}");

    let o = cohort(&app, &["release", "kill", "checkout", "--wait", "--wait-timeout", "5s"]).await;
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("applied by 1/1 connected SDKs in"), "{stdout}");
    assert!(!stdout.contains("web-closing") && !stderr.contains("web-closing"), "{stdout}{stderr}");
    assert_eq!(
        live.version("checkout", &cohort_sdk::Context::with_targeting_key("u"), "v1").reason,
        cohort_sdk::Reason::Disabled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_whose_stream_ended_is_forgotten_without_a_goodbye() {
    // Short heartbeats: the server notices a closed socket when it next writes to it.
    let app = spawn_app_with(Backend::Embedded, |s| s.server.sse_heartbeat_ms = 50).await;
    app.given_release("production", "checkout", 50.0).await;
    let eval = token("sdk", "production", "eval");
    let sdk_headers = [("x-cohort-sdk-id", "web-crashed"), ("x-cohort-sdk-connection", "1")];
    let stream = open_stream(app.env_url("production", "/stream"), &eval, &sdk_headers).await;
    let ack = json!({"sdk_id": "web-crashed", "revision": 1, "connection": 1});
    let r = client_with(&eval).post(app.env_url("production", "/ack")).json(&ack).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = reach(&app, 1).await;
    assert_eq!((&r["acknowledged"], &r["delivered_only_total"]), (&json!(1), &json!(0)), "an SDK's stream: {r}");

    // The process dies: its connection closes, no goodbye is sent.
    drop(stream);
    assert!(
        eventually(DEADLINE, || async { reach(&app, 1).await["acknowledging_total"] == 0 }).await,
        "forgotten when its stream ended"
    );
    let o = cohort(&app, &["kill", "checkout", "--wait", "--wait-timeout", "5s"]).await;
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o.stdout), text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_wait_json_prints_one_document_with_the_kill_and_the_confirmation() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let live = sdk(&app, "web-live");
    assert!(live.wait_ready(DEADLINE).await);
    assert!(eventually(DEADLINE, || async { reach(&app, 1).await["acknowledged"] == 1 }).await);

    let o = cohort(&app, &["kill", "checkout", "--wait", "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o.stdout), text(&o.stderr));
    let doc: Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON document");
    assert_eq!(doc["kill"]["key"], "checkout");
    assert_eq!(doc["kill"]["killed"], true);
    assert_eq!(doc["kill"]["revision"], 2);
    let confirmation = &doc["confirmation"];
    assert_eq!((&confirmation["revision"], &confirmation["confirmed"]), (&json!(2), &json!(true)), "{doc}");
    assert_eq!((&confirmation["acknowledged"], &confirmation["acknowledging_total"]), (&json!(1), &json!(1)));
    assert_eq!(confirmation["timed_out"], false);

    // Unconfirmed: still one document on stdout, the kill in it, exit 6.
    let eval = token("sdk", "production", "eval");
    let stuck = json!({"sdk_id": "web-stuck", "revision": 2});
    let r = client_with(&eval).post(app.env_url("production", "/ack")).json(&stuck).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let o = cohort(&app, &["kill-all", "--wait", "--wait-timeout", "300ms", "--json"]).await;
    assert_eq!(o.status.code(), Some(6), "{}{}", text(&o.stdout), text(&o.stderr));
    let doc: Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON document");
    assert_eq!((&doc["kill"]["kill_all"], &doc["kill"]["revision"]), (&json!(true), &json!(3)), "{doc}");
    let confirmation = &doc["confirmation"];
    assert_eq!((&confirmation["confirmed"], &confirmation["timed_out"]), (&json!(false), &json!(true)), "{doc}");
    assert_eq!(confirmation["pending"][0]["sdk_id"], "web-stuck", "{doc}");
    assert!(text(&o.stderr).contains("did not confirm revision 3"), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_that_said_goodbye_to_one_instance_is_gone_on_another() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    let b = spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await;
    a.given_release("production", "checkout", 50.0).await;
    let client = sdk(&a, "web-1");
    assert!(client.wait_ready(DEADLINE).await);
    assert!(eventually(DEADLINE, || async { reach(&b, 1).await["acknowledged"] == 1 }).await, "B sees A's SDK");
    client.close().await;
    assert_eq!(reach(&b, 1).await["acknowledging_total"], 0, "the goodbye is in the shared store");
}

async fn forget_keeps_an_acknowledgement_over_a_newer_connection(fixture: Fixture) {
    let store = fixture.store;
    let env = EnvName::parse("production").expect("env");
    let ack = |connection| SdkAck {
        sdk_id: "web-1".into(),
        revision: 4,
        seen_ms: 1,
        address: "127.0.0.1:1".into(),
        connection,
    };
    store.record_ack(&env, &ack(2)).await.expect("recorded");
    // The end of connection 1 comes late, after the SDK reconnected (connection 2).
    store.forget_sdk(&env, "web-1", 1).await.expect("forgets");
    assert_eq!(store.sdk_acks(&env, 0).await.expect("acks"), vec![ack(2)]);
    store.forget_sdk(&env, "web-1", 2).await.expect("forgets");
    assert_eq!(store.sdk_acks(&env, 0).await.expect("acks"), vec![]);
    // A goodbye forgets whatever the connection; an unknown SDK is no error.
    store.record_ack(&env, &ack(9)).await.expect("recorded");
    store.forget_sdk(&env, "web-1", u64::MAX).await.expect("forgets");
    store.forget_sdk(&env, "ghost", u64::MAX).await.expect("no error");
    assert_eq!(store.sdk_acks(&env, 0).await.expect("acks"), vec![]);
}

#[tokio::test]
async fn reach_forget_keeps_an_acknowledgement_over_a_newer_connection_embedded() {
    forget_keeps_an_acknowledgement_over_a_newer_connection(embedded()).await;
}

#[tokio::test]
async fn reach_forget_keeps_an_acknowledgement_over_a_newer_connection_redis() {
    forget_keeps_an_acknowledgement_over_a_newer_connection(redis().await).await;
}
