//! The ramp driver's decision, as a pure function of time, the ramp and the guard's
//! assessment: what (if anything) happens now. The driver loop only gathers inputs and
//! applies the result as one compare-and-set.

use super::guard::{Assessment, Verdict};
use cohort_sdk::{Ramp, RampState};

/// How many times a hold is extended for lack of data before the ramp pauses.
pub const MAX_EXTENSIONS: u32 = 3;

/// A change of a running ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Move to step `to` (and complete when it is a last step without a hold).
    Advance { to: usize },
    /// The last step's hold passed: done.
    Complete,
    /// A significant regression: candidate back to 0 %.
    RollBack,
    /// Too little data at the end of the hold: hold once more.
    Extend,
    /// Still too little data after every extension: pause.
    PauseForData,
}

/// When the current hold ends (`None` on a last step without a hold).
pub fn hold_end(ramp: &Ramp) -> Option<u64> {
    let hold = ramp.steps.get(ramp.step)?.hold_ms?;
    Some(ramp.step_started_ms.saturating_add(hold.saturating_mul(u64::from(ramp.extensions) + 1)))
}

/// What happens to `ramp` at `now_ms` given the guard's `assessment` of the current
/// step's window. Regressions act at once; everything else waits for the hold's end.
pub fn tick(ramp: &Ramp, now_ms: u64, assessment: &Assessment) -> Option<Transition> {
    if ramp.state != RampState::Running {
        return None;
    }
    if assessment.verdict == Verdict::Regression {
        return Some(Transition::RollBack);
    }
    let end = hold_end(ramp)?;
    if now_ms < end {
        return None;
    }
    Some(match assessment.verdict {
        Verdict::Pass if ramp.step + 1 >= ramp.steps.len() => Transition::Complete,
        Verdict::Pass => Transition::Advance { to: ramp.step + 1 },
        Verdict::InsufficientData if ramp.extensions < MAX_EXTENSIONS => Transition::Extend,
        Verdict::InsufficientData => Transition::PauseForData,
        Verdict::Regression => Transition::RollBack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramp::guard::{Sample, assess};
    use cohort_sdk::{RampGuard, RampStep};

    fn ramp(step: usize, extensions: u32) -> Ramp {
        Ramp {
            candidate: "v2".into(),
            steps: vec![
                RampStep { buckets: 1_000, nodes: None, hold_ms: Some(100) },
                RampStep { buckets: 5_000, nodes: None, hold_ms: Some(100) },
                RampStep { buckets: 100_000, nodes: None, hold_ms: None },
            ],
            guard: RampGuard { max_error_rate_increase: 0.01, max_error_rate: None, min_samples: 10, confidence: 0.99 },
            state: RampState::Running,
            step,
            step_started_ms: 1_000,
            extensions,
            reason: None,
            guard_figures: None,
            progress_deadline_ms: None,
            max_unavailable: None,
        }
    }

    fn verdict(v: Verdict) -> Assessment {
        Assessment { verdict: v, z: None, z_critical: 2.3, ceiling_p: None, over_ceiling: false }
    }

    #[test]
    fn a_step_waits_for_its_hold_then_advances_on_a_pass() {
        assert_eq!(tick(&ramp(0, 0), 1_099, &verdict(Verdict::Pass)), None);
        assert_eq!(tick(&ramp(0, 0), 1_100, &verdict(Verdict::Pass)), Some(Transition::Advance { to: 1 }));
        assert_eq!(tick(&ramp(1, 0), 1_100, &verdict(Verdict::Pass)), Some(Transition::Advance { to: 2 }));
        assert_eq!(tick(&ramp(2, 0), 9_999, &verdict(Verdict::Pass)), None, "the last step has no hold");
    }

    #[test]
    fn a_regression_rolls_back_at_once_even_mid_hold() {
        assert_eq!(tick(&ramp(0, 0), 1_001, &verdict(Verdict::Regression)), Some(Transition::RollBack));
    }

    #[test]
    fn a_candidate_far_over_the_ceiling_rolls_back_at_once_instead_of_waiting_for_samples() {
        // The case: min_samples 500, max_error_rate 0.05, 70 errors in 100 and no
        // baseline samples, mid-hold and at the hold's end alike. P(X >= 70 | 100, 0.05)
        // is about 5e-67 (guard.rs works it out), far below 1 - 0.99.
        let mut r = ramp(0, 0);
        r.guard = RampGuard { max_error_rate: Some(0.05), min_samples: 500, ..r.guard };
        let a = assess(&r.guard, Sample::default(), Sample { total: 100, errors: 70 });
        assert_eq!(tick(&r, 1_001, &a), Some(Transition::RollBack));
        assert_eq!(tick(&r, 1_100, &a), Some(Transition::RollBack), "not an extension");
        r.extensions = MAX_EXTENSIONS;
        assert_eq!(tick(&r, 1_400, &a), Some(Transition::RollBack), "not a pause");
    }

    #[test]
    fn missing_data_extends_the_hold_then_pauses() {
        assert_eq!(tick(&ramp(0, 0), 1_100, &verdict(Verdict::InsufficientData)), Some(Transition::Extend));
        assert_eq!(tick(&ramp(0, 1), 1_150, &verdict(Verdict::InsufficientData)), None, "extended hold runs to 1200");
        assert_eq!(tick(&ramp(0, 1), 1_200, &verdict(Verdict::InsufficientData)), Some(Transition::Extend));
        assert_eq!(
            tick(&ramp(0, MAX_EXTENSIONS), 1_400, &verdict(Verdict::InsufficientData)),
            Some(Transition::PauseForData)
        );
    }

    #[test]
    fn only_running_ramps_move() {
        let mut paused = ramp(0, 0);
        paused.state = RampState::Paused;
        assert_eq!(tick(&paused, 99_999, &verdict(Verdict::Regression)), None);
    }
}
