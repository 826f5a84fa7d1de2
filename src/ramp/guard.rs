//! The guard's statistics, two tests at the configured confidence:
//! - the absolute ceiling `max_error_rate`: an exact one-sided binomial test of the
//!   candidate's errors alone, valid from the first outcome, so a clearly bad candidate
//!   is stopped before `min_samples` arrive (70 errors in 100 against 0.05 is not luck);
//! - the relative test: is the candidate's error rate worse than the baseline's by more
//!   than the tolerated increase? A one-sided two-proportion z-test (unpooled standard
//!   error, since the null hypothesis has a margin) that needs `min_samples` on both
//!   sides, because its normal approximation is only good with enough of them.
//!
//! The binomial tail and the normal quantile come from `statrs` rather than
//! hand-written numerics.

use cohort_sdk::RampGuard;
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::beta::checked_beta_reg;

/// What the guard concludes about a window of outcomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Enough samples on both sides and no significant regression.
    Pass,
    /// The candidate is significantly worse than the baseline, or significantly above
    /// the absolute ceiling.
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
    /// The ceiling test's p-value, `P(X >= errors)` for `X ~ Binomial(samples,
    /// max_error_rate)`: how likely a candidate exactly at the ceiling shows this many
    /// errors or more. `None` without a ceiling.
    pub ceiling_p: Option<f64>,
    /// The ceiling test rejected (`ceiling_p <= 1 - confidence`): the candidate is above
    /// `max_error_rate`, whatever the baseline does and however few its samples.
    pub over_ceiling: bool,
}

/// Judges `candidate` against `baseline`.
///
/// The ceiling test needs no minimum sample: an exact test is valid at any sample size,
/// and with few outcomes it simply rejects only an overwhelming error count. The
/// relative test needs `min_samples` on both sides, and so does a pass, so the ramp
/// never advances blind.
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
    let ceiling_p = guard.max_error_rate.map(|ceiling| binomial_upper_tail(candidate, ceiling));
    let over_ceiling = ceiling_p.is_some_and(|p| p <= 1.0 - guard.confidence);
    let relative = enough(baseline) && enough(candidate) && z.is_some_and(|z| z > z_critical);
    let verdict = if over_ceiling || relative {
        Verdict::Regression
    } else if enough(baseline) && enough(candidate) {
        Verdict::Pass
    } else {
        Verdict::InsufficientData
    };
    Assessment { verdict, z, z_critical, ceiling_p, over_ceiling }
}

/// `P(X >= sample.errors)` for `X ~ Binomial(sample.total, p)`, exactly: the regularized
/// incomplete beta function `I_p(k, n - k + 1)` (the identity behind Clopper–Pearson).
/// 1 when there is nothing to explain (no errors); 0 for errors at a rate of 0.
pub fn binomial_upper_tail(sample: Sample, p: f64) -> f64 {
    let (n, k) = (sample.total, sample.errors.min(sample.total));
    if k == 0 {
        return 1.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    // Valid arguments (a, b > 0, 0 < p < 1) never fail; if they did, "no evidence" is
    // the answer that cannot roll a healthy candidate back. statrs's continued fraction
    // stops after 140 terms: checked against exact sums, it is good to ~1e-9 relative
    // up to 1e9 samples wherever the tail is below 0.2, and only overestimates within a
    // third of a standard deviation of n·p at 1e8+ samples, where the true tail is near
    // 1/2 and no test at a confidence of 0.5 or more rejects. Hence the clamp.
    checked_beta_reg(k as f64, (n - k + 1) as f64, p).map_or(1.0, |tail| tail.clamp(0.0, 1.0))
}

/// Φ⁻¹(p), the standard normal quantile (the relative test's critical value), from
/// `statrs`; infinite at and beyond 0 and 1, where it has no finite value.
pub fn inverse_normal_cdf(p: f64) -> f64 {
    if p.is_nan() || p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    Normal::standard().inverse_cdf(p)
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
        assert_eq!(inverse_normal_cdf(0.0), f64::NEG_INFINITY);
        assert_eq!(inverse_normal_cdf(1.0), f64::INFINITY);
        assert_eq!(inverse_normal_cdf(f64::NAN), f64::NEG_INFINITY);
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

    fn with_ceiling(ceiling: f64, min_samples: u64, confidence: f64) -> RampGuard {
        RampGuard { max_error_rate: Some(ceiling), ..guard(0.01, min_samples, confidence) }
    }

    fn candidate(total: u64, errors: u64) -> Sample {
        Sample { total, errors }
    }

    #[test]
    fn seventy_errors_in_a_hundred_break_a_five_percent_ceiling_without_min_samples() {
        // P(X >= 70 | n = 100, p = 0.05) <= C(100,70) * 0.05^70 (each way to place 70
        // errors, the rest bounded by 1) < 2^100 * 0.05^70 = 1.27e30 * 8.47e-92 ≈ 1.1e-61,
        // far below 1 - 0.99 = 0.01. (Exactly: 5.46e-67.) No baseline sample at all,
        // min_samples 500: the ceiling alone rolls back.
        let a = assess(&with_ceiling(0.05, 500, 0.99), Sample::default(), candidate(100, 70));
        assert_eq!(a.verdict, Verdict::Regression);
        assert!(a.over_ceiling);
        let p = a.ceiling_p.unwrap_or(1.0);
        assert!(p < 1.1e-61 && p > 1e-68, "p = {p}");
    }

    #[test]
    fn one_error_in_ten_is_no_evidence_against_five_percent() {
        // P(X >= 1 | n = 10, p = 0.05) = 1 - 0.95^10 = 1 - 0.598737 = 0.401263 > 0.01.
        let a = assess(&with_ceiling(0.05, 500, 0.99), Sample::default(), candidate(10, 1));
        assert_eq!(a.verdict, Verdict::InsufficientData);
        assert!(!a.over_ceiling);
        assert!(close(a.ceiling_p.unwrap_or_default(), 0.401_263, 1e-6), "{:?}", a.ceiling_p);
    }

    #[test]
    fn the_ceiling_borderline_at_ten_samples_is_between_three_and_four_errors() {
        // With q = 0.95, p = 0.05, n = 10:
        //   P(X=0) = q^10                 = 0.598737
        //   P(X=1) = 10 * p * q^9         = 0.315125
        //   P(X=2) = 45 * p^2 * q^8       = 0.074635
        //   P(X=3) = 120 * p^3 * q^7      = 0.010475
        // P(X >= 3) = 1 - 0.598737 - 0.315125 - 0.074635 = 0.011504 > 0.01: not yet;
        // P(X >= 4) = 0.011504 - 0.010475 = 0.001029 <= 0.01: regression at 99 %.
        let g = with_ceiling(0.05, 500, 0.99);
        let three = assess(&g, Sample::default(), candidate(10, 3));
        assert_eq!(three.verdict, Verdict::InsufficientData);
        assert!(close(three.ceiling_p.unwrap_or_default(), 0.011_504, 1e-6), "{:?}", three.ceiling_p);
        let four = assess(&g, Sample::default(), candidate(10, 4));
        assert_eq!(four.verdict, Verdict::Regression);
        assert!(close(four.ceiling_p.unwrap_or_default(), 0.001_029, 1e-6), "{:?}", four.ceiling_p);
        // At 95 % confidence (alpha 0.05) three errors in ten already reject.
        let three_at_95 = assess(&with_ceiling(0.05, 500, 0.95), Sample::default(), candidate(10, 3));
        assert_eq!(three_at_95.verdict, Verdict::Regression);
    }

    #[test]
    fn the_ceiling_is_valid_from_the_first_outcome() {
        // One error in one: P = 0.05 > 0.01. Two in two: P = 0.05^2 = 0.0025 <= 0.01.
        let g = with_ceiling(0.05, 500, 0.99);
        let one = assess(&g, Sample::default(), candidate(1, 1));
        assert_eq!(one.verdict, Verdict::InsufficientData);
        assert!(close(one.ceiling_p.unwrap_or_default(), 0.05, 1e-12));
        let two = assess(&g, Sample::default(), candidate(2, 2));
        assert_eq!(two.verdict, Verdict::Regression);
        assert!(close(two.ceiling_p.unwrap_or_default(), 0.0025, 1e-12));
        // No outcome, or no error, is no evidence; without a ceiling there is no test.
        assert_eq!(assess(&g, Sample::default(), Sample::default()).ceiling_p, Some(1.0));
        assert_eq!(assess(&g, Sample::default(), candidate(50, 0)).ceiling_p, Some(1.0));
        assert_eq!(assess(&guard(0.01, 1, 0.99), Sample::default(), candidate(2, 2)).ceiling_p, None);
    }

    #[test]
    fn a_rate_just_over_the_ceiling_is_not_yet_significant_but_a_pass_still_needs_samples() {
        // 6 in 100 against 0.05: P(X >= 6) = 0.384 (the mean is 5), no regression;
        // with 10 baseline samples against min_samples 100, not a pass either.
        let g = with_ceiling(0.05, 100, 0.99);
        let a = assess(&g, Sample { total: 10, errors: 0 }, candidate(100, 6));
        assert_eq!((a.verdict, a.over_ceiling), (Verdict::InsufficientData, false));
        let a = assess(&g, Sample { total: 100, errors: 5 }, candidate(100, 6));
        assert_eq!(a.verdict, Verdict::Pass);
    }

    #[test]
    fn a_zero_ceiling_rejects_the_first_error_and_a_full_one_never() {
        assert_eq!(
            assess(&with_ceiling(0.0, 500, 0.99), Sample::default(), candidate(1, 1)).verdict,
            Verdict::Regression
        );
        assert_eq!(
            assess(&with_ceiling(1.0, 500, 0.99), Sample::default(), candidate(5, 5)).verdict,
            Verdict::InsufficientData
        );
    }

    #[test]
    fn zero_variance_is_handled() {
        let a = assess(&guard(0.01, 10, 0.99), Sample { total: 100, errors: 0 }, Sample { total: 100, errors: 100 });
        assert_eq!((a.verdict, a.z), (Verdict::Regression, Some(f64::INFINITY)));
        let a = assess(&guard(0.01, 10, 0.99), Sample { total: 100, errors: 0 }, Sample { total: 100, errors: 0 });
        assert_eq!(a.verdict, Verdict::Pass);
    }
}
