//! SDK outcome reports: aggregated per minute per (release, version) on both stores.

use crate::helpers::{Backend, assert_error, client_with, spawn_app, token, unique_prefix};
use crate::redis_harness::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn reports_add_up_per_version(backend: Backend<'_>) {
    let app = spawn_app(backend).await;
    app.given_release("production", "checkout", 50.0).await;
    let sdk = client_with(&token("sdk", "production", "eval"));
    let url = app.env_url("production", "/events");
    let r = sdk
        .post(&url)
        .json(&json!([
            {"release": "checkout", "version": "v1", "ok": 90, "error": 1},
            {"release": "checkout", "version": "v2", "ok": 40, "error": 10},
            {"release": "checkout", "version": "v2", "ok": 10, "error": 0},
        ]))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.json::<Value>().await.expect("json")["accepted"], 2, "same pairs are merged");
    let r = sdk
        .post(&url)
        .json(&json!({"events": [{"release": "checkout", "version": "v1", "ok": 9, "error": 0}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let health: Value = app.get_json(app.env_url("production", "/releases/checkout/health?minutes=5")).await;
    assert_eq!(health["versions"]["v1"], json!({"ok": 99, "error": 1, "error_rate": 0.01}));
    assert_eq!(health["versions"]["v2"], json!({"ok": 50, "error": 10, "error_rate": 10.0 / 60.0}));

    let r = sdk
        .post(&url)
        .json(&json!([{"release": "bad key", "version": "v1", "ok": 1, "error": 0}]))
        .send()
        .await
        .expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = sdk
        .post(&url)
        .json(&json!([{"release": "checkout", "version": "v1", "ok": -1, "error": 0}]))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = sdk.get(app.env_url("production", "/releases/checkout/health")).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
}

#[tokio::test]
async fn outcome_reports_add_up_per_version_on_the_embedded_store() {
    reports_add_up_per_version(Backend::Embedded).await;
}

#[tokio::test]
async fn outcome_reports_add_up_per_version_on_redis() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    reports_add_up_per_version(Backend::Redis { server: &redis, prefix: &prefix }).await;
}

#[tokio::test]
async fn embedded_outcome_counts_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app(Backend::EmbeddedAt(dir.path())).await;
    app.given_release("production", "checkout", 50.0).await;
    let r = app
        .post(
            &app.env_url("production", "/events"),
            &json!([{"release": "checkout", "version": "v2", "ok": 7, "error": 3}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    app.stop().await;
    let app = spawn_app(Backend::EmbeddedAt(dir.path())).await;
    let health: Value = app.get_json(app.env_url("production", "/releases/checkout/health")).await;
    assert_eq!(health["versions"]["v2"]["error"], 3);
}
