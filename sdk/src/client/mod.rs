//! The network client (feature `client`): keeps a local copy of one environment's
//! configuration in step with the cohort service and evaluates against it in-process.
//!
//! A background tokio task follows `GET /v1/envs/{env}/stream` (Server-Sent Events),
//! reconnecting with exponential backoff and resuming with `Last-Event-ID`; while the
//! stream fails it polls `GET /v1/envs/{env}/snapshot` with `If-None-Match`. Whatever
//! happens to the network, the last good snapshot keeps answering, and a bootstrap
//! file can stand in when the service cannot be reached at start.
//!
//! Evaluation never touches the network: [`Client::version`] loads the current
//! snapshot from an `ArcSwap` (an atomic load into a thread-local slot — no lock, no
//! allocation, no reference-count traffic shared between threads), runs the same core
//! as the server, and copies the served version's name (at most 64 bytes) into its
//! answer, so the answer neither allocates nor keeps the snapshot. To evaluate several
//! releases on one consistent configuration, [`Client::snapshot`] gives the snapshot
//! itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cohort_sdk::client::BuildError> {
//! use cohort_sdk::Context;
//! use cohort_sdk::client::Client;
//! use std::time::Duration;
//!
//! let client = Client::builder("http://127.0.0.1:8080", "production", "an-eval-token")
//!     .bootstrap_file("cohort-bootstrap.json")
//!     .build()?;
//! client.wait_ready(Duration::from_secs(2)).await;
//! let ctx = Context::with_targeting_key("user-42");
//! let checkout = client.version("checkout", &ctx, "v1");
//! println!("serve {} ({})", checkout.version(), checkout.reason.as_str());
//! # Ok(())
//! # }
//! ```

mod ack;
mod bootstrap;
mod builder;
mod poll;
mod sse;
mod state;
mod sync;
mod wire;

pub use builder::{BuildError, ClientBuilder, SyncMode};

use crate::compile::MAX_VERSION_LEN;
use crate::context::Context;
use crate::decision::{Decision, ErrorCode, Reason};
use crate::snapshot::Snapshot;
use state::Shared;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// A cohort client for one environment. Cheap to clone (all clones share one snapshot
/// and one background task); the task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Client {
    /// Starts configuring a client of `env` at `base_url` (e.g. `https://cohort.internal`),
    /// authenticating with `token` (a token with the `eval` scope).
    pub fn builder(base_url: impl Into<String>, env: impl Into<String>, token: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url.into(), env.into(), token.into())
    }

    pub(crate) fn start(shared: Arc<Shared>, tasks: Vec<AbortHandle>) -> Self {
        Client { inner: Arc::new(Inner { shared, tasks }) }
    }

    /// Which version of `release` the unit in `ctx` gets, evaluated locally. A release
    /// this client does not know (yet) answers `default` with reason `ERROR` and error
    /// `FLAG_NOT_FOUND`. No lock, no allocation, no I/O.
    #[inline]
    pub fn version<'a>(&self, release: &str, ctx: &Context, default: &'a str) -> Evaluation<'a> {
        let snapshot = self.inner.shared.load();
        Evaluation::new(snapshot.evaluate(release, ctx), default, snapshot.revision())
    }

    /// For two-version releases (a feature behind a flag): true when the unit gets a
    /// candidate, false for the baseline and for a release this client does not know.
    #[inline]
    pub fn is_enabled(&self, release: &str, ctx: &Context) -> bool {
        self.snapshot().evaluate(release, ctx).is_candidate()
    }

    /// The snapshot in use now, to evaluate several releases against one consistent
    /// configuration. Hold it briefly: it keeps that configuration alive.
    #[inline]
    pub fn snapshot(&self) -> SnapshotRef {
        SnapshotRef(self.inner.shared.load())
    }

    /// The environment revision of the snapshot in use (0 before any).
    pub fn revision(&self) -> u64 {
        self.inner.shared.load().revision()
    }

    /// True once a snapshot is in use (from the service or the bootstrap).
    pub fn is_ready(&self) -> bool {
        self.inner.shared.is_ready()
    }

    /// Waits until a snapshot is in use — from the service, or the bootstrap, which
    /// counts at once — for at most `timeout`. Tells whether there is one.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.inner.shared.ready();
        matches!(tokio::time::timeout(timeout, ready.wait_for(|ready| *ready)).await, Ok(Ok(_)))
    }

    /// The revision in use, updated on every change: `changed().await` on it to react
    /// to configuration changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.revisions()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("revision", &self.revision()).field("ready", &self.is_ready()).finish()
    }
}

/// A loaded snapshot; dereferences to [`Snapshot`]. Loading is an atomic operation
/// (arc-swap's guard), so this is cheap to get; hold it briefly, as it keeps the
/// configuration it points to alive.
pub struct SnapshotRef(arc_swap::Guard<Arc<Snapshot>>);

impl Deref for SnapshotRef {
    type Target = Snapshot;

    #[inline]
    fn deref(&self) -> &Snapshot {
        &self.0
    }
}

/// One answer of [`Client::version`], owning everything it says. Version names are at
/// most 64 bytes (checked when a release is compiled), so the served one is copied
/// inline: making an answer allocates nothing, holds no snapshot and needs no second
/// lookup to name the version.
#[derive(Clone, Copy)]
pub struct Evaluation<'a> {
    version: Served<'a>,
    revision: u64,
    /// Index of the version served in the release's versions (0 = baseline); `None`
    /// when the release is unknown and the caller's default applies.
    pub version_index: Option<usize>,
    /// Why this version.
    pub reason: Reason,
    /// The unit's bucket (`0..100000`), when the split decided.
    pub bucket: Option<u32>,
    /// Set when `reason` is [`Reason::Error`].
    pub error: Option<ErrorCode>,
}

#[derive(Clone, Copy)]
enum Served<'a> {
    Release(InlineName),
    Default(&'a str),
}

/// A version name copied out of the snapshot.
#[derive(Clone, Copy)]
struct InlineName {
    len: u8,
    bytes: [u8; MAX_VERSION_LEN],
}

impl InlineName {
    #[inline]
    fn new(name: &str) -> Option<Self> {
        let len = u8::try_from(name.len()).ok().filter(|&len| usize::from(len) <= MAX_VERSION_LEN)?;
        let mut bytes = [0; MAX_VERSION_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(InlineName { len, bytes })
    }

    #[inline]
    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).ok()
    }
}

impl<'a> Evaluation<'a> {
    #[inline]
    fn new(decision: Decision<'_>, default: &'a str, revision: u64) -> Self {
        let Decision { version, version_index, reason, bucket, error } = decision;
        let version = match version.and_then(InlineName::new) {
            Some(name) => Served::Release(name),
            None => Served::Default(default),
        };
        Evaluation { version, revision, version_index, reason, bucket, error }
    }

    /// The version to serve: the release's, or the caller's default when the release
    /// is unknown.
    #[inline]
    pub fn version(&self) -> &str {
        match &self.version {
            Served::Release(name) => name.as_str().unwrap_or_default(),
            Served::Default(default) => default,
        }
    }

    /// True when a candidate (not the baseline) is served.
    #[inline]
    pub fn is_candidate(&self) -> bool {
        matches!(self.version_index, Some(i) if i > 0)
    }

    /// The revision of the configuration this answer comes from.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The same answer as the evaluation core's [`Decision`] (version `None` when the
    /// release is unknown).
    pub fn decision(&self) -> Decision<'_> {
        Decision {
            version: match &self.version {
                Served::Release(name) => name.as_str(),
                Served::Default(_) => None,
            },
            version_index: self.version_index,
            reason: self.reason,
            bucket: self.bucket,
            error: self.error,
        }
    }
}

impl std::fmt::Debug for Evaluation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluation")
            .field("version", &self.version())
            .field("reason", &self.reason)
            .field("bucket", &self.bucket)
            .field("error", &self.error)
            .field("revision", &self.revision)
            .finish()
    }
}
