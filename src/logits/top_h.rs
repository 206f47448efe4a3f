//! `TopHLogitsWarper` (entropy-bounded nucleus, transformers 4.57+).

use super::math::softmax_into;
use super::{RowProcessor, Scratch, StepContext};

/// Among the 100 highest-scoring tokens (in descending order; ties by token id), keeps
/// the longest prefix whose cumulative entropy `sum(-p log p)` stays within
/// `top_h * H`, `p` and `H` the distribution renormalised over those 100 tokens; the
/// top token is always kept.
pub struct TopH {
    top_h: f32,
}

const TOP_N: usize = 100;

impl TopH {
    pub fn new(top_h: f64) -> Self {
        TopH {
            top_h: top_h as f32,
        }
    }
}

impl RowProcessor for TopH {
    fn name(&self) -> &'static str {
        "TopHLogitsWarper"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        s.ensure_candidates(logits);
        if s.cand.is_empty() {
            return;
        }
        s.gather(logits);
        let mut order: Vec<u32> = (0..s.cand.len() as u32).collect();
        let vals = &s.vals;
        let desc = |a: &u32, b: &u32| {
            vals[*b as usize]
                .total_cmp(&vals[*a as usize])
                .then(a.cmp(b))
        };
        let n = order.len().min(TOP_N);
        if order.len() > n {
            order.select_nth_unstable_by(n - 1, desc);
            order.truncate(n);
        }
        order.sort_by(desc);
        s.floats.clear();
        s.floats.extend(order.iter().map(|&j| vals[j as usize]));
        softmax_into(&s.floats, &mut s.probs);
        let entropy: f32 = -s
            .probs
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| p * p.ln())
            .sum::<f32>();
        let tau = entropy * self.top_h;
        s.keep.clear();
        s.keep.resize(s.cand.len(), false);
        let mut cum = 0.0f32;
        for (pos, (&j, &p)) in order.iter().zip(&s.probs).enumerate() {
            if p == 0.0 && pos > 0 {
                break; // 0 * log 0 is NaN in torch: nothing after it is selected
            }
            cum += if p > 0.0 { -p * p.ln() } else { 0.0 };
            if pos == 0 || cum <= tau {
                s.keep[j as usize] = true;
            }
        }
        s.apply_keep(logits);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn keeps_a_low_entropy_prefix() {
        // p ~ [0.665, 0.245, 0.090]; terms 0.271, 0.345, 0.217; H = 0.833
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&TopH::new(0.5), &mut row);
        assert_eq!(row, vec![2.0, NEG, NEG]);
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&TopH::new(0.9), &mut row);
        assert_eq!(row, vec![2.0, 1.0, NEG]);
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&TopH::new(1.0), &mut row);
        assert_eq!(row, vec![2.0, 1.0, 0.0]);
    }

    #[test]
    fn only_the_top_100_can_survive() {
        let mut row = vec![0.0f32; 300];
        run1(&TopH::new(1.0), &mut row);
        assert_eq!(row.iter().filter(|&&x| x == 0.0).count(), 100);
        assert!(row[..100].iter().all(|&x| x == 0.0));
    }
}
