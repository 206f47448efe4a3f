//! `TypicalLogitsWarper` (locally typical sampling, Meister et al. 2022).

use super::math::{
    cmp_items, dense_boundary, exp, first_reaching, max, neg_entropy, scaled_exp_into,
    softmax_into, sum_exp, Item,
};
use super::top_p::DENSE_MIN;
use super::{RowProcessor, Scratch, StepContext};

/// Orders tokens by `|-log p - H|` (distance of their surprisal from the entropy `H`),
/// accumulates their probabilities in that order and keeps every token whose distance
/// is at most that of the token where the cumulative probability first reaches
/// `typical_p` (so ties with it are kept), plus the first `min_tokens_to_keep`.
/// Float32 arithmetic as transformers' code; the order is found by bucketing, not a
/// full sort. Ties in distance are ordered by token id (stable sort).
pub struct Typical {
    mass: f32,
    min_keep: usize,
}

impl Typical {
    pub fn new(typical_p: f64, min_tokens_to_keep: usize) -> Self {
        Typical {
            mass: typical_p as f32,
            min_keep: min_tokens_to_keep.max(1),
        }
    }
}

impl RowProcessor for Typical {
    fn name(&self) -> &'static str {
        "TypicalLogitsWarper"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        if !s.sparse && self.min_keep == 1 && logits.len() >= DENSE_MIN && self.dense(logits, s) {
            return;
        }
        s.ensure_candidates(logits);
        let n = s.cand.len();
        if n <= self.min_keep {
            return;
        }
        s.gather(logits);
        softmax_into(&s.vals, &mut s.probs);
        let m = max(&s.vals);
        s.items.clear();
        if m == f32::INFINITY {
            // Limit of the softmax: the +inf tokens share the mass, distance 0.
            for (j, (&v, &w)) in s.vals.iter().zip(&s.probs).enumerate() {
                let key = if v == f32::INFINITY {
                    0.0
                } else {
                    f32::INFINITY
                };
                s.items.push(Item {
                    key,
                    idx: j as u32,
                    w,
                });
            }
        } else {
            let ln_s = (super::math::sum_exp(&s.vals, m)).ln() as f32;
            // log_softmax, its exp, and the entropy, as torch computes them.
            let mut ent = 0.0f64;
            s.floats.clear();
            for &v in &s.vals {
                let normalized = (v - m) - ln_s;
                s.floats.push(normalized);
                ent -= (normalized * exp(normalized)) as f64;
            }
            let ent = ent as f32;
            // Items carry their slot in `cand` (ascending token id, so the tie order holds).
            for (j, (&normalized, &w)) in s.floats.iter().zip(&s.probs).enumerate() {
                s.items.push(Item {
                    key: ((-normalized) - ent).abs(),
                    idx: j as u32,
                    w,
                });
            }
        }
        let mass = self.mass;
        let q = first_reaching(&mut s.items, 0.0, &|cum| (cum as f32) >= mass, &mut s.tmp);
        if q >= n {
            return;
        }
        let bound = s.items[q].key;
        s.keep.clear();
        s.keep.resize(n, true);
        let mut any_removed = false;
        for it in &s.items {
            if it.key > bound {
                s.keep[it.idx as usize] = false;
                any_removed = true;
            }
        }
        if !any_removed {
            return;
        }
        if self.min_keep > q + 1 {
            // protect the first min_keep in (distance, id) order
            let k = self.min_keep.min(n);
            s.items.select_nth_unstable_by(k - 1, cmp_items);
            for it in &s.items[..k] {
                s.keep[it.idx as usize] = true;
            }
        }
        s.apply_keep(logits);
    }
}

impl Typical {
    /// The whole row without a candidate list (see `TopP::dense`): every token whose
    /// distance exceeds the boundary's is removed. False when the row holds +inf.
    fn dense(&self, logits: &mut [f32], s: &mut Scratch) -> bool {
        let m = max(logits);
        if !m.is_finite() {
            return m == f32::NEG_INFINITY;
        }
        let total = sum_exp(logits, m);
        let ln_s = total.ln() as f32;
        let inv = (1.0 / total) as f32;
        // entropy of log_softmax: -sum(p * (x - m - ln_s))
        let ent = -(neg_entropy(logits, m, inv, m + ln_s) as f32);
        scaled_exp_into(logits, m, inv, &mut s.probs);
        s.floats.clear();
        s.floats
            .extend(logits.iter().map(|&x| ((-((x - m) - ln_s)) - ent).abs()));
        let mass = self.mass;
        let boundary = dense_boundary(
            &s.floats,
            &s.probs,
            &|cum| (cum as f32) >= mass,
            &mut s.items,
            &mut s.tmp,
        );
        if let Some(b) = boundary {
            for (x, &k) in logits.iter_mut().zip(&s.floats) {
                *x = if k <= b.key { *x } else { f32::NEG_INFINITY };
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    fn reference(row: &[f32], mass: f32, min_keep: usize) -> Vec<f32> {
        // direct transcription of transformers' algorithm in f64
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let s: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
        let norm: Vec<f64> = row.iter().map(|&x| x as f64 - m - s.ln()).collect();
        let ent: f64 = -norm
            .iter()
            .map(|&l| l * l.exp())
            .filter(|v| !v.is_nan())
            .sum::<f64>();
        let shifted: Vec<f64> = norm.iter().map(|&l| (-l - ent).abs()).collect();
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| shifted[a].total_cmp(&shifted[b]));
        let mut cum = 0.0;
        let mut last = row.len() - 1;
        for (pos, &i) in order.iter().enumerate() {
            cum += norm[i].exp();
            if cum >= mass as f64 {
                last = pos;
                break;
            }
        }
        let bound = shifted[order[last]];
        let mut out = row.to_vec();
        for (pos, &i) in order.iter().enumerate() {
            if shifted[i] > bound && pos >= min_keep {
                out[i] = NEG;
            }
        }
        out
    }

    #[test]
    fn matches_the_definition() {
        let row: Vec<f32> = (0..600).map(|i| ((i * 7919) % 613) as f32 / 61.0).collect();
        for mass in [0.2f32, 0.5, 0.9, 0.99] {
            for keep in [1, 3, 300] {
                let mut got = row.clone();
                run1(&Typical::new(mass as f64, keep), &mut got);
                assert_eq!(got, reference(&row, mass, keep), "mass={mass} keep={keep}");
            }
        }
    }

    #[test]
    fn dense_rows_match_the_definition() {
        let row: Vec<f32> = (0..6000)
            .map(|i| ((i * 7919) % 6007) as f32 / 601.0)
            .collect();
        for mass in [0.2f32, 0.9] {
            let mut got = row.clone();
            run1(&Typical::new(mass as f64, 1), &mut got);
            let want = reference(&row, mass, 1);
            let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert!(
                differ <= 2,
                "mass={mass}: {differ} tokens differ (only boundary rounding may)"
            );
        }
    }

    #[test]
    fn small_rows() {
        let mut row = vec![1.0, 2.0, 3.0, 4.0];
        run1(&Typical::new(0.5, 1), &mut row);
        assert_eq!(row, reference(&[1.0, 2.0, 3.0, 4.0], 0.5, 1));
        let mut row = vec![NEG, 2.0, NEG];
        run1(&Typical::new(0.5, 1), &mut row);
        assert_eq!(row, vec![NEG, 2.0, NEG]);
    }
}
