//! A fixed evaluation loop for instruction counting with callgrind.
//!
//! Builds the 5 % canary snapshot of `benches/evaluation.rs` (`checkout`, v2 = 5000 bucket
//! units) and 10,000 contexts, then evaluates the release N times (N = first argument,
//! default 1,000,000), rotating through the contexts, and prints a checksum of the decisions
//! so that nothing is optimised away.
//!
//! Instructions per evaluation = (Ir(N = 1,000,000) - Ir(N = 0)) / 1,000,000:
//!
//! ```text
//! cargo build --release -p cohort-sdk --example eval_loop
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.0 ./target/release/examples/eval_loop 0
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.1m ./target/release/examples/eval_loop 1000000
//! callgrind_annotate --inclusive=yes /tmp/cg.1m | head -40
//! ```

use cohort_sdk::{Context, Release, Snapshot, SnapshotData};
use std::hint::black_box;

const CONTEXTS: usize = 10_000;

fn main() {
    let n: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.replace('_', "").parse().expect("N must be a non-negative integer"),
        None => 1_000_000,
    };

    let release = Release::new("checkout", ["v1", "v2"]).with_allocation("v2", 5_000);
    let snapshot = Snapshot::compile(SnapshotData { revision: 1, kill_all: false, releases: vec![release] })
        .expect("the release compiles");
    let contexts: Vec<Context> = (0..CONTEXTS)
        .map(|i| Context::with_targeting_key(format!("user-{:06}", (i * 7_919 + 104_729) % 1_000_000)))
        .collect();

    let mut checksum = 0u64;
    let mut candidates = 0u64;
    let mut i = 0;
    for _ in 0..n {
        let decision = snapshot.evaluate(black_box("checkout"), black_box(&contexts[i]));
        checksum = checksum.wrapping_add(u64::from(decision.bucket.unwrap_or(0)));
        candidates += u64::from(decision.is_candidate());
        i += 1;
        if i == CONTEXTS {
            i = 0;
        }
    }
    println!("evaluations={n} candidates={candidates} bucket_sum={checksum}");
}
