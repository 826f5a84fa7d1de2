//! SDK outcome reports: aggregated per minute per (release, version) on both stores.

use crate::helpers::{Backend, assert_error, client_with, spawn_app, spawn_app_with, token, unique_prefix};
use crate::redis_harness::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn reports_add_up_per_version(backend: Backend<'_>) {
    let app = spawn_app(backend).await;
    app.given_release("production", "checkout", 50.0).await;
    let sdk = client_with(&token("sdk", "production", "eval report"));
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

#[tokio::test]
async fn a_report_naming_what_the_environment_does_not_hold_is_refused_whole_listing_it() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let sdk = client_with(&token("sdk", "production", "eval report"));
    let url = app.env_url("production", "/events");
    let mut batch = vec![
        json!({"release": "checkout", "version": "v2", "ok": 5, "error": 5}),
        json!({"release": "checkout", "version": "v9", "ok": 1, "error": 0}),
    ];
    batch.extend((0..40).map(|i| json!({"release": format!("nosuch-{i}"), "version": "v1", "ok": 1, "error": 0})));
    let r = sdk.post(&url).json(&batch).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unknown_outcome_pairs", "{body}");
    assert_eq!(body["error"]["unknown_total"], 41, "checkout/v9 and the 40 unknown releases");
    let listed = body["error"]["unknown"].as_array().expect("a list");
    assert_eq!(listed.len(), 20, "the list is capped");
    assert!(listed.contains(&json!({"release": "checkout", "version": "v9"})), "{body}");
    let health: Value = app.get_json(app.env_url("production", "/releases/checkout/health?minutes=5")).await;
    assert_eq!(health["versions"], json!({}), "not even the known pair was stored");

    let too_many: Vec<Value> =
        (0..1_001).map(|_| json!({"release": "checkout", "version": "v1", "ok": 1, "error": 0})).collect();
    let r = sdk.post(&url).json(&too_many).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = sdk.post(app.env_url("nosuch", "/events")).json(&batch[..1]).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "the token is for production only");
}

/// This process's resident memory (the server runs in it), from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB");
    kib * 1_024
}

/// `pairs` (release, version) pairs no environment holds, as one JSON report.
fn junk_report(batch: usize, pairs: usize) -> String {
    let items: Vec<String> = (0..pairs)
        .map(|i| format!(r#"{{"release":"junk-{batch}-{i}","version":"v{i}","ok":1000,"error":1000}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

/// The junk-events attack of issue 13: a million (release, version) pairs the
/// environment does not hold, sent with a `report` token in reports of 1,000. Each
/// report is refused whole (422), the store keeps nothing (its outcomes file, written on
/// a graceful stop, does not grow) and memory stays bounded.
/// `JUNK_PAIRS` sets the number of pairs (default 1,000,000); the figures are printed
/// (`cargo test --test api events::a_million -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_junk_pairs_are_refused_and_neither_the_store_nor_memory_grows() {
    let pairs: usize = std::env::var("JUNK_PAIRS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("dir");
    // The events rate limit is the other defence; here every report must reach validation.
    let no_events_limit = |s: &mut cohort::config::Settings| {
        s.rate_limit.events_per_address = 0;
        s.rate_limit.events_per_subject = 0;
    };
    let app = spawn_app_with(Backend::EmbeddedAt(dir.path()), no_events_limit).await;
    app.given_release("production", "checkout", 50.0).await;
    let sdk = client_with(&token("sdk-server", "production", "eval report"));
    let url = app.env_url("production", "/events");
    let good = json!([{"release": "checkout", "version": "v2", "ok": 10, "error": 1}]);
    assert_eq!(sdk.post(&url).json(&good).send().await.expect("sent").status(), StatusCode::ACCEPTED);
    app.stop().await;
    let data_file = dir.path().join("outcomes.json");
    let file_before = std::fs::metadata(&data_file).expect("data file").len();

    let app = spawn_app_with(Backend::EmbeddedAt(dir.path()), no_events_limit).await;
    let url = app.env_url("production", "/events");
    // Warm up (connections, allocator arenas) before the first figure.
    for batch in 0..20 {
        let r = sdk.post(&url).header("content-type", "application/json").body(junk_report(batch, 1_000)).send().await;
        assert_eq!(r.expect("sent").status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let rss_before = rss_bytes();
    let batches = pairs.div_ceil(1_000);
    let mut refused = 0;
    for batch in 0..batches {
        let body = junk_report(1_000 + batch, 1_000.min(pairs - batch * 1_000));
        let r = sdk.post(&url).header("content-type", "application/json").body(body).send().await.expect("sent");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "batch {batch}");
        refused += 1;
    }
    let rss_after = rss_bytes();
    let health: Value = app.get_json(app.env_url("production", "/releases/checkout/health?minutes=5")).await;
    let v2 = &health["versions"]["v2"];
    assert_eq!((v2["ok"].clone(), v2["error"].clone()), (json!(10), json!(1)), "the one good report is kept");
    app.stop().await;
    let file_after = std::fs::metadata(&data_file).expect("data file").len();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "junk events: {pairs} unknown pairs in {refused} reports, all refused 422; RSS {:.1} MiB -> {:.1} MiB; data file {file_before} -> {file_after} bytes",
        mib(rss_before),
        mib(rss_after)
    );
    assert_eq!(refused, batches);
    assert!(file_after <= file_before + 512, "the store kept junk: {file_before} -> {file_after} bytes");
    assert!(
        rss_after < rss_before + 50 * 1024 * 1024,
        "memory grew by {:.1} MiB under the attack",
        mib(rss_after.saturating_sub(rss_before))
    );
}

/// A browser's `eval` token cannot report, so it cannot forge the guard's evidence: its
/// outcomes are refused 403, the ramp's health stays empty and the ramp keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eval_only_token_cannot_move_a_guard() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let plan = json!({
        "candidate": "v2",
        "steps": [{"percent": 5, "hold": "1h"}, {"percent": 100}],
        "guard": {"max_error_rate": 0.05, "min_samples": 500, "confidence": 0.99}
    });
    let r = app.post(&app.env_url("production", "/releases/checkout/ramp"), &plan).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let browser = client_with(&token("web-app", "production", "eval"));
    let forged = json!([{"release": "checkout", "version": "v2", "ok": 0, "error": 100_000}]);
    let url = app.env_url("production", "/events");
    for _ in 0..20 {
        let r = browser.post(&url).json(&forged).send().await.expect("sent");
        assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
    }
    // The driver ticks every 20 ms: give it dozens of ticks to (wrongly) act.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let ramp: Value = app.get_json(app.env_url("production", "/releases/checkout/ramp")).await;
    assert_eq!(ramp["state"], "running", "{ramp}");
    assert_eq!(ramp["live"]["candidate_samples"], 0, "{ramp}");
    let health: Value = app.get_json(app.env_url("production", "/releases/checkout/health?minutes=5")).await;
    assert_eq!(health["versions"], json!({}), "nothing was recorded");
}
