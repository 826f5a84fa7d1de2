//! Seeded fault interleaving: random admin operations from several clients against two
//! instances on one real Redis, while the test stalls (SIGSTOP) and restarts Redis.
//! After every step it checks the safety promises:
//! - an acknowledged kill (200, or 202 served locally) is served by the instance that
//!   answered at once, and by both instances once the store is usable again, unless a
//!   later unkill was acknowledged or may have been applied (one the store did not
//!   confirm);
//! - no ramped candidate's share exceeds its ramp's current step;
//! - the audit log holds every acknowledged change exactly once.
//!
//! It prints the seed; `CHAOS_SEED=<seed> CHAOS_SECS=<s> cargo test --test api chaos`
//! replays a run (the operations replay exactly; the timing of faults against them does
//! not, the machine being shared).

use crate::helpers::{Backend, TestApp, client_with, eventually, spawn_app_with, token, unique_prefix};
use crate::redis_harness::RedisServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const RELEASES: [&str; 4] = ["r0", "r1", "r2", "r3"];
const HEAL: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Tally {
    operations: usize,
    acknowledged: usize,
    refused: usize,
    stalls: usize,
    restarts: usize,
    violations: Vec<String>,
}

/// What the clients were told: the kill state each acknowledged kill or unkill left.
#[derive(Default)]
struct Model {
    killed: BTreeMap<&'static str, bool>,
    /// Revision → action of every change acknowledged as stored (200/201).
    acknowledged: BTreeMap<u64, (String, String)>,
}

fn env_var(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

async fn decision_reason(app: &TestApp, key: &str) -> Option<String> {
    let r = app
        .client
        .post(app.env_url("production", "/evaluate"))
        .json(&json!({"context": {"targetingKey": "user-1"}, "releases": [key]}))
        .send()
        .await
        .ok()?;
    let body: Value = r.json().await.ok()?;
    body["results"][key]["reason"].as_str().map(str::to_owned)
}

async fn served_killed(app: &TestApp, key: &str) -> bool {
    decision_reason(app, key).await.as_deref() == Some("DISABLED")
}

/// Every ramped candidate's share is within its ramp's current step, as `app` serves.
async fn ramp_violations(app: &TestApp, name: &str) -> Vec<String> {
    let Ok(r) = app.client.get(app.env_url("production", "/releases")).send().await else { return Vec::new() };
    let Ok(list) = r.json::<Value>().await else { return Vec::new() };
    let mut found = Vec::new();
    for release in list["releases"].as_array().into_iter().flatten() {
        let ramp = &release["ramp"];
        if !matches!(ramp["state"].as_str(), Some("running" | "paused")) {
            continue;
        }
        let candidate = ramp["candidate"].as_str().unwrap_or_default();
        let step = ramp["step"].as_u64().unwrap_or(0) as usize;
        let limit = ramp["steps"][step]["buckets"].as_f64().unwrap_or(0.0) / 1_000.0;
        let share = release["allocation"][candidate].as_f64().unwrap_or(0.0);
        if share > limit + 1e-9 {
            found
                .push(format!("{name}: {} serves {candidate} {share}% above its ramp step's {limit}%", release["key"]));
        }
    }
    found
}

async fn revision_of(app: &TestApp, key: &str) -> Option<u64> {
    let r = app.client.get(app.env_url("production", &format!("/releases/{key}"))).send().await.ok()?;
    r.json::<Value>().await.ok()?["revision"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_operations_under_redis_stalls_and_restarts_never_break_a_safety_promise() {
    let seed = env_var("CHAOS_SEED").unwrap_or_else(|| rand::random::<u32>().into());
    let budget = Duration::from_secs(env_var("CHAOS_SECS").unwrap_or(100));
    println!("chaos: seed {seed} ({}s); replay with CHAOS_SEED={seed}", budget.as_secs());
    let mut rng = StdRng::seed_from_u64(seed);

    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    // The audit log is checked whole at the end: keep more of it than a run writes (the
    // default retention, 1,000 entries, is less than a fast run's writes).
    let retain = |settings: &mut cohort::config::Settings| settings.audit.retention = 100_000;
    let a = spawn_app_with(Backend::Redis { server: &redis, prefix: &prefix }, retain).await;
    let b = spawn_app_with(Backend::Redis { server: &redis, prefix: &prefix }, retain).await;
    let apps = [&a, &b];
    for key in RELEASES {
        let body = json!({"key": key, "versions": ["v1", "v2"], "allocation": {"v2": 10}});
        assert_eq!(a.create_release("production", body).await.status(), StatusCode::CREATED);
    }
    // Several clients: on-call engineers and product teams, each its own actor.
    let clients: Vec<(String, reqwest::Client)> = ["alice", "bob", "carol"]
        .iter()
        .map(|who| (who.to_string(), client_with(&token(who, "production", "write kill read"))))
        .collect();

    let mut tally = Tally::default();
    let mut model = Model::default();
    let started = Instant::now();
    while started.elapsed() < budget {
        // A fault now and then, healed before the next operation's checks.
        if rng.random_bool(0.06) {
            let during = rng.random_range(1..4usize);
            if rng.random_bool(0.5) {
                tally.stalls += 1;
                redis.stall();
                operate(&mut rng, &apps, &clients, &mut tally, &mut model, during).await;
                redis.unstall();
            } else {
                tally.restarts += 1;
                redis.kill();
                operate(&mut rng, &apps, &clients, &mut tally, &mut model, during).await;
                redis.start_again();
            }
            heal_and_check(&apps, &mut tally, &model).await;
        } else {
            operate(&mut rng, &apps, &clients, &mut tally, &mut model, 1).await;
        }
    }
    heal_and_check(&apps, &mut tally, &model).await;

    // The audit log holds every acknowledged change exactly once.
    let audit = whole_audit(&a).await;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut actions: HashMap<u64, String> = HashMap::new();
    for entry in &audit {
        let revision = entry["revision"].as_u64().unwrap_or(0);
        *seen.entry(revision).or_default() += 1;
        actions.insert(revision, entry["action"].as_str().unwrap_or_default().to_owned());
    }
    for (revision, count) in &seen {
        if *count != 1 {
            tally.violations.push(format!("audit holds revision {revision} {count} times"));
        }
    }
    // Each release's kill switch flips, by revision, to tell an idempotent kill or unkill
    // (answered with the release's current revision, which another write may have
    // bumped meanwhile) from a lost one.
    let mut switches: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for entry in &audit {
        let action = entry["action"].as_str().unwrap_or_default();
        if matches!(action, "kill" | "unkill")
            && let Some(release) = entry["release"].as_str()
        {
            let revision = entry["revision"].as_u64().unwrap_or(0);
            switches.entry(release.to_owned()).or_default().push((revision, action.to_owned()));
        }
    }
    for (revision, (action, key)) in &model.acknowledged {
        match actions.get(revision) {
            Some(logged) if logged == action => {}
            other => {
                let in_effect = matches!(action.as_str(), "kill" | "unkill")
                    && switches
                        .get(key)
                        .and_then(|flips| flips.iter().filter(|(r, _)| r <= revision).max_by_key(|(r, _)| *r))
                        .is_some_and(|(_, last)| last == action);
                if !in_effect {
                    tally.violations.push(format!("acknowledged {action} of {key} at {revision}, audit has {other:?}"));
                }
            }
        }
    }

    println!(
        "chaos: seed {seed}: {} operations ({} acknowledged, {} refused, {} audit entries), {} faults ({} stalls, {} restarts), {} violations",
        tally.operations,
        tally.acknowledged,
        tally.refused,
        audit.len(),
        tally.stalls + tally.restarts,
        tally.stalls,
        tally.restarts,
        tally.violations.len()
    );
    for violation in &tally.violations {
        println!("chaos: VIOLATION {violation}");
    }
    assert!(tally.violations.is_empty(), "seed {seed}: {:?}", tally.violations);
    assert!(tally.acknowledged > 0, "seed {seed}: nothing was acknowledged");
}

/// Every entry of the audit log, newest first, page by page (a page holds at most 1,000,
/// and a fast run writes more).
async fn whole_audit(app: &TestApp) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut path = "/audit?limit=1000".to_owned();
    loop {
        let page = app.get_json(app.env_url("production", &path)).await;
        entries.extend(page["entries"].as_array().into_iter().flatten().cloned());
        match page["next_before"].as_u64() {
            Some(before) => path = format!("/audit?limit=1000&before={before}"),
            None => return entries,
        }
    }
}

/// `count` random operations, each checked at once on the instance that answered.
async fn operate(
    rng: &mut StdRng,
    apps: &[&TestApp; 2],
    clients: &[(String, reqwest::Client)],
    tally: &mut Tally,
    model: &mut Model,
    count: usize,
) {
    for _ in 0..count {
        let app = apps[rng.random_range(0..2)];
        let (_, client) = &clients[rng.random_range(0..clients.len())];
        let key = RELEASES[rng.random_range(0..RELEASES.len())];
        let url = |path: &str| app.env_url("production", &format!("/releases/{key}{path}"));
        // A write that changes nothing answers the revision the release already had.
        let before = revision_of(app, key).await.unwrap_or(0);
        let (action, request) = match rng.random_range(0..10) {
            0 | 1 => ("kill", client.post(url("/kill")).json(&json!({"reason": "chaos"}))),
            2 => ("unkill", client.post(url("/unkill")).json(&json!({}))),
            3 => (
                "allocation",
                client.post(url("/allocation")).json(&json!({"percent": {"v2": rng.random_range(0..60)}})),
            ),
            4 => {
                let revision = before;
                let mut body =
                    json!({"versions": ["v1", "v2"], "description": format!("edit {}", rng.random::<u16>())});
                if rng.random_bool(0.5) {
                    body["allocation"] = json!({"v2": rng.random_range(0..60)});
                }
                ("update", client.put(url("")).header("If-Match", format!("\"{revision}\"")).json(&body))
            }
            5 => {
                let steps = json!([{"percent": 5, "hold": "30s"}, {"percent": 25, "hold": "30s"}, {"percent": 100}]);
                ("ramp-start", client.post(url("/ramp")).json(&json!({"candidate": "v2", "steps": steps})))
            }
            6 => ("ramp-pause", client.post(url("/ramp/pause")).json(&json!({}))),
            7 => ("ramp-resume", client.post(url("/ramp/resume")).json(&json!({}))),
            8 => ("ramp-abort", client.post(url("/ramp/abort")).json(&json!({}))),
            _ => {
                let on = rng.random_bool(0.3);
                let path = if on { "/kill-all" } else { "/unkill-all" };
                let action = if on { "kill-all" } else { "unkill-all" };
                (action, client.post(app.env_url("production", path)).json(&json!({})))
            }
        };
        tally.operations += 1;
        let Ok(response) = request.timeout(Duration::from_secs(10)).send().await else {
            tally.refused += 1;
            if action == "unkill" {
                model.killed.insert(key, false); // it may have been applied: not checked
            }
            continue;
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            tally.refused += 1;
            // An unkill sent to a store that did not answer may have been applied; one the
            // store could not take (`unkill_needs_store`) leaves the kill served.
            if action == "unkill" && body["error"]["code"] == "store_unconfirmed" {
                model.killed.insert(key, false);
            }
            continue;
        }
        tally.acknowledged += 1;
        if status == StatusCode::OK || status == StatusCode::CREATED {
            // A change stored now: its revision and action must be in the audit log once
            // (an idempotent kill answers the current state and writes nothing).
            if let Some(revision) = body["revision"].as_u64().filter(|&r| r > before)
                && !matches!(action, "kill-all" | "unkill-all")
            {
                model.acknowledged.entry(revision).or_insert_with(|| (action.to_owned(), key.to_owned()));
            }
        }
        match action {
            "kill" => {
                model.killed.insert(key, true);
                if !served_killed(app, key).await {
                    tally
                        .violations
                        .push(format!("{key}: kill answered {status} but the answering instance serves it live"));
                }
            }
            "unkill" => {
                model.killed.insert(key, false);
            }
            _ => {}
        }
        for (name, app) in [("A", apps[0]), ("B", apps[1])] {
            tally.violations.extend(ramp_violations(app, name).await);
        }
    }
}

/// Once the store is usable again, both instances serve every kill the clients were
/// told about.
async fn heal_and_check(apps: &[&TestApp; 2], tally: &mut Tally, model: &Model) {
    for (name, app) in [("A", apps[0]), ("B", apps[1])] {
        let healed = eventually(HEAL, || async { app.state.releases.pending().list().is_empty() }).await;
        if !healed {
            tally.violations.push(format!("{name}: pending kills not written {HEAL:?} after the fault"));
        }
    }
    for (key, killed) in &model.killed {
        if !killed {
            continue;
        }
        for (name, app) in [("A", apps[0]), ("B", apps[1])] {
            if !eventually(HEAL, || async { served_killed(app, key).await }).await {
                tally.violations.push(format!("{name}: acknowledged kill of {key} not served after the fault"));
            }
        }
    }
}
