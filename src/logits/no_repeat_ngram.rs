//! `NoRepeatNGramLogitsProcessor`: never complete an n-gram the row already contains.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use super::{RowProcessor, Scratch, StepContext};

/// Bans every token that would complete an n-gram (of `n` tokens) already present in
/// the row, prompt and padding included, as transformers does.
///
/// Unlike transformers (issue 26130), the n-gram table of each row is kept across steps
/// and only the newest n-gram is added per step. The table remembers which tokens it
/// has seen; if the row is not a continuation of them (a beam reorder that was not
/// announced with [`RowProcessor::reorder`], or a standalone pipeline fed unrelated
/// rows), it is rebuilt, so results never depend on the call pattern.
pub struct NoRepeatNGram {
    n: usize,
    rows: RwLock<Vec<Mutex<RowTable>>>,
}

#[derive(Clone, Default)]
struct RowTable {
    seen: Vec<i64>,
    next: HashMap<Vec<i64>, Vec<i64>>,
}

impl RowTable {
    fn sync(&mut self, row: &[i64], n: usize) {
        if !row.starts_with(&self.seen) {
            self.seen.clear();
            self.next.clear();
        }
        for end in self.seen.len()..row.len() {
            if end + 1 >= n {
                let window = &row[end + 1 - n..=end];
                let banned = self.next.entry(window[..n - 1].to_vec()).or_default();
                if !banned.contains(&window[n - 1]) {
                    banned.push(window[n - 1]);
                }
            }
        }
        self.seen.extend_from_slice(&row[self.seen.len()..]);
    }

    fn banned(&self, row: &[i64], n: usize) -> &[i64] {
        if row.len() < n {
            return &[];
        }
        self.next
            .get(&row[row.len() + 1 - n..])
            .map_or(&[], Vec::as_slice)
    }
}

impl NoRepeatNGram {
    pub fn new(ngram_size: usize) -> Self {
        NoRepeatNGram {
            n: ngram_size.max(1),
            rows: RwLock::new(Vec::new()),
        }
    }

    fn with_row<R>(&self, r: usize, f: impl FnOnce(&mut RowTable) -> R) -> R {
        {
            let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = rows.get(r) {
                return f(&mut m.lock().unwrap_or_else(|e| e.into_inner()));
            }
        }
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        while rows.len() <= r {
            rows.push(Mutex::new(RowTable::default()));
        }
        let out = f(&mut rows[r].lock().unwrap_or_else(|e| e.into_inner()));
        out
    }
}

impl RowProcessor for NoRepeatNGram {
    fn name(&self) -> &'static str {
        "NoRepeatNGramLogitsProcessor"
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], _: &mut Scratch) {
        let row = ctx.history.row(r);
        let n = self.n;
        let vocab = logits.len();
        self.with_row(r, |table| {
            table.sync(row, n);
            for &t in table.banned(row, n) {
                if t >= 0 && (t as usize) < vocab {
                    logits[t as usize] = f32::NEG_INFINITY;
                }
            }
        });
    }

    fn reorder(&self, parents: &[usize]) {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        let old: Vec<RowTable> = rows
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        *rows = parents
            .iter()
            .map(|&p| Mutex::new(old.get(p).cloned().unwrap_or_default()))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, NEG};
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn bans_completions_of_seen_ngrams_incrementally() {
        let p = NoRepeatNGram::new(2);
        let mut h = TokenHistory::new(&[1, 2, 3, 1], 1);
        let mut row = vec![0.0f32; 4];
        run(&p, &h, &mut row, 4);
        assert_eq!(row, vec![0.0, 0.0, NEG, 0.0], "1 was followed by 2");
        h.push(&[3]);
        let mut row = vec![0.0f32; 4];
        run(&p, &h, &mut row, 4);
        assert_eq!(row, vec![0.0, NEG, 0.0, 0.0], "3 was followed by 1");
    }

    #[test]
    fn unigrams_ban_every_seen_token_and_short_rows_nothing() {
        let h = TokenHistory::new(&[2, 0], 1);
        let mut row = vec![0.0f32; 3];
        run(&NoRepeatNGram::new(1), &h, &mut row, 3);
        assert_eq!(row, vec![NEG, 0.0, NEG]);
        let mut row = vec![0.0f32; 3];
        run(&NoRepeatNGram::new(3), &h, &mut row, 3);
        assert_eq!(row, vec![0.0; 3]);
    }

    #[test]
    fn unrelated_rows_and_reorders_rebuild_the_table() {
        let p = NoRepeatNGram::new(2);
        let h = TokenHistory::new(&[1, 2, 1, /* row 1 */ 0, 0, 0], 2);
        let mut rows = vec![0.0f32; 6];
        run(&p, &h, &mut rows, 3);
        assert_eq!(rows, vec![0.0, 0.0, NEG, NEG, 0.0, 0.0]);
        // beams swap: rows now continue each other's history
        p.reorder(&[1, 0]);
        let mut h2 = h.clone();
        h2.reorder(&[1, 0]);
        h2.push(&[0, 1]);
        let mut rows = vec![0.0f32; 6];
        run(&p, &h2, &mut rows, 3);
        assert_eq!(rows, vec![NEG, 0.0, 0.0, 0.0, NEG, NEG]);
        // the same stage fed a history it has never seen
        let h3 = TokenHistory::new(&[2, 2, 2, /* row 1 */ 1, 0, 1], 2);
        let mut rows = vec![0.0f32; 6];
        run(&p, &h3, &mut rows, 3);
        assert_eq!(rows, vec![0.0, 0.0, NEG, NEG, 0.0, 0.0]);
    }
}
