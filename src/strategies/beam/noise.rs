//! Exponential noise for beam-search sampling with a fixed `seed`, from the shared
//! counter-based generator ([`crate::rng`]): every draw is a pure function of
//! `(batch item key, step, index)`, and an item's key depends on the seed and its
//! unpadded prompt, not on its position in the batch or on thread timing.

use crate::rng::philox4x32_10;

/// Domain tag in the counter's last word, apart from the other users of the row keys.
const BEAM_STREAM: u32 = 0x4245_414D; // "BEAM"

/// `Exp(1)` draw number `index` of batch item `key` at `step`: `-ln(u)`, `u` uniform in (0, 1].
#[inline]
pub fn exponential(key: u64, step: usize, index: usize) -> f32 {
    let out = philox4x32_10(
        [
            index as u32,
            (index >> 32) as u32 ^ ((step as u32) << 8),
            step as u32,
            BEAM_STREAM,
        ],
        [key as u32, (key >> 32) as u32],
    );
    let bits = ((out[0] as u64) << 21) ^ ((out[1] as u64) >> 11);
    let u = ((bits & ((1u64 << 53) - 1)) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
    (-u.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_positive_and_roughly_unit_mean() {
        assert_eq!(exponential(7, 3, 5), exponential(7, 3, 5));
        assert_ne!(exponential(7, 3, 5), exponential(8, 3, 5));
        assert_ne!(exponential(7, 3, 5), exponential(7, 4, 5));
        let draws: Vec<f32> = (0..20000).map(|i| exponential(7, 3, i)).collect();
        assert!(draws.iter().all(|&q| q > 0.0 && q.is_finite()));
        let mean = draws.iter().map(|&q| q as f64).sum::<f64>() / draws.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
    }
}
