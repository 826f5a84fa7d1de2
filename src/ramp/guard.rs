//! The guard's statistics: is the candidate's error rate worse than the baseline's by
//! more than the tolerated increase? A one-sided two-proportion z-test (unpooled
//! standard error, since the null hypothesis has a margin), plus an absolute ceiling.

use cohort_sdk::RampGuard;

/// What the guard concludes about a window of outcomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Enough samples on both sides and no significant regression.
    Pass,
    /// The candidate is significantly worse (or above the absolute ceiling).
    Regression,
    /// Not enough samples to conclude either way.
    InsufficientData,
}

impl Verdict {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Regression => "regression",
            Verdict::InsufficientData => "insufficient_data",
        }
    }
}

/// Outcome counts of one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub total: u64,
    pub errors: u64,
}

impl Sample {
    fn rate(self) -> f64 {
        if self.total == 0 { 0.0 } else { self.errors as f64 / self.total as f64 }
    }
}

/// The verdict and the figures behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub verdict: Verdict,
    /// `((p_c - p_b) - margin) / se`, when it is defined.
    pub z: Option<f64>,
    /// The one-sided critical value at the configured confidence.
    pub z_critical: f64,
}

/// Judges `candidate` against `baseline`.
///
/// A regression needs `min_samples` on both sides — except the absolute ceiling, which
/// only needs them on the candidate's. A pass also needs `min_samples` on both sides, so
/// the ramp never advances blind.
pub fn assess(guard: &RampGuard, baseline: Sample, candidate: Sample) -> Assessment {
    let z_critical = inverse_normal_cdf(guard.confidence);
    let enough = |s: Sample| s.total >= guard.min_samples.max(1);
    let (pb, pc) = (baseline.rate(), candidate.rate());
    let z = (baseline.total > 0 && candidate.total > 0).then(|| {
        let se = (pb * (1.0 - pb) / baseline.total as f64 + pc * (1.0 - pc) / candidate.total as f64).sqrt();
        let excess = (pc - pb) - guard.max_error_rate_increase;
        if se > 0.0 {
            excess / se
        } else if excess > 0.0 {
            // No variance at all (e.g. 0 % vs 100 %): any excess is certain.
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        }
    });
    let over_ceiling = guard.max_error_rate.is_some_and(|ceiling| enough(candidate) && pc > ceiling);
    let verdict = if over_ceiling || (enough(baseline) && enough(candidate) && z.is_some_and(|z| z > z_critical)) {
        Verdict::Regression
    } else if enough(baseline) && enough(candidate) {
        Verdict::Pass
    } else {
        Verdict::InsufficientData
    };
    Assessment { verdict, z, z_critical }
}

/// Φ⁻¹(p), the standard normal quantile, by Acklam's rational approximation (relative
/// error below 1.2e-9 over (0, 1)). Written here rather than pulling in a statistics
/// crate for one function; tested against tabulated values.
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    const LOW: f64 = 0.024_25;
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p < LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -inverse_normal_cdf(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(increase: f64, min_samples: u64, confidence: f64) -> RampGuard {
        RampGuard { max_error_rate_increase: increase, max_error_rate: None, min_samples, confidence }
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() < tolerance
    }

    #[test]
    fn quantiles_match_the_tables() {
        for (p, z) in [(0.5, 0.0), (0.9, 1.281_551_6), (0.95, 1.644_853_6), (0.99, 2.326_347_9), (0.999, 3.090_232_3)] {
            assert!(close(inverse_normal_cdf(p), z, 1e-6), "Φ⁻¹({p}) = {}", inverse_normal_cdf(p));
        }
        assert!(close(inverse_normal_cdf(0.01), -2.326_347_9, 1e-6));
        assert!(close(inverse_normal_cdf(0.001), -3.090_232_3, 1e-6));
    }

    #[test]
    fn a_clear_regression_is_significant() {
        // 5 % vs 1 % with 1,000 each and no tolerated increase:
        // se = sqrt(.01*.99/1000 + .05*.95/1000) = 0.0075763; z = 0.04 / 0.0075763 = 5.2796.
        let a =
            assess(&guard(0.0, 500, 0.99), Sample { total: 1_000, errors: 10 }, Sample { total: 1_000, errors: 50 });
        assert_eq!(a.verdict, Verdict::Regression);
        assert!(close(a.z.unwrap_or_default(), 5.2796, 1e-3), "z = {:?}", a.z);
        assert!(close(a.z_critical, 2.3263, 1e-3));
    }

    #[test]
    fn the_tolerated_increase_is_subtracted_first() {
        // Same data, 3 points tolerated: z = (0.04 - 0.03) / 0.0075763 = 1.3199 < 2.3263.
        let a =
            assess(&guard(0.03, 500, 0.99), Sample { total: 1_000, errors: 10 }, Sample { total: 1_000, errors: 50 });
        assert_eq!(a.verdict, Verdict::Pass);
        assert!(close(a.z.unwrap_or_default(), 1.3199, 1e-3), "z = {:?}", a.z);
        // At 80 % confidence (z_crit 0.8416) the same excess is significant.
        let a =
            assess(&guard(0.03, 500, 0.80), Sample { total: 1_000, errors: 10 }, Sample { total: 1_000, errors: 50 });
        assert_eq!(a.verdict, Verdict::Regression);
    }

    #[test]
    fn equal_rates_pass_and_small_samples_are_insufficient() {
        let equal =
            assess(&guard(0.01, 500, 0.99), Sample { total: 2_000, errors: 20 }, Sample { total: 600, errors: 6 });
        assert_eq!(equal.verdict, Verdict::Pass);
        assert!(equal.z.unwrap_or_default() < 0.0);
        let few =
            assess(&guard(0.01, 500, 0.99), Sample { total: 2_000, errors: 20 }, Sample { total: 499, errors: 5 });
        assert_eq!(few.verdict, Verdict::InsufficientData);
        // Even a terrible candidate needs the samples before the relative test acts.
        let few_bad =
            assess(&guard(0.0, 500, 0.99), Sample { total: 100, errors: 1 }, Sample { total: 100, errors: 90 });
        assert_eq!(few_bad.verdict, Verdict::InsufficientData);
        let none = assess(&guard(0.01, 1, 0.99), Sample::default(), Sample::default());
        assert_eq!((none.verdict, none.z), (Verdict::InsufficientData, None));
    }

    #[test]
    fn the_absolute_ceiling_needs_only_the_candidates_samples() {
        let mut g = guard(0.5, 100, 0.99);
        g.max_error_rate = Some(0.05);
        let a = assess(&g, Sample { total: 10, errors: 0 }, Sample { total: 100, errors: 6 });
        assert_eq!(a.verdict, Verdict::Regression);
        let a = assess(&g, Sample { total: 10, errors: 0 }, Sample { total: 100, errors: 5 });
        assert_eq!(a.verdict, Verdict::InsufficientData);
    }

    #[test]
    fn zero_variance_is_handled() {
        let a = assess(&guard(0.01, 10, 0.99), Sample { total: 100, errors: 0 }, Sample { total: 100, errors: 100 });
        assert_eq!((a.verdict, a.z), (Verdict::Regression, Some(f64::INFINITY)));
        let a = assess(&guard(0.01, 10, 0.99), Sample { total: 100, errors: 0 }, Sample { total: 100, errors: 0 });
        assert_eq!(a.verdict, Verdict::Pass);
    }
}
