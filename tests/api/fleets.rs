//! Rolling deployments over fleets with simulated nodes heartbeating through the API:
//! exact batches, health gates, progress deadlines, nodes leaving.

use crate::helpers::{Backend, TestApp, client_with, eventually, spawn_app_with, token};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Deploys what it is assigned and stays healthy.
    Good,
    /// Deploys, but reports unhealthy once it runs the candidate.
    SickOnCandidate,
    /// Never deploys the candidate.
    Stuck,
}

/// A node agent simulated through the API: heartbeats every few ms and "deploys" what
/// the heartbeat's answer assigns.
struct Node(tokio::task::JoinHandle<()>);

impl Drop for Node {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn node(app: &TestApp, id: &str, behaviour: Behaviour) -> Node {
    let client = client_with(&token(&format!("agent-{id}"), "production", "eval"));
    let url = app.env_url("production", &format!("/fleets/web/nodes/{id}"));
    Node(tokio::spawn(async move {
        let mut running = "v1".to_owned();
        loop {
            let healthy = !(behaviour == Behaviour::SickOnCandidate && running == "v2");
            let r = client.put(&url).json(&json!({"healthy": healthy, "running": running})).send().await;
            if let Ok(r) = r
                && let Ok(body) = r.json::<Value>().await
                && let Some(assigned) = body["assignments"]["deploy"].as_str()
                && !(behaviour == Behaviour::Stuck && assigned == "v2")
            {
                running = assigned.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }))
}

async fn fleet_app() -> TestApp {
    spawn_app_with(Backend::Embedded, |s| s.fleet.node_ttl_ms = 400).await
}

async fn create_fleet_release(app: &TestApp) {
    let r = app.create_release("production", json!({"key": "deploy", "versions": ["v1", "v2"], "fleet": "web"})).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());
}

async fn start(app: &TestApp, plan: Value) {
    let r = app.post(&app.env_url("production", "/releases/deploy/ramp"), &plan).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());
}

async fn ramp_state(app: &TestApp) -> Value {
    app.get_json(app.env_url("production", "/releases/deploy/ramp")).await
}

async fn fleet(app: &TestApp) -> Vec<Value> {
    let body: Value = app.get_json(app.env_url("production", "/fleets/web")).await;
    body["nodes"].as_array().cloned().unwrap_or_default()
}

/// The candidate's nodes after each write of the release, from the audit log.
async fn batches(app: &TestApp) -> Vec<BTreeSet<String>> {
    let url = app.env_url("production", "/audit?release=deploy&limit=1000");
    let page: Value = app.get_json(url).await;
    let mut entries = page["entries"].as_array().cloned().unwrap_or_default();
    entries.reverse();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for e in entries {
        let overrides = e["after"]["overrides"].as_object().cloned().unwrap_or_default();
        let batch: BTreeSet<String> = overrides.iter().filter(|(_, v)| *v == "v2").map(|(k, _)| k.clone()).collect();
        if out.last() != Some(&batch) {
            out.push(batch);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_ramps_in_exact_batches_of_1_3_5_and_10_nodes() {
    let app = fleet_app().await;
    create_fleet_release(&app).await;
    let _nodes: Vec<Node> = (0..10).map(|i| node(&app, &format!("web-{i:02}"), Behaviour::Good)).collect();
    assert!(eventually(DEADLINE, || async { fleet(&app).await.len() == 10 }).await, "ten nodes report");
    start(
        &app,
        json!({
            "candidate": "v2",
            "steps": [{"nodes": 1, "hold": "100ms"}, {"nodes": 3, "hold": "100ms"}, {"percent": 50, "hold": "100ms"}, {"percent": 100}],
            "progress_deadline": "20s"
        }),
    )
    .await;
    assert!(eventually(DEADLINE, || async { ramp_state(&app).await["state"] == "completed" }).await, "completed");
    assert!(
        eventually(DEADLINE, || async { fleet(&app).await.iter().all(|n| n["running"] == "v2") }).await,
        "every node ends on the candidate"
    );
    let sizes: Vec<usize> = batches(&app).await.iter().map(BTreeSet::len).filter(|n| *n > 0).collect();
    assert_eq!(sizes, vec![1, 3, 5, 10], "exact batches");
    let all = batches(&app).await;
    for pair in all.windows(2) {
        assert!(pair[1].is_superset(&pair[0]), "no node moved back while rising: {:?} -> {:?}", pair[0], pair[1]);
    }
    // Evaluation with node_id in the context agrees with the assignment.
    for n in fleet(&app).await {
        let id = n["node"].as_str().expect("id");
        let d = app.decision("production", "deploy", json!({"node_id": id})).await;
        assert_eq!(d["version"], n["assigned"]["deploy"], "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_candidate_node_rolls_the_whole_release_back() {
    let app = fleet_app().await;
    create_fleet_release(&app).await;
    let mut nodes: Vec<Node> = (0..5).map(|i| node(&app, &format!("web-{i:02}"), Behaviour::SickOnCandidate)).collect();
    nodes.extend((5..10).map(|i| node(&app, &format!("web-{i:02}"), Behaviour::Good)));
    assert!(eventually(DEADLINE, || async { fleet(&app).await.len() == 10 }).await);
    start(&app, json!({"candidate": "v2", "steps": [{"percent": 50, "hold": "10s"}, {"percent": 100}]})).await;
    assert!(eventually(DEADLINE, || async { ramp_state(&app).await["state"] == "rolled_back" }).await);
    assert!(
        eventually(DEADLINE, || async { fleet(&app).await.iter().all(|n| n["assigned"]["deploy"] == "v1") }).await,
        "every node is assigned the baseline again"
    );
    assert_eq!(ramp_state(&app).await["reason"], "a candidate node reports unhealthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_runs_the_candidate_pauses_the_ramp_at_the_deadline() {
    let app = fleet_app().await;
    create_fleet_release(&app).await;
    let _nodes: Vec<Node> = (0..4).map(|i| node(&app, &format!("web-{i:02}"), Behaviour::Stuck)).collect();
    assert!(eventually(DEADLINE, || async { fleet(&app).await.len() == 4 }).await);
    start(
        &app,
        json!({"candidate": "v2", "steps": [{"nodes": 2, "hold": "50ms"}, {"nodes": 4}], "progress_deadline": "300ms"}),
    )
    .await;
    assert!(eventually(DEADLINE, || async { ramp_state(&app).await["state"] == "paused" }).await);
    let state = ramp_state(&app).await;
    assert_eq!((state["reason"].clone(), state["step"].clone()), (json!("progress_deadline_exceeded"), json!(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaving_is_replaced_by_the_next_in_the_ranking_and_no_other_node_changes() {
    let app = fleet_app().await;
    let r = app
        .create_release(
            "production",
            json!({"key": "deploy", "versions": ["v1", "v2"], "fleet": "web", "fleet_nodes": 3}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut nodes: BTreeMap<String, Node> =
        (0..8).map(|i| format!("web-{i:02}")).map(|id| (id.clone(), node(&app, &id, Behaviour::Good))).collect();
    let assigned = |list: Vec<Value>| -> BTreeMap<String, String> {
        list.iter()
            .map(|n| {
                (n["node"].as_str().unwrap_or("").to_owned(), n["assigned"]["deploy"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    };
    assert!(
        eventually(DEADLINE, || async {
            let a = assigned(fleet(&app).await);
            a.len() == 8 && a.values().filter(|v| *v == "v2").count() == 3
        })
        .await
    );
    let before = assigned(fleet(&app).await);
    let leaving = before.iter().find(|(_, v)| *v == "v2").map(|(k, _)| k.clone()).expect("a candidate node");
    drop(nodes.remove(&leaving));
    assert!(
        eventually(DEADLINE, || async {
            let a = assigned(fleet(&app).await);
            a.len() == 7 && a.values().filter(|v| *v == "v2").count() == 3
        })
        .await,
        "the node drops out after its TTL and the batch is refilled"
    );
    let after = assigned(fleet(&app).await);
    let changed: Vec<&String> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
    assert_eq!(changed.len(), 1, "only the replacement changed: {changed:?}");
    assert_eq!(after[changed[0]], "v2");
}

#[tokio::test]
async fn fleet_input_is_validated() {
    let app = fleet_app().await;
    for (body, says) in [
        (json!({"key": "d", "versions": ["v1", "v2", "v3"], "fleet": "web"}), "one candidate"),
        (json!({"key": "d", "versions": ["v1", "v2"], "fleet": "web", "overrides": {"n": "v2"}}), "node batches"),
        (json!({"key": "d", "versions": ["v1", "v2"], "fleet_nodes": 2}), "only for fleet"),
        (json!({"key": "d", "versions": ["v1", "v2"], "fleet": "bad fleet"}), "fleet"),
    ] {
        let r = app.create_release("production", body).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let text = r.text().await.unwrap_or_default();
        assert!(text.contains(says), "{text} should say {says}");
    }
    app.given_release("production", "plain", 0.0).await;
    let r = app
        .post(&app.env_url("production", "/releases/plain/ramp"), &json!({"candidate": "v2", "steps": [{"nodes": 1}]}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "node steps are for fleet releases");
    let r = client_with(&token("agent", "production", "eval"))
        .put(app.env_url("production", "/fleets/web/nodes/bad%20node"))
        .json(&json!({"healthy": true}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// A real `cohort agent` process; killed on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_agents_follow_a_rolling_deployment_to_the_end() {
    let app = fleet_app().await;
    create_fleet_release(&app).await;
    let dir = tempfile::tempdir().expect("dir");
    let _agents: Vec<Agent> = (0..3)
        .map(|i| {
            let node = format!("host-{i}");
            let deployed = dir.path().join(&node);
            Agent(
                std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
                    .args(["agent", "--fleet", "web", "--node", &node, "--interval", "100ms", "--running", "v1"])
                    .arg("--exec")
                    .arg(format!("echo {{version}} > {}", deployed.display()))
                    .args(["--health-cmd", "true"])
                    .env("COHORT_URL", &app.address)
                    .env("COHORT_ENV", "production")
                    .env("COHORT_TOKEN", token("agent", "production", "eval"))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("agent starts"),
            )
        })
        .collect();
    assert!(eventually(DEADLINE, || async { fleet(&app).await.len() == 3 }).await, "agents heartbeat");
    start(&app, json!({"candidate": "v2", "steps": [{"nodes": 1, "hold": "100ms"}, {"percent": 100}]})).await;
    assert!(eventually(DEADLINE, || async { ramp_state(&app).await["state"] == "completed" }).await);
    assert!(
        eventually(DEADLINE, || async {
            fleet(&app).await.iter().all(|n| n["running"] == "v2" && n["healthy"] == true)
        })
        .await,
        "every agent deployed and reports v2"
    );
    for i in 0..3 {
        let deployed = std::fs::read_to_string(dir.path().join(format!("host-{i}"))).expect("deployed");
        assert_eq!(deployed.trim(), "v2");
    }
}
