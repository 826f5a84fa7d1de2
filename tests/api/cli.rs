//! The `cohort` binary's client commands against a real server: output, `--json`, and
//! exit codes scripts can trust.

use crate::helpers::{Backend, TestApp, run_cohort, spawn_app};
use serde_json::{Value, json};
use std::process::Output;

async fn cohort(app: &TestApp, args: &[&str]) -> Output {
    run_cohort(app, crate::helpers::token("cli-user", "production", "admin"), args).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_created_ramped_and_killed_from_the_command_line() {
    let app = spawn_app(Backend::Embedded).await;
    let o = cohort(&app, &["release", "create", "checkout", "--versions", "v1,v2", "--percent", "v2=5"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("checkout"));

    let o = cohort(&app, &["release", "set-percent", "checkout", "v2=10"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("5% → 10%"), "{}", stdout(&o));

    let o = cohort(&app, &["release", "list"]).await;
    assert_eq!(o.status.code(), Some(0));
    let table = stdout(&o);
    assert!(table.contains("checkout") && table.contains("v2 10%"), "{table}");

    let o = cohort(&app, &["release", "kill", "checkout", "--reason", "5xx spike"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("everyone gets v1"), "{}", stdout(&o));
    let d = app.decision("production", "checkout", json!({"targetingKey": "u"})).await;
    assert_eq!(d["reason"], "DISABLED");

    let o = cohort(&app, &["release", "get", "checkout", "--json"]).await;
    assert_eq!(o.status.code(), Some(0));
    let body: Value = serde_json::from_str(&stdout(&o)).expect("--json prints JSON");
    assert_eq!(body["killed"], true);
    assert_eq!(body["kill_reason"], "5xx spike");

    let o = cohort(&app, &["kill-all", "--reason", "incident 42"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("KILL-ALL ON"), "{}", stdout(&o));
    let o = cohort(&app, &["unkill-all"]).await;
    assert_eq!(o.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_say_what_went_wrong() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 1.0).await;

    let o = cohort(&app, &["release", "get", "ghost"]).await;
    assert_eq!(o.status.code(), Some(3), "not found");
    assert!(stderr(&o).contains("release_not_found"), "{}", stderr(&o));

    let o = cohort(&app, &["release", "create", "checkout", "--versions", "v1,v2"]).await;
    assert_eq!(o.status.code(), Some(4), "conflict");

    let o = cohort(&app, &["release", "set-percent", "checkout", "v2=10", "--if-match", "99"]).await;
    assert_eq!(o.status.code(), Some(4), "stale revision");

    let o = cohort(&app, &["release", "set-percent", "checkout", "v9=10"]).await;
    assert_eq!(o.status.code(), Some(1), "refused: {}", stderr(&o));
    assert!(stderr(&o).contains("v9"), "{}", stderr(&o));

    let o = cohort(&app, &["release", "set-percent", "checkout", "v2"]).await;
    assert_eq!(o.status.code(), Some(2), "usage");

    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["release", "list", "--url", "http://127.0.0.1:9"])
        .output()
        .expect("runs");
    assert_eq!(unreachable.status.code(), Some(5), "unreachable");
    assert!(stderr(&unreachable).contains("cannot reach"), "{}", stderr(&unreachable));
}
