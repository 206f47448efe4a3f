//! `MinLengthLogitsProcessor` / `MinNewTokensLengthLogitsProcessor`: forbid
//! end-of-sequence until a row is long enough.

use super::{RowProcessor, Scratch, StepContext};

/// Sets every EOS logit to -inf while the sequence (prompt and padding included) is
/// shorter than `min_total_len`. `min_new_tokens` is the same rule with the prompt
/// length added ([`MinLength::new_tokens`]).
pub struct MinLength {
    name: &'static str,
    min_total_len: usize,
    eos: Vec<usize>,
}

impl MinLength {
    pub fn new(min_total_len: usize, eos: &[i64]) -> Self {
        let eos = eos
            .iter()
            .filter(|&&t| t >= 0)
            .map(|&t| t as usize)
            .collect();
        MinLength {
            name: "MinLengthLogitsProcessor",
            min_total_len,
            eos,
        }
    }

    /// At least `min_new_tokens` tokens after a prompt of `prompt_len`.
    pub fn new_tokens(prompt_len: usize, min_new_tokens: usize, eos: &[i64]) -> Self {
        MinLength {
            name: "MinNewTokensLengthLogitsProcessor",
            ..Self::new(prompt_len.saturating_add(min_new_tokens), eos)
        }
    }
}

impl RowProcessor for MinLength {
    fn name(&self) -> &'static str {
        self.name
    }

    fn process_row(&self, ctx: &StepContext<'_>, _: usize, logits: &mut [f32], _: &mut Scratch) {
        if ctx.history.len() >= self.min_total_len {
            return;
        }
        let vocab = logits.len();
        for &t in self.eos.iter().filter(|&&t| t < vocab) {
            logits[t] = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LogitsMut, LogitsProcessor};
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn suppresses_eos_only_while_short() {
        let mut h = TokenHistory::new(&[5, 6], 1);
        let p = MinLength::new(3, &[1, 9]); // 9 is outside the vocab and ignored
        let mut data = vec![0.5f32, 2.0, 0.1];
        p.process(&StepContext::new(&h), &mut LogitsMut::new(&mut data, 3));
        assert_eq!(data, vec![0.5, f32::NEG_INFINITY, 0.1]);
        h.push(&[0]);
        let mut data = vec![0.5f32, 2.0, 0.1];
        p.process(&StepContext::new(&h), &mut LogitsMut::new(&mut data, 3));
        assert_eq!(data, vec![0.5, 2.0, 0.1]);
        assert_eq!(
            MinLength::new_tokens(2, 1, &[1]).name(),
            "MinNewTokensLengthLogitsProcessor"
        );
    }

    #[test]
    fn a_prompt_length_at_the_limit_does_not_overflow() {
        // `LogitsPipeline(settings, prompt_length=2**64 - 1)` reaches this from Python.
        let p = MinLength::new_tokens(usize::MAX, 2, &[1]);
        let h = TokenHistory::new(&[5], 1);
        let mut data = vec![0.5f32, 2.0];
        p.process(&StepContext::new(&h), &mut LogitsMut::new(&mut data, 2));
        assert_eq!(data, vec![0.5, f32::NEG_INFINITY]);
    }
}
