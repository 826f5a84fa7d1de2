//! Configuring a [`Client`]: where the service is, how to follow it, what to start from,
//! how outcomes are reported and how stale a configuration may get.

use super::bootstrap::Bootstrap;
use super::flush::Flusher;
use super::outcomes::Outcomes;
use super::state::Shared;
use super::sync::SyncTask;
use super::{Client, Parts, ack, freshness};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How the client follows changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Server-Sent Events: changes are pushed as they happen; polling only while the
    /// stream cannot be opened. The default.
    #[default]
    Stream,
    /// Poll the snapshot every `poll_interval` (with `If-None-Match`, so an unchanged
    /// configuration costs a 304). For networks that cut long-lived connections.
    Poll,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The base URL is not an `http`/`https` URL.
    #[error("invalid base URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The environment name is not one.
    #[error("`{0}` is not a valid environment name: 1 to 64 of lowercase letters, digits, `-`, `_`")]
    InvalidEnvironment(String),
    /// The token cannot be sent in a header.
    #[error("the token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,
    /// The bootstrap file cannot be read.
    #[error("cannot read the bootstrap file {path}: {source}")]
    BootstrapRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bootstrap is not a snapshot.
    #[error("{origin} is not a cohort snapshot: {source}")]
    BootstrapParse {
        /// The file or "bootstrap JSON".
        origin: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// `build()` was called outside a tokio runtime.
    #[error("the cohort client must be built inside a tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be set up (TLS back-end).
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A root certificate given to [`ClientBuilder::tls_root_certificate_pem`] is not
    /// PEM.
    #[error("the TLS root certificate is not a PEM certificate: {0}")]
    InvalidRootCertificate(reqwest::Error),
}

/// How often a client re-acknowledges its revision, so the service counts it as
/// connected (the service forgets SDKs silent for 90 s).
const ACK_HEARTBEAT: Duration = Duration::from_secs(30);

/// Options of a [`Client`]; start with [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    env: String,
    token: String,
    bootstrap: Option<Bootstrap>,
    settings: Settings,
    sdk_id: Option<String>,
    max_staleness: Option<Duration>,
    reporting: Reporting,
    roots: Vec<Vec<u8>>,
}

/// How `track` reports outcomes.
#[derive(Debug, Clone, Copy)]
struct Reporting {
    flush_interval: Duration,
    flush_size: u64,
    max_pairs: usize,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("env", &self.env)
            .field("bootstrap", &self.bootstrap)
            .field("settings", &self.settings)
            .field("max_staleness", &self.max_staleness)
            .field("reporting", &self.reporting)
            .finish_non_exhaustive()
    }
}

/// Timing and mode, as the background task uses them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) mode: SyncMode,
    pub(crate) poll_interval: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
}

/// The URLs of an environment the client talks to.
#[derive(Debug, Clone)]
pub(crate) struct Urls {
    pub(crate) snapshot: Url,
    pub(crate) stream: Url,
    pub(crate) ack: Url,
    pub(crate) events: Url,
}

impl ClientBuilder {
    pub(crate) fn new(base_url: String, env: String, token: String) -> Self {
        ClientBuilder {
            base_url,
            env,
            token,
            bootstrap: None,
            sdk_id: None,
            max_staleness: None,
            reporting: Reporting { flush_interval: Duration::from_secs(10), flush_size: 10_000, max_pairs: 10_000 },
            roots: Vec::new(),
            settings: Settings {
                mode: SyncMode::Stream,
                poll_interval: Duration::from_secs(15),
                request_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(3),
                // Three of the server's default heartbeats (15 s).
                idle_timeout: Duration::from_secs(45),
                backoff_initial: Duration::from_millis(500),
                backoff_max: Duration::from_secs(30),
            },
        }
    }

    /// Starts from the snapshot in this JSON file (a saved `GET …/snapshot`) when the
    /// service cannot be reached. Read once by [`ClientBuilder::build`].
    #[must_use]
    pub fn bootstrap_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.bootstrap = Some(Bootstrap::File(path.into()));
        self
    }

    /// Starts from this snapshot JSON when the service cannot be reached.
    #[must_use]
    pub fn bootstrap_json(mut self, json: impl Into<String>) -> Self {
        self.bootstrap = Some(Bootstrap::Json(json.into()));
        self
    }

    /// Stream (default) or poll.
    #[must_use]
    pub fn mode(mut self, mode: SyncMode) -> Self {
        self.settings.mode = mode;
        self
    }

    /// Time between snapshot polls, in poll mode and while the stream fails
    /// (default 15 s).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.settings.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Longest wait for a snapshot response, or for a stream's response headers
    /// (default 10 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// Longest wait for a TCP (and TLS) connection (default 3 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// A stream silent for this long (no event, no heartbeat) is taken as dead and
    /// reopened (default 45 s: three of the server's default heartbeats).
    #[must_use]
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = timeout;
        self
    }

    /// Reconnection delays: from `initial`, doubling up to `max`, each with random
    /// jitter (default 500 ms to 30 s).
    #[must_use]
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.settings.backoff_initial = initial.max(Duration::from_millis(1));
        self.settings.backoff_max = max.max(self.settings.backoff_initial);
        self
    }

    /// The id this instance acknowledges applied revisions under (default
    /// `sdk-<pid>-<random>`); `cohort kill --wait` lists SDKs by it. Also sent when
    /// the stream opens, so the service counts this client through its
    /// acknowledgements; keep it to 1 to 128 printable ASCII characters.
    #[must_use]
    pub fn sdk_id(mut self, id: impl Into<String>) -> Self {
        self.sdk_id = Some(id.into());
        self
    }

    /// Turns on the staleness limit (off by default): when the client has heard
    /// nothing from the service — no event, no heartbeat, no successful poll — for
    /// longer than `limit`, every known release serves its baseline with reason
    /// [`Reason::Stale`](crate::Reason::Stale), until the service is heard again. The
    /// clock starts when the client is built (a bootstrap counts as nothing heard).
    /// Keep it well above the server's heartbeat interval (`server.sse_heartbeat_ms`,
    /// 15 s by default) — and, in poll mode, above the poll interval — or a healthy
    /// but quiet client turns stale.
    #[must_use]
    pub fn max_staleness(mut self, limit: Duration) -> Self {
        self.max_staleness = Some(limit.max(Duration::from_millis(1)));
        self
    }

    /// How often tracked outcomes are reported (default 10 s). Ramp guards read them
    /// per minute, so more often buys little.
    #[must_use]
    pub fn outcome_flush_interval(mut self, interval: Duration) -> Self {
        self.reporting.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Reports early once this many outcomes are pending (default 10,000).
    #[must_use]
    pub fn outcome_flush_size(mut self, outcomes: u64) -> Self {
        self.reporting.flush_size = outcomes.max(1);
        self
    }

    /// Most distinct (release, version) pairs counted between two reports (default
    /// 10,000); outcomes of further pairs are dropped and counted
    /// ([`Client::dropped_outcomes`]). Bounds `track`'s memory whatever the
    /// application does and however long the service is unreachable.
    #[must_use]
    pub fn max_outcome_pairs(mut self, pairs: usize) -> Self {
        self.reporting.max_pairs = pairs;
        self
    }

    /// Also trusts this PEM certificate (a private CA's, or the service's own
    /// self-signed one) for an `https://` base URL. The public web PKI roots (Mozilla's,
    /// built in) stay trusted; call again for more certificates. Checked by
    /// [`ClientBuilder::build`].
    #[must_use]
    pub fn tls_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(pem.into());
        self
    }

    /// Builds the client and starts its background task; returns at once, with the
    /// bootstrap (if any) already in use. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<Client, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let urls = urls(&self.base_url, &self.env)?;
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|_| BuildError::InvalidToken)?;
        auth.set_sensitive(true);
        let headers = HeaderMap::from_iter([(AUTHORIZATION, auth)]);
        let mut http =
            reqwest::Client::builder().default_headers(headers).connect_timeout(self.settings.connect_timeout);
        for pem in &self.roots {
            http = http
                .add_root_certificate(reqwest::Certificate::from_pem(pem).map_err(BuildError::InvalidRootCertificate)?);
        }
        let http = http.build()?;
        let shared = Arc::new(Shared::new(self.max_staleness));
        if let Some(bootstrap) = &self.bootstrap {
            shared.install(bootstrap.load()?);
        }
        let outcomes = Arc::new(Outcomes::new(self.reporting.max_pairs, self.reporting.flush_size));
        let (shutdown, stop) = watch::channel(false);
        let flusher = Flusher {
            outcomes: Arc::clone(&outcomes),
            http: http.clone(),
            url: urls.events.clone(),
            interval: self.reporting.flush_interval,
            timeout: self.settings.request_timeout,
        };
        let (connections, opened) = watch::channel(0);
        let signals = ack::Signals { revisions: shared.revisions(), connections: opened, shutdown: stop.clone() };
        let flusher = runtime.spawn(flusher.run(stop));
        let sdk_id = self.sdk_id.unwrap_or_else(ack::default_sdk_id);
        let acknowledger = ack::Acknowledger {
            http: http.clone(),
            url: urls.ack.clone(),
            sdk_id: sdk_id.clone(),
            heartbeat: ACK_HEARTBEAT,
            timeout: self.settings.request_timeout,
        };
        let acknowledger = runtime.spawn(acknowledger.run(signals));
        let watchdog = self
            .max_staleness
            .map(|limit| runtime.spawn(freshness::watchdog(Arc::downgrade(&shared), limit)).abort_handle());
        let stream_id = ack::stream_sdk_id(&sdk_id);
        let task = SyncTask::new(self.settings, urls, http, Arc::clone(&shared), stream_id, connections);
        let tasks = vec![runtime.spawn(task.run()).abort_handle()];
        Ok(Client::start(Parts { shared, outcomes, tasks, watchdog, flusher, acknowledger, shutdown }))
    }
}

/// `{base}/v1/envs/{env}/snapshot`, `…/stream`, `…/ack` and `…/events`, keeping any
/// path prefix of `base`.
fn urls(base: &str, env: &str) -> Result<Urls, BuildError> {
    let invalid = |reason: &str| BuildError::InvalidUrl { url: base.to_owned(), reason: reason.to_owned() };
    let valid_env = !env.is_empty()
        && env.len() <= 64
        && env.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid_env {
        return Err(BuildError::InvalidEnvironment(env.to_owned()));
    }
    let base = Url::parse(base).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    let url = |leaf: &str| -> Result<Url, BuildError> {
        let mut url = base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| invalid("it cannot have a path"))?
            .pop_if_empty()
            .extend(["v1", "envs", env, leaf]);
        Ok(url)
    };
    Ok(Urls { snapshot: url("snapshot")?, stream: url("stream")?, ack: url("ack")?, events: url("events")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_path_prefix_and_refuse_bad_input() {
        let u = urls("http://127.0.0.1:8080", "production").expect("urls");
        assert_eq!(u.stream.as_str(), "http://127.0.0.1:8080/v1/envs/production/stream");
        let u = urls("https://example.test/cohort/", "staging").expect("urls");
        assert_eq!(u.snapshot.as_str(), "https://example.test/cohort/v1/envs/staging/snapshot");
        assert!(matches!(urls("ftp://x", "production"), Err(BuildError::InvalidUrl { .. })));
        assert!(matches!(urls("not a url", "production"), Err(BuildError::InvalidUrl { .. })));
        assert!(matches!(urls("http://x", "../admin"), Err(BuildError::InvalidEnvironment(_))));
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let builder = Client::builder("http://127.0.0.1:1", "production", "secret-token-value");
        assert!(!format!("{builder:?}").contains("secret-token-value"));
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let built = Client::builder("http://127.0.0.1:1", "production", "t").build();
        assert!(matches!(built, Err(BuildError::NoRuntime)));
    }
}
