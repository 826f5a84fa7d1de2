//! Failover under load: two cohort instances sharing a highly available Redis — a Cluster
//! (3 masters, 3 replicas) or a Sentinel-managed primary and replica — evaluate and write
//! in loops while the master holding the environment's slot is killed (SIGKILL) and its
//! replica promoted. With `store.min_replicas_ack = 1`:
//! - no evaluation fails (evaluation never waits on the store);
//! - writes in the failover window are refused (503), never left hanging past the bound;
//! - every acknowledged write (200/201) is still there afterwards: its audit entry holds
//!   its revision, action and payload, and a served kill (200, or 202 written later) is
//!   in force at the end;
//! - writes resume by themselves once the new master has a replica again, as a supervisor
//!   would see to: a fresh node joins as its replica (until then the new master has none
//!   and `min_replicas_ack = 1` refuses every write, `503 not_replicated`). Resumed means
//!   a write stored and acknowledged, not an answer that had nothing to write.
//!
//! Each test prints its row of the failover table (`cargo test --test api
//! failover_under_load -- --nocapture --test-threads=1`).

use crate::helpers::{Backend, TestApp, eventually, spawn_app_with, unique_prefix};
use crate::redis_topology::{RedisCluster, RedisSentinelSet};
use cohort::config::{RedisUrl, Settings, StoreKind};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writer loops, each on its own release, spread over the two instances.
const WRITERS: usize = 4;
/// No write may take longer than this (command timeout 1 s, replication timeout, a few
/// commands per write): a correctness bound, not a speed assertion.
const WRITE_BOUND: Duration = Duration::from_secs(10);
/// Load before the fault, and after writes resumed.
const STEADY: Duration = Duration::from_secs(3);
/// Writes must resume within this after the fault.
const RESUME_WITHIN: Duration = Duration::from_secs(45);
const CONVERGE: Duration = Duration::from_secs(30);

/// Where the instances' store is: the seeds of a cluster, or a sentinel set's master
/// name and sentinels (owned, so the test may kill the topology's processes meanwhile).
#[derive(Clone)]
enum Topology {
    Cluster(Vec<String>),
    Sentinel { master_name: String, sentinels: Vec<String> },
}

impl Topology {
    fn cluster(cluster: &RedisCluster) -> Topology {
        Topology::Cluster(cluster.urls())
    }

    fn sentinel(set: &RedisSentinelSet) -> Topology {
        Topology::Sentinel { master_name: set.master_name().to_owned(), sentinels: set.sentinel_urls() }
    }

    /// Test settings for an instance on this topology, writes acknowledged once one
    /// replica holds them.
    fn settings(&self, prefix: &str) -> impl FnOnce(&mut Settings) + use<> {
        let (prefix, topology) = (prefix.to_owned(), self.clone());
        move |s: &mut Settings| {
            s.store.kind = StoreKind::Redis;
            s.store.redis_prefix = prefix;
            match topology {
                Topology::Cluster(urls) => s.store.redis_cluster_urls = urls.into_iter().map(RedisUrl::new).collect(),
                Topology::Sentinel { master_name, sentinels } => {
                    s.store.redis_sentinel.master_name = master_name;
                    s.store.redis_sentinel.sentinels = sentinels.into_iter().map(RedisUrl::new).collect();
                }
            }
            s.store.min_replicas_ack = 1;
            s.rate_limit.evaluate_per_address = 0;
        }
    }
}

/// One write answered 200/201: what must still be there afterwards.
#[derive(Debug, Clone)]
struct Acknowledged {
    release: String,
    revision: u64,
    action: &'static str,
    /// The description (update) or reason (kill) it wrote; none for an unkill.
    token: Option<String>,
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    evaluations: AtomicU64,
    evaluations_failed: AtomicU64,
    acknowledged: Mutex<Vec<Acknowledged>>,
    /// Kills served but not stored yet (202): written after the failover (or unkills
    /// that cancelled such a kill).
    served_pending: AtomicU64,
    refused: AtomicU64,
    /// Refusals by error code.
    refusals: Mutex<BTreeMap<String, u64>>,
    conflicts: AtomicU64,
    hung: AtomicU64,
    unexpected: Mutex<Vec<String>>,
    slowest_write_ms: AtomicU64,
    /// When the fault struck, and the first write started after it that was stored.
    fault_at: Mutex<Option<Instant>>,
    resumed_after: Mutex<Option<Duration>>,
    /// Per release: the kill state its last kill/unkill left (`None`: unknown outcome).
    kill_state: Mutex<HashMap<String, Option<bool>>>,
    stop: AtomicBool,
}

impl Tally {
    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn release_key(writer: usize) -> String {
    format!("w{writer}")
}

/// An instance as the load loops (spawned, so owning what they use) reach it.
#[derive(Clone)]
struct Endpoint {
    client: reqwest::Client,
    /// `…/v1/envs/production`.
    env: String,
}

impl Endpoint {
    fn of(app: &TestApp) -> Endpoint {
        Endpoint { client: app.client.clone(), env: app.env_url("production", "") }
    }
}

async fn evaluate_loop(app: Endpoint, tally: Arc<Tally>, task: usize) {
    let keys: Vec<String> = (0..WRITERS).map(release_key).collect();
    let url = format!("{}/evaluate", app.env);
    let mut unit = 0u64;
    while !tally.stop.load(Ordering::Relaxed) {
        unit += 1;
        let body = json!({"context": {"targetingKey": format!("u{task}-{unit}")}, "releases": keys});
        let answer = app.client.post(&url).json(&body).timeout(Duration::from_secs(5)).send().await;
        let ok = match answer {
            Ok(r) if r.status() == StatusCode::OK => r
                .json::<Value>()
                .await
                .is_ok_and(|b| keys.iter().all(|k| matches!(b["results"][k]["version"].as_str(), Some("v1" | "v2")))),
            _ => false,
        };
        tally.count(if ok { &tally.evaluations } else { &tally.evaluations_failed });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes release `w{writer}` in a loop: update (If-Match), kill, update, unkill, …
async fn write_loop(app: Endpoint, tally: Arc<Tally>, writer: usize) {
    let key = release_key(writer);
    let url = format!("{}/releases/{key}", app.env);
    let mut revision = 0u64;
    let mut n = 0u64;
    while !tally.stop.load(Ordering::Relaxed) {
        n += 1;
        let token = format!("{key}-{n}");
        let (action, request) = match n % 4 {
            0 => ("kill", app.client.post(format!("{url}/kill")).json(&json!({"reason": token}))),
            2 => ("unkill", app.client.post(format!("{url}/unkill")).json(&json!({}))),
            _ => (
                "update",
                app.client
                    .put(&url)
                    .header("If-Match", format!("\"{revision}\""))
                    .json(&json!({"versions": ["v1", "v2"], "allocation": {"v2": 50}, "description": token})),
            ),
        };
        let switch = match action {
            "kill" => Some(true),
            "unkill" => Some(false),
            _ => None,
        };
        let started = Instant::now();
        let answer = request.timeout(WRITE_BOUND).send().await;
        tally.slowest_write_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                tally.count(if e.is_timeout() { &tally.hung } else { &tally.refused });
                if switch.is_some() {
                    tally.kill_state.lock().expect("lock").insert(key.clone(), None);
                }
                continue;
            }
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        match status {
            StatusCode::OK | StatusCode::CREATED => {
                let stored = body["revision"].as_u64().unwrap_or(0);
                // An idempotent kill answers the current revision without writing.
                let written = stored > revision || action == "update";
                if written {
                    let token = (action != "unkill").then(|| token.clone());
                    let ack = Acknowledged { release: key.clone(), revision: stored, action, token };
                    tally.acknowledged.lock().expect("lock").push(ack);
                }
                revision = stored;
                // Resumed means written and replicated again: an answer that wrote nothing
                // (a switch already in that state) proves nothing about the store.
                if let Some(fault) = *tally.fault_at.lock().expect("lock")
                    && started > fault
                    && written
                {
                    tally.resumed_after.lock().expect("lock").get_or_insert(started - fault);
                }
                if let Some(on) = switch {
                    tally.kill_state.lock().expect("lock").insert(key.clone(), Some(on));
                }
            }
            StatusCode::ACCEPTED => {
                tally.count(&tally.served_pending);
                // A 202 unkill cancels this instance's journalled kill, which the store
                // may hold all the same (written, not replicated): outcome unknown.
                if let Some(on) = switch {
                    tally.kill_state.lock().expect("lock").insert(key.clone(), on.then_some(true));
                }
            }
            StatusCode::PRECONDITION_FAILED => {
                // A refused write may still have been stored: read where the release is.
                tally.count(&tally.conflicts);
                if let Ok(r) = app.client.get(&url).timeout(WRITE_BOUND).send().await
                    && let Ok(current) = r.json::<Value>().await
                {
                    revision = current["revision"].as_u64().unwrap_or(revision);
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                tally.count(&tally.refused);
                let code = body["error"]["code"].as_str().unwrap_or("?").to_owned();
                *tally.refusals.lock().expect("lock").entry(code).or_default() += 1;
                if switch.is_some() {
                    tally.kill_state.lock().expect("lock").insert(key.clone(), None);
                }
            }
            other => tally.unexpected.lock().expect("lock").push(format!("{action} {key}: {other} {body}")),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every audit entry of `production`, newest first.
async fn audit(app: &TestApp) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let page_url = match before {
            Some(b) => app.env_url("production", &format!("/audit?limit=1000&before={b}")),
            None => app.env_url("production", "/audit?limit=1000"),
        };
        let page = app.get_json(page_url).await;
        entries.extend(page["entries"].as_array().cloned().unwrap_or_default());
        match page["next_before"].as_u64() {
            Some(next) => before = Some(next),
            None => return entries,
        }
    }
}

/// Acknowledged writes that are not in the store afterwards. An update must be the audit
/// entry at its revision. A kill or unkill may have been idempotent (answered with the
/// release's current revision, written by something else): it is lost only when the
/// switch the audit shows in force at that revision is not the one acknowledged.
fn lost(acknowledged: &[Acknowledged], audit: &[Value]) -> Vec<String> {
    let by_revision: HashMap<u64, &Value> =
        audit.iter().filter_map(|e| e["revision"].as_u64().map(|r| (r, e))).collect();
    let switch_at = |release: &str, revision: u64| {
        audit
            .iter()
            .filter(|e| e["release"] == release && matches!(e["action"].as_str(), Some("kill" | "unkill")))
            .filter(|e| e["revision"].as_u64().is_some_and(|r| r <= revision))
            .max_by_key(|e| e["revision"].as_u64())
            .and_then(|e| e["action"].as_str())
            .unwrap_or("unkill")
    };
    acknowledged
        .iter()
        .filter(|ack| match ack.action {
            "update" => by_revision.get(&ack.revision).is_none_or(|entry| {
                entry["action"] != "update"
                    || entry["release"] != ack.release.as_str()
                    || entry["after"]["description"].as_str() != ack.token.as_deref()
            }),
            action => switch_at(&ack.release, ack.revision) != action,
        })
        .map(|ack| format!("{ack:?}"))
        .collect()
}

/// One row of the failover table.
struct Row {
    topology: &'static str,
    fault: &'static str,
    evaluations: u64,
    evaluations_failed: u64,
    acknowledged: usize,
    refused: u64,
    hung: u64,
    lost: usize,
    resumed_after: Option<Duration>,
}

fn print_row(row: &Row) {
    println!(
        "| topology | fault | evaluations (failed) | writes acknowledged | writes refused (503) | writes hung | acknowledged writes lost | seconds until writes resumed |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
        row.topology,
        row.fault,
        row.evaluations,
        row.evaluations_failed,
        row.acknowledged,
        row.refused,
        row.hung,
        row.lost,
        row.resumed_after.map_or("never".to_owned(), |d| format!("{:.1}", d.as_secs_f64())),
    );
}

/// Runs the load on two instances over `topology`, strikes with `fault` (blocking: it
/// kills a process and returns), and checks every promise.
async fn failover_under_load(topology: Topology, name: &'static str, fault_name: &'static str, fault: impl FnOnce()) {
    let prefix = unique_prefix();
    let a = spawn_app_with(Backend::Embedded, topology.settings(&prefix)).await;
    let b = spawn_app_with(Backend::Embedded, topology.settings(&prefix)).await;
    for writer in 0..WRITERS {
        a.given_release("production", &release_key(writer), 50.0).await;
    }
    let revision = a.served_revision("production").await;
    assert!(eventually(CONVERGE, || async { b.served_revision("production").await == revision }).await);

    let tally = Arc::new(Tally::default());
    let apps = [&a, &b];
    let mut load = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        for task in 0..2 {
            load.push(tokio::spawn(evaluate_loop(Endpoint::of(app), tally.clone(), i * 2 + task)));
        }
    }
    for writer in 0..WRITERS {
        load.push(tokio::spawn(write_loop(Endpoint::of(apps[writer % 2]), tally.clone(), writer)));
    }
    tokio::time::sleep(STEADY).await;
    *tally.fault_at.lock().expect("lock") = Some(Instant::now());
    tokio::task::block_in_place(fault);
    let _ = eventually(RESUME_WITHIN, || async { tally.resumed_after.lock().expect("lock").is_some() }).await;
    tokio::time::sleep(STEADY).await;
    tally.stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }

    // A failover can lose revisions an instance already read from the old master: a
    // write not yet replicated, answered `not_replicated` or not at all. The instance then
    // rightly stops writing as regressed, kills served but not stored included, until the
    // operator reseeds it (`cohort store reseed`), which is done here. The audit check
    // below still finds any acknowledged write the failover lost.
    // The operator reseeds from the regressed instance that had seen the most (one that
    // saw less is refused, `reseed_behind`).
    let mut regressions = Vec::new();
    for app in apps {
        let regressed = || async { app.get_json(app.url("/readyz")).await["regressed"]["production"].clone() };
        eventually(CONVERGE, || async {
            app.state.releases.pending().list().is_empty() || !regressed().await.is_null()
        })
        .await;
        let found = regressed().await;
        if !found.is_null() {
            regressions.push((app, found));
        }
    }
    let mut reseeded = None;
    if let Some((app, found)) = regressions.into_iter().max_by_key(|(_, found)| found["seen"].as_u64()) {
        let reason = json!({"reason": "the failover lost revisions this instance had read"});
        let r = app.post(&app.env_url("production", "/store/reseed"), &reason).await;
        assert_eq!(r.status(), StatusCode::OK, "reseed after {found}: {}", r.text().await.unwrap_or_default());
        reseeded = Some(found);
    }
    // Kills served while the store could not take them are written now.
    for app in apps {
        let written = eventually(CONVERGE, || async { app.state.releases.pending().list().is_empty() }).await;
        let ready = app.get_json(app.url("/readyz")).await;
        assert!(
            written,
            "pending kills written after the failover: {:?}; /readyz {ready}",
            app.state.releases.pending().list()
        );
    }
    let revision = a.served_revision("production").await;
    assert!(eventually(CONVERGE, || async { b.served_revision("production").await >= revision }).await);
    let entries = audit(&a).await;
    let acknowledged = tally.acknowledged.lock().expect("lock").clone();
    let mut missing = lost(&acknowledged, &entries);
    let kill_states = tally.kill_state.lock().expect("lock").clone();
    for (key, state) in &kill_states {
        let Some(killed) = state else { continue };
        for (name, app) in [("A", &a), ("B", &b)] {
            let release = app.get_json(app.env_url("production", &format!("/releases/{key}"))).await;
            if release["killed"] != *killed {
                missing.push(format!(
                    "{name} serves {key} killed={} after a kill switch set to {killed}",
                    release["killed"]
                ));
            }
        }
    }

    let row = Row {
        topology: name,
        fault: fault_name,
        evaluations: Tally::load(&tally.evaluations),
        evaluations_failed: Tally::load(&tally.evaluations_failed),
        acknowledged: acknowledged.len(),
        refused: Tally::load(&tally.refused),
        hung: Tally::load(&tally.hung),
        lost: missing.len(),
        resumed_after: *tally.resumed_after.lock().expect("lock"),
    };
    print_row(&row);
    println!(
        "failover: {name}: refusals {:?}, {} conflicts (412), {} kills served before stored (202), slowest write {} ms{}",
        tally.refusals.lock().expect("lock"),
        Tally::load(&tally.conflicts),
        Tally::load(&tally.served_pending),
        Tally::load(&tally.slowest_write_ms),
        reseeded.map(|r| format!("; regressed ({r}) and reseeded")).unwrap_or_default(),
    );
    let unexpected = tally.unexpected.lock().expect("lock").clone();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    assert_eq!(row.evaluations_failed, 0, "no evaluation fails during a failover");
    assert!(row.evaluations > 0);
    assert_eq!(row.hung, 0, "no write hangs past {WRITE_BOUND:?}");
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    assert!(row.resumed_after.is_some(), "writes resume by themselves within {RESUME_WITHIN:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_under_load_of_a_cluster_master_loses_no_acknowledged_write() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start).await.expect("cluster starts");
    let topology = Topology::cluster(&cluster);
    // Every key of `production` carries the hash tag `{production}`: one slot, one master.
    failover_under_load(topology, "cluster (3 masters + 3 replicas)", "SIGKILL the slot's master", || {
        cluster.kill_master_of("{production}");
        // Once the replica took over, a fresh node joins as the new master's replica, as a
        // supervisor replacing the failed node would. Until then the new master has none,
        // and with `min_replicas_ack = 1` every write is refused `not_replicated`. (The
        // killed node itself, started again with its data, would claim its old slots
        // for a moment before it learns it was replaced.)
        cluster.wait_for_failover();
        cluster.add_replica_of("{production}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_under_load_of_a_sentinel_primary_loses_no_acknowledged_write() {
    let mut set = tokio::task::spawn_blocking(RedisSentinelSet::start).await.expect("sentinel set starts");
    let topology = Topology::sentinel(&set);
    failover_under_load(topology, "sentinel (primary + replica, 3 sentinels)", "SIGKILL the primary", || {
        set.kill_primary();
        // Once the sentinels promoted the replica, a fresh node replicates it (see the
        // cluster case; the killed node started again waits for the sentinels to
        // reconfigure it, which took 14 s and once more than 30 s here).
        set.wait_for_new_primary();
        set.add_replica();
    })
    .await;
}
