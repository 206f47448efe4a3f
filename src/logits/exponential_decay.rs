//! `ExponentialDecayLengthPenalty`: raise EOS scores exponentially after a start index.

use super::{RowProcessor, Scratch, StepContext};

/// Once `start_index` tokens have been generated (more precisely: when the history is
/// longer than `prompt_len + start_index`), every EOS score `s` becomes
/// `s + |s| * (factor^i - 1)` with `i` the number of tokens past the start (float32,
/// the power in f64 as Python computes it); non-finite EOS scores are left alone.
pub struct ExponentialDecayLengthPenalty {
    start: usize,
    factor: f64,
    eos: Vec<i64>,
}

impl ExponentialDecayLengthPenalty {
    pub fn new(
        start_index: usize,
        decay_factor: f64,
        eos_token_ids: &[i64],
        prompt_len: usize,
    ) -> Self {
        let mut eos: Vec<i64> = Vec::new();
        for &t in eos_token_ids {
            if !eos.contains(&t) {
                eos.push(t);
            }
        }
        ExponentialDecayLengthPenalty {
            start: start_index.saturating_add(prompt_len),
            factor: decay_factor,
            eos,
        }
    }
}

impl RowProcessor for ExponentialDecayLengthPenalty {
    fn name(&self) -> &'static str {
        "ExponentialDecayLengthPenalty"
    }

    fn process_row(&self, ctx: &StepContext<'_>, _: usize, logits: &mut [f32], _: &mut Scratch) {
        let cur = ctx.history.len();
        if cur <= self.start {
            return;
        }
        let steps = (cur - self.start).min(i32::MAX as usize) as i32;
        let c = (self.factor.powi(steps) - 1.0) as f32;
        for &t in &self.eos {
            if t >= 0 && (t as usize) < logits.len() {
                let s = logits[t as usize];
                let penalty = if s.is_finite() { s.abs() * c } else { 0.0 };
                logits[t as usize] = s + penalty;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, NEG};
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn grows_eos_after_the_start() {
        let h = TokenHistory::new(&[7, 7, 7], 1); // prompt 1 + 2 generated
        let p = ExponentialDecayLengthPenalty::new(1, 2.0, &[0, 1, 0], 1);
        let mut row = vec![-1.0f32, NEG, 5.0];
        run(&p, &h, &mut row, 3);
        // i = 3 - 2 = 1: -1 + 1 * (2 - 1) = 0
        assert_eq!(row, vec![0.0, NEG, 5.0]);
        let p = ExponentialDecayLengthPenalty::new(2, 2.0, &[0], 1);
        let mut row = vec![-1.0f32, 0.0, 0.0];
        run(&p, &h, &mut row, 3);
        assert_eq!(row, vec![-1.0, 0.0, 0.0]);
        // A prompt length at the limit (from `LogitsPipeline(prompt_length=...)`): never starts.
        let p = ExponentialDecayLengthPenalty::new(2, 2.0, &[0], usize::MAX);
        let mut row = vec![-1.0f32, 0.0, 0.0];
        run(&p, &h, &mut row, 3);
        assert_eq!(row, vec![-1.0, 0.0, 0.0]);
    }
}
