//! Kill propagation: N Server-Sent-Events subscribers follow an environment, a release
//! is killed, and each subscriber notes when the kill's event reaches it. Reported: the
//! time from the kill's HTTP response (and from its request) to each subscriber's
//! receipt — p50, p99, max — on one instance, and through Redis between two instances
//! (the kill written on A, the subscribers on B). Prints a table; not a test.
//!
//! ```text
//! cargo bench --bench propagation                       # N = 1,000, 5 kills per scenario
//! cargo bench --bench propagation -- --subscribers 2000 --rounds 10
//! ```
//!
//! Everything runs in this process on loopback: the servers (actix workers), the
//! subscribers (plain reqwest readers on a tokio runtime) and, for the second scenario,
//! a `redis-server` started on a free port. Under `cargo test --benches` it runs a
//! smoke version (10 subscribers, 1 kill).

use cohort::config::{Overrides, Secret, Settings};
use cohort::startup::{AppHandle, Application};
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const ENV: &str = "production";
/// Longest wait for anything; only there so a broken run cannot hang.
const DEADLINE: Duration = Duration::from_secs(60);

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench");
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse::<usize>().ok());
    let subscribers = flag("--subscribers").unwrap_or(if benching { 1_000 } else { 10 });
    let rounds = flag("--rounds").unwrap_or(if benching { 5 } else { 1 });
    // Each subscriber holds two descriptors in this process: its socket and the server's.
    ensure_open_files(2 * subscribers as u64 + 512)?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut rows = Vec::new();
        rows.push(("one instance", one_instance(subscribers, rounds).await?));
        rows.push(("via Redis, A -> B", through_redis(subscribers, rounds).await?));
        println!();
        println!("kill propagation: {subscribers} SSE subscribers, {rounds} kills per scenario");
        println!(
            "{:<20} {:>8}  {:>9} {:>9} {:>9}  {:>9} {:>9} {:>9}",
            "scenario", "samples", "p50", "p99", "max", "p50 req", "p99 req", "max req"
        );
        for (name, s) in &rows {
            println!(
                "{:<20} {:>8}  {:>9} {:>9} {:>9}  {:>9} {:>9} {:>9}",
                name,
                s.from_response.len(),
                ms(percentile(&s.from_response, 50.0)),
                ms(percentile(&s.from_response, 99.0)),
                ms(percentile(&s.from_response, 100.0)),
                ms(percentile(&s.from_request, 50.0)),
                ms(percentile(&s.from_request, 99.0)),
                ms(percentile(&s.from_request, 100.0)),
            );
        }
        println!("(first three: from the kill's HTTP response; \"req\": from sending its request;");
        for (name, s) in &rows {
            println!(
                " {name}: {} of {} events arrived before the response, counted as 0)",
                s.early,
                s.from_response.len()
            );
        }
        Ok(())
    })
}

/// Latencies of one scenario, in nanoseconds.
#[derive(Default)]
struct Samples {
    from_response: Vec<u64>,
    from_request: Vec<u64>,
    early: usize,
}

async fn one_instance(subscribers: usize, rounds: usize) -> BenchResult<Samples> {
    let dir = tempfile::tempdir()?;
    let app = start(settings(Overrides { data_dir: Some(dir.path().to_owned()), ..overrides() })?).await?;
    create_releases(&app, rounds).await?;
    let samples = measure(&app, &app, subscribers, rounds).await?;
    app.handle.stop(false).await;
    Ok(samples)
}

async fn through_redis(subscribers: usize, rounds: usize) -> BenchResult<Samples> {
    let redis = Redis::start()?;
    let url = Some(redis.url());
    let a = start(settings(Overrides { redis_url: url.clone(), ..overrides() })?).await?;
    let b = start(settings(Overrides { redis_url: url, ..overrides() })?).await?;
    create_releases(&a, rounds).await?;
    let revision = rounds as u64;
    wait_until(|| async { b.served_revision().await == Some(revision) }).await?;
    let samples = measure(&a, &b, subscribers, rounds).await?;
    a.handle.stop(false).await;
    b.handle.stop(false).await;
    drop(redis);
    Ok(samples)
}

/// Connects `subscribers` readers to `on`, then kills one release per round on
/// `writer` and collects every reader's receipt of each kill.
async fn measure(writer: &App, on: &App, subscribers: usize, rounds: usize) -> BenchResult<Samples> {
    let (receipts, mut received) = mpsc::unbounded_channel::<(u64, Instant)>();
    let ready = Arc::new((AtomicUsize::new(0), Notify::new()));
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let token = mint("bench-sdk", "eval")?;
    let mut readers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let request = http.get(on.env_url("/stream")).header(ACCEPT, "text/event-stream").bearer_auth(&token).send();
        readers.push(tokio::spawn(read_events(request, Arc::clone(&ready), receipts.clone())));
    }
    drop(receipts);
    wait_until(|| async { ready.0.load(Ordering::SeqCst) >= subscribers }).await?;

    let mut samples = Samples::default();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        let response = writer
            .client
            .post(writer.env_url(&format!("/releases/bench-{round}/kill")))
            .json(&json!({}))
            .send()
            .await?;
        let answered = Instant::now();
        if !response.status().is_success() {
            return Err(format!("kill answered {}", response.status()).into());
        }
        let revision =
            response.json::<Value>().await?["revision"].as_u64().ok_or("no revision in the kill's answer")?;
        let mut arrived: HashMap<u64, usize> = HashMap::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while arrived.get(&revision).copied().unwrap_or(0) < subscribers {
            let (id, at) = tokio::time::timeout_at(deadline, received.recv())
                .await
                .map_err(|_| format!("round {round}: not every subscriber got revision {revision}"))?
                .ok_or("every reader ended")?;
            *arrived.entry(id).or_default() += 1;
            if id == revision {
                samples.early += usize::from(at < answered);
                samples.from_response.push(nanos(at.saturating_duration_since(answered)));
                samples.from_request.push(nanos(at.saturating_duration_since(sent)));
            }
        }
    }
    for reader in readers {
        reader.abort();
    }
    Ok(samples)
}

/// Reads one event stream: counts itself ready at the snapshot, then reports the
/// `id` of every `change` event with the moment its bytes arrived.
async fn read_events(
    request: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    ready: Arc<(AtomicUsize, Notify)>,
    receipts: mpsc::UnboundedSender<(u64, Instant)>,
) {
    let Ok(mut response) = request.await else { return };
    let mut buffer: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let at = Instant::now();
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
            let frame = String::from_utf8_lossy(&frame);
            let field = |name: &str| frame.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
            match field("event:") {
                Some("snapshot") => {
                    ready.0.fetch_add(1, Ordering::SeqCst);
                }
                Some("change") => {
                    if let Some(id) = field("id:").and_then(|id| id.parse().ok()) {
                        let _ = receipts.send((id, at));
                    }
                }
                _ => {}
            }
        }
    }
}

/// A running instance.
struct App {
    address: String,
    client: reqwest::Client,
    handle: AppHandle,
}

impl App {
    fn env_url(&self, path: &str) -> String {
        format!("{}/v1/envs/{ENV}{path}", self.address)
    }

    async fn served_revision(&self) -> Option<u64> {
        let body: Value = self.client.get(self.env_url("")).send().await.ok()?.json().await.ok()?;
        body["revision"].as_u64()
    }
}

fn overrides() -> Overrides {
    Overrides { port: Some(0), log_level: Some("error".into()), ..Overrides::default() }
}

fn settings(overrides: Overrides) -> BenchResult<Settings> {
    let mut settings = Settings::load_with_env(None, &overrides, HashMap::new())?;
    settings.auth.hs256_secret = Secret::new(SECRET);
    settings.store.redis_prefix = format!("bench{}", std::process::id());
    Ok(settings)
}

async fn start(settings: Settings) -> BenchResult<App> {
    let app = Application::build(settings).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {}", mint("bench-admin", "admin")?).parse()?);
    let client = reqwest::Client::builder().default_headers(headers).build()?;
    Ok(App { address, client, handle })
}

/// One release per round, `bench-0` …, each at 50 %.
async fn create_releases(app: &App, rounds: usize) -> BenchResult<()> {
    for round in 0..rounds {
        let body = json!({"key": format!("bench-{round}"), "versions": ["v1", "v2"], "allocation": {"v2": 50}});
        let response = app.client.post(app.env_url("/releases")).json(&body).send().await?;
        if !response.status().is_success() {
            return Err(format!("creating a release answered {}", response.status()).into());
        }
    }
    Ok(())
}

fn mint(sub: &str, scope: &str) -> BenchResult<String> {
    Ok(cohort::auth::mint::mint(&Secret::new(SECRET), sub, ENV, scope, Duration::from_secs(3_600))?)
}

async fn wait_until<F, Fut>(mut check: F) -> BenchResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        if Instant::now() > deadline {
            return Err("timed out waiting for the setup".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The `p`-th percentile (nearest rank) of `samples`.
fn percentile(samples: &[u64], p: f64) -> Option<u64> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn ms(nanos: Option<u64>) -> String {
    nanos.map_or_else(|| "-".into(), |n| format!("{:.2} ms", n as f64 / 1e6))
}

/// Raises this process's soft limit on open files to `needed` if it is lower (with
/// `prlimit`, up to the hard limit), or says what to do.
fn ensure_open_files(needed: u64) -> BenchResult<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) else { return Ok(()) };
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let (Some(&soft), Some(&hard)) = (numbers.first(), numbers.get(1)) else { return Ok(()) };
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!("needs {needed} open files, the hard limit is {hard}: fewer --subscribers").into());
    }
    let status = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={needed}:{hard}")])
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => Err(format!("needs {needed} open files (soft limit {soft}): run `ulimit -n {needed}` first").into()),
    }
}

/// A `redis-server` of this run on a free loopback port, killed on drop.
struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> BenchResult<Redis> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let redis = Redis { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = redis::Client::open(redis.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return Ok(redis);
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
