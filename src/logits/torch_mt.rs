//! torch's CPU generator as `torch.Generator().manual_seed(s)` followed by `torch.randperm`
//! uses it: MT19937 seeded with the low 32 bits of `s`, and randperm's Fisher-Yates
//! shuffle drawing `random() % (n - i)`. transformers' green-list watermark picks its
//! green tokens this way, so reproducing it bit for bit is what makes ferrogen's
//! watermark the same as transformers' (and detectable by its `WatermarkDetector`).

const N: usize = 624;
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
        for i in 0..N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % N] & 0x7fff_ffff);
            let mut v = self.state[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.next = 0;
    }

    /// The generator's `random()`: the next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
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
