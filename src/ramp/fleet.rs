//! Ramps over fleets: batches of nodes instead of shares of users. A batch is done when
//! every node in it runs the candidate and is healthy; then (after the hold) the next
//! batch starts. A candidate node reporting unhealthy rolls the whole release back; a
//! batch that does not converge within the progress deadline pauses the ramp.

use super::{DRIVER_ACTOR, Ramps};
use crate::fleet::{assignment, batch_size, share_of};
use crate::releases::ReleaseError;
use crate::store::{Action, EnvName, NodeReport, StoreError, WriteMeta};
use cohort_sdk::{Ramp, RampState, Release};

/// What happens to a fleet ramp now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Move on: to step `to`, with `nodes` on the candidate (a sub-batch when
    /// `max_unavailable` caps it below the step's size).
    Batch {
        to: usize,
        nodes: Option<u32>,
        completes: bool,
    },
    RollBack,
    PauseDeadline,
}

/// The node count step `index` asks for among `n` live nodes.
fn step_target(ramp: &Ramp, index: usize, n: usize) -> usize {
    let step = &ramp.steps[index];
    match step.nodes {
        Some(k) => (k as usize).min(n),
        None => share_of(step.buckets, n),
    }
}

fn decide(release: &Release, ramp: &Ramp, live: &[NodeReport], now: u64) -> Option<Step> {
    let candidate = &ramp.candidate;
    let on_candidate = |n: &&NodeReport| release.overrides.get(&n.node) == Some(candidate);
    if live.iter().any(|n| n.running.as_ref() == Some(candidate) && !n.healthy) {
        return Some(Step::RollBack);
    }
    let batch: Vec<&NodeReport> = live.iter().filter(on_candidate).collect();
    let assigned = batch_size(release, live.len());
    let converged = batch.len() == assigned && batch.iter().all(|n| n.healthy && n.running.as_ref() == Some(candidate));
    if !converged {
        let deadline = ramp.progress_deadline_ms.unwrap_or(u64::MAX);
        return (now.saturating_sub(ramp.step_started_ms) > deadline).then_some(Step::PauseDeadline);
    }
    if now < super::tick::hold_end(ramp).unwrap_or(u64::MAX) {
        return None;
    }
    let n = live.len();
    let (to, target) = if assigned < step_target(ramp, ramp.step, n) {
        (ramp.step, step_target(ramp, ramp.step, n))
    } else if ramp.step + 1 < ramp.steps.len() {
        (ramp.step + 1, step_target(ramp, ramp.step + 1, n))
    } else {
        return Some(Step::Batch { to: ramp.step, nodes: None, completes: true });
    };
    let capped = ramp.max_unavailable.map_or(target, |m| target.min(assigned + m as usize));
    let nodes = (capped < target || ramp.steps[to].nodes.is_some()).then_some(capped as u32);
    let last = to + 1 == ramp.steps.len() && ramp.steps[to].hold_ms.is_none() && capped == target;
    Some(Step::Batch { to, nodes, completes: last })
}

impl Ramps {
    /// One driver step for a fleet release.
    pub(super) async fn drive_fleet(
        &self,
        env: &EnvName,
        key: &str,
        release: &Release,
        ramp: &Ramp,
        revision: u64,
        now: u64,
    ) -> Result<(), ReleaseError> {
        let Some(fleet) = release.fleet.as_deref() else { return Ok(()) };
        let live = self.fleets.live_nodes(env, fleet).await?;
        let Some(step) = decide(release, ramp, &live, now) else { return Ok(()) };
        let (action, event, reason) = match step {
            Step::Batch { completes: true, .. } => (Action::RampComplete, "completed", "batch converged".to_owned()),
            Step::Batch { to, nodes, .. } => (
                Action::RampAdvance,
                "advanced",
                format!(
                    "batch converged; step {} with {}",
                    to + 1,
                    nodes.map_or("its share".to_owned(), |n| format!("{n} nodes"))
                ),
            ),
            Step::RollBack => (Action::RampRollback, "rolled_back", "a candidate node reports unhealthy".to_owned()),
            Step::PauseDeadline => (Action::RampPause, "paused", "progress_deadline_exceeded".to_owned()),
        };
        let meta = WriteMeta::now(DRIVER_ACTOR, action, Some(reason));
        let result = self
            .releases
            .modify(env, key, Some(revision), meta, |r| {
                let Some(ramp) = r.ramp.as_mut() else { return Err(ReleaseError::Conflict("ramp gone".into())) };
                let candidate = ramp.candidate.clone();
                match step {
                    Step::Batch { to, nodes, completes } => {
                        if to != ramp.step || !completes {
                            ramp.step = to;
                            ramp.step_started_ms = now;
                            ramp.extensions = 0;
                            let buckets = ramp.steps[to].buckets;
                            r.fleet_nodes = nodes;
                            if buckets > 0 {
                                r.allocation.insert(candidate, buckets);
                            }
                        }
                        if completes && let Some(ramp) = r.ramp.as_mut() {
                            ramp.state = RampState::Completed;
                        }
                    }
                    Step::RollBack => {
                        ramp.state = RampState::RolledBack;
                        ramp.reason = Some("a candidate node reports unhealthy".to_owned());
                        r.allocation.insert(candidate, 0);
                        r.fleet_nodes = None;
                    }
                    Step::PauseDeadline => {
                        ramp.state = RampState::Paused;
                        ramp.reason = Some("progress_deadline_exceeded".to_owned());
                    }
                }
                r.overrides = assignment(r, &live);
                Ok(())
            })
            .await;
        match result {
            Ok(view) => {
                tracing::info!(%env, release = %key, event, revision = view.revision, "fleet ramp transition");
                self.notify(env, &view, event, DRIVER_ACTOR);
                Ok(())
            }
            Err(ReleaseError::Store(StoreError::RevisionMismatch { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
