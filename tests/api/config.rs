//! Configuration mistakes stop start-up: a key no setting reads, in the file or in a
//! `COHORT_…` variable, is an error naming it and the nearest known key.

use cohort::config::{ConfigError, KeyOrigin, Overrides, Settings, UnknownKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A configuration file with `text` in a fresh directory (kept alive by the `TempDir`).
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cohort.toml");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load(file: Option<&Path>, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_with_env(file, &Overrides::default(), vars(env))
}

/// The unknown keys `load` refused, or a panic if it did anything else.
fn unknown_keys(result: Result<Settings, ConfigError>) -> Vec<UnknownKey> {
    match result {
        Err(ConfigError::UnknownKeys(keys)) => keys,
        Err(other) => panic!("expected unknown keys, got: {other}"),
        Ok(_) => panic!("a configuration with an unknown key must not load"),
    }
}

fn in_file(path: &Path, key: &str, nearest: &str) -> UnknownKey {
    UnknownKey { origin: KeyOrigin::File(path.to_owned()), key: key.into(), nearest: Some(nearest.into()) }
}

fn in_env(key: &str, nearest: &str) -> UnknownKey {
    UnknownKey { origin: KeyOrigin::Environment, key: key.into(), nearest: Some(nearest.into()) }
}

#[test]
fn a_misspelt_key_in_the_file_stops_loading_naming_it_and_the_nearest_known_key() {
    let (_dir, path) = config_file("[server]\nprot = 9000\n\n[auth]\nisuer = \"https://id.example\"\n");
    let err = load(Some(&path), &[]).expect_err("refused");
    let message = err.to_string();
    for expected in ["`server.prot`", "`server.port`", "`auth.isuer`", "`auth.issuer`", &path.display().to_string()] {
        assert!(message.contains(expected), "{expected} in: {message}");
    }
    assert_eq!(
        unknown_keys(Err(err)),
        vec![in_file(&path, "auth.isuer", "auth.issuer"), in_file(&path, "server.prot", "server.port")]
    );
}

#[test]
fn an_unknown_section_is_refused_with_the_nearest_section() {
    let (_dir, path) = config_file("[servr]\nport = 9000\n");
    assert_eq!(unknown_keys(load(Some(&path), &[])), vec![in_file(&path, "servr", "server")]);
}

#[test]
fn webhook_receivers_are_webhooks_tables_and_a_singular_webhook_table_is_refused() {
    let receiver = "env = \"production\"\nurl = \"http://alerts.internal/cohort\"\nsecret = \"s\"\n";
    let (_dir, singular) = config_file(&format!("[[webhook]]\n{receiver}"));
    assert_eq!(unknown_keys(load(Some(&singular), &[])), vec![in_file(&singular, "webhook", "webhooks")]);

    let (_dir, plural) = config_file(&format!("[[webhooks]]\n{receiver}"));
    let settings = load(Some(&plural), &[]).expect("[[webhooks]] loads");
    assert_eq!(settings.webhooks.len(), 1);
    assert_eq!(settings.webhooks[0].url, "http://alerts.internal/cohort");

    let (_dir, misspelt) = config_file(&format!("[[webhooks]]\n{receiver}\n[[webhooks]]\nenv = \"*\"\nurll = \"x\"\n"));
    assert_eq!(
        unknown_keys(load(Some(&misspelt), &[])),
        vec![in_file(&misspelt, "webhooks[1].urll", "webhooks[1].url")]
    );
}

#[test]
fn a_misspelt_environment_variable_stops_loading_naming_it_and_the_nearest_known_one() {
    let keys = unknown_keys(load(
        None,
        &[("COHORT_SERVER__PROT", "9000"), ("COHORT_SERVER_PORT", "9000"), ("COHORT_AUTH__ISUER", "x")],
    ));
    assert_eq!(
        keys,
        vec![
            in_env("COHORT_AUTH__ISUER", "COHORT_AUTH__ISSUER"),
            in_env("COHORT_SERVER_PORT", "COHORT_SERVER__PORT"),
            in_env("COHORT_SERVER__PROT", "COHORT_SERVER__PORT"),
        ]
    );
    let message = ConfigError::UnknownKeys(keys).to_string();
    assert!(message.contains("COHORT_AUTH__ISUER (did you mean COHORT_AUTH__ISSUER?)"), "{message}");
}

#[test]
fn mistakes_in_the_file_and_the_environment_are_reported_together() {
    let (_dir, path) = config_file("[server]\nprot = 9000\n");
    let keys = unknown_keys(load(Some(&path), &[("COHORT_LOG__LEVLE", "debug")]));
    assert_eq!(
        keys,
        vec![in_file(&path, "server.prot", "server.port"), in_env("COHORT_LOG__LEVLE", "COHORT_LOG__LEVEL")]
    );
}

#[test]
fn known_keys_from_the_file_and_the_environment_still_apply() {
    let (_dir, path) = config_file("[server]\nport = 9000\n\n[auth]\nissuer = \"https://id.example\"\n");
    let settings =
        load(Some(&path), &[("COHORT_SERVER__WORKERS", "3"), ("COHORT_AUTH__AUDIENCE", "cohort")]).expect("loads");
    assert_eq!(settings.server.port, 9000);
    assert_eq!(settings.server.workers, 3);
    assert_eq!(settings.auth.issuer, "https://id.example");
    assert_eq!(settings.auth.audience, "cohort");
}

#[test]
fn the_command_lines_own_variables_and_other_programs_variables_are_not_settings() {
    let settings = load(
        None,
        &[
            ("COHORT_TOKEN", "a.b.c"),
            ("COHORT_TOKEN_FILE", "/run/secrets/cohort"),
            ("COHORT_URL", "http://127.0.0.1:8080"),
            ("COHORT_ENV", "staging"),
            ("PATH", "/usr/bin"),
            ("RUST_LOG", "debug"),
        ],
    )
    .expect("loads");
    assert_eq!(settings.server.port, 8080, "the defaults, untouched");
}

#[test]
fn token_lifetime_limits_are_read_per_scope_and_checked() {
    let (_dir, path) = config_file("[auth.max_ttl]\nadmin = \"12h\"\n");
    let settings = load(Some(&path), &[("COHORT_AUTH__MAX_TTL__EVAL", "30d")]).expect("loads");
    let limits = settings.auth.max_ttl;
    assert_eq!(limits.admin, std::time::Duration::from_secs(12 * 3_600));
    assert_eq!(limits.eval, std::time::Duration::from_secs(30 * 86_400), "from the environment");
    assert_eq!(limits.read, std::time::Duration::from_secs(90 * 86_400), "the default");
    let (_dir, path) = config_file("[auth.max_ttl]\nevl = \"1d\"\n");
    assert_eq!(unknown_keys(load(Some(&path), &[])), vec![in_file(&path, "auth.max_ttl.evl", "auth.max_ttl.eval")]);
    for bad in ["0s", "a while"] {
        let (_dir, path) = config_file(&format!("[auth.max_ttl]\nkill = \"{bad}\"\n"));
        let error = load(Some(&path), &[]).expect_err("refused").to_string();
        assert!(error.contains(bad), "{bad}: {error}");
    }
}

#[test]
fn a_redis_topology_is_chosen_by_which_setting_is_given_and_two_are_refused() {
    use cohort::config::{RedisTopologySetting, StoreKind};
    let cluster = load(None, &[("COHORT_STORE__REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000,redis://127.0.0.1:7001")])
        .expect("loads");
    assert_eq!(cluster.store.kind, StoreKind::Redis, "cluster URLs imply the Redis store");
    assert_eq!(cluster.store.redis_topology().expect("valid"), Some(RedisTopologySetting::Cluster));
    let urls: Vec<&str> = cluster.store.redis_cluster_urls.iter().map(|u| u.expose()).collect();
    assert_eq!(urls, ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"], "comma-separated in the environment");

    let (_dir, file) = config_file(
        "[store.redis_sentinel]\nmaster_name = \"cohort\"\nsentinels = [\"redis://127.0.0.1:26379\"]\npassword = \"s3cret\"\n",
    );
    let sentinel = load(Some(&file), &[]).expect("loads");
    assert_eq!(sentinel.store.redis_topology().expect("valid"), Some(RedisTopologySetting::Sentinel));
    assert!(!format!("{:?}", sentinel.store).contains("s3cret"), "the data nodes' password is redacted");
    let from_env = load(
        None,
        &[
            ("COHORT_STORE__REDIS_SENTINEL__MASTER_NAME", "cohort"),
            ("COHORT_STORE__REDIS_SENTINEL__SENTINELS", "redis://127.0.0.1:26379,redis://127.0.0.1:26380"),
        ],
    )
    .expect("loads");
    assert_eq!(from_env.store.redis_sentinel.sentinels.len(), 2);

    let two = load(
        None,
        &[
            ("COHORT_STORE__REDIS_URL", "redis://127.0.0.1:6379/"),
            ("COHORT_STORE__REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000"),
        ],
    );
    match two {
        Err(ConfigError::Invalid(message)) => assert!(message.contains("set only one of"), "{message}"),
        other => panic!("two topologies must not load: {:?}", other.map(|_| ())),
    }
    let no_sentinels = load(None, &[("COHORT_STORE__REDIS_SENTINEL__MASTER_NAME", "cohort")]);
    assert!(matches!(no_sentinels, Err(ConfigError::Invalid(m)) if m.contains("sentinels")));
}

#[test]
fn replication_must_be_confirmed_within_the_command_timeout() {
    let slow = load(
        None,
        &[
            ("COHORT_STORE__MIN_REPLICAS_ACK", "1"),
            ("COHORT_STORE__REPLICATION_TIMEOUT_MS", "3000"),
            ("COHORT_STORE__COMMAND_TIMEOUT_MS", "2000"),
        ],
    );
    assert!(matches!(slow, Err(ConfigError::Invalid(m)) if m.contains("replication_timeout_ms")));
    let settings = load(None, &[("COHORT_STORE__MIN_REPLICAS_ACK", "1")]).expect("defaults fit");
    assert_eq!((settings.store.min_replicas_ack, settings.store.replication_timeout_ms), (1, 500));
}
