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
//!
//! No words are stored: [`TorchExponential::draw`] twists through the blocks once to hand
//! torch its advanced state, and the reads (which come in increasing order within a step)
//! twist forward again from the saved start. Two 2.5 KB blocks instead of the 25 MB that
//! 3.2M entries' words would take, which is as much as the model's LM head and evicted it
//! from the cache every step.

use crate::buffers;
use crate::error::{CoreError, Result};
use crate::logits::torch_mt::{temper, twist_into, N};

/// Bytes of `torch.get_rng_state()` for the CPU generator (`CPUGeneratorImplState`).
pub const TORCH_STATE_BYTES: usize = 5056;
/// The most entries one draw takes: 2^32. The draw twists the generator through two words an
/// entry with the GIL held (between the caller's `get_rng_state` and `set_rng_state`), so its
/// time is bounded by this, not only by what fits a `usize`: 2^33 words are a few seconds at the
/// measured 0.4 ns a word. No real run comes near it: it is a 16 GiB float32 logits tensor
/// (`batch × beams × vocab`), of which transformers' beam sampling holds three (logits, probs,
/// `torch.multinomial`'s noise), beyond the 24–128 GiB machines this runs on; and
/// `torch.multinomial` itself refuses more than 2^24 categories (`beams × vocab`) a row.
pub const MAX_DRAW: u64 = 1 << 32;
/// `legacy_pod.left`: an `i32`, 1 to 624; `left - 1` words of the state are still unread.
const LEFT_AT: usize = 8;
/// `legacy_pod.next`: a `u64`, the index of the next unread word.
const NEXT_AT: usize = 16;
/// `legacy_pod.state`: 624 words, each stored as a `u64`.
const STATE_AT: usize = 24;

/// One `exponential_()` call's draws, read forward from the generator state it started at.
#[derive(Debug, Clone)]
pub struct TorchExponential {
    /// The state before the draws; its words from `next` on (`unread` of them) come first.
    start: Box<[u32; N]>,
    next: usize,
    unread: usize,
    /// The block the reads stand on (`block` twists after `start`), and a spare to twist into.
    cur: Box<[u32; N]>,
    spare: Box<[u32; N]>,
    block: usize,
    /// Entries drawn by the last [`Self::draw`].
    len: usize,
}

impl Default for TorchExponential {
    fn default() -> Self {
        TorchExponential {
            start: Box::new([0; N]),
            next: 0,
            unread: 0,
            cur: Box::new([0; N]),
            spare: Box::new([0; N]),
            block: 0,
            len: 0,
        }
    }
}

impl TorchExponential {
    /// Draws `len` entries from the generator `state` (`torch.get_rng_state()` bytes)
    /// and writes the state torch would hold afterwards back into `state`.
    /// At most [`MAX_DRAW`] entries.
    pub fn draw(&mut self, state: &mut [u8], len: usize) -> Result<()> {
        Self::check_len("noise", len)?;
        let (block, next, left) = read_state(state)?;
        let count = buffers::product("noise", &[len, 2])?;
        *self.start = block;
        (self.next, self.unread) = (next, left - 1);
        self.rewind();
        if count <= self.unread {
            write_state(state, None, next + count, left - count);
        } else {
            let blocks = (count - self.unread).div_ceil(N);
            self.advance_to(blocks);
            let used = count - self.unread - (blocks - 1) * N;
            write_state(state, Some(&*self.cur), used, N - used + 1);
            self.rewind();
        }
        self.len = len;
        Ok(())
    }

    /// `len` entries to draw, or an error naming `name` when they are more than [`MAX_DRAW`].
    pub fn check_len(name: &'static str, len: usize) -> Result<()> {
        if len as u64 > MAX_DRAW {
            return Err(CoreError::invalid(
                name,
                format!(
                    "one draw of torch's noise takes at most 2^32 ({MAX_DRAW}) entries, got {len}"
                ),
            ));
        }
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
    /// Fastest when called in increasing `e`; an earlier entry twists again from the start.
    #[inline]
    pub fn at(&mut self, e: usize) -> f32 {
        let hi = self.word(2 * e);
        let lo = self.word(2 * e + 1);
        transform(hi, lo)
    }

    /// Entries `base..base + out.len()` (within `len()`), as [`Self::at`] gives them: for a
    /// reader of every entry, the words copied block by block into `words` (kept for the
    /// next call), then transformed in a loop whose iterations do not depend on each other.
    pub fn fill(&mut self, base: usize, out: &mut [f32], words: &mut Vec<u32>) -> Result<()> {
        let (mut p, end) = (2 * base, 2 * (base + out.len()));
        words.clear();
        words
            .try_reserve(end - p)
            .map_err(|_| CoreError::OutOfMemory {
                name: "noise",
                bytes: (end - p) * 4,
            })?;
        while p < end {
            if p < self.unread {
                let stop = end.min(self.unread);
                words.extend_from_slice(&self.start[self.next + p..self.next + stop]);
                p = stop;
                continue;
            }
            let q = p - self.unread;
            if q / N + 1 < self.block {
                self.rewind();
            }
            self.advance_to(q / N + 1);
            let take = (N - q % N).min(end - p);
            words.extend_from_slice(&self.cur[q % N..q % N + take]);
            p += take;
        }
        for (o, w) in out.iter_mut().zip(words.chunks_exact(2)) {
            *o = transform(w[0], w[1]);
        }
        Ok(())
    }

    /// Untempered word `p` of the draws.
    #[inline]
    fn word(&mut self, p: usize) -> u32 {
        if p < self.unread {
            return self.start[self.next + p];
        }
        let q = p - self.unread;
        let block = q / N + 1;
        if block < self.block {
            self.rewind();
        }
        self.advance_to(block);
        self.cur[q % N]
    }

    fn rewind(&mut self) {
        *self.cur = *self.start;
        self.block = 0;
    }

    fn advance_to(&mut self, block: usize) {
        while self.block < block {
            twist_into(&*self.cur, &mut *self.spare);
            std::mem::swap(&mut self.cur, &mut self.spare);
            self.block += 1;
        }
    }
}

/// One entry from its two untempered words: the first is the high half of torch's 64-bit
/// draw, whose low 53 bits are `u`; torch's `-1.0 / lambda * log1p(-u)` with lambda = 1 is
/// a negation, computed in double and stored as float.
#[inline(always)]
fn transform(hi: u32, lo: u32) -> f32 {
    let bits = ((temper(hi) as u64) << 32) | temper(lo) as u64;
    let u = (bits & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64);
    (-(-u).ln_1p()) as f32
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
            // out of order: the reads twist again from the start, same values
            if len > 400 {
                assert_eq!(noise.at(len - 1), want[len - 1]);
                assert_eq!(noise.at(3), want[3]);
            }
            assert_eq!(got, want, "skip {skip}, len {len}");
            let mut bulk = vec![0.0; len.saturating_sub(1)];
            noise.fill(1.min(len), &mut bulk, &mut Vec::new()).unwrap();
            assert_eq!(bulk, want[1.min(len)..], "fill, skip {skip}, len {len}");
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
        assert!(noise.draw(&mut [0u8; 100], 4).is_err());
        let mut state = torch_state(1, 10);
        state[LEFT_AT..LEFT_AT + 4].copy_from_slice(&0i32.to_le_bytes());
        assert!(noise.draw(&mut state, 4).is_err());
        let mut state = torch_state(1, 10);
        state[NEXT_AT..NEXT_AT + 8].copy_from_slice(&5u64.to_le_bytes());
        assert!(noise.draw(&mut state, 4).is_err());
        assert!(noise.draw(&mut torch_state(1, 10), usize::MAX).is_err());
    }

    #[test]
    fn a_draw_beyond_the_cap_is_refused_before_any_twist() {
        let mut noise = TorchExponential::default();
        let mut state = torch_state(3, 10);
        let before = state.clone();
        let over = MAX_DRAW as usize + 1;
        let err = noise.draw(&mut state, over).unwrap_err().to_string();
        assert!(err.starts_with("noise:"), "{err}");
        assert_eq!(state, before, "the state is untouched");
        assert!(TorchExponential::check_len("n", MAX_DRAW as usize).is_ok());
    }
}
