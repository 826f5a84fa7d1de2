//! Automatic ramps driven end to end: outcomes reported through the events API, the
//! driver walking steps, the guard rolling back a bad candidate, pausing for missing
//! data, webhooks, and several instances on one Redis.
//!
//! The guard counts only a step's own outcomes, from the first 10 s bucket boundary at
//! or after the step's start, so a step that must pass holds longer than a bucket.

use crate::helpers::{
    Backend, TestApp, assert_error, client_with, eventually, run_cohort, spawn_app, spawn_app_with, token,
    unique_prefix,
};
use crate::redis_harness::RedisServer;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use cohort::config::{Secret, WebhookSettings};
use cohort::store::{Action, EnvName, Write, WriteMeta};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Long enough for walks of two 12 s holds on a busy machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The server's outcome bucket (docs/model.md, "Ramps and guards": 10 s).
const BUCKET_MS: u64 = 10_000;

/// Where the guard's window of a step that started at `step_started_ms` begins: the
/// first bucket boundary at or after it.
fn window_start_ms(step_started_ms: u64) -> u64 {
    step_started_ms.div_ceil(BUCKET_MS) * BUCKET_MS
}

/// Waits until the wall clock (which the in-process server reads too) reaches `at_ms`.
async fn wait_until_ms(at_ms: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(now))).await;
}

/// Reports outcomes for `release` every few milliseconds until dropped: per batch,
/// `per_batch` outcomes on each version with the given error rates (in percent).
struct Traffic(tokio::task::JoinHandle<()>);

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn traffic(
    app: &TestApp,
    env: &str,
    release: &str,
    per_batch: u64,
    baseline_errors: u64,
    candidate_errors: u64,
) -> Traffic {
    let client = client_with(&token("sdk", env, "eval report"));
    let url = app.env_url(env, "/events");
    let release = release.to_owned();
    Traffic(tokio::spawn(async move {
        loop {
            let batch = json!([
                {"release": release, "version": "v1", "ok": per_batch * (100 - baseline_errors) / 100, "error": per_batch * baseline_errors / 100},
                {"release": release, "version": "v2", "ok": per_batch * (100 - candidate_errors) / 100, "error": per_batch * candidate_errors / 100},
            ]);
            let _ = client.post(&url).json(&batch).send().await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }))
}

async fn start_ramp(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.post(&app.env_url("production", &format!("/releases/{key}/ramp")), &body).await
}

async fn ramp(app: &TestApp, key: &str) -> Value {
    let r = app.client.get(app.env_url("production", &format!("/releases/{key}/ramp"))).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("json")
}

/// The ramp, or `null` while this instance does not know the release yet.
async fn ramp_or_null(app: &TestApp, key: &str) -> Value {
    let r = app.client.get(app.env_url("production", &format!("/releases/{key}/ramp"))).send().await.expect("sent");
    if r.status() == StatusCode::OK { r.json().await.expect("json") } else { Value::Null }
}

async fn state_becomes(app: &TestApp, key: &str, state: &str) -> bool {
    eventually(DEADLINE, || async { ramp_or_null(app, key).await["state"] == state }).await
}

async fn audit_actions(app: &TestApp, key: &str) -> Vec<Value> {
    let url = app.env_url("production", &format!("/audit?release={key}&limit=1000"));
    let page: Value = app.get_json(url).await;
    let mut entries = page["entries"].as_array().expect("entries").clone();
    entries.reverse();
    entries
}

/// Two held steps, then 100 %. Each hold outlasts a bucket, so its window (which may
/// begin up to 10 s after the step) has outcomes when it ends.
fn walk() -> Value {
    json!({
        "candidate": "v2",
        "steps": [{"percent": 1, "hold": "12s"}, {"percent": 5, "hold": "12s"}, {"percent": 100}],
        "guard": {"max_error_rate_increase": 0.01, "min_samples": 200, "confidence": 0.99}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_candidate_walks_every_step_to_100_percent_once_each() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let _traffic = traffic(&app, "production", "checkout", 200, 1, 1);
    let r = start_ramp(&app, "checkout", walk()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(state_becomes(&app, "checkout", "completed").await, "the ramp completes");

    let release: Value = app.get_release("production", "checkout").await.json().await.expect("json");
    assert_eq!(release["allocation"]["v2"], 100.0);
    let d = app.decision("production", "checkout", json!({"targetingKey": "anyone"})).await;
    assert_eq!(d["version"], "v2");

    let entries = audit_actions(&app, "checkout").await;
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().expect("action")).collect();
    assert_eq!(actions, vec!["create", "ramp-start", "ramp-advance", "ramp-advance"], "{actions:?}");
    let steps: Vec<u64> = entries.iter().skip(1).map(|e| e["after"]["ramp"]["step"].as_u64().expect("step")).collect();
    assert_eq!(steps, vec![0, 1, 2], "each step exactly once, in order");
    for entry in &entries[2..] {
        assert_eq!(entry["actor"], "cohort:ramp");
        assert!(entry["reason"].as_str().expect("reason").contains("guard pass"), "{entry}");
        assert_eq!(entry["after"]["ramp"]["guard_figures"]["verdict"], "pass");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_candidate_is_rolled_back_as_soon_as_the_regression_is_significant() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let body = json!({
        "candidate": "v2",
        "steps": [{"percent": 10, "hold": "1h"}, {"percent": 100}],
        "guard": {"max_error_rate_increase": 0.0, "min_samples": 500, "confidence": 0.99}
    });
    assert_eq!(start_ramp(&app, "checkout", body).await.status(), StatusCode::CREATED);
    let traffic = traffic(&app, "production", "checkout", 100, 1, 5);
    assert!(state_becomes(&app, "checkout", "rolled_back").await, "rolled back during the first hold");
    drop(traffic);

    let status = ramp(&app, "checkout").await;
    assert_eq!(status["step"], 0, "it never advanced");
    assert_eq!(status["percent"], 0.0);
    let figures = &status["guard_figures"];
    assert_eq!(figures["verdict"], "regression");
    assert!(figures["z"].as_f64().expect("z") > figures["z_critical"].as_f64().expect("crit"));
    assert!(figures["candidate_samples"].as_u64().expect("n") >= 500);
    for i in 0..200 {
        let d = app.decision("production", "checkout", json!({"targetingKey": format!("user-{i}")})).await;
        assert_eq!(d["version"], "v1", "everyone is back on the baseline");
    }
    let actions: Vec<String> =
        audit_actions(&app, "checkout").await.iter().map(|e| e["action"].as_str().expect("a").to_owned()).collect();
    assert_eq!(actions, vec!["create", "ramp-start", "ramp-rollback"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_traffic_pauses_the_ramp_with_insufficient_data() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let body = json!({
        "candidate": "v2",
        "steps": [{"percent": 1, "hold": "100ms"}, {"percent": 100}],
        "guard": {"min_samples": 100000}
    });
    assert_eq!(start_ramp(&app, "checkout", body).await.status(), StatusCode::CREATED);
    let _traffic = traffic(&app, "production", "checkout", 10, 1, 1);
    assert!(state_becomes(&app, "checkout", "paused").await);
    let status = ramp(&app, "checkout").await;
    assert_eq!((status["reason"].clone(), status["step"].clone()), (json!("insufficient_data"), json!(0)));
    let actions: Vec<String> =
        audit_actions(&app, "checkout").await.iter().map(|e| e["action"].as_str().expect("a").to_owned()).collect();
    assert_eq!(actions, vec!["create", "ramp-start", "ramp-extend", "ramp-extend", "ramp-extend", "ramp-pause"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_pause_resume_abort_and_promote_and_a_kill_pauses() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let slow = json!({"candidate": "v2", "steps": [{"percent": 10, "hold": "1h"}, {"percent": 100}]});
    assert_eq!(start_ramp(&app, "checkout", slow.clone()).await.status(), StatusCode::CREATED);
    let again = start_ramp(&app, "checkout", slow.clone()).await;
    assert_error(again, StatusCode::CONFLICT, "conflict").await;
    let manual = app.set_percent("production", "checkout", json!({"v2": 50}), None).await;
    assert_error(manual, StatusCode::CONFLICT, "ramp_active").await;

    // An alerting system with a kill token may pause.
    let alerts = client_with(&token("alertmanager", "production", "kill"));
    let url = |p: &str| app.env_url("production", &format!("/releases/checkout/{p}"));
    let r = alerts.post(url("ramp/pause")).json(&json!({"reason": "p99 latency"})).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ramp(&app, "checkout").await["reason"], "p99 latency");
    let r = alerts.post(url("ramp/resume")).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
    let r = app.client.post(url("ramp/resume")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ramp(&app, "checkout").await["state"], "running");

    // A kill pauses the ramp; it stays paused after the unkill.
    app.client.post(url("kill")).send().await.expect("sent");
    let status = ramp(&app, "checkout").await;
    assert_eq!((status["state"].clone(), status["reason"].clone()), (json!("paused"), json!("killed")));
    app.client.post(url("unkill")).send().await.expect("sent");
    assert_eq!(ramp(&app, "checkout").await["state"], "paused");

    let r = app.client.post(url("ramp/abort")).json(&json!({"reason": "not today"})).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!((body["allocation"]["v2"].clone(), body["ramp"]["state"].clone()), (json!(0.0), json!("aborted")));

    let r = app.client.post(url("promote")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["versions"], json!(["v2", "v1"]));
    assert_eq!(body["allocation"], json!({}));
    let d = app.decision("production", "checkout", json!({"targetingKey": "u"})).await;
    assert_eq!(d["version"], "v2", "the promoted version is the baseline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_far_over_max_error_rate_is_rolled_back_before_min_samples() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let plan = json!({
        "candidate": "v2",
        "steps": [{"percent": 5, "hold": "1h"}, {"percent": 100}],
        "guard": {"max_error_rate": 0.05, "min_samples": 500, "confidence": 0.99}
    });
    assert_eq!(start_ramp(&app, "checkout", plan).await.status(), StatusCode::CREATED);
    // Report once the step's window has begun (outcomes before it are not the step's).
    let started = ramp(&app, "checkout").await["step_started_ms"].as_u64().expect("step_started_ms");
    wait_until_ms(window_start_ms(started)).await;
    let sdk = client_with(&token("sdk", "production", "eval report"));
    let bad = json!([{"release": "checkout", "version": "v2", "ok": 30, "error": 70}]);
    let r = sdk.post(app.env_url("production", "/events")).json(&bad).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    assert!(state_becomes(&app, "checkout", "rolled_back").await, "70 errors in 100 against 5 % is enough evidence");
    let status = ramp(&app, "checkout").await;
    assert_eq!((status["step"].clone(), status["percent"].clone()), (json!(0), json!(0.0)));
    assert_eq!(status["reason"], "guard: candidate error rate above max_error_rate");
    let figures = &status["guard_figures"];
    assert_eq!((figures["candidate_samples"].clone(), figures["candidate_errors"].clone()), (json!(100), json!(70)));
    assert_eq!(figures["baseline_samples"], 0, "no baseline sample was needed");
    let entries = audit_actions(&app, "checkout").await;
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().expect("a")).collect();
    assert_eq!(actions, vec!["create", "ramp-start", "ramp-rollback"], "never extended or paused first");
    let reason = entries[2]["reason"].as_str().expect("reason");
    assert!(reason.contains("ceiling 0.05"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_restarted_after_a_rollback_does_not_count_the_earlier_attempts_failures() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let plan = json!({
        "candidate": "v2",
        "steps": [{"percent": 5, "hold": "1h"}, {"percent": 100}],
        "guard": {"max_error_rate": 0.05, "min_samples": 500, "confidence": 0.99}
    });
    assert_eq!(start_ramp(&app, "checkout", plan.clone()).await.status(), StatusCode::CREATED);
    let started = ramp(&app, "checkout").await["step_started_ms"].as_u64().expect("step_started_ms");
    wait_until_ms(window_start_ms(started)).await;
    let sdk = client_with(&token("sdk", "production", "eval report"));
    let bad = json!([{"release": "checkout", "version": "v2", "ok": 30, "error": 70}]);
    let r = sdk.post(app.env_url("production", "/events")).json(&bad).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(state_becomes(&app, "checkout", "rolled_back").await);

    // Restarted at once: same minute (almost surely) and perhaps the same bucket as the
    // failures, all of which were reported before the new step began.
    assert_eq!(start_ramp(&app, "checkout", plan).await.status(), StatusCode::CREATED);
    let status = ramp(&app, "checkout").await;
    let restarted = status["step_started_ms"].as_u64().expect("step_started_ms");
    assert!(restarted > started);
    let live = &status["live"];
    assert_eq!((live["candidate_samples"].clone(), live["verdict"].clone()), (json!(0), json!("insufficient_data")));
    // The driver ticks every 20 ms; give it a few dozen ticks to (wrongly) act on them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ramp(&app, "checkout").await["state"], "running", "not rolled back over the earlier failures");
    let actions: Vec<String> =
        audit_actions(&app, "checkout").await.iter().map(|e| e["action"].as_str().expect("a").to_owned()).collect();
    assert_eq!(actions, vec!["create", "ramp-start", "ramp-rollback", "ramp-start"]);
}

#[tokio::test]
async fn invalid_plans_are_refused_with_the_field_at_fault() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    for (body, field) in [
        (json!({"candidate": "v9", "steps": [{"percent": 5}]}), "candidate"),
        (json!({"candidate": "v1", "steps": [{"percent": 5}]}), "candidate"),
        (json!({"candidate": "v2", "steps": [{"percent": 5, "hold": "1m"}, {"percent": 2}]}), "steps[1].percent"),
        (json!({"candidate": "v2", "steps": [{"percent": 5}, {"percent": 10}]}), "steps[0].hold"),
        (json!({"candidate": "v2", "steps": [{"percent": 5, "hold": "soon"}, {"percent": 10}]}), "steps[0].hold"),
        (json!({"candidate": "v2", "steps": [{"percent": 5}], "guard": {"confidence": 2}}), "guard.confidence"),
    ] {
        let r = start_ramp(&app, "checkout", body).await;
        let message = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
        assert!(message.contains(field), "{message} should name {field}");
    }
    let r = start_ramp(&app, "ghost", json!({"candidate": "v2", "steps": [{"percent": 5}]})).await;
    assert_error(r, StatusCode::NOT_FOUND, "release_not_found").await;
}

/// Collects webhook deliveries whose signature verifies.
async fn receiver(secret: &'static str, hang: bool) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let sink = Arc::clone(&received);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let server = HttpServer::new(move || {
        let sink = Arc::clone(&sink);
        App::new().route(
            "/hook",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let sink = Arc::clone(&sink);
                async move {
                    if hang {
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                    let signature = req.headers().get("x-cohort-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                    if signature == cohort::webhooks::sign(secret.as_bytes(), &body) {
                        let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let kind = event["event"].as_str().unwrap_or_default().to_owned();
                        sink.lock().expect("lock").push((kind, event));
                        HttpResponse::Ok().finish()
                    } else {
                        HttpResponse::Unauthorized().finish()
                    }
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_every_transition_signed_and_a_hanging_receiver_delays_nothing() {
    let (good_url, received) = receiver("hook-secret", false).await;
    let (hang_url, _) = receiver("hook-secret", true).await;
    let app = spawn_app_with(Backend::Embedded, move |s| {
        s.webhooks = vec![
            WebhookSettings { env: "*".into(), url: hang_url.clone(), secret: Secret::new("hook-secret") },
            WebhookSettings { env: "production".into(), url: good_url.clone(), secret: Secret::new("hook-secret") },
            WebhookSettings { env: "staging".into(), url: good_url.clone(), secret: Secret::new("other") },
        ];
    })
    .await;
    app.given_release("production", "checkout", 0.0).await;
    let _traffic = traffic(&app, "production", "checkout", 200, 1, 1);
    assert_eq!(start_ramp(&app, "checkout", walk()).await.status(), StatusCode::CREATED);
    assert!(state_becomes(&app, "checkout", "completed").await, "the hanging receiver does not hold the ramp");
    let kinds = || received.lock().expect("lock").iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert!(
        eventually(DEADLINE, || async { kinds().len() == 3 }).await,
        "every transition delivered once: {:?}",
        kinds()
    );
    assert_eq!(kinds(), vec!["started", "advanced", "completed"]);
    let events = received.lock().expect("lock").clone();
    assert_eq!(events[2].1["release"], "checkout");
    assert_eq!(events[2].1["actor"], "cohort:ramp");
    assert_eq!(events[2].1["ramp"]["state"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_redis_apply_every_step_exactly_once_when_the_driver_dies() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(spawn_app(Backend::Redis { server: &redis, prefix: &prefix }).await);
    }
    apps[0].given_release("production", "checkout", 0.0).await;
    let _traffic = traffic(&apps[1], "production", "checkout", 200, 1, 1);
    let plan = json!({
        "candidate": "v2",
        "steps": [{"percent": 1, "hold": "12s"}, {"percent": 5, "hold": "12s"}, {"percent": 100}],
        "guard": {"min_samples": 200}
    });
    assert_eq!(start_ramp(&apps[0], "checkout", plan).await.status(), StatusCode::CREATED);
    // Wait for the first advance, then kill whichever instance holds the lease.
    assert!(
        eventually(DEADLINE, || async { ramp_or_null(&apps[2], "checkout").await["step"].as_u64() >= Some(1) }).await
    );
    let mut conn = redis.connection();
    let holder: String = redis::cmd("GET").arg(format!("{prefix}:lease:ramp-driver")).query(&mut conn).expect("lease");
    let index = apps.iter().position(|a| a.state.instance_id == holder).expect("a test instance drives");
    let driver = apps.remove(index);
    driver.kill().await;

    let survivor = &apps[0];
    assert!(state_becomes(survivor, "checkout", "completed").await, "another instance took over");
    let new_holder: String =
        redis::cmd("GET").arg(format!("{prefix}:lease:ramp-driver")).query(&mut conn).expect("lease");
    assert_ne!(new_holder, holder);
    let entries = audit_actions(survivor, "checkout").await;
    let steps: Vec<u64> = entries
        .iter()
        .filter(|e| e["action"] == "ramp-advance")
        .map(|e| e["after"]["ramp"]["step"].as_u64().expect("step"))
        .collect();
    assert_eq!(steps, vec![1, 2], "every step applied exactly once across the hand-over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramps_are_driven_from_the_command_line_and_show_in_metrics() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let cohort =
        |args: &'static [&'static str]| run_cohort(&app, token("release-manager", "production", "write"), args);
    let o = cohort(&["ramp", "start", "checkout", "--candidate", "v2", "--steps", "2:1h,10:1h,100"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("running at step 0"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = cohort(&["ramp", "status", "checkout"]).await;
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0));
    assert!(
        table.contains("is running") && table.contains("▶") && table.contains("guard: insufficient_data"),
        "{table}"
    );
    let o = cohort(&["ramp", "start", "checkout", "--candidate", "v2", "--steps", "1,5"]).await;
    assert_eq!(o.status.code(), Some(2), "a hold is missing: usage error");
    let o = cohort(&["ramp", "pause", "checkout", "--reason", "looking"]).await;
    assert_eq!(o.status.code(), Some(0));
    let o = cohort(&["ramp", "pause", "checkout"]).await;
    assert_eq!(o.status.code(), Some(4), "pausing a paused ramp conflicts");

    app.decision("production", "checkout", json!({"targetingKey": "u"})).await;
    let r = reqwest::Client::new().get(app.url("/metrics")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK, "metrics need no token");
    let text = r.text().await.expect("text");
    assert!(
        text.contains(r#"cohort_ramp_state{environment="production",release="checkout",state="paused"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"cohort_ramp_candidate_buckets{environment="production",release="checkout"} 2000"#));
    assert!(text.contains(r#"route="/v1/envs/{env}/evaluate""#), "latency by route pattern");
    assert!(
        text.contains(
            r#"cohort_evaluations_total{environment="production",reason="SPLIT",release="_all",version="_all"}"#
        ),
        "{text}"
    );
}

/// A ramp of v2 running at 10 % on `checkout`, a three-version release (v1, v2, v3), so
/// another candidate exists to be promoted; its hold is an hour, so only the test moves it.
async fn ramping_at_ten_percent(app: &TestApp) {
    let r = app.create_release("production", json!({"key": "checkout", "versions": ["v1", "v2", "v3"]})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let plan = json!({"candidate": "v2", "steps": [{"percent": 10, "hold": "1h"}, {"percent": 30}]});
    assert_eq!(start_ramp(app, "checkout", plan).await.status(), StatusCode::CREATED);
}

async fn put_release(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    let revision = app.get_release("production", key).await.json::<Value>().await.expect("json")["revision"].clone();
    app.client
        .put(app.env_url("production", &format!("/releases/{key}")))
        .header("If-Match", format!("\"{revision}\""))
        .json(&body)
        .send()
        .await
        .expect("sent")
}

async fn v2_percent(app: &TestApp) -> Value {
    app.get_release("production", "checkout").await.json::<Value>().await.expect("json")["allocation"]["v2"].clone()
}

#[tokio::test]
async fn a_put_without_allocation_keeps_the_ramps_share_and_may_change_everything_else() {
    let app = spawn_app(Backend::Embedded).await;
    ramping_at_ten_percent(&app).await;
    let r = put_release(&app, "checkout", json!({"versions": ["v1", "v2", "v3"], "description": "new copy"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["allocation"], json!({"v2": 10.0}), "an omitted allocation is kept, never reset");
    assert_eq!(body["description"], "new copy");
    assert_eq!(body["ramp"]["state"], "running");
    let rules = json!([{"when": [{"attr": "country", "op": "in", "values": ["NZ"]}], "serve": "v3"}]);
    let r = put_release(
        &app,
        "checkout",
        json!({"versions": ["v1", "v2", "v3"], "allocation": {"v2": 10}, "rules": rules, "overrides": {"u1": "v2"}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "repeating the ramp's share while changing rules is fine");
    assert_eq!(v2_percent(&app).await, 10.0);
}

#[tokio::test]
async fn writes_that_would_move_a_ramped_candidate_are_refused_until_the_ramp_is_aborted() {
    let app = spawn_app(Backend::Embedded).await;
    ramping_at_ten_percent(&app).await;
    let url = |p: &str| app.env_url("production", &format!("/releases/checkout{p}"));
    let jump = json!({"versions": ["v1", "v2", "v3"], "allocation": {"v2": 20}});
    let drop_candidate = json!({"versions": ["v1", "v3"], "allocation": {}});

    let message =
        assert_error(put_release(&app, "checkout", jump.clone()).await, StatusCode::CONFLICT, "ramp_active").await;
    assert!(
        message.contains("cohort ramp pause checkout") && message.contains("cohort ramp abort checkout"),
        "{message}"
    );
    assert_error(put_release(&app, "checkout", drop_candidate.clone()).await, StatusCode::CONFLICT, "ramp_active")
        .await;
    let zero = json!({"versions": ["v1", "v2", "v3"], "allocation": {}});
    assert_error(put_release(&app, "checkout", zero).await, StatusCode::CONFLICT, "ramp_active").await;
    let r = app.set_percent("production", "checkout", json!({"v2": 20}), None).await;
    assert_error(r, StatusCode::CONFLICT, "ramp_active").await;
    let r = app.post(&url("/promote"), &json!({"candidate": "v3"})).await;
    assert_error(r, StatusCode::CONFLICT, "ramp_active").await;
    let r = app.client.delete(url("")).send().await.expect("sent");
    assert_error(r, StatusCode::CONFLICT, "ramp_active").await;
    // A paused ramp still owns the allocation.
    assert_eq!(app.post(&url("/ramp/pause"), &json!({})).await.status(), StatusCode::OK);
    let r = app.set_percent("production", "checkout", json!({"v2": 20}), None).await;
    assert_error(r, StatusCode::CONFLICT, "ramp_active").await;
    assert_eq!(v2_percent(&app).await, 10.0, "nothing moved the candidate");
    let actions: Vec<String> =
        audit_actions(&app, "checkout").await.iter().map(|e| e["action"].as_str().expect("a").to_owned()).collect();
    assert_eq!(actions, vec!["create", "ramp-start", "ramp-pause"], "refused writes leave no trace");

    assert_eq!(app.post(&url("/ramp/abort"), &json!({})).await.status(), StatusCode::OK);
    assert_eq!(app.set_percent("production", "checkout", json!({"v2": 20}), None).await.status(), StatusCode::OK);
    assert_eq!(put_release(&app, "checkout", jump).await.status(), StatusCode::OK);
    assert_eq!(put_release(&app, "checkout", drop_candidate).await.status(), StatusCode::OK);
    let r = app.post(&url("/promote"), &json!({"candidate": "v3"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.client.delete(url("")).send().await.expect("sent").status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_shows_why_a_ramped_release_cannot_be_promoted_or_deleted() {
    let app = spawn_app(Backend::Embedded).await;
    ramping_at_ten_percent(&app).await;
    let cohort =
        |args: &'static [&'static str]| run_cohort(&app, token("release-manager", "production", "write"), args);
    for args in [&["ramp", "promote", "checkout", "--candidate", "v3"][..], &["release", "delete", "checkout"][..]] {
        let o = cohort(args).await;
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(stderr.contains("ramp_active") && stderr.contains("cohort ramp abort checkout"), "{stderr}");
    }
    assert_eq!(ramp(&app, "checkout").await["state"], "running", "the ramp was not discarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_pauses_running_ramps_and_unkill_all_does_not_resume_them() {
    let (hook_url, received) = receiver("hook-secret", false).await;
    // The driver ticks once at start-up and then not for an hour: the pause must be the
    // kill-all's own (the driver's freeze of a ramp left running has its own test).
    let app = spawn_app_with(Backend::Embedded, move |s| {
        s.webhooks = vec![WebhookSettings {
            env: "production".into(),
            url: hook_url.clone(),
            secret: Secret::new("hook-secret"),
        }];
        s.ramp.tick_ms = 3_600_000;
    })
    .await;
    app.given_release("production", "checkout", 0.0).await;
    let slow = json!({"candidate": "v2", "steps": [{"percent": 10, "hold": "1h"}, {"percent": 100}]});
    assert_eq!(start_ramp(&app, "checkout", slow).await.status(), StatusCode::CREATED);

    let oncall = client_with(&token("oncall", "production", "kill"));
    let r = oncall.post(app.env_url("production", "/kill-all")).json(&json!({"reason": "incident"})).send().await;
    assert_eq!(r.expect("sent").status(), StatusCode::OK);
    let status = ramp(&app, "checkout").await;
    assert_eq!((status["state"].clone(), status["reason"].clone()), (json!("paused"), json!("killed")));
    assert_eq!(status["percent"], 10.0);
    let pause = audit_actions(&app, "checkout").await.pop().expect("an entry");
    assert_eq!((pause["action"].clone(), pause["reason"].clone()), (json!("ramp-pause"), json!("killed")));
    assert_eq!(pause["actor"], "oncall");
    let kinds = || received.lock().expect("lock").iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert!(eventually(DEADLINE, || async { kinds().contains(&"killed".to_owned()) }).await, "{:?}", kinds());

    let r = app.post(&app.env_url("production", "/releases/checkout/ramp/resume"), &json!({})).await;
    assert_error(r, StatusCode::CONFLICT, "conflict").await;
    let r = oncall.post(app.env_url("production", "/unkill-all")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let status = ramp(&app, "checkout").await;
    assert_eq!((status["state"].clone(), status["step"].clone()), (json!("paused"), json!(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_pauses_a_ramp_left_running_under_kill_all_and_never_advances_it() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let _traffic = traffic(&app, "production", "checkout", 200, 1, 1);
    let plan = json!({
        "candidate": "v2",
        "steps": [{"percent": 1, "hold": "2s"}, {"percent": 100}],
        "guard": {"min_samples": 200}
    });
    assert_eq!(start_ramp(&app, "checkout", plan).await.status(), StatusCode::CREATED);
    // A kill-all whose ramp pauses never happened: written by another instance, or by
    // one that crashed right after the switch. Only the driver can freeze the ramp.
    let env = EnvName::parse("production").expect("env");
    let meta = WriteMeta::now("elsewhere", Action::KillAll, Some("incident".into()));
    let store = app.state.releases.store();
    store.write(&env, Write::KillAll { on: true, reason: Some("incident".into()) }, &meta).await.expect("written");

    assert!(state_becomes(&app, "checkout", "paused").await, "the driver freezes the ramp");
    let status = ramp(&app, "checkout").await;
    assert_eq!((status["reason"].clone(), status["step"].clone()), (json!("killed"), json!(0)));
    assert_eq!(status["percent"], 1.0, "the candidate never went past the first step");
    let entries = audit_actions(&app, "checkout").await;
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().expect("action")).collect();
    assert_eq!(actions, vec!["create", "ramp-start", "ramp-pause"]);
    assert_eq!((entries[2]["actor"].clone(), entries[2]["reason"].clone()), (json!("cohort:ramp"), json!("killed")));
}
