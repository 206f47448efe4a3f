//! XTC, "exclude top choices" (p-e-w, text-generation-webui #6335; llama.cpp's `xtc`).

use super::math::softmax_into;
use super::{RowProcessor, Scratch, StepContext};
use crate::rng::{stream_uniform, Stream};

/// With probability `probability` (a coin drawn from the row's key and step, so a row
/// gets the same coins whatever the batch), removes every token whose probability is
/// `>= threshold` except the least probable of them, when at least two reach the
/// threshold and at least `min_keep` tokens remain. A no-op when `threshold > 0.5`
/// (at most one token can reach it), as in llama.cpp. Ties at the least probable
/// position: the higher token id is the one kept (llama.cpp's partial sort leaves ties
/// in an unspecified order).
pub struct Xtc {
    probability: f64,
    threshold: f32,
    min_keep: usize,
}

impl Xtc {
    pub fn new(probability: f64, threshold: f64, min_tokens_to_keep: usize) -> Self {
        Xtc {
            probability,
            threshold: threshold as f32,
            min_keep: min_tokens_to_keep.max(1),
        }
    }
}

impl RowProcessor for Xtc {
    fn name(&self) -> &'static str {
        "XTC"
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], s: &mut Scratch) {
        if self.probability <= 0.0 || self.threshold > 0.5 {
            return;
        }
        let step = ctx.history.new_tokens() as u64;
        if stream_uniform(ctx.row_key(r), step, Stream::Xtc) > self.probability {
            return;
        }
        s.ensure_candidates(logits);
        let n = s.cand.len();
        if n < 2 {
            return;
        }
        s.gather(logits);
        softmax_into(&s.vals, &mut s.probs);
        // The least probable candidate at or above the threshold (ties: the higher id).
        let mut above = 0;
        let mut last: Option<usize> = None;
        for (j, &p) in s.probs.iter().enumerate() {
            if p >= self.threshold {
                above += 1;
                if last.map_or(true, |l| p <= s.probs[l]) {
                    last = Some(j);
                }
            }
        }
        let Some(last) = last else { return };
        if above < 2 || n - (above - 1) < self.min_keep {
            return;
        }
        s.keep.clear();
        let threshold = self.threshold;
        s.keep.extend(
            s.probs
                .iter()
                .enumerate()
                .map(|(j, &p)| p < threshold || j == last),
        );
        s.apply_keep(logits);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::NEG;
    use super::*;
    use crate::history::TokenHistory;
    use proptest::prelude::*;

    fn run_keyed(x: &Xtc, key: u64, row: &mut [f32]) {
        let h = TokenHistory::new(&[0], 1);
        let keys = [key];
        let ctx = StepContext::with_keys(&h, &keys);
        let mut s = Scratch::default();
        s.begin_row();
        x.process_row(&ctx, 0, row, &mut s);
    }

    #[test]
    fn removes_all_above_threshold_but_the_least_probable() {
        // p = softmax([3, 2, 1, 0]) = 0.644, 0.237, 0.087, 0.032
        let mut row = vec![2.0, 3.0, 1.0, 0.0];
        run_keyed(&Xtc::new(1.0, 0.08, 1), 5, &mut row);
        assert_eq!(row, vec![NEG, NEG, 1.0, 0.0]);
        let mut row = vec![2.0, 3.0, 1.0, 0.0];
        run_keyed(&Xtc::new(1.0, 0.3, 1), 5, &mut row);
        assert_eq!(row, vec![2.0, 3.0, 1.0, 0.0], "one above: unchanged");
        let mut row = vec![2.0, 3.0, 1.0, 0.0];
        run_keyed(&Xtc::new(1.0, 0.08, 3), 5, &mut row);
        assert_eq!(
            row,
            vec![2.0, 3.0, 1.0, 0.0],
            "would leave fewer than min_keep"
        );
        let mut row = vec![0.0, 0.0];
        run_keyed(&Xtc::new(1.0, 0.5, 1), 5, &mut row);
        assert_eq!(row, vec![NEG, 0.0], "a tie keeps the higher id");
    }

    #[test]
    fn the_coin_fires_at_the_configured_rate() {
        let x = Xtc::new(0.3, 0.1, 1);
        let fired = (0..20_000u64)
            .filter(|&k| {
                let mut row = vec![1.0, 1.0, 0.0];
                run_keyed(&x, k, &mut row);
                row[0] == NEG
            })
            .count();
        // binomial(20000, 0.3): sd 65; 5 sd
        assert!((fired as f64 - 6000.0).abs() < 325.0, "{fired}");
    }

    proptest! {
        /// XTC leaves at least one token at or above the threshold when one was there,
        /// never changes a kept score, and never removes a token below the threshold.
        #[test]
        fn keeps_one_above_threshold(
            row in proptest::collection::vec(-5.0f32..5.0, 2..40),
            threshold in 0.0f64..0.5,
            key in any::<u64>(),
        ) {
            let mut out = row.clone();
            run_keyed(&Xtc::new(1.0, threshold, 1), key, &mut out);
            let m = row.iter().cloned().fold(NEG, f32::max);
            let z: f32 = row.iter().map(|x| (x - m).exp()).sum();
            let p = |x: f32| (x - m).exp() / z;
            let had = row.iter().any(|&x| p(x) >= threshold as f32 * 0.999);
            let kept_above = row.iter().zip(&out).any(|(&x, &o)| o > NEG && p(x) >= threshold as f32 * 0.999);
            prop_assert!(!had || kept_above);
            for (&x, &o) in row.iter().zip(&out) {
                prop_assert!(o == x || o == NEG);
                if p(x) < threshold as f32 * 0.999 { prop_assert_eq!(o, x); }
            }
        }
    }
}
