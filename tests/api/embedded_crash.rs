//! The embedded store's journal under crashes: a `cohort serve` killed with SIGKILL in
//! the middle of writes keeps every write it acknowledged; a torn last record is dropped,
//! never loaded; damage before the last record stops start-up naming the file; a crash
//! at any point of a compaction loses nothing; the first layout (`cohort.json`) is
//! converted on first open and kept renamed.

use crate::helpers::{Backend, TEST_SECRET, assert_serve_refuses_naming, client_with, eventually, spawn_app, token};
use cohort::store::embedded::{EmbeddedOptions, LEGACY_FILE, MIGRATED_FILE, OpenError};
use cohort::store::{
    Action, AuditEntry, AuditQuery, Bucket, EmbeddedStore, EnvData, EnvName, Store, StoredRelease, Write, WriteMeta,
};
use cohort_sdk::Release;
use rand::Rng as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn env(name: &str) -> EnvName {
    EnvName::parse(name).expect("valid")
}

fn meta() -> WriteMeta {
    WriteMeta::now("test", Action::Create, None)
}

fn release(key: &str) -> Release {
    Release::new(key, ["v1", "v2"]).with_allocation("v2", 5_000)
}

/// The journals of `env` in `dir`, oldest first.
fn journals(dir: &Path, env: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("envs").join(env))
        .expect("env dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("journal-")))
        .collect();
    found.sort();
    found
}

/// A store in `dir` with `production` and releases `r0`..`r{n}` (revision n+… ).
async fn store_with_releases(dir: &Path, n: usize) -> EmbeddedStore {
    let store = EmbeddedStore::open(dir, 100).expect("opens");
    store.create_environment(&env("production")).await.expect("created");
    for i in 0..n {
        store.write(&env("production"), Write::Create(release(&format!("r{i}"))), &meta()).await.expect("written");
    }
    store
}

fn keys(data: &EnvData) -> Vec<String> {
    data.releases.iter().map(|r| r.release.key.clone()).collect()
}

#[tokio::test]
async fn a_record_cut_short_by_a_crash_is_dropped_and_writing_goes_on_after_the_last_whole_one() {
    let dir = tempfile::tempdir().expect("dir");
    drop(store_with_releases(dir.path(), 3).await);
    let journal = journals(dir.path(), "production").pop().expect("a journal");
    let len = std::fs::metadata(&journal).expect("meta").len();
    std::fs::OpenOptions::new().write(true).open(&journal).expect("open").set_len(len - 5).expect("torn");

    let store = EmbeddedStore::open(dir.path(), 100).expect("a torn tail does not stop start-up");
    let data = store.load(&env("production")).await.expect("loads");
    assert_eq!(keys(&data), ["r0", "r1"], "the torn write is not loaded");
    assert_eq!(data.revision, 2);
    assert_eq!(
        store.audit(&env("production"), &AuditQuery { limit: 10, ..AuditQuery::default() }).await.expect("audit").len(),
        2
    );
    // The next write lands after the last whole record, and survives another restart.
    store.write(&env("production"), Write::Create(release("r9")), &meta()).await.expect("written");
    drop(store);
    let store = EmbeddedStore::open(dir.path(), 100).expect("reopens");
    let data = store.load(&env("production")).await.expect("loads");
    assert_eq!((keys(&data), data.revision), (vec!["r0".to_owned(), "r1".into(), "r9".into()], 3));
}

#[tokio::test]
async fn a_damaged_last_record_is_dropped_never_loaded_as_data() {
    let dir = tempfile::tempdir().expect("dir");
    drop(store_with_releases(dir.path(), 3).await);
    let journal = journals(dir.path(), "production").pop().expect("a journal");
    let mut bytes = std::fs::read(&journal).expect("read");
    // Inside the last record's payload: `r2` becomes `r3`, a write that never happened.
    let at = bytes.windows(4).rposition(|w| w == b"\"r2\"").expect("the last key") + 2;
    bytes[at] = b'3';
    std::fs::write(&journal, &bytes).expect("damaged");

    let store = EmbeddedStore::open(dir.path(), 100).expect("a damaged tail does not stop start-up");
    let data = store.load(&env("production")).await.expect("loads");
    assert_eq!(keys(&data), ["r0", "r1"], "neither the damaged record nor its forgery is loaded");
}

#[tokio::test]
async fn damage_before_the_last_record_stops_start_up_with_a_message_naming_the_journal() {
    let dir = tempfile::tempdir().expect("dir");
    drop(store_with_releases(dir.path(), 3).await);
    let journal = journals(dir.path(), "production").pop().expect("a journal");
    let mut bytes = std::fs::read(&journal).expect("read");
    let at = bytes.windows(4).position(|w| w == b"\"r0\"").expect("the first key") + 2;
    bytes[at] = b'7';
    std::fs::write(&journal, &bytes).expect("damaged");

    let err = match EmbeddedStore::open(dir.path(), 100) {
        Ok(_) => panic!("a journal damaged in the middle must not load"),
        Err(e) => e,
    };
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&journal.display().to_string()), "{message}");
    assert!(message.contains("corrupt"), "{message}");

    // The binary says so too, and exits non-zero.
    assert_serve_refuses_naming(dir.path(), &journal);
}

/// Opens with a tiny compaction size, so that writes compact often.
fn open_compacting(dir: &Path) -> EmbeddedStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // A compaction still running in the background keeps the directory locked.
        match EmbeddedStore::open_with(dir, EmbeddedOptions { audit_retention: 50, compact_after_bytes: 2_048 }) {
            Ok(store) => return store,
            Err(OpenError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("opens: {error}"),
        }
    }
}

async fn audit(store: &EmbeddedStore, env: &EnvName) -> Vec<AuditEntry> {
    store.audit(env, &AuditQuery { limit: 1_000, ..AuditQuery::default() }).await.expect("audit")
}

async fn write_updates(store: &EmbeddedStore, from: u32, to: u32) {
    let prod = env("production");
    for i in from..to {
        let current = store.load(&prod).await.expect("loads");
        let expected = current.releases[0].revision;
        let next = release("checkout").with_allocation("v2", i);
        let meta = WriteMeta::now("test", Action::Allocation, None);
        store.write(&prod, Write::Update { release: next, expected }, &meta).await.expect("written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_folds_journals_into_a_snapshot_and_a_crash_at_any_point_of_it_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let prod = env("production");
    let store = open_compacting(dir.path());
    store.create_environment(&prod).await.expect("created");
    store.write(&prod, Write::Create(release("checkout")), &meta()).await.expect("created");
    write_updates(&store, 1, 200).await;
    let expected = store.load(&prod).await.expect("loads");
    let expected_audit = audit(&store, &prod).await;
    assert_eq!(expected.revision, 200);
    assert_eq!(expected_audit.len(), 50, "retention holds across compactions");
    drop(store);

    let env_dir = dir.path().join("envs/production");
    let store = open_compacting(dir.path());
    assert!(env_dir.join("snapshot.json").exists(), "compaction wrote a snapshot");
    assert!(journals(dir.path(), "production").len() <= 2, "and removed the journals it folded in");
    assert_eq!(store.load(&prod).await.expect("loads"), expected);
    assert_eq!(audit(&store, &prod).await, expected_audit);
    drop(store);

    // A crash after the snapshot's rename, before the folded journals were removed: the
    // snapshot says which journals it covers, and those are not replayed twice.
    let covered = journals(dir.path(), "production")[0].clone();
    let before = std::fs::read(&covered).expect("read");
    let store = open_compacting(dir.path());
    write_updates(&store, 200, 260).await;
    let expected = store.load(&prod).await.expect("loads");
    drop(store);
    let store = open_compacting(dir.path());
    drop(store);
    if !covered.exists() {
        std::fs::write(&covered, &before).expect("a journal left behind");
    }
    // A crash while the snapshot was being written: a partial temp file.
    std::fs::write(env_dir.join("snapshot.json.tmp"), b"{\"format\": 2, \"through_jour").expect("torn temp");
    let store = open_compacting(dir.path());
    assert_eq!(store.load(&prod).await.expect("loads"), expected);
    assert_eq!(store.revision(&prod).await.expect("revision"), 260);
}

/// The first embedded layout, as that version wrote it.
fn legacy_file(dir: &Path, t: u64) {
    let releases = vec![StoredRelease { revision: 1, release: release("checkout") }];
    let audit = vec![AuditEntry {
        revision: 1,
        time_ms: t,
        actor: "someone".into(),
        action: Action::Create,
        release: Some("checkout".into()),
        before: None,
        after: Some(serde_json::to_value(release("checkout")).expect("json")),
        reason: None,
    }];
    let bucket = Bucket::containing(t).start_ms();
    let file = json!({
        "format": 1,
        "environments": {
            "production": EnvData { revision: 1, releases, ..EnvData::default() },
            "staging": EnvData { revision: 4, kill_all: true, kill_reason: Some("why".into()), ..EnvData::default() },
        },
        "audit": {"production": audit},
        "outcome_buckets": {"production": {bucket.to_string(): {"checkout\u{1f}v2": [7, 3]}}},
        "deleted": {"dev": 9},
    });
    std::fs::write(dir.join(LEGACY_FILE), serde_json::to_vec_pretty(&file).expect("json")).expect("written");
}

#[tokio::test]
async fn a_data_directory_of_the_first_layout_is_converted_on_first_open_and_the_old_file_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    legacy_file(dir.path(), t);
    let original = std::fs::read(dir.path().join(LEGACY_FILE)).expect("read");

    for open in ["converting", "converted"] {
        let store = EmbeddedStore::open(dir.path(), 100).expect("opens");
        let written = usize::from(open == "converted");
        let prod = store.load(&env("production")).await.expect("production");
        assert_eq!((keys(&prod), prod.revision), (vec!["checkout".to_owned()], 1 + written as u64), "{open}");
        let staging = store.load(&env("staging")).await.expect("staging");
        assert_eq!((staging.kill_all, staging.kill_reason.as_deref(), staging.revision), (true, Some("why"), 4));
        assert_eq!(store.deleted_environments().await.expect("tombstones"), vec![(env("dev"), 9)], "{open}");
        let audit = store.audit(&env("production"), &AuditQuery { limit: 10, ..AuditQuery::default() }).await;
        assert_eq!(audit.expect("audit").len(), 1 + written, "{open}");
        let counts = store.outcomes(&env("production"), "checkout", Bucket::containing(t), Bucket::containing(t)).await;
        assert_eq!(counts.expect("outcomes").len(), 1, "{open}: outcome counts kept");
        assert!(!dir.path().join(LEGACY_FILE).exists(), "{open}");
        assert_eq!(std::fs::read(dir.path().join(MIGRATED_FILE)).expect("kept"), original, "{open}");
        // Writing goes on from the old revision.
        if open == "converting" {
            let next = release("checkout").with_allocation("v2", 7_000);
            let write = Write::Update { release: next, expected: 1 };
            assert_eq!(store.write(&env("production"), write, &meta()).await.expect("written").revision, 2);
        }
    }

    // A crash between the conversion and the old file's rename: the next open finishes it.
    let dir = tempfile::tempdir().expect("dir");
    legacy_file(dir.path(), t);
    drop(EmbeddedStore::open(dir.path(), 100).expect("converts"));
    std::fs::rename(dir.path().join(MIGRATED_FILE), dir.path().join(LEGACY_FILE)).expect("put back");
    let store = EmbeddedStore::open(dir.path(), 100).expect("opens");
    assert_eq!(store.load(&env("production")).await.expect("production").revision, 1);
    assert!(dir.path().join(MIGRATED_FILE).exists() && !dir.path().join(LEGACY_FILE).exists());
}

/// Starts `cohort serve` on `dir` (journals compacted every few KiB) and returns it with
/// its port, once it listens.
fn serve(dir: &Path) -> (std::process::Child, u16) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["serve", "--port", "0", "--workers", "2", "--log-level", "info", "--data-dir"])
        .arg(dir)
        .env("COHORT_LOG__FORMAT", "json")
        .env("COHORT_AUTH__HS256_SECRET", TEST_SECRET)
        .env("COHORT_STORE__JOURNAL_COMPACT_BYTES", "8192")
        .env("COHORT_RATE_LIMIT__ADMIN_PER_SUBJECT", "0")
        .env("COHORT_RATE_LIMIT__ADMIN_PER_ADDRESS", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cohort serve starts");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let mut lines = stderr.lines();
    for line in lines.by_ref() {
        let line = line.expect("a log line");
        if let Ok(value) = serde_json::from_str::<Value>(&line)
            && value["fields"]["message"] == "cohort listening"
        {
            let port = value["fields"]["port"].as_u64().expect("port") as u16;
            // Keep draining its log so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, port);
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("cohort serve stopped before listening: {}", seen.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_sigkill_mid_write_keeps_every_write_it_acknowledged() {
    let dir = tempfile::tempdir().expect("dir");
    let admin = client_with(&token("crash", "*", "admin"));
    // Release key → whether an acknowledged kill says it is killed.
    let acknowledged: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default();
    for round in 0..4 {
        let (mut child, port) = tokio::task::spawn_blocking({
            let dir = dir.path().to_owned();
            move || serve(&dir)
        })
        .await
        .expect("joined");
        let base = format!("http://127.0.0.1:{port}/v1/envs/production/releases");
        let before = acknowledged.lock().expect("lock").len();
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..3 {
            let (client, base, acknowledged) = (admin.clone(), base.clone(), acknowledged.clone());
            writers.spawn(async move {
                for i in 0.. {
                    let key = format!("k{round}-{writer}-{i}");
                    let body = json!({"key": key, "versions": ["v1", "v2"], "allocation": {"v2": 5}});
                    let Ok(r) = client.post(&base).json(&body).send().await else { return };
                    if !r.status().is_success() {
                        return;
                    }
                    acknowledged.lock().expect("lock").insert(key.clone(), false);
                    if i % 2 == 0 {
                        let url = format!("{base}/{key}/kill");
                        let Ok(r) = client.post(&url).json(&json!({"reason": "crash test"})).send().await else {
                            return;
                        };
                        if !r.status().is_success() {
                            return;
                        }
                        acknowledged.lock().expect("lock").insert(key, true);
                    }
                }
            });
        }
        // The kill lands while writes are under way: after the round's first acknowledged
        // write (a busy disk may take a while to sync it), then at a random moment.
        let writing =
            eventually(Duration::from_secs(60), || async { acknowledged.lock().expect("lock").len() > before }).await;
        assert!(writing, "round {round}: no write acknowledged within 60 s");
        let delay = rand::rng().random_range(200..1_200);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        while writers.join_next().await.is_some() {}
    }

    let app = spawn_app(Backend::EmbeddedAt(dir.path())).await;
    let listed: Value = app.get_json(app.env_url("production", "/releases")).await;
    let stored: BTreeMap<String, bool> = listed["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| (r["key"].as_str().expect("key").to_owned(), r["killed"].as_bool().unwrap_or(false)))
        .collect();
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(!acknowledged.is_empty(), "the rounds acknowledged writes");
    for (key, killed) in &acknowledged {
        match stored.get(key) {
            None => panic!("acknowledged release {key} was lost"),
            Some(stored_killed) if *killed && !stored_killed => panic!("acknowledged kill of {key} was lost"),
            Some(_) => {}
        }
    }
    println!(
        "sigkill: 4 rounds, {} acknowledged creates, {} acknowledged kills, {} releases stored, 0 lost",
        acknowledged.len(),
        acknowledged.values().filter(|k| **k).count(),
        stored.len()
    );
    app.stop().await;
}
