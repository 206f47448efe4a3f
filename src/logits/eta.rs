//! `EtaLogitsWarper` (eta sampling, Hewitt et al. 2022).

use super::epsilon::cutoff;
use super::math::{max, neg_entropy, sum_exp};
use super::{RowProcessor, Scratch, StepContext};

/// Removes tokens with probability `< min(eta, sqrt(eta) * exp(-H))`, `H` the row's
/// entropy (float32 as transformers), unless they score at least the
/// `min_tokens_to_keep`-th largest score.
pub struct EtaCutoff {
    epsilon: f32,
    min_keep: usize,
}

impl EtaCutoff {
    pub fn new(eta: f64, min_tokens_to_keep: usize) -> Self {
        EtaCutoff {
            epsilon: eta as f32,
            min_keep: min_tokens_to_keep.max(1),
        }
    }
}

impl RowProcessor for EtaCutoff {
    fn name(&self) -> &'static str {
        "EtaLogitsWarper"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        let eps = self.epsilon;
        let dense = |row: &[f32], m: f32, total: f64| {
            let lse = m + (total.ln() as f32);
            let entropy = -(neg_entropy(row, m, (1.0 / total) as f32, lse) as f32);
            eps.min(eps.sqrt() * (-entropy).exp())
        };
        cutoff(logits, s, self.min_keep, sparse_threshold(eps), dense);
    }
}

/// The sparse-path threshold of eta from the candidates' values and probabilities.
fn sparse_threshold(eps: f32) -> impl Fn(&Scratch) -> f32 {
    move |s: &Scratch| {
        let m = max(&s.vals);
        let entropy = if m == f32::INFINITY {
            (s.probs.iter().filter(|&&p| p > 0.0).count() as f32).ln()
        } else {
            let lse = m + (sum_exp(&s.vals, m).ln() as f32);
            let h: f64 = s
                .vals
                .iter()
                .zip(&s.probs)
                .map(|(&v, &p)| ((v - lse).max(f32::MIN) * p) as f64)
                .sum();
            -(h as f32)
        };
        eps.min(eps.sqrt() * (-entropy).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn threshold_follows_the_entropy() {
        // p ~ [0.665, 0.245, 0.090], H ~ 0.832; eta = min(0.2, sqrt(0.2) * e^-0.832) ~ 0.195
        let mut row = vec![2.0, 1.0, 0.0];
        run1(&EtaCutoff::new(0.2, 1), &mut row);
        assert_eq!(row, vec![2.0, 1.0, NEG]);
        // a flat row has a high entropy and a low threshold: nothing goes
        let mut row = vec![0.0; 8];
        run1(&EtaCutoff::new(0.2, 1), &mut row);
        assert_eq!(row, vec![0.0; 8]);
    }
}
