//! Evaluating a release allocates nothing: a counting global allocator proves it.
//! Kept in its own test binary so no other test's allocations are counted.

use cohort_sdk::{Condition, Context, Reason, Release, Rule, Snapshot, SnapshotData};

#[path = "support/counting.rs"]
mod counting;

use counting::{Counting, allocations_during};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn cond(attr: &str, op: &str, values: &[serde_json::Value]) -> Condition {
    Condition {
        attr: attr.into(),
        op: op.into(),
        values: values.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect(),
    }
}

#[test]
fn evaluating_allocates_nothing_on_any_path() {
    use serde_json::json;
    let mut rich = Release::new("rich", ["v1", "v2", "v3"]).with_allocation("v2", 20_000).with_allocation("v3", 50_000);
    rich.overrides.insert("vip".into(), "v3".into());
    rich.rules.push(Rule {
        when: vec![
            cond("country", "in", &[json!("NZ"), json!("AU")]),
            cond("app_version", "semver_gte", &[json!("2.1.0-rc.1")]),
        ],
        serve: "v2".into(),
    });
    rich.rules.push(Rule { when: vec![cond("email", "ends_with", &[json!("@example.com")])], serve: "v3".into() });
    rich.audience = vec![cond("age", "gte", &[json!(18)]), cond("plan", "not_in", &[json!("free")])];
    let long_salt =
        Release { salt: Some("s".repeat(250)), ..Release::new("long", ["a", "b"]).with_allocation("b", 100_000) };
    let mut tenant = Release::new("tenant", ["v1", "v2"]).with_allocation("v2", 50_000);
    tenant.unit = "tenant_id".into();
    let snapshot = Snapshot::compile(SnapshotData {
        revision: 1,
        kill_all: false,
        releases: vec![Release::new("plain", ["v1", "v2"]).with_allocation("v2", 5_000), rich, long_salt, tenant],
    })
    .unwrap();

    let contexts = [
        Context::with_targeting_key("user-1"),
        Context::with_targeting_key("vip"),
        Context::new(),
        Context::with_targeting_key("u").with("country", "NZ").with("app_version", "v2.3"),
        Context::with_targeting_key("u").with("email", "a@example.com"),
        Context::with_targeting_key("u").with("age", 30).with("plan", "pro"),
        Context::with_targeting_key("u").with("age", "17"),
        Context::with_targeting_key("x".repeat(2_000)).with("tenant_id", -42_i64),
        Context::new().with("tenant_id", true),
    ];
    let keys = ["plain", "rich", "long", "tenant", "missing"];

    let mut reasons = Vec::with_capacity(64);
    let count = allocations_during(|| {
        for ctx in &contexts {
            for key in keys {
                let d = snapshot.evaluate(key, ctx);
                std::hint::black_box(&d);
                if reasons.len() < reasons.capacity() {
                    reasons.push(d.reason);
                }
            }
        }
    });
    assert_eq!(count, 0, "evaluation allocated {count} times");
    // The loop covered every decision path, so the zero above means something.
    for reason in [Reason::Split, Reason::TargetingMatch, Reason::Default, Reason::Error] {
        assert!(reasons.contains(&reason), "no {reason:?} decision was exercised");
    }

    let killed = Snapshot::compile(SnapshotData { kill_all: true, ..snapshot.to_data() }).unwrap();
    let ctx = Context::with_targeting_key("user-1");
    let count = allocations_during(|| {
        assert_eq!(killed.evaluate("rich", &ctx).reason, Reason::Disabled);
    });
    assert_eq!(count, 0);
}

#[test]
fn resolving_a_typed_value_allocates_nothing() {
    use serde_json::json;
    let mut layout = Release::new("layout", ["v1", "v2"]).with_allocation("v2", 50_000);
    layout.values.insert("v1".into(), json!({"columns": 1, "tags": ["a", "b"]}));
    layout.values.insert("v2".into(), json!({"columns": 2, "sidebar": true}));
    let snapshot = Snapshot::compile(SnapshotData {
        revision: 1,
        kill_all: false,
        releases: vec![layout, Release::new("plain", ["v1", "v2"]).with_allocation("v2", 5_000)],
    })
    .unwrap();
    let contexts: Vec<Context> = (0..50).map(|i| Context::with_targeting_key(format!("user-{i}"))).collect();
    let mut values = 0;
    let count = allocations_during(|| {
        for ctx in &contexts {
            for key in ["layout", "plain", "missing"] {
                let resolved = snapshot.resolve(key, ctx);
                values += usize::from(std::hint::black_box(resolved.value).is_some());
            }
        }
    });
    assert_eq!(count, 0, "resolving allocated {count} times");
    assert_eq!(values, 100, "every known release has a value");
}
