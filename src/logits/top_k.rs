//! `TopKLogitsWarper`: keep the tokens scoring at least the k-th largest score.

use super::math::{kth_largest, max};
use super::{RowProcessor, Scratch, StepContext};

/// Every score below the k-th largest becomes -inf; ties with the k-th score are all
/// kept (so more than k tokens may survive), as transformers does.
/// `k = max(top_k, min_tokens_to_keep)`; with `k >= vocab` nothing is removed.
///
/// The k-th score is found by one pass with a rising threshold (selection, no sort);
/// a second pass writes -inf and records the survivors as the row's candidates.
pub struct TopK {
    k: usize,
}

impl TopK {
    pub fn new(top_k: usize, min_tokens_to_keep: usize) -> Self {
        TopK { k: top_k.max(min_tokens_to_keep).max(1) }
    }
}

impl RowProcessor for TopK {
    fn name(&self) -> &'static str {
        "TopKLogitsWarper"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        if s.sparse {
            if self.k >= s.cand.len() {
                return;
            }
            s.gather(logits);
            let kth = kth_largest(&s.vals, self.k, &mut s.floats);
            s.keep.clear();
            s.keep.extend(s.vals.iter().map(|&v| v >= kth));
            s.apply_keep(logits);
            return;
        }
        if self.k >= logits.len() {
            return;
        }
        let kth = kth_largest(logits, self.k, &mut s.floats);
        s.cand.clear();
        for (c, chunk) in logits.chunks_mut(256).enumerate() {
            if max(chunk) < kth {
                chunk.fill(f32::NEG_INFINITY);
                continue;
            }
            for (j, x) in chunk.iter_mut().enumerate() {
                if *x >= kth && *x > f32::NEG_INFINITY {
                    s.cand.push((c * 256 + j) as u32);
                } else {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        s.sparse = true;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn keeps_ties_at_the_boundary() {
        let mut row = vec![1.0, 3.0, 2.0, 3.0, 2.0, 0.0];
        run1(&TopK::new(3, 1), &mut row);
        assert_eq!(row, vec![NEG, 3.0, 2.0, 3.0, 2.0, NEG]);
    }

    #[test]
    fn min_tokens_to_keep_raises_k_and_large_k_is_a_no_op() {
        let mut row = vec![1.0, 3.0, 2.0];
        run1(&TopK::new(1, 2), &mut row);
        assert_eq!(row, vec![NEG, 3.0, 2.0]);
        let mut row = vec![1.0, f32::NAN, 2.0];
        run1(&TopK::new(5, 1), &mut row);
        assert!(row[1].is_nan(), "k >= vocab leaves the row untouched");
    }

    #[test]
    fn nan_is_removed_and_few_finite_keeps_all_finite() {
        let mut row = vec![f32::NAN, 1.0, NEG, 0.5];
        run1(&TopK::new(3, 1), &mut row);
        assert_eq!(row, vec![NEG, 1.0, NEG, 0.5]);
    }

    #[test]
    fn works_on_long_rows_and_on_candidates() {
        let mut row: Vec<f32> = (0..10_000).map(|i| ((i * 37) % 1000) as f32).collect();
        let mut s = Scratch::default();
        let h = crate::history::TokenHistory::new(&[0], 1);
        let ctx = StepContext { history: &h };
        TopK::new(25, 1).process_row(&ctx, 0, &mut row, &mut s);
        // values 999..=997 appear 10 times each: 3 distinct values cover k=25
        assert_eq!(s.cand.len(), 30);
        assert!(row.iter().all(|&x| x == NEG || x >= 997.0));
        TopK::new(5, 1).process_row(&ctx, 0, &mut row, &mut s);
        assert_eq!(s.cand.len(), 10);
        assert_eq!(row.iter().filter(|&&x| x == 999.0).count(), 10);
    }
}
