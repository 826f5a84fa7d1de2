//! Ramps are monotonic (docs/evaluation.md, "Bucketing"): raising a candidate's allocation only
//! moves units from the baseline into that candidate; lowering only moves them back to
//! the baseline. A unit in the 5 % cohort is still in it at 10 %.

use cohort_sdk::{CompiledRelease, Context, Release, slot_width};
use proptest::prelude::*;

fn release(candidates: usize, allocation: &[u32], salt: &str) -> CompiledRelease {
    let versions: Vec<String> = (0..=candidates).map(|i| format!("v{}", i + 1)).collect();
    let mut r = Release::new("ramp", versions.clone());
    r.salt = Some(salt.to_owned());
    for (i, share) in allocation.iter().enumerate() {
        r.allocation.insert(versions[i + 1].clone(), *share);
    }
    CompiledRelease::compile(r).expect("valid release")
}

fn version_of(r: &CompiledRelease, unit: &str) -> usize {
    r.evaluate(false, &Context::with_targeting_key(unit)).version_index.expect("found")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn changing_one_allocation_moves_units_only_between_baseline_and_that_candidate(
        candidates in 1usize..=5,
        salt in "[a-z0-9-]{0,12}",
        seed_allocs in prop::collection::vec(0u32..=100_000, 5),
        changed in 0usize..5,
        new_share in 0u32..=100_000,
        units in prop::collection::vec(any::<String>(), 200),
    ) {
        let width = slot_width(candidates);
        let before_alloc: Vec<u32> = seed_allocs[..candidates].iter().map(|a| a % (width + 1)).collect();
        let changed = changed % candidates;
        let mut after_alloc = before_alloc.clone();
        after_alloc[changed] = new_share % (width + 1);

        let before = release(candidates, &before_alloc, &salt);
        let after = release(candidates, &after_alloc, &salt);
        let raised = after_alloc[changed] >= before_alloc[changed];
        let target = changed + 1;
        for unit in &units {
            let (b, a) = (version_of(&before, unit), version_of(&after, unit));
            if a == b {
                continue;
            }
            if raised {
                // Only baseline → the raised candidate.
                prop_assert_eq!((b, a), (0, target), "unit {:?} moved {} → {} on raise", unit, b, a);
            } else {
                // Only the lowered candidate → baseline.
                prop_assert_eq!((b, a), (target, 0), "unit {:?} moved {} → {} on lower", unit, b, a);
            }
        }
    }

    #[test]
    fn a_ramp_never_drops_a_unit_from_the_cohort(
        salt in "[a-z]{1,8}",
        steps in prop::collection::vec(0u32..=100_000, 2..8),
        units in prop::collection::vec("[a-zA-Z0-9@.]{1,24}", 100),
    ) {
        let mut steps = steps;
        steps.sort_unstable();
        let mut previous: Option<Vec<usize>> = None;
        for share in steps {
            let r = release(1, &[share], &salt);
            let now: Vec<usize> = units.iter().map(|u| version_of(&r, u)).collect();
            if let Some(prev) = &previous {
                for (i, (p, n)) in prev.iter().zip(&now).enumerate() {
                    prop_assert!(!(*p == 1 && *n == 0), "unit {:?} left the cohort at {}", units[i], share);
                }
            }
            previous = Some(now);
        }
    }
}
