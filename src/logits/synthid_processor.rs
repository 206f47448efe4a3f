//! transformers' `SynthIDTextWatermarkLogitsProcessor` (`watermarking_config=
//! SynthIDTextWatermarkingConfig(...)`): the tournament-sampling watermark. Each call
//! turns a row's scores into probabilities and, for every depth (key) in turn, moves mass
//! towards the tokens whose g-value (see [`super::synthid`]) is 1:
//! `p <- p * (1 + g - sum(g p))`; the result is `log p`, with non-finite values replaced by
//! float32's lowest value, as transformers does.
//!
//! State, as transformers keeps it: per row slot, the last `ngram_len - 1` tokens (starting
//! as zeros: the prompt never enters it; each call after the first appends the row's last
//! token), the number of calls, and the window of recently seen context hashes. A call
//! whose context was seen in that window leaves the scores alone. With
//! `skip_first_ngram_calls`, the first `ngram_len - 1` calls leave the scores alone and do
//! not enter the window.
//!
//! Beams: transformers does not reorder this state when beam search reorders its rows
//! (the state belongs to the row slot, and the slot's next token is appended whatever
//! beam now holds it), so [`RowProcessor::reorder`] leaves it where it is too. Rows are
//! never dropped while it runs (the decoder refuses `keep_rows` with it).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::synthid::{SeenContexts, SynthIdHash, SynthIdSpec};
use super::{RowProcessor, Scratch, StepContext};
use crate::error::Result;

#[derive(Default)]
struct RowState {
    /// Calls made on this row slot (0: not started).
    calls: u64,
    /// The context's tokens after its leading zeros, oldest first.
    context: VecDeque<i64>,
    seen: SeenContexts,
}

/// The built processor: the keys and table, and the state of every row slot.
pub struct SynthIdWatermark {
    hash: SynthIdHash,
    skip_first_ngram_calls: bool,
    debug_mode: bool,
    rows: Mutex<Vec<Arc<Mutex<RowState>>>>,
}

impl SynthIdWatermark {
    pub fn new(spec: &SynthIdSpec) -> Result<Self> {
        Ok(SynthIdWatermark {
            hash: SynthIdHash::new(spec)?,
            skip_first_ngram_calls: spec.skip_first_ngram_calls,
            debug_mode: spec.debug_mode,
            rows: Mutex::new(Vec::new()),
        })
    }

    fn row(&self, r: usize) -> Arc<Mutex<RowState>> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        if rows.len() <= r {
            let capacity = self.hash.context_history_size();
            rows.resize_with(r + 1, || {
                Arc::new(Mutex::new(RowState {
                    seen: SeenContexts::new(capacity),
                    ..Default::default()
                }))
            });
        }
        rows[r].clone()
    }

    /// Advances the row's state by one call; the context hash to watermark with, or
    /// `None` when this call leaves the scores alone.
    fn advance(&self, state: &mut RowState, last: Option<i64>) -> Option<i64> {
        let width = self.hash.ngram_len() - 1;
        if state.calls > 0 {
            // transformers appends `input_ids[:, -1]` from the second call on
            state.context.push_back(last.unwrap_or(0));
            if state.context.len() > width {
                state.context.pop_front();
            }
        }
        state.calls += 1;
        if self.skip_first_ngram_calls && state.calls < self.hash.ngram_len() as u64 {
            return None;
        }
        let zeros = width - state.context.len();
        let h = self.hash.context_hash(zeros, state.context.iter().copied());
        (!state.seen.check_and_push(h)).then_some(h)
    }

    /// The tournament update of one row in place (`context_hash` keys the g-values).
    fn watermark(&self, context_hash: i64, logits: &mut [f32], s: &mut Scratch) {
        let m = logits.iter().fold(f32::NEG_INFINITY, |m, &x| {
            if x.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(x)
            }
        });
        if !m.is_finite() {
            // torch's softmax is NaN everywhere (NaN, +inf or only -inf): log is NaN.
            logits.fill(f32::MIN);
            return;
        }
        let probs = &mut s.probs;
        probs.clear();
        probs.extend(logits.iter().map(|&x| (x - m).exp()));
        let total: f64 = probs.iter().map(|&p| p as f64).sum();
        let inv = (1.0 / total) as f32;
        probs.iter_mut().for_each(|p| *p *= inv);
        let g = &mut s.keep;
        for d in 0..self.hash.depth() {
            g.clear();
            let mut mass = 0.0f64;
            for (v, &p) in probs.iter().enumerate() {
                let one = self
                    .hash
                    .g_value(super::synthid::accumulate(context_hash, v as i64), d)
                    == 1;
                g.push(one);
                if one {
                    mass += p as f64;
                }
            }
            let mass = mass as f32;
            let (zero_factor, one_factor) = (1.0 - mass, 2.0 - mass);
            for (p, &one) in probs.iter_mut().zip(g.iter()) {
                *p *= if one { one_factor } else { zero_factor };
            }
        }
        for (x, &p) in logits.iter_mut().zip(probs.iter()) {
            let l = p.ln();
            *x = if l.is_finite() { l } else { f32::MIN };
        }
        // every entry was rewritten: later stages must look at the whole row again
        s.sparse = false;
    }
}

impl RowProcessor for SynthIdWatermark {
    fn name(&self) -> &'static str {
        "SynthIDTextWatermarkLogitsProcessor"
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], s: &mut Scratch) {
        if self.debug_mode {
            logits.fill(1.0);
            s.sparse = false;
        }
        let state = self.row(r);
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let last = ctx.history.row(r).last().copied();
        if let Some(h) = self.advance(&mut state, last) {
            drop(state);
            self.watermark(h, logits, s);
        }
    }

    // `reorder` keeps the default (nothing moves): transformers leaves its state by row slot.
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;
    use crate::history::TokenHistory;

    fn spec(ngram_len: i64) -> SynthIdSpec {
        SynthIdSpec {
            ngram_len,
            keys: vec![3, 5, 7],
            sampling_table_size: 1000,
            sampling_table_seed: 1,
            context_history_size: 4,
            skip_first_ngram_calls: false,
            debug_mode: false,
        }
    }

    #[test]
    fn a_repeated_context_leaves_the_row_alone() {
        // ngram_len 1: the context is always empty, so only the first call watermarks
        let w = SynthIdWatermark::new(&spec(1)).unwrap();
        let h = TokenHistory::new(&[1, 2], 1);
        let base: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let mut first = base.clone();
        run(&w, &h, &mut first, 50);
        assert_ne!(first, base);
        let mut second = base.clone();
        run(&w, &h, &mut second, 50);
        assert_eq!(second, base);
    }

    #[test]
    fn probabilities_stay_a_distribution_and_invalid_rows_become_lowest() {
        let w = SynthIdWatermark::new(&spec(3)).unwrap();
        let h = TokenHistory::new(&[1, 2, 3, 4], 2);
        let mut rows: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        rows[50] = f32::NAN;
        run(&w, &h, &mut rows, 50);
        let total: f32 = rows[..50].iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert!(rows[50..].iter().all(|&x| x == f32::MIN));
    }

    #[test]
    fn skipped_calls_leave_rows_alone_and_the_window_empty() {
        let mut s = spec(3);
        s.skip_first_ngram_calls = true;
        let w = SynthIdWatermark::new(&s).unwrap();
        let mut state = RowState {
            seen: SeenContexts::new(4),
            ..Default::default()
        };
        assert_eq!(w.advance(&mut state, Some(9)), None);
        assert_eq!(w.advance(&mut state, Some(9)), None);
        assert!(w.advance(&mut state, Some(8)).is_some());
        assert_eq!(state.context, [9, 8]);
    }
}
