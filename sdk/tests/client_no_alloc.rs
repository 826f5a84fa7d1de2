//! `Client::version()` and `is_enabled()` allocate nothing: the snapshot load is an
//! arc-swap guard and the answer borrows from it — nor do they once the staleness limit
//! applies. `track()` allocates only the first time it sees a (release, version) pair.
//! A counting global allocator proves it. Kept in its own test binary so no other
//! test's allocations are counted (the count is per thread).

use cohort_sdk::client::{Client, Outcome};
use cohort_sdk::{Context, ErrorCode, Reason, Release, SnapshotData};
use std::hint::black_box;

#[path = "support/counting.rs"]
mod counting;

use counting::{Counting, allocations_during};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// 1,000 releases at 50 %, from a bootstrap; the service is unreachable.
fn bootstrap() -> String {
    let releases: Vec<Release> =
        (0..1_000).map(|i| Release::new(&format!("release-{i}"), ["v1", "v2"]).with_allocation("v2", 50_000)).collect();
    serde_json::to_string(&SnapshotData { revision: 7, kill_all: false, releases }).expect("json")
}

fn client() -> cohort_sdk::client::ClientBuilder {
    Client::builder(format!("http://127.0.0.1:{}", closed_port()), "production", "token").bootstrap_json(bootstrap())
}

#[tokio::test(flavor = "current_thread")]
async fn answering_from_the_client_allocates_nothing() {
    let client = client().build().expect("client");
    let contexts: Vec<Context> = (0..1_000).map(|i| Context::with_targeting_key(format!("user-{i}"))).collect();
    let keys: Vec<String> = (0..1_000).map(|i| format!("release-{i}")).collect();

    // Warm up: arc-swap registers this thread's debt slots on first use.
    black_box(client.version("release-0", &contexts[0], "v1").version().len());

    let mut candidates = 0;
    let count = allocations_during(|| {
        for (ctx, key) in contexts.iter().zip(&keys) {
            let evaluation = client.version(key, ctx, "v1");
            assert_eq!(evaluation.reason, Reason::Split);
            candidates += usize::from(black_box(evaluation.version()) == "v2");
            candidates += usize::from(client.is_enabled(key, ctx));
            let unknown = client.version("no-such-release", ctx, "fallback");
            assert_eq!((unknown.version(), unknown.error), ("fallback", Some(ErrorCode::FlagNotFound)));
        }
    });
    assert_eq!(count, 0, "allocations while answering");
    assert!(candidates > 0 && candidates < 2_000, "half the units are in v2: {candidates}");
}

#[tokio::test(flavor = "current_thread")]
async fn tracking_a_known_pair_allocates_nothing() {
    let client = client().outcome_flush_interval(std::time::Duration::from_secs(3_600)).build().expect("client");
    let contexts: Vec<Context> = (0..1_000).map(|i| Context::with_targeting_key(format!("user-{i}"))).collect();
    let keys: Vec<String> = (0..100).map(|i| format!("release-{i}")).collect();
    // First sight of each pair: its counter is made (and kept from then on).
    for key in &keys {
        for ctx in &contexts[..50] {
            client.track(key, ctx, Outcome::Ok);
        }
    }
    let count = allocations_during(|| {
        for (i, ctx) in contexts.iter().enumerate() {
            let key = &keys[i % keys.len()];
            client.track(key, ctx, if i % 10 == 0 { Outcome::Error } else { Outcome::Ok });
            let served = client.version(key, ctx, "v1");
            client.track_served(key, &served, Outcome::Ok);
            client.track("no-such-release", ctx, Outcome::Ok);
        }
    });
    assert_eq!(count, 0, "allocations while tracking");
    assert_eq!(client.dropped_outcomes(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn answering_stale_allocates_nothing() {
    let client = client().max_staleness(std::time::Duration::from_millis(1)).build().expect("client");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !client.is_stale() {
        assert!(std::time::Instant::now() < deadline, "the limit passes");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let contexts: Vec<Context> = (0..1_000).map(|i| Context::with_targeting_key(format!("user-{i}"))).collect();
    let key = "release-3";
    let count = allocations_during(|| {
        for ctx in &contexts {
            let evaluation = client.version(key, ctx, "v1");
            assert_eq!((evaluation.version(), evaluation.reason), ("v1", Reason::Stale));
            assert!(!client.is_enabled(key, ctx));
        }
    });
    assert_eq!(count, 0, "allocations while answering stale");
}
