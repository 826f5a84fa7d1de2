//! A fixed loop over `Client::version()` (or `track()`) for instruction counting with
//! callgrind: a client on a bootstrap of 1,000 releases at 5 %, 10,000 contexts, N calls
//! rotating through both (N = first argument, default 1,000,000; the second argument
//! `track` counts `track()` instead, `empty` runs the loop without a call, to subtract
//! the loop's own cost). Prints a checksum so nothing is optimised away.
//!
//! Instructions per call = (Ir(N = 1,000,000) - Ir(N = 0)) / 1,000,000:
//!
//! ```text
//! cargo build --release -p cohort-sdk --features client --example client_loop
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cl.0 ./target/release/examples/client_loop 0
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cl.1m ./target/release/examples/client_loop 1000000
//! ```
//!
//! The client is built inside a current-thread runtime that is not driven afterwards,
//! so its background tasks never run: the loop is all the difference measures.

use cohort_sdk::client::{Client, Outcome};
use cohort_sdk::{Context, Release, SnapshotData};
use std::hint::black_box;

const RELEASES: usize = 1_000;

/// What each iteration calls.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Version,
    Track,
    Empty,
}
const CONTEXTS: usize = 10_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = match args.next() {
        Some(arg) => arg.replace('_', "").parse().expect("N must be a non-negative integer"),
        None => 1_000_000,
    };
    let mode = match args.next().as_deref() {
        Some("track") => Mode::Track,
        Some("empty") => Mode::Empty,
        _ => Mode::Version,
    };

    let releases: Vec<Release> = (0..RELEASES)
        .map(|i| Release::new(&format!("release-{i:04}"), ["v1", "v2"]).with_allocation("v2", 5_000))
        .collect();
    let bootstrap = serde_json::to_string(&SnapshotData { revision: 1, kill_all: false, releases }).expect("json");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = runtime
        .block_on(async {
            Client::builder("http://127.0.0.1:9", "production", "token").bootstrap_json(bootstrap).build()
        })
        .expect("client");
    let contexts: Vec<Context> =
        (0..CONTEXTS).map(|i| Context::with_targeting_key(format!("user-{:06}", (i * 7_919) % 1_000_000))).collect();
    let keys: Vec<String> = (0..RELEASES).map(|i| format!("release-{i:04}")).collect();
    // Warm up outside the counted loop (arc-swap's thread slot, track's counters) over
    // every (release, context) pair the loop visits: the rotation repeats every 10,000.
    for i in 0..CONTEXTS {
        let (key, ctx) = (&keys[i % RELEASES], &contexts[i]);
        black_box(client.version(key, ctx, "v1").bucket);
        client.track(key, ctx, Outcome::Ok);
    }

    let mut checksum = 0u64;
    let (mut k, mut c) = (0, 0);
    for _ in 0..n {
        let (key, ctx) = (black_box(keys[k].as_str()), black_box(&contexts[c]));
        match mode {
            Mode::Track => client.track(key, ctx, Outcome::Ok),
            Mode::Empty => checksum = checksum.wrapping_add(key.len() as u64),
            Mode::Version => {
                let evaluation = client.version(key, ctx, "v1");
                checksum = checksum.wrapping_add(u64::from(evaluation.bucket.unwrap_or(0)));
            }
        }
        k += 1;
        if k == RELEASES {
            k = 0;
        }
        c += 1;
        if c == CONTEXTS {
            c = 0;
        }
    }
    println!("calls={n} mode={mode:?} checksum={checksum} dropped={}", client.dropped_outcomes());
}
