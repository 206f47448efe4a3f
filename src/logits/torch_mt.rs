//! torch's CPU generator as `torch.Generator().manual_seed(s)` followed by `torch.randperm`
//! uses it: MT19937 seeded with the low 32 bits of `s`, and randperm's Fisher-Yates
//! shuffle drawing `random() % (n - i)`. transformers' green-list watermark picks its
//! green tokens this way, so reproducing it bit for bit is what makes ferrogen's
//! watermark the same as transformers' (and detectable by its `WatermarkDetector`).

/// Words of state.
pub const N: usize = 624;
const M: usize = 397;

/// MT19937 (32-bit), as `at::mt19937` implements it.
pub struct Mt19937 {
    state: [u32; N],
    next: usize,
}

impl Mt19937 {
    /// `torch.Generator().manual_seed(seed)`: the engine takes the low 32 bits.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 { state, next: N }
    }

    fn twist(&mut self) {
        let prev = self.state;
        twist_into(&prev, &mut self.state);
        self.next = 0;
    }

    /// The state words and the index of the next unread one (`N`: a twist is due).
    #[cfg(test)]
    pub fn parts(&self) -> (&[u32; N], usize) {
        (&self.state, self.next)
    }

    /// The generator's `random()`: the next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let y = self.state[self.next];
        self.next += 1;
        temper(y)
    }
}

/// The state words after one twist of `prev` (both `N` long): the in-place loop of
/// `at::mt19937`, whose late entries read words it has already replaced, written as the
/// recurrence over two blocks so that a run of blocks can lie end to end in one buffer.
#[inline]
pub fn twist_into(prev: &[u32], out: &mut [u32]) {
    let (prev, out) = (&prev[..N], &mut out[..N]);
    #[inline(always)]
    fn mix(upper: u32, lower: u32, far: u32) -> u32 {
        let y = (upper & 0x8000_0000) | (lower & 0x7fff_ffff);
        far ^ (y >> 1) ^ ((y & 1).wrapping_neg() & 0x9908_b0df)
    }
    for i in 0..N - M {
        out[i] = mix(prev[i], prev[i + 1], prev[i + M]);
    }
    for i in N - M..N - 1 {
        out[i] = mix(prev[i], prev[i + 1], out[i + M - N]);
    }
    out[N - 1] = mix(prev[N - 1], out[0], out[M - 1]);
}

/// The output transform of a state word.
#[inline(always)]
pub fn temper(mut y: u32) -> u32 {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c_5680;
    y ^= (y << 15) & 0xefc6_0000;
    y ^ (y >> 18)
}

/// The first `k` entries of `torch.randperm(n, generator=Mt19937::new(seed))`, written
/// into `perm` (which is resized to `n`; its first `k` entries are the answer). Entry `i`
/// of the shuffle is final once step `i` has run, so only `k` draws are made.
/// randperm draws `random() % (n - i)` for `n < 2^32 / 20`, the only sizes taken here.
pub fn randperm_prefix(n: usize, k: usize, seed: u64, perm: &mut Vec<u32>) {
    perm.clear();
    perm.extend(0..n as u32);
    let mut rng = Mt19937::new(seed);
    for i in 0..k.min(n.saturating_sub(1)) {
        let z = rng.next_u32() as usize % (n - i);
        perm.swap(i, z + i);
    }
}

/// `torch.randint(0, high, (n,), generator=Mt19937::new(seed))` on the CPU, in order: the
/// serial kernel draws `random() % high` per entry (32-bit draws for ranges below 2^32).
pub fn randint(high: u32, n: usize, seed: u64) -> impl Iterator<Item = u32> {
    let mut rng = Mt19937::new(seed);
    (0..n).map(move |_| rng.next_u32() % high.max(1))
}

/// Largest `n` [`randperm_prefix`] reproduces (torch switches to 64-bit draws above it).
pub const RANDPERM_MAX: usize = (u32::MAX / 20) as usize - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_standard_sequence() {
        // std::mt19937 with its default seed 5489: the 10000th output is 4123659995.
        let mut rng = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = rng.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
        // Only the low 32 bits of the seed count.
        assert_eq!(
            Mt19937::new(5489 + (7 << 32)).next_u32(),
            Mt19937::new(5489).next_u32()
        );
    }

    #[test]
    fn prefix_is_a_prefix_of_the_full_permutation() {
        let (mut full, mut part) = (Vec::new(), Vec::new());
        randperm_prefix(50, 50, 3, &mut full);
        randperm_prefix(50, 10, 3, &mut part);
        assert_eq!(full[..10], part[..10]);
        let mut sorted = full.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<u32>>());
        randperm_prefix(0, 5, 1, &mut part);
        assert!(part.is_empty());
    }
}
