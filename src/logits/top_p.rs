//! `TopPLogitsWarper` (nucleus): keep the smallest set of most probable tokens whose
//! probability reaches `top_p`.

use super::math::{
    chunk_maxima, cmp_items, dense_boundary, exp, first_reaching, max, prelude_max,
    scaled_exp_into, softmax_into, sum_exp, Item, MAX_CHUNK,
};
use super::{RowProcessor, Scratch, StepContext};

/// transformers' rule, to the float: sort ascending, accumulate the softmax, and remove
/// the tokens whose cumulative probability is `<= 1 - top_p` (a float32 comparison),
/// except the `min_tokens_to_keep` largest. Ties are ordered as a *stable* ascending
/// sort orders them (lower token id first, so removed first); torch's unstable sort
/// does the same for rows of up to 16 tokens and is arbitrary beyond.
///
/// Instead of sorting the vocabulary, the cut is found by bucketing the candidates by
/// score and refining only the bucket where the cumulative probability crosses the
/// threshold ([`first_reaching`]); after a top-k only its survivors are looked at.
/// `top_p = 1.0` is never built (no-op), as in transformers.
pub struct TopP {
    threshold: f32,
    min_keep: usize,
    sanitize: bool,
    temperature: Option<f32>,
}

impl TopP {
    pub fn new(top_p: f64, min_tokens_to_keep: usize) -> Self {
        TopP {
            threshold: (1.0 - top_p) as f32,
            min_keep: min_tokens_to_keep.max(1),
            sanitize: false,
            temperature: None,
        }
    }

    /// Top-p that first maps NaN to -inf (`sanitize`) and divides by `temperature` in
    /// the same pass (the warpers before it when there is no top-k / top-h).
    pub fn with_prelude(
        top_p: f64,
        min_tokens_to_keep: usize,
        sanitize: bool,
        temperature: Option<f64>,
    ) -> Self {
        TopP {
            sanitize,
            temperature: temperature.map(|t| t as f32),
            ..Self::new(top_p, min_tokens_to_keep)
        }
    }
}

impl RowProcessor for TopP {
    fn name(&self) -> &'static str {
        "TopPLogitsWarper"
    }

    fn names(&self) -> Vec<&'static str> {
        super::prelude_names(self.sanitize, self.temperature, self.name())
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        let t = self.temperature.unwrap_or(1.0);
        if s.sparse {
            if self.sanitize || self.temperature.is_some() {
                for &i in &s.cand {
                    logits[i as usize] /= t;
                }
            }
        } else {
            let m = if self.sanitize || self.temperature.is_some() {
                prelude_max(logits, t, self.sanitize)
            } else {
                max(logits)
            };
            if self.min_keep == 1 && logits.len() >= DENSE_MIN && self.dense(logits, m, s) {
                return;
            }
        }
        s.ensure_candidates(logits);
        let n = s.cand.len();
        if n <= self.min_keep {
            return;
        }
        s.gather(logits);
        softmax_into(&s.vals, &mut s.probs);
        s.items.clear();
        // Items carry their slot in `cand` (ascending token id, so the tie order holds).
        s.items.extend(
            s.vals
                .iter()
                .zip(&s.probs)
                .enumerate()
                .map(|(j, (&key, &w))| Item {
                    key,
                    idx: j as u32,
                    w,
                }),
        );
        let thr = self.threshold;
        let q = first_reaching(&mut s.items, 0.0, &|cum| (cum as f32) > thr, &mut s.tmp);
        let removed = q.min(n - self.min_keep);
        if removed == 0 {
            return;
        }
        if removed < q {
            s.items[..q].select_nth_unstable_by(removed - 1, cmp_items);
        }
        for it in &s.items[..removed] {
            logits[s.cand[it.idx as usize] as usize] = f32::NEG_INFINITY;
        }
        s.cand.retain(|&i| logits[i as usize] > f32::NEG_INFINITY);
    }
}

/// Rows at least this long that no earlier warper cut down take the dense path.
pub(super) const DENSE_MIN: usize = 2048;

impl TopP {
    /// The whole row without a candidate list (NaN counts as -inf); false when the row
    /// holds +inf (the general path handles it).
    ///
    /// Tokens whose probability is below `(1 - top_p) / (4 V)` are removed whatever
    /// happens (all of them together stay under the threshold), so only the tokens
    /// above the matching score are collected and searched for the cut
    /// ([`first_reaching`], starting from the mass below them): for a peaked row that
    /// is a handful of tokens. When the bound does not hold by rounding, the weighted
    /// histogram search over the whole row ([`dense_boundary`]) decides. The cut is
    /// written by comparing every score with the boundary token's; the survivors become
    /// the row's candidates. `m` is the row's maximum.
    fn dense(&self, logits: &mut [f32], m: f32, s: &mut Scratch) -> bool {
        if !m.is_finite() {
            return m == f32::NEG_INFINITY;
        }
        let total = sum_exp(logits, m);
        let inv = (1.0 / total) as f32;
        let thr = self.threshold;
        let reached = |cum: f64| (cum as f32) > thr;
        let floor = m + ((thr as f64 / (4.0 * logits.len() as f64)) * total).ln() as f32;
        chunk_maxima(logits, &mut s.floats);
        s.items.clear();
        let mut above = 0.0f64;
        for (c, (chunk, &cm)) in logits.chunks(MAX_CHUNK).zip(&s.floats).enumerate() {
            if cm < floor {
                continue;
            }
            for (j, &x) in chunk.iter().enumerate() {
                if x >= floor {
                    let e = exp(x - m);
                    above += e as f64;
                    s.items.push(Item {
                        key: x,
                        idx: (c * MAX_CHUNK + j) as u32,
                        w: e * inv,
                    });
                }
            }
        }
        let base = (total - above).max(0.0) * inv as f64;
        let boundary = if !reached(base) {
            let q = first_reaching(&mut s.items, base, &reached, &mut s.tmp);
            s.items.get(q).copied()
        } else {
            scaled_exp_into(logits, m, inv, &mut s.probs);
            dense_boundary(logits, &s.probs, &reached, &mut s.items, &mut s.tmp)
        };
        let Some(b) = boundary else { return true };
        // Write the cut chunk by chunk (chunks entirely below the boundary are only
        // written) and keep the survivors as the row's candidates.
        s.cand.clear();
        for (c, (chunk, &cm)) in logits.chunks_mut(MAX_CHUNK).zip(&s.floats).enumerate() {
            if cm < b.key || cm.is_nan() {
                chunk.fill(f32::NEG_INFINITY);
                continue;
            }
            for (j, x) in chunk.iter_mut().enumerate() {
                let i = (c * MAX_CHUNK + j) as u32;
                let keep = *x > b.key || (*x == b.key && i >= b.idx);
                if keep {
                    s.cand.push(i);
                } else {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        s.sparse = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn keeps_the_nucleus() {
        // probabilities ~ [0.090, 0.245, 0.665]
        let mut row = vec![0.0, 1.0, 2.0];
        run1(&TopP::new(0.6, 1), &mut row);
        assert_eq!(row, vec![NEG, NEG, 2.0]);
        let mut row = vec![0.0, 1.0, 2.0];
        run1(&TopP::new(0.7, 1), &mut row);
        assert_eq!(row, vec![NEG, 1.0, 2.0]);
    }

    #[test]
    fn ties_remove_lower_ids_first_and_min_tokens_to_keep_holds() {
        let mut row = vec![0.0; 4]; // each 0.25; cum 0.25 0.5 0.75 1.0 vs 1 - 0.5
        run1(&TopP::new(0.5, 1), &mut row);
        assert_eq!(row, vec![NEG, NEG, 0.0, 0.0]);
        let mut row = vec![0.0, 10.0, 0.0, 0.0];
        run1(&TopP::new(0.1, 3), &mut row);
        assert_eq!(row, vec![NEG, 10.0, 0.0, 0.0]);
    }

    #[test]
    fn single_survivor_and_all_neg_inf_rows_are_left_alone() {
        let mut row = vec![NEG, 1.0, NEG];
        run1(&TopP::new(0.5, 1), &mut row);
        assert_eq!(row, vec![NEG, 1.0, NEG]);
        let mut row = vec![NEG, NEG];
        run1(&TopP::new(0.5, 1), &mut row);
        assert_eq!(row, vec![NEG, NEG]);
    }

    #[test]
    fn long_rows_match_the_sorting_definition() {
        let v = 5000; // dense path (ties included: values repeat)
        let flat: Vec<f32> = (0..v).map(|i| ((i * 7919) % 997) as f32 / 97.0).collect();
        let peaked: Vec<f32> = flat.iter().map(|x| x * 6.0).collect();
        for row in [flat, peaked] {
            for p in [0.05, 0.3, 0.9, 0.999] {
                let mut got = row.clone();
                run1(&TopP::new(p, 1), &mut got);
                // reference: full stable sort ascending, f64 cumsum of f32 probabilities
                let mut probs = Vec::new();
                softmax_into(&row, &mut probs);
                let mut order: Vec<usize> = (0..v).collect();
                order.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
                let mut cum = 0.0f64;
                let mut want = row.clone();
                for (pos, &i) in order.iter().enumerate() {
                    cum += probs[i] as f64;
                    if (cum as f32) <= (1.0 - p) as f32 && pos < v - 1 {
                        want[i] = NEG;
                    }
                }
                assert_eq!(got, want, "top_p={p}");
                // the candidate path (forced by an earlier cut to all tokens) agrees
                let mut sparse = row.clone();
                let mut s = Scratch::default();
                s.ensure_candidates(&mut sparse);
                let h = crate::history::TokenHistory::new(&[0], 1);
                TopP::new(p, 1).process_row(&StepContext::new(&h), 0, &mut sparse, &mut s);
                assert_eq!(sparse, want, "top_p={p} (candidates)");
            }
        }
    }
}
