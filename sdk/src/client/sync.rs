//! The background task: follow the stream, reconnect with backoff, poll while the
//! stream cannot be opened, and keep the last good snapshot whatever happens.

use super::builder::{Settings, SyncMode, Urls};
use super::state::Shared;
use super::wire::{ApplyError, Change};
use crate::snapshot::{Snapshot, SnapshotData};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why talking to the service failed. Never surfaces to the application: the task logs
/// it and retries, and evaluation goes on from the last snapshot.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// Connection, TLS or body transfer failure.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// No response within the request timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// An unexpected status (401/403: the token is refused).
    #[error("the service answered {0}")]
    Status(reqwest::StatusCode),
    /// Nothing, not even a heartbeat, for the idle timeout.
    #[error("the stream was silent for {0:?}")]
    Idle(Duration),
    /// Bytes that are not a well-formed event stream.
    #[error("malformed event stream: {0}")]
    Stream(String),
    /// An event or snapshot whose JSON is not what it should be.
    #[error("malformed {what}: {source}")]
    Json { what: &'static str, source: serde_json::Error },
    /// A change that cannot be applied to the snapshot in use.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// The state of the background task.
pub(crate) struct SyncTask {
    pub(super) settings: Settings,
    pub(super) urls: Urls,
    pub(super) http: reqwest::Client,
    pub(super) shared: Arc<Shared>,
    /// The revision of the snapshot in use when it came from the service, so that the
    /// stream can resume from it and polls can send it as `If-None-Match`. `None` while
    /// the client runs on nothing or on the bootstrap (which may come from elsewhere),
    /// or after a change it could not apply: the next connection then asks for a full
    /// snapshot.
    pub(super) served: Option<u64>,
    /// The id this client acknowledges under, sent with each stream so the service
    /// can tell an acknowledging SDK's stream from one that cannot acknowledge
    /// (`None` for an id the service would refuse).
    pub(super) sdk_id: Option<String>,
    /// The number of the latest stream connection that opened, for the acknowledger
    /// (it acknowledges again on each).
    pub(super) connections: watch::Sender<u64>,
    /// The number the next stream request carries: every attempt gets its own, so
    /// the end of one never stands for another.
    pub(super) next_connection: u64,
}

impl SyncTask {
    pub(crate) fn new(
        settings: Settings,
        urls: Urls,
        http: reqwest::Client,
        shared: Arc<Shared>,
        sdk_id: Option<String>,
        connections: watch::Sender<u64>,
    ) -> Self {
        SyncTask { settings, urls, http, shared, served: None, sdk_id, connections, next_connection: 1 }
    }

    /// Runs until the client is dropped (which aborts it).
    pub(crate) async fn run(mut self) {
        match self.settings.mode {
            SyncMode::Stream => self.stream_forever().await,
            SyncMode::Poll => self.poll_forever().await,
        }
    }

    /// Puts a snapshot from the service in use.
    pub(super) fn install(&mut self, data: SnapshotData) {
        let (snapshot, rejected) = Snapshot::compile_lenient(data);
        for (release, error) in rejected {
            tracing::warn!(%release, %error, "release does not compile (a newer server?); it evaluates as unknown");
        }
        self.served = Some(snapshot.revision());
        self.shared.install(snapshot);
    }

    /// Applies a change from the stream to the snapshot in use.
    pub(super) fn apply(&mut self, change: Change) -> Result<(), SyncError> {
        if self.served.is_none() {
            return Err(SyncError::Stream("a change arrived before any snapshot".into()));
        }
        match change.apply(&self.shared.current()) {
            Ok(Some(next)) => {
                self.served = Some(next.revision());
                self.shared.install(next);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error @ ApplyError::Unknown(_)) => {
                self.served = None;
                Err(error.into())
            }
            Err(error @ ApplyError::Gap { .. }) => Err(error.into()),
        }
    }

    async fn poll_forever(&mut self) {
        let mut failing = false;
        loop {
            let result = self.poll_once().await;
            report(&mut failing, result.map(|_| ()), "snapshot poll");
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn stream_forever(&mut self) {
        let mut failures: u32 = 0;
        let mut last_poll: Option<Instant> = None;
        let mut failing = false;
        loop {
            let mut heard = false;
            let result = self.follow_stream(&mut heard).await;
            if heard {
                // The stream worked, then ended (server restart, shutdown, or this client
                // fell behind): resume soon. Jitter spreads out a crowd of clients.
                failures = 0;
                if let Err(error) = result {
                    tracing::debug!(%error, "event stream interrupted; resuming");
                }
                tokio::time::sleep(jitter(self.settings.backoff_initial)).await;
                continue;
            }
            report(&mut failing, result, "event stream");
            failures = failures.saturating_add(1);
            let retry_at = Instant::now() + jitter(backoff(&self.settings, failures));
            // Until the stream can be retried, poll the snapshot.
            loop {
                let due = last_poll.is_none_or(|at| at.elapsed() >= self.settings.poll_interval);
                if due {
                    last_poll = Some(Instant::now());
                    match self.poll_once().await {
                        Ok(true) => {
                            tracing::debug!(revision = ?self.served, "snapshot polled while the stream is down")
                        }
                        Ok(false) => {}
                        Err(error) => tracing::debug!(%error, "snapshot poll failed"),
                    }
                }
                let next_poll = last_poll.map_or(retry_at, |at| at + self.settings.poll_interval);
                if next_poll >= retry_at {
                    tokio::time::sleep_until(retry_at).await;
                    break;
                }
                tokio::time::sleep_until(next_poll).await;
            }
        }
    }
}

/// Logs the first failure of a run of failures loudly, the rest quietly, and the
/// recovery.
fn report(failing: &mut bool, result: Result<(), SyncError>, what: &'static str) {
    match result {
        Ok(()) if *failing => {
            *failing = false;
            tracing::info!(what, "cohort service reachable again");
        }
        Ok(()) => {}
        Err(error) if !*failing => {
            *failing = true;
            tracing::warn!(what, %error, "cohort service unavailable; evaluating from the last snapshot");
        }
        Err(error) => tracing::debug!(what, %error, "cohort service still unavailable"),
    }
}

/// `initial`, doubling with each consecutive failure, capped at `max`.
fn backoff(settings: &Settings, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    settings.backoff_initial.saturating_mul(1 << doublings).min(settings.backoff_max)
}

/// A random duration between half of `delay` and `delay`.
fn jitter(delay: Duration) -> Duration {
    // RandomState is seeded randomly per process and stepped per instance: enough
    // randomness to spread reconnections, without a dependency.
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let half = delay / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(random % span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_within_half_to_full() {
        let settings = Settings {
            mode: SyncMode::Stream,
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        };
        let delays: Vec<u128> = (1..=7).map(|f| backoff(&settings, f).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff(&settings, u32::MAX), Duration::from_secs(2));
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(400));
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400), "{d:?}");
        }
    }
}
