//! SynthID text watermarking (Dathathri et al., Nature 2024), as transformers 5.x's
//! `SynthIDTextWatermarkLogitsProcessor` computes it: the settings, the hashing of n-grams
//! into per-depth keys, the g-values those keys draw from the sampling table, and the
//! masks its detector (`SynthIDTextWatermarkDetector`) scores text with. The processor
//! that changes the scores is [`super::synthid_processor`].
//!
//! Arithmetic is transformers' to the bit: the sampling table is `torch.randint(0, 2,
//! (size,))` from `torch.Generator().manual_seed(seed)` ([`super::torch_mt`]), hashes are
//! its `accumulate_hash` in torch's wrapping int64 arithmetic, and a key's g-value is the
//! table's entry at `key mod size` (torch's `%`, never negative for a positive size).

use std::collections::{HashMap, VecDeque};

use super::torch_mt::randint;
use crate::buffers;
use crate::error::{CoreError, Result};

/// transformers' `SynthIDTextWatermarkingConfig.validate` refuses larger tables.
pub const MAX_SAMPLING_TABLE_SIZE: i64 = 1 << 24;
/// The linear congruential generator's multiplier in `accumulate_hash` (newlib/musl).
const MULTIPLIER: i64 = 6_364_136_223_846_793_005;

/// The settings of transformers' `SynthIDTextWatermarkingConfig`, as the user gave them
/// (checked by [`Self::validate`]).
#[derive(Debug, Clone)]
pub struct SynthIdSpec {
    pub ngram_len: i64,
    /// One key per depth (tournament layer).
    pub keys: Vec<i64>,
    pub sampling_table_size: i64,
    /// Any Python integer torch's `manual_seed` takes: `[-2^63, 2^64)`.
    pub sampling_table_seed: i128,
    pub context_history_size: i64,
    pub skip_first_ngram_calls: bool,
    /// Scores are replaced by ones before the watermark (transformers' test mode).
    pub debug_mode: bool,
}

impl SynthIdSpec {
    /// What transformers accepts without failing later inside torch, as errors naming the
    /// field (transformers' own check is only `sampling_table_size <= 2**24`).
    pub fn validate(&self) -> Result<()> {
        let field = |f: &'static str, rule: String| Err(CoreError::invalid(f, rule));
        if self.keys.is_empty() {
            return field(
                "watermarking_config.keys",
                "must hold at least one key (one per watermarking depth)".into(),
            );
        }
        if self.ngram_len < 1 {
            return field(
                "watermarking_config.ngram_len",
                format!("must be at least 1, got {}", self.ngram_len),
            );
        }
        if !(1..=MAX_SAMPLING_TABLE_SIZE).contains(&self.sampling_table_size) {
            return field(
                "watermarking_config.sampling_table_size",
                format!("must be in [1, 2**24], got {}", self.sampling_table_size),
            );
        }
        if !(i64::MIN as i128..=u64::MAX as i128).contains(&self.sampling_table_seed) {
            return field(
                "watermarking_config.sampling_table_seed",
                format!(
                    "must be in [-2**63, 2**64) (torch's manual_seed), got {}",
                    self.sampling_table_seed
                ),
            );
        }
        if self.context_history_size < 0 {
            return field(
                "watermarking_config.context_history_size",
                format!("must be >= 0, got {}", self.context_history_size),
            );
        }
        Ok(())
    }
}

/// One step of transformers' `accumulate_hash`: `(h + t) * MULTIPLIER + 1`, wrapping.
#[inline(always)]
pub fn accumulate(h: i64, t: i64) -> i64 {
    h.wrapping_add(t).wrapping_mul(MULTIPLIER).wrapping_add(1)
}

/// `accumulate` over `zeros` zero tokens, in O(log zeros): the map `h -> h * M + 1`
/// composed with itself (affine maps modulo 2^64 compose exactly).
fn accumulate_zeros(h: i64, mut zeros: u64) -> i64 {
    let (mut a, mut b) = (1i64, 0i64); // the identity h -> a h + b
    let (mut pa, mut pb) = (MULTIPLIER, 1i64); // the map to the power 2^i
    while zeros > 0 {
        if zeros & 1 == 1 {
            (a, b) = (pa.wrapping_mul(a), pa.wrapping_mul(b).wrapping_add(pb));
        }
        (pa, pb) = (pa.wrapping_mul(pa), pa.wrapping_mul(pb).wrapping_add(pb));
        zeros >>= 1;
    }
    a.wrapping_mul(h).wrapping_add(b)
}

/// The built keys and sampling table (a bit per entry).
pub struct SynthIdHash {
    ngram_len: usize,
    keys: Vec<i64>,
    bits: Vec<u64>,
    size: i64,
    /// `size - 1` when the size is a power of two (then `key mod size` is a mask).
    mask: Option<i64>,
    context_history_size: usize,
}

impl SynthIdHash {
    pub fn new(spec: &SynthIdSpec) -> Result<Self> {
        spec.validate()?;
        let size = spec.sampling_table_size;
        let name = "watermarking_config.sampling_table_size";
        let mut bits = buffers::filled(name, (size as usize).div_ceil(64), 0u64)?;
        let seed = spec.sampling_table_seed as u64; // Python's negative seeds wrap, as torch's
        for (i, b) in randint(2, size as usize, seed).enumerate() {
            bits[i / 64] |= (b as u64) << (i % 64);
        }
        Ok(SynthIdHash {
            ngram_len: spec.ngram_len as usize,
            keys: spec.keys.clone(),
            bits,
            size,
            mask: (size.count_ones() == 1).then_some(size - 1),
            context_history_size: spec.context_history_size as usize,
        })
    }

    pub fn ngram_len(&self) -> usize {
        self.ngram_len
    }

    /// Number of keys (tournament layers).
    pub fn depth(&self) -> usize {
        self.keys.len()
    }

    pub fn context_history_size(&self) -> usize {
        self.context_history_size
    }

    /// The hash of a context of `ngram_len - 1` tokens: `zeros` zeros then `tokens`
    /// (transformers' state starts as zeros).
    pub fn context_hash(&self, zeros: usize, tokens: impl IntoIterator<Item = i64>) -> i64 {
        tokens
            .into_iter()
            .fold(accumulate_zeros(1, zeros as u64), accumulate)
    }

    /// The g-value at depth `d` of the n-gram whose hash (context, then continuation)
    /// is `ngram_hash`.
    #[inline(always)]
    pub fn g_value(&self, ngram_hash: i64, d: usize) -> u8 {
        let key = accumulate(ngram_hash, self.keys[d]);
        let i = match self.mask {
            Some(m) => key & m,
            None => key.rem_euclid(self.size),
        } as usize;
        ((self.bits[i / 64] >> (i % 64)) & 1) as u8
    }

    /// transformers' `compute_g_values`: `[rows, positions, depth]` (row-major) over the
    /// n-grams of each row of `ids` (`rows` rows), `positions = length - ngram_len + 1`.
    pub fn g_values(&self, ids: &[i64], rows: usize) -> Result<(Vec<u8>, usize)> {
        let (len, positions) = self.positions(ids, rows, self.ngram_len)?;
        let total = buffers::product("input_ids", &[rows, positions, self.depth()])?;
        let mut out = buffers::with_capacity("input_ids", total)?;
        for row in ids.chunks_exact(len.max(1)).take(rows) {
            for ngram in row.windows(self.ngram_len) {
                let h = ngram.iter().fold(1, |h, &t| accumulate(h, t));
                out.extend((0..self.depth()).map(|d| self.g_value(h, d)));
            }
        }
        Ok((out, positions))
    }

    /// transformers' `compute_context_repetition_mask`: `[rows, positions]`, true where
    /// the position's context (its `ngram_len - 1` previous tokens) was not seen among
    /// the last `context_history_size` contexts of its row.
    pub fn context_repetition_mask(&self, ids: &[i64], rows: usize) -> Result<(Vec<bool>, usize)> {
        let (len, positions) = self.positions(ids, rows, self.ngram_len)?;
        let total = buffers::product("input_ids", &[rows, positions])?;
        let mut out = buffers::with_capacity("input_ids", total)?;
        let width = self.ngram_len - 1;
        for row in ids.chunks_exact(len.max(1)).take(rows) {
            let mut seen = SeenContexts::new(self.context_history_size);
            for p in 0..positions {
                let h = self.context_hash(0, row[p..p + width].iter().copied());
                out.push(!seen.check_and_push(h));
            }
        }
        Ok((out, positions))
    }

    /// Length of the rows of `ids` and the number of n-grams in each; rows shorter than
    /// an n-gram are an error (torch's `unfold` fails on them).
    fn positions(&self, ids: &[i64], rows: usize, n: usize) -> Result<(usize, usize)> {
        let len = ids.len().checked_div(rows).unwrap_or(0);
        if rows == 0 || len * rows != ids.len() || len < n {
            return Err(CoreError::Shape {
                name: "input_ids",
                expected: format!("[rows >= 1, length >= ngram_len = {n}]"),
                got: format!("{} values in {rows} rows", ids.len()),
            });
        }
        Ok((len, len - n + 1))
    }
}

/// transformers' `compute_eos_token_mask`: `[rows, length]`, true before each row's first
/// `eos_token_id`, false from it on.
pub fn eos_token_mask(ids: &[i64], rows: usize, eos_token_id: i64) -> Result<Vec<bool>> {
    let mut out = buffers::with_capacity("input_ids", ids.len())?;
    let len = ids.len().checked_div(rows).unwrap_or(0);
    for row in ids.chunks_exact(len.max(1)).take(rows) {
        let first = row.iter().position(|&t| t == eos_token_id).unwrap_or(len);
        out.extend((0..len).map(|i| i < first));
    }
    Ok(out)
}

/// The context hashes a row saw, as transformers' `context_history` keeps them: a window
/// of the last `capacity` hashes that starts filled with zeros. Stored lazily (only the
/// hashes pushed, counted in a map), so a large `context_history_size` costs nothing
/// until that many steps have run and a check is O(1).
#[derive(Debug, Clone, Default)]
pub struct SeenContexts {
    recent: VecDeque<i64>,
    counts: HashMap<i64, u32>,
    pushed: usize,
    capacity: usize,
}

impl SeenContexts {
    pub fn new(capacity: usize) -> Self {
        SeenContexts {
            capacity,
            ..Default::default()
        }
    }

    /// Whether `h` is in the window, then `h` enters it (the oldest entry leaves).
    pub fn check_and_push(&mut self, h: i64) -> bool {
        // the initial zeros still in the window
        let zeros_left = self.pushed < self.capacity;
        let repeated = self.counts.contains_key(&h) || (h == 0 && zeros_left);
        if self.capacity == 0 {
            return repeated;
        }
        if self.recent.len() == self.capacity {
            if let Some(old) = self.recent.pop_front() {
                if let Some(c) = self.counts.get_mut(&old) {
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.recent.push_back(h);
        *self.counts.entry(h).or_insert(0) += 1;
        self.pushed = self.pushed.saturating_add(1);
        repeated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> SynthIdSpec {
        SynthIdSpec {
            ngram_len: 3,
            keys: vec![654, 400, -836],
            sampling_table_size: 1 << 16,
            sampling_table_seed: 0,
            context_history_size: 1024,
            skip_first_ngram_calls: false,
            debug_mode: false,
        }
    }

    #[test]
    fn zeros_hash_equals_accumulating_zeros() {
        for z in [0u64, 1, 2, 3, 7, 64, 1000] {
            let want = (0..z).fold(-5i64, |h, _| accumulate(h, 0));
            assert_eq!(accumulate_zeros(-5, z), want, "{z}");
        }
    }

    #[test]
    fn bad_settings_name_the_field() {
        type Spoil = fn(&mut SynthIdSpec);
        let cases: [(Spoil, &str); 6] = [
            (|s| s.keys.clear(), "keys"),
            (|s| s.ngram_len = 0, "ngram_len"),
            (|s| s.sampling_table_size = 0, "sampling_table_size"),
            (
                |s| s.sampling_table_size = (1 << 24) + 1,
                "sampling_table_size",
            ),
            (|s| s.sampling_table_seed = 1 << 64, "sampling_table_seed"),
            (|s| s.context_history_size = -1, "context_history_size"),
        ];
        for (spoil, name) in cases {
            let mut s = spec();
            spoil(&mut s);
            let e = SynthIdHash::new(&s).err().expect(name).to_string();
            assert!(e.contains(&format!("watermarking_config.{name}")), "{e}");
        }
    }

    #[test]
    fn seen_contexts_start_as_a_window_of_zeros() {
        let mut seen = SeenContexts::new(2);
        assert!(seen.check_and_push(0)); // an initial zero
        assert!(!seen.check_and_push(5));
        assert!(seen.check_and_push(5));
        assert!(!seen.check_and_push(0)); // the zeros have left, and so has the pushed 0
        let mut none = SeenContexts::new(0);
        assert!(!none.check_and_push(0) && !none.check_and_push(0));
    }

    #[test]
    fn detector_shapes_and_short_rows() {
        let h = SynthIdHash::new(&spec()).unwrap();
        let ids = [1i64, 2, 3, 4, 1, 2, 3, 9];
        let (g, positions) = h.g_values(&ids, 2).unwrap();
        assert_eq!((positions, g.len()), (2, 2 * 2 * 3));
        let (mask, _) = h.context_repetition_mask(&ids, 1).unwrap();
        // contexts (1,2), (2,3), (3,4), (4,1), (1,2), (2,3): the last two repeat
        assert_eq!(mask, [true, true, true, true, false, false]);
        assert!(h.g_values(&ids, 4).is_err()); // rows of 2 < ngram_len
        assert!(h.g_values(&ids, 3).is_err()); // 8 values do not make 3 rows
        assert_eq!(
            eos_token_mask(&ids, 2, 3).unwrap(),
            [true, true, false, false, true, true, false, false]
        );
    }
}
