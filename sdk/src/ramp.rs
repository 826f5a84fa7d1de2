//! A release's ramp plan and its progress, stored with the release so that every
//! instance (and a restart) sees the same state. Evaluation ignores it: the ramp acts
//! by changing the allocation, one compare-and-set per step.

use serde::{Deserialize, Serialize};

/// One step: the candidate's share, held for a while before the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RampStep {
    /// Share in bucket units (1000 = 1 %).
    pub buckets: u32,
    /// For fleet releases: an exact node count instead of a share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// How long to hold before moving on; `None` on the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
}

/// When a step may move on: candidate vs baseline error rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RampGuard {
    /// Largest tolerated increase of the candidate's error rate over the baseline's
    /// (absolute, e.g. 0.01 = one percentage point).
    pub max_error_rate_increase: f64,
    /// Largest tolerated candidate error rate, whatever the baseline does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Outcomes each side needs before the guard may pass a step.
    pub min_samples: u64,
    /// Confidence of the one-sided test (e.g. 0.99).
    pub confidence: f64,
}

/// Where a ramp stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RampState {
    /// Holding the current step; the driver moves it on.
    Running,
    /// Stopped by a person, an alert, a kill or missing data; `resume` continues.
    Paused,
    /// The guard saw a regression: the candidate is back at 0 %.
    RolledBack,
    /// Aborted by a person: the candidate is back at 0 %.
    Aborted,
    /// The last step was reached.
    Completed,
}

impl RampState {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RampState::Running => "running",
            RampState::Paused => "paused",
            RampState::RolledBack => "rolled_back",
            RampState::Aborted => "aborted",
            RampState::Completed => "completed",
        }
    }

    /// Whether the ramp is over (nothing will move it again).
    pub const fn is_finished(self) -> bool {
        matches!(self, RampState::RolledBack | RampState::Aborted | RampState::Completed)
    }
}

/// The guard's latest figures, kept for `GET …/ramp` and the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardFigures {
    /// `pass`, `regression` or `insufficient_data`.
    pub verdict: String,
    /// Baseline outcomes and errors in the window.
    pub baseline_samples: u64,
    pub baseline_errors: u64,
    /// Candidate outcomes and errors in the window.
    pub candidate_samples: u64,
    pub candidate_errors: u64,
    /// The test statistic, when both sides have samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    /// The critical value at the configured confidence.
    pub z_critical: f64,
    /// When they were computed (ms since the epoch).
    pub at_ms: u64,
}

/// A ramp plan and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ramp {
    /// The version being ramped.
    pub candidate: String,
    /// The steps, rising.
    pub steps: Vec<RampStep>,
    /// The health check between steps.
    pub guard: RampGuard,
    /// Where it stands.
    pub state: RampState,
    /// Index of the current step in `steps`, from 0: the one step numbering that the API,
    /// the audit log, the `cohort_ramp_step` metric and the CLI share.
    pub step: usize,
    /// When the current step began (ms since the epoch).
    pub step_started_ms: u64,
    /// How many times the current hold was extended for lack of data.
    #[serde(default)]
    pub extensions: u32,
    /// Why it is paused, rolled back or aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The guard's latest figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_figures: Option<GuardFigures>,
    /// Fleet ramps: how long a batch may take to run the candidate healthily before the
    /// ramp pauses with `progress_deadline_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_ms: Option<u64>,
    /// Fleet ramps: most nodes moved to the candidate in one batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
}
