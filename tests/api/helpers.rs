//! `spawn_app()`: a real cohort application on a free port with its own data directory
//! or Redis key prefix, and a `TestApp` with helpers that read as sentences.

use crate::redis_harness::RedisServer;
use cohort::api::AppState;
use cohort::config::{Overrides, Secret, Settings};
use cohort::startup::{AppHandle, Application, StartError};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Which store an app uses.
pub enum Backend<'a> {
    /// A fresh data directory.
    Embedded,
    /// A given data directory (restart tests).
    EmbeddedAt(&'a Path),
    /// A Redis server with a key prefix (several apps can share one).
    Redis { server: &'a RedisServer, prefix: &'a str },
}

/// A running application.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    handle: AppHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The app's shared state (snapshots, streams), for what HTTP cannot show.
    pub state: AppState,
    pub port: u16,
    pub data_dir: PathBuf,
    _temp: Option<TempDir>,
}

static PREFIX: AtomicU64 = AtomicU64::new(0);

/// The HS256 secret every test app shares (several apps on one Redis must agree).
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// A token signed with the test secret.
pub fn token(sub: &str, env: &str, scope: &str) -> String {
    cohort::auth::mint::mint(&Secret::new(TEST_SECRET), sub, env, scope, Duration::from_secs(3_600)).expect("mints")
}

/// A client that sends `token` on every request.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers).build().expect("client")
}

/// The subject of the admin token test apps' clients carry.
pub const ADMIN: &str = "test-admin";

/// A key prefix no other test in this run uses.
pub fn unique_prefix() -> String {
    format!("test{}-{}", std::process::id(), PREFIX.fetch_add(1, Ordering::Relaxed))
}

/// Settings for a test app: port 0, quiet logs, quick resync.
pub fn test_settings(backend: &Backend<'_>) -> (Settings, Option<TempDir>) {
    let (temp, data_dir) = match backend {
        Backend::Embedded => {
            let temp = tempfile::tempdir().expect("temp dir");
            let dir = temp.path().to_owned();
            (Some(temp), dir)
        }
        Backend::EmbeddedAt(dir) => (None, dir.to_path_buf()),
        Backend::Redis { .. } => {
            // The instance's own memory (high-water marks, pending kills) lives here.
            let temp = tempfile::tempdir().expect("temp dir");
            let dir = temp.path().to_owned();
            (Some(temp), dir)
        }
    };
    let overrides = Overrides {
        port: Some(0),
        workers: Some(1),
        data_dir: Some(data_dir),
        redis_url: match backend {
            Backend::Redis { server, .. } => Some(server.url()),
            _ => None,
        },
        log_level: Some("warn".into()),
        ..Overrides::default()
    };
    let mut settings = Settings::load_with_env(None, &overrides, HashMap::new()).expect("test settings");
    settings.store.resync_interval_ms = 100;
    settings.store.follow_block_ms = 500;
    settings.store.command_timeout_ms = 1_000;
    settings.auth.hs256_secret = Secret::new(TEST_SECRET);
    settings.ramp.tick_ms = 20;
    settings.ramp.lease_ms = 1_000;
    if let Backend::Redis { prefix, .. } = backend {
        settings.store.redis_prefix = prefix.to_string();
    }
    (settings, temp)
}

/// Starts an app on `backend`.
pub async fn spawn_app(backend: Backend<'_>) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts an app on `backend` with its test settings adjusted by `adjust` (a port the
/// test got from an earlier app, a smaller stream buffer, …).
pub async fn spawn_app_with(backend: Backend<'_>, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    try_spawn_app_with(backend, adjust).await.expect("application starts")
}

/// Restarts an embedded-store app on `dir` and on `port` — a port an earlier app of the
/// same test got from the OS — retrying while the old listener is still closing.
pub async fn respawn_embedded_on(dir: &Path, port: u16) -> TestApp {
    respawn_embedded_on_with(dir, port, |_| {}).await
}

/// [`respawn_embedded_on`] with the settings adjusted by `adjust`.
pub async fn respawn_embedded_on_with(dir: &Path, port: u16, adjust: impl Fn(&mut Settings)) -> TestApp {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let adjusted = |s: &mut Settings| {
            adjust(s);
            s.server.port = port;
        };
        match try_spawn_app_with(Backend::EmbeddedAt(dir), adjusted).await {
            Ok(app) => return app,
            Err(StartError::Bind { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("application restarts on port {port}: {e}"),
        }
    }
}

async fn try_spawn_app_with(backend: Backend<'_>, adjust: impl FnOnce(&mut Settings)) -> Result<TestApp, StartError> {
    let (mut settings, temp) = test_settings(&backend);
    adjust(&mut settings);
    let data_dir = settings.store.data_dir.clone();
    let app = Application::build(settings).await?;
    let port = app.port();
    let address = format!("http://127.0.0.1:{port}");
    let handle = app.handle();
    let state = app.state().clone();
    let task = tokio::spawn(app.run_until_stopped());
    let client = client_with(&token(ADMIN, "*", "admin"));
    Ok(TestApp { address, client, handle, task, state, port, data_dir, _temp: temp })
}

/// Awaits `step` of an app's shutdown, failing the test if it takes over a minute: a stop
/// that never ends would otherwise hold the whole suite until CI's own limit. (Once, under
/// heavy load, a graceful stop of an embedded-store app did not end; where it waited is
/// what this message should tell.)
async fn within_a_minute<T>(step: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(done) => done,
        Err(_) => panic!("{step} did not end within 60 s"),
    }
}

/// Waits (at most 10 s) until nothing in this process holds `data_dir`'s lock any more.
/// A stopped app's HTTP workers are threads that drop their share of the store a moment
/// after the server says it stopped; a process exits instead, and the kernel drops the
/// lock at once.
async fn released(data_dir: &Path) {
    let path = data_dir.join(cohort::store::embedded::LOCK_FILE);
    let Ok(file) = std::fs::OpenOptions::new().read(true).open(&path) else { return };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if file.try_lock().is_ok() {
            let _ = file.unlock();
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `check` until it is true or `within` passes; for convergence between
/// processes, never for measuring speed.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl TestApp {
    /// Stops the server (graceful) and waits until the app has finished shutting down
    /// (background tasks stopped, store flushed).
    pub async fn stop(self) {
        within_a_minute("the server's graceful stop", self.handle.stop(true)).await;
        self.finished().await;
    }

    /// Stops the server at once (no grace for in-flight requests), like a crash of the
    /// HTTP side, and waits for the background tasks to end.
    pub async fn kill(self) {
        within_a_minute("the server's stop", self.handle.stop(false)).await;
        self.finished().await;
    }

    /// Waits for the app's task, then until its store is let go of ([`released`]).
    async fn finished(self) {
        let TestApp { task, state, data_dir, _temp, .. } = self;
        let _ = within_a_minute("the app's shutdown (background tasks, store flush)", task).await;
        drop(state);
        released(&data_dir).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn env_url(&self, env: &str, path: &str) -> String {
        format!("{}/v1/envs/{env}{path}", self.address)
    }

    /// GETs `url` with the admin client and parses the answer as JSON.
    pub async fn get_json(&self, url: impl reqwest::IntoUrl) -> Value {
        self.client.get(url).send().await.expect("sent").json().await.expect("json")
    }

    pub async fn post(&self, url: &str, body: &Value) -> Response {
        self.client.post(url).json(body).send().await.expect("request sent")
    }

    /// Creates environment `name` (admin); panics unless 201.
    pub async fn given_environment(&self, name: &str) {
        let r = self.post(&format!("{}/v1/envs", self.address), &json!({"name": name})).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());
    }

    pub async fn create_release(&self, env: &str, body: Value) -> Response {
        self.post(&self.env_url(env, "/releases"), &body).await
    }

    /// Creates a two-version release `key` with `percent` on v2; panics unless 201.
    pub async fn given_release(&self, env: &str, key: &str, percent: f64) -> Value {
        let r = self
            .create_release(env, json!({"key": key, "versions": ["v1", "v2"], "allocation": {"v2": percent}}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "create {key}");
        r.json().await.expect("json")
    }

    pub async fn get_release(&self, env: &str, key: &str) -> Response {
        self.client.get(self.env_url(env, &format!("/releases/{key}"))).send().await.expect("request sent")
    }

    pub async fn set_percent(&self, env: &str, key: &str, percent: Value, if_match: Option<u64>) -> Response {
        let mut request = self
            .client
            .post(self.env_url(env, &format!("/releases/{key}/allocation")))
            .json(&json!({"percent": percent}));
        if let Some(rev) = if_match {
            request = request.header("If-Match", format!("\"{rev}\""));
        }
        request.send().await.expect("request sent")
    }

    pub async fn evaluate(&self, env: &str, context: Value, releases: Option<Vec<&str>>) -> Response {
        let mut body = json!({"context": context});
        if let Some(keys) = releases {
            body["releases"] = json!(keys);
        }
        self.post(&self.env_url(env, "/evaluate"), &body).await
    }

    /// The decision for one release, as JSON (`{"version", "reason", ...}`).
    pub async fn decision(&self, env: &str, key: &str, context: Value) -> Value {
        let r = self.evaluate(env, context, Some(vec![key])).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.expect("json");
        body["results"][key].clone()
    }

    /// The revision this instance serves for `env`.
    pub async fn served_revision(&self, env: &str) -> u64 {
        let r = self.client.get(self.env_url(env, "")).send().await.expect("request sent");
        let body: Value = r.json().await.expect("json");
        body["revision"].as_u64().expect("revision")
    }
}

/// `cohort serve` on `data_dir` refuses to start: it exits non-zero naming `file`.
pub fn assert_serve_refuses_naming(data_dir: &Path, file: &Path) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
}

/// Asserts the error shape and code.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "error code in {body}");
    let message = body["error"]["message"].as_str().expect("message").to_owned();
    assert!(!message.is_empty());
    message
}

/// Runs the `cohort` binary against `app` in `production` with `token`, off the test
/// runtime (the binary blocks; the server runs in this runtime).
pub async fn run_cohort(app: &TestApp, token: String, args: &[&str]) -> std::process::Output {
    let (url, args) = (app.address.clone(), args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(&args)
            .env("COHORT_URL", url)
            .env("COHORT_ENV", "production")
            .env("COHORT_TOKEN", token)
            .output()
            .expect("cohort runs")
    })
    .await
    .expect("joined")
}

/// An SDK client of `production` acknowledging as `id`, with quick reconnects.
pub fn sdk_with_id(app: &TestApp, id: &str) -> cohort_sdk::client::Client {
    cohort_sdk::client::Client::builder(&app.address, "production", token("sdk", "production", "eval report"))
        .sdk_id(id)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
        .build()
        .expect("client")
}

/// `GET …/reach?revision=N` of `production`.
pub async fn reach(app: &TestApp, revision: u64) -> Value {
    let url = app.env_url("production", &format!("/reach?revision={revision}"));
    app.client.get(url).send().await.expect("sent").json().await.expect("json")
}
