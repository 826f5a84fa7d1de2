//! A ramp request as the API takes it, validated into a [`Ramp`].

use cohort_sdk::{Ramp, RampGuard, RampState, RampStep, Release, percent_to_buckets, slot_width};
use serde::Deserialize;

/// `POST …/ramp`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"candidate": "v2", "steps": [{"percent": 5, "hold": "30m"}, {"percent": 100}]}))]
pub struct RampRequest {
    /// The version to ramp.
    pub candidate: String,
    /// Rising steps.
    pub steps: Vec<StepRequest>,
    /// The guard; defaults are conservative.
    #[serde(default)]
    pub guard: Option<GuardRequest>,
    /// Fleet ramps: how long a batch may take to converge (e.g. `10m`).
    #[serde(default)]
    pub progress_deadline: Option<String>,
    /// Fleet ramps: most nodes moved in one batch.
    #[serde(default)]
    pub max_unavailable: Option<u32>,
}

/// `{"percent": 5, "hold": "30m"}`; the last step may omit `hold`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    #[serde(default)]
    pub percent: Option<f64>,
    /// Fleet releases: an exact node count instead of a percent.
    #[serde(default)]
    pub nodes: Option<u32>,
    #[serde(default)]
    pub hold: Option<String>,
}

/// The guard's settings.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardRequest {
    #[serde(default = "default_increase")]
    pub max_error_rate_increase: f64,
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    #[serde(default = "default_confidence")]
    pub confidence: f64,
}

fn default_increase() -> f64 {
    0.01
}
fn default_min_samples() -> u64 {
    500
}
fn default_confidence() -> f64 {
    0.99
}

impl Default for GuardRequest {
    fn default() -> Self {
        GuardRequest {
            max_error_rate_increase: default_increase(),
            max_error_rate: None,
            min_samples: default_min_samples(),
            confidence: default_confidence(),
        }
    }
}

/// A plan that cannot run, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> PlanError {
    PlanError { field: field.into(), message: message.into() }
}

/// Parses `10m`, `30s`, `500ms`, `1h` (anything humantime reads).
pub fn parse_hold(text: &str) -> Option<u64> {
    humantime::parse_duration(text.trim()).ok().map(|d| d.as_millis() as u64)
}

/// Most steps in a plan.
pub const MAX_STEPS: usize = 50;
const MAX_HOLD_MS: u64 = 30 * 24 * 3_600_000;

/// Validates `request` against `release` and builds a running ramp starting at `now_ms`
/// on its first step.
pub fn build(release: &Release, request: RampRequest, now_ms: u64) -> Result<Ramp, PlanError> {
    let index = release
        .versions
        .iter()
        .position(|v| *v == request.candidate)
        .ok_or_else(|| err("candidate", format!("`{}` is not one of {:?}", request.candidate, release.versions)))?;
    if index == 0 {
        return Err(err("candidate", format!("`{}` is the baseline; ramp a candidate", request.candidate)));
    }
    if request.steps.is_empty() || request.steps.len() > MAX_STEPS {
        return Err(err("steps", format!("a plan has 1 to {MAX_STEPS} steps")));
    }
    let width = slot_width(release.versions.len() - 1);
    let mut steps = Vec::with_capacity(request.steps.len());
    let last = request.steps.len() - 1;
    let fleet = release.fleet.is_some();
    let mut previous_nodes: Option<u32> = None;
    for (i, step) in request.steps.iter().enumerate() {
        let field = format!("{field_steps}[{i}]", field_steps = "steps");
        let (buckets, nodes) = match (step.percent, step.nodes) {
            (Some(percent), None) => {
                let buckets = percent_to_buckets(percent).ok_or_else(|| {
                    err(format!("{field}.percent"), "a percent between 0 and 100 with at most 3 decimals")
                })?;
                if buckets == 0 {
                    return Err(err(format!("{field}.percent"), "steps must be above 0 %"));
                }
                if buckets > width {
                    let candidates = release.versions.len() - 1;
                    return Err(err(format!("{field}.percent"), cohort_sdk::slot_exceeded(buckets, candidates)));
                }
                if let Some(previous) = steps.last().map(|s: &RampStep| s.buckets).filter(|b| *b > 0)
                    && buckets <= previous
                {
                    return Err(err(format!("{field}.percent"), "percents must rise from step to step"));
                }
                (buckets, None)
            }
            (None, Some(nodes)) if fleet => {
                if nodes == 0 || previous_nodes.is_some_and(|p| nodes <= p) {
                    return Err(err(format!("{field}.nodes"), "node counts must be above 0 and rise"));
                }
                previous_nodes = Some(nodes);
                (0, Some(nodes))
            }
            (None, Some(_)) => {
                return Err(err(format!("{field}.nodes"), "node counts are for fleet releases; use a percent"));
            }
            _ => return Err(err(field.clone(), "give either `percent` or (fleet releases) `nodes`")),
        };
        let hold_ms = match (&step.hold, i == last) {
            (Some(text), _) => {
                let ms = parse_hold(text).filter(|ms| (1..=MAX_HOLD_MS).contains(ms)).ok_or_else(|| {
                    err(format!("{field}.hold"), format!("`{text}` is not a hold like 500ms, 30s, 10m, 1h"))
                })?;
                Some(ms)
            }
            (None, true) => None,
            (None, false) => return Err(err(format!("{field}.hold"), "every step but the last needs a hold")),
        };
        steps.push(RampStep { buckets, nodes, hold_ms });
    }
    let g = request.guard.unwrap_or_default();
    if !(0.0..1.0).contains(&g.max_error_rate_increase) {
        return Err(err("guard.max_error_rate_increase", "between 0 and 1 (e.g. 0.01 for one point)"));
    }
    if g.max_error_rate.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
        return Err(err("guard.max_error_rate", "between 0 and 1"));
    }
    if !(0.5..1.0).contains(&g.confidence) {
        return Err(err("guard.confidence", "between 0.5 and 1 (e.g. 0.99)"));
    }
    if g.min_samples == 0 {
        return Err(err("guard.min_samples", "at least 1"));
    }
    let guard = RampGuard {
        max_error_rate_increase: g.max_error_rate_increase,
        max_error_rate: g.max_error_rate,
        min_samples: g.min_samples,
        confidence: g.confidence,
    };
    let progress_deadline_ms = match &request.progress_deadline {
        Some(text) => Some(
            parse_hold(text)
                .filter(|ms| *ms > 0)
                .ok_or_else(|| err("progress_deadline", format!("`{text}` is not a duration like 10m")))?,
        ),
        None if fleet => Some(10 * 60_000),
        None => None,
    };
    if !fleet && (request.progress_deadline.is_some() || request.max_unavailable.is_some()) {
        return Err(err("progress_deadline", "progress_deadline and max_unavailable are for fleet releases"));
    }
    if request.max_unavailable == Some(0) {
        return Err(err("max_unavailable", "at least 1"));
    }
    let state = if steps.len() == 1 && steps[0].hold_ms.is_none() { RampState::Completed } else { RampState::Running };
    Ok(Ramp {
        candidate: request.candidate,
        steps,
        guard,
        state,
        step: 0,
        step_started_ms: now_ms,
        extensions: 0,
        reason: None,
        guard_figures: None,
        progress_deadline_ms,
        max_unavailable: request.max_unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(steps: &[(f64, Option<&str>)]) -> RampRequest {
        RampRequest {
            candidate: "v2".into(),
            steps: steps
                .iter()
                .map(|(p, h)| StepRequest { percent: Some(*p), nodes: None, hold: h.map(str::to_owned) })
                .collect(),
            guard: None,
            progress_deadline: None,
            max_unavailable: None,
        }
    }

    #[test]
    fn a_plan_is_validated_step_by_step() {
        let release = Release::new("r", ["v1", "v2"]);
        let ramp =
            build(&release, request(&[(1.0, Some("10m")), (5.0, Some("30s")), (100.0, None)]), 7).expect("valid");
        assert_eq!(ramp.steps[0], RampStep { buckets: 1_000, nodes: None, hold_ms: Some(600_000) });
        assert_eq!(ramp.steps[2], RampStep { buckets: 100_000, nodes: None, hold_ms: None });
        assert_eq!((ramp.state, ramp.step, ramp.step_started_ms), (RampState::Running, 0, 7));

        let field = |r: RampRequest| build(&release, r, 0).unwrap_err().field;
        assert_eq!(field(request(&[(5.0, Some("1m")), (5.0, None)])), "steps[1].percent");
        assert_eq!(field(request(&[(5.0, None), (10.0, None)])), "steps[0].hold");
        assert_eq!(field(request(&[(5.0, Some("soon")), (10.0, None)])), "steps[0].hold");
        assert_eq!(field(request(&[(0.0, Some("1m")), (10.0, None)])), "steps[0].percent");
        assert_eq!(field(request(&[])), "steps");
        let mut baseline = request(&[(5.0, None)]);
        baseline.candidate = "v1".into();
        assert_eq!(field(baseline), "candidate");
        let three = Release::new("r", ["v1", "v2", "v3"]);
        assert_eq!(build(&three, request(&[(60.0, None)]), 0).unwrap_err().field, "steps[0].percent");
    }
}
