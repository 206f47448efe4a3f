//! torch's `exponential_()` on a CPU float tensor, from a `torch.get_rng_state()` snapshot:
//! what `torch.multinomial` draws (one `Exp(1)` per entry) for beam sampling without a
//! seed, so the search samples what transformers samples under `torch.manual_seed`.
//!
//! torch's CPU kernel is serial: entry `e` takes the generator's 64-bit draw number `e`
//! (two 32-bit words, the first the high half), keeps its low 53 bits as `u` in [0, 1)
//! and stores `(float)(-1.0 * log1p(-u))`, in double. Only the words are sequential, and
//! they are cheap (a twist per 624 words); the `log1p` is what cost torch ~20 ns an
//! entry. So the words are generated up front ([`TorchExponential::draw`]) and an entry
//! is only transformed when the search reads it ([`TorchExponential::at`]): with a top-k
//! warper that is a few thousand of the `batch × beams × vocab` entries. Every read entry
//! is torch's to the bit (the same glibc `log1p`, the same double operations).

use crate::buffers;
use crate::error::{CoreError, Result};
use crate::logits::torch_mt::{temper, twist_into, N};

/// Bytes of `torch.get_rng_state()` for the CPU generator (`CPUGeneratorImplState`).
pub const TORCH_STATE_BYTES: usize = 5056;
/// `legacy_pod.left`: an `i32`, 1 to 624; `left - 1` words of the state are still unread.
const LEFT_AT: usize = 8;
/// `legacy_pod.next`: a `u64`, the index of the next unread word.
const NEXT_AT: usize = 16;
/// `legacy_pod.state`: 624 words, each stored as a `u64`.
const STATE_AT: usize = 24;

/// The generator words of one `exponential_()` call, untempered, in draw order.
#[derive(Debug, Default, Clone)]
pub struct TorchExponential {
    /// The unread words of the starting state, then whole twisted blocks end to end.
    words: Vec<u32>,
    /// Entries drawn by the last [`Self::draw`].
    len: usize,
}

impl TorchExponential {
    /// Draws `len` entries from the generator `state` (`torch.get_rng_state()` bytes)
    /// and writes the state torch would hold afterwards back into `state`. The buffer is
    /// kept for the next call.
    pub fn draw(&mut self, state: &mut [u8], len: usize) -> Result<()> {
        let (mut block, next, left) = read_state(state)?;
        let unread = left - 1;
        let count = buffers::product("noise", &[len, 2])?;
        let blocks = count.saturating_sub(unread).div_ceil(N);
        let total = buffers::product("noise", &[blocks, N])?
            .checked_add(unread)
            .ok_or_else(|| CoreError::invalid("noise", "the size overflows"))?;
        if self.words.len() < total {
            self.words = buffers::filled("noise", total, 0u32)?;
        }
        let words = &mut self.words[..total];
        words[..unread].copy_from_slice(&block[next..next + unread]);
        if blocks == 0 {
            write_state(state, None, next + count, left - count);
        } else {
            twist_into(&block, &mut words[unread..unread + N]);
            for b in 1..blocks {
                let (prev, out) = words[unread + (b - 1) * N..].split_at_mut(N);
                twist_into(prev, out);
            }
            let last = &words[unread + (blocks - 1) * N..];
            block.copy_from_slice(last);
            let used = count - unread - (blocks - 1) * N;
            write_state(state, Some(&block), used, N - used + 1);
        }
        self.len = len;
        Ok(())
    }

    /// Entries drawn by the last [`Self::draw`].
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entry `e` of the last draw (`e < len()`), as torch's `exponential_()` stores it.
    #[inline]
    pub fn at(&self, e: usize) -> f32 {
        let hi = temper(self.words[2 * e]) as u64;
        let lo = temper(self.words[2 * e + 1]) as u64;
        let u = (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64);
        // torch's `-1.0 / lambda * log1p(-u)`, lambda = 1: a negation
        (-(-u).ln_1p()) as f32
    }
}

/// The state words, `next` and `left` of torch's state bytes, checked.
fn read_state(state: &[u8]) -> Result<([u32; N], usize, usize)> {
    let bad = |why: String| CoreError::invalid("torch_rng_state", why);
    if state.len() != TORCH_STATE_BYTES {
        return Err(bad(format!(
            "must be torch.get_rng_state() of the CPU generator ({TORCH_STATE_BYTES} bytes), got {} bytes",
            state.len()
        )));
    }
    let word = |at: usize, bytes: usize| {
        let mut b = [0u8; 8];
        b[..bytes].copy_from_slice(&state[at..at + bytes]);
        u64::from_le_bytes(b)
    };
    let left = word(LEFT_AT, 4) as u32 as i32;
    let next = word(NEXT_AT, 8);
    // torch keeps `left + next == 625` once it has twisted, and `left == 1` before
    if !(1..=N as i32).contains(&left)
        || next > N as u64
        || (left > 1 && left as u64 + next != N as u64 + 1)
    {
        return Err(bad(format!(
            "holds left = {left}, next = {next}: not a state torch wrote"
        )));
    }
    let mut block = [0u32; N];
    for (i, w) in block.iter_mut().enumerate() {
        *w = word(STATE_AT + 8 * i, 8) as u32;
    }
    Ok((block, next as usize, left as usize))
}

/// Writes `next`, `left` and (when given) the state words into torch's state bytes.
fn write_state(state: &mut [u8], block: Option<&[u32; N]>, next: usize, left: usize) {
    state[LEFT_AT..LEFT_AT + 4].copy_from_slice(&(left as i32).to_le_bytes());
    state[NEXT_AT..NEXT_AT + 8].copy_from_slice(&(next as u64).to_le_bytes());
    if let Some(block) = block {
        for (i, &w) in block.iter().enumerate() {
            state[STATE_AT + 8 * i..STATE_AT + 8 * i + 8]
                .copy_from_slice(&(w as u64).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logits::torch_mt::Mt19937;

    /// torch's state bytes for `torch.manual_seed(seed)` followed by `words` 32-bit draws.
    fn torch_state(seed: u64, words: usize) -> Vec<u8> {
        let mut rng = Mt19937::new(seed);
        for _ in 0..words {
            rng.next_u32();
        }
        let mut state = vec![0u8; TORCH_STATE_BYTES];
        let (block, next) = rng.parts();
        // before the first twist torch reads left = 1, next = 0 (the seeded state)
        let left = if next == N && words == 0 {
            1
        } else {
            N - next + 1
        };
        let next = if words == 0 { 0 } else { next };
        write_state(&mut state, Some(block), next, left);
        state
    }

    /// The reference: entry by entry from the generator, as torch's serial kernel.
    fn serial(seed: u64, skip: usize, len: usize) -> Vec<f32> {
        let mut rng = Mt19937::new(seed);
        for _ in 0..skip {
            rng.next_u32();
        }
        (0..len)
            .map(|_| {
                let hi = rng.next_u32() as u64;
                let lo = rng.next_u32() as u64;
                let u = (((hi << 32) | lo) & ((1 << 53) - 1)) as f64 / (1u64 << 53) as f64;
                (-(-u).ln_1p()) as f32
            })
            .collect()
    }

    #[test]
    fn draws_the_serial_stream_across_blocks_and_advances_the_state() {
        let mut noise = TorchExponential::default();
        for (skip, len) in [
            (0, 1),
            (0, 312),
            (0, 313),
            (3, 5000),
            (623, 2),
            (624, 311),
            (1, 0),
        ] {
            let mut state = torch_state(9, skip);
            noise.draw(&mut state, len).unwrap();
            let want = serial(9, skip, len);
            let got: Vec<f32> = (0..len).map(|e| noise.at(e)).collect();
            assert_eq!(got, want, "skip {skip}, len {len}");
            // the written state continues the stream where the draw stopped
            noise.draw(&mut state, 7).unwrap();
            let after: Vec<f32> = (0..7).map(|e| noise.at(e)).collect();
            assert_eq!(
                after,
                serial(9, skip + 2 * len, 7)[..],
                "skip {skip}, len {len}"
            );
        }
    }

    #[test]
    fn states_torch_did_not_write_are_refused() {
        let mut noise = TorchExponential::default();
        assert!(noise.draw(&mut vec![0u8; 100], 4).is_err());
        let mut state = torch_state(1, 10);
        state[LEFT_AT..LEFT_AT + 4].copy_from_slice(&0i32.to_le_bytes());
        assert!(noise.draw(&mut state, 4).is_err());
        let mut state = torch_state(1, 10);
        state[NEXT_AT..NEXT_AT + 8].copy_from_slice(&5u64.to_le_bytes());
        assert!(noise.draw(&mut state, 4).is_err());
        assert!(noise.draw(&mut torch_state(1, 10), usize::MAX).is_err());
    }
}
