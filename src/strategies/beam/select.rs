//! Picking the best continuations of a batch item out of `beams × vocab` scores.

use rayon::prelude::*;

use super::fastmath::exp_f32;
use super::torch_order;
use crate::logits::math::multiversion;

/// Log-softmax of every row in place, as `torch.log_softmax` computes it:
/// `(x - max) - ln(sum(exp(x - max)))`. A row holding `+inf` gets the softmax's limit
/// (torch gives NaN everywhere): its `k` entries at `+inf` share the probability,
/// `ln(1 / k)` each, and every other entry is -inf, as sampling and
/// [`crate::logits::math::softmax_into`] define it.
pub fn log_softmax_rows(data: &mut [f32], vocab: usize) {
    if crate::parallel::worth_parallel(data.len() / vocab.max(1), data.len()) {
        data.par_chunks_exact_mut(vocab).for_each(log_softmax_row);
    } else {
        data.chunks_exact_mut(vocab).for_each(log_softmax_row);
    }
}

multiversion! {
/// One row's log-softmax in place, in the CPU's widest registers.
fn log_softmax_row(row: &mut [f32]) -> () {
    log_softmax_row_lanes(row)
}
}

#[inline(always)]
fn log_softmax_row_lanes(row: &mut [f32]) {
    let (max, log_sum) = shift_lanes(row);
    if max == f32::INFINITY {
        return certain_tokens(row);
    }
    for x in row.iter_mut() {
        *x = (*x - max) - log_sum;
    }
}

/// The log-softmax of a row holding `+inf`: `ln(1 / k)` at its `k` entries at `+inf`, -inf
/// elsewhere.
#[cold]
fn certain_tokens(row: &mut [f32]) {
    let k = row.iter().filter(|&&x| x == f32::INFINITY).count();
    let share = (1.0 / k as f64).ln() as f32;
    for x in row.iter_mut() {
        *x = if *x == f32::INFINITY {
            share
        } else {
            f32::NEG_INFINITY
        };
    }
}

/// Whether a row's log-softmax shift (from [`log_softmax_shifts`]) cannot be applied by
/// subtraction: the row holds `+inf` (see [`log_softmax_rows`]).
pub(crate) fn shift_is_certain(shift: (f32, f32)) -> bool {
    shift.0 == f32::INFINITY
}

/// `(max, ln(sum(exp(x - max))))` of a row: its log-softmax is `(x - max) - log_sum`.
#[inline(always)]
fn shift_lanes(row: &[f32]) -> (f32, f32) {
    let max = row_max(row);
    (max, sum_exp_lanes(row, max).ln() as f32)
}

multiversion! {
/// [`shift_lanes`] in the CPU's widest registers, as [`log_softmax_row`]: the same bits.
pub(crate) fn log_softmax_shift(row: &[f32]) -> (f32, f32) {
    shift_lanes(row)
}
}

/// `row.iter().fold(-inf, f32::max)`, NaN ignored, in sixteen lanes (the fold is a chain of
/// dependent operations that does not vectorise). The maximum of non-NaN values does not
/// depend on the order, except for the sign of a zero: a zero maximum is recomputed by the fold.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let max = chunk_max(row);
    if max == 0.0 {
        row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    } else {
        max
    }
}

multiversion! {
/// `sum(exp(x - max))` in sixteen float32 lanes (the loop vectorises; torch's sum is lane-wise
/// too), the lanes added in double precision, in the CPU's widest registers: the same
/// bits on every CPU.
fn sum_exp(row: &[f32], max: f32) -> f64 {
    sum_exp_lanes(row, max)
}
}

#[inline(always)]
fn sum_exp_lanes(row: &[f32], max: f32) -> f64 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        let c: &[f32; 16] = c.try_into().expect("chunks of 16");
        for i in 0..16 {
            lanes[i] += exp_f32(c[i] - max);
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| f64::from(exp_f32(x - max)))
        .sum();
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
        TopK {
            k,
            // Grows past this only with entries actually seen (k comes from the caller).
            items: Vec::with_capacity(k.saturating_add(1).min(1024)),
        }
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// The value an entry must beat to enter a full buffer.
    #[inline]
    pub fn threshold(&self) -> Option<f32> {
        (self.k > 0 && self.items.len() == self.k).then(|| nan_low(self.items[self.k - 1].0))
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

/// `Err(NoValidToken { row })` when no picked continuation has a score above -inf (every
/// score of the item NaN or -inf, e.g. a model that returned NaN logits): beam search
/// has nothing to rank, as greedy has nothing to pick.
pub(crate) fn check_picked(picked: &[(f32, usize)], row: usize) -> crate::error::Result<()> {
    if picked.iter().any(|&(s, _)| s > f32::NEG_INFINITY) {
        Ok(())
    } else {
        Err(crate::error::CoreError::NoValidToken { row })
    }
}

/// Fills `top` with the best `k` entries of `rows` (each `vocab` long) after adding
/// `offsets[r]` to row `r`: the flattened index is `r * vocab + token`.
pub fn top_k_into(top: &mut TopK, rows: &[f32], vocab: usize, offsets: &[f32]) {
    top.clear();
    for (r, (row, &off)) in rows.chunks_exact(vocab).zip(offsets).enumerate() {
        scan_top_k(top, row, r * vocab, |x| x + off, |_, x| x + off);
    }
}

/// Every row's `(max, log_sum)`: its log-softmax is `(x - max) - log_sum`, the bits
/// [`log_softmax_rows`] writes. Reads the rows, writes nothing.
pub fn log_softmax_shifts(data: &[f32], vocab: usize, out: &mut Vec<(f32, f32)>) {
    out.clear();
    if crate::parallel::worth_parallel(data.len() / vocab.max(1), data.len()) {
        data.par_chunks_exact(vocab)
            .map(log_softmax_shift)
            .collect_into_vec(out);
    } else {
        out.extend(data.chunks_exact(vocab).map(log_softmax_shift));
    }
}

/// [`top_k_into`] over the log-softmax of every row without writing it, given the rows'
/// [`log_softmax_shifts`]: the same entries and bits as [`log_softmax_rows`] then
/// [`top_k_into`]. Only the chunks that can enter are turned into log-probabilities, so
/// with the shifts each row is read twice and never written, where the two calls read
/// it three times and write it once.
///
/// `minus` (sorted by token, amounts >= 0) is subtracted from those tokens'
/// log-probabilities in every row first, as group beam search's Hamming penalty does
/// (`row[t] -= amount` after the log-softmax, the same bits).
pub fn top_k_log_softmax_into(
    top: &mut TopK,
    rows: &[f32],
    vocab: usize,
    offsets: &[f32],
    shifts: &[(f32, f32)],
    minus: &[(u32, f32)],
) {
    top.clear();
    for (r, ((row, &off), &(max, log_sum))) in rows
        .chunks_exact(vocab)
        .zip(offsets)
        .zip(shifts)
        .enumerate()
    {
        let logp = |x: f32| (x - max) - log_sum;
        if minus.is_empty() {
            scan_top_k(top, row, r * vocab, |x| logp(x) + off, |_, x| logp(x) + off);
        } else {
            let less = |i: usize, lp: f32| match minus.binary_search_by_key(&(i as u32), |m| m.0) {
                Ok(j) => lp - minus[j].1,
                Err(_) => lp,
            };
            scan_top_k(
                top,
                row,
                r * vocab,
                |x| logp(x) + off,
                |i, x| less(i, logp(x)) + off,
            );
        }
    }
}

/// Offers `score(i, x)` of every entry `x` of `row` (index `i`, flat index `base + i`)
/// to `top`. `bound` must be monotone (never decreasing, as float subtraction and
/// addition are) and `bound(x) >= score(i, x)`: the bound of a chunk's maximum then
/// bounds every score of the chunk.
#[inline(always)]
fn scan_top_k(
    top: &mut TopK,
    row: &[f32],
    base: usize,
    bound: impl Fn(f32) -> f32,
    score: impl Fn(usize, f32) -> f32,
) {
    for (c, chunk) in row.chunks(SKIP_CHUNK).enumerate() {
        // Once the buffer is full almost no chunk holds a candidate: one vectorised max decides.
        if top
            .threshold()
            .is_some_and(|th| !(bound(chunk_max(chunk)) > th))
        {
            continue;
        }
        let first = c * SKIP_CHUNK;
        for (j, &x) in chunk.iter().enumerate() {
            let v = score(first + j, x);
            // cheap reject; equal values at a larger index never enter
            if top.threshold().is_some_and(|th| !(v > th)) {
                continue;
            }
            top.push(v, base + first + j);
        }
    }
}

const SKIP_CHUNK: usize = 64;

/// The largest non-NaN value of `chunk` (`-inf` when there is none), in sixteen lanes.
#[inline(always)]
fn chunk_max(chunk: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut blocks = chunk.chunks_exact(16);
    for b in &mut blocks {
        for i in 0..16 {
            lanes[i] = if b[i] > lanes[i] { b[i] } else { lanes[i] };
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    lanes.iter().fold(tail, |m, &x| if x > m { x } else { m })
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
        if top
            .threshold()
            .is_some_and(|th| key.partial_cmp(&th) != Some(std::cmp::Ordering::Greater))
        {
            continue;
        }
        top.push(key, i);
    }
    let picked: Vec<(f32, usize)> = top.items().iter().map(|&(_, i)| (scratch[i], i)).collect();
    by_score(picked)
}

/// The race's winners (in race order) sorted by accumulated score, best first, as
/// transformers sorts `torch.multinomial`'s draws: torch's order among equal scores.
fn by_score(picked: Vec<(f32, usize)>) -> Vec<(f32, usize)> {
    let keys: Vec<f32> = picked.iter().map(|p| nan_low(p.0)).collect();
    torch_order::sort_descending(&keys)
        .into_iter()
        .map(|i| picked[i])
        .collect()
}

/// The entries of one row that are not -inf after the warpers: indices in increasing
/// order and their processed values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowCandidates {
    pub index: Vec<u32>,
    pub value: Vec<f32>,
}

impl RowCandidates {
    /// `index` (any order) with the values `row` holds there.
    pub fn gather(mut index: Vec<u32>, row: &[f32]) -> Self {
        index.sort_unstable();
        let value = index.iter().map(|&i| row[i as usize]).collect();
        RowCandidates { index, value }
    }

    fn value_of(&self, i: usize) -> f32 {
        self.index
            .binary_search(&(i as u32))
            .map_or(f32::NEG_INFINITY, |j| self.value[j])
    }
}

/// [`sample_k_into`] when every row is sparse: `cands[r]` lists the only entries of row
/// `r` (of `vocab`) that are not -inf (what a top-k or top-p warper leaves). The
/// result is bit-identical to the full scan: an entry at -inf adds exactly `+0.0` to its
/// lane of the normaliser and keys 0, so only the candidates are read and only their
/// noise is drawn. Returns `None` (the caller runs the full scan) when the item's
/// maximum is not finite or fewer than `k` keys are above 0, the cases where
/// entries outside the lists could matter.
pub fn sample_k_sparse<F: FnMut(usize) -> f32>(
    top: &mut TopK,
    vocab: usize,
    offsets: &[f32],
    cands: &[RowCandidates],
    mut noise: F,
) -> Option<Vec<(f32, usize)>> {
    let mut max = f32::NEG_INFINITY;
    for (c, &off) in cands.iter().zip(offsets) {
        max = c.value.iter().fold(max, |m, &v| m.max(v + off));
    }
    if !max.is_finite() {
        return None;
    }
    // the lanes of `sum_exp` over the flattened item: lane `i % 16` for the full blocks,
    // then the tail in double precision, each in index order
    let width = cands.len() * vocab;
    let blocked = width - width % 16;
    let mut lanes = [0.0f32; 16];
    let mut tail = Vec::new();
    for (r, (c, &off)) in cands.iter().zip(offsets).enumerate() {
        for (&i, &v) in c.index.iter().zip(&c.value) {
            let flat = r * vocab + i as usize;
            let e = exp_f32((v + off) - max);
            if flat < blocked {
                lanes[flat % 16] += e;
            } else {
                tail.push(f64::from(e));
            }
        }
    }
    let sum = lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + tail.iter().sum::<f64>();
    let inv = (1.0 / sum) as f32;
    top.clear();
    let mut positive = 0;
    for (r, (c, &off)) in cands.iter().zip(offsets).enumerate() {
        for (&i, &v) in c.index.iter().zip(&c.value) {
            let flat = r * vocab + i as usize;
            let p = exp_f32((v + off) - max) * inv;
            if !(p > 0.0) {
                continue;
            }
            let key = p / noise(flat);
            positive += usize::from(key > 0.0);
            top.push(key, flat);
        }
    }
    if positive < top.k {
        return None;
    }
    let picked: Vec<(f32, usize)> = top
        .items()
        .iter()
        .map(|&(_, f)| (cands[f / vocab].value_of(f % vocab) + offsets[f / vocab], f))
        .collect();
    Some(by_score(picked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lane_max_is_the_fold(values in proptest::collection::vec(
            prop_oneof![-1e3f32..1e3, Just(f32::NAN), Just(0.0), Just(-0.0), Just(f32::INFINITY), Just(f32::NEG_INFINITY)],
            0..80,
        )) {
            let want = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            prop_assert_eq!(row_max(&values).to_bits(), want.to_bits());
        }
    }

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

    /// The chunk-skipping scan keeps exactly what a plain scan of every entry keeps.
    fn top_k_plain(k: usize, rows: &[f32], vocab: usize, offsets: &[f32]) -> Vec<(f32, usize)> {
        let mut t = TopK::new(k);
        for (r, (row, &off)) in rows.chunks_exact(vocab).zip(offsets).enumerate() {
            for (i, &x) in row.iter().enumerate() {
                t.push(x + off, r * vocab + i);
            }
        }
        t.items().to_vec()
    }

    /// Rows with many ties, some special values (`specials[i] = (position, kind)` into
    /// `kinds`) and per-row offsets including -inf: the inputs of the top-k properties.
    fn tied_rows(
        seed: u64,
        rows: usize,
        vocab: usize,
        specials: &[(usize, u8)],
        kinds: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let mut data: Vec<f32> = (0..rows * vocab)
            .map(|i| (crate::beam::exponential(seed, 0, i) * 4.0).floor() - 8.0)
            .collect();
        for &(at, kind) in specials {
            if at < data.len() {
                data[at] = kinds[kind as usize % kinds.len()];
            }
        }
        let offsets = (0..rows)
            .map(|r| [0.0, -1.5, f32::NEG_INFINITY, 2.0][r % 4])
            .collect();
        (data, offsets)
    }

    /// A row holding `+inf` gets the softmax's limit in every beam mode (torch: all NaN).
    #[test]
    fn log_softmax_of_inf_is_the_limit() {
        let (inf, neg) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut rows = vec![1.0, inf, 0.5, inf, inf, inf, inf, inf];
        log_softmax_rows(&mut rows, 4);
        let half = 0.5f32.ln();
        assert_eq!(
            rows,
            vec![
                neg,
                half,
                neg,
                half,
                -(4.0f32.ln()),
                -(4.0f32.ln()),
                -(4.0f32.ln()),
                -(4.0f32.ln())
            ]
        );
        let mut one = vec![-3.0, f32::NAN, inf];
        log_softmax_rows(&mut one, 3);
        assert_eq!(one, vec![neg, neg, 0.0]);
        assert!(shift_is_certain(log_softmax_shift(&[0.0, inf])));
    }

    proptest! {
        #[test]
        fn chunked_top_k_matches_plain_scan(
            vocab in 1usize..300,
            rows in 1usize..4,
            k in 0usize..12,
            seed in any::<u64>(),
            specials in proptest::collection::vec((0usize..1200, 0u8..4), 0..20),
        ) {
            let (data, offsets) = tied_rows(seed, rows, vocab, &specials, &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 100.0]);
            let mut t = TopK::new(k);
            top_k_into(&mut t, &data, vocab, &offsets);
            let want = top_k_plain(k, &data, vocab, &offsets);
            prop_assert_eq!(t.items().len(), want.len());
            for (a, b) in t.items().iter().zip(&want) {
                prop_assert!(a.1 == b.1 && (a.0 == b.0 || (a.0.is_nan() && b.0.is_nan())), "{:?} vs {:?}", t.items(), want);
            }
        }
    }

    proptest! {
        #[test]
        fn unwritten_log_softmax_top_k_is_the_written_one(
            vocab in 1usize..300,
            rows in 1usize..4,
            k in 0usize..12,
            seed in any::<u64>(),
            specials in proptest::collection::vec((0usize..1200, 0u8..5), 0..6),
            penalised in proptest::collection::vec((0usize..300, prop_oneof![Just(0.5f32), Just(1.0), Just(3.0)]), 0..4),
        ) {
            let kinds = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 100.0, -0.0];
            let (mut data, offsets) = tied_rows(seed, rows, vocab, &specials, &kinds);
            let mut lazy = TopK::new(k);
            let mut shifts = Vec::new();
            log_softmax_shifts(&data, vocab, &mut shifts);
            if shifts.iter().copied().any(shift_is_certain) {
                return Ok(()); // a row with +inf: the callers take the written path
            }
            // a Hamming-like penalty on a few tokens (sorted, in range)
            let mut minus: Vec<(u32, f32)> = penalised.iter().map(|&(t, a)| ((t % vocab) as u32, a)).collect();
            minus.sort_by_key(|m| m.0);
            minus.dedup_by_key(|m| m.0);
            top_k_log_softmax_into(&mut lazy, &data, vocab, &offsets, &shifts, &minus);
            log_softmax_rows(&mut data, vocab);
            for row in data.chunks_exact_mut(vocab) {
                for &(t, a) in &minus {
                    row[t as usize] -= a;
                }
            }
            let mut written = TopK::new(k);
            top_k_into(&mut written, &data, vocab, &offsets);
            prop_assert_eq!(lazy.items().len(), written.items().len());
            for (a, b) in lazy.items().iter().zip(written.items()) {
                prop_assert!(a.1 == b.1 && (a.0.to_bits() == b.0.to_bits() || (a.0.is_nan() && b.0.is_nan())),
                    "{:?} vs {:?}", lazy.items(), written.items());
            }
        }
    }

    proptest! {
        /// With the rows cut to candidate lists, the sparse race picks exactly what the full
        /// scan picks (or declines), bit for bit, whatever the noise.
        #[test]
        fn sparse_race_matches_full_scan(
            vocab in 1usize..200,
            rows in 1usize..5,
            k in 1usize..10,
            keep in 0usize..30,
            seed in any::<u64>(),
            specials in proptest::collection::vec((0usize..1000, 0u8..3), 0..4),
            zero_noise in any::<bool>(),
        ) {
            let mut data = vec![f32::NEG_INFINITY; rows * vocab];
            let mut cands = vec![RowCandidates::default(); rows];
            for n in 0..keep * rows {
                let at = (crate::beam::exponential(seed, 1, n) * 1000.0) as usize % (rows * vocab);
                data[at] = (crate::beam::exponential(seed, 2, n) * 3.0).floor() - 4.0;
            }
            for (at, kind) in specials {
                if at < data.len() {
                    data[at] = [f32::NAN, -90.0, 30.0][kind as usize];
                }
            }
            for (r, c) in cands.iter_mut().enumerate() {
                let row = &data[r * vocab..(r + 1) * vocab];
                *c = RowCandidates::gather((0..vocab as u32).filter(|&i| row[i as usize] != f32::NEG_INFINITY).collect(), row);
            }
            let offsets: Vec<f32> = (0..rows).map(|r| [0.0, -1.5, -1e9, 2.0][r % 4]).collect();
            let noise = |i: usize| if zero_noise && i % 7 == 0 { 0.0 } else { crate::beam::exponential(seed, 3, i) };
            let (mut t, mut scratch) = (TopK::new(k), Vec::new());
            let full = sample_k_into(&mut t, &data, vocab, &offsets, &mut scratch, noise);
            if let Some(sparse) = sample_k_sparse(&mut t, vocab, &offsets, &cands, noise) {
                prop_assert_eq!(sparse.len(), full.len());
                for (a, b) in sparse.iter().zip(&full) {
                    prop_assert!(a.1 == b.1 && a.0.to_bits() == b.0.to_bits(), "{:?} vs {:?}", sparse, full);
                }
            }
        }
    }

    #[test]
    fn sampling_with_constant_noise_is_top_k() {
        let mut t = TopK::new(2);
        let mut scratch = Vec::new();
        let got = sample_k_into(
            &mut t,
            &[0.0, 2.0, 1.0, -1.0],
            2,
            &[0.0, 0.5],
            &mut scratch,
            |_| 1.0,
        );
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
            let got = sample_k_into(&mut t, &logp, 4, &[0.0], &mut scratch, |i| {
                crate::beam::exponential(42 + s, 0, i)
            });
            counts[got[0].1] += 1;
        }
        for (c, q) in counts.iter().zip(p) {
            assert!((*c as f32 / 20000.0 - q).abs() < 0.012, "{counts:?}");
        }
        // sampling without replacement never repeats an entry, and a zero-probability one comes last
        let mut t = TopK::new(3);
        let got = sample_k_into(
            &mut t,
            &[0.0, f32::NEG_INFINITY, -1.0],
            3,
            &[0.0],
            &mut scratch,
            |_| 1.0,
        );
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
