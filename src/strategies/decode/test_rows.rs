//! What the row-surgery tests (`append_rows`, `replace_rows`) share: seeded decoders and
//! made-up logits that differ by row and step.

use super::Decoder;
use crate::logits::PipelineConfig;

/// A seeded decoder over `rows` prompts of equal width (`prompts` row-major).
pub(super) fn sampler(prompts: &[i64], rows: usize, seed: u64, config: &PipelineConfig) -> Decoder {
    let width = prompts.len() / rows;
    let keyed: Vec<Vec<i64>> = prompts.chunks(width).map(<[i64]>::to_vec).collect();
    Decoder::new(prompts, rows, config, 0)
        .unwrap()
        .seeded(seed, &keyed)
        .unwrap()
}

/// Logits `[rows, vocab]` for `step`; row `r` is shifted by `r`, so rows differ.
pub(super) fn logits(rows: usize, vocab: usize, step: usize) -> Vec<f32> {
    (0..rows * vocab)
        .map(|i| ((i % vocab) * 7 + step * 3 + i / vocab) as f32 % 5.0 * 0.3)
        .collect()
}
