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
    clean_command(env!("CARGO_BIN_EXE_cohort"))
}

/// `program` without this test process's `COHORT_…` variables.
fn clean_command(program: &str) -> std::process::Command {
    let mut command = std::process::Command::new(program);
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

/// Runs `cohort` like [`cohort`], with extra environment variables (`EDITOR`, …).
async fn cohort_with(app: &TestApp, vars: &[(&str, String)], args: &[&str]) -> Output {
    let mut command = cohort_command();
    command
        .args(args)
        .env("COHORT_URL", &app.address)
        .env("COHORT_ENV", "production")
        .env("COHORT_TOKEN", crate::helpers::token("cli-user", "production", "admin"));
    for (name, value) in vars {
        command.env(name, value);
    }
    tokio::task::spawn_blocking(move || command.output().expect("cohort runs")).await.expect("joined")
}

/// An executable `sh` script standing in for `$EDITOR` (it gets the file as `$1`).
fn editor_script(dir: &std::path::Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

/// The file `release edit` said it kept the text in (`…kept in /tmp/….json`).
fn kept_file(stderr: &str) -> std::path::PathBuf {
    let start = stderr.find("kept in ").expect("names the kept file") + "kept in ".len();
    std::path::PathBuf::from(stderr[start..].lines().next().expect("path").trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_list_and_status_show_one_step_numbering_and_a_release_without_a_ramp_says_so() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    app.given_release("production", "promo", 0.0).await;

    let o = cohort(&app, &["ramp", "list"]).await;
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "no active ramps in production\n".to_owned()));

    let o = cohort(&app, &["ramp", "start", "checkout", "--candidate", "v2", "--steps", "5:1h,25:1h,100"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("running at step 0 of 0–2"), "{}", stdout(&o));

    let o = cohort(&app, &["ramp", "list"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "a header and the one active ramp: {lines:?}");
    for cell in ["checkout", "v2", "running", "0 of 0–2", "5%", "in "] {
        assert!(lines[1].contains(cell), "{cell}: {lines:?}");
    }
    assert!(!lines[1].contains("promo"), "{lines:?}");

    let o = cohort(&app, &["ramp", "status", "checkout"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("step 0 of 0–2 at 5%"), "{}", stdout(&o));
    // The API says the same number.
    let status = app.get_json(app.env_url("production", "/releases/checkout/ramp")).await;
    assert_eq!(status["step"], 0);

    let o = cohort(&app, &["ramp", "status", "promo"]).await;
    assert_eq!(o.status.code(), Some(4), "a state, not a missing release: {}", stderr(&o));
    assert!(stderr(&o).contains("release `promo` has no ramp"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = cohort(&app, &["ramp", "status", "ghost"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_status_watch_prints_each_new_state_once_and_ends_with_the_ramp() {
    use std::io::BufRead as _;
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let o = cohort(&app, &["ramp", "start", "checkout", "--candidate", "v2", "--steps", "5:1h,100"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let mut command = cohort_command();
    command
        .args(["ramp", "status", "checkout", "--watch"])
        .env("COHORT_URL", &app.address)
        .env("COHORT_ENV", "production")
        .env("COHORT_TOKEN", crate::helpers::token("cli-user", "production", "admin"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("cohort runs");
    let child_stdout = child.stdout.take().expect("piped");
    // Reads until the first state is shown, then hands the rest of the stream back.
    let (first, reader) = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(child_stdout);
        let mut seen = String::new();
        while !seen.contains("is running") {
            let mut line = String::new();
            if reader.read_line(&mut line).expect("reads") == 0 {
                break;
            }
            seen.push_str(&line);
        }
        (seen, reader)
    })
    .await
    .expect("joined");
    assert!(first.contains("checkout: ramp of v2 is running — step 0 of 0–1"), "{first}");

    let o = cohort(&app, &["ramp", "abort", "checkout", "--reason", "enough"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let (rest, status) = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let mut rest = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("waits") {
                std::io::Read::read_to_string(&mut reader, &mut rest).expect("reads");
                return (rest, status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("--watch did not end with the ramp");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
    .await
    .expect("joined");
    assert!(status.success());
    let all = first + &rest;
    assert_eq!(all.matches("is running").count(), 1, "each state once when not a terminal: {all}");
    assert_eq!(all.matches("is aborted").count(), 1, "{all}");
    assert!(!all.contains('\u{1b}'), "no screen control codes into a pipe: {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_get_shows_audience_rules_overrides_and_the_ramp() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app
        .create_release(
            "production",
            json!({
                "key": "checkout", "versions": ["v1", "v2"], "description": "new checkout",
                "audience": [{"attr": "country", "op": "in", "values": ["de", "fr"]}],
                "rules": [{"when": [{"attr": "plan", "op": "eq", "values": ["beta"]}], "serve": "v2"}],
                "overrides": {"qa-1": "v2"},
            }),
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let o = cohort(&app, &["ramp", "start", "checkout", "--candidate", "v2", "--steps", "10:30m,100"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let o = cohort(&app, &["release", "get", "checkout"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    for line in [
        "audience     country in [de, fr]",
        "rules        1. when plan eq beta → v2",
        "overrides    qa-1 → v2",
        "ramp         v2 running, step 0 of 0–1 at 10%",
        "plan: 10% 30m → 100%",
        "next step check: in ",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_edit_writes_with_if_match_and_keeps_the_text_when_it_cannot() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app
        .create_release(
            "production",
            json!({"key": "checkout", "versions": ["v1", "v2", "v3"], "description": "old", "allocation": {"v2": 1}}),
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let dir = tempfile::tempdir().expect("temp dir");
    let revision = || async { app.get_json(app.env_url("production", "/releases/checkout")).await["revision"].clone() };
    let at_start = revision().await;

    // Saving the file untouched writes nothing.
    let keep = editor_script(dir.path(), "keep.sh", "true");
    let o = cohort_with(&app, &[("EDITOR", keep)], &["release", "edit", "checkout"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("no change to checkout; nothing written"), "{}", stdout(&o));
    assert_eq!(revision().await, at_start);

    // --dry-run shows the change and writes nothing.
    let describe = editor_script(dir.path(), "describe.sh", r#"sed -i 's/"old"/"new"/; s/"v2": 1.0/"v2": 10/' "$1""#);
    let o = cohort_with(&app, &[("EDITOR", describe.clone())], &["release", "edit", "checkout", "--dry-run"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("description: old → new") && text.contains("allocation.v2: 1% → 10%"), "{text}");
    assert_eq!(revision().await, at_start);

    let o = cohort_with(&app, &[("EDITOR", describe)], &["release", "edit", "checkout"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("description: old → new"), "{}", stdout(&o));
    let stored = app.get_json(app.env_url("production", "/releases/checkout")).await;
    assert_eq!((stored["description"].clone(), stored["allocation"]["v2"].clone()), (json!("new"), json!(10.0)));

    // Not JSON: nothing written, nothing re-opened, the text kept in a named file.
    let broken = editor_script(dir.path(), "broken.sh", r#"printf '{"key": "checkout",' > "$1""#);
    let before = revision().await;
    let o = cohort_with(&app, &[("EDITOR", broken)], &["release", "edit", "checkout"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a release"), "{}", stderr(&o));
    let kept = kept_file(&stderr(&o));
    assert_eq!(std::fs::read_to_string(&kept).expect("kept"), r#"{"key": "checkout","#);
    assert_eq!(revision().await, before);

    // Refused by the server (422): its message, in percents, and the text kept.
    let greedy = editor_script(dir.path(), "greedy.sh", r#"sed -i 's/"v2": 10.0/"v2": 60/' "$1""#);
    let o = cohort_with(&app, &[("EDITOR", greedy)], &["release", "edit", "checkout"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("60 % exceeds the candidate's slot of 50 %"), "{}", stderr(&o));
    assert!(std::fs::read_to_string(kept_file(&stderr(&o))).expect("kept").contains("\"v2\": 60"));
    assert_eq!(revision().await, before);

    // alice changes the release while the editor is open: the write is refused and
    // says who changed it.
    let alice = crate::helpers::token("alice", "production", "admin");
    let racing = editor_script(
        dir.path(),
        "racing.sh",
        &format!(
            "COHORT_TOKEN=\"$ALICE\" '{}' release set-percent checkout v2=20 >/dev/null\nsed -i 's/\"new\"/\"mine\"/' \"$1\"",
            env!("CARGO_BIN_EXE_cohort")
        ),
    );
    let o = cohort_with(&app, &[("EDITOR", racing), ("ALICE", alice)], &["release", "edit", "checkout"]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let message = stderr(&o);
    assert!(message.contains("checkout was changed by alice ") && message.contains(" s ago"), "{message}");
    assert!(message.contains("run edit again"), "{message}");
    assert!(std::fs::read_to_string(kept_file(&message)).expect("kept").contains("\"mine\""));
    let stored = app.get_json(app.env_url("production", "/releases/checkout")).await;
    assert_eq!((stored["description"].clone(), stored["allocation"]["v2"].clone()), (json!("new"), json!(20.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_print_a_diff_in_percents_and_write_nothing() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 1.0).await;
    let revision = || async { app.get_json(app.env_url("production", "/releases")).await["revision"].clone() };
    let at_start = revision().await;

    let o =
        cohort(&app, &["release", "create", "search", "--versions", "s1,s2", "--percent", "s2=5", "--dry-run"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("dry run: would create search in production; nothing written\n"), "{text}");
    assert!(text.contains("  allocation.s2: 0% → 5%\n") && text.contains("  versions: (none) → "), "{text}");
    assert_eq!(cohort(&app, &["release", "get", "search"]).await.status.code(), Some(3), "not created");

    let o = cohort(&app, &["release", "set-percent", "checkout", "v2=12.5", "--dry-run"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("  allocation.v2: 1% → 12.5%\n"), "{}", stdout(&o));

    let o = cohort(&app, &["release", "delete", "checkout", "--dry-run"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("would delete checkout") && stdout(&o).contains("allocation.v2: 1% → 0%"),
        "{}",
        stdout(&o)
    );

    assert_eq!(revision().await, at_start, "no dry run wrote anything");
    let stored = app.get_json(app.env_url("production", "/releases/checkout")).await;
    assert_eq!(stored["allocation"]["v2"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_read_in_percents_and_kill_all_shows_every_release_killed() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app.create_release("production", json!({"key": "checkout", "versions": ["v1", "v2", "v3"]})).await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);

    let o = cohort(&app, &["release", "set-percent", "checkout", "v2=60"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("60 % exceeds the candidate's slot of 50 %"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("bucket"), "{}", stderr(&o));

    let o = cohort(&app, &["release", "set-percent", "checkout", "v2=10"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = cohort(&app, &["ramp", "start", "checkout", "--candidate", "v3", "--steps", "5:1h,50"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = cohort(&app, &["audit", "--release", "checkout"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let audit = stdout(&o);
    assert!(audit.contains("v2 0% → 10%"), "{audit}");
    assert!(audit.contains("ramp of v3 started: 5% 1h → 50%"), "{audit}");
    assert!(!audit.contains("buckets"), "{audit}");

    let o = cohort(&app, &["kill-all", "--reason", "incident 42"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = cohort(&app, &["release", "list"]).await;
    let row = stdout(&o).lines().find(|l| l.starts_with("checkout")).map(str::to_owned).expect("row");
    assert!(row.contains("KILLED (kill-all: incident 42)"), "{row}");
    let o = cohort(&app, &["unkill-all"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = cohort(&app, &["release", "list"]).await;
    let row = stdout(&o).lines().find(|l| l.starts_with("checkout")).map(str::to_owned).expect("row");
    assert!(row.contains("live"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_status_watch_redraws_in_place_on_a_terminal() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let o = cohort(&app, &["ramp", "start", "checkout", "--candidate", "v2", "--steps", "5:1h,100"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = cohort(&app, &["ramp", "abort", "checkout"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // util-linux's `script` runs the command on a pseudo-terminal.
    let mut script = clean_command("script");
    let line = format!("'{}' ramp status checkout --watch", env!("CARGO_BIN_EXE_cohort"));
    script
        .args(["-qec", &line, "/dev/null"])
        .env("COHORT_URL", &app.address)
        .env("COHORT_ENV", "production")
        .env("COHORT_TOKEN", crate::helpers::token("cli-user", "production", "admin"));
    let o = run_to_exit(script).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("\u{1b}[2J\u{1b}[H"), "the screen is cleared and redrawn: {text:?}");
    assert!(text.contains("is aborted"), "{text:?}");
}
