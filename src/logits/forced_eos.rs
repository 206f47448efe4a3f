//! `ForcedEOSTokenLogitsProcessor`: the last token before `max_length` is an EOS.

use super::forced_bos::force;
use super::{RowProcessor, Scratch, StepContext};

/// When the history is `max_length - 1` long, every score becomes -inf except the
/// forced EOS tokens', which become 0.
pub struct ForcedEos {
    max_length: usize,
    eos: Vec<i64>,
}

impl ForcedEos {
    pub fn new(max_length: usize, eos_token_ids: &[i64]) -> Self {
        ForcedEos {
            max_length,
            eos: eos_token_ids.to_vec(),
        }
    }
}

impl RowProcessor for ForcedEos {
    fn name(&self) -> &'static str {
        "ForcedEOSTokenLogitsProcessor"
    }

    fn process_row(&self, ctx: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        if ctx.history.len() + 1 == self.max_length {
            force(logits, &self.eos, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, NEG};
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn forces_at_the_last_position() {
        let h = TokenHistory::new(&[5, 5], 1);
        let mut row = vec![3.0f32, 1.0, 2.0];
        run(&ForcedEos::new(3, &[1, 2]), &h, &mut row, 3);
        assert_eq!(row, vec![NEG, 0.0, 0.0]);
        let mut row = vec![3.0f32, 1.0, 2.0];
        run(&ForcedEos::new(4, &[1, 2]), &h, &mut row, 3);
        assert_eq!(row, vec![3.0, 1.0, 2.0]);
    }
}
