//! `RepetitionPenaltyLogitsProcessor` (Keskar et al. 2019).

use super::{RowProcessor, Scratch, StepContext};

/// Every token already in the row (once, however often it occurs) gets its score
/// multiplied by `penalty` when negative and divided by it otherwise (float32).
///
/// Left padding is not history: as transformers 5.x does with the attention mask,
/// the first `prompt_ignore[r]` positions of row `r` are skipped (`prompt_ignore`
/// has one entry per row, or per batch entry and is then repeated over the row's
/// beams / return sequences). Ids outside the vocabulary are ignored.
pub struct RepetitionPenalty {
    penalty: f32,
    prompt_ignore: Vec<usize>,
}

impl RepetitionPenalty {
    pub fn new(penalty: f64, prompt_ignore: Vec<usize>) -> Self {
        RepetitionPenalty {
            penalty: penalty as f32,
            prompt_ignore,
        }
    }
}

/// Which entry of a per-row list of `len` entries row `r` of `rows` uses: the list has
/// one entry per row, or one per batch entry repeated over its beams / return
/// sequences (as `repeat_interleave`). `None` when `len` does not divide `rows`
/// (callers validate shapes first).
pub(super) fn source_row(len: usize, r: usize, rows: usize) -> Option<usize> {
    if len == 0 || rows % len != 0 || r >= rows {
        return None;
    }
    Some(r / (rows / len))
}

/// Applies `f(score)` once to every distinct in-vocabulary token of `tokens`.
pub(super) fn penalise_tokens(
    tokens: &[i64],
    logits: &mut [f32],
    s: &mut Scratch,
    f: impl Fn(f32) -> f32,
) {
    let vocab = logits.len();
    s.clear_marks(vocab);
    for &t in tokens {
        if t >= 0 && (t as usize) < vocab && s.mark(t as usize) {
            let x = &mut logits[t as usize];
            *x = f(*x);
        }
    }
}

impl RowProcessor for RepetitionPenalty {
    fn name(&self) -> &'static str {
        "RepetitionPenaltyLogitsProcessor"
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], s: &mut Scratch) {
        let history = ctx.history.row(r);
        let entry = source_row(self.prompt_ignore.len(), r, ctx.history.n_rows());
        let skip = entry
            .map_or(0, |e| self.prompt_ignore[e])
            .min(history.len());
        let p = self.penalty;
        penalise_tokens(&history[skip..], logits, s, |x| {
            if x < 0.0 {
                x * p
            } else {
                x / p
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, NEG};
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn penalises_each_seen_token_once() {
        let h = TokenHistory::new(&[1, 1, 3, 9], 1); // 9 is outside the vocab
        let mut row = vec![1.0, 2.0, 5.0, -1.0, NEG];
        run(&RepetitionPenalty::new(2.0, vec![]), &h, &mut row, 5);
        assert_eq!(row, vec![1.0, 1.0, 5.0, -2.0, NEG]);
    }

    #[test]
    fn skips_left_padding_per_row_and_repeats_per_copy() {
        let h = TokenHistory::new(
            &[
                0, 2, /* row 1 */ 1, 2, /* row 2 */ 0, 2, /* row 3 */ 1, 2,
            ],
            4,
        );
        let mut rows = vec![4.0f32; 12];
        // two batch entries, two copies each; entry 0 has one pad position
        run(&RepetitionPenalty::new(2.0, vec![1, 0]), &h, &mut rows, 3);
        assert_eq!(
            rows,
            vec![4.0, 4.0, 2.0, 4.0, 4.0, 2.0, 2.0, 4.0, 2.0, 4.0, 2.0, 2.0]
        );
    }
}
