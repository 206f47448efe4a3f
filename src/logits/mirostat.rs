//! Mirostat v1 and v2 (Basu et al. 2021; llama.cpp's `mirostat` / `mirostat-v2`).

use std::sync::{Arc, Mutex};

use super::math::softmax_into;
use super::{RowProcessor, Scratch, StepContext};

/// Which mirostat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirostatMode {
    /// v1: top-k with `k` from the estimated Zipf exponent of the top `m = 100` tokens.
    V1,
    /// v2: keeps the tokens whose surprise `-log2 p` is at most `mu`.
    V2,
}

/// Per-row state: the target `mu` and what the last step kept, to learn the surprise of
/// the token the row then chose.
#[derive(Default)]
struct RowState {
    mu: Option<f32>,
    /// History length when the candidates were kept, and `(token, p)` of each.
    pending: Option<(usize, Vec<(u32, f32)>)>,
}

/// Truncates each row as llama.cpp's mirostat does before its draw; the draw itself is
/// the sampler's (the softmax of the kept logits is llama.cpp's renormalised
/// distribution). `mu` starts at `2 tau` and after each step moves by
/// `-eta (surprise - tau)`, surprise being `-log2 p` of the chosen token under the kept
/// distribution; the update happens when the row's next step starts (the chosen token
/// is then the history's last). Ties in the sorted order: lower token id first.
pub struct Mirostat {
    mode: MirostatMode,
    tau: f32,
    eta: f32,
    rows: Mutex<Vec<Arc<Mutex<RowState>>>>,
}

const M: usize = 100;

impl Mirostat {
    pub fn new(mode: MirostatMode, tau: f64, eta: f64) -> Self {
        Mirostat {
            mode,
            tau: tau as f32,
            eta: eta as f32,
            rows: Mutex::new(Vec::new()),
        }
    }

    fn row(&self, r: usize) -> Arc<Mutex<RowState>> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        if rows.len() <= r {
            rows.resize_with(r + 1, Default::default);
        }
        rows[r].clone()
    }

    /// How many of the `sorted` probabilities (descending) v1 keeps for `mu`.
    fn v1_k(&self, sorted: &[f32], mu: f32, vocab: usize) -> usize {
        let (mut sum_tb, mut sum_tt) = (0.0f32, 0.0f32);
        for i in 0..(M - 1).min(sorted.len() - 1) {
            let t = ((i + 2) as f32 / (i + 1) as f32).ln();
            let b = (sorted[i] / sorted[i + 1]).ln();
            sum_tb += t * b;
            sum_tt += t * t;
        }
        let s_hat = sum_tb / sum_tt;
        let eps = s_hat - 1.0;
        let k = ((eps * 2f32.powf(mu)) / (1.0 - (vocab as f32).powf(-eps))).powf(1.0 / s_hat);
        (k as usize).max(1) // NaN -> 0 -> 1; saturating for huge k
    }
}

impl RowProcessor for Mirostat {
    fn name(&self) -> &'static str {
        match self.mode {
            MirostatMode::V1 => "Mirostat",
            MirostatMode::V2 => "MirostatV2",
        }
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], s: &mut Scratch) {
        let state = self.row(r);
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let history = ctx.history.row(r);
        let mut mu = state.mu.unwrap_or(2.0 * self.tau);
        if let Some((len, kept)) = state.pending.take() {
            if history.len() == len + 1 {
                let chosen = history[len];
                if let Some(&(_, p)) = kept.iter().find(|(t, _)| *t as i64 == chosen) {
                    mu -= self.eta * (-p.log2() - self.tau);
                }
            }
        }
        state.mu = Some(mu);
        s.ensure_candidates(logits);
        if s.cand.is_empty() {
            return;
        }
        s.gather(logits);
        softmax_into(&s.vals, &mut s.probs);
        let probs = &s.probs;
        let order: Vec<u32> = match self.mode {
            MirostatMode::V1 => {
                // candidate positions by probability, descending (ties: lower id first)
                let mut order: Vec<u32> = (0..s.cand.len() as u32).collect();
                order.sort_by(|&a, &b| {
                    probs[b as usize]
                        .total_cmp(&probs[a as usize])
                        .then(a.cmp(&b))
                });
                let sorted: Vec<f32> = order.iter().map(|&j| probs[j as usize]).collect();
                let k = self.v1_k(&sorted, mu, logits.len()).min(order.len());
                order.truncate(k);
                order
            }
            // the sorted prefix with surprise <= mu is the set with surprise <= mu (no
            // sort needed); empty: the most probable token (first maximum)
            MirostatMode::V2 => {
                let kept: Vec<u32> = (0..probs.len() as u32)
                    .filter(|&j| -probs[j as usize].log2() <= mu)
                    .collect();
                if kept.is_empty() {
                    let best =
                        (0..probs.len()).fold(0, |b, j| if probs[j] > probs[b] { j } else { b });
                    vec![best as u32]
                } else {
                    kept
                }
            }
        };
        let keep = order.len();
        s.keep.clear();
        s.keep.resize(s.cand.len(), false);
        let kept_mass: f32 = order[..keep].iter().map(|&j| probs[j as usize]).sum();
        let mut kept = Vec::with_capacity(keep);
        for &j in &order[..keep] {
            s.keep[j as usize] = true;
            kept.push((s.cand[j as usize], probs[j as usize] / kept_mass));
        }
        state.pending = Some((history.len(), kept));
        s.apply_keep(logits);
    }

    fn reorder(&self, parents: &[usize]) {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::take(&mut *rows);
        *rows = parents
            .iter()
            .map(|&p| {
                let src = old
                    .get(p)
                    .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
                Arc::new(Mutex::new(RowState {
                    mu: src.as_ref().and_then(|s| s.mu),
                    pending: src.as_ref().and_then(|s| s.pending.clone()),
                }))
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::NEG;
    use super::*;
    use crate::history::TokenHistory;

    fn step(m: &Mirostat, h: &TokenHistory, row: &mut [f32]) {
        let ctx = StepContext::new(h);
        let mut s = Scratch::default();
        s.begin_row();
        m.process_row(&ctx, 0, row, &mut s);
    }

    #[test]
    fn v2_keeps_tokens_within_mu_and_learns_from_the_choice() {
        // p = (0.5, 0.25, 0.125, 0.125): surprises 1, 2, 3, 3 bits
        let base = [4.0f32.ln(), 2.0f32.ln(), 0.0, 0.0];
        let m = Mirostat::new(MirostatMode::V2, 1.25, 2.0); // mu = 2.5 bits
        let mut h = TokenHistory::new(&[0], 1);
        let mut r = base.to_vec();
        step(&m, &h, &mut r);
        assert_eq!(r, vec![base[0], base[1], NEG, NEG], "surprise <= 2.5 bits");
        // the row chose token 1: p = 0.25 / 0.75 = 1/3, surprise 1.585;
        // mu = 2.5 - 2 (1.585 - 1.25) = 1.83
        h.push(&[1]);
        let mut r = base.to_vec();
        step(&m, &h, &mut r);
        assert_eq!(
            r,
            vec![base[0], NEG, NEG, NEG],
            "mu 1.83 keeps only the 1-bit token"
        );
    }

    #[test]
    fn v1_hand_computed_k() {
        // Zipf p_i ∝ 1/i: s_hat = 1 exactly, eps = 0 -> k = 0/0 = NaN -> 1;
        // p_i ∝ 1/i^2: s_hat = 2, eps = 1, k = sqrt(2^mu / (1 - 1/V)).
        let m = Mirostat::new(MirostatMode::V1, 3.0, 0.1);
        let sorted: Vec<f32> = (1..=8).map(|i| 1.0 / (i * i) as f32).collect();
        // mu = 6: sqrt(64 / (1 - 1/8)) = 8.55 -> 8
        assert_eq!(m.v1_k(&sorted, 6.0, 8), 8);
        // mu = 4: sqrt(16 / 0.875) = 4.28 -> 4
        assert_eq!(m.v1_k(&sorted, 4.0, 8), 4);
    }

    #[test]
    fn state_is_per_row_and_follows_beam_reorder() {
        let m = Mirostat::new(MirostatMode::V2, 1.0, 1.0);
        *m.row(0).lock().unwrap() = RowState {
            mu: Some(7.0),
            pending: None,
        };
        *m.row(1).lock().unwrap() = RowState {
            mu: Some(3.0),
            pending: None,
        };
        m.reorder(&[1, 1]);
        assert_eq!(m.row(0).lock().unwrap().mu, Some(3.0));
        assert_eq!(m.row(1).lock().unwrap().mu, Some(3.0));
    }
}
