//! `cohort export` and `cohort apply` against real servers: a backup restored into an
//! empty store answers exactly as the original, and apply is a careful declarative tool
//! (plan first, idempotent, ramps and kills respected, conflicts caught).

use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with, token};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `cohort ARGS` against `url` with an admin token for every environment and none of
/// this process's `COHORT_…` variables (so no `COHORT_ENV`: every environment).
async fn cohort_at(url: &str, args: &[&str]) -> Output {
    let (url, args) = (url.to_owned(), args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().to_ascii_uppercase().starts_with("COHORT_") {
                command.env_remove(name);
            }
        }
        command
            .args(&args)
            .env("COHORT_URL", url)
            .env("COHORT_TOKEN", token("config-as-code", "*", "admin"))
            .output()
            .expect("cohort runs")
    })
    .await
    .expect("joined")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn export(app: &TestApp) -> String {
    let o = cohort_at(&app.address, &["export"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    stdout(&o)
}

async fn apply(url: &str, file: &Path, flags: &[&str]) -> Output {
    let path = file.to_str().expect("utf-8 path");
    let mut args = vec!["apply", "-f", path];
    args.extend_from_slice(flags);
    cohort_at(url, &args).await
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path
}

async fn created(app: &TestApp, env: &str, body: Value) {
    let r = app.create_release(env, body.clone()).await;
    assert_eq!(r.status(), 201, "{body}: {}", r.text().await.unwrap_or_default());
}

async fn release(app: &TestApp, env: &str, key: &str) -> Value {
    app.get_json(app.env_url(env, &format!("/releases/{key}"))).await
}

/// A varied environment: typed values of every kind, rules, overrides, an audience, a
/// non-default unit and salt, three-decimal shares, a killed release, a second and a
/// third environment.
async fn varied(app: &TestApp) {
    let nz = json!([{"when": [{"attr": "country", "op": "in", "values": ["NZ"]}], "serve": "v3"}]);
    created(
        app,
        "production",
        json!({"key": "checkout", "versions": ["v1", "v2", "v3"],
        "allocation": {"v2": 10, "v3": 2.5}, "rules": nz, "overrides": {"user-7": "v2", "user-8": "v3"},
        "audience": [{"attr": "plan", "op": "in", "values": ["pro", "team"]}], "description": "new checkout"}),
    )
    .await;
    created(
        app,
        "production",
        json!({"key": "dark-mode", "versions": ["off", "on"], "unit": "tenant_id",
        "values": {"off": false, "on": true}, "allocation": {"on": 50}}),
    )
    .await;
    let modern = json!([{"when": [{"attr": "app_version", "op": "semver_gte", "values": ["2.0.0"]}], "serve": "b"}]);
    created(
        app,
        "production",
        json!({"key": "pricing", "versions": ["a", "b"], "salt": "pricing-2026",
        "values": {"a": 9.99, "b": 12.5}, "allocation": {"b": 33.333}, "rules": modern}),
    )
    .await;
    created(
        app,
        "production",
        json!({"key": "banner", "versions": ["old", "new"],
        "values": {"old": "blue", "new": "green"}, "allocation": {"new": 50}}),
    )
    .await;
    let r = app.post(&app.env_url("production", "/releases/banner/kill"), &json!({"reason": "bad colours"})).await;
    assert_eq!(r.status(), 200);
    created(
        app,
        "production",
        json!({"key": "layout", "versions": ["v1", "v2"],
        "values": {"v1": {"columns": 1}, "v2": {"columns": 2, "dense": true}}, "allocation": {"v2": 99.999}}),
    )
    .await;
    created(app, "staging", json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 100}})).await;
    app.given_environment("eu").await;
    created(app, "eu", json!({"key": "search", "versions": ["v1", "v2"], "allocation": {"v2": 1}})).await;
}

fn context(i: usize) -> Value {
    let country = ["NZ", "DE", "US", "FR"][i % 4];
    let plan = ["free", "pro", "team"][i % 3];
    let app_version = ["1.9.3", "2.0.0", "2.4.1"][(i / 3) % 3];
    let mut context = json!({"country": country, "plan": plan, "app_version": app_version});
    // Some units without a targeting key or tenant, to reach the ERROR and DEFAULT paths.
    if !i.is_multiple_of(50) {
        context["targetingKey"] = json!(format!("user-{i}"));
    }
    if !i.is_multiple_of(7) {
        context["tenant_id"] = json!(format!("tenant-{}", i % 400));
    }
    context
}

/// Every release's decision for 10,000 units.
async fn decisions(app: &TestApp) -> Vec<Value> {
    futures_util::stream::iter(0..10_000)
        .map(|i| async move {
            let r = app.evaluate("production", context(i), None).await;
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.expect("json");
            body["results"].clone()
        })
        .buffered(8)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_applied_to_an_empty_store_answers_10000_units_exactly_as_the_original() {
    // 20,000 evaluations from one loopback address: above the default per-address limit.
    let unlimited = |s: &mut cohort::config::Settings| s.rate_limit.evaluate_per_address = 0;
    let original = spawn_app_with(Backend::Embedded, unlimited).await;
    varied(&original).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = export(&original).await;
    let file: Value = serde_json::from_str(&text).expect("export is JSON");
    assert_eq!(file["format"], "cohort-config");
    assert_eq!(file["version"], 1);
    let envs: Vec<&String> = file["environments"].as_object().expect("environments").keys().collect();
    assert_eq!(envs, ["eu", "production", "staging"], "every environment the token sees");
    let banner = &file["environments"]["production"]["releases"]["banner"];
    assert_eq!(banner["killed"], true);
    assert_eq!(banner["kill_reason"], "bad colours");
    assert_eq!(file["environments"]["production"]["releases"]["pricing"]["allocation"]["b"], 33.333);
    for liveness in ["revision", "persisted", "ramp\":{\"state", "token", "secret"] {
        assert!(!text.contains(liveness), "{liveness} in {text}");
    }
    let path = write_file(dir.path(), "cohort.json", &text);

    let restored = spawn_app_with(Backend::Embedded, unlimited).await;
    let o = apply(&restored.address, &path, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let plan = stdout(&o);
    assert!(plan.contains("environment eu:\n  + create the environment"), "{plan}");
    assert!(plan.contains("  + create checkout"), "{plan}");
    assert!(plan.contains("allocation.v3: 2.5%"), "{plan}");
    assert!(plan.contains("killed (bad colours)"), "{plan}");
    let banner = release(&restored, "production", "banner").await;
    assert_eq!(banner["killed"], true);
    assert_eq!(banner["kill_reason"], "bad colours");
    assert_eq!(banner["allocation"]["new"], 50.0);

    assert_eq!(export(&restored).await, text, "the restored store exports byte for byte the same file");
    let (before, after) = (decisions(&original).await, decisions(&restored).await);
    assert_eq!(before.len(), 10_000);
    let differing = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "units answered differently after the restore");
    // The decisions cover every path, so the comparison means something.
    let all = serde_json::to_string(&before).expect("json");
    for reason in ["SPLIT", "TARGETING_MATCH", "DISABLED", "DEFAULT", "ERROR"] {
        assert!(all.contains(reason), "no {reason} among the decisions");
    }

    let revision = restored.served_revision("production").await;
    let o = apply(&restored.address, &path, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("no changes\n"), "{}", stdout(&o));
    assert_eq!(restored.served_revision("production").await, revision, "a second apply writes nothing");
    let audit = restored.get_json(restored.env_url("production", "/audit?limit=100")).await;
    let actors = serde_json::to_string(&audit).expect("json");
    assert!(actors.contains("config-as-code"), "each write is audited as the token's subject: {actors}");

    original.stop().await;
    restored.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_plan_and_writes_nothing() {
    let original = spawn_app(Backend::Embedded).await;
    varied(&original).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "cohort.json", &export(&original).await);

    let empty = spawn_app(Backend::Embedded).await;
    let revision = empty.served_revision("production").await;
    let o = apply(&empty.address, &path, &["--dry-run"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("  + create layout"), "{}", stdout(&o));
    assert!(stdout(&o).contains("dry run: "), "{}", stdout(&o));
    let list = empty.get_json(empty.env_url("production", "/releases")).await;
    assert_eq!(list["releases"], json!([]));
    assert_eq!(empty.served_revision("production").await, revision);
    let envs = empty.get_json(empty.url("/v1/envs")).await;
    assert!(!envs.to_string().contains("\"eu\""), "no environment created: {envs}");

    original.stop().await;
    empty.stop().await;
}

/// The exported file of `app`, as JSON to edit.
async fn exported(app: &TestApp) -> Value {
    serde_json::from_str(&export(app).await).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_leaves_ramped_releases_alone_unless_told_and_prunes_only_when_asked() {
    let app = spawn_app(Backend::Embedded).await;
    for key in ["ramped", "plain", "extra"] {
        created(&app, "production", json!({"key": key, "versions": ["v1", "v2"]})).await;
    }
    let steps = json!([{"percent": 1, "hold": "1h"}, {"percent": 100}]);
    let r = app
        .post(&app.env_url("production", "/releases/ramped/ramp"), &json!({"candidate": "v2", "steps": steps}))
        .await;
    assert_eq!(r.status(), 201);

    let mut file = exported(&app).await;
    let releases = &mut file["environments"]["production"]["releases"];
    assert_eq!(releases["ramped"]["ramp"]["candidate"], "v2", "the ramp is exported as a plan");
    assert_eq!(releases["ramped"]["ramp"]["steps"][0]["hold"], "1h");
    releases["ramped"]["description"] = json!("edited");
    releases["plain"]["allocation"] = json!({"v2": 5});
    releases.as_object_mut().expect("object").remove("extra");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "cohort.json", &file.to_string());

    let o = apply(&app.address, &path, &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("production/ramped has a running or paused ramp"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--include-ramped"), "{}", stderr(&o));
    assert!(stdout(&o).contains("allocation.v2: 0% → 5%"), "the plan is shown: {}", stdout(&o));
    assert_eq!(release(&app, "production", "plain").await["allocation"], json!({}), "nothing was written");

    let o = apply(&app.address, &path, &["--include-ramped"]).await;
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("release extra is not in the file: left alone"), "{}", stdout(&o));
    let ramped = release(&app, "production", "ramped").await;
    assert_eq!(ramped["description"], "edited");
    assert_eq!(ramped["ramp"]["state"], "running", "the ramp goes on");
    assert_eq!(ramped["allocation"]["v2"], 1.0);
    assert_eq!(release(&app, "production", "plain").await["allocation"]["v2"], 5.0);
    let r = app.get_release("production", "extra").await;
    assert_eq!(r.status(), 200, "not deleted without --prune");

    let o = apply(&app.address, &path, &["--prune"]).await;
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("  - delete extra"), "{}", stdout(&o));
    let r = app.get_release("production", "extra").await;
    assert_eq!(r.status(), 404, "pruned");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_is_never_undone_by_apply_unless_allowed() {
    let app = spawn_app(Backend::Embedded).await;
    created(&app, "production", json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 10}})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "cohort.json", &export(&app).await);
    let r = app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({"reason": "incident"})).await;
    assert_eq!(r.status(), 200);

    let o = apply(&app.address, &path, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("it stays killed"), "{}", stdout(&o));
    assert!(stdout(&o).ends_with("no changes\n"), "{}", stdout(&o));
    assert_eq!(release(&app, "production", "checkout").await["killed"], true);

    let o = apply(&app.address, &path, &["--allow-unkill"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(release(&app, "production", "checkout").await["killed"], false);
    app.stop().await;
}

/// A loopback HTTP proxy in front of `upstream` that, on the first PUT or DELETE it
/// sees, first changes release `key` itself: a colleague's write landing between
/// apply's plan and its write.
struct InterferingProxy {
    upstream: String,
    key: String,
    fired: AtomicBool,
    http: reqwest::Client,
}

async fn forward(
    req: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
    proxy: actix_web::web::Data<Arc<InterferingProxy>>,
) -> actix_web::HttpResponse {
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("method");
    if matches!(method, reqwest::Method::PUT | reqwest::Method::DELETE) && !proxy.fired.swap(true, Ordering::SeqCst) {
        let url = format!("{}/v1/envs/production/releases/{}/allocation", proxy.upstream, proxy.key);
        let r = proxy
            .http
            .post(url)
            .bearer_auth(token("colleague", "production", "write"))
            .json(&json!({"percent": {"v2": 50}}))
            .send()
            .await
            .expect("colleague's write");
        assert_eq!(r.status(), 200);
    }
    let mut upstream = proxy.http.request(method, format!("{}{}", proxy.upstream, req.uri())).body(body.to_vec());
    for (name, value) in req.headers() {
        if matches!(name.as_str(), "authorization" | "if-match" | "content-type" | "accept") {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = upstream.send().await.expect("upstream answers");
    let mut response = actix_web::HttpResponse::build(
        actix_web::http::StatusCode::from_u16(answer.status().as_u16()).expect("status"),
    );
    for (name, value) in answer.headers() {
        if matches!(name.as_str(), "etag" | "content-type") {
            response.insert_header((
                name.as_str(),
                actix_web::http::header::HeaderValue::from_bytes(value.as_bytes()).expect("header"),
            ));
        }
    }
    response.body(answer.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_between_plan_and_write_stops_apply_with_a_conflict() {
    let app = spawn_app(Backend::Embedded).await;
    created(&app, "production", json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 10}})).await;
    let mut file = exported(&app).await;
    file["environments"]["production"]["releases"]["checkout"]["description"] = json!("from git");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "cohort.json", &file.to_string());

    let proxy = Arc::new(InterferingProxy {
        upstream: app.address.clone(),
        key: "checkout".into(),
        fired: AtomicBool::new(false),
        http: reqwest::Client::new(),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let data = actix_web::web::Data::new(proxy);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().app_data(data.clone()).default_service(actix_web::web::to(forward))
    })
    .workers(1)
    .listen(listener)
    .expect("listens")
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);

    let o = apply(&address, &path, &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("production/checkout changed since the plan was made"), "{}", stderr(&o));
    let checkout = release(&app, "production", "checkout").await;
    assert_eq!(checkout["description"], "", "apply's write did not land");
    assert_eq!(checkout["allocation"]["v2"], 50.0, "the colleague's write stands");

    handle.stop(false).await;
    let _ = task.await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_the_file_is_applied_before_the_definition_and_export_can_take_one_environment() {
    let app = spawn_app(Backend::Embedded).await;
    created(&app, "production", json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 10}})).await;
    created(&app, "staging", json!({"key": "search", "versions": ["v1", "v2"]})).await;

    let o = cohort_at(&app.address, &["export", "--env", "production"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut file: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let envs: Vec<&String> = file["environments"].as_object().expect("environments").keys().collect();
    assert_eq!(envs, ["production"], "--env exports one environment");

    let checkout = &mut file["environments"]["production"]["releases"]["checkout"];
    checkout["killed"] = json!(true);
    checkout["kill_reason"] = json!("declared in git");
    checkout["allocation"] = json!({"v2": 20});
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "cohort.json", &file.to_string());

    let o = apply(&app.address, &path, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("      kill (declared in git)\n      allocation.v2: 10% → 20%"), "{out}");
    let (killed, updated) = (out.find("  killed production/checkout"), out.find("  updated production/checkout"));
    assert!(killed.is_some() && killed < updated, "the kill is written first: {out}");
    let checkout = release(&app, "production", "checkout").await;
    assert_eq!(checkout["killed"], true);
    assert_eq!(checkout["kill_reason"], "declared in git");
    assert_eq!(checkout["allocation"]["v2"], 20.0);

    let o = apply(&app.address, &path, &[]).await;
    assert!(stdout(&o).ends_with("no changes\n"), "{}", stdout(&o));
    app.stop().await;
}
