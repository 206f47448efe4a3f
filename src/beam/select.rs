//! Picking the best continuations of a batch item out of `beams × vocab` scores.

use rayon::prelude::*;

use super::fastmath::exp_f32;

/// Rows are processed in parallel above this many values.
const PARALLEL_MIN: usize = 1 << 16;

/// Log-softmax of every row in place, as `torch.log_softmax` computes it:
/// `(x - max) - ln(sum(exp(x - max)))`.
pub fn log_softmax_rows(data: &mut [f32], vocab: usize) {
    if data.len() >= PARALLEL_MIN {
        data.par_chunks_exact_mut(vocab).for_each(log_softmax_row);
    } else {
        data.chunks_exact_mut(vocab).for_each(log_softmax_row);
    }
}

fn log_softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = sum_exp(row, max);
    let log_sum = sum.ln() as f32;
    for x in row.iter_mut() {
        *x = (*x - max) - log_sum;
    }
}

/// `sum(exp(x - max))` in sixteen float32 lanes (the loop vectorises; torch's sum is lane-wise
/// too), the lanes added in double precision.
fn sum_exp(row: &[f32], max: f32) -> f64 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        let c: &[f32; 16] = c.try_into().expect("chunks of 16");
        for i in 0..16 {
            lanes[i] += exp_f32(c[i] - max);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(exp_f32(x - max))).sum();
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

/// Ranks by value, larger first, then by index, smaller first; NaN ranks last.
#[inline]
fn before(a: (f32, usize), b: (f32, usize)) -> bool {
    let (va, vb) = (nan_low(a.0), nan_low(b.0));
    va > vb || (va == vb && a.1 < b.1)
}

#[inline]
fn nan_low(v: f32) -> f32 {
    if v.is_nan() {
        f32::NEG_INFINITY
    } else {
        v
    }
}

/// A bounded, sorted buffer of the `k` best `(value, index)` pairs seen so far.
/// Ties keep the smaller index, so the result does not depend on scan order.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    items: Vec<(f32, usize)>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK { k, items: Vec::with_capacity(k + 1) }
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// The value an entry must beat to enter a full buffer.
    #[inline]
    pub fn threshold(&self) -> Option<f32> {
        (self.items.len() == self.k).then(|| nan_low(self.items[self.k - 1].0))
    }

    #[inline]
    pub fn push(&mut self, value: f32, index: usize) {
        if self.k == 0 {
            return;
        }
        if self.items.len() == self.k {
            if !before((value, index), self.items[self.k - 1]) {
                return;
            }
            self.items.pop();
        }
        let at = self.items.partition_point(|&it| before(it, (value, index)));
        self.items.insert(at, (value, index));
    }

    /// Best first.
    pub fn items(&self) -> &[(f32, usize)] {
        &self.items
    }
}

/// Fills `top` with the best `k` entries of `rows` (each `vocab` long) after adding
/// `offsets[r]` to row `r`: the flattened index is `r * vocab + token`.
pub fn top_k_into(top: &mut TopK, rows: &[f32], vocab: usize, offsets: &[f32]) {
    top.clear();
    for (r, (row, &off)) in rows.chunks_exact(vocab).zip(offsets).enumerate() {
        let base = r * vocab;
        for (t, &x) in row.iter().enumerate() {
            let v = x + off;
            if let Some(th) = top.threshold() {
                // cheap reject; equal values at a larger index never enter
                if v.partial_cmp(&th) != Some(std::cmp::Ordering::Greater) {
                    continue;
                }
            }
            top.push(v, base + t);
        }
    }
}

/// Samples `k` distinct entries without replacement with probabilities
/// `softmax(rows + offsets)` over the whole flattened item, by the exponential race
/// `torch.multinomial` uses: the `k` largest `p_i / q_i` with `q_i ~ Exp(1)`.
/// `noise(i)` gives `q_i`. Returns the pairs `(accumulated score, index)` sorted by score.
pub fn sample_k_into<F: FnMut(usize) -> f32>(
    top: &mut TopK,
    rows: &[f32],
    vocab: usize,
    offsets: &[f32],
    scratch: &mut Vec<f32>,
    mut noise: F,
) -> Vec<(f32, usize)> {
    scratch.clear();
    for (row, &off) in rows.chunks_exact(vocab).zip(offsets) {
        scratch.extend(row.iter().map(|&x| x + off));
    }
    let max = scratch.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv = (1.0 / sum_exp(scratch, max)) as f32;
    top.clear();
    for (i, &v) in scratch.iter().enumerate() {
        let p = exp_f32(v - max) * inv;
        // a zero-probability entry keys 0 whatever its noise (as p / q in torch); skip the draw
        let key = if p > 0.0 { p / noise(i) } else { 0.0 };
        if top.threshold().is_some_and(|th| key.partial_cmp(&th) != Some(std::cmp::Ordering::Greater)) {
            continue;
        }
        top.push(key, i);
    }
    let mut picked: Vec<(f32, usize)> = top.items().iter().map(|&(_, i)| (scratch[i], i)).collect();
    // by accumulated score, best first; the race order breaks ties
    picked.sort_by(|a, b| nan_low(b.0).partial_cmp(&nan_low(a.0)).unwrap_or(std::cmp::Ordering::Equal));
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn log_softmax_normalises() {
        let mut d = vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0];
        log_softmax_rows(&mut d, 3);
        let s: f32 = d[..3].iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!((d[3] + 3f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn top_k_breaks_ties_by_index() {
        let mut t = TopK::new(3);
        top_k_into(&mut t, &[1.0, 3.0, 3.0, 0.5, f32::NAN, 3.0], 3, &[0.0, 0.0]);
        assert_eq!(t.items(), &[(3.0, 1), (3.0, 2), (3.0, 5)]);
        top_k_into(&mut t, &[1.0, 2.0, 0.0, 5.0], 2, &[10.0, -10.0]);
        assert_eq!(t.items(), &[(12.0, 1), (11.0, 0), (-5.0, 3)]);
    }

    #[test]
    fn sampling_with_constant_noise_is_top_k() {
        let mut t = TopK::new(2);
        let mut scratch = Vec::new();
        let got = sample_k_into(&mut t, &[0.0, 2.0, 1.0, -1.0], 2, &[0.0, 0.5], &mut scratch, |_| 1.0);
        assert_eq!(got, vec![(2.0, 1), (1.5, 2)]);
    }

    #[test]
    fn seeded_race_samples_in_proportion() {
        // one draw (k = 1) from p = [.5, .3, .15, .05] with the counter noise, 20000 streams
        let p = [0.5f32, 0.3, 0.15, 0.05];
        let logp: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        let mut counts = [0usize; 4];
        let (mut t, mut scratch) = (TopK::new(1), Vec::new());
        for s in 0..20000u64 {
            let got = sample_k_into(&mut t, &logp, 4, &[0.0], &mut scratch, |i| crate::beam::exponential(42 + s, 0, i));
            counts[got[0].1] += 1;
        }
        for (c, q) in counts.iter().zip(p) {
            assert!((*c as f32 / 20000.0 - q).abs() < 0.012, "{counts:?}");
        }
        // sampling without replacement never repeats an entry, and a zero-probability one comes last
        let mut t = TopK::new(3);
        let got = sample_k_into(&mut t, &[0.0, f32::NEG_INFINITY, -1.0], 3, &[0.0], &mut scratch, |_| 1.0);
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), vec![0, 2, 1]);
    }

    proptest! {
        #[test]
        fn top_k_matches_full_sort(values in proptest::collection::vec(-5i32..5, 1..60), k in 1usize..8) {
            let vals: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            let mut t = TopK::new(k);
            top_k_into(&mut t, &vals, vals.len(), &[0.0]);
            let mut all: Vec<(f32, usize)> = vals.iter().copied().zip(0..).collect();
            all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
            all.truncate(k);
            prop_assert_eq!(t.items(), &all[..]);
        }
    }
}
