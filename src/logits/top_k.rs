//! `TopKLogitsWarper`: keep the tokens scoring at least the k-th largest score.

use super::math::{chunk_maxima, kth_largest, prelude_max, MAX_CHUNK as CHUNK};
use super::{RowProcessor, Scratch, StepContext};

/// Every score below the k-th largest becomes -inf; ties with the k-th score are all
/// kept (so more than k tokens may survive), as transformers does.
/// `k = max(top_k, min_tokens_to_keep)`; with `k >= vocab` nothing is removed.
///
/// The k-th score is found in one read-only pass with a rising threshold (selection,
/// no sort); a second pass writes -inf, without reading the 64-token chunks whose
/// maximum (remembered from the first pass) is below it, and records the survivors as
/// the row's candidates. The warpers that precede top-k in transformers' order (NaN
/// as -inf, temperature) are fused into these passes ([`TopK::with_prelude`]).
pub struct TopK {
    k: usize,
    sanitize: bool,
    temperature: Option<f32>,
}

impl TopK {
    pub fn new(top_k: usize, min_tokens_to_keep: usize) -> Self {
        TopK {
            k: top_k.max(min_tokens_to_keep).max(1),
            sanitize: false,
            temperature: None,
        }
    }

    /// Top-k that first maps NaN to -inf (`sanitize`) and divides by `temperature`, in
    /// the same pass: the same result as those stages run before it.
    pub fn with_prelude(
        top_k: usize,
        min_tokens_to_keep: usize,
        sanitize: bool,
        temperature: Option<f64>,
    ) -> Self {
        TopK {
            sanitize,
            temperature: temperature.map(|t| t as f32),
            ..Self::new(top_k, min_tokens_to_keep)
        }
    }

    fn prelude(&self, x: f32) -> f32 {
        let x = if self.sanitize && x.is_nan() {
            f32::NEG_INFINITY
        } else {
            x
        };
        self.temperature.map_or(x, |t| x / t)
    }
}

impl TopK {
    /// Pass 1 (read only) over `map(x)` of every entry, `map` monotone (never decreasing):
    /// the k-th largest mapped value divided by the temperature (-inf when fewer than k
    /// are above -inf). Leaves every 64-token chunk's largest mapped value in `s.probs`.
    ///
    /// The maximum of every chunk is taken on the raw values (x -> x / t and `map` are
    /// monotone, so the k-th scaled value is the scaled k-th value; NaN never passes a
    /// comparison). The k-th largest chunk maximum is a lower bound of the k-th largest
    /// value (those maxima are k values of the row), and only the chunks whose maximum
    /// reaches it can hold values above it: at most k of them (more with ties) are read
    /// again to select the exact k-th value.
    #[inline(always)]
    fn scaled_kth(&self, row: &[f32], map: impl Fn(f32) -> f32, s: &mut Scratch) -> f32 {
        let k = self.k;
        let chunk_max = &mut s.probs;
        chunk_maxima(row, chunk_max);
        chunk_max.iter_mut().for_each(|m| *m = map(*m));
        let buf = &mut s.floats;
        let floor = kth_largest(chunk_max, k, buf);
        buf.clear();
        for (chunk, &m) in row.chunks(CHUNK).zip(chunk_max.iter()) {
            if m >= floor {
                buf.extend(
                    chunk
                        .iter()
                        .map(|&x| map(x))
                        .filter(|&x| x >= floor && x > f32::NEG_INFINITY),
                );
            }
        }
        if buf.len() < k {
            f32::NEG_INFINITY
        } else {
            *buf.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
                / self.temperature.unwrap_or(1.0)
        }
    }

    /// What [`RowProcessor::process_row`] keeps of the row's log-softmax
    /// `(x - max) - log_sum`, without writing anything: the kept indices (increasing)
    /// into `s.cand` and their processed values into `s.vals`, the bits the written
    /// path leaves there. For a row whose `max` and `log_sum` are finite (so no entry
    /// is NaN or +inf) and `k` below its length; `false` (nothing done) otherwise.
    pub fn keep_of_log_softmax(
        &self,
        row: &[f32],
        max: f32,
        log_sum: f32,
        s: &mut Scratch,
    ) -> bool {
        if !(max.is_finite() && log_sum.is_finite()) || self.k >= row.len() {
            return false;
        }
        let logp = |x: f32| (x - max) - log_sum;
        let t = self.temperature.unwrap_or(1.0);
        let kth = self.scaled_kth(row, logp, s);
        s.cand.clear();
        s.vals.clear();
        for (c, chunk) in row.chunks(CHUNK).enumerate() {
            if s.probs[c] / t < kth || s.probs[c] == f32::NEG_INFINITY {
                continue;
            }
            for (j, &x) in chunk.iter().enumerate() {
                let y = logp(x) / t;
                if y >= kth && y > f32::NEG_INFINITY {
                    s.cand.push((c * CHUNK + j) as u32);
                    s.vals.push(y);
                }
            }
        }
        true
    }
}

impl RowProcessor for TopK {
    fn name(&self) -> &'static str {
        "TopKLogitsWarper"
    }

    fn names(&self) -> Vec<&'static str> {
        super::prelude_names(self.sanitize, self.temperature, self.name())
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        if s.sparse {
            for &i in &s.cand {
                logits[i as usize] = self.prelude(logits[i as usize]);
            }
            if self.k >= s.cand.len() {
                return;
            }
            s.gather(logits);
            let kth = kth_largest(&s.vals, self.k, &mut s.floats);
            s.keep.clear();
            s.keep.extend(s.vals.iter().map(|&v| v >= kth));
            s.apply_keep(logits);
            return;
        }
        let t = self.temperature.unwrap_or(1.0);
        if self.k >= logits.len() {
            prelude_max(logits, t, self.sanitize);
            return;
        }
        let kth = self.scaled_kth(logits, |x| x, s);
        // Pass 2: scaled values compared with the scaled k-th one (ties that the
        // division creates are kept, as in transformers); chunks whose scaled maximum
        // is below it are only written.
        s.cand.clear();
        for (c, chunk) in logits.chunks_mut(CHUNK).enumerate() {
            if s.probs[c] / t < kth || s.probs[c] == f32::NEG_INFINITY {
                chunk.fill(f32::NEG_INFINITY);
                continue;
            }
            for (j, x) in chunk.iter_mut().enumerate() {
                let y = *x / t;
                if y >= kth && y > f32::NEG_INFINITY {
                    *x = y;
                    s.cand.push((c * CHUNK + j) as u32);
                } else {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        s.sparse = true;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn keeps_ties_at_the_boundary() {
        let mut row = vec![1.0, 3.0, 2.0, 3.0, 2.0, 0.0];
        run1(&TopK::new(3, 1), &mut row);
        assert_eq!(row, vec![NEG, 3.0, 2.0, 3.0, 2.0, NEG]);
    }

    #[test]
    fn min_tokens_to_keep_raises_k_and_large_k_is_a_no_op() {
        let mut row = vec![1.0, 3.0, 2.0];
        run1(&TopK::new(1, 2), &mut row);
        assert_eq!(row, vec![NEG, 3.0, 2.0]);
        let mut row = vec![1.0, f32::NAN, 2.0];
        run1(&TopK::new(5, 1), &mut row);
        assert!(row[1].is_nan(), "k >= vocab leaves the row untouched");
        let mut row = vec![1.0, f32::NAN, 2.0];
        run1(&TopK::with_prelude(5, 1, true, Some(0.5)), &mut row);
        assert_eq!(row, vec![2.0, NEG, 4.0], "but runs its prelude");
    }

    #[test]
    fn nan_is_removed_and_few_finite_keeps_all_finite() {
        let mut row = vec![f32::NAN, 1.0, NEG, 0.5];
        run1(&TopK::new(3, 1), &mut row);
        assert_eq!(row, vec![NEG, 1.0, NEG, 0.5]);
    }

    #[test]
    fn prelude_equals_the_separate_stages() {
        let row: Vec<f32> = (0..5000)
            .map(|i| {
                if i % 97 == 0 {
                    f32::NAN
                } else {
                    ((i * 37) % 1009) as f32 / 7.0
                }
            })
            .collect();
        let mut fused = row.clone();
        run1(&TopK::with_prelude(40, 1, true, Some(0.7)), &mut fused);
        let mut staged = row.clone();
        run1(&super::super::NanToNegInf, &mut staged);
        run1(&super::super::Temperature::new(0.7), &mut staged);
        run1(&TopK::new(40, 1), &mut staged);
        assert_eq!(fused, staged);
        assert_eq!(TopK::with_prelude(4, 1, true, Some(0.7)).names().len(), 3);
    }

    #[test]
    fn keep_of_log_softmax_is_the_written_path() {
        for (k, t) in [
            (1, None),
            (5, Some(0.7)),
            (40, None),
            (40, Some(1.3)),
            (999, None),
        ] {
            for seed in 0..4u64 {
                // many ties, some -inf
                let mut row = crate::beam::tied_logits(seed, 0, 3000);
                for i in (0..3000).step_by(7 + seed as usize) {
                    row[i] = NEG;
                }
                let mut shifts = Vec::new();
                crate::beam::log_softmax_shifts(&row, row.len(), &mut shifts);
                let top = TopK::with_prelude(k, 1, true, t);
                let mut s = Scratch::default();
                assert!(top.keep_of_log_softmax(&row, shifts[0].0, shifts[0].1, &mut s));
                let mut written = row.clone();
                crate::beam::log_softmax_rows(&mut written, row.len());
                run1(&top, &mut written);
                let kept: Vec<u32> = (0..written.len() as u32)
                    .filter(|&i| written[i as usize] > NEG)
                    .collect();
                assert_eq!(s.cand, kept, "k {k}, t {t:?}");
                let bits =
                    |v: &mut dyn Iterator<Item = f32>| v.map(f32::to_bits).collect::<Vec<_>>();
                assert_eq!(
                    bits(&mut s.vals.iter().copied()),
                    bits(&mut kept.iter().map(|&i| written[i as usize]))
                );
            }
        }
        let mut s = Scratch::default();
        let top = TopK::new(2, 1);
        assert!(
            !top.keep_of_log_softmax(&[1.0, 2.0, 3.0], 3.0, f32::NAN, &mut s),
            "a NaN row is declined"
        );
        assert!(
            !top.keep_of_log_softmax(&[1.0, 2.0], 2.0, 0.3, &mut s),
            "k >= vocab is declined"
        );
    }

    #[test]
    fn works_on_long_rows_and_on_candidates() {
        let mut row: Vec<f32> = (0..10_000).map(|i| ((i * 37) % 1000) as f32).collect();
        let mut s = Scratch::default();
        let h = crate::history::TokenHistory::new(&[0], 1);
        let ctx = StepContext::new(&h);
        TopK::new(25, 1).process_row(&ctx, 0, &mut row, &mut s);
        // values 999..=997 appear 10 times each: 3 distinct values cover k=25
        assert_eq!(s.cand.len(), 30);
        assert!(row.iter().all(|&x| x == NEG || x >= 997.0));
        TopK::new(5, 1).process_row(&ctx, 0, &mut row, &mut s);
        assert_eq!(s.cand.len(), 10);
        assert_eq!(row.iter().filter(|&&x| x == 999.0).count(), 10);
    }
}
