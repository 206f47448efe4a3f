//! `EncoderRepetitionPenaltyLogitsProcessor`: favour (penalty > 1) or avoid tokens of
//! the encoder input (the prompt, for decoder-only models).

use super::repetition_penalty::{penalise_tokens, source_row};
use super::{RowProcessor, Scratch, StepContext};

/// With `inv = 1 / penalty` (float32): every distinct token of the row's encoder input
/// gets `score * inv` when negative, `score / inv` otherwise (so penalty > 1 raises
/// them). Encoder rows are repeated over the rows' beams / return sequences; padding
/// tokens count, as in transformers.
pub struct EncoderRepetitionPenalty {
    inv: f32,
    encoder: Vec<Vec<i64>>,
}

impl EncoderRepetitionPenalty {
    pub fn new(penalty: f64, encoder_input_ids: Vec<Vec<i64>>) -> Self {
        EncoderRepetitionPenalty {
            inv: (1.0 / penalty) as f32,
            encoder: encoder_input_ids,
        }
    }
}

impl RowProcessor for EncoderRepetitionPenalty {
    fn name(&self) -> &'static str {
        "EncoderRepetitionPenaltyLogitsProcessor"
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], s: &mut Scratch) {
        let Some(e) = source_row(self.encoder.len(), r, ctx.history.n_rows()) else {
            return;
        };
        let inv = self.inv;
        penalise_tokens(&self.encoder[e], logits, s, |x| {
            if x < 0.0 {
                x * inv
            } else {
                x / inv
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn boosts_encoder_tokens_per_batch_entry() {
        let h = TokenHistory::new(&[0, 0, 0, 0], 4);
        let mut rows = vec![
            1.0f32, -1.0, 1.0, /* */ 1.0, -1.0, 1.0, /* */ 1.0, -1.0, 1.0,
            /* */ 1.0, -1.0, 1.0,
        ];
        let p = EncoderRepetitionPenalty::new(2.0, vec![vec![1, 1], vec![2, 9]]);
        run(&p, &h, &mut rows, 3);
        assert_eq!(
            rows,
            vec![1.0, -0.5, 1.0, 1.0, -0.5, 1.0, 1.0, -1.0, 2.0, 1.0, -1.0, 2.0]
        );
    }
}
