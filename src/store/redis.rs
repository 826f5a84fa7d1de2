//! The Redis store, for production and many instances sharing one Redis: a single
//! server, a Redis Cluster or a Sentinel-managed primary ([`RedisTopology`], see
//! [`conn`]).
//!
//! Keys carry the environment as a hash tag, so all keys of one environment share a
//! slot and a write is one Lua script — atomic, one round trip, valid on a cluster:
//! - `{prefix}:{env}:releases` hash key → release JSON
//! - `{prefix}:{env}:revs`     hash key → the release's revision
//! - `{prefix}:{env}:rev`      the environment revision
//! - `{prefix}:{env}:meta`     hash: `kill_all`, `kill_reason`
//! - `{prefix}:{env}:changes`  stream of changes, entry id `<revision>-0`, capped
//! - `{prefix}:{env}:audit`    stream of audit entries, entry id `<revision>-0`, capped
//!   at the retention count (`MAXLEN ~` trims only beyond it, never below)
//! - `{prefix}:{env}:revocations` hash `jti:<id>` / `sub:<name>` → revocation JSON;
//!   expired ones are dropped by the next revocation written
//! - `{prefix}:{env}:seen`     hash instance → the revision it served, reported by
//!   instances the store is behind (regressed); emptied by a reseed
//! - `{prefix}:environments`   set of the environments that exist (its own slot)
//! - `{prefix}:deleted_environments` hash name → revision at deletion (tombstones)
//!
//! On a cluster, keys of different slots never meet in one command, pipeline or script:
//! the environment listing and tombstones are updated by commands of their own.
//!
//! With `min_replicas_ack = n`, every write (and environment create/delete, reseed) is
//! followed by `WAIT n timeout` on the node that took it; fewer replicas in time is
//! [`StoreError::NotReplicated`] — the write is in the store but not acknowledged.
//!
//! An environment exists while its `rev` key does: it is created explicitly
//! (`SET rev NX`) and every write checks for it inside the script, so a write can never
//! re-create an environment that was deleted or lost with the data.

use super::outcomes::{bucket_key, field, split_field};
use super::{
    Action, AuditEntry, AuditQuery, Bucket, BucketCounts, Change, ChangeKind, EnvData, EnvName, NodeReport,
    OUTCOME_TTL_SECS, OutcomeCount, Revocation, SdkAck, Store, StoreError, StoredRelease, Write, WriteMeta,
};
use async_trait::async_trait;
use cohort_sdk::Release;
use redis::{RedisError, Script};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

mod conn;

pub use conn::RedisTopology;
use conn::{Conn, Connector};

/// Lua that sets `now_ms` to Redis's clock in ms (`TIME`). Shared by the clock read and
/// the write script's deadline check, so both read the clock the same way.
macro_rules! now_ms_lua {
    () => {
        r#"
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"#
    };
}

/// Lua: `rev` is set to the environment's highest revision — its `rev` key or, when
/// higher, the newest entry of its change or audit stream (KEYS[3], KEYS[5], KEYS[6]) —
/// so that the next revision never reuses a stream entry id. Shared by the write and
/// reseed scripts.
macro_rules! highest_revision_lua {
    () => {
        r#"
local rev = tonumber(redis.call('GET', KEYS[3]) or '0')
for _, stream in ipairs({KEYS[5], KEYS[6]}) do
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last > 0 then
    local last_rev = tonumber(string.match(last[1][1], '^(%d+)'))
    if last_rev > rev then rev = last_rev end
  end
end
"#
    };
}

/// The write script: compare, write, bump the revision, append the change — or, when
/// the comparison fails, touch nothing. Every check comes before the first write, and
/// the stream id is derived so `XADD` cannot be refused, so an error can never leave a
/// write half done.
///
/// It runs only until its deadline (ARGV 12, ms on Redis's own clock): a write that
/// reaches Redis later — held in a stalled server's buffers or a partitioned network
/// while the instance timed out and answered `store_unconfirmed` — is refused, so it
/// cannot land after that answer and undo a change acknowledged since.
const WRITE_SCRIPT: &str = concat!(
    r#"
-- KEYS: releases revs rev meta changes audit revocations seen (unused here)
-- ARGV: op key expected payload maxlen actor action reason time_ms audit_maxlen floor deadline_ms
-- (op `revoke`: key is the revocation's key, expected the revocation time in seconds)"#,
    now_ms_lua!(),
    r#"if now_ms > tonumber(ARGV[12]) then
  return {'late', '0'}
end
local op, key, expected, payload, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local actor, action, reason, time_ms, audit_maxlen = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local stored = redis.call('GET', KEYS[3])
if not stored then return {'no_env', '0'} end
if tonumber(stored) < tonumber(ARGV[11]) then return {'regressed', stored} end
local before = false
if op == 'revoke' then
  before = redis.call('HGET', KEYS[7], key)
elseif op ~= 'kill_all' then
  local current = redis.call('HGET', KEYS[2], key)
  if op == 'create' then
    if current then return {'exists', current} end
  else
    if not current then return {'missing', '0'} end
    if expected ~= '' and expected ~= current then return {'mismatch', current} end
  end
  before = redis.call('HGET', KEYS[1], key)
else
  local state = redis.call('HMGET', KEYS[4], 'kill_all', 'kill_reason')
  local was = {kill_all = state[1] == '1'}
  if state[1] == '1' and state[2] and state[2] ~= '' then was['kill_reason'] = state[2] end
  before = cjson.encode(was)
end
"#,
    highest_revision_lua!(),
    r#"rev = rev + 1
local id = tostring(rev) .. '-0'
local after = ''
local audit_release = key
redis.call('SET', KEYS[3], rev)
if op == 'delete' then
  redis.call('HDEL', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, id, 'type', 'delete', 'key', key)
elseif op == 'kill_all' then
  redis.call('HSET', KEYS[4], 'kill_all', expected, 'kill_reason', payload)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, id, 'type', 'kill_all', 'on', expected, 'reason', payload)
  local now = {kill_all = expected == '1'}
  if expected == '1' and payload ~= '' then now['kill_reason'] = payload end
  after = cjson.encode(now)
elseif op == 'revoke' then
  local now = tonumber(expected)
  local all = redis.call('HGETALL', KEYS[7])
  for i = 1, #all, 2 do
    local ok, r = pcall(cjson.decode, all[i + 1])
    if ok and type(r) == 'table' and tonumber(r['expires_at']) and tonumber(r['expires_at']) <= now then
      redis.call('HDEL', KEYS[7], all[i])
    end
  end
  redis.call('HSET', KEYS[7], key, payload)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, id, 'type', 'revoke', 'revocation', payload)
  after = payload
  audit_release = ''
else
  redis.call('HSET', KEYS[1], key, payload)
  redis.call('HSET', KEYS[2], key, rev)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, id, 'type', 'upsert', 'key', key, 'release', payload)
  after = payload
end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', audit_maxlen, id, 'time_ms', time_ms, 'actor', actor,
  'action', action, 'release', audit_release, 'before', before or '', 'after', after, 'reason', reason)
return {'ok', tostring(rev)}
"#
);

/// Redis's clock in ms, read on the node that holds the key (a write's deadline is set
/// on the clock that checks it).
const CLOCK_SCRIPT: &str = concat!(now_ms_lua!(), "return now_ms\n");

/// Take or renew a lease: the holder renews its own; anyone takes a free one.
const LEASE_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Create an environment: its revision key, unless it exists (0), or nothing past its
/// deadline (-1, as the write script). ARGV: revision deadline_ms
const CREATE_ENV_SCRIPT: &str = concat!(
    now_ms_lua!(),
    r#"if now_ms > tonumber(ARGV[2]) then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 1 end
return 0
"#
);

/// Delete an environment that holds no releases: every key of its slot; nothing past
/// its deadline. KEYS: releases revs rev meta changes audit revocations seen
/// ARGV: deadline_ms
const DELETE_ENV_SCRIPT: &str = concat!(
    now_ms_lua!(),
    r#"if now_ms > tonumber(ARGV[1]) then return {'late', '0'} end
local rev = redis.call('GET', KEYS[3])
if not rev then return {'missing', '0'} end
local n = redis.call('HLEN', KEYS[1])
if n > 0 then return {'not_empty', tostring(n)} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
return {'ok', rev}
"#
);

/// Overwrite an environment with a seed above every revision it holds, with one audit
/// entry. Revocations are added to those stored, never dropped: a reseed must not bring
/// a revoked token back. Nothing past its deadline: a reseed held in the network would
/// otherwise overwrite, when it lands, what was acknowledged since (a seed chosen above a
/// regressed instance's mark is above those writes too).
/// The instances' reports of what they had seen are emptied: every one is below the seed.
/// KEYS: releases revs rev meta changes audit revocations seen
/// ARGV: revision kill_all kill_reason time_ms actor action reason before after audit_maxlen
///       deadline_ms revocation_count, then that many (key, revocation json) pairs, then
///       (key, release json) pairs
const RESEED_SCRIPT: &str = concat!(
    now_ms_lua!(),
    r#"if now_ms > tonumber(ARGV[11]) then return {'late', '0'} end
"#,
    highest_revision_lua!(),
    r#"local seed = tonumber(ARGV[1])
if seed <= rev then return {'regressed', tostring(rev)} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[8])
local first = 13 + 2 * tonumber(ARGV[12])
for i = 13, first - 1, 2 do
  redis.call('HSET', KEYS[7], ARGV[i], ARGV[i + 1])
end
for i = first, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
end
redis.call('HSET', KEYS[4], 'kill_all', ARGV[2], 'kill_reason', ARGV[3], 'reseeded_at', ARGV[1])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[10], ARGV[1] .. '-0', 'time_ms', ARGV[4], 'actor', ARGV[5],
  'action', ARGV[6], 'release', '', 'before', ARGV[8], 'after', ARGV[9], 'reason', ARGV[7])
return {'ok', ARGV[1]}
"#
);

/// Connection settings for [`RedisStore::connect`].
#[derive(Clone)]
pub struct RedisOptions {
    /// Where the data lives: one server, a cluster, or a sentinel-managed primary.
    pub topology: RedisTopology,
    /// Key prefix (`cohort`); lets several deployments or tests share one Redis.
    pub prefix: String,
    /// Changes kept in each environment's stream.
    pub stream_max_len: u64,
    /// How long a command may take before the store counts as unavailable.
    pub command_timeout: Duration,
    /// Audit entries kept per environment (at least).
    pub audit_retention: u64,
    /// Replicas that must hold a write before it is acknowledged (`WAIT`); 0 = none.
    pub min_replicas_ack: u32,
    /// How long a write waits for those replicas.
    pub replication_timeout: Duration,
}

impl RedisOptions {
    /// Options for `topology` with the defaults of `config/default.toml`.
    pub fn new(topology: RedisTopology, prefix: impl Into<String>) -> RedisOptions {
        RedisOptions {
            topology,
            prefix: prefix.into(),
            stream_max_len: 10_000,
            command_timeout: Duration::from_secs(2),
            audit_retention: 1_000,
            min_replicas_ack: 0,
            replication_timeout: Duration::from_millis(500),
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The topology's Debug leaves URLs and passwords out.
        f.debug_struct("RedisOptions")
            .field("topology", &self.topology)
            .field("prefix", &self.prefix)
            .field("min_replicas_ack", &self.min_replicas_ack)
            .finish()
    }
}

/// The Redis store.
pub struct RedisStore {
    connector: Connector,
    manager: Conn,
    /// Dedicated connections for blocking `XREAD`s, which would otherwise stall every
    /// command multiplexed behind them.
    blocking: Mutex<Vec<Conn>>,
    options: RedisOptions,
    script: Script,
    clock: Script,
}

/// A script as sent to `topology`. On a cluster it declares itself (`#!lua`, Redis 7):
/// a script without flags is not known to write until it does, so a replica (whose
/// connection the cluster client puts in `READONLY` mode) runs it and fails at its first
/// write instead of redirecting — which is what a client with a stale slot map needs
/// after a demoted master came back as a replica. Declared, it counts as a write and is
/// redirected (`MOVED`), which the cluster client follows.
fn script_for(topology: &RedisTopology, body: &str) -> Script {
    match topology {
        RedisTopology::Cluster { .. } => Script::new(&format!("#!lua\n{body}")),
        _ => Script::new(body),
    }
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// A write that failed: refused before it was sent (nothing written), or sent without
/// an answer — timed out, or the connection dropped (redis reports a broken pipe and a
/// reset alike, and on a shared connection either may end a write already sent) — so a
/// stalled or dying Redis may still have applied it.
fn write_failed(e: RedisError) -> StoreError {
    let unanswered = e.is_timeout() || (e.is_connection_dropped() && !e.is_connection_refusal());
    if unanswered { StoreError::Unconfirmed(format!("redis: {e}")) } else { unavailable(e) }
}

/// A command that finishes a change its script already wrote (the listing, a tombstone)
/// failed: the change is in the store, whatever this error says of the connection.
fn finishing_failed(e: RedisError) -> StoreError {
    StoreError::Unconfirmed(format!("the change was written but not finished (redis: {e})"))
}

impl RedisStore {
    /// Prepares the connection without waiting for Redis: an unreachable Redis at start-up
    /// makes the instance unready, not dead (it connects when Redis answers). Fails only
    /// on an invalid URL.
    pub async fn connect(options: RedisOptions) -> Result<Self, StoreError> {
        let connector = Connector::new(&options.topology)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis configuration: {e}")))?;
        let manager = connector.connect(options.command_timeout).map_err(unavailable)?;
        let script = script_for(&options.topology, WRITE_SCRIPT);
        let clock = script_for(&options.topology, CLOCK_SCRIPT);
        Ok(RedisStore { connector, manager, blocking: Mutex::new(Vec::new()), options, script, clock })
    }

    /// The options it was connected with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    fn key(&self, env: &EnvName, suffix: &str) -> String {
        format!("{}:{{{}}}:{suffix}", self.options.prefix, env.as_str())
    }

    fn environments_key(&self) -> String {
        format!("{}:environments", self.options.prefix)
    }

    fn deleted_key(&self) -> String {
        format!("{}:deleted_environments", self.options.prefix)
    }

    /// Every key of `env` (for tests and operators; they share one cluster slot).
    pub fn env_keys(&self, env: &EnvName) -> Vec<String> {
        ["releases", "revs", "rev", "meta", "changes", "audit", "revocations", "seen"]
            .iter()
            .map(|s| self.key(env, s))
            .collect()
    }

    async fn blocking_connection(&self, wait: Duration) -> Result<Conn, StoreError> {
        if let Some(conn) = self.blocking.lock().await.pop() {
            return Ok(conn);
        }
        self.connector.connect_blocking(wait + self.options.command_timeout).await.map_err(unavailable)
    }

    /// The deadline of a change to `env` about to be sent on `conn`, on the clock of the
    /// node that will run it. The instance stops waiting a command timeout after it sends
    /// the change, which is after Redis read this clock: past the deadline, it has
    /// answered (or is about to), so the change's script refuses to run.
    async fn deadline_ms(&self, conn: &mut Conn, env: &EnvName) -> Result<u64, StoreError> {
        let now_ms: u64 = self.clock.key(self.key(env, "rev")).invoke_async(conn).await.map_err(unavailable)?;
        Ok(now_ms.saturating_add(u64::try_from(self.options.command_timeout.as_millis()).unwrap_or(u64::MAX)))
    }

    /// A change that reached Redis past its deadline: refused there, nothing written.
    fn late(&self, what: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "redis: the {what} reached redis after its deadline ({} ms after it was sent) and was not applied",
            self.options.command_timeout.as_millis()
        ))
    }

    /// After a write at `revision` on `conn`: waits until `min_replicas_ack` replicas
    /// hold it (`WAIT`, on the node that took the write to `env`), else
    /// [`StoreError::NotReplicated`]. A `WAIT` that fails says nothing about the
    /// replicas, so it counts as none.
    async fn replicated(&self, conn: &mut Conn, env: &EnvName, revision: u64) -> Result<(), StoreError> {
        let wanted = self.options.min_replicas_ack;
        if wanted == 0 {
            return Ok(());
        }
        let key = self.key(env, "rev");
        let replicas = match conn.wait_for_replicas(&key, wanted, self.options.replication_timeout).await {
            Ok(replicas) => replicas,
            Err(error) => {
                tracing::warn!(%env, revision, %error, "WAIT for replicas failed");
                0
            }
        };
        if replicas < wanted {
            return Err(StoreError::NotReplicated { env: env.to_string(), revision, replicas, wanted });
        }
        Ok(())
    }

    /// Lists `env` among the environments and clears its tombstone. Two commands: the
    /// two keys live in other slots than each other (and than the environment's).
    async fn list_environment(&self, conn: &mut Conn, env: &EnvName) -> Result<(), StoreError> {
        redis::cmd("SADD")
            .arg(self.environments_key())
            .arg(env.as_str())
            .exec_async(conn)
            .await
            .map_err(finishing_failed)?;
        redis::cmd("HDEL").arg(self.deleted_key()).arg(env.as_str()).exec_async(conn).await.map_err(finishing_failed)
    }
}

fn parse_release(json: &str, what: &str) -> Result<Release, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn parse_revocation(json: &str, what: &str) -> Result<Revocation, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("revocation {what}: {e}")))
}

fn parse_change(id: &str, fields: &HashMap<String, String>) -> Result<Change, StoreError> {
    let revision = id
        .split('-')
        .next()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("change id `{id}`")))?;
    let field = |name: &str| {
        fields.get(name).cloned().ok_or_else(|| StoreError::Corrupt(format!("change {id} lacks `{name}`")))
    };
    let kind = match field("type")?.as_str() {
        "upsert" => ChangeKind::Upsert { release: parse_release(&field("release")?, id)? },
        "delete" => ChangeKind::Delete { key: field("key")? },
        "kill_all" => {
            let reason = field("reason")?;
            ChangeKind::KillAll { on: field("on")? == "1", reason: Some(reason).filter(|r| !r.is_empty()) }
        }
        "revoke" => ChangeKind::Revoke { revocation: parse_revocation(&field("revocation")?, id)? },
        other => return Err(StoreError::Corrupt(format!("change {id} has unknown type `{other}`"))),
    };
    Ok(Change { revision, kind })
}

fn parse_audit(id: &str, fields: &HashMap<String, String>) -> Result<AuditEntry, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit entry {id}: {what}"));
    let revision = id.split('-').next().and_then(|r| r.parse().ok()).ok_or_else(|| corrupt("id"))?;
    let text = |name: &str| fields.get(name).filter(|v| !v.is_empty()).cloned();
    let json = |name: &str| -> Result<Option<serde_json::Value>, StoreError> {
        text(name).map(|v| serde_json::from_str(&v).map_err(|_| corrupt(name))).transpose()
    };
    Ok(AuditEntry {
        revision,
        time_ms: text("time_ms").and_then(|t| t.parse().ok()).ok_or_else(|| corrupt("time_ms"))?,
        actor: text("actor").unwrap_or_default(),
        action: text("action").as_deref().and_then(Action::parse).ok_or_else(|| corrupt("action"))?,
        release: text("release"),
        before: json("before")?,
        after: json("after")?,
        reason: text("reason"),
    })
}

type StreamReply = Option<Vec<(String, Vec<(String, HashMap<String, String>)>)>>;

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn environments(&self) -> Result<Vec<EnvName>, StoreError> {
        let mut conn = self.manager.clone();
        let names: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.environments_key()).query_async(&mut conn).await.map_err(unavailable)?;
        let mut envs: Vec<EnvName> = names.iter().filter_map(|n| EnvName::parse(n).ok()).collect();
        envs.sort();
        Ok(envs)
    }

    async fn deleted_environments(&self) -> Result<Vec<(EnvName, u64)>, StoreError> {
        let mut conn = self.manager.clone();
        let all: HashMap<String, u64> =
            redis::cmd("HGETALL").arg(self.deleted_key()).query_async(&mut conn).await.map_err(unavailable)?;
        Ok(all.into_iter().filter_map(|(n, r)| EnvName::parse(&n).ok().map(|e| (e, r))).collect())
    }

    async fn create_environment(&self, env: &EnvName) -> Result<u64, StoreError> {
        let mut conn = self.manager.clone();
        let tombstone: Option<u64> = redis::cmd("HGET")
            .arg(self.deleted_key())
            .arg(env.as_str())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let revision = tombstone.unwrap_or(0);
        let deadline_ms = self.deadline_ms(&mut conn, env).await?;
        let created: i64 = script_for(&self.options.topology, CREATE_ENV_SCRIPT)
            .key(self.key(env, "rev"))
            .arg(revision)
            .arg(deadline_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(write_failed)?;
        if created < 0 {
            return Err(self.late("environment create"));
        }
        // The revision key is the authority; the listing follows it (a crash in between
        // is healed by the next create, which finds the key and lists it).
        let listed = self.list_environment(&mut conn, env).await;
        if created == 0 {
            if let Err(error) = listed {
                tracing::debug!(%env, %error, "listing an existing environment failed; the next create lists it");
            }
            return Err(StoreError::EnvironmentExists(env.to_string()));
        }
        listed?;
        self.replicated(&mut conn, env, revision).await?;
        Ok(revision)
    }

    async fn delete_environment(&self, env: &EnvName) -> Result<u64, StoreError> {
        let mut conn = self.manager.clone();
        let deadline_ms = self.deadline_ms(&mut conn, env).await?;
        let script = script_for(&self.options.topology, DELETE_ENV_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for key in self.env_keys(env) {
            invocation.key(key);
        }
        invocation.arg(deadline_ms);
        let (status, value): (String, String) = invocation.invoke_async(&mut conn).await.map_err(write_failed)?;
        let number = |v: &str| v.parse::<u64>().map_err(|_| StoreError::Corrupt(format!("revision `{v}`")));
        match status.as_str() {
            "ok" => {
                let revision = number(&value)?;
                // The tombstone first: an environment missing from the listing without one
                // would look lost. Two commands: the keys live in different slots.
                redis::cmd("HSET")
                    .arg(self.deleted_key())
                    .arg(env.as_str())
                    .arg(revision)
                    .exec_async(&mut conn)
                    .await
                    .map_err(finishing_failed)?;
                redis::cmd("SREM")
                    .arg(self.environments_key())
                    .arg(env.as_str())
                    .exec_async(&mut conn)
                    .await
                    .map_err(finishing_failed)?;
                self.replicated(&mut conn, env, revision).await?;
                Ok(revision)
            }
            "missing" => Err(StoreError::EnvironmentNotFound(env.to_string())),
            "late" => Err(self.late("environment delete")),
            "not_empty" => {
                Err(StoreError::EnvironmentNotEmpty { env: env.to_string(), releases: number(&value)? as usize })
            }
            other => Err(StoreError::Corrupt(format!("delete script answered `{other}`"))),
        }
    }

    async fn reseed(&self, env: &EnvName, seed: &EnvData, meta: &WriteMeta) -> Result<u64, StoreError> {
        let mut conn = self.manager.clone();
        let stored: Option<u64> =
            redis::cmd("GET").arg(self.key(env, "rev")).query_async(&mut conn).await.map_err(unavailable)?;
        let entry = super::audit::reseed_entry(stored.unwrap_or(0), seed, meta);
        let deadline_ms = self.deadline_ms(&mut conn, env).await?;
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
        let script = script_for(&self.options.topology, RESEED_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for key in self.env_keys(env) {
            invocation.key(key);
        }
        invocation
            .arg(seed.revision)
            .arg(if seed.kill_all { "1" } else { "0" })
            .arg(seed.kill_reason.as_deref().filter(|_| seed.kill_all).unwrap_or(""))
            .arg(meta.time_ms)
            .arg(&meta.actor)
            .arg(meta.action.as_str())
            .arg(meta.reason.as_deref().unwrap_or(""))
            .arg(json(&entry.before))
            .arg(json(&entry.after))
            .arg(self.options.audit_retention.max(1))
            .arg(deadline_ms)
            .arg(seed.revocations.len());
        for revocation in &seed.revocations {
            let json = serde_json::to_string(revocation).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            invocation.arg(revocation.key()).arg(json);
        }
        for stored in &seed.releases {
            let release = serde_json::to_string(&stored.release).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            invocation.arg(&stored.release.key).arg(release);
        }
        let (status, value): (String, String) = invocation.invoke_async(&mut conn).await.map_err(write_failed)?;
        match status.as_str() {
            "ok" => {
                self.list_environment(&mut conn, env).await?;
                self.replicated(&mut conn, env, seed.revision).await?;
                Ok(seed.revision)
            }
            "regressed" => Err(StoreError::Regressed {
                env: env.to_string(),
                stored: value.parse().unwrap_or(0),
                seen: seed.revision,
            }),
            "late" => Err(self.late("reseed")),
            other => Err(StoreError::Corrupt(format!("reseed script answered `{other}`"))),
        }
    }

    async fn load(&self, env: &EnvName) -> Result<EnvData, StoreError> {
        let mut conn = self.manager.clone();
        // One MULTI/EXEC: a consistent view at one revision.
        let (releases, revs, revision, meta, revoked): (
            HashMap<String, String>,
            HashMap<String, u64>,
            Option<u64>,
            HashMap<String, String>,
            HashMap<String, String>,
        ) = redis::pipe()
            .atomic()
            .hgetall(self.key(env, "releases"))
            .hgetall(self.key(env, "revs"))
            .get(self.key(env, "rev"))
            .hgetall(self.key(env, "meta"))
            .hgetall(self.key(env, "revocations"))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut stored = Vec::with_capacity(releases.len());
        for (key, json) in releases {
            let revision =
                *revs.get(&key).ok_or_else(|| StoreError::Corrupt(format!("release `{key}` has no revision")))?;
            stored.push(StoredRelease { revision, release: parse_release(&json, &key)? });
        }
        let Some(revision) = revision else {
            return Err(StoreError::EnvironmentNotFound(env.to_string()));
        };
        stored.sort_by(|a, b| a.release.key.cmp(&b.release.key));
        let mut revocations =
            revoked.iter().map(|(key, json)| parse_revocation(json, key)).collect::<Result<Vec<_>, _>>()?;
        revocations.sort_by_key(Revocation::key);
        let kill_all = meta.get("kill_all").is_some_and(|v| v == "1");
        Ok(EnvData {
            revision,
            kill_all,
            kill_reason: meta.get("kill_reason").filter(|r| kill_all && !r.is_empty()).cloned(),
            releases: stored,
            reseeded_at: meta.get("reseeded_at").and_then(|r| r.parse().ok()).unwrap_or(0),
            revocations,
        })
    }

    async fn revision(&self, env: &EnvName) -> Result<u64, StoreError> {
        let mut conn = self.manager.clone();
        let rev: Option<u64> =
            redis::cmd("GET").arg(self.key(env, "rev")).query_async(&mut conn).await.map_err(unavailable)?;
        Ok(rev.unwrap_or(0))
    }

    async fn write(&self, env: &EnvName, write: Write, meta: &WriteMeta) -> Result<Change, StoreError> {
        let to_json = |r: &Release| serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string()));
        let (op, key, expected, payload) = match &write {
            Write::Create(r) => ("create", r.key.clone(), String::new(), to_json(r)?),
            Write::Update { release, expected } => {
                ("update", release.key.clone(), expected.to_string(), to_json(release)?)
            }
            Write::Delete { key, expected } => {
                ("delete", key.clone(), expected.map(|e| e.to_string()).unwrap_or_default(), String::new())
            }
            Write::KillAll { on, reason } => (
                "kill_all",
                String::new(),
                if *on { "1" } else { "0" }.to_owned(),
                reason.clone().filter(|_| *on).unwrap_or_default(),
            ),
            Write::Revoke(revocation) => (
                "revoke",
                revocation.key(),
                revocation.revoked_at.to_string(),
                serde_json::to_string(revocation).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
        };
        let mut conn = self.manager.clone();
        let deadline_ms = self.deadline_ms(&mut conn, env).await?;
        let mut invocation = self.script.prepare_invoke();
        for key in self.env_keys(env) {
            // Order matches the script: releases revs rev meta changes audit revocations seen.
            invocation.key(key);
        }
        invocation
            .arg(op)
            .arg(&key)
            .arg(&expected)
            .arg(&payload)
            .arg(self.options.stream_max_len)
            .arg(&meta.actor)
            .arg(meta.action.as_str())
            .arg(meta.reason.as_deref().unwrap_or(""))
            .arg(meta.time_ms)
            .arg(self.options.audit_retention.max(1))
            .arg(meta.floor)
            .arg(deadline_ms);
        let (status, value): (String, String) = invocation.invoke_async(&mut conn).await.map_err(write_failed)?;
        let number = |v: &str| v.parse::<u64>().map_err(|_| StoreError::Corrupt(format!("revision `{v}`")));
        match status.as_str() {
            "ok" => {
                let revision = number(&value)?;
                self.replicated(&mut conn, env, revision).await?;
                let kind = match write {
                    Write::Create(release) | Write::Update { release, .. } => ChangeKind::Upsert { release },
                    Write::Delete { key, .. } => ChangeKind::Delete { key },
                    Write::KillAll { on, reason } => ChangeKind::KillAll { on, reason: reason.filter(|_| on) },
                    Write::Revoke(revocation) => ChangeKind::Revoke { revocation },
                };
                Ok(Change { revision, kind })
            }
            "exists" => Err(StoreError::AlreadyExists(key)),
            "no_env" => Err(StoreError::EnvironmentNotFound(env.to_string())),
            "regressed" => {
                Err(StoreError::Regressed { env: env.to_string(), stored: number(&value)?, seen: meta.floor })
            }
            "missing" => Err(StoreError::NotFound(key)),
            "mismatch" => {
                Err(StoreError::RevisionMismatch { key, expected: number(&expected)?, current: number(&value)? })
            }
            "late" => Err(self.late("write")),
            other => Err(StoreError::Corrupt(format!("write script answered `{other}`"))),
        }
    }

    async fn audit(&self, env: &EnvName, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let mut conn = self.manager.clone();
        let key = self.key(env, "audit");
        let mut entries = Vec::new();
        let mut end = match query.before {
            Some(0) => return Ok(entries),
            Some(before) => format!("{}-0", before - 1),
            None => "+".to_owned(),
        };
        // Page backwards until the page is full or the stream ends; with a release
        // filter this may read past other releases' entries.
        const BATCH: usize = 500;
        loop {
            let batch: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
                .arg(&key)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let exhausted = batch.len() < BATCH;
            for (id, fields) in &batch {
                let entry = parse_audit(id, fields)?;
                if query.matches(&entry) {
                    entries.push(entry);
                    if entries.len() == query.limit {
                        return Ok(entries);
                    }
                }
            }
            match batch.last() {
                Some((id, _)) if !exhausted => end = format!("({id}"),
                _ => return Ok(entries),
            }
        }
    }

    async fn record_outcomes(&self, env: &EnvName, bucket: Bucket, counts: &[OutcomeCount]) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let key = self.key(env, &bucket_key(bucket));
        // One pipelined round trip: every HINCRBY, then the expiry.
        let mut pipe = redis::pipe();
        for count in counts {
            let field = field(&count.release, &count.version);
            pipe.hincr(&key, format!("{field}\u{1f}ok"), count.ok).ignore();
            pipe.hincr(&key, format!("{field}\u{1f}error"), count.error).ignore();
        }
        pipe.expire(&key, OUTCOME_TTL_SECS as i64).ignore();
        let mut conn = self.manager.clone();
        // Counts are added, not set: a report the store did not answer may have counted.
        pipe.query_async::<()>(&mut conn).await.map_err(write_failed)
    }

    async fn outcomes(
        &self,
        env: &EnvName,
        release: &str,
        from: Bucket,
        to: Bucket,
    ) -> Result<Vec<BucketCounts>, StoreError> {
        let buckets: Vec<Bucket> = Bucket::range(from, to).collect();
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for &bucket in &buckets {
            pipe.hgetall(self.key(env, &bucket_key(bucket)));
        }
        let mut conn = self.manager.clone();
        let hashes: Vec<HashMap<String, u64>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut counts = Vec::new();
        for (bucket, hash) in buckets.iter().zip(hashes) {
            let mut per_version: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
            for (key, value) in hash {
                let Some((pair, kind)) = key.rsplit_once('\u{1f}') else { continue };
                let Some((r, version)) = split_field(pair) else { continue };
                if r != release {
                    continue;
                }
                let slot = per_version.entry(version.to_owned()).or_default();
                if kind == "ok" { slot.0 = value } else { slot.1 = value }
            }
            counts.extend(per_version.into_iter().map(|(version, (ok, error))| BucketCounts {
                bucket_start_ms: bucket.start_ms(),
                version,
                ok,
                error,
            }));
        }
        Ok(counts)
    }

    async fn heartbeat(&self, env: &EnvName, fleet: &str, report: &NodeReport) -> Result<(), StoreError> {
        let json = serde_json::to_string(report).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let key = self.key(env, &format!("fleet:{fleet}"));
        let mut conn = self.manager.clone();
        // One hash per fleet; stale nodes are filtered by `seen_ms` and removed on read,
        // and a whole fleet that stops reporting expires with its key.
        redis::pipe()
            .hset(&key, &report.node, json)
            .ignore()
            .expire(&key, 24 * 3_600)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn fleet_nodes(&self, env: &EnvName, fleet: &str, since_ms: u64) -> Result<Vec<NodeReport>, StoreError> {
        let key = self.key(env, &format!("fleet:{fleet}"));
        let mut conn = self.manager.clone();
        let all: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.map_err(unavailable)?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (node, json) in all {
            match serde_json::from_str::<NodeReport>(&json) {
                Ok(report) if report.seen_ms >= since_ms => live.push(report),
                _ => gone.push(node),
            }
        }
        if !gone.is_empty() {
            let _: Result<(), _> = redis::cmd("HDEL").arg(&key).arg(&gone).query_async(&mut conn).await;
        }
        live.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(live)
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.manager.clone();
        let held: i64 = script_for(&self.options.topology, LEASE_SCRIPT)
            .key(format!("{}:lease:{name}", self.options.prefix))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    async fn record_ack(&self, env: &EnvName, ack: &SdkAck) -> Result<(), StoreError> {
        let json = serde_json::to_string(ack).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.manager.clone();
        redis::cmd("HSET")
            .arg(self.key(env, "sdks"))
            .arg(&ack.sdk_id)
            .arg(json)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn sdk_acks(&self, env: &EnvName, since_ms: u64) -> Result<Vec<SdkAck>, StoreError> {
        let key = self.key(env, "sdks");
        let mut conn = self.manager.clone();
        let all: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.map_err(unavailable)?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, json) in all {
            match serde_json::from_str::<SdkAck>(&json) {
                Ok(ack) if ack.seen_ms >= since_ms => live.push(ack),
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // Forget SDKs that went quiet; a failure here only delays the cleanup.
            let _: Result<(), _> = redis::cmd("HDEL").arg(&key).arg(&gone).query_async(&mut conn).await;
        }
        live.sort_by(|a, b| a.sdk_id.cmp(&b.sdk_id));
        Ok(live)
    }

    async fn forget_sdk(&self, env: &EnvName, sdk_id: &str, up_to_connection: u64) -> Result<(), StoreError> {
        // Compare and delete in one step: an acknowledgement over a newer connection
        // (the SDK reconnected to another instance) must survive the old one's end.
        // An entry that cannot be read is stale anyway.
        const FORGET_SDK_SCRIPT: &str = r"
            local json = redis.call('HGET', KEYS[1], ARGV[1])
            if not json then return 0 end
            local ok, ack = pcall(cjson.decode, json)
            local connection = ok and tonumber(ack['connection']) or 0
            if (not ok) or connection <= tonumber(ARGV[2]) then
                return redis.call('HDEL', KEYS[1], ARGV[1])
            end
            return 0
        ";
        let mut conn = self.manager.clone();
        script_for(&self.options.topology, FORGET_SDK_SCRIPT)
            .key(self.key(env, "sdks"))
            .arg(sdk_id)
            .arg(up_to_connection.to_string())
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn report_seen(&self, env: &EnvName, instance: &str, seen: u64) -> Result<(), StoreError> {
        let mut conn = self.manager.clone();
        redis::cmd("HSET")
            .arg(self.key(env, "seen"))
            .arg(instance)
            .arg(seen)
            .exec_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn seen_reports(&self, env: &EnvName) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.manager.clone();
        let reports: HashMap<String, u64> =
            redis::cmd("HGETALL").arg(self.key(env, "seen")).query_async(&mut conn).await.map_err(unavailable)?;
        let mut reports: Vec<(String, u64)> = reports.into_iter().collect();
        reports.sort();
        Ok(reports)
    }

    async fn changes_after(&self, env: &EnvName, after: u64, wait: Duration) -> Result<Vec<Change>, StoreError> {
        let mut conn = self.blocking_connection(wait).await?;
        let block_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Result<StreamReply, RedisError> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1_000)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(self.key(env, "changes"))
            .arg(format!("{after}-0"))
            .query_async(&mut conn)
            .await;
        let reply = reply.map_err(unavailable)?;
        // Only a healthy connection goes back to the pool.
        self.blocking.lock().await.push(conn);
        let mut changes = Vec::new();
        for (_stream, entries) in reply.unwrap_or_default() {
            for (id, fields) in entries {
                changes.push(parse_change(&id, &fields)?);
            }
        }
        Ok(changes)
    }
}
