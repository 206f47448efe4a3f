//! `SuppressTokensAtBeginLogitsProcessor`: tokens that cannot start the generation.

use super::suppress::suppress;
use super::{RowProcessor, Scratch, StepContext};

/// The listed tokens' scores are -inf when the history is exactly `begin_index` long
/// (the first generated position; one later when a BOS token is forced after a
/// one-token prompt, see [`super::PipelineConfig`]).
pub struct SuppressTokensAtBegin {
    tokens: Vec<i64>,
    begin_index: usize,
}

impl SuppressTokensAtBegin {
    pub fn new(tokens: &[i64], begin_index: usize) -> Self {
        SuppressTokensAtBegin {
            tokens: tokens.to_vec(),
            begin_index,
        }
    }
}

impl RowProcessor for SuppressTokensAtBegin {
    fn name(&self) -> &'static str {
        "SuppressTokensAtBeginLogitsProcessor"
    }

    fn process_row(&self, ctx: &StepContext<'_>, _: usize, logits: &mut [f32], _: &mut Scratch) {
        if ctx.history.len() == self.begin_index {
            suppress(logits, &self.tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, NEG};
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn suppresses_only_at_the_begin_index() {
        let mut h = TokenHistory::new(&[5], 1);
        let p = SuppressTokensAtBegin::new(&[1], 1);
        let mut row = vec![1.0f32, 2.0];
        run(&p, &h, &mut row, 2);
        assert_eq!(row, vec![1.0, NEG]);
        h.push(&[0]);
        let mut row = vec![1.0f32, 2.0];
        run(&p, &h, &mut row, 2);
        assert_eq!(row, vec![1.0, 2.0]);
    }
}
