//! What one write costs the embedded store, and what a kill over HTTP costs a server on
//! it, with 100 and 10,000 releases in the store. Prints medians and 99th percentiles.
//!
//! Each size starts from the same data directory: `production` holding the releases and
//! one audit entry per release (as if each had been created through the API), written in
//! the layout of the first embedded store (`cohort.json`), so the store under test loads
//! (and, since the journal, converts) the same data.
//!
//! - `update`: an allocation change of one release (`Write::Update`) on the store;
//! - `kill`: a release kill or unkill (alternately) on the store;
//! - `http kill`: `POST …/releases/{key}/kill` then `…/unkill` through the whole server
//!   (routing, auth, the domain layer, the store write, the snapshot swap), in process.
//!
//! `cargo bench --bench embedded_store` (the data directories go under `TMPDIR`: `TMPDIR=/dev/shm`
//! leaves the disk's sync out of the figures).

use actix_web::{App, test, web};
use cohort::api;
use cohort::config::{Overrides, Secret, Settings};
use cohort::startup::Application;
use cohort::store::{Action, AuditEntry, EmbeddedStore, EnvData, EnvName, Store, StoredRelease, Write, WriteMeta};
use cohort_sdk::Release;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const SIZES: [usize; 2] = [100, 10_000];
/// The audit retention of the default configuration.
const AUDIT_RETENTION: usize = 10_000;

fn main() {
    let system = actix_web::rt::System::new();
    let mut rows = Vec::new();
    for n in SIZES {
        let samples = if n <= 1_000 { 500 } else { 100 };
        let dir = tempfile::tempdir().expect("temp dir");
        seed(dir.path(), n);
        let store = EmbeddedStore::open(dir.path(), AUDIT_RETENTION).expect("opens");
        let (update, kill) = system.block_on(store_writes(&store, n, samples));
        drop(store);
        rows.push(("update", n, update));
        rows.push(("kill", n, kill));

        let dir = tempfile::tempdir().expect("temp dir");
        seed(dir.path(), n);
        rows.push(("http kill", n, system.block_on(http_kills(dir.path(), samples))));
    }
    println!("{:<10} {:>9} {:>8} {:>10} {:>10} {:>10}", "write", "releases", "samples", "p50 ms", "p99 ms", "max ms");
    for (name, n, mut times) in rows {
        times.sort();
        let at = |q: usize| times[(times.len() * q).div_ceil(100).saturating_sub(1)];
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        println!(
            "{name:<10} {n:>9} {:>8} {:>10.3} {:>10.3} {:>10.3}",
            times.len(),
            ms(at(50)),
            ms(at(99)),
            ms(times[times.len() - 1])
        );
    }
}

fn release(i: usize) -> Release {
    Release::new(&format!("release-{i:05}"), ["v1", "v2"]).with_allocation("v2", 5_000)
}

/// Writes `dir/cohort.json` as the first embedded store did: `production` with `n`
/// releases and their creation audit entries, an empty `staging`.
fn seed(dir: &Path, n: usize) {
    let releases: Vec<StoredRelease> =
        (0..n).map(|i| StoredRelease { revision: i as u64 + 1, release: release(i) }).collect();
    let audit: Vec<AuditEntry> = releases
        .iter()
        .skip(n.saturating_sub(AUDIT_RETENTION))
        .map(|r| AuditEntry {
            revision: r.revision,
            time_ms: 1_700_000_000_000,
            actor: "seed".into(),
            action: Action::Create,
            release: Some(r.release.key.clone()),
            before: None,
            after: Some(serde_json::to_value(&r.release).expect("json")),
            reason: None,
        })
        .collect();
    let production = EnvData { revision: n as u64, releases, ..EnvData::default() };
    let file = serde_json::json!({
        "format": 1,
        "environments": {"production": production, "staging": EnvData::default()},
        "audit": {"production": audit},
    });
    std::fs::write(dir.join("cohort.json"), serde_json::to_vec(&file).expect("json")).expect("seeded");
}

/// Times `samples` allocation updates and as many kills/unkills on the store.
async fn store_writes(store: &EmbeddedStore, n: usize, samples: usize) -> (Vec<Duration>, Vec<Duration>) {
    let env = EnvName::parse("production").expect("env");
    let mut revisions: HashMap<usize, u64> = (0..n).map(|i| (i, i as u64 + 1)).collect();
    let mut write = async |i: usize, edit: &dyn Fn(&mut Release), action: Action| {
        let mut next = release(i);
        edit(&mut next);
        let expected = revisions[&i];
        let started = Instant::now();
        let change = store
            .write(&env, Write::Update { release: next, expected }, &WriteMeta::now("bench", action, None))
            .await
            .expect("written");
        let took = started.elapsed();
        revisions.insert(i, change.revision);
        took
    };
    let mut updates = Vec::with_capacity(samples);
    for s in 0..samples {
        let share = 1_000 + (s as u32 % 40) * 1_000;
        updates
            .push(write((s * 7_919) % n, &|r| _ = r.allocation.insert("v2".into(), share), Action::Allocation).await);
    }
    let mut kills = Vec::with_capacity(samples);
    for s in 0..samples {
        let on = s % 2 == 0;
        kills.push(write(n / 2, &|r| r.killed = on, if on { Action::Kill } else { Action::Unkill }).await);
    }
    (updates, kills)
}

/// Times `samples` kills and unkills (alternately) through the whole server on `dir`.
async fn http_kills(dir: &Path, samples: usize) -> Vec<Duration> {
    let overrides = Overrides {
        port: Some(0),
        data_dir: Some(dir.to_owned()),
        log_level: Some("error".into()),
        ..Overrides::default()
    };
    let mut settings = Settings::load_with_env(None, &overrides, HashMap::new()).expect("settings");
    settings.auth.hs256_secret = Secret::new(SECRET);
    settings.rate_limit.admin_per_subject = 0;
    settings.rate_limit.admin_per_address = 0;
    let app = Application::build(settings).await.expect("app");
    let state = app.state().clone();
    let token =
        cohort::auth::mint::mint(&Secret::new(SECRET), "bench", "production", "kill", Duration::from_secs(86_400))
            .expect("token");
    let service = test::init_service(
        App::new().configure(move |cfg: &mut web::ServiceConfig| api::configure(cfg, state.clone(), 262_144)),
    )
    .await;
    let mut times = Vec::with_capacity(samples);
    for s in 0..samples {
        let verb = if s % 2 == 0 { "kill" } else { "unkill" };
        let request = test::TestRequest::post()
            .uri(&format!("/v1/envs/production/releases/release-00000/{verb}"))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(r#"{"reason":"bench"}"#)
            .to_request();
        let started = Instant::now();
        let response = test::call_service(&service, request).await;
        let took = started.elapsed();
        assert!(response.status().is_success(), "{verb}: {}", response.status());
        times.push(took);
    }
    drop(service);
    drop(app);
    times
}
