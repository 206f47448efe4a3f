//! `MinPLogitsWarper`: keep tokens at least `min_p` times as probable as the top one.

use super::math::{cut_below, max, softmax_into, sum_exp};
use super::{RowProcessor, Scratch, StepContext};

/// Removes tokens with `p < min_p * p_max` (float32), protecting the
/// `min_tokens_to_keep` most probable (ties: lower token id first). One softmax over
/// the row's candidates, no sort.
pub struct MinP {
    min_p: f32,
    min_keep: usize,
}

impl MinP {
    pub fn new(min_p: f64, min_tokens_to_keep: usize) -> Self {
        MinP {
            min_p: min_p as f32,
            min_keep: min_tokens_to_keep.max(1),
        }
    }
}

impl RowProcessor for MinP {
    fn name(&self) -> &'static str {
        "MinPLogitsWarper"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        if !s.sparse && self.min_keep == 1 {
            // Two vectorised passes: p = exp(x - max) / sum, p_max = 1 / sum (the top
            // token, always kept, protects itself).
            let m = max(logits);
            if m.is_finite() {
                let inv = (1.0 / sum_exp(logits, m)) as f32;
                cut_below(logits, m, inv, self.min_p * inv);
                return;
            }
        }
        s.ensure_candidates(logits);
        let n = s.cand.len();
        if n <= self.min_keep {
            return;
        }
        s.gather(logits);
        softmax_into(&s.vals, &mut s.probs);
        let top = s.probs.iter().cloned().fold(0.0f32, f32::max);
        let scaled = self.min_p * top;
        s.keep.clear();
        s.keep.extend(s.probs.iter().map(|&p| p >= scaled));
        protect_most_probable(s, self.min_keep);
        s.apply_keep(logits);
    }
}

/// Sets `keep` for the `k` most probable candidates (by `probs`, ties by token id).
pub(super) fn protect_most_probable(s: &mut Scratch, k: usize) {
    if k == 1 {
        let mut best = 0;
        for (j, &p) in s.probs.iter().enumerate() {
            if p > s.probs[best] {
                best = j;
            }
        }
        if !s.keep.is_empty() {
            s.keep[best] = true;
        }
        return;
    }
    let mut order: Vec<u32> = (0..s.probs.len() as u32).collect();
    let k = k.min(order.len());
    if k == 0 {
        return;
    }
    let probs = &s.probs;
    order.select_nth_unstable_by(k - 1, |&a, &b| {
        probs[b as usize]
            .total_cmp(&probs[a as usize])
            .then(a.cmp(&b))
    });
    for &j in &order[..k] {
        s.keep[j as usize] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn removes_relative_to_the_top_probability() {
        // p ~ [0.665, 0.245, 0.090]; 0.3 * 0.665 = 0.2
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&MinP::new(0.3, 1), &mut row);
        assert_eq!(row, vec![2.0, 1.0, NEG]);
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&MinP::new(1.0, 1), &mut row);
        assert_eq!(row, vec![2.0, NEG, NEG]);
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&MinP::new(1.0, 2), &mut row);
        assert_eq!(row, vec![2.0, 1.0, NEG]);
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&MinP::new(0.0, 1), &mut row);
        assert_eq!(row, vec![2.0, 1.0, 0.0]);
    }

    #[test]
    fn ties_with_the_top_are_kept() {
        let mut row = vec![1.0, 1.0, 0.0];
        run1(&MinP::new(1.0, 1), &mut row);
        assert_eq!(row, vec![1.0, 1.0, NEG]);
    }
}
