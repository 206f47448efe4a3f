//! Sampling warpers applied to beam-search log-probabilities (temperature, top-k, top-p),
//! in transformers' order, with `min_tokens_to_keep = 1 + n_eos` (at least 2).
// TODO(sampling): stand-in until the shared pipeline carries the warpers (issue 3);
// then beam sample builds them from `PipelineConfig` and this file goes away.

use super::settings::SampleSettings;

#[derive(Debug, Clone)]
pub struct Warpers {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_keep: usize,
}

impl Warpers {
    pub fn new(s: &SampleSettings, n_eos: usize) -> Self {
        Warpers { temperature: s.temperature, top_k: s.top_k, top_p: s.top_p, min_keep: (1 + n_eos).max(2) }
    }

    pub fn is_noop(&self) -> bool {
        self.temperature == 1.0 && self.top_k == 0 && self.top_p >= 1.0
    }

    pub fn apply(&self, data: &mut [f32], vocab: usize) {
        let mut scratch = Vec::new();
        for row in data.chunks_exact_mut(vocab) {
            if self.temperature != 1.0 {
                row.iter_mut().for_each(|x| *x /= self.temperature);
            }
            if self.top_k != 0 {
                self.top_k_row(row, &mut scratch);
            }
            if self.top_p < 1.0 {
                self.top_p_row(row, &mut scratch);
            }
        }
    }

    /// Keeps every value not below the k-th largest (ties kept), as `TopKLogitsWarper`.
    fn top_k_row(&self, row: &mut [f32], scratch: &mut Vec<f32>) {
        let k = self.top_k.max(self.min_keep).min(row.len());
        scratch.clear();
        scratch.extend_from_slice(row);
        let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let kth = *kth;
        row.iter_mut().filter(|x| **x < kth).for_each(|x| *x = f32::NEG_INFINITY);
    }

    /// Removes the low tail whose probability mass is at most `1 - top_p`, keeping at
    /// least `min_keep` tokens, as `TopPLogitsWarper` (cumulative sum in double).
    fn top_p_row(&self, row: &mut [f32], scratch: &mut Vec<f32>) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        scratch.clear();
        scratch.extend(order.iter().map(|&i| (row[i] - max).exp()));
        let sum: f32 = scratch.iter().sum();
        let threshold = (1.0 - f64::from(self.top_p)) as f32;
        let removable = row.len().saturating_sub(self.min_keep);
        let mut cum = 0.0f64;
        for (rank, &i) in order.iter().enumerate().take(removable) {
            cum += f64::from(scratch[rank] / sum);
            if cum as f32 > threshold {
                break;
            }
            row[i] = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(t: f32, k: usize, p: f32) -> Warpers {
        Warpers::new(&SampleSettings { temperature: t, top_k: k, top_p: p, seed: None }, 1)
    }

    #[test]
    fn temperature_top_k_top_p() {
        let mut d = vec![-1.0f32, -2.0, -3.0, -4.0];
        w(2.0, 0, 1.0).apply(&mut d, 4);
        assert_eq!(d, vec![-0.5, -1.0, -1.5, -2.0]);
        let mut d = vec![-1.0f32, -2.0, -2.0, -4.0];
        w(1.0, 2, 1.0).apply(&mut d, 4);
        assert_eq!(d, vec![-1.0, -2.0, -2.0, f32::NEG_INFINITY], "ties with the k-th are kept");
        let mut d = vec![-1.0f32, -9.0, -9.5, -9.9];
        w(1.0, 1, 1.0).apply(&mut d, 4);
        assert_eq!(d[1], -9.0, "min_tokens_to_keep = 2 wins over top_k = 1");
        let mut d = vec![(0.7f32).ln(), (0.2f32).ln(), (0.06f32).ln(), (0.04f32).ln()];
        w(1.0, 0, 0.8).apply(&mut d, 4);
        assert!(d[2].is_infinite() && d[3].is_infinite() && d[1].is_finite());
    }
}
