//! Prometheus metrics (`GET /metrics`), with the `prometheus` crate. Counters are
//! process-wide statics so any layer can count without threading a handle through;
//! gauges that describe state (SSE subscribers, ramps) are filled in at scrape time
//! from the snapshot rather than kept in step on every change.
//!
//! Every label's values are bounded by what an operator creates (environments, and
//! releases only with `metrics.per_release`), never by what a caller sends: a key the
//! environment does not hold counts under `release="-"`, and latency is labelled by route
//! pattern, not path.

use crate::config::MetricsSettings;
use crate::snapshots::Snapshots;
use crate::stream::Streams;
use cohort_sdk::{CompiledRelease, Decision};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, LazyLock, OnceLock};

/// Every metric cohort exports.
pub struct Metrics {
    registry: Registry,
    /// Evaluations served over HTTP, by environment, release, version and reason.
    pub evaluations: IntCounterVec,
    /// HTTP request latency by route pattern, method and status class.
    pub http_seconds: HistogramVec,
    /// Connected SSE subscribers by environment.
    pub sse_subscribers: IntGaugeVec,
    /// Store failures seen by the API, by kind.
    pub store_errors: IntCounterVec,
    /// Ramp state per release (1 for the current state).
    pub ramp_state: IntGaugeVec,
    /// Ramp step per release, numbered from 0 like the API's `step` and the CLI.
    pub ramp_step: IntGaugeVec,
    /// Candidate share (percent) per ramping release.
    pub ramp_percent: IntGaugeVec,
    /// Guard verdicts that led to transitions.
    pub guard_verdicts: IntCounterVec,
    /// 1 per environment whose store went backwards (writes refused until reseeded).
    pub store_regressed: IntGaugeVec,
    /// Kills served by this instance that the store has not taken yet, per environment.
    pub pending_kills: IntGaugeVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("cohort".into()), None)?;
    let evaluations = IntCounterVec::new(
        Opts::new("evaluations_total", "Evaluations served over HTTP"),
        &["environment", "release", "version", "reason"],
    )?;
    let http_seconds = HistogramVec::new(
        HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]),
        &["route", "method", "status"],
    )?;
    let sse_subscribers =
        IntGaugeVec::new(Opts::new("sse_subscribers", "Connected SSE subscribers"), &["environment"])?;
    let store_errors =
        IntCounterVec::new(Opts::new("store_errors_total", "Store failures seen by the API"), &["kind"])?;
    let ramp_state = IntGaugeVec::new(
        Opts::new("ramp_state", "1 for the ramp's current state"),
        &["environment", "release", "state"],
    )?;
    let ramp_step = IntGaugeVec::new(
        Opts::new("ramp_step", "Current ramp step, numbered from 0 (the API's `step`)"),
        &["environment", "release"],
    )?;
    let ramp_percent = IntGaugeVec::new(
        Opts::new("ramp_candidate_buckets", "Candidate share in bucket units (1000 = 1 %)"),
        &["environment", "release"],
    )?;
    let guard_verdicts =
        IntCounterVec::new(Opts::new("guard_verdicts_total", "Guard verdicts behind ramp transitions"), &["verdict"])?;
    let store_regressed = IntGaugeVec::new(
        Opts::new("store_regressed", "1 when the store holds an older state of the environment than this instance saw"),
        &["environment"],
    )?;
    let pending_kills = IntGaugeVec::new(
        Opts::new("pending_kills", "Kills served by this instance and not yet written to the store"),
        &["environment"],
    )?;
    for collector in [
        Box::new(evaluations.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(http_seconds.clone()),
        Box::new(sse_subscribers.clone()),
        Box::new(store_errors.clone()),
        Box::new(ramp_state.clone()),
        Box::new(ramp_step.clone()),
        Box::new(ramp_percent.clone()),
        Box::new(guard_verdicts.clone()),
        Box::new(store_regressed.clone()),
        Box::new(pending_kills.clone()),
    ] {
        registry.register(collector)?;
    }
    Ok(Metrics {
        registry,
        evaluations,
        http_seconds,
        sse_subscribers,
        store_errors,
        ramp_state,
        ramp_step,
        ramp_percent,
        guard_verdicts,
        store_regressed,
        pending_kills,
    })
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| match build() {
    Ok(metrics) => metrics,
    // Only a programming error (a duplicate or malformed name) gets here.
    Err(e) => panic!("metric definitions are invalid: {e}"),
});

/// What `cohort_evaluations_total` breaks evaluations down by, besides environment and
/// reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseLabels {
    /// `release` and `version` are `_all`: a handful of series per environment, however
    /// many releases it holds (the default).
    Aggregate,
    /// One series per release, version and reason (`metrics.per_release = true`): as many
    /// series as releases times versions, for installations with few releases.
    PerRelease,
}

impl ReleaseLabels {
    /// The policy `settings` ask for.
    pub fn from_settings(settings: &MetricsSettings) -> Self {
        if settings.per_release { ReleaseLabels::PerRelease } else { ReleaseLabels::Aggregate }
    }
}

/// The `release` and `version` label value of evaluations counted together.
pub const ALL: &str = "_all";

/// The `release` and `version` label value of evaluations of a key the environment does
/// not hold.
pub const UNKNOWN: &str = "-";

/// Where the evaluations of one request are counted: the environment served and the
/// label policy. Cheap to copy; built per request from the route's environment.
#[derive(Debug, Clone, Copy)]
pub struct Counting<'a> {
    /// The environment's name (the `environment` label).
    pub env: &'a str,
    /// Whether releases get their own series.
    pub labels: ReleaseLabels,
}

impl Counting<'_> {
    /// The counter of `release`'s decision `decision` (which carries a version).
    pub fn counter(&self, release: &CompiledRelease, version: &str, decision: &Decision<'_>) -> prometheus::IntCounter {
        let (release, version) = match self.labels {
            ReleaseLabels::PerRelease => (release.key(), version),
            ReleaseLabels::Aggregate => (ALL, ALL),
        };
        METRICS.evaluations.with_label_values(&[self.env, release, version, decision.reason.as_str()])
    }
}

/// Counts one evaluation served over HTTP: `release` is the release evaluated, `None`
/// for a key the environment does not hold. Unknown keys all count under
/// `release="-"`, so callers cannot grow the label set.
pub fn count_evaluation(counting: Counting<'_>, release: Option<&Arc<CompiledRelease>>, decision: &Decision<'_>) {
    let counted = release.and_then(|release| crate::answers::with(counting, release, decision, |a| a.counter.inc()));
    if counted.is_none() {
        METRICS.evaluations.with_label_values(&[counting.env, UNKNOWN, UNKNOWN, decision.reason.as_str()]).inc();
    }
}

/// Renders the Prometheus text format, refreshing the state gauges first.
pub fn render(snapshots: &Snapshots, streams: &Streams) -> Result<String, prometheus::Error> {
    let m = &*METRICS;
    m.store_regressed.reset();
    for env in snapshots.watch().all_regressed().keys() {
        m.store_regressed.with_label_values(&[env.as_str()]).set(1);
    }
    m.pending_kills.reset();
    for env in snapshots.environments() {
        let overlay = snapshots.overlay(&env);
        let pending = overlay.releases.len() + usize::from(overlay.kill_all.is_some());
        if pending > 0 {
            m.pending_kills.with_label_values(&[env.as_str()]).set(pending as i64);
        }
    }
    m.ramp_state.reset();
    m.ramp_step.reset();
    m.ramp_percent.reset();
    for env in snapshots.environments() {
        let name = env.as_str();
        m.sse_subscribers.with_label_values(&[name]).set(streams.subscribers(&env) as i64);
        let Some(snapshot) = snapshots.get(&env) else { continue };
        for release in snapshot.snapshot.iter() {
            let Some(ramp) = &release.release().ramp else { continue };
            m.ramp_state.with_label_values(&[name, release.key(), ramp.state.as_str()]).set(1);
            m.ramp_step.with_label_values(&[name, release.key()]).set(ramp.step as i64);
            let share = release.release().allocation.get(&ramp.candidate).copied().unwrap_or(0);
            m.ramp_percent.with_label_values(&[name, release.key()]).set(i64::from(share));
        }
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&m.registry.gather(), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Middleware: observes every request's latency by route pattern (never the raw path,
/// which would explode the label set), method and status class. The hot routes never
/// reach it: the API's hot-route dispatch serves them and records theirs with a
/// [`RouteLatency`] each.
pub async fn observe(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let response = next.call(req).await?;
    let class = StatusClass::of(response.status());
    // The router matches the path again here; only the colder routes pay for it.
    let route = response.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    METRICS
        .http_seconds
        .with_label_values(&[route.as_str(), method.as_str(), class.as_str()])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

/// The latency histograms of one route served outside the router, one per status
/// class, each looked up in the vector once per process (a labelled lookup hashes every
/// label value each time). A `static` per route.
pub struct RouteLatency {
    pattern: &'static str,
    method: &'static str,
    cells: [OnceLock<Histogram>; 4],
}

impl RouteLatency {
    /// The histograms of the route `pattern` (as the router names it) served for
    /// `method`.
    pub const fn new(pattern: &'static str, method: &'static str) -> Self {
        RouteLatency { pattern, method, cells: [const { OnceLock::new() }; 4] }
    }

    /// The route pattern.
    pub fn pattern(&self) -> &'static str {
        self.pattern
    }

    /// Records the latency of a request that started at `started`, answered with `status`.
    pub fn observe(&self, status: actix_web::http::StatusCode, started: std::time::Instant) {
        let class = StatusClass::of(status);
        self.cells[class as usize]
            .get_or_init(|| METRICS.http_seconds.with_label_values(&[self.pattern, self.method, class.as_str()]))
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A status's class, the `status` label.
#[derive(Clone, Copy)]
enum StatusClass {
    Success,
    Redirect,
    ClientError,
    ServerError,
}

impl StatusClass {
    fn of(status: actix_web::http::StatusCode) -> StatusClass {
        match status.as_u16() {
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }
}
