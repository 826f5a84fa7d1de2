//! The outcome flusher: sends what `track` counted to `POST /v1/envs/{env}/events`
//! every flush interval, sooner when `flush_size` outcomes are pending, and a last time
//! on `close`. A report the service could not take (unreachable, 5xx) is put back and
//! sent with the next one; one it refuses (4xx) is dropped, so one bad report cannot
//! block the rest forever — except for the pairs of releases or versions the environment
//! no longer holds (422 `unknown_outcome_pairs`, which lists them): those are dropped and
//! the rest of the report is sent again.

use super::outcomes::{OutcomeCount, Outcomes};
use reqwest::{StatusCode, Url};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Most counts per request (the service's limit).
const MAX_REPORT: usize = 1_000;
/// Most times one report is sent again without the pairs the service did not know.
const MAX_RESENDS: usize = 3;

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
    /// The service refused it for naming these (release, version) pairs, which its
    /// environment does not hold (a release deleted, a version renamed, a typo).
    Unknown(Vec<(String, String)>),
}

/// The body of a 422 `unknown_outcome_pairs`.
#[derive(serde::Deserialize)]
struct UnknownPairsBody {
    error: UnknownPairs,
}

#[derive(serde::Deserialize)]
struct UnknownPairs {
    code: String,
    #[serde(default)]
    unknown: Vec<UnknownPair>,
}

#[derive(serde::Deserialize)]
struct UnknownPair {
    release: String,
    version: String,
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
        'chunks: for (i, chunk) in batch.chunks(MAX_REPORT).enumerate() {
            let mut report = chunk.to_vec();
            let mut resends = 0;
            loop {
                match self.send(&report).await {
                    Ok(()) => {
                        if std::mem::take(&mut state.failing) {
                            tracing::info!("outcome reports delivered again");
                        }
                    }
                    Err(Failure::Unknown(pairs)) if resends < MAX_RESENDS => {
                        let before = report.len();
                        let (unknown, known): (Vec<_>, Vec<_>) = report
                            .into_iter()
                            .partition(|c| pairs.iter().any(|(r, v)| *r == c.release && *v == c.version));
                        let lost: u64 = unknown.iter().map(OutcomeCount::total).sum();
                        self.outcomes.drop_outcomes(lost);
                        let named: Vec<String> =
                            unknown.iter().map(|c| format!("{}/{}", c.release, c.version)).collect();
                        tracing::warn!(pairs = ?named, lost, "the environment holds no such release or version; these outcomes are dropped and the rest sent again");
                        if known.is_empty() || known.len() == before {
                            if known.len() == before {
                                // Nothing matched what the service listed: not worth a resend.
                                self.outcomes.drop_outcomes(known.iter().map(OutcomeCount::total).sum());
                            }
                            continue 'chunks;
                        }
                        report = known;
                        resends += 1;
                        continue;
                    }
                    Err(Failure::Refused(status)) => {
                        let lost: u64 = report.iter().map(OutcomeCount::total).sum();
                        self.outcomes.drop_outcomes(lost);
                        tracing::warn!(%status, lost, "the cohort service refused an outcome report; its counts are dropped");
                    }
                    Err(Failure::Unknown(_)) => {
                        let lost: u64 = report.iter().map(OutcomeCount::total).sum();
                        self.outcomes.drop_outcomes(lost);
                        tracing::warn!(
                            lost,
                            "the cohort service kept refusing an outcome report for unknown pairs; its counts are dropped"
                        );
                    }
                    Err(Failure::Retry(error)) => {
                        // This report (less what was dropped) and every chunk after it.
                        let mut undelivered = report;
                        undelivered.extend_from_slice(&batch[((i + 1) * MAX_REPORT).min(batch.len())..]);
                        match round {
                            Round::Regular => self.outcomes.restore(&undelivered),
                            Round::Last => {
                                self.outcomes.drop_outcomes(undelivered.iter().map(OutcomeCount::total).sum())
                            }
                        }
                        if !std::mem::replace(&mut state.failing, true) || round == Round::Last {
                            tracing::warn!(%error, last = round == Round::Last, "outcome report not delivered");
                        } else {
                            tracing::debug!(%error, "outcome report still not delivered");
                        }
                        break 'chunks;
                    }
                }
                continue 'chunks;
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
                if transient {
                    return Err(Failure::Retry(format!("the service answered {status}")));
                }
                if status == StatusCode::UNPROCESSABLE_ENTITY
                    && let Ok(body) = response.json::<UnknownPairsBody>().await
                    && body.error.code == "unknown_outcome_pairs"
                    && !body.error.unknown.is_empty()
                {
                    return Err(Failure::Unknown(
                        body.error.unknown.into_iter().map(|p| (p.release, p.version)).collect(),
                    ));
                }
                Err(Failure::Refused(status))
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
