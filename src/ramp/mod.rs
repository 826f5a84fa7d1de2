//! Automatic ramps (docs/model.md, "Ramps and guards"): a plan of steps walked by the
//! driver, each step guarded by candidate-vs-baseline error rates. All state lives in
//! the release (so restarts and several instances are safe) and every transition is one
//! compare-and-set with its audit entry; [`driver`] runs on every instance but only the
//! lease holder drives.

pub mod driver;
mod fleet;
pub mod guard;
pub mod plan;
pub mod tick;
pub mod window;

use crate::fleet::Fleets;
use crate::releases::{Actor, EnvView, ReleaseError, ReleaseView, Releases, ramp_guard};
use crate::snapshots::Snapshots;
use crate::store::{Action, EnvName, StoreError, WriteMeta};
use crate::webhooks::{WebhookEvent, Webhooks};
use cohort_sdk::{GuardFigures, Ramp, RampState, Release};
use guard::{Assessment, Sample};
use plan::RampRequest;
use serde::Serialize;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tick::Transition;

/// The actor the driver writes as.
pub const DRIVER_ACTOR: &str = "cohort:ramp";

/// The reason (and webhook event) of a ramp paused because a kill covers its release.
pub const KILLED: &str = "killed";

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Ramp operations: the API's and the driver's.
#[derive(Clone)]
pub struct Ramps {
    releases: Releases,
    snapshots: Arc<Snapshots>,
    webhooks: Webhooks,
    fleets: Fleets,
}

/// `GET …/ramp`: the ramp plus the guard's live figures and the next transition.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RampStatus {
    pub release: String,
    pub revision: u64,
    /// The ramp's plan and progress (`candidate`, `steps`, `step`, `state`, `guard`, …),
    /// flattened into this object.
    #[serde(flatten)]
    pub ramp: Ramp,
    /// The candidate's share now, in percent.
    pub percent: f64,
    /// When the current hold ends (ms since the epoch), while running.
    pub next_transition_ms: Option<u64>,
    /// The guard over the current step's window, computed now.
    pub live: GuardFigures,
}

fn conflict(message: impl Into<String>) -> ReleaseError {
    ReleaseError::Conflict(message.into())
}

fn figures(assessment: &Assessment, baseline: Sample, candidate: Sample, at_ms: u64) -> GuardFigures {
    GuardFigures {
        verdict: assessment.verdict.as_str().to_owned(),
        baseline_samples: baseline.total,
        baseline_errors: baseline.errors,
        candidate_samples: candidate.total,
        candidate_errors: candidate.errors,
        z: assessment.z.filter(|z| z.is_finite()),
        z_critical: assessment.z_critical,
        at_ms,
    }
}

impl Ramps {
    /// Ramp operations over `releases`, announcing transitions to `webhooks`.
    pub fn new(releases: Releases, snapshots: Arc<Snapshots>, webhooks: Webhooks, fleets: Fleets) -> Self {
        Ramps { releases, snapshots, webhooks, fleets }
    }

    /// Fleet operations (the driver reconciles node batches each tick).
    pub fn fleets(&self) -> &Fleets {
        &self.fleets
    }

    fn notify(&self, env: &EnvName, view: &ReleaseView, event: &str, actor: &str) {
        let ramp = view.ramp.as_ref().and_then(|r| serde_json::to_value(r).ok()).unwrap_or_default();
        self.webhooks.notify(WebhookEvent {
            event: event.to_owned(),
            environment: env.to_string(),
            release: view.key.clone(),
            revision: view.revision,
            actor: actor.to_owned(),
            at_ms: now_ms(),
            ramp,
        });
    }

    /// One person-made ramp change: `edit` under a compare-and-set with its audit entry,
    /// then `event` to the webhooks.
    async fn change(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        (action, reason): (Action, Option<String>),
        event: &str,
        edit: impl Fn(&mut Release) -> Result<(), ReleaseError>,
    ) -> Result<ReleaseView, ReleaseError> {
        let meta = WriteMeta::now(&actor.0, action, reason);
        let view = self.releases.modify(env, key, None, meta, edit).await?;
        self.notify(env, &view, event, &actor.0);
        Ok(view)
    }

    /// Starts a ramp: the candidate goes to the first step's share at once.
    pub async fn start(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        request: RampRequest,
    ) -> Result<ReleaseView, ReleaseError> {
        let now = now_ms();
        let kill_all = self.kill_all(env);
        self.change(env, actor, key, (Action::RampStart, None), "started", |release| {
            if release.killed {
                return Err(conflict("the release is killed; unkill it before ramping"));
            }
            if kill_all {
                return Err(conflict("the environment is killed (kill-all); unkill-all before ramping"));
            }
            if let Some(r) = release.ramp.as_ref().filter(|r| !r.state.is_finished()) {
                return Err(conflict(format!("a ramp of `{}` is already {}", r.candidate, r.state.as_str())));
            }
            let ramp = plan::build(release, request.clone(), now)
                .map_err(|e| ReleaseError::Invalid { field: e.field, message: e.message })?;
            match ramp.steps[0].nodes {
                Some(nodes) => release.fleet_nodes = Some(nodes),
                None => {
                    release.fleet_nodes = None;
                    release.allocation.insert(ramp.candidate.clone(), ramp.steps[0].buckets);
                }
            }
            release.ramp = Some(ramp);
            Ok(())
        })
        .await
    }

    /// Pauses a running ramp (people, alerting systems).
    pub async fn pause(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        reason: Option<String>,
    ) -> Result<ReleaseView, ReleaseError> {
        self.change(env, actor, key, (Action::RampPause, reason.clone()), "paused", |release| {
            let ramp = release.ramp.as_mut().ok_or_else(|| conflict("no ramp to pause"))?;
            if ramp.state != RampState::Running {
                return Err(conflict(format!("the ramp is {}, not running", ramp.state.as_str())));
            }
            ramp.state = RampState::Paused;
            ramp.reason = Some(reason.clone().unwrap_or_else(|| "paused".to_owned()));
            Ok(())
        })
        .await
    }

    /// Resumes a paused ramp; the current step's hold starts over.
    pub async fn resume(&self, env: &EnvName, actor: &Actor, key: &str) -> Result<ReleaseView, ReleaseError> {
        let now = now_ms();
        let kill_all = self.kill_all(env);
        self.change(env, actor, key, (Action::RampResume, None), "resumed", |release| {
            if release.killed {
                return Err(conflict("the release is killed; unkill it before resuming"));
            }
            if kill_all {
                return Err(conflict("the environment is killed (kill-all); unkill-all before resuming"));
            }
            let ramp = release.ramp.as_mut().ok_or_else(|| conflict("no ramp to resume"))?;
            if ramp.state != RampState::Paused {
                return Err(conflict(format!("the ramp is {}, not paused", ramp.state.as_str())));
            }
            ramp.state = RampState::Running;
            ramp.reason = None;
            ramp.step_started_ms = now;
            ramp.extensions = 0;
            Ok(())
        })
        .await
    }

    /// Aborts a ramp: the candidate goes back to 0 %.
    pub async fn abort(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        reason: Option<String>,
    ) -> Result<ReleaseView, ReleaseError> {
        self.change(env, actor, key, (Action::RampAbort, reason.clone()), "aborted", |release| {
            let ramp = release.ramp.as_mut().ok_or_else(|| conflict("no ramp to abort"))?;
            if ramp.state.is_finished() {
                return Err(conflict(format!("the ramp is already {}", ramp.state.as_str())));
            }
            ramp.state = RampState::Aborted;
            ramp.reason = Some(reason.clone().unwrap_or_else(|| "aborted".to_owned()));
            let candidate = ramp.candidate.clone();
            release.allocation.insert(candidate, 0);
            release.fleet_nodes = None;
            Ok(())
        })
        .await
    }

    /// Makes the candidate (the ramp's, or `candidate`) the baseline; allocation cleared.
    /// While a ramp is active only its own candidate may be promoted ([`ramp_guard`]):
    /// promoting another would silently discard the ramp.
    pub async fn promote(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        candidate: Option<String>,
    ) -> Result<ReleaseView, ReleaseError> {
        self.change(env, actor, key, (Action::Promote, None), "promoted", |release| {
            let chosen = match (&candidate, &release.ramp) {
                (Some(c), _) => c.clone(),
                (None, Some(ramp)) => ramp.candidate.clone(),
                (None, None) if release.versions.len() == 2 => release.versions[1].clone(),
                (None, None) => return Err(conflict("several candidates and no ramp: say which to promote")),
            };
            let index = release
                .versions
                .iter()
                .position(|v| *v == chosen)
                .filter(|&i| i > 0)
                .ok_or_else(|| conflict(format!("`{chosen}` is not a candidate of this release")))?;
            let before = release.clone();
            let promoted = release.versions.remove(index);
            release.versions.insert(0, promoted);
            release.allocation.clear();
            release.ramp = None;
            ramp_guard(&before, Some(release))
        })
        .await
    }

    /// A release's kill switch as the API and the console throw it:
    /// [`Releases::kill_release`] (through the store, or served at once and journalled),
    /// then the `killed` webhook when the kill froze a running ramp.
    pub async fn kill_release(
        &self,
        env: &EnvName,
        actor: &Actor,
        key: &str,
        on: bool,
        reason: Option<String>,
    ) -> Result<crate::pending::KillAnswer<ReleaseView>, ReleaseError> {
        let before = self.releases.get(env, key).ok().and_then(|v| v.ramp);
        let answer = self.releases.kill_release(env, actor, key, on, reason).await?;
        if on && answer.persisted {
            self.killed(env, &before, &answer.view, &actor.0);
        }
        Ok(answer)
    }

    /// Tells webhooks that a kill froze a running ramp.
    pub fn killed(&self, env: &EnvName, before: &Option<Ramp>, after: &ReleaseView, actor: &str) {
        let was_running = before.as_ref().is_some_and(|r| r.state == RampState::Running);
        let now_paused = after.ramp.as_ref().is_some_and(|r| r.state == RampState::Paused);
        if was_running && now_paused {
            self.notify(env, after, KILLED, actor);
        }
    }

    /// Whether this instance serves `env` under kill-all.
    fn kill_all(&self, env: &EnvName) -> bool {
        self.snapshots.get(env).is_some_and(|s| s.snapshot.kill_all())
    }

    /// Sets the environment kill switch, then pauses every running ramp of the
    /// environment (reason `killed`), each as its own compare-and-set with its audit
    /// entry and `killed` webhook. The switch comes first: it is what protects users,
    /// and a pause that fails here (store outage, crash) is made by the driver's next
    /// tick, which freezes any ramp it finds running under a kill.
    pub async fn set_kill_all(
        &self,
        env: &EnvName,
        actor: &Actor,
        on: bool,
        reason: Option<String>,
    ) -> Result<EnvView, ReleaseError> {
        let view = self.releases.set_kill_all(env, actor, on, reason).await?;
        if on {
            let running: Vec<String> = self
                .snapshots
                .get(env)
                .map(|snap| {
                    snap.snapshot
                        .iter()
                        .filter(|r| r.release().ramp.as_ref().is_some_and(|r| r.state == RampState::Running))
                        .map(|r| r.key().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            for key in running {
                if let Err(error) = self.freeze(env, &actor.0, &key, None).await {
                    tracing::warn!(%env, release = %key, %error, "could not pause the ramp under kill-all; the driver will");
                }
            }
        }
        Ok(view)
    }

    /// The environment kill switch as the API and CLI throw it: through the store when it
    /// can take it (then every running ramp is paused), else served at once by this
    /// instance and journalled ([`crate::pending`]); the driver pauses the ramps once
    /// the journalled kill is written.
    pub async fn kill_environment(
        &self,
        env: &EnvName,
        actor: &Actor,
        on: bool,
        reason: Option<String>,
    ) -> Result<crate::pending::KillAnswer<EnvView>, ReleaseError> {
        let target = crate::snapshots::KillTarget::Environment;
        let order = self.releases.order_switch(env, &target).await;
        match self.set_kill_all(env, actor, on, reason.clone()).await {
            Ok(view) => {
                self.releases.switched(order, env, &target).await;
                Ok(crate::pending::KillAnswer { view, persisted: true })
            }
            Err(error) if crate::pending::store_cannot_take(&error) => {
                self.releases.kill_environment_locally(order, env, actor, on, reason, error).await
            }
            Err(error) => Err(error),
        }
    }

    /// Pauses `key`'s running ramp because a kill covers it (reason `killed`), audited as
    /// a ramp pause by `actor` and announced as `killed`. With `revision`, one
    /// compare-and-set at that revision (the driver: losing it means someone moved
    /// first); without, against the latest state. A ramp no longer running is left alone.
    pub(crate) async fn freeze(
        &self,
        env: &EnvName,
        actor: &str,
        key: &str,
        revision: Option<u64>,
    ) -> Result<(), ReleaseError> {
        let meta = WriteMeta::now(actor, Action::RampPause, Some(KILLED.to_owned()));
        let result = self
            .releases
            .modify(env, key, revision, meta, |release| {
                let ramp = release.ramp.as_mut().filter(|r| r.state == RampState::Running);
                let ramp = ramp.ok_or_else(|| conflict("the ramp is no longer running"))?;
                ramp.state = RampState::Paused;
                ramp.reason = Some(KILLED.to_owned());
                Ok(())
            })
            .await;
        match result {
            Ok(view) => {
                tracing::info!(%env, release = %key, revision = view.revision, %actor, "ramp paused: a kill covers it");
                self.notify(env, &view, KILLED, actor);
                Ok(())
            }
            Err(ReleaseError::Conflict(_) | ReleaseError::Store(StoreError::RevisionMismatch { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The ramp of `key` as this instance serves it, with the guard computed now.
    pub async fn status(&self, env: &EnvName, key: &str) -> Result<RampStatus, ReleaseError> {
        let view = self.releases.get(env, key)?;
        // The release exists (a missing one is 404 above); a release without a ramp is a
        // state, answered 409 as documented, never "release `… has no ramp` does not exist".
        let ramp = view.ramp.clone().ok_or_else(|| conflict(format!("release `{key}` has no ramp")))?;
        let baseline = view.versions.first().cloned().unwrap_or_default();
        let now = now_ms();
        let (assessment, b, c) = self.assess(env, key, &baseline, &ramp, now).await?;
        let percent = view.allocation.get(&ramp.candidate).copied().unwrap_or(0.0);
        let next = (ramp.state == RampState::Running).then(|| tick::hold_end(&ramp)).flatten();
        Ok(RampStatus {
            release: key.to_owned(),
            revision: view.revision,
            live: figures(&assessment, b, c, now),
            ramp,
            percent,
            next_transition_ms: next,
        })
    }

    /// The guard over the current step's window at `now`: only the step's own outcomes
    /// (see [`window`]).
    async fn assess(
        &self,
        env: &EnvName,
        key: &str,
        baseline: &str,
        ramp: &Ramp,
        now: u64,
    ) -> Result<(Assessment, Sample, Sample), ReleaseError> {
        let (b, c) = window::samples(self.releases.store(), env, key, baseline, ramp, now).await?;
        Ok((guard::assess(&ramp.guard, b, c), b, c))
    }

    /// One driver step for `key`: assess, decide, and apply the transition (if any) as a
    /// compare-and-set at `revision`. Losing the compare-and-set means another instance
    /// (or a person) changed the release first: nothing is applied twice.
    pub(crate) async fn drive(&self, env: &EnvName, key: &str, revision: u64, now: u64) -> Result<(), ReleaseError> {
        let Some(snapshot) = self.snapshots.get(env) else { return Ok(()) };
        let Some(compiled) = snapshot.snapshot.get(key) else { return Ok(()) };
        let release = compiled.release();
        let Some(ramp) = release.ramp.as_ref().filter(|r| r.state == RampState::Running) else { return Ok(()) };
        if release.fleet.is_some() {
            return self.drive_fleet(env, key, release, ramp, revision, now).await;
        }
        let baseline = release.baseline().unwrap_or_default().to_owned();
        let (assessment, b, c) = self.assess(env, key, &baseline, ramp, now).await?;
        let Some(transition) = tick::tick(ramp, now, &assessment) else { return Ok(()) };
        let figures = figures(&assessment, b, c, now);
        crate::metrics::METRICS.guard_verdicts.with_label_values(&[assessment.verdict.as_str()]).inc();
        let (action, event) = match transition {
            Transition::Advance { .. } => (Action::RampAdvance, "advanced"),
            Transition::Complete => (Action::RampComplete, "completed"),
            Transition::RollBack => (Action::RampRollback, "rolled_back"),
            Transition::Extend => (Action::RampExtend, "extended"),
            Transition::PauseForData => (Action::RampPause, "paused"),
        };
        let ceiling = match (assessment.ceiling_p, ramp.guard.max_error_rate) {
            (Some(p), Some(max)) => format!(", ceiling {max}: p {p:.3e} vs {:.3}", 1.0 - ramp.guard.confidence),
            _ => String::new(),
        };
        let reason = format!(
            "guard {}: candidate {}/{} errors, baseline {}/{}, z {} vs {:.3}{ceiling}",
            figures.verdict,
            c.errors,
            c.total,
            b.errors,
            b.total,
            figures.z.map_or_else(|| "n/a".to_owned(), |z| format!("{z:.3}")),
            figures.z_critical,
        );
        let meta = WriteMeta::now(DRIVER_ACTOR, action, Some(reason));
        let result = self
            .releases
            .modify(env, key, Some(revision), meta, |release| {
                let Some(ramp) = release.ramp.as_mut() else { return Err(conflict("ramp gone")) };
                ramp.guard_figures = Some(figures.clone());
                let candidate = ramp.candidate.clone();
                match transition {
                    Transition::Advance { to } => {
                        ramp.step = to;
                        ramp.step_started_ms = now;
                        ramp.extensions = 0;
                        let step = &ramp.steps[to];
                        if to + 1 == ramp.steps.len() && step.hold_ms.is_none() {
                            ramp.state = RampState::Completed;
                        }
                        let buckets = step.buckets;
                        release.allocation.insert(candidate, buckets);
                    }
                    Transition::Complete => ramp.state = RampState::Completed,
                    Transition::RollBack => {
                        ramp.state = RampState::RolledBack;
                        ramp.reason = Some(if assessment.over_ceiling {
                            "guard: candidate error rate above max_error_rate".to_owned()
                        } else {
                            "guard: candidate error rate regressed".to_owned()
                        });
                        release.allocation.insert(candidate, 0);
                    }
                    Transition::Extend => ramp.extensions += 1,
                    Transition::PauseForData => {
                        ramp.state = RampState::Paused;
                        ramp.reason = Some("insufficient_data".to_owned());
                    }
                }
                Ok(())
            })
            .await;
        match result {
            Ok(view) => {
                let event = match (transition, view.ramp.as_ref().map(|r| r.state)) {
                    (Transition::Advance { .. }, Some(RampState::Completed)) => "completed",
                    _ => event,
                };
                tracing::info!(%env, release = %key, event, revision = view.revision, "ramp transition");
                self.notify(env, &view, event, DRIVER_ACTOR);
                Ok(())
            }
            // Someone else moved first; the next tick looks again.
            Err(ReleaseError::Store(StoreError::RevisionMismatch { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
