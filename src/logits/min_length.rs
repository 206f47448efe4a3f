//! Forbid end-of-sequence until a row is long enough (`min_length`, `min_new_tokens`).

use super::{LogitsMut, LogitsProcessor, StepContext};

/// Sets every EOS logit to -inf while the sequence (prompt included) is shorter
/// than `min_total_len`. `min_new_tokens` is the same rule with the prompt length added.
pub struct MinLength {
    min_total_len: usize,
    eos: Vec<usize>,
}

impl MinLength {
    pub fn new(min_total_len: usize, eos: &[i64]) -> Self {
        let eos = eos.iter().filter(|&&t| t >= 0).map(|&t| t as usize).collect();
        MinLength { min_total_len, eos }
    }
}

impl LogitsProcessor for MinLength {
    fn process(&self, ctx: &StepContext<'_>, logits: &mut LogitsMut<'_>) {
        if ctx.history.len() >= self.min_total_len {
            return;
        }
        let vocab = logits.vocab();
        for row in logits.rows_mut() {
            for &t in self.eos.iter().filter(|&&t| t < vocab) {
                row[t] = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn suppresses_eos_only_while_short() {
        let mut h = TokenHistory::new(&[5, 6], 1);
        let p = MinLength::new(3, &[1, 9]); // 9 is outside the vocab and ignored
        let mut data = vec![0.5f32, 2.0, 0.1];
        p.process(&StepContext { history: &h }, &mut LogitsMut::new(&mut data, 3));
        assert_eq!(data, vec![0.5, f32::NEG_INFINITY, 0.1]);
        h.push(&[0]);
        let mut data = vec![0.5f32, 2.0, 0.1];
        p.process(&StepContext { history: &h }, &mut LogitsMut::new(&mut data, 3));
        assert_eq!(data, vec![0.5, 2.0, 0.1]);
    }
}
