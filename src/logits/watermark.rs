//! transformers' `WatermarkLogitsProcessor` (`watermarking_config=WatermarkingConfig(...)`,
//! the green-list watermark of Kirchenbauer et al.): a bias on a pseudo-random "green"
//! share of the vocabulary, chosen from the previous tokens with torch's own generator
//! ([`super::torch_mt`]), so the green lists are transformers' to the bit.

use std::sync::Arc;

use super::torch_mt::{randperm_prefix, RANDPERM_MAX};
use super::{RowProcessor, Scratch, StepContext};
use crate::error::{CoreError, Result};

/// transformers' fixed table size for the `selfhash` seeding.
const TABLE_SIZE: usize = 1_000_003;
/// Candidates the `selfhash` scheme tries per row (transformers' constant).
const SELFHASH_CANDIDATES: usize = 40;
/// `seed % (2**64 - 1)`, as transformers reduces the seed before `manual_seed`.
const SEED_MODULUS: i128 = u64::MAX as i128;

/// How the green list is seeded (transformers' `seeding_scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedingScheme {
    /// From the previous token.
    LeftHash,
    /// From the previous `context_width` tokens and the candidate itself.
    SelfHash,
}

/// The settings of transformers' `WatermarkingConfig` plus the model's vocabulary size.
#[derive(Debug, Clone)]
pub struct WatermarkSpec {
    /// The model's vocabulary size (transformers permutes that many ids); 0: the width
    /// of the logits.
    pub vocab_size: usize,
    pub greenlist_ratio: f64,
    pub bias: f64,
    pub hashing_key: i64,
    pub seeding_scheme: SeedingScheme,
    pub context_width: usize,
}

/// The built processor (the `selfhash` table is computed once, here).
pub struct GreenListWatermark {
    spec: WatermarkSpec,
    bias: f32,
    table: Option<Arc<Vec<u32>>>,
}

impl WatermarkSpec {
    /// The rules transformers' processor enforces, as errors naming the field.
    pub fn validate(&self) -> Result<()> {
        let field = |f: &'static str, rule: &str| Err(CoreError::invalid(f, rule));
        if !(self.greenlist_ratio > 0.0 && self.greenlist_ratio < 1.0) {
            return field(
                "watermarking_config.greenlist_ratio",
                "must be between 0 and 1, exclusive",
            );
        }
        if self.context_width == 0 {
            return field("watermarking_config.context_width", "must be at least 1");
        }
        if self.vocab_size > RANDPERM_MAX {
            return field(
                "watermarking_config",
                "the model's vocabulary size must be at most 214748363",
            );
        }
        if !self.bias.is_finite() {
            return field("watermarking_config.bias", "must be a finite number");
        }
        Ok(())
    }
}

impl GreenListWatermark {
    pub fn new(spec: &WatermarkSpec) -> Result<Self> {
        spec.validate()?;
        let table = (spec.seeding_scheme == SeedingScheme::SelfHash).then(|| {
            let mut perm = Vec::new();
            randperm_prefix(TABLE_SIZE, TABLE_SIZE, spec.hashing_key as u64, &mut perm);
            Arc::new(perm)
        });
        Ok(GreenListWatermark {
            bias: spec.bias as f32,
            spec: spec.clone(),
            table,
        })
    }

    /// `lefthash`: `hash_key * last_token`, reduced as transformers does.
    fn left_seed(&self, last: i64) -> u64 {
        (self.spec.hashing_key as i128 * last as i128).rem_euclid(SEED_MODULUS) as u64
    }

    /// `selfhash`: `min(hash_key * (table[t] + 1) * (table[candidate] + 1))` over the
    /// context `t`, in torch's wrapping int64 arithmetic.
    fn self_seed(&self, table: &[u32], context: &[i64], candidate: i64) -> u64 {
        let entry = |t: i64| table[t.rem_euclid(TABLE_SIZE as i64) as usize] as i64 + 1;
        let b = entry(candidate);
        let seed = context
            .iter()
            .map(|&t| self.spec.hashing_key.wrapping_mul(entry(t)).wrapping_mul(b))
            .min()
            .unwrap_or(i64::MAX);
        (seed as i128).rem_euclid(SEED_MODULUS) as u64
    }

    /// The vocabulary transformers permutes, and `int(vocab_size * greenlist_ratio)` (in
    /// float64, as Python computes it).
    fn sizes(&self, width: usize) -> (usize, usize) {
        let vocab = match self.spec.vocab_size {
            0 => width.min(RANDPERM_MAX),
            v => v,
        };
        (vocab, (vocab as f64 * self.spec.greenlist_ratio) as usize)
    }

    /// The green list of `seed` over `vocab` ids: the first `size` entries of
    /// transformers' permutation, left in `perm[..size]`.
    fn green(&self, seed: u64, (vocab, size): (usize, usize), perm: &mut Vec<u32>) {
        randperm_prefix(vocab, size, seed, perm);
    }

    fn add_bias(&self, logits: &mut [f32], ids: &[u32]) {
        for &t in ids {
            if let Some(x) = logits.get_mut(t as usize) {
                *x += self.bias;
            }
        }
    }

    /// transformers' `_score_rejection_sampling`: the first 40 tokens by descending
    /// score (ties: lower id first) that are in their own green list get the bias.
    fn self_hash_row(&self, table: &[u32], history: &[i64], logits: &mut [f32], s: &mut Scratch) {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| descending(logits[a as usize], logits[b as usize]));
        order.truncate(SELFHASH_CANDIDATES);
        let keep = self.spec.context_width.saturating_sub(1);
        let context_start = history.len().saturating_sub(keep);
        let sizes = self.sizes(logits.len());
        let mut green = Vec::new();
        let mut context: Vec<i64> = history[context_start..].to_vec();
        for &c in &order {
            context.push(c as i64);
            let seed = self.self_seed(table, &context, c as i64);
            context.pop();
            self.green(seed, sizes, &mut s.ids);
            if s.ids[..sizes.1].contains(&c) {
                green.push(c);
            }
        }
        self.add_bias(logits, &green);
    }
}

/// torch's descending sort order: NaN first, then larger values; equal values by index
/// (the caller's sort is stable).
fn descending(a: f32, b: f32) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
    }
}

impl RowProcessor for GreenListWatermark {
    fn name(&self) -> &'static str {
        "WatermarkLogitsProcessor"
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], s: &mut Scratch) {
        let history = ctx.history.row(r);
        // transformers skips the step (with a warning) while the rows are shorter.
        if history.len() < self.spec.context_width {
            return;
        }
        match &self.table {
            Some(table) => self.self_hash_row(table, history, logits, s),
            None => {
                let seed = self.left_seed(history[history.len() - 1]);
                let sizes = self.sizes(logits.len());
                self.green(seed, sizes, &mut s.ids);
                let ids = std::mem::take(&mut s.ids);
                self.add_bias(logits, &ids[..sizes.1]);
                s.ids = ids;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;
    use crate::history::TokenHistory;

    fn spec(scheme: SeedingScheme) -> WatermarkSpec {
        WatermarkSpec {
            vocab_size: 16,
            greenlist_ratio: 0.25,
            bias: 2.0,
            hashing_key: 15_485_863,
            seeding_scheme: scheme,
            context_width: 1,
        }
    }

    #[test]
    fn lefthash_biases_the_green_list_of_the_last_token() {
        let w = GreenListWatermark::new(&spec(SeedingScheme::LeftHash)).unwrap();
        let mut perm = Vec::new();
        w.green(w.left_seed(7), w.sizes(16), &mut perm);
        let mut row = vec![0.0f32; 16];
        run(&w, &TokenHistory::new(&[3, 7], 1), &mut row, 16);
        let biased: Vec<u32> = (0..16).filter(|&t| row[t as usize] == 2.0).collect();
        let mut want = perm[..4].to_vec();
        want.sort_unstable();
        assert_eq!(biased, want);
        assert_eq!(row.iter().filter(|&&x| x == 0.0).count(), 12);
    }

    #[test]
    fn seeds_reduce_like_python_integers() {
        let mut s = spec(SeedingScheme::LeftHash);
        s.hashing_key = -3;
        let w = GreenListWatermark::new(&s).unwrap();
        assert_eq!(w.left_seed(5), u64::MAX - 15);
        s.hashing_key = i64::MAX;
        let w = GreenListWatermark::new(&s).unwrap();
        let want = ((i64::MAX as i128 * 9) % SEED_MODULUS) as u64;
        assert_eq!(w.left_seed(9), want);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let mut s = spec(SeedingScheme::LeftHash);
        s.greenlist_ratio = 1.0;
        let e = GreenListWatermark::new(&s).err().unwrap().to_string();
        assert!(e.contains("greenlist_ratio"), "{e}");
        s.greenlist_ratio = 0.5;
        s.context_width = 0;
        let e = GreenListWatermark::new(&s).err().unwrap().to_string();
        assert!(e.contains("context_width"), "{e}");
    }

    #[test]
    fn short_rows_are_left_alone() {
        let mut s = spec(SeedingScheme::SelfHash);
        s.context_width = 3;
        let w = GreenListWatermark::new(&s).unwrap();
        let mut row = vec![1.0f32; 16];
        run(&w, &TokenHistory::new(&[3, 7], 1), &mut row, 16);
        assert!(row.iter().all(|&x| x == 1.0));
    }
}
