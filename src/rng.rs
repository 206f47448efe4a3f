//! Counter-based randomness for sampling: Philox4x32-10 (Salmon et al., SC'11) and the
//! derivation of one key per row.
//!
//! A draw is a pure function of `(row key, step)`: no state, no global generator. The
//! row key hashes the seed, the row's prompt without padding, how many earlier rows of
//! the batch had the identical prompt, and the return-sequence index. So a row samples
//! the same tokens whatever the batch size, the row order or the number of threads,
//! and duplicated prompts (or `num_return_sequences` copies) still differ.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds: 128 random bits from a 128-bit counter and a 64-bit key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Domain tag in the counter's last word, so other uses of the same key never collide.
const SAMPLE_STREAM: u32 = 0x5A4D_504C;

/// A uniform double in `[0, 1)` with 53 random bits, for `(key, step)`.
pub fn uniform(key: u64, step: u64) -> f64 {
    let out = philox4x32_10(
        [step as u32, (step >> 32) as u32, 0, SAMPLE_STREAM],
        [key as u32, (key >> 32) as u32],
    );
    let bits = ((out[0] as u64) << 21) ^ ((out[1] as u64) >> 11);
    (bits & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Streams other than the token draw that a row's key feeds: each is a different
/// counter word, so their uniforms never coincide with the draw's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
    /// XTC's "exclude this step?" coin.
    Xtc = 1,
}

/// A uniform double in `[0, 1)` for `(key, step)` on `stream` (independent of
/// [`uniform`]'s draw for the same key and step).
pub fn stream_uniform(key: u64, step: u64, stream: Stream) -> f64 {
    let out = philox4x32_10(
        [
            step as u32,
            (step >> 32) as u32,
            stream as u32,
            SAMPLE_STREAM,
        ],
        [key as u32, (key >> 32) as u32],
    );
    let bits = ((out[0] as u64) << 21) ^ ((out[1] as u64) >> 11);
    (bits & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// SplitMix64's finaliser: a bijective 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn absorb(h: u64, x: u64) -> u64 {
    mix(h.wrapping_add(0x9E37_79B9_7F4A_7C15) ^ x)
}

/// A 64-bit digest of a prompt (its length and tokens).
pub fn prompt_hash(prompt: &[i64]) -> u64 {
    let mut h = absorb(0x6665_7272_6f67_656e, prompt.len() as u64); // "ferrogen"
    for &t in prompt {
        h = absorb(h, t as u64);
    }
    h
}

/// Key of one row: `seed`, its unpadded prompt, its occurrence index among identical
/// prompts earlier in the batch, and its return-sequence index.
pub fn row_key(seed: u64, prompt: &[i64], occurrence: u64, copy: u64) -> u64 {
    key_from_hash(seed, prompt_hash(prompt), occurrence, copy)
}

fn key_from_hash(seed: u64, prompt: u64, occurrence: u64, copy: u64) -> u64 {
    let h = absorb(absorb(0x7365_6564, seed), prompt); // "seed"
    absorb(absorb(h, occurrence), copy)
}

/// Keys of `prompts.len() * copies` rows laid out as `repeat_interleave(copies)` of the
/// prompts (the layout of `num_return_sequences`). Occurrence indices count identical
/// prompts among the earlier prompts (by digest: two different prompts with the same
/// digest would share a counter, which still leaves their keys different).
pub fn row_keys(seed: u64, prompts: &[Vec<i64>], copies: usize) -> Vec<u64> {
    let mut seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut keys = Vec::with_capacity(prompts.len() * copies);
    for p in prompts {
        let h = prompt_hash(p);
        let occurrence = seen.entry(h).or_insert(0);
        for c in 0..copies {
            keys.push(key_from_hash(seed, h, *occurrence, c as u64));
        }
        *occurrence += 1;
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123's `kat_vectors` (philox4x32 10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniform_is_in_range_and_roughly_flat() {
        let n = 100_000u64;
        let mut bins = [0u32; 10];
        for step in 0..n {
            let u = uniform(42, step);
            assert!((0.0..1.0).contains(&u));
            bins[(u * 10.0) as usize] += 1;
        }
        for b in bins {
            assert!((b as f64 - 10_000.0).abs() < 500.0, "{bins:?}");
        }
    }

    #[test]
    fn keys_depend_on_prompt_occurrence_and_copy_not_on_position() {
        let a = vec![5i64, 6];
        let b = vec![7i64];
        let k1 = row_keys(3, &[a.clone(), b.clone()], 2);
        let k2 = row_keys(3, &[b.clone(), a.clone()], 2);
        assert_eq!(k1[0..2], k2[2..4]);
        assert_eq!(k1[2..4], k2[0..2]);
        assert_ne!(k1[0], k1[1], "return sequences differ");
        let dup = row_keys(3, &[a.clone(), a.clone()], 1);
        assert_ne!(dup[0], dup[1], "duplicated prompts differ");
        assert_eq!(dup[0], k1[0]);
        assert_ne!(row_keys(4, &[a], 1)[0], k1[0], "seed matters");
    }
}
