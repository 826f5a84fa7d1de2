//! `Client::track` against a real server: outcomes are counted for the version each unit
//! is served, reach `GET …/health` in batches, are flushed by `close()` (and when the
//! last clone is dropped), and a full
//! outcome table (or an unreachable service) drops outcomes and counts them instead of
//! growing or blocking.

use crate::helpers::{Backend, TestApp, eventually, spawn_app, token};
use crate::sse::DEADLINE;
use cohort_sdk::client::{Client, ClientBuilder, Outcome};
use cohort_sdk::{Context, Release, SnapshotData};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

fn sdk(base_url: &str) -> ClientBuilder {
    Client::builder(base_url, "production", token("sdk", "production", "eval report"))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
}

/// Per version, `(ok, error)` as `GET …/releases/{key}/health` reports it.
async fn health(app: &TestApp, key: &str) -> BTreeMap<String, (u64, u64)> {
    let url = app.env_url("production", &format!("/releases/{key}/health?minutes=60"));
    let body: Value = app.get_json(url).await;
    let versions = body["versions"].as_object().cloned().unwrap_or_default();
    versions
        .into_iter()
        .map(|(version, counts)| {
            (version, (counts["ok"].as_u64().unwrap_or_default(), counts["error"].as_u64().unwrap_or_default()))
        })
        .collect()
}

fn user(i: usize) -> Context {
    Context::with_targeting_key(format!("user-{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_outcomes_reach_the_server_counted_for_the_version_each_unit_is_served() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let client = sdk(&app.address).outcome_flush_interval(Duration::from_millis(50)).build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);

    let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for i in 0..500 {
        let ctx = user(i);
        let served = client.version("checkout", &ctx, "v1");
        // The candidate fails one request in four; the baseline never does.
        let failed = served.is_candidate() && i % 4 == 0;
        let counts = expected.entry(served.version().to_owned()).or_default();
        if failed {
            counts.1 += 1;
            client.track("checkout", &ctx, Outcome::Error);
        } else {
            counts.0 += 1;
            client.track_served("checkout", &served, Outcome::Ok);
        }
        client.track("no-such-release", &ctx, Outcome::Ok);
    }
    assert_eq!(expected.len(), 2, "both versions served: {expected:?}");
    assert!(
        eventually(DEADLINE, || async { health(&app, "checkout").await == expected }).await,
        "the server has {:?}, expected {expected:?}",
        health(&app, "checkout").await
    );
    assert_eq!(client.dropped_outcomes(), 0);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reports_the_outcomes_still_pending() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 100.0).await;
    let client = sdk(&app.address).outcome_flush_interval(Duration::from_secs(3_600)).build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    for i in 0..40 {
        client.track("checkout", &user(i), if i < 30 { Outcome::Ok } else { Outcome::Error });
    }
    assert!(health(&app, "checkout").await.is_empty(), "nothing reported before the interval");

    client.close().await;
    assert_eq!(health(&app, "checkout").await, BTreeMap::from([("v2".to_owned(), (30, 10))]), "close flushed");
    client.track("checkout", &user(1), Outcome::Ok);
    assert_eq!(client.dropped_outcomes(), 1, "tracking after close only counts a drop");
    client.close().await;
    let answer = client.version("checkout", &user(1), "v1");
    assert_eq!(answer.version(), "v2", "a closed client still answers from its snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_clone_reports_pending_outcomes_in_the_background() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 100.0).await;
    let client = sdk(&app.address).outcome_flush_interval(Duration::from_secs(3_600)).build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    let clone = client.clone();
    for i in 0..5 {
        clone.track("checkout", &user(i), Outcome::Error);
    }
    drop(clone);
    drop(client);
    let expected = BTreeMap::from([("v2".to_owned(), (0, 5))]);
    assert!(eventually(DEADLINE, || async { health(&app, "checkout").await == expected }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outcome_table_drops_new_pairs_and_counts_them() {
    let app = spawn_app(Backend::Embedded).await;
    for key in ["a", "b", "c"] {
        app.given_release("production", key, 100.0).await;
    }
    let client = sdk(&app.address)
        .max_outcome_pairs(2)
        .outcome_flush_interval(Duration::from_secs(3_600))
        .build()
        .expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    assert!(eventually(DEADLINE, || async { client.revision() == 3 }).await);
    for i in 0..10 {
        for key in ["a", "b", "c"] {
            client.track(key, &user(i), Outcome::Ok);
        }
    }
    assert_eq!(client.dropped_outcomes(), 10, "the third pair does not fit");
    client.close().await;
    assert_eq!(health(&app, "a").await, BTreeMap::from([("v2".to_owned(), (10, 0))]));
    assert_eq!(health(&app, "b").await, BTreeMap::from([("v2".to_owned(), (10, 0))]));
    assert!(health(&app, "c").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_never_waits_for_a_service_that_does_not_answer_and_counts_what_it_loses() {
    // A listener that never accepts: connections open (the kernel's backlog), requests
    // are sent, and no answer ever comes.
    let black_hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", black_hole.local_addr().expect("addr"));
    let releases = vec![Release::new("checkout", ["v1", "v2"]).with_allocation("v2", 50_000)];
    let bootstrap = serde_json::to_string(&SnapshotData { revision: 1, kill_all: false, releases }).expect("json");
    let client = sdk(&url)
        .bootstrap_json(bootstrap)
        .request_timeout(Duration::from_millis(300))
        .outcome_flush_size(100)
        .max_outcome_pairs(10)
        .build()
        .expect("client");

    // The flusher is soon stuck in a request; tracking goes on regardless.
    const TRACKED: u64 = 200_000;
    for i in 0..TRACKED {
        client.track("checkout", &user(i as usize % 1_000), Outcome::Ok);
        if i % 50_000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let closed = tokio::time::timeout(DEADLINE, client.close()).await;
    assert!(closed.is_ok(), "close gives up after the request timeout");
    assert_eq!(client.dropped_outcomes(), TRACKED, "every undelivered outcome is counted as dropped");
    drop(black_hole);
}

#[tokio::test]
async fn outcomes_of_a_version_served_before_a_kill_are_counted_for_that_version() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 100.0).await;
    let client = sdk(&app.address).outcome_flush_interval(Duration::from_secs(3_600)).build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    let served = client.version("checkout", &user(1), "v1");
    assert_eq!(served.version(), "v2");
    let r = app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({})).await;
    assert!(r.status().is_success());
    assert!(eventually(DEADLINE, || async { client.revision() == 2 }).await);

    client.track_served("checkout", &served, Outcome::Error);
    client.track("checkout", &user(1), Outcome::Ok);
    client.close().await;
    assert_eq!(
        health(&app, "checkout").await,
        BTreeMap::from([("v1".to_owned(), (1, 0)), ("v2".to_owned(), (0, 1))]),
        "the failure belongs to v2, which served it; the later request to the baseline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_of_a_release_deleted_meanwhile_are_dropped_and_the_rest_of_the_report_still_arrives() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 100.0).await;
    app.given_release("production", "promo", 100.0).await;
    let client = sdk(&app.address).outcome_flush_interval(Duration::from_secs(3_600)).build().expect("client");
    assert!(client.wait_ready(DEADLINE).await);
    for i in 0..20 {
        client.track("checkout", &user(i), Outcome::Ok);
        client.track("promo", &user(i), if i < 5 { Outcome::Error } else { Outcome::Ok });
    }
    // `promo` goes before the report: the service refuses the report for naming it (422
    // `unknown_outcome_pairs`), and the SDK sends it again without it.
    let r = app.client.delete(app.env_url("production", "/releases/promo")).send().await.expect("sent");
    assert!(r.status().is_success(), "{}", r.status());

    client.close().await;
    assert_eq!(
        health(&app, "checkout").await,
        BTreeMap::from([("v2".to_owned(), (20, 0))]),
        "checkout's outcomes arrive although the report also named the deleted release"
    );
    assert_eq!(client.dropped_outcomes(), 20, "promo's 20 outcomes are dropped, and counted");
}
