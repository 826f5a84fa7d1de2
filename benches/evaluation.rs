//! Criterion benchmarks of the evaluation core (`cohort_sdk::Snapshot::evaluate`).
//!
//! Groups:
//! - `percentage_release`: a two-version release at 5 % (v2 = 5000 bucket units), rotating
//!   through 10,000 pre-built contexts; one evaluation per iteration.
//! - `five_rules`: a release with five rules (`in`, `starts_with`, `gte`, `semver_gte`, `eq`)
//!   that the contexts (almost) never match, so all five are checked before the split.
//! - `snapshot_1000_releases`: a snapshot of 1,000 releases; every iteration evaluates a
//!   different release key for a different context (key lookup + evaluation).
//! - `bucket_only`: `cohort_sdk::bucket(salt, unit)` alone, for comparison.
//!
//! Everything (snapshots, contexts, keys) is built before the timing loop.
//!
//! Run: `cargo bench --bench evaluation` (one group: `cargo bench --bench evaluation -- five_rules`).

use cohort_sdk::{Condition, Context, Reason, Release, Rule, Snapshot, SnapshotData, Value};
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime};
use std::hint::black_box;
use std::time::Duration;

/// Number of distinct contexts the benches rotate through.
const CONTEXTS: usize = 10_000;
/// Number of releases in the large snapshot.
const RELEASES: usize = 1_000;

/// A user id like `user-123456`, spread over six digits rather than sequential.
fn user_id(i: usize) -> String {
    format!("user-{:06}", (i * 7_919 + 104_729) % 1_000_000)
}

fn snapshot(releases: Vec<Release>) -> Snapshot {
    Snapshot::compile(SnapshotData { revision: 1, kill_all: false, releases }).expect("benchmark releases compile")
}

/// The 5 % canary: `checkout` with v2 at 5000 bucket units.
fn percentage_release() -> Release {
    Release::new("checkout", ["v1", "v2"]).with_allocation("v2", 5_000)
}

fn condition(attr: &str, op: &str, values: Vec<Value>) -> Condition {
    Condition { attr: attr.to_owned(), op: op.to_owned(), values }
}

/// `search` with five single-condition rules, each a different op, then a 5 % split.
fn five_rule_release() -> Release {
    let mut release = Release::new("search", ["v1", "v2"]).with_allocation("v2", 5_000);
    let rule = |c: Condition| Rule { when: vec![c], serve: "v2".to_owned() };
    release.rules = vec![
        rule(condition("country", "in", vec!["DE".into(), "FR".into(), "NL".into()])),
        rule(condition("email", "starts_with", vec!["admin@".into(), "qa@".into()])),
        rule(condition("account_age_days", "gte", vec![3_650.into()])),
        rule(condition("app_version", "semver_gte", vec!["3.0.0".into()])),
        rule(condition("plan", "eq", vec!["enterprise".into()])),
    ];
    release
}

/// Contexts that miss rules 1–4; 1 in 100 matches rule 5 (which is still checked last).
fn five_rule_contexts() -> Vec<Context> {
    (0..CONTEXTS)
        .map(|i| {
            let id = user_id(i);
            let plan = match i % 100 {
                0 => "enterprise",
                1..=30 => "pro",
                _ => "free",
            };
            Context::with_targeting_key(id.clone())
                .with("country", ["US", "GB", "BR", "JP"][i % 4])
                .with("email", format!("{id}@example.com"))
                .with("account_age_days", (i % 3_000) as i64)
                .with("app_version", format!("2.{}.{}", i % 20, i % 7))
                .with("plan", plan)
        })
        .collect()
}

fn user_contexts() -> Vec<Context> {
    (0..CONTEXTS).map(|i| Context::with_targeting_key(user_id(i))).collect()
}

/// Advances a rotating index without a division in the timed loop.
#[inline(always)]
fn next(i: &mut usize, len: usize) -> usize {
    let current = *i;
    *i += 1;
    if *i == len {
        *i = 0;
    }
    current
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50);
}

fn bench_percentage_release(c: &mut Criterion) {
    let snapshot = snapshot(vec![percentage_release()]);
    let contexts = user_contexts();
    let candidates = contexts.iter().filter(|ctx| snapshot.evaluate("checkout", ctx).is_candidate()).count();
    assert!((300..700).contains(&candidates), "about 5 % of 10,000 should get v2, got {candidates}");

    let mut group = c.benchmark_group("percentage_release");
    configure(&mut group);
    group.bench_function("evaluate", |b| {
        let mut i = 0;
        b.iter(|| snapshot.evaluate(black_box("checkout"), black_box(&contexts[next(&mut i, CONTEXTS)])));
    });
    group.finish();
}

fn bench_five_rules(c: &mut Criterion) {
    let snapshot = snapshot(vec![five_rule_release()]);
    let contexts = five_rule_contexts();
    let splits = contexts.iter().filter(|ctx| snapshot.evaluate("search", ctx).reason == Reason::Split).count();
    assert_eq!(splits, CONTEXTS - CONTEXTS / 100, "only the `enterprise` contexts should match a rule");

    let mut group = c.benchmark_group("five_rules");
    configure(&mut group);
    group.bench_function("evaluate", |b| {
        let mut i = 0;
        b.iter(|| snapshot.evaluate(black_box("search"), black_box(&contexts[next(&mut i, CONTEXTS)])));
    });
    group.finish();
}

fn bench_snapshot_1000_releases(c: &mut Criterion) {
    let keys: Vec<String> = (0..RELEASES).map(|i| format!("release-{i:04}")).collect();
    let releases = keys
        .iter()
        .enumerate()
        .map(|(i, key)| Release::new(key, ["stable", "canary"]).with_allocation("canary", (i as u32 * 50) % 50_001))
        .collect();
    let snapshot = snapshot(releases);
    assert_eq!(snapshot.len(), RELEASES);
    let contexts = user_contexts();
    assert!(keys.iter().all(|key| snapshot.evaluate(key, &contexts[0]).version.is_some()));

    let mut group = c.benchmark_group("snapshot_1000_releases");
    configure(&mut group);
    group.bench_function("evaluate", |b| {
        let (mut k, mut i) = (0, 0);
        b.iter(|| {
            let key = keys[next(&mut k, RELEASES)].as_str();
            snapshot.evaluate(black_box(key), black_box(&contexts[next(&mut i, CONTEXTS)]))
        });
    });
    group.finish();
}

fn bench_bucket_only(c: &mut Criterion) {
    let units: Vec<String> = (0..CONTEXTS).map(user_id).collect();

    let mut group = c.benchmark_group("bucket_only");
    configure(&mut group);
    group.bench_function("bucket", |b| {
        let mut i = 0;
        b.iter(|| cohort_sdk::bucket(black_box("checkout"), black_box(units[next(&mut i, CONTEXTS)].as_str())));
    });
    group.finish();
}

criterion_group!(benches, bench_percentage_release, bench_five_rules, bench_snapshot_1000_releases, bench_bucket_only);
criterion_main!(benches);
