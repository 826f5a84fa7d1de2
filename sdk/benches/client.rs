//! `Client::version()` on a snapshot of 1,000 releases: the arc-swap load plus the
//! evaluation core, as an application pays it per decision; the same once stale
//! (`max_staleness` exceeded); and `track()` on a known (release, version) pair.
//!
//! `cargo bench -p cohort-sdk --features client --bench client`

use cohort_sdk::client::{Client, ClientBuilder, Outcome};
use cohort_sdk::{Context, Release, SnapshotData};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

const RELEASES: usize = 1_000;
const CONTEXTS: usize = 10_000;

/// A client on a bootstrap of 1,000 releases at 5 %, pointed at a port nothing listens
/// on. Its background tasks only run while `runtime` is driven, so they cost the
/// measurement nothing.
fn builder() -> ClientBuilder {
    let releases: Vec<Release> = (0..RELEASES)
        .map(|i| Release::new(&format!("release-{i:04}"), ["v1", "v2"]).with_allocation("v2", 5_000))
        .collect();
    let bootstrap = serde_json::to_string(&SnapshotData { revision: 1, kill_all: false, releases }).expect("json");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port();
    Client::builder(format!("http://127.0.0.1:{port}"), "production", "token")
        .bootstrap_json(bootstrap)
        .outcome_flush_interval(Duration::from_secs(3_600))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = runtime.block_on(async { builder().build() }).expect("client");
    let stale = runtime.block_on(async {
        let client = builder().max_staleness(Duration::from_millis(1)).build().expect("client");
        while !client.is_stale() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        client
    });
    let contexts: Vec<Context> =
        (0..CONTEXTS).map(|i| Context::with_targeting_key(format!("user-{:06}", (i * 7_919) % 1_000_000))).collect();
    let keys: Vec<String> = (0..RELEASES).map(|i| format!("release-{i:04}")).collect();
    let pick = |i: usize| (&keys[i % RELEASES], &contexts[i % CONTEXTS]);

    let mut group = c.benchmark_group("client");
    group.measurement_time(Duration::from_secs(4));
    let mut i = 0usize;
    group.bench_function("version_1000_releases", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let (key, ctx) = pick(i);
            black_box(client.version(black_box(key), black_box(ctx), "v1").bucket)
        })
    });
    group.bench_function("version_1000_releases_stale", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let (key, ctx) = pick(i);
            black_box(stale.version(black_box(key), black_box(ctx), "v1").version_index)
        })
    });
    group.bench_function("track_known_pair", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let (key, ctx) = pick(i);
            client.track(black_box(key), black_box(ctx), Outcome::Ok);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
