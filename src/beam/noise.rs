//! Counter-based exponential noise for beam-search sampling with a fixed `seed`.
//!
//! Every value is a pure function of `(seed, batch item, step, index)`, so a batch
//! item's result depends on the seed alone, not on what else is in the batch or on
//! thread timing.
// TODO(sampling): switch to the shared per-row generator of `crate::sampling` once it
// lands; only `exponential` needs to change.

#[derive(Debug, Clone, Copy)]
pub struct CounterNoise {
    seed: u64,
}

#[inline]
fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl CounterNoise {
    pub fn new(seed: u64) -> Self {
        CounterNoise { seed }
    }

    /// A key for one batch item at one step; combine with [`Self::exponential`].
    pub fn stream(&self, item: usize, step: usize) -> u64 {
        mix(mix(self.seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_add(item as u64) ^ mix((step as u64) << 1 | 1))
    }

    /// `Exp(1)` draw number `index` of `stream`: `-ln(u)` with `u` uniform in (0, 1].
    #[inline]
    pub fn exponential(stream: u64, index: usize) -> f32 {
        let bits = mix(stream.wrapping_add((index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let u = ((bits >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
        (-u.ln()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_positive_and_roughly_unit_mean() {
        let n = CounterNoise::new(7);
        let s = n.stream(0, 3);
        assert_eq!(CounterNoise::exponential(s, 5), CounterNoise::exponential(n.stream(0, 3), 5));
        assert_ne!(s, n.stream(1, 3));
        assert_ne!(s, n.stream(0, 4));
        let draws: Vec<f32> = (0..20000).map(|i| CounterNoise::exponential(s, i)).collect();
        assert!(draws.iter().all(|&q| q > 0.0 && q.is_finite()));
        let mean = draws.iter().map(|&q| q as f64).sum::<f64>() / draws.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
    }
}
