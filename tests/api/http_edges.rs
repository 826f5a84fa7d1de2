//! The HTTP edges: a refusal before the body leaves a kept-alive connection usable (on a
//! raw socket, as the OpenFeature OFREP provider met it), over-long URIs, `HEAD`, the
//! headers every answer carries, an unknown release's health, and metrics whose series
//! stay bounded.

use crate::helpers::{Backend, TestApp, assert_error, client_with, eventually, spawn_app, spawn_app_with, token};
use cohort::store::{Action, EnvData, EnvName, StoredRelease, WriteMeta};
use cohort_sdk::Release;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One answer read off a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one HTTP/1.1 answer with a `Content-Length` body.
fn read_answer(reader: &mut BufReader<TcpStream>) -> std::io::Result<Answer> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').expect("a header line");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().expect("length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Answer { status, headers, body })
}

/// A kept-alive connection to `port`.
fn connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let reader = BufReader::new(stream.try_clone().expect("clone"));
    (stream, reader)
}

/// What a slow client sees: the POST's head, then its body 50 ms later, then the answer,
/// then a second request on the same connection and (if the connection survived) its
/// answer.
fn post_slowly_then_again(port: u16, path: &str, bearer: &str, body: &str) -> (Answer, std::io::Result<Answer>) {
    let (mut stream, mut reader) = connect(port);
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("head written");
    stream.flush().expect("flushed");
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(body.as_bytes()).expect("body written");
    let first = read_answer(&mut reader).expect("the refusal arrives");
    let second =
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").and_then(|()| read_answer(&mut reader));
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_refused_before_its_body_is_read_leaves_the_connection_usable() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let port = app.port;
    let eval = token("app", "production", "eval");
    let cases = [
        // Hot routes, refused by their auth extractors.
        ("/ofrep/v1/evaluate/flags/checkout", "not-a-token".to_owned(), 401),
        ("/ofrep/v1/evaluate/flags", "not-a-token".to_owned(), 401),
        ("/v1/envs/production/evaluate", "not-a-token".to_owned(), 401),
        ("/v1/envs/staging/evaluate", eval.clone(), 403),
        // Routed ones: a scope that does not allow the write, no such route, a route
        // without POST; none of them reads the body.
        ("/v1/envs/production/releases", eval, 403),
        ("/v1/nosuch", "any".to_owned(), 404),
        ("/healthz", "any".to_owned(), 405),
    ];
    let body = r#"{"context":{"targetingKey":"user-1"}}"#;
    let seen = tokio::task::spawn_blocking(move || {
        cases.map(|(path, bearer, status)| (path, status, post_slowly_then_again(port, path, &bearer, body)))
    })
    .await
    .expect("joined");
    for (path, status, (first, second)) in seen {
        assert_eq!(first.status, status, "{path}: {first:?}");
        assert!(!first.closes(), "{path}: the body was read, so the connection stays: {first:?}");
        let second = second.unwrap_or_else(|e| panic!("{path}: the next request on the connection failed: {e}"));
        assert_eq!(second.status, 200, "{path}: {second:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_or_too_slow_to_read_gets_an_answer_that_says_connection_close() {
    let app = spawn_app_with(Backend::Embedded, |s| {
        s.server.max_body_bytes = 1_024;
        s.http.drain_timeout_ms = 200;
    })
    .await;
    let port = app.port;
    let (too_large, too_slow, small) = tokio::task::spawn_blocking(move || {
        // Declared far above the limit: not waited for.
        let (mut stream, mut reader) = connect(port);
        write!(
            stream,
            "POST /ofrep/v1/evaluate/flags HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\nContent-Length: 10000000\r\n\r\n"
        )
        .expect("written");
        let too_large = read_answer(&mut reader).expect("answered");
        // Declared small, never sent: waited for as long as `http.drain_timeout_ms`.
        let (mut stream, mut reader) = connect(port);
        write!(
            stream,
            "POST /v1/envs/production/evaluate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\nContent-Length: 100\r\n\r\n"
        )
        .expect("written");
        let too_slow = read_answer(&mut reader).expect("answered");
        // Chunked, within the limit, after the head: read, and the connection stays.
        let (mut stream, mut reader) = connect(port);
        write!(
            stream,
            "POST /v1/envs/production/evaluate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .expect("written");
        std::thread::sleep(Duration::from_millis(50));
        stream.write_all(b"5\r\nhello\r\n0\r\n\r\n").expect("written");
        let small = read_answer(&mut reader).expect("answered");
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("written");
        (too_large, too_slow, (small, read_answer(&mut reader).expect("the connection stayed")))
    })
    .await
    .expect("joined");
    assert_eq!(too_large.status, 401);
    assert!(too_large.closes(), "{too_large:?}");
    assert_eq!(too_slow.status, 401);
    assert!(too_slow.closes(), "{too_slow:?}");
    assert_eq!(small.0.status, 401);
    assert!(!small.0.closes(), "{:?}", small.0);
    assert_eq!(small.1.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn an_over_long_uri_gets_414_with_a_json_body_on_every_route() {
    let app = spawn_app_with(Backend::Embedded, |s| s.http.max_uri_bytes = 2_048).await;
    let pad = "a".repeat(2_100);
    let r = app.client.get(app.url(&format!("/healthz?pad={pad}"))).send().await.expect("sent");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let message = assert_error(r, StatusCode::URI_TOO_LONG, "uri_too_long").await;
    assert!(message.contains("2048"), "{message}");
    // A hot route, and a path (not a query) that is too long.
    let r = app.client.post(app.env_url("production", &format!("/evaluate?pad={pad}"))).json(&json!({})).send();
    assert_error(r.await.expect("sent"), StatusCode::URI_TOO_LONG, "uri_too_long").await;
    let r = app.client.get(app.env_url("production", &format!("/releases/{pad}"))).send().await.expect("sent");
    assert_error(r, StatusCode::URI_TOO_LONG, "uri_too_long").await;
    // At the limit, the route answers.
    let at_limit = format!("/healthz?pad={}", "a".repeat(2_048 - "/healthz?pad=".len()));
    assert_eq!(app.client.get(app.url(&at_limit)).send().await.expect("sent").status(), StatusCode::OK);
    app.stop().await;
}

/// Lines of a `cohort serve` process's JSON log, read as they come.
fn log_lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // The first start also prints how to mint a token, as plain text.
            if let Ok(value) = serde_json::from_str::<Value>(&line)
                && tx.send(value).is_err()
            {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uris_the_http_parser_refuses_are_logged_at_debug_not_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["serve", "--port", "0", "--workers", "1", "--log-level", "info,cohort::http=debug", "--data-dir"])
        .arg(dir.path())
        .env("COHORT_LOG__FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cohort serve starts");
    let lines = log_lines(child.stderr.take().expect("stderr"));
    let outcome = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let port = loop {
            let line = lines.recv_timeout(Duration::from_secs(30)).expect("cohort logs that it listens");
            seen.push(line.clone());
            if line["fields"]["message"] == "cohort listening" {
                break line["fields"]["port"].as_u64().expect("port") as u16;
            }
        };
        let mut statuses = Vec::new();
        // Above what `http::Uri` holds (64 KiB): the parser answers before cohort can.
        for _ in 0..3 {
            let (mut stream, mut reader) = connect(port);
            write!(stream, "GET /healthz?pad={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).expect("written");
            statuses.push(read_answer(&mut reader).expect("answered").status);
        }
        // Above `http.max_uri_bytes`: cohort's 414.
        let (mut stream, mut reader) = connect(port);
        write!(stream, "GET /healthz?pad={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9_000)).expect("written");
        let answer = read_answer(&mut reader).expect("answered");
        let body: Value = serde_json::from_slice(&answer.body).expect("a JSON body");
        statuses.push(answer.status);
        // The demoted lines arrive as each connection ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.iter().filter(|l| l["target"] == "cohort::http" && l["level"] == "DEBUG").count() < 3
            && std::time::Instant::now() < deadline
        {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                seen.push(line);
            }
        }
        (statuses, body, seen)
    })
    .await;
    child.kill().expect("stopped");
    let _ = child.wait();
    let (statuses, body, seen) = outcome.expect("joined");
    assert_eq!(statuses, [400, 400, 400, 414]);
    assert_eq!(body["error"]["code"], "uri_too_long");
    let errors: Vec<&Value> = seen.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "nothing a client sends is logged at ERROR: {errors:?}");
    let demoted: Vec<&Value> = seen.iter().filter(|l| l["target"] == "cohort::http" && l["level"] == "DEBUG").collect();
    assert_eq!(demoted.len(), 3, "each parser refusal is logged at DEBUG: {seen:?}");
    assert!(demoted[0]["fields"]["error"].as_str().is_some_and(|e| e.contains("parse error")), "{demoted:?}");
}

#[tokio::test]
async fn head_on_a_get_route_answers_like_get_without_a_body() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let sdk = client_with(&token("sdk", "production", "eval"));
    let routes = [
        (&app.client, app.url("/healthz")),
        (&app.client, app.url("/openapi.json")),
        (&app.client, app.env_url("production", "/releases")),
        (&app.client, app.env_url("production", "/releases/checkout")),
        (&sdk, app.env_url("production", "/snapshot")),
    ];
    for (client, url) in routes {
        let get = client.get(&url).send().await.expect("sent");
        let (get_status, get_headers) = (get.status(), get.headers().clone());
        let get_body = get.bytes().await.expect("body");
        let head = client.head(&url).send().await.expect("sent");
        assert_eq!(head.status(), get_status, "HEAD {url}");
        for name in ["content-type", "etag", "cache-control"] {
            assert_eq!(head.headers().get(name), get_headers.get(name), "HEAD {url}: {name}");
        }
        let length = head.headers().get("content-length").map(|v| v.to_str().expect("text").to_owned());
        assert_eq!(length, Some(get_body.len().to_string()), "HEAD {url}: the length GET's body has");
        assert!(head.bytes().await.expect("body").is_empty(), "HEAD {url}: no body");
    }
    // The event stream: its headers, and an end at once instead of a stream never sent.
    let head = tokio::time::timeout(Duration::from_secs(10), sdk.head(app.env_url("production", "/stream")).send())
        .await
        .expect("answered at once")
        .expect("sent");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-type"], "text/event-stream");
    // A route without GET still refuses HEAD.
    let r = sdk.head(app.env_url("production", "/evaluate")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    app.stop().await;
}

#[tokio::test]
async fn the_health_of_a_release_the_environment_does_not_hold_is_404() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let r = app.client.get(app.env_url("production", "/releases/checkout/health")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.client.get(app.env_url("production", "/releases/nosuch/health")).send().await.expect("sent");
    let message = assert_error(r, StatusCode::NOT_FOUND, "release_not_found").await;
    assert!(message.contains("nosuch"), "{message}");
    let r = app.client.get(app.env_url("nosuch", "/releases/checkout/health")).send().await.expect("sent");
    assert_error(r, StatusCode::NOT_FOUND, "environment_not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn answers_say_nosniff_admin_answers_are_not_stored_and_nothing_names_the_version() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let sdk = client_with(&token("sdk", "production", "eval"));
    let version = env!("CARGO_PKG_VERSION");
    let get = |client: &reqwest::Client, url: String| client.get(url).send();
    let answers = [
        ("healthz", get(&app.client, app.url("/healthz")).await, Some("no-store")),
        ("readyz", get(&app.client, app.url("/readyz")).await, Some("no-store")),
        ("metrics", get(&app.client, app.url("/metrics")).await, Some("no-store")),
        ("openapi", get(&app.client, app.url("/openapi.json")).await, Some("no-store")),
        ("releases", get(&app.client, app.env_url("production", "/releases")).await, Some("no-store")),
        ("audit", get(&app.client, app.env_url("production", "/audit")).await, Some("no-store")),
        ("unknown route", get(&app.client, app.url("/nosuch")).await, Some("no-store")),
        ("no token", reqwest::Client::new().get(app.env_url("production", "/releases")).send().await, Some("no-store")),
        // Evaluations are POST answers, which caches never store without explicit freshness.
        ("evaluate", Ok(app.evaluate("production", json!({"targetingKey": "u1"}), None).await), None),
        (
            "evaluate, no token",
            reqwest::Client::new().post(app.env_url("production", "/evaluate")).send().await,
            Some("no-store"),
        ),
        // Snapshots keep their revalidation: no-cache with an ETag.
        ("snapshot", get(&sdk, app.env_url("production", "/snapshot")).await, Some("no-cache")),
    ];
    for (name, answer, cache) in answers {
        let answer = answer.expect("sent");
        let headers = answer.headers();
        assert_eq!(headers.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{name}");
        assert_eq!(headers.get("cache-control").map(|v| v.to_str().unwrap()), cache, "{name}");
        assert!(headers.get("server").is_none() && headers.get("x-powered-by").is_none(), "{name}: {headers:?}");
        for (header, value) in headers {
            assert!(!value.to_str().unwrap_or_default().contains(version), "{name}: {header} names the version");
        }
        if name == "snapshot" {
            assert!(headers.contains_key("etag"));
        }
        let body = answer.text().await.expect("body");
        assert!(!body.contains(&format!("\"{version}\"")), "{name}: the body names the version: {body}");
        if name == "openapi" {
            let doc: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(doc["info"]["version"], "v1", "the API's version, not the build's");
        }
    }
    app.stop().await;
}

/// The `cohort_evaluations_total` lines of `app`'s metrics for `env`.
async fn evaluation_series(app: &TestApp, env: &str) -> Vec<String> {
    let text = app.client.get(app.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    let label = format!("environment=\"{env}\"");
    text.lines()
        .filter(|l| l.starts_with("cohort_evaluations_total{") && l.contains(&label))
        .map(str::to_owned)
        .collect()
}

/// The sum of the values of metric lines.
fn total(lines: &[String]) -> u64 {
    lines.iter().map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()).expect("a count")).sum()
}

#[tokio::test]
async fn evaluations_are_counted_per_environment() {
    let app = spawn_app(Backend::Embedded).await;
    for env in ["edges-count-a", "edges-count-b"] {
        app.given_environment(env).await;
        app.given_release(env, "checkout", 50.0).await;
    }
    for i in 0..3 {
        app.evaluate("edges-count-a", json!({"targetingKey": format!("u{i}")}), Some(vec!["checkout"])).await;
    }
    // OFREP counts the same way.
    let r = client_with(&token("app", "edges-count-b", "eval"))
        .post(app.url("/ofrep/v1/evaluate/flags/checkout"))
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let a = evaluation_series(&app, "edges-count-a").await;
    let b = evaluation_series(&app, "edges-count-b").await;
    assert_eq!(total(&a), 3, "{a:?}");
    assert_eq!(total(&b), 1, "{b:?}");
    assert!(a.iter().chain(&b).all(|l| l.contains("release=\"_all\"") && l.contains("version=\"_all\"")), "{a:?}");
    app.stop().await;
}

#[tokio::test]
async fn per_release_series_are_opt_in() {
    let app = spawn_app_with(Backend::Embedded, |s| s.metrics.per_release = true).await;
    app.given_environment("edges-per-release").await;
    app.given_release("edges-per-release", "checkout", 0.0).await;
    app.evaluate("edges-per-release", json!({"targetingKey": "u1"}), Some(vec!["checkout", "nosuch"])).await;
    let lines = evaluation_series(&app, "edges-per-release").await;
    assert!(lines.iter().any(|l| l.contains("release=\"checkout\"") && l.contains("version=\"v1\"")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("release=\"-\"")), "an unknown key counts under `-`: {lines:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_releases_evaluated_keep_the_metrics_small() {
    let app = spawn_app(Backend::Embedded).await;
    let env_name = "edges-ten-thousand";
    app.given_environment(env_name).await;
    let env = EnvName::parse(env_name).expect("env");
    let store = app.state.releases.store();
    let revision = store.revision(&env).await.expect("revision") + 1;
    let releases = (0..10_000)
        .map(|i| StoredRelease {
            revision,
            release: Release::new(&format!("r{i:05}"), ["v1", "v2"]).with_allocation("v2", 50_000),
        })
        .collect();
    let data =
        EnvData { revision, kill_all: false, kill_reason: None, releases, reseeded_at: 0, revocations: Vec::new() };
    store.reseed(&env, &data, &WriteMeta::now("test", Action::StoreReseed, None)).await.expect("seeded");
    let served = eventually(Duration::from_secs(10), || async { app.served_revision(env_name).await >= revision });
    assert!(served.await, "the instance serves the 10,000 releases");
    for i in 0..3 {
        let r = app.evaluate(env_name, json!({"targetingKey": format!("u{i}")}), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["results"].as_object().map(|m| m.len()), Some(10_000));
    }
    let lines = evaluation_series(&app, env_name).await;
    assert_eq!(total(&lines), 30_000, "{lines:?}");
    assert!(lines.len() <= 2, "one series per reason evaluated (SPLIT), not per release: {lines:?}");
    let text = app.client.get(app.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    assert!(!text.contains("r00042"), "no series names a release");
    app.stop().await;
}
