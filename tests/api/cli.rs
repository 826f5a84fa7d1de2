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

/// `cohort` with none of this test process's `COHORT_…` variables (a developer's shell
/// may have some), so each test states the ones it means.
fn cohort_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().to_ascii_uppercase().starts_with("COHORT_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `command` to its end, off the test runtime; a `serve` that wrongly starts is
/// killed after a while rather than hanging the suite.
async fn run_to_exit(mut command: std::process::Command) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cohort runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().expect("waits").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let output = child.wait_with_output().expect("collected");
                panic!("cohort did not exit; it should have refused to start: {}", stderr(&output));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.wait_with_output().expect("collected")
    })
    .await
    .expect("joined")
}

#[tokio::test]
async fn serve_with_a_misspelt_key_in_the_config_file_exits_naming_it_and_the_nearest_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nprot = 9000\n").expect("write");
    let mut command = cohort_command();
    command.args(["serve", "--port", "0", "--config"]).arg(&file).arg("--data-dir").arg(dir.path().join("data"));
    // The client's variables are not configuration keys: they are not what is refused.
    command.env("COHORT_TOKEN", "a.b.c").env("COHORT_URL", "http://127.0.0.1:9").env("COHORT_ENV", "staging");
    let o = run_to_exit(command).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let message = stderr(&o);
    assert!(message.contains("`server.prot`") && message.contains("`server.port`"), "{message}");
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(!message.contains("COHORT_"), "only the file's mistake: {message}");
}

#[tokio::test]
async fn a_misspelt_cohort_variable_stops_the_binary_but_the_clients_variables_do_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a.b.c").expect("write");
    // `token mint` loads the settings like `serve` does, and exits.
    let mint = || {
        let mut command = cohort_command();
        command.args(["token", "mint", "--sub", "me", "--scope", "admin", "--data-dir"]).arg(dir.path());
        command
            .env("COHORT_TOKEN", "a.b.c")
            .env("COHORT_TOKEN_FILE", &token_file)
            .env("COHORT_URL", "http://127.0.0.1:9")
            .env("COHORT_ENV", "production")
            .env("COHORT_AUTH__HS256_SECRET", "0123456789abcdef0123456789abcdef");
        command
    };
    let o = run_to_exit(mint()).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let mut misspelt = mint();
    misspelt.env("COHORT_AUTH__ISUER", "https://id.example");
    let o = run_to_exit(misspelt).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let message = stderr(&o);
    assert!(message.contains("COHORT_AUTH__ISUER") && message.contains("COHORT_AUTH__ISSUER"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_data_directory_exits_naming_it_and_the_holders_pid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app(Backend::EmbeddedAt(dir.path())).await;
    let mut command = cohort_command();
    command.args(["serve", "--port", "0", "--data-dir"]).arg(dir.path());
    let o = run_to_exit(command).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let message = stderr(&o);
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
    assert!(message.contains(&format!("pid {}", std::process::id())), "the holder is this test process: {message}");

    // `token mint` reads the secret from the data directory without opening the store:
    // it works while a server holds the directory.
    let mut mint = cohort_command();
    mint.args(["token", "mint", "--sub", "me", "--scope", "admin", "--data-dir"]).arg(dir.path());
    let o = run_to_exit(mint).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    app.stop().await;
}
