//! HTTPS: `server.tls_cert_file` / `server.tls_key_file`, served with certificates the
//! tests make (rcgen), and the certificate swapped on SIGHUP without a restart.

use crate::helpers::{Backend, TEST_SECRET, spawn_app_with, token};
use cohort::config::{Overrides, Settings};
use cohort::startup::{Application, StartError};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr};

/// A certificate for 127.0.0.1 and its key, both PEM.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn new_pair() -> Pair {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("certificate");
    Pair { cert_pem: cert.pem(), key_pem: signing_key.serialize_pem(), der: cert.der().to_vec() }
}

fn write_pair(dir: &Path, pair: &Pair) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&key, &pair.key_pem).expect("key written");
    std::fs::write(&cert, &pair.cert_pem).expect("certificate written");
    (cert, key)
}

/// A client that trusts exactly `pairs` (no public roots), opens a new connection per
/// request and reports the peer's certificate. A new client has no TLS session to
/// resume, so its first handshake shows the certificate served now (a resumed session
/// carries the certificate it was made with).
fn trusting(pairs: &[&Pair]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    for pair in pairs {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pair.cert_pem.as_bytes()).expect("pem"));
    }
    builder.build().expect("client")
}

/// GETs `url` and returns the status and the DER of the certificate the server showed.
async fn served(client: &reqwest::Client, url: &str) -> (StatusCode, Vec<u8>) {
    let response = client.get(url).send().await.expect("TLS request");
    let der = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a peer certificate")
        .to_vec();
    (response.status(), der)
}

#[tokio::test]
async fn the_api_is_served_over_tls_with_the_configured_certificate_and_the_sdk_syncs_over_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = new_pair();
    let (cert, key) = write_pair(dir.path(), &pair);
    let app = spawn_app_with(Backend::Embedded, |s| {
        s.server.tls_cert_file = cert.clone();
        s.server.tls_key_file = key.clone();
    })
    .await;
    let base = format!("https://127.0.0.1:{}", app.port);
    let client = trusting(&[&pair]);
    let (status, der) = served(&client, &format!("{base}/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(der, pair.der, "the configured certificate is served");

    // Plain HTTP on the TLS port is not served.
    assert!(reqwest::get(format!("http://127.0.0.1:{}/healthz", app.port)).await.is_err_and(|e| !e.is_status()));

    // The API over HTTPS: an admin write, then the SDK syncs it.
    let admin = format!("Bearer {}", token("admin", "*", "admin"));
    let r = client
        .post(format!("{base}/v1/envs/production/releases"))
        .header("Authorization", &admin)
        .json(&json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 100.0}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());

    // The SDK client talks HTTPS with the private certificate as its root.
    let sdk = cohort_sdk::client::Client::builder(&base, "production", token("sdk", "production", "eval"))
        .tls_root_certificate_pem(pair.cert_pem.as_bytes())
        .build()
        .expect("client");
    assert!(sdk.wait_ready(Duration::from_secs(10)).await, "the SDK syncs over TLS");
    assert!(sdk.is_enabled("checkout", &cohort_sdk::Context::with_targeting_key("user-1")));
    sdk.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_gets_no_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (served_pair, other) = (new_pair(), new_pair());
    let (cert, key) = write_pair(dir.path(), &served_pair);
    let app = spawn_app_with(Backend::Embedded, |s| {
        s.server.tls_cert_file = cert.clone();
        s.server.tls_key_file = key.clone();
    })
    .await;
    let client = trusting(&[&other]);
    assert!(client.get(format!("https://127.0.0.1:{}/healthz", app.port)).send().await.is_err());
    app.stop().await;
}

#[test]
fn a_certificate_without_a_key_or_a_key_without_a_certificate_is_a_configuration_error() {
    for variable in ["COHORT_SERVER__TLS_CERT_FILE", "COHORT_SERVER__TLS_KEY_FILE"] {
        let vars = HashMap::from([(variable.to_owned(), "/etc/cohort/tls.pem".to_owned())]);
        let error = Settings::load_with_env(None, &Overrides::default(), vars).expect_err("refused").to_string();
        assert!(error.contains("server.tls_cert_file and server.tls_key_file go together"), "{error}");
    }
}

#[tokio::test]
async fn a_certificate_that_does_not_load_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pair, other) = (new_pair(), new_pair());
    let (cert, _) = write_pair(dir.path(), &pair);
    let wrong_key = dir.path().join("other-key.pem");
    std::fs::write(&wrong_key, &other.key_pem).expect("written");
    let missing = dir.path().join("missing.pem");
    for (cert, key, expected) in [
        (&missing, &wrong_key, "missing.pem"),
        (&cert, &wrong_key, "does not go with the certificate"),
        (&wrong_key, &wrong_key, "holds no certificate"),
    ] {
        let (mut settings, _temp) = crate::helpers::test_settings(&Backend::Embedded);
        settings.server.tls_cert_file = cert.clone();
        settings.server.tls_key_file = key.clone();
        match Application::build(settings).await {
            Err(error @ StartError::Tls(_)) => assert!(error.to_string().contains(expected), "{error}"),
            Err(other) => panic!("expected a TLS error, got {other}"),
            Ok(_) => panic!("started with {} / {}", cert.display(), key.display()),
        }
    }
}

/// `cohort serve` as a process, with its log lines.
struct Served {
    child: Child,
    log: Lines<BufReader<ChildStderr>>,
    port: u16,
}

impl Served {
    async fn start(config: &Path, data_dir: &Path) -> Served {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohort"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().to_ascii_uppercase().starts_with("COHORT_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(["serve", "--port", "0", "--log-level", "info", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .env("COHORT_AUTH__HS256_SECRET", TEST_SECRET)
            .env("COHORT_LOG__FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cohort serve runs");
        let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let line = Self::wait_for(&mut log, "cohort listening").await;
        let port = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("port="))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        assert!(line.contains("https"), "{line}");
        Served { child, log, port }
    }

    async fn wait_for(log: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> String {
        let read = async {
            while let Some(line) = log.next_line().await.expect("log readable") {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("cohort serve ended before logging {needle:?}");
        };
        tokio::time::timeout(Duration::from_secs(30), read).await.unwrap_or_else(|_| panic!("no {needle:?} logged"))
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill").args([name, &pid]).status().expect("kill runs");
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_makes_cohort_serve_the_new_certificate_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = (new_pair(), new_pair());
    let (cert, key) = write_pair(dir.path(), &first);
    let config = dir.path().join("cohort.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .expect("config written");
    let mut serve = Served::start(&config, &dir.path().join("data")).await;
    let url = format!("https://127.0.0.1:{}/healthz", serve.port);
    let now_served = || async { served(&trusting(&[&first, &second]), &url).await };
    assert_eq!(now_served().await, (StatusCode::OK, first.der.clone()));

    // A bad pair (the second certificate with the first key): logged, the first stays.
    std::fs::write(&cert, &second.cert_pem).expect("written");
    serve.signal("-HUP");
    let line = Served::wait_for(&mut serve.log, "cannot reload the TLS certificate").await;
    assert!(line.contains("ERROR") && line.contains("does not go with the certificate"), "{line}");
    assert_eq!(now_served().await, (StatusCode::OK, first.der.clone()), "the old certificate stays");

    // The complete second pair: served from the next handshake on, same process.
    write_pair(dir.path(), &second);
    serve.signal("-HUP");
    Served::wait_for(&mut serve.log, "TLS certificate reloaded").await;
    assert_eq!(now_served().await, (StatusCode::OK, second.der.clone()));

    // Still the same process, still serving, and it stops cleanly on SIGTERM.
    serve.signal("-TERM");
    let status =
        tokio::time::timeout(Duration::from_secs(20), serve.child.wait()).await.expect("stops").expect("status");
    assert!(status.success(), "{status}");
}
