//! One test suite, every store: the embedded store and the Redis store — on a single
//! `redis-server`, a Redis Cluster (3 masters, 3 replicas) and a Sentinel-managed
//! primary with a replica, all started by the harness — must behave identically.
//!
//! One cluster and one sentinel set serve the whole test binary (started on first use,
//! killed with the binary, see `redis_topology`); each test opens its own connections
//! (its own tokio runtime) under its own key prefix. On both, writes wait for one
//! replica (`min_replicas_ack = 1`), so the suite also shows acknowledged writes
//! replicated.

use crate::helpers::unique_prefix;
use crate::redis_harness::RedisServer;
use crate::redis_topology::{RedisCluster, RedisSentinelSet};
use cohort::store::redis::{RedisOptions, RedisTopology};
use cohort::store::{
    Action, AuditQuery, Bucket, BucketCounts, ChangeKind, EmbeddedStore, EnvData, EnvName, OutcomeCount, RedisStore,
    Revocation, Store, StoreError, StoredRelease, Write, WriteMeta,
};
use cohort_sdk::Release;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tempfile::TempDir;

/// A store under test, with what keeps it alive.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    _dir: Option<TempDir>,
    _redis: Option<RedisServer>,
}

pub fn embedded() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), 1_000).expect("opens");
    Fixture { store: Arc::new(store), _dir: Some(dir), _redis: None }
}

pub async fn redis_store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(RedisOptions::new(RedisTopology::Single { url: server.url() }, prefix))
        .await
        .expect("connects to the harness's redis")
}

pub async fn redis() -> Fixture {
    let server = RedisServer::start();
    let store = redis_store(&server, &unique_prefix()).await;
    Fixture { store: Arc::new(store), _dir: None, _redis: Some(server) }
}

/// The cluster every cluster test of this binary shares.
pub static CLUSTER: LazyLock<RedisCluster> = LazyLock::new(RedisCluster::start);

/// The sentinel set every sentinel test of this binary shares.
pub static SENTINELS: LazyLock<RedisSentinelSet> = LazyLock::new(RedisSentinelSet::start);

/// Options for a topology shared by many tests: a unique prefix, one replica asked
/// for, timeouts generous for a loaded machine (nothing here measures speed).
fn replicated_options(topology: RedisTopology) -> RedisOptions {
    RedisOptions {
        command_timeout: Duration::from_secs(5),
        min_replicas_ack: 1,
        replication_timeout: Duration::from_secs(2),
        ..RedisOptions::new(topology, unique_prefix())
    }
}

pub async fn redis_cluster() -> Fixture {
    let topology = RedisTopology::Cluster { urls: CLUSTER.urls() };
    let store = RedisStore::connect(replicated_options(topology)).await.expect("connects to the cluster");
    Fixture { store: Arc::new(store), _dir: None, _redis: None }
}

pub async fn redis_sentinel() -> Fixture {
    let topology = RedisTopology::Sentinel {
        master_name: SENTINELS.master_name().to_owned(),
        sentinels: SENTINELS.sentinel_urls(),
        username: None,
        password: None,
        db: 0,
    };
    let store = RedisStore::connect(replicated_options(topology)).await.expect("connects through the sentinels");
    Fixture { store: Arc::new(store), _dir: None, _redis: None }
}

/// The fixture with `production` and `staging` created, as a new deployment has them.
pub async fn with_envs(f: Fixture) -> Fixture {
    for name in ["production", "staging"] {
        f.store.create_environment(&env(name)).await.expect("creates the environment");
    }
    f
}

fn meta() -> WriteMeta {
    WriteMeta::now("suite", Action::Update, None)
}

fn env(name: &str) -> EnvName {
    EnvName::parse(name).expect("valid env")
}

fn release(key: &str, v2: u32) -> Release {
    Release::new(key, ["v1", "v2"]).with_allocation("v2", v2)
}

macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod embedded_store {
            $(#[tokio::test] async fn $test() { super::$test(super::with_envs(super::embedded()).await).await })*
        }
        mod redis_store {
            $(#[tokio::test] async fn $test() { super::$test(super::with_envs(super::redis().await).await).await })*
        }
        mod redis_cluster_store {
            $(#[tokio::test] async fn $test() {
                super::$test(super::with_envs(super::redis_cluster().await).await).await
            })*
        }
        mod redis_sentinel_store {
            $(#[tokio::test] async fn $test() {
                super::$test(super::with_envs(super::redis_sentinel().await).await).await
            })*
        }
    };
}

store_suite!(
    a_write_to_an_environment_never_created_is_refused_and_creates_nothing,
    a_write_below_the_writers_high_water_mark_is_refused_and_changes_nothing,
    an_environment_is_deleted_only_when_empty_and_comes_back_above_its_old_revision,
    a_reseed_overwrites_the_environment_above_every_revision_with_one_audit_entry,
    a_created_release_loads_back_with_its_revision,
    creating_an_existing_key_conflicts_and_changes_nothing,
    a_stale_revision_is_refused_and_changes_nothing,
    updating_or_deleting_a_missing_release_is_not_found,
    delete_honours_an_expected_revision,
    kill_all_sets_and_clears_with_its_reason,
    every_write_bumps_the_environment_revision_by_one,
    changes_are_read_in_order_after_a_revision,
    a_reader_waiting_for_changes_wakes_on_a_write,
    waiting_without_changes_returns_empty,
    environments_are_isolated,
    of_fifty_concurrent_updates_at_one_revision_exactly_one_wins,
    a_write_and_its_audit_entry_land_together,
    a_refused_write_leaves_neither_change_nor_audit_entry,
    the_audit_log_pages_newest_first,
    outcomes_are_counted_in_ten_second_buckets,
    outcome_reads_are_inclusive_per_release_and_per_environment,
    a_revocation_is_a_change_with_its_audit_entry_and_loads_back,
    revoking_again_replaces_and_expired_revocations_are_dropped_by_the_next,
    a_revocation_below_the_high_water_mark_or_in_a_missing_environment_writes_nothing,
    a_reseed_keeps_the_stored_revocations_and_adds_the_seeds,
);

async fn a_created_release_loads_back_with_its_revision(f: Fixture) {
    let prod = env("production");
    let mut r = release("checkout", 5_000);
    r.description = "new checkout 🚀".into();
    let change = f.store.write(&prod, Write::Create(r.clone()), &meta()).await.expect("created");
    assert_eq!(change.revision, 1);
    assert_eq!(change.kind, ChangeKind::Upsert { release: r.clone() });
    let data = f.store.load(&prod).await.expect("loads");
    assert_eq!(data.revision, 1);
    assert_eq!(data.releases.len(), 1);
    assert_eq!(data.releases[0].release, r);
    assert_eq!(data.releases[0].revision, 1);
    assert_eq!(f.store.environments().await.expect("envs"), vec![prod.clone(), env("staging")]);
    assert_eq!(f.store.revision(&prod).await.expect("rev"), 1);
}

async fn creating_an_existing_key_conflicts_and_changes_nothing(f: Fixture) {
    let prod = env("production");
    f.store.write(&prod, Write::Create(release("checkout", 1)), &meta()).await.expect("created");
    let err = f.store.write(&prod, Write::Create(release("checkout", 2)), &meta()).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(k) if k == "checkout"));
    let data = f.store.load(&prod).await.expect("loads");
    assert_eq!(data.revision, 1);
    assert_eq!(data.releases[0].release.allocation["v2"], 1);
    assert!(f.store.changes_after(&prod, 1, Duration::ZERO).await.expect("reads").is_empty());
}

async fn a_stale_revision_is_refused_and_changes_nothing(f: Fixture) {
    let prod = env("production");
    f.store.write(&prod, Write::Create(release("checkout", 1)), &meta()).await.expect("created");
    f.store
        .write(&prod, Write::Update { release: release("checkout", 2), expected: 1 }, &meta())
        .await
        .expect("updated");
    let err = f
        .store
        .write(&prod, Write::Update { release: release("checkout", 3), expected: 1 }, &meta())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::RevisionMismatch { expected: 1, current: 2, .. }), "{err:?}");
    let data = f.store.load(&prod).await.expect("loads");
    assert_eq!((data.revision, data.releases[0].revision), (2, 2));
    assert_eq!(data.releases[0].release.allocation["v2"], 2);
    let changes = f.store.changes_after(&prod, 0, Duration::ZERO).await.expect("reads");
    assert_eq!(changes.iter().map(|c| c.revision).collect::<Vec<_>>(), vec![1, 2]);
}

async fn updating_or_deleting_a_missing_release_is_not_found(f: Fixture) {
    let prod = env("production");
    let err =
        f.store.write(&prod, Write::Update { release: release("ghost", 1), expected: 1 }, &meta()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(k) if k == "ghost"));
    let err = f.store.write(&prod, Write::Delete { key: "ghost".into(), expected: None }, &meta()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
    assert_eq!(f.store.revision(&prod).await.expect("rev"), 0);
}

async fn delete_honours_an_expected_revision(f: Fixture) {
    let prod = env("production");
    f.store.write(&prod, Write::Create(release("a", 1)), &meta()).await.expect("created");
    f.store.write(&prod, Write::Create(release("b", 1)), &meta()).await.expect("created");
    let err = f.store.write(&prod, Write::Delete { key: "a".into(), expected: Some(2) }, &meta()).await.unwrap_err();
    assert!(matches!(err, StoreError::RevisionMismatch { current: 1, .. }));
    let change =
        f.store.write(&prod, Write::Delete { key: "a".into(), expected: Some(1) }, &meta()).await.expect("deleted");
    assert_eq!(change.kind, ChangeKind::Delete { key: "a".into() });
    let data = f.store.load(&prod).await.expect("loads");
    assert_eq!(data.releases.iter().map(|r| r.release.key.as_str()).collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(data.revision, 3);
}

async fn kill_all_sets_and_clears_with_its_reason(f: Fixture) {
    let prod = env("production");
    let change = f
        .store
        .write(&prod, Write::KillAll { on: true, reason: Some("pager: 5xx".into()) }, &meta())
        .await
        .expect("killed");
    assert_eq!(change.kind, ChangeKind::KillAll { on: true, reason: Some("pager: 5xx".into()) });
    let data = f.store.load(&prod).await.expect("loads");
    assert!(data.kill_all);
    assert_eq!(data.kill_reason.as_deref(), Some("pager: 5xx"));
    f.store.write(&prod, Write::KillAll { on: false, reason: None }, &meta()).await.expect("unkilled");
    let data = f.store.load(&prod).await.expect("loads");
    assert!(!data.kill_all);
    assert_eq!(data.kill_reason, None);
    assert_eq!(data.revision, 2);
}

async fn every_write_bumps_the_environment_revision_by_one(f: Fixture) {
    let prod = env("production");
    let mut revisions = Vec::new();
    revisions.push(f.store.write(&prod, Write::Create(release("a", 1)), &meta()).await.expect("w").revision);
    revisions.push(f.store.write(&prod, Write::Create(release("b", 1)), &meta()).await.expect("w").revision);
    revisions.push(
        f.store
            .write(&prod, Write::Update { release: release("a", 9), expected: 1 }, &meta())
            .await
            .expect("w")
            .revision,
    );
    revisions.push(f.store.write(&prod, Write::KillAll { on: true, reason: None }, &meta()).await.expect("w").revision);
    revisions.push(
        f.store.write(&prod, Write::Delete { key: "b".into(), expected: None }, &meta()).await.expect("w").revision,
    );
    assert_eq!(revisions, vec![1, 2, 3, 4, 5]);
    let data = f.store.load(&prod).await.expect("loads");
    assert_eq!(data.releases[0].revision, 3, "a release's revision is the env revision of its last write");
}

async fn changes_are_read_in_order_after_a_revision(f: Fixture) {
    let prod = env("production");
    for key in ["a", "b", "c"] {
        f.store.write(&prod, Write::Create(release(key, 1)), &meta()).await.expect("w");
    }
    let changes = f.store.changes_after(&prod, 1, Duration::ZERO).await.expect("reads");
    let keys: Vec<_> = changes
        .iter()
        .map(|c| match &c.kind {
            ChangeKind::Upsert { release } => (c.revision, release.key.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(keys, vec![(2, "b".to_owned()), (3, "c".to_owned())]);
}

async fn a_reader_waiting_for_changes_wakes_on_a_write(f: Fixture) {
    let prod = env("production");
    let store = Arc::clone(&f.store);
    let reader = {
        let prod = prod.clone();
        tokio::spawn(async move { store.changes_after(&prod, 0, Duration::from_secs(20)).await })
    };
    // Let the reader block first; correctness does not depend on it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.store.write(&prod, Write::Create(release("late", 1)), &meta()).await.expect("w");
    let changes = reader.await.expect("joined").expect("reads");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].revision, 1);
}

async fn waiting_without_changes_returns_empty(f: Fixture) {
    let prod = env("production");
    f.store.write(&prod, Write::Create(release("a", 1)), &meta()).await.expect("w");
    let changes = f.store.changes_after(&prod, 1, Duration::from_millis(50)).await.expect("reads");
    assert!(changes.is_empty());
}

async fn environments_are_isolated(f: Fixture) {
    let (prod, staging) = (env("production"), env("staging"));
    f.store.write(&prod, Write::Create(release("checkout", 1)), &meta()).await.expect("w");
    f.store.write(&staging, Write::Create(release("checkout", 7)), &meta()).await.expect("w");
    f.store.write(&staging, Write::KillAll { on: true, reason: None }, &meta()).await.expect("w");
    let p = f.store.load(&prod).await.expect("loads");
    let s = f.store.load(&staging).await.expect("loads");
    assert_eq!((p.revision, p.kill_all, p.releases[0].release.allocation["v2"]), (1, false, 1));
    assert_eq!((s.revision, s.kill_all, s.releases[0].release.allocation["v2"]), (2, true, 7));
    let mut envs = f.store.environments().await.expect("envs");
    envs.sort();
    assert_eq!(envs, vec![prod, staging]);
}

async fn of_fifty_concurrent_updates_at_one_revision_exactly_one_wins(f: Fixture) {
    let prod = env("production");
    f.store.write(&prod, Write::Create(release("checkout", 0)), &meta()).await.expect("w");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=50u32 {
        let store = Arc::clone(&f.store);
        let prod = prod.clone();
        tasks.spawn(async move {
            (i, store.write(&prod, Write::Update { release: release("checkout", i), expected: 1 }, &meta()).await)
        });
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("joined") {
            (i, Ok(_)) => winners.push(i),
            (_, Err(StoreError::RevisionMismatch { .. })) => conflicts += 1,
            (_, Err(e)) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner");
    assert_eq!(conflicts, 49);
    let data = f.store.load(&prod).await.expect("loads");
    assert_eq!(data.revision, 2, "nothing lost, nothing doubled");
    assert_eq!(data.releases[0].release.allocation["v2"], winners[0]);
}

async fn a_write_and_its_audit_entry_land_together(f: Fixture) {
    let prod = env("production");
    let created = WriteMeta::now("alice", Action::Create, None);
    f.store.write(&prod, Write::Create(release("checkout", 0)), &created).await.expect("w");
    let killed = WriteMeta::now("oncall", Action::Kill, Some("5xx".into()));
    let mut dead = release("checkout", 0);
    dead.killed = true;
    f.store.write(&prod, Write::Update { release: dead.clone(), expected: 1 }, &killed).await.expect("w");
    let all = WriteMeta::now("oncall", Action::KillAll, Some("incident".into()));
    f.store.write(&prod, Write::KillAll { on: true, reason: Some("incident".into()) }, &all).await.expect("w");

    let entries = f.store.audit(&prod, &AuditQuery { limit: 10, ..AuditQuery::default() }).await.expect("audit");
    assert_eq!(entries.len(), 3);
    let (all, kill, create) = (&entries[0], &entries[1], &entries[2]);
    assert_eq!((create.revision, create.actor.as_str(), create.action), (1, "alice", Action::Create));
    assert_eq!(create.before, None);
    assert_eq!(create.after, Some(serde_json::to_value(release("checkout", 0)).expect("json")));
    assert_eq!((kill.revision, kill.actor.as_str(), kill.reason.as_deref()), (2, "oncall", Some("5xx")));
    assert_eq!(kill.release.as_deref(), Some("checkout"));
    assert_eq!(kill.after, Some(serde_json::to_value(&dead).expect("json")));
    assert_eq!(all.release, None);
    assert_eq!(all.before, Some(serde_json::json!({"kill_all": false})));
    assert_eq!(all.after, Some(serde_json::json!({"kill_all": true, "kill_reason": "incident"})));
    assert_eq!(all.time_ms, created.time_ms.max(all.time_ms));
}

async fn a_refused_write_leaves_neither_change_nor_audit_entry(f: Fixture) {
    let prod = env("production");
    f.store.write(&prod, Write::Create(release("checkout", 0)), &meta()).await.expect("w");
    // A stale revision fails the compare-and-set inside the one atomic write.
    let stale = f.store.write(&prod, Write::Update { release: release("checkout", 9), expected: 7 }, &meta()).await;
    assert!(matches!(stale, Err(StoreError::RevisionMismatch { .. })));
    let duplicate = f.store.write(&prod, Write::Create(release("checkout", 9)), &meta()).await;
    assert!(matches!(duplicate, Err(StoreError::AlreadyExists(_))));
    let missing = f.store.write(&prod, Write::Delete { key: "ghost".into(), expected: None }, &meta()).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));

    let entries = f.store.audit(&prod, &AuditQuery { limit: 10, ..AuditQuery::default() }).await.expect("audit");
    assert_eq!(entries.len(), 1, "only the create is audited");
    let data = f.store.load(&prod).await.expect("loads");
    assert_eq!((data.revision, data.releases[0].release.allocation["v2"]), (1, 0));
    assert!(f.store.changes_after(&prod, 1, Duration::ZERO).await.expect("reads").is_empty());
}

async fn the_audit_log_pages_newest_first(f: Fixture) {
    let prod = env("production");
    f.store.write(&prod, Write::Create(release("a", 0)), &meta()).await.expect("w");
    f.store.write(&prod, Write::Create(release("b", 0)), &meta()).await.expect("w");
    for (i, expected) in (1..=3).zip([1, 3, 4]) {
        f.store.write(&prod, Write::Update { release: release("a", i), expected }, &meta()).await.expect("w");
    }
    let page = |release: Option<&str>, before: Option<u64>, limit: usize| AuditQuery {
        release: release.map(str::to_owned),
        before,
        limit,
    };
    let revisions = |entries: Vec<cohort::store::AuditEntry>| entries.iter().map(|e| e.revision).collect::<Vec<_>>();
    assert_eq!(revisions(f.store.audit(&prod, &page(None, None, 2)).await.expect("a")), vec![5, 4]);
    assert_eq!(revisions(f.store.audit(&prod, &page(None, Some(4), 2)).await.expect("a")), vec![3, 2]);
    assert_eq!(revisions(f.store.audit(&prod, &page(Some("a"), Some(4), 10)).await.expect("a")), vec![3, 1]);
    assert_eq!(revisions(f.store.audit(&prod, &page(Some("b"), None, 10)).await.expect("a")), vec![2]);
    assert!(f.store.audit(&prod, &page(None, Some(1), 10)).await.expect("a").is_empty());
    assert!(f.store.audit(&env("staging"), &page(None, None, 10)).await.expect("a").is_empty());
}

#[tokio::test]
async fn audit_retention_keeps_at_least_the_configured_count_on_both_stores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), 5).expect("opens"));
    let server = RedisServer::start();
    let mut redis = redis_store(&server, &unique_prefix()).await;
    redis =
        RedisStore::connect(RedisOptions { audit_retention: 5, ..redis.options().clone() }).await.expect("connects");
    for store in [embedded, Arc::new(redis) as Arc<dyn Store>] {
        let prod = env("production");
        store.create_environment(&prod).await.expect("creates the environment");
        store.write(&prod, Write::Create(release("a", 0)), &meta()).await.expect("w");
        for i in 1..300u32 {
            store
                .write(&prod, Write::Update { release: release("a", i % 100), expected: u64::from(i) }, &meta())
                .await
                .expect("w");
        }
        let kept = store.audit(&prod, &AuditQuery { limit: 1_000, ..AuditQuery::default() }).await.expect("audit");
        assert!(kept.len() >= 5, "{}: never below the retention ({} kept)", store.kind(), kept.len());
        assert!(kept.len() < 300, "{}: old entries are trimmed", store.kind());
        assert_eq!(kept.iter().take(5).map(|e| e.revision).collect::<Vec<_>>(), vec![300, 299, 298, 297, 296]);
    }
}

async fn a_write_to_an_environment_never_created_is_refused_and_creates_nothing(f: Fixture) {
    let typo = env("prodution");
    let refused = f.store.write(&typo, Write::KillAll { on: true, reason: None }, &meta()).await;
    assert!(matches!(refused, Err(StoreError::EnvironmentNotFound(ref e)) if e == "prodution"), "{refused:?}");
    assert!(matches!(f.store.load(&typo).await, Err(StoreError::EnvironmentNotFound(_))));
    assert!(!f.store.environments().await.expect("lists").contains(&typo));
    assert!(matches!(f.store.create_environment(&env("production")).await, Err(StoreError::EnvironmentExists(_))));
}

async fn a_write_below_the_writers_high_water_mark_is_refused_and_changes_nothing(f: Fixture) {
    let prod = env("production");
    f.store.write(&prod, Write::Create(release("a", 0)), &meta()).await.expect("w");
    let behind = WriteMeta { floor: 5, ..meta() };
    let refused = f.store.write(&prod, Write::KillAll { on: true, reason: None }, &behind).await;
    assert!(matches!(refused, Err(StoreError::Regressed { stored: 1, seen: 5, .. })), "{refused:?}");
    assert_eq!(f.store.revision(&prod).await.expect("rev"), 1);
    assert!(!f.store.load(&prod).await.expect("load").kill_all);
    let at_mark = WriteMeta { floor: 1, ..meta() };
    assert!(f.store.write(&prod, Write::KillAll { on: true, reason: None }, &at_mark).await.is_ok());
}

async fn an_environment_is_deleted_only_when_empty_and_comes_back_above_its_old_revision(f: Fixture) {
    let staging = env("staging");
    f.store.write(&staging, Write::Create(release("a", 0)), &meta()).await.expect("w");
    let refused = f.store.delete_environment(&staging).await;
    assert!(matches!(refused, Err(StoreError::EnvironmentNotEmpty { releases: 1, .. })), "{refused:?}");
    f.store.write(&staging, Write::Delete { key: "a".into(), expected: None }, &meta()).await.expect("w");
    assert_eq!(f.store.delete_environment(&staging).await.expect("deletes"), 2);
    assert!(!f.store.environments().await.expect("lists").contains(&staging));
    assert_eq!(f.store.deleted_environments().await.expect("tombstones"), vec![(staging.clone(), 2)]);
    assert!(matches!(f.store.load(&staging).await, Err(StoreError::EnvironmentNotFound(_))));
    // Re-created, it continues from its old revision: no instance sees it go backwards.
    assert_eq!(f.store.create_environment(&staging).await.expect("re-creates"), 2);
    assert_eq!(f.store.revision(&staging).await.expect("rev"), 2);
    assert!(f.store.deleted_environments().await.expect("tombstones").is_empty());
}

async fn a_reseed_overwrites_the_environment_above_every_revision_with_one_audit_entry(f: Fixture) {
    let prod = env("production");
    f.store.write(&prod, Write::Create(release("old", 0)), &meta()).await.expect("w");
    let mut killed = release("kept", 10);
    killed.killed = true;
    let seed = EnvData {
        revision: 9,
        kill_all: false,
        kill_reason: None,
        releases: vec![StoredRelease { revision: 9, release: killed.clone() }],
        reseeded_at: 0,
        revocations: Vec::new(),
    };
    let refused = f.store.reseed(&prod, &EnvData { revision: 1, ..seed.clone() }, &meta()).await;
    assert!(matches!(refused, Err(StoreError::Regressed { .. })), "a reseed must go above the store: {refused:?}");
    let meta = WriteMeta::now("oncall", Action::StoreReseed, Some("redis lost data".into()));
    assert_eq!(f.store.reseed(&prod, &seed, &meta).await.expect("reseeds"), 9);
    let loaded = f.store.load(&prod).await.expect("load");
    assert_eq!((loaded.revision, loaded.reseeded_at), (9, 9));
    assert_eq!(loaded.releases, vec![StoredRelease { revision: 9, release: killed }]);
    let audit = f.store.audit(&prod, &AuditQuery { limit: 10, ..AuditQuery::default() }).await.expect("audit");
    assert_eq!((audit[0].revision, audit[0].action, audit[0].actor.as_str()), (9, Action::StoreReseed, "oncall"));
    // Writes go on above the seed.
    let next = f.store.write(&prod, Write::KillAll { on: true, reason: None }, &WriteMeta { floor: 9, ..meta }).await;
    assert_eq!(next.expect("writes").revision, 10);
}

fn outcome(release: &str, version: &str, ok: u64, error: u64) -> OutcomeCount {
    OutcomeCount { release: release.into(), version: version.into(), ok, error }
}

fn bucket_counts(bucket_start_ms: u64, version: &str, ok: u64, error: u64) -> BucketCounts {
    BucketCounts { bucket_start_ms, version: version.into(), ok, error }
}

/// A minute boundary (so also a bucket boundary) an hour ago: recent enough that no
/// store prunes its counts as expired.
fn hour_ago() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    (now - 3_600_000) / 60_000 * 60_000
}

async fn outcomes_are_counted_in_ten_second_buckets(f: Fixture) {
    let (prod, t) = (env("production"), hour_ago());
    for (at, ok, error) in [(t, 1, 1), (t + 9_999, 2, 0), (t + 10_000, 4, 4), (t + 25_000, 8, 0)] {
        let bucket = Bucket::containing(at);
        f.store.record_outcomes(&prod, bucket, &[outcome("checkout", "v2", ok, error)]).await.expect("recorded");
    }
    f.store.record_outcomes(&prod, Bucket::containing(t), &[outcome("checkout", "v1", 5, 0)]).await.expect("rec");
    let read = f.store.outcomes(&prod, "checkout", Bucket::containing(t), Bucket::containing(t + 25_000)).await;
    assert_eq!(
        read.expect("read"),
        vec![
            bucket_counts(t, "v1", 5, 0),
            bucket_counts(t, "v2", 3, 1),
            bucket_counts(t + 10_000, "v2", 4, 4),
            bucket_counts(t + 20_000, "v2", 8, 0),
        ],
        "{}: the same 10 s add up, the next 10 s are apart, oldest first",
        f.store.kind()
    );
}

async fn outcome_reads_are_inclusive_per_release_and_per_environment(f: Fixture) {
    let (prod, staging, t) = (env("production"), env("staging"), hour_ago());
    let (first, second) = (Bucket::containing(t), Bucket::containing(t + 10_000));
    f.store.record_outcomes(&prod, first, &[outcome("checkout", "v2", 1, 0)]).await.expect("recorded");
    f.store
        .record_outcomes(&prod, second, &[outcome("checkout", "v2", 2, 0), outcome("search", "v2", 9, 9)])
        .await
        .expect("recorded");
    f.store.record_outcomes(&staging, second, &[outcome("checkout", "v2", 7, 7)]).await.expect("recorded");
    let read = |env: EnvName, release: &'static str, from: Bucket, to: Bucket| {
        let store = Arc::clone(&f.store);
        async move { store.outcomes(&env, release, from, to).await.expect("read") }
    };
    assert_eq!(read(prod.clone(), "checkout", second, second).await, vec![bucket_counts(t + 10_000, "v2", 2, 0)]);
    assert_eq!(read(prod.clone(), "checkout", first, first).await, vec![bucket_counts(t, "v2", 1, 0)]);
    assert!(read(prod.clone(), "checkout", second, first).await.is_empty(), "a reversed range is empty");
    assert_eq!(read(prod.clone(), "search", first, second).await, vec![bucket_counts(t + 10_000, "v2", 9, 9)]);
    assert_eq!(read(staging, "checkout", first, second).await, vec![bucket_counts(t + 10_000, "v2", 7, 7)]);
    assert!(read(env("dev"), "checkout", first, second).await.is_empty());
}

#[tokio::test]
async fn an_embedded_data_file_with_per_minute_outcomes_still_loads_without_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (prod, t) = (env("production"), hour_ago());
    // The first embedded layout (`cohort.json`), as written before 10 s buckets, when
    // counts were kept per minute under `outcomes`.
    let minute = t / 60_000;
    let releases = vec![StoredRelease { revision: 1, release: release("checkout", 5_000) }];
    let file = serde_json::json!({
        "format": 1,
        "environments": {"production": EnvData { revision: 1, releases, ..EnvData::default() }},
        "outcomes": {"production": {minute.to_string(): {"checkout\u{1f}v2": [7, 3]}}},
    });
    std::fs::write(dir.path().join("cohort.json"), serde_json::to_vec(&file).expect("json")).expect("written");

    let store = reopen(dir.path()).await;
    assert_eq!(store.load(&prod).await.expect("loads").releases.len(), 1, "its releases are kept");
    let (first, last) = (Bucket::containing(minute * 60_000), Bucket::containing(minute * 60_000 + 59_999));
    assert!(store.outcomes(&prod, "checkout", first, last).await.expect("read").is_empty(), "minute counts dropped");
    store.record_outcomes(&prod, first, &[outcome("checkout", "v2", 1, 0)]).await.expect("recorded");
    store.flush().await.expect("flushed");
    let path = store.dir().join("outcomes.json");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    assert_eq!(written["production"].as_object().map(|b| b.len()), Some(1), "the old counts are not written back");
    drop(store);
    let reopened = reopen(dir.path()).await;
    assert_eq!(
        reopened.outcomes(&prod, "checkout", first, last).await.expect("read"),
        vec![bucket_counts(t, "v2", 1, 0)]
    );
}

/// Opens the embedded store in `dir` again. A child process another test forks at that
/// moment may hold a copy of the lock file's descriptor until it execs: retry briefly.
async fn reopen(dir: &std::path::Path) -> EmbeddedStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match EmbeddedStore::open(dir, 1_000) {
            Ok(store) => return store,
            Err(error) if std::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("reopens: {error}"),
        }
    }
}

fn revocation(jti: Option<&str>, sub: Option<&str>, revoked_at: u64, expires_at: u64) -> Revocation {
    Revocation {
        jti: jti.map(str::to_owned),
        sub: sub.map(str::to_owned),
        revoked_at,
        expires_at,
        all_environments: false,
        actor: "oncall".into(),
        reason: Some("laptop stolen".into()),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn revoke_meta() -> WriteMeta {
    WriteMeta::now("oncall", Action::TokenRevoke, Some("laptop stolen".into()))
}

async fn a_revocation_is_a_change_with_its_audit_entry_and_loads_back(f: Fixture) {
    let (prod, staging, now) = (env("production"), env("staging"), now_secs());
    f.store.write(&prod, Write::Create(release("checkout", 0)), &meta()).await.expect("w");
    let by_jti = revocation(Some("abc123"), None, now, now + 3_600);
    let change = f.store.write(&prod, Write::Revoke(by_jti.clone()), &revoke_meta()).await.expect("revokes");
    assert_eq!(change.revision, 2, "{}: a revocation bumps the revision like any change", f.store.kind());
    assert_eq!(change.kind, ChangeKind::Revoke { revocation: by_jti.clone() });
    let followed = f.store.changes_after(&prod, 1, Duration::ZERO).await.expect("changes");
    assert_eq!(followed.iter().map(|c| &c.kind).collect::<Vec<_>>(), vec![&change.kind], "followers see it");
    let by_sub = revocation(None, Some("alice"), now, now + 3_600);
    f.store.write(&prod, Write::Revoke(by_sub.clone()), &revoke_meta()).await.expect("revokes");
    let loaded = f.store.load(&prod).await.expect("load");
    assert_eq!(loaded.revocations, vec![by_jti.clone(), by_sub], "in key order: jti:…, sub:…");
    assert_eq!(loaded.releases.len(), 1, "releases untouched");
    assert!(f.store.load(&staging).await.expect("load").revocations.is_empty(), "per environment");
    let audit = f.store.audit(&prod, &AuditQuery { limit: 10, ..AuditQuery::default() }).await.expect("audit");
    let entry = &audit[1];
    assert_eq!((entry.revision, entry.action, entry.actor.as_str()), (2, Action::TokenRevoke, "oncall"));
    assert_eq!((entry.release.as_deref(), entry.before.as_ref()), (None, None));
    assert_eq!(entry.after, Some(serde_json::to_value(&by_jti).expect("json")));
    assert_eq!(entry.reason.as_deref(), Some("laptop stolen"));
}

async fn revoking_again_replaces_and_expired_revocations_are_dropped_by_the_next(f: Fixture) {
    let (prod, now) = (env("production"), now_secs());
    let stale = revocation(Some("old"), None, now - 7_200, now - 10);
    let first = revocation(None, Some("alice"), now - 60, now + 3_600);
    for r in [&stale, &first] {
        f.store.write(&prod, Write::Revoke(r.clone()), &revoke_meta()).await.expect("revokes");
    }
    let again = revocation(None, Some("alice"), now, now + 7_200);
    f.store.write(&prod, Write::Revoke(again.clone()), &revoke_meta()).await.expect("revokes");
    let loaded = f.store.load(&prod).await.expect("load");
    assert_eq!(loaded.revocations, vec![again.clone()], "{}: replaced, and the expired one dropped", f.store.kind());
    let audit = f.store.audit(&prod, &AuditQuery { limit: 1, ..AuditQuery::default() }).await.expect("audit");
    assert_eq!(audit[0].before, Some(serde_json::to_value(&first).expect("json")), "the audit shows what it replaced");
}

async fn a_revocation_below_the_high_water_mark_or_in_a_missing_environment_writes_nothing(f: Fixture) {
    let (prod, now) = (env("production"), now_secs());
    let r = revocation(Some("abc"), None, now, now + 60);
    let refused = f.store.write(&prod, Write::Revoke(r.clone()), &WriteMeta { floor: 5, ..revoke_meta() }).await;
    assert!(matches!(refused, Err(StoreError::Regressed { stored: 0, seen: 5, .. })), "{refused:?}");
    let missing = f.store.write(&env("nowhere"), Write::Revoke(r), &revoke_meta()).await;
    assert!(matches!(missing, Err(StoreError::EnvironmentNotFound(_))), "{missing:?}");
    let loaded = f.store.load(&prod).await.expect("load");
    assert!(loaded.revocations.is_empty() && loaded.revision == 0, "{}: nothing written", f.store.kind());
    assert!(f.store.audit(&prod, &AuditQuery { limit: 10, ..AuditQuery::default() }).await.expect("audit").is_empty());
}

async fn a_reseed_keeps_the_stored_revocations_and_adds_the_seeds(f: Fixture) {
    let (prod, now) = (env("production"), now_secs());
    let stored = revocation(Some("stored"), None, now, now + 60);
    f.store.write(&prod, Write::Revoke(stored.clone()), &revoke_meta()).await.expect("revokes");
    let seeded = revocation(None, Some("bob"), now, now + 60);
    let seed = EnvData { revision: 5, revocations: vec![seeded.clone()], ..EnvData::default() };
    f.store.reseed(&prod, &seed, &WriteMeta::now("oncall", Action::StoreReseed, None)).await.expect("reseeds");
    let loaded = f.store.load(&prod).await.expect("load");
    assert!(loaded.revocations.contains(&seeded), "{}: the seed's revocations are written", f.store.kind());
    // What the store held besides stays: a reseed must never bring a revoked token back.
    assert!(loaded.revocations.contains(&stored), "{}: the stored ones are kept", f.store.kind());
}
