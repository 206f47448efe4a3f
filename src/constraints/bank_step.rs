//! Which candidates survive a constrained beam step: transformers' "banks".
//!
//! Every candidate sits in a bank, its progress through the constraints
//! ([`super::ConstraintState::bank`]). Candidates are ranked by `bank × 100 + score`
//! (in float32, as transformers adds an int64 tensor to a float32 one), then dealt out
//! round-robin: the best of every run of equal banks first, then the second best of
//! every run, and so on, so progress is not crowded out by score alone.

/// Indices of the `keep` candidates that survive, in the order they become beams.
///
/// `banks[i]` and `scores[i]` describe candidate `i`. Ties in the ranking keep the
/// earlier candidate first (transformers' sort is stable on CPU for these sizes).
pub fn bank_order(banks: &[usize], scores: &[f32], keep: usize) -> Vec<usize> {
    debug_assert_eq!(banks.len(), scores.len());
    let key = |i: usize| {
        let k = (banks[i] as f32) * 100.0 + scores[i];
        if k.is_nan() {
            f32::NEG_INFINITY
        } else {
            k
        }
    };
    let mut ranked: Vec<usize> = (0..banks.len()).collect();
    ranked.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    // position of each candidate within its run of equal banks (a run, not a bank:
    // a bank split by the score ranking starts counting again, as in transformers)
    let mut increments = Vec::with_capacity(ranked.len());
    let mut counter = 0usize;
    let mut current = ranked.first().map(|&i| banks[i]);
    for (n, &i) in ranked.iter().enumerate() {
        if n > 0 && Some(banks[i]) == current {
            counter += 1;
        } else {
            counter = 0;
            current = Some(banks[i]);
        }
        increments.push(counter);
    }
    let mut order: Vec<usize> = (0..ranked.len()).collect();
    order.sort_by_key(|&p| increments[p]); // stable, as numpy's mergesort
    order.into_iter().take(keep).map(|p| ranked[p]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn best_of_each_bank_first() {
        // bank 2 has one candidate, bank 0 three: the best of each bank leads
        let banks = [0, 0, 2, 0, 1];
        let scores = [-1.0, -2.0, -9.0, -3.0, -5.0];
        assert_eq!(bank_order(&banks, &scores, 5), vec![2, 4, 0, 1, 3]);
        assert_eq!(bank_order(&banks, &scores, 2), vec![2, 4]);
    }

    #[test]
    fn low_scores_split_banks_into_runs() {
        // keys: 100-150=-50 (bank 1), -10 (bank 0), 100-160=-60 (bank 1), -70 (bank 0)
        // sorted: [1 (b0), 0 (b1), 2 (b1), 3 (b0)] -> runs b0 | b1 b1 | b0 -> increments 0 0 1 0
        let banks = [1, 0, 1, 0];
        let scores = [-150.0, -10.0, -160.0, -70.0];
        assert_eq!(bank_order(&banks, &scores, 4), vec![1, 0, 3, 2]);
    }

    proptest! {
        /// The order is a permutation prefix, and with scores in (-100, 0] (banks never
        /// split into runs) every bank's best candidate comes before any second best.
        #[test]
        fn round_robin_over_banks(cands in proptest::collection::vec((0usize..4, -99.0f32..0.0), 1..20), keep in 1usize..20) {
            let (banks, scores): (Vec<usize>, Vec<f32>) = cands.into_iter().unzip();
            let order = bank_order(&banks, &scores, keep);
            prop_assert_eq!(order.len(), keep.min(banks.len()));
            let mut seen = order.clone();
            seen.sort_unstable();
            seen.dedup();
            prop_assert_eq!(seen.len(), order.len());
            let distinct = { let mut b = banks.clone(); b.sort_unstable(); b.dedup(); b.len() };
            let leaders: Vec<usize> = order.iter().take(distinct).map(|&i| banks[i]).collect();
            let mut l = leaders.clone();
            l.sort_unstable();
            l.dedup();
            prop_assert_eq!(l.len(), leaders.len(), "each bank leads once before any repeats");
            prop_assert!(leaders.windows(2).all(|w| w[0] > w[1]), "leaders in descending bank order");
        }
    }
}
