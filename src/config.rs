//! Settings, loaded in one place: `config/default.toml` (compiled in) < a config file <
//! `COHORT_…` environment variables < command-line flags. Nothing else reads the
//! environment. A key that no setting reads, in the file or the environment, stops
//! start-up (`config/keys.rs`).

mod cors;
mod keys;

pub use cors::{AllowedOrigin, CorsSettings, EnvKey};
pub use keys::{CLI_VARIABLES, KeyOrigin, UnknownKey};

use config::Source as _;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// Everything cohort can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// Where releases live.
    pub store: StoreSettings,
    /// Token verification.
    pub auth: AuthSettings,
    /// Audit log.
    pub audit: AuditSettings,
    /// Ramp driver.
    pub ramp: RampSettings,
    /// Fleets.
    pub fleet: FleetSettings,
    /// Cross-origin (browser) access.
    pub cors: CorsSettings,
    /// OpenFeature (OFREP) routes.
    pub ofrep: OfrepSettings,
    /// Webhook receivers of ramp transitions.
    #[serde(default)]
    pub webhooks: Vec<WebhookSettings>,
    /// Outcome reports (`POST …/events`).
    pub events: EventsSettings,
    /// Rate limits per route class.
    pub rate_limit: RateLimitSettings,
    /// Logging.
    pub log: LogSettings,
    /// How the HTTP layer treats request edges: over-long URIs, unread bodies.
    pub http: HttpSettings,
    /// What the Prometheus metrics break down by.
    pub metrics: MetricsSettings,
    /// The web console.
    pub console: ConsoleSettings,
}

/// A secret that never appears in logs or `Debug` output.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether one is set.
    pub fn is_set(&self) -> bool {
        !self.0.trim().is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() { "\"<redacted>\"" } else { "\"\"" })
    }
}

/// Token verification settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret; empty = the data directory's `hs256.secret`.
    pub hs256_secret: Secret,
    /// RS256 public key (PEM file), optional.
    pub rs256_public_key_file: PathBuf,
    /// EdDSA public key (PEM file), optional.
    pub eddsa_public_key_file: PathBuf,
    /// Required `iss`, when set.
    pub issuer: String,
    /// Required `aud`, when set.
    pub audience: String,
    /// Verified-token cache size.
    pub token_cache_entries: usize,
    /// Tolerated clock skew.
    pub leeway_secs: u64,
    /// The identity provider's JSON Web Key Set URL, optional.
    pub jwks_url: String,
    /// How often the key set is fetched again.
    pub jwks_refresh_secs: u64,
    /// Shortest time between two early fetches asked for by tokens with an unknown `kid`.
    pub jwks_min_refetch_secs: u64,
    /// The longest lifetime a token may have, per scope (`[auth.max_ttl]`).
    pub max_ttl: MaxTtlSettings,
}

/// The longest lifetime (`exp - iat`) a token may have, per scope: a token's limit is the
/// smallest over its scopes. `cohort token mint` refuses longer TTLs, the server refuses
/// tokens that live longer, and a revocation is kept for the longest of them.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxTtlSettings {
    /// `eval` (tokens shipped inside apps).
    #[serde(deserialize_with = "human_duration")]
    pub eval: Duration,
    /// `report` (server SDKs' outcome reports).
    #[serde(deserialize_with = "human_duration")]
    pub report: Duration,
    /// `read`.
    #[serde(deserialize_with = "human_duration")]
    pub read: Duration,
    /// `write`.
    #[serde(deserialize_with = "human_duration")]
    pub write: Duration,
    /// `kill`.
    #[serde(deserialize_with = "human_duration")]
    pub kill: Duration,
    /// `admin`.
    #[serde(deserialize_with = "human_duration")]
    pub admin: Duration,
}

impl MaxTtlSettings {
    /// Every limit, for checks that must cover any token.
    pub fn all(&self) -> [Duration; 6] {
        [self.eval, self.report, self.read, self.write, self.kill, self.admin]
    }
}

impl Default for MaxTtlSettings {
    fn default() -> Self {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        MaxTtlSettings {
            eval: days(365),
            report: days(365),
            read: days(90),
            write: days(90),
            kill: days(90),
            admin: days(30),
        }
    }
}

/// A duration written for people (`90d`, `12h`), as `humantime` reads it.
fn human_duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    let duration =
        humantime::parse_duration(text.trim()).map_err(|e| serde::de::Error::custom(format!("`{text}`: {e}")))?;
    if duration.is_zero() {
        return Err(serde::de::Error::custom(format!("`{text}`: must be above 0")));
    }
    Ok(duration)
}

/// Ramp driver settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampSettings {
    /// How often the driver looks at running ramps.
    pub tick_ms: u64,
    /// How long the driving instance's lease lasts without renewal.
    pub lease_ms: u64,
}

/// Fleet settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// A node whose last heartbeat is older than this is gone.
    pub node_ttl_ms: u64,
}

/// OpenFeature (OFREP) settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfrepSettings {
    /// Lifetime of the stream ticket in a bulk answer's `eventStreams` URL.
    pub ticket_ttl_secs: u64,
}

impl OfrepSettings {
    /// Lifetime of the stream ticket in a bulk answer's `eventStreams` URL.
    pub fn ticket_ttl(&self) -> Duration {
        Duration::from_secs(self.ticket_ttl_secs)
    }
}

/// One webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Environment whose transitions it gets (`*` for all).
    pub env: String,
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key for the `X-Cohort-Signature` header.
    pub secret: Secret,
}

/// Outcome report limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    /// Most (release, version) counts in one report (at most 1000).
    pub max_pairs_per_report: usize,
    /// Most distinct (release, version) pairs an environment takes per minute, per
    /// instance.
    pub max_pairs_per_minute: usize,
}

/// Requests per second allowed per token subject and per client address, for each route
/// class; 0 turns that limit off. Each limit allows a burst of one second's worth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Evaluation (`…/evaluate`, OFREP evaluation), per token subject.
    pub evaluate_per_subject: u32,
    /// Evaluation, per client address.
    pub evaluate_per_address: u32,
    /// Following changes (`…/stream`, `…/snapshot`, `…/ack`, OFREP events), per subject.
    pub stream_per_subject: u32,
    /// Following changes, per client address.
    pub stream_per_address: u32,
    /// Outcome reports (`…/events`), per subject.
    pub events_per_subject: u32,
    /// Outcome reports, per client address.
    pub events_per_address: u32,
    /// Every other route, per subject.
    pub admin_per_subject: u32,
    /// Every other route, per client address.
    pub admin_per_address: u32,
    /// Most subjects or addresses tracked per limit; beyond it the least used are
    /// forgotten (and start again with a full burst).
    pub max_keys: usize,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client.
    /// Empty: the peer address is the client, and the header is never read.
    pub trusted_proxies: Vec<String>,
}

/// Audit log settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Entries kept per environment.
    pub retention: usize,
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: IpAddr,
    /// Port to bind (0 = any free port).
    pub port: u16,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Time between heartbeat comments on an idle event stream.
    pub sse_heartbeat_ms: u64,
    /// Changes kept per environment for event streams to resume from (`Last-Event-ID`).
    pub stream_history: usize,
    /// Events buffered per stream subscriber; one that falls further behind is dropped
    /// and resumes.
    pub stream_buffer: usize,
    /// PEM certificate chain to serve HTTPS with (empty = plain HTTP); reread on SIGHUP.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: PathBuf,
}

impl ServerSettings {
    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Time between heartbeat comments on an idle event stream.
    pub fn sse_heartbeat(&self) -> Duration {
        Duration::from_millis(self.sse_heartbeat_ms)
    }

    /// The certificate and key files when HTTPS is configured.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        (set(&self.tls_cert_file) && set(&self.tls_key_file))
            .then_some((self.tls_cert_file.as_path(), self.tls_key_file.as_path()))
    }
}

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// One JSON file in the data directory.
    Embedded,
    /// Redis: a single server, a Cluster or a Sentinel-managed primary.
    Redis,
}

/// A Redis URL; may carry a password, so it is never printed.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        RedisUrl(url.into())
    }

    /// The URL itself (for the client only).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether one is set.
    pub fn is_set(&self) -> bool {
        !self.0.trim().is_empty()
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() { "\"<redacted>\"" } else { "\"\"" })
    }
}

/// Store settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Which store (`redis` is implied by a `redis_url`, `redis_cluster_urls` or
    /// `redis_sentinel`).
    pub kind: StoreKind,
    /// Embedded store directory.
    pub data_dir: PathBuf,
    /// Redis URL (a single server).
    pub redis_url: RedisUrl,
    /// Seed node URLs of a Redis Cluster; setting them selects cluster mode.
    #[serde(default)]
    pub redis_cluster_urls: Vec<RedisUrl>,
    /// A Sentinel-managed primary; setting its master name selects sentinel mode.
    #[serde(default)]
    pub redis_sentinel: RedisSentinelSettings,
    /// Replicas that must hold a write before it is acknowledged (`WAIT`); 0 = none.
    #[serde(default)]
    pub min_replicas_ack: u32,
    /// How long a write waits for `min_replicas_ack` replicas.
    pub replication_timeout_ms: u64,
    /// Redis key prefix.
    pub redis_prefix: String,
    /// Changes kept per environment stream.
    pub stream_max_len: u64,
    /// Redis command timeout.
    pub command_timeout_ms: u64,
    /// Blocking stream read duration.
    pub follow_block_ms: u64,
    /// Revision check interval.
    pub resync_interval_ms: u64,
    /// Embedded store: journal size past which an environment's snapshot is rewritten.
    pub journal_compact_bytes: u64,
}

/// A Sentinel-managed Redis primary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinelSettings {
    /// The name the sentinels monitor the primary under (`sentinel monitor <name> …`).
    #[serde(default)]
    pub master_name: String,
    /// The sentinels' URLs (`redis://[:password@]host:port`; a password there is the
    /// sentinels' own).
    #[serde(default)]
    pub sentinels: Vec<RedisUrl>,
    /// Username for the data nodes (primary and replicas), when they use ACLs.
    #[serde(default)]
    pub username: String,
    /// Password for the data nodes (primary and replicas).
    #[serde(default)]
    pub password: Secret,
    /// Database number on the data nodes.
    #[serde(default)]
    pub db: i64,
}

impl RedisSentinelSettings {
    /// Whether sentinel mode is configured.
    pub fn is_set(&self) -> bool {
        !self.master_name.trim().is_empty() || !self.sentinels.is_empty()
    }
}

impl StoreSettings {
    /// Redis command timeout.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// How long a write waits for its replicas.
    pub fn replication_timeout(&self) -> Duration {
        Duration::from_millis(self.replication_timeout_ms)
    }

    /// Picks the Redis topology from the settings: exactly one of `redis_url`,
    /// `redis_cluster_urls` and `redis_sentinel` may be set. `None` when none is.
    pub fn redis_topology(&self) -> Result<Option<RedisTopologySetting>, ConfigError> {
        let single = self.redis_url.is_set();
        let cluster = !self.redis_cluster_urls.is_empty();
        let sentinel = self.redis_sentinel.is_set();
        if usize::from(single) + usize::from(cluster) + usize::from(sentinel) > 1 {
            return Err(ConfigError::Invalid(
                "set only one of store.redis_url (one server), store.redis_cluster_urls (a cluster) and \
                 store.redis_sentinel (a sentinel-managed primary)"
                    .into(),
            ));
        }
        if cluster {
            if let Some(empty) = self.redis_cluster_urls.iter().position(|u| !u.is_set()) {
                return Err(ConfigError::Invalid(format!("store.redis_cluster_urls[{empty}] is empty")));
            }
            return Ok(Some(RedisTopologySetting::Cluster));
        }
        if sentinel {
            let s = &self.redis_sentinel;
            if s.master_name.trim().is_empty() {
                return Err(ConfigError::Invalid("store.redis_sentinel.master_name is not set".into()));
            }
            if s.sentinels.is_empty() || s.sentinels.iter().any(|u| !u.is_set()) {
                return Err(ConfigError::Invalid(
                    "store.redis_sentinel.sentinels must list the sentinels' URLs".into(),
                ));
            }
            return Ok(Some(RedisTopologySetting::Sentinel));
        }
        Ok(single.then_some(RedisTopologySetting::Single))
    }
}

/// Which Redis topology the settings select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisTopologySetting {
    /// `store.redis_url`.
    Single,
    /// `store.redis_cluster_urls`.
    Cluster,
    /// `store.redis_sentinel`.
    Sentinel,
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `tracing` filter.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// HTTP edge settings: what is refused before routing, and how a request body a
/// handler did not read is dealt with so a kept-alive connection stays usable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Longest request target (path and query) answered; longer ones get 414.
    pub max_uri_bytes: usize,
    /// How long an unread request body is waited for after an early answer (a refusal
    /// before the body was read); past it the answer closes the connection.
    pub drain_timeout_ms: u64,
}

impl HttpSettings {
    /// How long an unread body is waited for.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// Metrics settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `cohort_evaluations_total` per release and version (one series per release,
    /// version and reason) instead of per environment and reason only.
    pub per_release: bool,
}

/// Web console settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// The origin browsers reach the console at when a proxy terminates TLS in front of
    /// cohort (`https://cohort.example.com`); empty = only the request's own origin.
    pub public_origin: PublicOrigin,
}

/// The console's public origin, `scheme://host[:port]` exactly as browsers send it in
/// `Origin`; `None` when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicOrigin(Option<String>);

impl PublicOrigin {
    /// The origin, when one is set.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Whether browsers reach the console over HTTPS (so its cookie must be `Secure`).
    pub fn is_https(&self) -> bool {
        self.get().is_some_and(|o| o.starts_with("https://"))
    }
}

impl TryFrom<String> for PublicOrigin {
    type Error = String;

    fn try_from(origin: String) -> Result<Self, String> {
        if origin.trim().is_empty() {
            return Ok(PublicOrigin(None));
        }
        let why = |e: String| format!("console.public_origin: {}", e.trim_start_matches("CORS origin "));
        match cors::parse_origin(&origin).map_err(why)? {
            AllowedOrigin::Exact(o) if o.starts_with("https://") || o.starts_with("http://") => {
                Ok(PublicOrigin(Some(o)))
            }
            _ => Err(format!("console.public_origin: `{origin}` is not an http(s)://host[:port] origin")),
        }
    }
}

/// Values given as flags; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub workers: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub redis_url: Option<String>,
    pub log_level: Option<String>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is missing, malformed or out of range, or the file cannot be read.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Keys no setting reads: each one is a mistake that would otherwise be ignored
    /// silently (a typo leaves the default in force).
    #[error("invalid configuration: {}", list(.0))]
    UnknownKeys(Vec<UnknownKey>),
}

fn list(unknown: &[UnknownKey]) -> String {
    unknown.iter().map(UnknownKey::to_string).collect::<Vec<_>>().join("; ")
}

impl Settings {
    /// Loads defaults < `file` < `COHORT_…` environment < `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, overrides, cohort_variables()?)
    }

    /// Like [`Settings::load`] with explicit environment variables (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        vars: std::collections::HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let invalid = |e: config::ConfigError| ConfigError::Invalid(e.to_string());
        let known = keys::known_keys();
        // Every mistake at once, file first: one start-up attempt shows them all.
        let mut unknown = Vec::new();
        if let Some(file) = file {
            let tree = config::File::from(file).format(config::FileFormat::Toml).required(true).collect();
            unknown.extend(keys::unknown_in_file(&known, &tree.map_err(invalid)?, file));
        }
        let (vars, unknown_vars) = keys::split_environment(&known, vars);
        unknown.extend(unknown_vars);
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownKeys(unknown));
        }
        let env = config::Environment::with_prefix("COHORT").separator("__").source(Some(vars.into_iter().collect()));
        Self::load_from(file, overrides, env)
    }

    fn load_from(
        file: Option<&Path>,
        overrides: &Overrides,
        env: config::Environment,
    ) -> Result<Settings, ConfigError> {
        let err = |e: config::ConfigError| ConfigError::Invalid(e.to_string());
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml).required(true));
        }
        // Lists in the environment are comma-separated (`COHORT_STORE__REDIS_CLUSTER_URLS=redis://a,redis://b`).
        let env = env
            .prefix_separator("_")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("store.redis_cluster_urls")
            .with_list_parse_key("store.redis_sentinel.sentinels");
        builder = builder.add_source(env);
        let set =
            |b: config::ConfigBuilder<config::builder::DefaultState>, key: &str, value: Option<String>| match value {
                Some(v) => b.set_override(key, v),
                None => Ok(b),
            };
        builder = set(builder, "server.host", overrides.host.map(|h| h.to_string())).map_err(err)?;
        builder = set(builder, "server.port", overrides.port.map(|p| p.to_string())).map_err(err)?;
        builder = set(builder, "server.workers", overrides.workers.map(|w| w.to_string())).map_err(err)?;
        builder = set(builder, "store.data_dir", overrides.data_dir.as_ref().map(|d| d.display().to_string()))
            .map_err(err)?;
        builder = set(builder, "store.redis_url", overrides.redis_url.clone()).map_err(err)?;
        builder = set(builder, "log.level", overrides.log_level.clone()).map_err(err)?;
        let mut settings: Settings = builder.build().map_err(err)?.try_deserialize().map_err(err)?;
        if settings.store.redis_topology()?.is_some() {
            settings.store.kind = StoreKind::Redis;
        } else if settings.store.kind == StoreKind::Redis {
            return Err(ConfigError::Invalid(
                "store.kind is redis but none of store.redis_url (or --redis-url), store.redis_cluster_urls and \
                 store.redis_sentinel is set"
                    .into(),
            ));
        }
        if settings.store.min_replicas_ack > 0
            && settings.store.replication_timeout_ms >= settings.store.command_timeout_ms
        {
            return Err(ConfigError::Invalid(
                "store.replication_timeout_ms must be below store.command_timeout_ms (a write waits for its replicas within the command timeout)".into(),
            ));
        }
        if settings.server.max_body_bytes == 0 {
            return Err(ConfigError::Invalid("server.max_body_bytes must be above 0".into()));
        }
        if settings.server.sse_heartbeat_ms == 0 {
            return Err(ConfigError::Invalid("server.sse_heartbeat_ms must be above 0".into()));
        }
        if settings.http.max_uri_bytes == 0 {
            return Err(ConfigError::Invalid("http.max_uri_bytes must be above 0".into()));
        }
        if settings.server.stream_buffer == 0 {
            return Err(ConfigError::Invalid("server.stream_buffer must be above 0".into()));
        }
        if settings.server.tls_cert_file.as_os_str().is_empty() != settings.server.tls_key_file.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "server.tls_cert_file and server.tls_key_file go together: set both (HTTPS) or neither (HTTP)".into(),
            ));
        }
        settings.cors.check().map_err(ConfigError::Invalid)?;
        if settings.ofrep.ticket_ttl_secs == 0 {
            return Err(ConfigError::Invalid("ofrep.ticket_ttl_secs must be above 0".into()));
        }
        if !(1..=crate::events::MAX_BATCH).contains(&settings.events.max_pairs_per_report) {
            return Err(ConfigError::Invalid(format!(
                "events.max_pairs_per_report must be 1 to {}",
                crate::events::MAX_BATCH
            )));
        }
        if settings.rate_limit.max_keys == 0 {
            return Err(ConfigError::Invalid("rate_limit.max_keys must be above 0".into()));
        }
        if let Err(e) = crate::ratelimit::parse_proxies(&settings.rate_limit.trusted_proxies) {
            return Err(ConfigError::Invalid(format!("rate_limit.trusted_proxies: {e}")));
        }
        Ok(settings)
    }
}

/// The process's `COHORT_…` variables — the only place the environment is read for
/// settings. The command line's own variables are skipped here already: a token file
/// path need not be UTF-8, and is none of the settings' business.
fn cohort_variables() -> Result<std::collections::HashMap<String, String>, ConfigError> {
    let mut vars = std::collections::HashMap::new();
    for (name, value) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let prefixed = name.get(..keys::ENV_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(keys::ENV_PREFIX));
        if !prefixed || CLI_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::Invalid(format!("the environment variable {name} is not valid UTF-8")))?;
        vars.insert(name, value);
    }
    Ok(vars)
}

impl Settings {
    /// The CLI's bearer token: from `token_file` when given (`--token-file` or
    /// `COHORT_TOKEN_FILE`), else `COHORT_TOKEN`. Never a flag holding the token itself,
    /// which would land in shell history.
    pub fn client_token(token_file: Option<&Path>) -> Result<Option<String>, ConfigError> {
        if let Some(path) = token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Invalid(format!("cannot read the token file {}: {e}", path.display())))?;
            return Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()));
        }
        Ok(std::env::var("COHORT_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::PublicOrigin;

    #[test]
    fn a_public_origin_is_an_http_or_https_origin_as_browsers_send_it() {
        let parse = |s: &str| PublicOrigin::try_from(s.to_owned());
        assert_eq!(parse("").map(|o| o.get().map(str::to_owned)), Ok(None));
        let https = parse("https://Cohort.Example.com").expect("an origin");
        assert_eq!((https.get(), https.is_https()), (Some("https://cohort.example.com"), true));
        assert!(!parse("http://10.0.0.5:8080").expect("an origin").is_https());
        for bad in
            ["https://cohort.example.com/", "cohort.example.com", "*", "ftp://x.example", "https://x.example:443"]
        {
            let error = parse(bad).expect_err(bad);
            assert!(error.starts_with("console.public_origin: "), "{error}");
        }
    }
}
