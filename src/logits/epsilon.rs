//! `EpsilonLogitsWarper` (epsilon sampling, Hewitt et al. 2022).

use super::math::{cut_improbable, kth_largest, max, softmax_into, sum_exp};
use super::{RowProcessor, Scratch, StepContext};

/// Removes tokens with probability `< epsilon` (float32) unless they score at least
/// the `min_tokens_to_keep`-th largest score.
pub struct EpsilonCutoff {
    epsilon: f32,
    min_keep: usize,
}

impl EpsilonCutoff {
    pub fn new(epsilon: f64, min_tokens_to_keep: usize) -> Self {
        EpsilonCutoff {
            epsilon: epsilon as f32,
            min_keep: min_tokens_to_keep.max(1),
        }
    }
}

impl RowProcessor for EpsilonCutoff {
    fn name(&self) -> &'static str {
        "EpsilonLogitsWarper"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        cutoff(
            logits,
            s,
            self.min_keep,
            |_| self.epsilon,
            |_, _, _| self.epsilon,
        );
    }
}

/// Shared by epsilon and eta: removes candidates with `p < threshold(probs)` that
/// score below the `min_keep`-th largest score.
pub(super) fn cutoff(
    logits: &mut [f32],
    s: &mut Scratch,
    min_keep: usize,
    threshold: impl Fn(&Scratch) -> f32,
    dense_threshold: impl Fn(&[f32], f32, f64) -> f32,
) {
    if !s.sparse && min_keep == 1 {
        // Vectorised passes over the row; the max token is the protected one.
        let m = max(logits);
        if m.is_finite() {
            let total = sum_exp(logits, m);
            let inv = (1.0 / total) as f32;
            let thr = dense_threshold(logits, m, total);
            cut_improbable(logits, m, inv, thr);
            return;
        }
    }
    s.ensure_candidates(logits);
    if s.cand.len() <= min_keep {
        return;
    }
    s.gather(logits);
    if !softmax_into(&s.vals, &mut s.probs) {
        return;
    }
    let thr = threshold(s);
    let kth = kth_largest(&s.vals, min_keep, &mut s.floats);
    s.keep.clear();
    s.keep.extend(
        s.probs
            .iter()
            .zip(&s.vals)
            .map(|(&p, &v)| !(p < thr && v < kth)),
    );
    s.apply_keep(logits);
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn cuts_improbable_tokens_but_keeps_the_top() {
        // p ~ [0.665, 0.245, 0.090]
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&EpsilonCutoff::new(0.1, 1), &mut row);
        assert_eq!(row, vec![2.0, 1.0, NEG]);
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&EpsilonCutoff::new(0.9, 1), &mut row);
        assert_eq!(row, vec![2.0, NEG, NEG]);
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&EpsilonCutoff::new(0.9, 2), &mut row);
        assert_eq!(row, vec![2.0, 1.0, NEG]);
    }
}
