//! The outcome flusher: sends what `track` counted to `POST /v1/envs/{env}/events`
//! every flush interval, sooner when `flush_size` outcomes are pending, and a last time
//! on `close`. A report the service could not take (unreachable, 5xx) is put back and
//! sent with the next one; one it refuses (4xx) is dropped, so one bad report cannot
//! block the rest forever.

use super::outcomes::{OutcomeCount, Outcomes};
use reqwest::{StatusCode, Url};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Most counts per request (the service's limit).
const MAX_REPORT: usize = 1_000;

/// Where and how often outcomes go.
pub(crate) struct Flusher {
    pub(crate) outcomes: Arc<Outcomes>,
    pub(crate) http: reqwest::Client,
    pub(crate) url: Url,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// Why a report was not delivered.
enum Failure {
    /// Worth trying again: the service was unreachable or overloaded.
    Retry(String),
    /// The service refused it for good.
    Refused(StatusCode),
}

impl Flusher {
    /// Flushes on every tick and early request until `shutdown` changes (or its
    /// sender goes), then flushes a last time; outcomes tracked from then on are
    /// dropped.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut state = State::default();
        let mut tick = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.outcomes.flush_now.notified() => {}
                _ = shutdown.changed() => break,
            }
            self.flush(&mut state, Round::Regular).await;
        }
        self.outcomes.close();
        self.flush(&mut state, Round::Last).await;
    }

    async fn flush(&self, state: &mut State, round: Round) {
        let batch = self.outcomes.take();
        for (i, chunk) in batch.chunks(MAX_REPORT).enumerate() {
            match self.send(chunk).await {
                Ok(()) => {
                    if std::mem::take(&mut state.failing) {
                        tracing::info!("outcome reports delivered again");
                    }
                }
                Err(Failure::Refused(status)) => {
                    let lost: u64 = chunk.iter().map(OutcomeCount::total).sum();
                    self.outcomes.drop_outcomes(lost);
                    tracing::warn!(%status, lost, "the cohort service refused an outcome report; its counts are dropped");
                }
                Err(Failure::Retry(error)) => {
                    let rest = &batch[i * MAX_REPORT..];
                    match round {
                        Round::Regular => self.outcomes.restore(rest),
                        Round::Last => self.outcomes.drop_outcomes(rest.iter().map(OutcomeCount::total).sum()),
                    }
                    if !std::mem::replace(&mut state.failing, true) || round == Round::Last {
                        tracing::warn!(%error, last = round == Round::Last, "outcome report not delivered");
                    } else {
                        tracing::debug!(%error, "outcome report still not delivered");
                    }
                    break;
                }
            }
        }
        let dropped = self.outcomes.dropped();
        if dropped > state.reported_drops {
            tracing::warn!(
                dropped = dropped - state.reported_drops,
                total = dropped,
                max_pairs = self.outcomes.max_pairs(),
                "outcomes dropped (too many distinct release/version pairs pending, refused, or tracked after close)"
            );
            state.reported_drops = dropped;
        }
    }

    async fn send(&self, chunk: &[OutcomeCount]) -> Result<(), Failure> {
        let sent = self.http.post(self.url.clone()).timeout(self.timeout).json(chunk).send().await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                let transient = status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                Err(if transient {
                    Failure::Retry(format!("the service answered {status}"))
                } else {
                    Failure::Refused(status)
                })
            }
            Err(error) => Err(Failure::Retry(error.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Regular,
    /// On close: what cannot be delivered now never will be.
    Last,
}

#[derive(Default)]
struct State {
    failing: bool,
    reported_drops: u64,
}
