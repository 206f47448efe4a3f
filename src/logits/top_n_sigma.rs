//! Top-nσ (Tang et al. 2024, "Top-nσ: Not All Logits Are You Need"; llama.cpp's
//! `top-n-sigma` sampler).

use super::{RowProcessor, Scratch, StepContext};

/// Keeps the tokens whose logit is at least `max - n * std`, where `max`, `mean` and the
/// population standard deviation `std` are taken over the finite-or-+inf candidates
/// (NaN counts as -inf, -inf is skipped), as llama.cpp does. The threshold scales with
/// the logits, so the kept set does not depend on the temperature. The maximum is always
/// kept. Moments are accumulated in float64 (llama.cpp accumulates in float32: the kept
/// sets can differ only for a logit within rounding of the threshold).
pub struct TopNSigma {
    n: f64,
}

impl TopNSigma {
    pub fn new(n: f64) -> Self {
        TopNSigma { n }
    }
}

impl RowProcessor for TopNSigma {
    fn name(&self) -> &'static str {
        "TopNSigma"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        s.ensure_candidates(logits);
        let count = s.cand.len();
        if count <= 1 {
            return;
        }
        s.gather(logits);
        let max = s.vals.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mean = s.vals.iter().map(|&x| x as f64).sum::<f64>() / count as f64;
        let var = s
            .vals
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / count as f64;
        let threshold = max - self.n * var.sqrt();
        if threshold.is_nan() {
            return; // +inf in the row: left to the sampler's rule (uniform over the +inf)
        }
        s.keep.clear();
        s.keep.extend(s.vals.iter().map(|&x| x as f64 >= threshold));
        s.apply_keep(logits);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_threshold() {
        // mean 2, population std sqrt(((−2)²+0+2²)/3) = 1.63299; max − 1σ = 2.367
        let mut row = vec![0.0, 2.0, 4.0, NEG, f32::NAN];
        run1(&TopNSigma::new(1.0), &mut row);
        assert_eq!(row, vec![NEG, NEG, 4.0, NEG, NEG]);
        // max − 1.5σ = 1.55: 2 is kept
        let mut row = vec![0.0, 2.0, 4.0];
        run1(&TopNSigma::new(1.5), &mut row);
        assert_eq!(row, vec![NEG, 2.0, 4.0]);
    }

    proptest! {
        /// The maximum is always kept, every kept logit is >= every removed one, and
        /// scaling the logits (a temperature) keeps the same set.
        #[test]
        fn keeps_the_max_and_is_scale_invariant(
            row in proptest::collection::vec(-30.0f32..30.0, 2..64),
            n in 0.01f64..4.0,
        ) {
            let mut out = row.clone();
            run1(&TopNSigma::new(n), &mut out);
            let max = row.iter().cloned().fold(NEG, f32::max);
            let best = row.iter().position(|&x| x == max).unwrap();
            prop_assert_eq!(out[best], max);
            let kept_min = row.iter().zip(&out).filter(|(_, o)| **o > NEG).map(|(x, _)| *x).fold(f32::INFINITY, f32::min);
            for (x, o) in row.iter().zip(&out) {
                if *o == NEG { prop_assert!(*x < kept_min); } else { prop_assert_eq!(o, x); }
            }
            let mut scaled: Vec<f32> = row.iter().map(|x| x * 0.5).collect();
            run1(&TopNSigma::new(n), &mut scaled);
            let kept = |v: &[f32]| v.iter().map(|&x| x > NEG).collect::<Vec<_>>();
            // exact halving keeps the order and halves every moment
            prop_assert_eq!(kept(&scaled), kept(&out));
        }
    }
}
