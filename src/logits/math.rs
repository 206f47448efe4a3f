//! Numeric kernels shared by the warpers and the sampler.
//!
//! The loops are written in fixed-width lanes so that LLVM vectorises them on the
//! baseline x86-64 / aarch64 targets without `-C target-cpu`; the hot ones are also
//! compiled for AVX2 and picked at run time ([`multiversion!`]). Both versions do the
//! same IEEE operations in the same order (no FMA contraction), so results are
//! bit-identical whichever runs. NaN is treated as -inf everywhere in this module (it
//! never wins a max and has zero probability).

use std::cmp::Ordering;

const LANES: usize = 16;
/// Lanes of the loops that inline `exp`: 8 keeps AVX2 from spilling registers.
const EXP_LANES: usize = 8;

/// Defines `fn name(args) -> ret` whose body is compiled three times, for the baseline
/// target, AVX2 and AVX-512, the widest copy the CPU runs being used (checked once,
/// cached). Every copy performs the same IEEE operations in the same order (Rust never
/// contracts a multiply and an add into an FMA), so all return the same bits.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

multiversion! {
/// Largest value of `xs`, ignoring NaN; -inf when `xs` is empty or all NaN/-inf.
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in acc.iter().chain(tail) {
        if x > m {
            m = x;
        }
    }
    m
}
}

/// `e^x` in f32 with a relative error below 3e-7 (Cephes' polynomial, Cody-Waite
/// reduction), branch-free so that loops over it vectorise. Results below the smallest
/// normal float are flushed to 0 (`x < -87`, a probability ratio under 2e-38): producing
/// subnormals costs a microcode assist per element on x86, and rows where most entries
/// are -inf (after a cut) would pay it everywhere. `exp(-inf) = 0`, NaN gives 0.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` keeps NaN; max/min map it to the lower bound
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round-to-nearest trick: adding 1.5 * 2^23 pushes the fraction out of the mantissa.
    const SHIFT: f32 = 12_582_912.0;
    const LOWEST: f32 = -87.0;
    let normal = x >= LOWEST; // false for NaN and -inf
                              // Clamping also maps NaN to the lower bound (max/min return the non-NaN operand).
    let x = x.max(LOWEST).min(88.7);
    let t = x * LOG2E + SHIFT;
    let n = t - SHIFT;
    // The rounded integer sits in t's low mantissa bits: no float-to-int conversion
    // (Rust's saturating `as` would not vectorise).
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.500_000_1;
    let y = p * r * r + r + 1.0;
    // 2^n as two factors, each a normal float for n in [-126, 128].
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let e =
        y * f32::from_bits(((n1 + 127) as u32) << 23) * f32::from_bits(((n2 + 127) as u32) << 23);
    if normal {
        e
    } else {
        0.0
    }
}

multiversion! {
/// Sum of `exp(x - m)` over `xs`, accumulated per block in f32 lanes and across
/// blocks in f64 (`m` must be finite).
pub fn sum_exp(xs: &[f32], m: f32) -> f64 {
    let mut total = 0.0f64;
    for block in xs.chunks(1024) {
        let mut acc = [0.0f32; EXP_LANES];
        let chunks = block.chunks_exact(EXP_LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for j in 0..EXP_LANES {
                acc[j] += exp(c[j] - m);
            }
        }
        let mut s: f32 = tail.iter().map(|&x| exp(x - m)).sum();
        s += acc.iter().sum::<f32>();
        total += s as f64;
    }
    total
}
}

multiversion! {
/// Writes `exp(x - m)` of every `x` into `out` and returns their sum (f64).
pub fn exp_into(xs: &[f32], m: f32, out: &mut Vec<f32>) -> f64 {
    out.clear();
    out.resize(xs.len(), 0.0);
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = exp(x - m);
    }
    let mut total = 0.0f64;
    for block in out.chunks(1024) {
        let mut acc = [0.0f32; EXP_LANES];
        let chunks = block.chunks_exact(EXP_LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for j in 0..EXP_LANES {
                acc[j] += c[j];
            }
        }
        total += (acc.iter().sum::<f32>() + tail.iter().sum::<f32>()) as f64;
    }
    total
}
}

multiversion! {
/// `x / t` for every `x`.
pub fn divide(xs: &mut [f32], t: f32) -> () {
    for x in xs.iter_mut() {
        *x /= t;
    }
}
}

multiversion! {
/// The warpers' prelude in place (NaN to -inf when `sanitize`, then `/ t`); returns the
/// largest resulting value (NaN ignored).
pub fn prelude_max(xs: &mut [f32], t: f32, sanitize: bool) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            let x = if sanitize && c[j].is_nan() { f32::NEG_INFINITY } else { c[j] };
            let y = x / t;
            c[j] = y;
            acc[j] = if y > acc[j] { y } else { acc[j] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for x in chunks.into_remainder() {
        let y = (if sanitize && x.is_nan() { f32::NEG_INFINITY } else { *x }) / t;
        *x = y;
        m = if y > m { y } else { m };
    }
    for a in acc {
        m = if a > m { a } else { m };
    }
    m
}
}

/// Chunk length of [`chunk_maxima`].
pub const MAX_CHUNK: usize = 64;

multiversion! {
/// The maximum (NaN ignored) of every `MAX_CHUNK`-long chunk of `xs`, into `out`.
pub fn chunk_maxima(xs: &[f32], out: &mut Vec<f32>) -> () {
    out.clear();
    let chunks = xs.chunks_exact(MAX_CHUNK);
    let tail = chunks.remainder();
    for c in chunks {
        let mut acc = [f32::NEG_INFINITY; LANES];
        for part in c.chunks_exact(LANES) {
            for j in 0..LANES {
                acc[j] = if part[j] > acc[j] { part[j] } else { acc[j] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for a in acc {
            m = if a > m { a } else { m };
        }
        out.push(m);
    }
    if !tail.is_empty() {
        out.push(tail.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m }));
    }
}
}

multiversion! {
/// NaN becomes -inf.
pub fn nan_to_neg_inf(xs: &mut [f32]) -> () {
    for x in xs.iter_mut() {
        *x = if x.is_nan() { f32::NEG_INFINITY } else { *x };
    }
}
}

multiversion! {
/// `out[i] = exp(xs[i] - m) * inv`: probabilities once `inv = 1 / sum` is known.
pub fn scaled_exp_into(xs: &[f32], m: f32, inv: f32, out: &mut Vec<f32>) -> () {
    out.clear();
    out.resize(xs.len(), 0.0);
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = exp(x - m) * inv;
    }
}
}

multiversion! {
/// Writes -inf over every `x` whose probability `exp(x - m) * inv` is below `min_prob`.
pub fn cut_below(xs: &mut [f32], m: f32, inv: f32, min_prob: f32) -> () {
    for x in xs.iter_mut() {
        *x = if exp(*x - m) * inv >= min_prob { *x } else { f32::NEG_INFINITY };
    }
}
}

multiversion! {
/// Writes -inf over every `x` with probability `exp(x - m) * inv < thr` that scores below
/// `m` (the epsilon / eta rule with the top token protected); NaN becomes -inf.
pub fn cut_improbable(xs: &mut [f32], m: f32, inv: f32, thr: f32) -> () {
    for x in xs.iter_mut() {
        let improbable = exp(*x - m) * inv < thr && !(*x >= m);
        *x = if improbable { f32::NEG_INFINITY } else { *x };
    }
}
}

multiversion! {
/// `sum(p * (x - lse))` with `p = exp(x - m) * inv` over the tokens of non-zero
/// probability (the negative entropy, as `Categorical.entropy` sums it).
pub fn neg_entropy(xs: &[f32], m: f32, inv: f32, lse: f32) -> f64 {
    let mut total = 0.0f64;
    for block in xs.chunks(1024) {
        let mut acc = 0.0f32;
        for &x in block {
            let p = exp(x - m) * inv;
            acc += if p > 0.0 { (x - lse).max(f32::MIN) * p } else { 0.0 };
        }
        total += acc as f64;
    }
    total
}
}

/// Probabilities of `vals` as torch's softmax computes them (`exp(x - max) * (1 / sum)`),
/// written to `out`; NaN and -inf get 0. When some value is +inf, the mass is shared
/// equally by the +inf entries (the limit of the softmax). Returns false when no
/// value is larger than -inf (no distribution).
pub fn softmax_into(vals: &[f32], out: &mut Vec<f32>) -> bool {
    let m = max(vals);
    if m == f32::NEG_INFINITY {
        out.clear();
        out.resize(vals.len(), 0.0);
        return false;
    }
    if m == f32::INFINITY {
        let count = vals.iter().filter(|&&v| v == f32::INFINITY).count();
        let share = 1.0 / count as f32;
        out.clear();
        out.extend(
            vals.iter()
                .map(|&v| if v == f32::INFINITY { share } else { 0.0 }),
        );
        return true;
    }
    let s = exp_into(vals, m, out);
    let inv = (1.0 / s) as f32;
    for p in out.iter_mut() {
        *p *= inv;
    }
    true
}

/// One entry of a weighted ordering: `key` orders ascending, `idx` breaks ties
/// (ascending, as a stable sort of the vocabulary would), `w` is the weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item {
    pub key: f32,
    pub idx: u32,
    pub w: f32,
}

/// Total order on (key, idx) with NaN keys last; used for every selection here.
#[inline]
pub fn cmp_items(a: &Item, b: &Item) -> Ordering {
    a.key.total_cmp(&b.key).then(a.idx.cmp(&b.idx))
}

const SMALL: usize = 256;
const BUCKETS: usize = 1024;

/// Finds the first position `q`, in ascending (key, idx) order, whose inclusive
/// cumulative weight `base + w_0 + ... + w_q` satisfies `reached` (a predicate that
/// is monotone in the cumulative weight). Rearranges `items` so that `items[..q]`
/// are exactly the items before that position (in some order) and `items[q]` is the
/// boundary item. Returns `items.len()` when no position reaches.
///
/// Linear expected time: items are distributed into value buckets (stably, so the
/// index order of ties is kept), only the bucket holding the boundary is refined,
/// and only a small final bucket is sorted. `items` must be in ascending `idx`
/// order on entry; keys must not be NaN.
pub fn first_reaching(
    items: &mut [Item],
    base: f64,
    reached: &dyn Fn(f64) -> bool,
    tmp: &mut Vec<Item>,
) -> usize {
    let n = items.len();
    if n <= SMALL {
        items.sort_by(cmp_items);
        return scan(items, base, reached);
    }
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for it in items.iter() {
        lo = lo.min(it.key);
        hi = hi.max(it.key);
    }
    if lo == hi {
        // All tied: the order is the index order, which the items are already in.
        return scan(items, base, reached);
    }
    if !lo.is_finite() || !hi.is_finite() {
        items.sort_by(cmp_items);
        return scan(items, base, reached);
    }
    let scale = BUCKETS as f64 / (hi as f64 - lo as f64);
    let lo64 = lo as f64;
    let bucket = |k: f32| (((k as f64 - lo64) * scale) as usize).min(BUCKETS - 1);
    let mut mass = [0.0f64; BUCKETS];
    let mut count = [0usize; BUCKETS];
    for it in items.iter() {
        let b = bucket(it.key);
        mass[b] += it.w as f64;
        count[b] += 1;
    }
    let mut before = base;
    let mut below = 0usize;
    let mut hit = None;
    for b in 0..BUCKETS {
        if count[b] == 0 {
            continue;
        }
        if reached(before + mass[b]) {
            hit = Some(b);
            break;
        }
        before += mass[b];
        below += count[b];
    }
    let Some(hit) = hit else {
        return n;
    };
    // Stable three-way partition: buckets below `hit`, `hit` itself, the rest.
    tmp.clear();
    tmp.extend_from_slice(items);
    let (mut a, mut m) = (0usize, below);
    let mut z = below + count[hit];
    for it in tmp.iter() {
        let b = bucket(it.key);
        let slot = match b.cmp(&hit) {
            Ordering::Less => &mut a,
            Ordering::Equal => &mut m,
            Ordering::Greater => &mut z,
        };
        items[*slot] = *it;
        *slot += 1;
    }
    let end = below + count[hit];
    let q = first_reaching(&mut items[below..end], before, reached, tmp);
    if q < count[hit] {
        return below + q;
    }
    // Summed in another order the bucket fell short by a rounding error: go on in order.
    let cum = before + items[below..end].iter().map(|it| it.w as f64).sum::<f64>();
    items[end..].sort_by(cmp_items);
    end + scan(&items[end..], cum, reached)
}

fn scan(sorted: &[Item], base: f64, reached: &dyn Fn(f64) -> bool) -> usize {
    let mut cum = base;
    for (q, it) in sorted.iter().enumerate() {
        cum += it.w as f64;
        if reached(cum) {
            return q;
        }
    }
    sorted.len()
}

/// The `k`-th largest value of `xs` (1-based, counting repeats), NaN ignored; -inf when
/// fewer than `k` values are larger than -inf. One pass that keeps a small buffer of
/// candidates above a rising threshold; the buffer is trimmed by selection, never sorted.
pub fn kth_largest(xs: &[f32], k: usize, buf: &mut Vec<f32>) -> f32 {
    if k == 0 {
        return f32::INFINITY;
    }
    buf.clear();
    let cap = (4 * k).max(256);
    let mut thr = f32::NEG_INFINITY;
    for chunk in xs.chunks(256) {
        if max(chunk) <= thr {
            continue;
        }
        for &x in chunk {
            if x > thr {
                buf.push(x);
            }
        }
        if buf.len() >= cap {
            buf.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            buf.truncate(k);
            thr = buf[k - 1];
        }
    }
    if buf.len() < k {
        return f32::NEG_INFINITY;
    }
    let (_, kth, _) = buf.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

multiversion! {
/// Smallest and largest values of `xs` larger than -inf and smaller than +inf (NaN
/// ignored); `None` when there is none.
pub fn finite_range(xs: &[f32]) -> Option<(f32, f32)> {
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    let fold = |lo: &mut f32, hi: &mut f32, x: f32| {
        let finite = x.abs() < f32::INFINITY;
        *lo = if finite && x < *lo { x } else { *lo };
        *hi = if finite && x > *hi { x } else { *hi };
    };
    for c in chunks {
        for j in 0..LANES {
            fold(&mut lo[j], &mut hi[j], c[j]);
        }
    }
    let (mut l, mut h) = (f32::INFINITY, f32::NEG_INFINITY);
    for j in 0..LANES {
        fold(&mut l, &mut h, lo[j]);
        fold(&mut l, &mut h, hi[j]);
    }
    for &x in tail {
        fold(&mut l, &mut h, x);
    }
    (l <= h).then_some((l, h))
}
}

/// [`first_reaching`] over the items `(keys[i], i, weights[i])` without materialising
/// them: a weighted histogram over the key range finds the bucket where the cumulative
/// weight crosses, and only that bucket's items are collected and refined. Items whose
/// key is not finite must have weight 0 and sort before everything else (they are left
/// out). Returns the boundary item, `None` when no position reaches; the items before
/// it are exactly those ordered before it by (key, index).
pub fn dense_boundary(
    keys: &[f32],
    weights: &[f32],
    reached: &dyn Fn(f64) -> bool,
    items: &mut Vec<Item>,
    tmp: &mut Vec<Item>,
) -> Option<Item> {
    let (lo, hi) = finite_range(keys)?;
    let scale = DENSE_BUCKETS as f32 / (hi - lo);
    let scale = if scale.is_finite() { scale } else { 0.0 };
    let mut mass = vec![0.0f64; DENSE_BUCKETS];
    histogram(keys, weights, lo, scale, &mut mass);
    let mut before = 0.0f64;
    let mut hit = None;
    for (b, &m) in mass.iter().enumerate() {
        if m > 0.0 && reached(before + m) {
            hit = Some(b);
            break;
        }
        before += m;
    }
    let hit = hit?;
    let collect = |items: &mut Vec<Item>, keep: &dyn Fn(usize) -> bool| {
        items.clear();
        for (i, (&k, &w)) in keys.iter().zip(weights).enumerate() {
            if k.abs() < f32::INFINITY && keep(bucket(k, lo, scale)) {
                items.push(Item {
                    key: k,
                    idx: i as u32,
                    w,
                });
            }
        }
    };
    collect(items, &|b| b == hit);
    let q = first_reaching(items, before, reached, tmp);
    if q < items.len() {
        return Some(items[q]);
    }
    // Rounding made the bucket fall short: continue through the buckets above, in order.
    let cum = before + items.iter().map(|it| it.w as f64).sum::<f64>();
    collect(items, &|b| b > hit);
    items.sort_by(cmp_items);
    let q = scan(items, cum, reached);
    items.get(q).copied()
}

const DENSE_BUCKETS: usize = 2048;

/// Bucket of a finite key: monotone in the key, in `0..DENSE_BUCKETS`.
#[inline(always)]
fn bucket(k: f32, lo: f32, scale: f32) -> usize {
    // SAFETY: clamped to [0, DENSE_BUCKETS - 1]; `max` maps NaN (inf * 0) to 0. The
    // unchecked conversion is exact there and vectorises (a saturating `as` does not).
    unsafe {
        ((k - lo) * scale)
            .max(0.0)
            .min((DENSE_BUCKETS - 1) as f32)
            .to_int_unchecked::<u32>() as usize
    }
}

multiversion! {
fn histogram(keys: &[f32], weights: &[f32], lo: f32, scale: f32, mass: &mut [f64]) -> () {
    for (&k, &w) in keys.iter().zip(weights) {
        if k.abs() < f32::INFINITY {
            mass[bucket(k, lo, scale)] += w as f64;
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_and_total() {
        let mut worst = 0.0f64;
        let mut x = -86.9f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::NAN), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-87.5), 0.0, "subnormal results are flushed to 0");
        assert!(exp(-86.9) > 0.0);
    }

    #[test]
    fn max_skips_nan() {
        let mut v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        v[37] = f32::NAN;
        v[99] = f32::NAN;
        assert_eq!(max(&v), 98.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(max(&[f32::NAN]), f32::NEG_INFINITY);
    }

    #[test]
    fn kth_largest_counts_repeats() {
        let v = [1.0, 5.0, 3.0, 5.0, f32::NAN, 2.0];
        assert_eq!(kth_largest(&v, 1, &mut Vec::new()), 5.0);
        assert_eq!(kth_largest(&v, 2, &mut Vec::new()), 5.0);
        assert_eq!(kth_largest(&v, 3, &mut Vec::new()), 3.0);
        assert_eq!(kth_largest(&v, 6, &mut Vec::new()), f32::NEG_INFINITY);
        // Long input exercises the trimming path.
        let long: Vec<f32> = (0..100_000u32)
            .map(|i| ((i * 7919) % 100_003) as f32)
            .collect();
        let mut sorted = long.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        for k in [1, 50, 1000, 99_999] {
            assert_eq!(
                kth_largest(&long, k, &mut Vec::new()),
                sorted[k - 1],
                "k={k}"
            );
        }
    }

    #[test]
    fn dense_boundary_matches_first_reaching() {
        for n in [3usize, 5000, 40_000] {
            for ties in [false, true] {
                let keys: Vec<f32> = (0..n)
                    .map(|i| {
                        let r = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                        if ties {
                            (r % 7) as f32
                        } else if i % 11 == 0 {
                            f32::NEG_INFINITY
                        } else {
                            (r % 100_000) as f32 / 997.0
                        }
                    })
                    .collect();
                let w = |i: usize| {
                    if keys[i] == f32::NEG_INFINITY {
                        0.0
                    } else {
                        1.0 / (1.0 + (i % 13) as f32)
                    }
                };
                let total: f64 = (0..n).map(|i| w(i) as f64).sum();
                for frac in [0.0, 0.3, 0.97, 1.5] {
                    let target = total * frac;
                    let pred = |c: f64| c > target;
                    let mut items: Vec<Item> = (0..n)
                        .map(|i| Item {
                            key: keys[i],
                            idx: i as u32,
                            w: w(i),
                        })
                        .collect();
                    items.sort_by(cmp_items);
                    let q = scan(&items, 0.0, &pred);
                    let want = items.get(q).copied();
                    let weights: Vec<f32> = (0..n).map(w).collect();
                    let got =
                        dense_boundary(&keys, &weights, &pred, &mut Vec::new(), &mut Vec::new());
                    assert_eq!(
                        got.map(|it| it.idx),
                        want.map(|it| it.idx),
                        "n={n} ties={ties} frac={frac}"
                    );
                }
            }
        }
    }

    #[test]
    fn finite_range_skips_infinities() {
        assert_eq!(
            finite_range(&[f32::NEG_INFINITY, 3.0, f32::NAN, -1.0, f32::INFINITY]),
            Some((-1.0, 3.0))
        );
        assert_eq!(finite_range(&[f32::NEG_INFINITY]), None);
    }

    #[test]
    fn first_reaching_matches_a_full_sort() {
        let mut state = 12345u64;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in [1usize, 10, 300, 5000] {
            for ties in [false, true] {
                let items: Vec<Item> = (0..n)
                    .map(|i| {
                        let r = rnd();
                        let key = if ties {
                            (r % 5) as f32
                        } else {
                            (r % 1_000_000) as f32 / 1000.0
                        };
                        Item {
                            key,
                            idx: i as u32,
                            w: ((r >> 20) % 100) as f32 / 1000.0,
                        }
                    })
                    .collect();
                let total: f64 = items.iter().map(|i| i.w as f64).sum();
                for frac in [0.0, 0.1, 0.5, 0.9, 1.1] {
                    let target = total * frac;
                    let pred = |c: f64| c > target;
                    let mut sorted = items.clone();
                    sorted.sort_by(cmp_items);
                    let want = scan(&sorted, 0.0, &pred);
                    let mut got = items.clone();
                    let q = first_reaching(&mut got, 0.0, &pred, &mut Vec::new());
                    assert_eq!(q, want, "n={n} ties={ties} frac={frac}");
                    let mut a: Vec<u32> = got[..q].iter().map(|i| i.idx).collect();
                    let mut b: Vec<u32> = sorted[..q].iter().map(|i| i.idx).collect();
                    a.sort_unstable();
                    b.sort_unstable();
                    assert_eq!(a, b);
                    if q < n {
                        assert_eq!(got[q].idx, sorted[q].idx);
                    }
                }
            }
        }
    }
}
