//! The embedded store survives restarts, refuses to start on a corrupt file, and has one
//! writer per data directory.

use crate::helpers::{Backend, assert_serve_refuses_naming, spawn_app, test_settings};
use cohort::startup::{Application, StartError};
use cohort::store::EmbeddedStore;
use cohort::store::embedded::{LOCK_FILE, OpenError};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_restarted_server_keeps_every_release() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app(Backend::EmbeddedAt(dir.path())).await;
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        app.given_release("production", key, i as f64).await;
    }
    app.given_release("staging", "a", 50.0).await;
    app.post(&app.env_url("production", "/releases/b/kill"), &json!({"reason": "why"})).await;
    app.post(&app.env_url("staging", "/kill-all"), &json!({})).await;
    let before: Value = app.get_json(app.env_url("production", "/releases")).await;
    app.stop().await;

    let app = spawn_app(Backend::EmbeddedAt(dir.path())).await;
    let after: Value = app.get_json(app.env_url("production", "/releases")).await;
    assert_eq!(before, after);
    assert_eq!(app.served_revision("staging").await, 2);
    let d = app.decision("staging", "a", json!({"targetingKey": "u"})).await;
    assert_eq!(d["reason"], "DISABLED");
    // And it goes on writing from where it was.
    let r = app.set_percent("production", "a", json!({"v2": 3}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["revision"], 5);
    assert!(!dir.path().join("cohort.json.tmp").exists(), "no temp file left behind");
}

#[tokio::test]
async fn a_corrupt_data_file_stops_start_up_with_a_message_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cohort.json");
    std::fs::write(&file, b"{\"format\": 1, \"environments\": {\"production\": {\"revis").expect("write");
    let (settings, _) = test_settings(&Backend::EmbeddedAt(dir.path()));
    let err = match Application::build(settings).await {
        Ok(_) => panic!("a torn file must not start as an empty store"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("corrupt"), "{err}");

    // The binary says so too, and exits non-zero.
    assert_serve_refuses_naming(dir.path(), &file);
}

#[tokio::test]
async fn fifty_concurrent_allocation_updates_with_one_if_match_let_exactly_one_through() {
    for backend in ["embedded", "redis"] {
        let redis = crate::redis_harness::RedisServer::start();
        let prefix = crate::helpers::unique_prefix();
        let app = match backend {
            "embedded" => spawn_app(Backend::Embedded).await,
            _ => spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await,
        };
        app.given_release("production", "checkout", 0.0).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 1..=50 {
            let client = app.client.clone();
            let url = app.env_url("production", "/releases/checkout/allocation");
            tasks.spawn(async move {
                let r = client
                    .post(url)
                    .header("If-Match", "\"1\"")
                    .json(&json!({"percent": {"v2": i}}))
                    .send()
                    .await
                    .expect("sent");
                (i, r.status())
            });
        }
        let mut ok = Vec::new();
        let mut conflicts = 0;
        while let Some(joined) = tasks.join_next().await {
            let (i, status) = joined.expect("joined");
            match status {
                StatusCode::OK => ok.push(i),
                StatusCode::PRECONDITION_FAILED => conflicts += 1,
                other => panic!("{backend}: unexpected {other}"),
            }
        }
        assert_eq!(ok.len(), 1, "{backend}: exactly one succeeds");
        assert_eq!(conflicts, 49, "{backend}");
        let body: Value = app.get_release("production", "checkout").await.json().await.expect("json");
        assert_eq!(body["revision"], 2, "{backend}: nothing lost or doubled");
        assert_eq!(body["allocation"]["v2"], f64::from(ok[0]), "{backend}: the winner's value is stored");
    }
}

#[test]
fn a_second_store_on_one_data_directory_is_refused_naming_the_directory_and_the_holders_pid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = EmbeddedStore::open(dir.path(), 10).expect("the first store opens");
    let err = match EmbeddedStore::open(dir.path(), 10) {
        Ok(_) => panic!("two stores must not share a data directory"),
        Err(e) => e,
    };
    assert!(matches!(&err, OpenError::Locked { holder: Some(pid), .. } if *pid == std::process::id()), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
    assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");

    drop(first);
    EmbeddedStore::open(dir.path(), 10).expect("the directory is free once its store is gone");
}

#[test]
fn a_lock_file_left_by_a_crashed_process_does_not_block_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lock = dir.path().join(LOCK_FILE);
    // What a killed process leaves: its pid in the file, and no lock (the kernel dropped it).
    std::fs::write(&lock, "4194304\n").expect("write");
    let _store = EmbeddedStore::open(dir.path(), 10).expect("a stale lock file does not block");
    let holder = std::fs::read_to_string(&lock).expect("read");
    assert_eq!(holder.trim(), std::process::id().to_string(), "the lock file now names this process");
}

#[tokio::test]
async fn a_second_application_on_a_running_ones_data_directory_does_not_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app(Backend::EmbeddedAt(dir.path())).await;
    app.given_release("production", "checkout", 5.0).await;
    let (settings, _) = test_settings(&Backend::EmbeddedAt(dir.path()));
    match Application::build(settings).await {
        Err(StartError::DataFile(OpenError::Locked { dir: locked, .. })) => assert_eq!(locked, dir.path()),
        Err(other) => panic!("expected the data directory lock, got: {other}"),
        Ok(_) => panic!("a second instance must not start on the same data directory"),
    }
    // The refused instance changed nothing: the first goes on writing.
    let r = app.set_percent("production", "checkout", json!({"v2": 10}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await;
    // And once it has stopped, the directory can be opened again.
    let app = spawn_app(Backend::EmbeddedAt(dir.path())).await;
    assert_eq!(app.served_revision("production").await, 2);
}
