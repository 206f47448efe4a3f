//! transformers' `PrefixConstrainedLogitsProcessor` (`prefix_allowed_tokens_fn`): a
//! caller-supplied function names, for every row and step, the tokens the row may take
//! next. The function lives outside the core (in the bindings, a Python callable); the
//! core asks it once per row per step, in row order, with the row's whole history
//! (padding and prompt included), and masks the rest, at the grammar's position.

use std::fmt;
use std::sync::Arc;

use super::{LogitsMut, LogitsProcessor, StepContext};

/// Where the allowed tokens come from.
pub trait AllowedTokensSource: Send + Sync {
    /// The ids batch entry `batch_id`'s row (whose history is `row`) may take next;
    /// `None` when the source failed (it keeps the reason for its caller and returns
    /// `None` from then on).
    fn allowed(&self, batch_id: usize, row: &[i64]) -> Option<Vec<i64>>;

    /// The stage found `message` wrong with what [`Self::allowed`] returned; the source
    /// keeps it as its failure.
    fn fail(&self, message: String);
}

/// The `prefix_allowed_tokens_fn` setting: the source and how the rows map to batch
/// entries (row `i` of the logits belongs to entry `(first_row + i) / rows_per_batch`,
/// transformers' `num_beams` argument of the processor).
#[derive(Clone)]
pub struct PrefixAllowed {
    pub source: Arc<dyn AllowedTokensSource>,
    pub rows_per_batch: usize,
    /// Global index of the first row a pipeline sees (a per-row pipeline sees one row).
    pub first_row: usize,
}

impl fmt::Debug for PrefixAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixAllowed")
            .field("rows_per_batch", &self.rows_per_batch)
            .field("first_row", &self.first_row)
            .finish()
    }
}

impl PrefixAllowed {
    /// The same source for a pipeline that sees only global row `row`.
    pub fn for_row(&self, row: usize) -> Self {
        PrefixAllowed {
            first_row: self.first_row + row,
            ..self.clone()
        }
    }

    /// The pipeline stage; `eos` are the ids left to a row once the source failed
    /// (every row then ends at once, and the caller raises the source's failure).
    pub fn stage(&self, eos: &[i64]) -> PrefixConstrained {
        PrefixConstrained {
            prefix: self.clone(),
            eos: eos.to_vec(),
        }
    }
}

/// The stage: allowed tokens keep their score (`x + 0`), the others get `x + -inf` as
/// torch computes it (NaN for NaN and +inf); a batch entry whose rows all end up -inf
/// everywhere gets the bare mask (0 on the allowed tokens), as transformers 5.x does.
pub struct PrefixConstrained {
    prefix: PrefixAllowed,
    eos: Vec<i64>,
}

impl LogitsProcessor for PrefixConstrained {
    fn process(&self, ctx: &StepContext<'_>, logits: &mut LogitsMut<'_>) {
        let vocab = logits.vocab();
        let n = logits.n_rows().min(ctx.history.n_rows());
        let per = self.prefix.rows_per_batch.max(1);
        let mut allowed: Vec<Vec<usize>> = Vec::with_capacity(n);
        for r in 0..n {
            let batch_id = (self.prefix.first_row + r) / per;
            let Some(ids) = self.prefix.source.allowed(batch_id, ctx.history.row(r)) else {
                return self.end_every_row(logits);
            };
            match checked_ids(&ids, vocab, batch_id) {
                Ok(ids) => allowed.push(ids),
                Err(message) => {
                    self.prefix.source.fail(message);
                    return self.end_every_row(logits);
                }
            }
        }
        for (r, ids) in allowed.iter().enumerate() {
            mask_row(logits.row_mut(r), ids);
        }
        // Entries are `per` consecutive rows from the first row of an entry.
        let mut start = 0;
        while start < n {
            let end = (start + per - (self.prefix.first_row + start) % per).min(n);
            let dead = (start..end).all(|r| logits.row(r).iter().all(|&x| x == f32::NEG_INFINITY));
            if dead {
                for (r, ids) in allowed.iter().enumerate().take(end).skip(start) {
                    let row = logits.row_mut(r);
                    ids.iter().for_each(|&t| row[t] = 0.0);
                }
            }
            start = end;
        }
    }
}

impl PrefixConstrained {
    /// After a failure: only the EOS ids stay (every row ends), the rest is -inf.
    fn end_every_row(&self, logits: &mut LogitsMut<'_>) {
        let vocab = logits.vocab();
        for row in logits.rows_mut() {
            row.fill(f32::NEG_INFINITY);
            for &t in &self.eos {
                if t >= 0 && (t as usize) < vocab {
                    row[t as usize] = 0.0;
                }
            }
        }
    }
}

/// The ids as indices, or the message that says which one cannot index the vocabulary.
fn checked_ids(ids: &[i64], vocab: usize, batch_id: usize) -> Result<Vec<usize>, String> {
    if ids.is_empty() {
        // transformers' wording
        return Err(format!(
            "`prefix_allowed_tokens_fn` returned an empty list for batch ID {batch_id}. This means \
             that the constraint is unsatisfiable. Please check your implementation of \
             `prefix_allowed_tokens_fn`"
        ));
    }
    ids.iter()
        .map(|&t| match usize::try_from(t) {
            Ok(i) if i < vocab => Ok(i),
            _ => Err(format!(
                "prefix_allowed_tokens_fn: returned token id {t} for batch ID {batch_id}; ids must \
                 be in [0, {vocab})"
            )),
        })
        .collect()
}

/// `row + mask` with mask 0 on `ids` and -inf elsewhere, in torch's arithmetic.
fn mask_row(row: &mut [f32], ids: &[usize]) {
    let mut keep = vec![false; row.len()];
    ids.iter().for_each(|&t| keep[t] = true);
    for (x, keep) in row.iter_mut().zip(keep) {
        if !keep {
            *x += f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::TokenHistory;
    use std::sync::Mutex;

    /// Allows the ids listed for each batch id; records calls and failures.
    struct Table {
        allowed: Vec<Vec<i64>>,
        calls: Mutex<Vec<(usize, Vec<i64>)>>,
        failure: Mutex<Option<String>>,
    }

    impl AllowedTokensSource for Table {
        fn allowed(&self, batch_id: usize, row: &[i64]) -> Option<Vec<i64>> {
            self.calls.lock().unwrap().push((batch_id, row.to_vec()));
            Some(self.allowed[batch_id].clone())
        }
        fn fail(&self, message: String) {
            *self.failure.lock().unwrap() = Some(message);
        }
    }

    fn run(table: Arc<Table>, per: usize, history: &[i64], rows: usize, data: &mut [f32]) {
        let prefix = PrefixAllowed {
            source: table,
            rows_per_batch: per,
            first_row: 0,
        };
        let h = TokenHistory::new(history, rows);
        let vocab = data.len() / rows;
        prefix
            .stage(&[0])
            .process(&StepContext::new(&h), &mut LogitsMut::new(data, vocab));
    }

    fn table(allowed: Vec<Vec<i64>>) -> Arc<Table> {
        Arc::new(Table {
            allowed,
            calls: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        })
    }

    #[test]
    fn masks_with_torch_arithmetic_and_asks_once_per_row_with_its_batch_id() {
        let t = table(vec![vec![1, 2], vec![0]]);
        let inf = f32::INFINITY;
        let mut data = vec![1.0, 2.0, 3.0, inf, 5.0, 6.0, 7.0, f32::NAN];
        run(t.clone(), 1, &[9, 8], 2, &mut data);
        // +inf + -inf and NaN + -inf are NaN
        assert_eq!(data[..3], [f32::NEG_INFINITY, 2.0, 3.0][..]);
        assert_eq!(data[4..7], [5.0, f32::NEG_INFINITY, f32::NEG_INFINITY][..]);
        assert!(data[3].is_nan() && data[7].is_nan());
        let calls = t.calls.lock().unwrap().clone();
        assert_eq!(calls, vec![(0, vec![9]), (1, vec![8])]);
    }

    #[test]
    fn an_entry_with_every_row_dead_gets_the_bare_mask() {
        // entry 0 (rows 0, 1): every allowed token is -inf in both rows -> mask
        // entry 1 (rows 2, 3): row 3 keeps a finite score -> untouched
        let t = table(vec![vec![1], vec![0]]);
        let neg = f32::NEG_INFINITY;
        let mut data = vec![1.0, neg, 2.0, neg, 3.0, 4.0, neg, 5.0];
        run(t, 2, &[1, 2, 3, 4], 4, &mut data);
        assert_eq!(data, vec![neg, 0.0, neg, 0.0, 3.0, neg, neg, neg]);
    }

    #[test]
    fn empty_and_out_of_vocab_answers_fail_and_end_every_row() {
        for bad in [vec![], vec![5], vec![-1]] {
            let t = table(vec![bad]);
            let mut data = vec![1.0, 2.0, 3.0];
            run(t.clone(), 1, &[1], 1, &mut data);
            assert_eq!(data, vec![0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
            let failure = t.failure.lock().unwrap().clone().unwrap();
            assert!(failure.contains("batch ID 0"), "{failure}");
        }
    }

    #[test]
    fn a_per_row_pipeline_reports_its_global_batch_id() {
        let t = table(vec![vec![0], vec![0], vec![0], vec![1]]);
        let prefix = PrefixAllowed {
            source: t.clone(),
            rows_per_batch: 1,
            first_row: 0,
        }
        .for_row(3);
        let h = TokenHistory::new(&[7], 1);
        let mut data = vec![1.0, 2.0];
        prefix
            .stage(&[])
            .process(&StepContext::new(&h), &mut LogitsMut::new(&mut data, 2));
        assert_eq!(data, vec![f32::NEG_INFINITY, 2.0]);
        assert_eq!(t.calls.lock().unwrap()[0].0, 3);
    }
}
