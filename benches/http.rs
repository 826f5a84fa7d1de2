//! What auth costs the evaluation path: a full in-process HTTP evaluation (routing, auth
//! extractor, JSON in, evaluation, JSON out; no sockets) against the cached token check
//! alone. Their ratio is how much faster evaluation would be without auth.
//!
//! `cargo bench --bench http`

use actix_web::{App, test, web};
use cohort::api;
use cohort::config::{Overrides, Secret, Settings};
use cohort::startup::Application;
use cohort::store::{EnvData, EnvName, StoredRelease};
use cohort_sdk::Release;
use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

fn bench(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let overrides = Overrides {
        port: Some(0),
        data_dir: Some(dir.path().to_owned()),
        log_level: Some("error".into()),
        ..Overrides::default()
    };
    let mut settings = Settings::load_with_env(None, &overrides, HashMap::new()).expect("settings");
    settings.auth.hs256_secret = Secret::new(SECRET);
    let app = system.block_on(Application::build(settings)).expect("app");
    let state = app.state().clone();

    // 1,000 releases at 5 %, straight into the snapshot.
    let env = EnvName::parse("production").expect("env");
    let releases = (0..1_000)
        .map(|i| StoredRelease {
            revision: 1,
            release: Release::new(&format!("release-{i:04}"), ["v1", "v2"]).with_allocation("v2", 5_000),
        })
        .collect();
    state.snapshots.replace(
        &env,
        EnvData { revision: 1, kill_all: false, kill_reason: None, releases, reseeded_at: 0, revocations: Vec::new() },
    );

    let token =
        cohort::auth::mint::mint(&Secret::new(SECRET), "bench", "production", "eval", Duration::from_secs(86_400))
            .expect("token");
    let service_state = state.clone();
    let service = system.block_on(test::init_service(
        App::new().configure(move |cfg: &mut web::ServiceConfig| api::configure(cfg, service_state.clone(), 262_144)),
    ));
    let bodies: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"context":{{"targetingKey":"user-{i}"}},"releases":["release-{:04}"]}}"#, i % 1_000))
        .collect();

    let mut group = c.benchmark_group("auth_cost");
    group.measurement_time(Duration::from_secs(4)).sample_size(50);
    let mut i = 0usize;
    group.bench_function("http_evaluate_single_with_auth", |b| {
        b.iter(|| {
            i = (i + 1) % bodies.len();
            let request = test::TestRequest::post()
                .uri("/v1/envs/production/evaluate")
                .insert_header(("Authorization", format!("Bearer {token}")))
                .insert_header(("Content-Type", "application/json"))
                .set_payload(bodies[i].clone())
                .to_request();
            let response = system.block_on(test::call_service(&service, request));
            assert!(response.status().is_success());
            black_box(response);
        })
    });
    group.bench_function("verify_cached_token", |b| {
        b.iter(|| black_box(state.verifier.verify(black_box(&token)).expect("valid")));
    });
    // The check after the token cache: lifetime limit and revocations, with none stored
    // and then with 1,000 (none of them this token's).
    let principal = state.verifier.verify(&token).expect("valid");
    group.bench_function("revocation_check_none_stored", |b| {
        b.iter(|| black_box(state.revocations.check(black_box(&principal))).expect("not revoked"));
    });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let revocations = (0..1_000)
        .map(|i| cohort::store::Revocation {
            jti: (i % 2 == 0).then(|| format!("jti-{i:04}")),
            sub: (i % 2 == 1).then(|| format!("sub-{i:04}")),
            revoked_at: now,
            expires_at: now + 86_400,
            all_environments: false,
            actor: "bench".into(),
            reason: None,
        })
        .collect();
    state
        .snapshots
        .replace(&env, EnvData { revision: 2, revocations, ..state.snapshots.get(&env).expect("env").to_data() });
    group.bench_function("revocation_check_1000_stored", |b| {
        b.iter(|| black_box(state.revocations.check(black_box(&principal))).expect("not revoked"));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
