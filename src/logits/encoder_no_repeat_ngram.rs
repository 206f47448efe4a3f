//! `EncoderNoRepeatNGramLogitsProcessor`: never repeat an n-gram of the encoder input.

use std::collections::HashMap;

use super::repetition_penalty::source_row;
use super::{RowProcessor, Scratch, StepContext};

/// Bans every token that would complete, after the row's last `n - 1` tokens, an
/// n-gram of the row's encoder input (padding included). The tables are built once.
pub struct EncoderNoRepeatNGram {
    n: usize,
    tables: Vec<HashMap<Vec<i64>, Vec<i64>>>,
}

impl EncoderNoRepeatNGram {
    pub fn new(ngram_size: usize, encoder_input_ids: &[Vec<i64>]) -> Self {
        let n = ngram_size.max(1);
        let tables = encoder_input_ids
            .iter()
            .map(|enc| {
                let mut t: HashMap<Vec<i64>, Vec<i64>> = HashMap::new();
                for w in enc.windows(n) {
                    let banned = t.entry(w[..n - 1].to_vec()).or_default();
                    if !banned.contains(&w[n - 1]) {
                        banned.push(w[n - 1]);
                    }
                }
                t
            })
            .collect();
        EncoderNoRepeatNGram { n, tables }
    }
}

impl RowProcessor for EncoderNoRepeatNGram {
    fn name(&self) -> &'static str {
        "EncoderNoRepeatNGramLogitsProcessor"
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], _: &mut Scratch) {
        let Some(e) = source_row(self.tables.len(), r, ctx.history.n_rows()) else {
            return;
        };
        let row = ctx.history.row(r);
        if row.len() + 1 < self.n {
            return;
        }
        let vocab = logits.len();
        if let Some(banned) = self.tables[e].get(&row[row.len() + 1 - self.n..]) {
            for &t in banned {
                if t >= 0 && (t as usize) < vocab {
                    logits[t as usize] = f32::NEG_INFINITY;
                }
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
    fn bans_encoder_ngram_completions() {
        let p = EncoderNoRepeatNGram::new(2, &[vec![1, 2, 1, 3]]);
        let h = TokenHistory::new(&[0, 1], 1);
        let mut row = vec![0.0f32; 4];
        run(&p, &h, &mut row, 4);
        assert_eq!(row, vec![0.0, 0.0, NEG, NEG]);
        let h = TokenHistory::new(&[1, 0], 1);
        let mut row = vec![0.0f32; 4];
        run(&p, &h, &mut row, 4);
        assert_eq!(row, vec![0.0; 4]);
    }
}
