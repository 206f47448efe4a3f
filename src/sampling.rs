//! Choosing a token from a processed logits row: argmax, and the multinomial draw
//! with the counter-based generator of [`crate::rng`].

use crate::logits::math::{exp, max};

/// Index of the largest value; the first one wins ties (as `torch.argmax`).
/// NaN entries are skipped; `None` when no entry is finite or +inf.
///
/// Two vectorised passes instead of one branchy one: the maximum (NaN ignored), then the
/// first 16-value block holding an entry equal to it (`-0.0 == 0.0`, as `<=` treats them).
pub fn argmax(row: &[f32]) -> Option<usize> {
    let m = max(row);
    if !(m > f32::NEG_INFINITY) {
        return None;
    }
    let mut blocks = row.chunks_exact(16);
    for (b, block) in (&mut blocks).enumerate() {
        let block: &[f32; 16] = block.try_into().expect("blocks of 16");
        if block.iter().fold(false, |hit, &v| hit | (v == m)) {
            return block.iter().position(|&v| v == m).map(|j| b * 16 + j);
        }
    }
    let rest = blocks.remainder();
    rest.iter()
        .position(|&v| v == m)
        .map(|j| row.len() - rest.len() + j)
}

/// The one-pass scan that [`argmax`] replaces (the reference of its property test).
#[cfg(test)]
fn argmax_scan(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() || v == f32::NEG_INFINITY {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

/// Draws a token from `softmax(row)` by inverse CDF with `u` uniform in `[0, 1)`.
///
/// Only `candidates` are looked at when given (the caller guarantees every other entry
/// is -inf). NaN and -inf have probability 0; when some entries are +inf they share
/// all the mass. Weights are `exp(x - max)` summed in f64, and a token of weight 0 is
/// never returned. `None` when no entry is above -inf (nothing can be drawn).
pub fn draw(row: &[f32], candidates: Option<&[u32]>, u: f64) -> Option<usize> {
    match candidates {
        Some(c) => draw_from(c.len(), |j| c[j] as usize, row, u),
        None => draw_dense(row, u),
    }
}

fn draw_from(n: usize, index: impl Fn(usize) -> usize, row: &[f32], u: f64) -> Option<usize> {
    let mut m = f32::NEG_INFINITY;
    for j in 0..n {
        let x = row[index(j)];
        if x > m {
            m = x;
        }
    }
    if m == f32::NEG_INFINITY {
        return None;
    }
    if m == f32::INFINITY {
        let infs: Vec<usize> = (0..n)
            .map(&index)
            .filter(|&i| row[i] == f32::INFINITY)
            .collect();
        return Some(infs[((u * infs.len() as f64) as usize).min(infs.len() - 1)]);
    }
    let total: f64 = (0..n).map(|j| exp(row[index(j)] - m) as f64).sum();
    let target = u * total;
    let mut cum = 0.0f64;
    let mut last = None;
    for j in 0..n {
        let w = exp(row[index(j)] - m) as f64;
        if w > 0.0 {
            cum += w;
            last = Some(index(j));
            if cum > target {
                return last;
            }
        }
    }
    last
}

fn draw_dense(row: &[f32], u: f64) -> Option<usize> {
    let m = max(row);
    if m == f32::NEG_INFINITY {
        return None;
    }
    if m == f32::INFINITY {
        return draw_from(row.len(), |i| i, row, u);
    }
    // Per-block sums (vectorised exp) locate the block; only that block is rescanned.
    const BLOCK: usize = 1024;
    let mut sums = Vec::with_capacity(row.len() / BLOCK + 1);
    let mut total = 0.0f64;
    for block in row.chunks(BLOCK) {
        let s = crate::logits::math::sum_exp(block, m);
        sums.push(s);
        total += s;
    }
    let target = u * total;
    let mut cum = 0.0f64;
    let mut last = None;
    for (b, block) in row.chunks(BLOCK).enumerate() {
        if sums[b] == 0.0 {
            continue;
        }
        if cum + sums[b] <= target && b + 1 < sums.len() {
            cum += sums[b];
            continue;
        }
        for (j, &x) in block.iter().enumerate() {
            let w = exp(x - m) as f64;
            if w > 0.0 {
                cum += w;
                last = Some(b * BLOCK + j);
                if cum > target {
                    return last;
                }
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn argmax_is_the_scan(values in proptest::collection::vec(
            prop_oneof![-4i32..4, Just(100), Just(101), Just(102), Just(103)], 0..120,
        )) {
            let special = [f32::NAN, f32::NEG_INFINITY, -0.0, f32::INFINITY];
            let row: Vec<f32> = values.iter().map(|&v| if v >= 100 { special[(v - 100) as usize] } else { v as f32 }).collect();
            prop_assert_eq!(argmax(&row), argmax_scan(&row));
        }
    }

    #[test]
    fn first_max_wins_and_nan_is_skipped() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, 0.5, f32::NAN]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::INFINITY]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN]), None);
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn draw_edges() {
        let neg = f32::NEG_INFINITY;
        assert_eq!(draw(&[neg, f32::NAN], None, 0.5), None);
        assert_eq!(draw(&[], None, 0.5), None);
        assert_eq!(draw(&[neg, 1.0, neg], None, 0.999_999), Some(1));
        assert_eq!(
            draw(&[1.0, f32::INFINITY, 5.0, f32::INFINITY], None, 0.2),
            Some(1)
        );
        assert_eq!(
            draw(&[1.0, f32::INFINITY, 5.0, f32::INFINITY], None, 0.7),
            Some(3)
        );
        assert_eq!(draw(&[f32::NAN, 0.0, 0.0], None, 0.0), Some(1));
        assert_eq!(draw(&[0.0, 0.0, 7.0], Some(&[0, 1]), 0.9), Some(1));
        // a weight that underflows to 0 is never drawn, even at u close to 1
        assert_eq!(draw(&[0.0, -200.0], None, 0.999_999_999), Some(0));
    }

    /// Pearson's chi-square of draws against the softmax, sparse (30k draws) and dense
    /// (8k draws, a row of several blocks). Critical value: chi-square with 7 degrees of freedom at
    /// p = 1e-6 is 35.3; the draws are deterministic (fixed key), so this cannot flake.
    #[test]
    fn draws_follow_the_softmax() {
        let mut row = vec![f32::NEG_INFINITY; 2100];
        let hot = [3usize, 1000, 1023, 1024, 2047, 2048, 2050, 2099];
        let logits = [0.0f32, 1.0, -1.0, 0.5, 2.0, -0.5, 1.5, 0.2];
        for (&i, &l) in hot.iter().zip(&logits) {
            row[i] = l;
        }
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let mut cand = hot.map(|i| i as u32).to_vec();
        cand.sort_unstable();
        for sparse in [false, true] {
            let n = if sparse { 30_000u64 } else { 8_000 };
            let mut counts = [0u64; 8];
            for step in 0..n {
                let u = crate::rng::uniform(7, step);
                let t = draw(&row, sparse.then_some(cand.as_slice()), u).unwrap();
                counts[hot.iter().position(|&h| h == t).unwrap()] += 1;
            }
            let chi2: f64 = counts
                .iter()
                .zip(&logits)
                .map(|(&c, &l)| {
                    let e = n as f64 * (l as f64).exp() / z;
                    (c as f64 - e).powi(2) / e
                })
                .sum();
            assert!(chi2 < 35.3, "chi2 = {chi2}, counts {counts:?}");
        }
    }
}
