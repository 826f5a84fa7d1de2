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
//! [`Client::track`] counts outcomes per (release, version) in memory; a flusher task
//! reports them in batches to `POST /v1/envs/{env}/events` (which needs a token with the
//! `report` scope), where ramp guards read them. [`Client::close`] sends what is left. With a `max_staleness`, a client that
//! has heard nothing from the service for that long serves every baseline with reason
//! [`Reason::Stale`] until it hears again.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cohort_sdk::client::BuildError> {
//! use cohort_sdk::Context;
//! use cohort_sdk::client::{Client, Outcome};
//! use std::time::Duration;
//!
//! let client = Client::builder("http://127.0.0.1:8080", "production", "an-eval-report-token")
//!     .bootstrap_file("cohort-bootstrap.json")
//!     .build()?;
//! client.wait_ready(Duration::from_secs(2)).await;
//! let ctx = Context::with_targeting_key("user-42");
//! let checkout = client.version("checkout", &ctx, "v1");
//! println!("serve {} ({})", checkout.version(), checkout.reason.as_str());
//! client.track("checkout", &ctx, Outcome::Ok);
//! client.close().await;
//! # Ok(())
//! # }
//! ```

mod ack;
mod bootstrap;
mod builder;
mod evaluation;
mod flush;
mod freshness;
#[cfg(feature = "openfeature")]
pub mod openfeature;
mod outcomes;
mod poll;
mod sse;
mod state;
mod sync;
mod wire;

pub use builder::{BuildError, ClientBuilder, SyncMode};
pub use evaluation::Evaluation;
pub use outcomes::Outcome;

use crate::context::Context;
use crate::decision::{Decision, Reason};
use crate::snapshot::Snapshot;
use outcomes::Outcomes;
use state::Shared;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// A cohort client for one environment. Cheap to clone (all clones share one snapshot,
/// one set of outcome counters and one set of background tasks). [`Client::close`]
/// stops following the service and reports pending outcomes; dropping the last clone
/// does the same in the background, without waiting.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    outcomes: Arc<Outcomes>,
    /// Sync: stopped by `close`.
    tasks: Vec<AbortHandle>,
    /// The staleness watchdog, if any: it runs until the last clone goes, so a closed
    /// client with a `max_staleness` still turns stale.
    watchdog: Option<AbortHandle>,
    /// The outcome flusher: told to stop by `shutdown` (it reports a last time), and
    /// awaited by `close`.
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// The acknowledger: told to stop by `shutdown` (it says goodbye, so kill
    /// confirmation stops counting this client at once), and awaited by `close`.
    acknowledger: Mutex<Option<JoinHandle<()>>>,
    shutdown: watch::Sender<bool>,
}

/// What `ClientBuilder::build` starts.
pub(crate) struct Parts {
    pub(crate) shared: Arc<Shared>,
    pub(crate) outcomes: Arc<Outcomes>,
    pub(crate) tasks: Vec<AbortHandle>,
    pub(crate) watchdog: Option<AbortHandle>,
    pub(crate) flusher: JoinHandle<()>,
    pub(crate) acknowledger: JoinHandle<()>,
    pub(crate) shutdown: watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.iter().chain(&self.watchdog) {
            task.abort();
        }
        // The flusher reports what is pending and the acknowledger says goodbye, then
        // both end (bounded by the request timeout); they are cancelled with the
        // runtime if that goes first.
        self.shutdown.send_replace(true);
    }
}

impl Client {
    /// Starts configuring a client of `env` at `base_url` (e.g. `https://cohort.internal`),
    /// authenticating with `token`: a token with the `eval` scope, and `report` as well
    /// for [`Client::track`]'s outcomes to be accepted (a server-side SDK holds
    /// `eval report`; without `report` the service refuses them and they are dropped).
    pub fn builder(base_url: impl Into<String>, env: impl Into<String>, token: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url.into(), env.into(), token.into())
    }

    pub(crate) fn start(parts: Parts) -> Self {
        let Parts { shared, outcomes, tasks, watchdog, flusher, acknowledger, shutdown } = parts;
        Client {
            inner: Arc::new(Inner {
                shared,
                outcomes,
                tasks,
                watchdog,
                flusher: Mutex::new(Some(flusher)),
                acknowledger: Mutex::new(Some(acknowledger)),
                shutdown,
            }),
        }
    }

    /// The decision for `release`, staleness applied: the configuration's, or the
    /// baseline with reason `STALE`.
    #[inline(always)]
    fn decide<'s>(&self, snapshot: &'s Snapshot, release: &str, ctx: &Context) -> Decision<'s> {
        if self.inner.shared.freshness().is_stale() {
            stale(snapshot, release)
        } else {
            snapshot.evaluate(release, ctx)
        }
    }

    /// Which version of `release` the unit in `ctx` gets, evaluated locally. A release
    /// this client does not know (yet) answers `default` with reason `ERROR` and error
    /// `FLAG_NOT_FOUND`; past the `max_staleness` limit, every known release answers
    /// its baseline with reason `STALE`. No lock, no allocation, no I/O.
    #[inline]
    pub fn version<'a>(&self, release: &str, ctx: &Context, default: &'a str) -> Evaluation<'a> {
        let snapshot = self.inner.shared.load();
        if self.inner.shared.freshness().is_stale() {
            return Evaluation::new(stale(&snapshot, release), default, snapshot.revision());
        }
        Evaluation::new(snapshot.evaluate(release, ctx), default, snapshot.revision())
    }

    /// For two-version releases (a feature behind a flag): true when the unit gets a
    /// candidate, false for the baseline (stale included) and for a release this
    /// client does not know.
    #[inline]
    pub fn is_enabled(&self, release: &str, ctx: &Context) -> bool {
        let snapshot = self.inner.shared.load();
        self.decide(&snapshot, release, ctx).is_candidate()
    }

    /// Counts an outcome of serving `release` to the unit in `ctx`, for the version
    /// this client serves that unit now (what [`Client::version`] answers). Counted in
    /// memory and reported in batches; never waits for I/O. A release this client
    /// does not know is not counted (there is no version to count it for).
    ///
    /// When the configuration may have changed since the version was served (a long
    /// request across a kill), [`Client::track_served`] counts the version actually
    /// served instead.
    #[inline]
    pub fn track(&self, release: &str, ctx: &Context, outcome: Outcome) {
        let snapshot = self.inner.shared.load();
        if let Some(version) = self.decide(&snapshot, release, ctx).version {
            self.inner.outcomes.record(release, version, outcome);
        }
    }

    /// Counts an outcome for the version `served` says (an answer of
    /// [`Client::version`] for `release`). Not counted: the caller's default of an
    /// unknown release, and a release this client does not know now.
    #[inline]
    pub fn track_served(&self, release: &str, served: &Evaluation<'_>, outcome: Outcome) {
        if served.version_index.is_none() || self.inner.shared.load().get(release).is_none() {
            return;
        }
        self.inner.outcomes.record(release, served.version(), outcome);
    }

    /// Outcomes lost since the client was built: tracked while
    /// `max_outcome_pairs` (release, version) pairs were already pending, refused by the
    /// service, undeliverable at [`Client::close`], or tracked after it. Each loss is
    /// also logged (a `warn` line per flush that found new ones).
    pub fn dropped_outcomes(&self) -> u64 {
        self.inner.outcomes.dropped()
    }

    /// Stops following the service, reports the outcomes still pending and tells the
    /// service this instance is gone (so `cohort kill --wait` stops counting it at
    /// once); returns once both are delivered or have failed (each bounded by the
    /// request timeout). Call it on shutdown. Afterwards every clone keeps answering
    /// from the last snapshot (turning stale after `max_staleness`, if set), and
    /// tracking only counts drops. A second call returns at once.
    pub async fn close(&self) {
        let take = |slot: &Mutex<Option<JoinHandle<()>>>| slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (flusher, acknowledger) = (take(&self.inner.flusher), take(&self.inner.acknowledger));
        for task in &self.inner.tasks {
            task.abort();
        }
        self.inner.shutdown.send_replace(true);
        // Only an abort (the runtime shutting down) ends them otherwise.
        if let Some(flusher) = flusher {
            let _ = flusher.await;
        }
        if let Some(acknowledger) = acknowledger {
            let _ = acknowledger.await;
        }
    }

    /// The snapshot in use now, to evaluate several releases against one consistent
    /// configuration. Hold it briefly: it keeps that configuration alive. Evaluating on
    /// it directly does not apply the staleness limit: check [`Client::is_stale`].
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

    /// True while the `max_staleness` limit is exceeded: every decision is then the
    /// baseline with reason `STALE`. Always false without a limit.
    pub fn is_stale(&self) -> bool {
        self.inner.shared.freshness().is_stale()
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

/// The decision while stale: the baseline of a known release, not found otherwise.
/// Out of line: the hot path only tests the flag.
#[cold]
#[inline(never)]
fn stale<'s>(snapshot: &'s Snapshot, release: &str) -> Decision<'s> {
    match snapshot.get(release).and_then(|r| r.release().baseline()) {
        Some(baseline) => Decision {
            version: Some(baseline),
            version_index: Some(0),
            reason: Reason::Stale,
            bucket: None,
            error: None,
        },
        None => Decision::NOT_FOUND,
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("revision", &self.revision())
            .field("ready", &self.is_ready())
            .field("stale", &self.is_stale())
            .finish()
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
