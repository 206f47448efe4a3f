//! Presence and frequency penalties (OpenAI / vLLM; llama.cpp's `penalties` sampler).

use super::repetition_penalty::source_row;
use super::{RowProcessor, Scratch, StepContext};

/// `x[t] -= frequency * count(t) + presence * (count(t) > 0)` (float32, in that order:
/// vLLM's `logits -= frequency_penalties * counts; logits -= presence_penalties * mask`),
/// counting `t` over the generated tokens, or with `last_n` over the last `last_n` tokens
/// of the row (prompt included, left padding excluded), as llama.cpp's window.
/// Ids outside the vocabulary are ignored.
pub struct PresenceFrequencyPenalty {
    presence: f32,
    frequency: f32,
    last_n: Option<usize>,
    prompt_ignore: Vec<usize>,
}

impl PresenceFrequencyPenalty {
    pub fn new(
        presence: f64,
        frequency: f64,
        last_n: Option<usize>,
        prompt_ignore: Vec<usize>,
    ) -> Self {
        PresenceFrequencyPenalty {
            presence: presence as f32,
            frequency: frequency as f32,
            last_n,
            prompt_ignore,
        }
    }
}

/// The tokens of row `r` a history-window processor looks at: the generated tokens, or
/// with `last_n` the last `last_n` tokens after the row's left padding.
pub(super) fn window<'a>(
    ctx: &StepContext<'a>,
    r: usize,
    last_n: Option<usize>,
    prompt_ignore: &[usize],
) -> &'a [i64] {
    let row = ctx.history.row(r);
    match last_n {
        None => &row[ctx.history.prompt_len().min(row.len())..],
        Some(n) => {
            let entry = source_row(prompt_ignore.len(), r, ctx.history.n_rows());
            let pad = entry.map_or(0, |e| prompt_ignore[e]).min(row.len());
            let start = row.len().saturating_sub(n).max(pad);
            &row[start..]
        }
    }
}

impl RowProcessor for PresenceFrequencyPenalty {
    fn name(&self) -> &'static str {
        "PresenceFrequencyPenalty"
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], s: &mut Scratch) {
        let tokens = window(ctx, r, self.last_n, &self.prompt_ignore);
        let vocab = logits.len();
        s.ids.clear();
        s.ids.extend(
            tokens
                .iter()
                .filter(|&&t| t >= 0 && (t as usize) < vocab)
                .map(|&t| t as u32),
        );
        s.ids.sort_unstable();
        let mut i = 0;
        while i < s.ids.len() {
            let t = s.ids[i];
            let mut j = i;
            while j < s.ids.len() && s.ids[j] == t {
                j += 1;
            }
            let x = &mut logits[t as usize];
            *x -= self.frequency * (j - i) as f32;
            *x -= self.presence;
            i = j;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;
    use crate::history::TokenHistory;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_counts_over_generated_tokens() {
        let mut h = TokenHistory::new(&[2, 2], 1); // prompt: not counted
        h.push(&[1]);
        h.push(&[1]);
        h.push(&[3]);
        h.push(&[9]); // outside the vocabulary
        let mut row = vec![0.0, 1.0, 2.0, 3.0];
        run(
            &PresenceFrequencyPenalty::new(0.5, 0.25, None, vec![]),
            &h,
            &mut row,
            4,
        );
        // token 1: 1 - 2*0.25 - 0.5 = 0; token 3: 3 - 0.25 - 0.5 = 2.25
        assert_eq!(row, vec![0.0, 0.0, 2.0, 2.25]);
    }

    #[test]
    fn window_counts_the_last_n_tokens_after_padding() {
        // row 0: pad 0 then prompt 2; row 1: prompt 1, 2
        let mut h = TokenHistory::new(&[0, 2, 1, 2], 2);
        h.push(&[3, 3]);
        let mut rows = vec![0.0f32; 8];
        run(
            &PresenceFrequencyPenalty::new(1.0, 0.0, Some(10), vec![1, 0]),
            &h,
            &mut rows,
            4,
        );
        assert_eq!(rows, vec![0.0, 0.0, -1.0, -1.0, 0.0, -1.0, -1.0, -1.0]);
        let mut rows = vec![0.0f32; 8];
        run(
            &PresenceFrequencyPenalty::new(1.0, 0.0, Some(1), vec![1, 0]),
            &h,
            &mut rows,
            4,
        );
        assert_eq!(rows, vec![0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0]);
    }

    proptest! {
        /// Non-negative penalties never raise a score, and leave unseen tokens alone.
        #[test]
        fn never_raises_and_touches_only_seen_tokens(
            row in proptest::collection::vec(-20.0f32..20.0, 8),
            generated in proptest::collection::vec(0i64..8, 0..12),
            presence in 0.0f64..2.0, frequency in 0.0f64..2.0,
        ) {
            let mut h = TokenHistory::new(&[0], 1);
            for &t in &generated {
                h.push(&[t]);
            }
            let mut out = row.clone();
            run(&PresenceFrequencyPenalty::new(presence, frequency, None, vec![]), &h, &mut out, 8);
            for t in 0..8 {
                prop_assert!(out[t] <= row[t]);
                if !generated.contains(&(t as i64)) {
                    prop_assert_eq!(out[t], row[t]);
                }
            }
        }
    }
}
