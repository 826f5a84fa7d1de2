//! The SDK's staleness limit against a real server: cut off from the service for longer
//! than `max_staleness`, a client serves every baseline with reason `STALE`, and
//! follows the configuration again as soon as it reconnects.

use crate::helpers::{Backend, TestApp, eventually, respawn_embedded_on_with, spawn_app_with, token};
use crate::sse::DEADLINE;
use cohort::config::Settings;
use cohort_sdk::client::Client;
use cohort_sdk::{Context, ErrorCode, Reason};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// Heartbeats far more often than the staleness limit, so a connected client is
/// always fresh.
fn quick_heartbeats(settings: &mut Settings) {
    settings.server.sse_heartbeat_ms = 50;
}

fn users() -> impl Iterator<Item = Context> {
    (0..100).map(|i| Context::with_targeting_key(format!("user-{i}")))
}

/// Every user gets `version` for `reason` now.
fn all_get(client: &Client, version: &str, reason: Reason) -> bool {
    users().all(|ctx| {
        let answer = client.version("checkout", &ctx, "default");
        answer.version() == version && answer.reason == reason
    })
}

async fn stream_subscribers(app: &TestApp) -> usize {
    let env = cohort::store::EnvName::parse("production").expect("env");
    app.state.streams.subscribers(&env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_for_longer_than_max_staleness_serves_baselines_as_stale_and_recovers_on_reconnection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app_with(Backend::EmbeddedAt(dir.path()), quick_heartbeats).await;
    let port = app.port;
    app.given_release("production", "checkout", 100.0).await;
    let client = Client::builder(&app.address, "production", token("sdk", "production", "eval"))
        .max_staleness(Duration::from_millis(600))
        .stream_idle_timeout(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .poll_interval(Duration::from_secs(3_600))
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    assert!(eventually(DEADLINE, || async { all_get(&client, "v2", Reason::Split) }).await, "fresh: the split");

    app.stop().await;
    assert!(eventually(DEADLINE, || async { client.is_stale() }).await, "the limit passes in silence");
    for ctx in users() {
        let answer = client.version("checkout", &ctx, "default");
        assert_eq!((answer.version(), answer.reason, answer.bucket), ("v1", Reason::Stale, None));
        assert_eq!((answer.version_index, answer.error), (Some(0), None));
        assert!(!client.is_enabled("checkout", &ctx), "the baseline, not the candidate");
    }
    let unknown = client.version("no-such-release", &Context::with_targeting_key("u"), "default");
    assert_eq!((unknown.version(), unknown.error), ("default", Some(ErrorCode::FlagNotFound)), "unknown stays unknown");
    assert_eq!(client.snapshot().evaluate("checkout", &Context::with_targeting_key("u")).reason, Reason::Split);

    let app = respawn_embedded_on_with(dir.path(), port, quick_heartbeats).await;
    assert!(eventually(DEADLINE, || async { stream_subscribers(&app).await == 1 }).await, "reconnected");
    assert!(eventually(DEADLINE, || async { all_get(&client, "v2", Reason::Split) }).await, "fresh again");
    let r = app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(eventually(DEADLINE, || async { all_get(&client, "v1", Reason::Disabled) }).await, "and following changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_max_staleness_never_turns_stale() {
    let app = spawn_app_with(Backend::Embedded, quick_heartbeats).await;
    app.given_release("production", "checkout", 100.0).await;
    let client = Client::builder(&app.address, "production", token("sdk", "production", "eval"))
        .stream_idle_timeout(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    app.stop().await;
    // However long the outage, the last snapshot keeps answering: sample it for a while.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!client.is_stale());
        assert!(all_get(&client, "v2", Reason::Split));
    }
}
