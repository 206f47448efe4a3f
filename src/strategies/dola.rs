//! DoLa (decoding by contrasting layers, Chuang et al. 2023): the next-token logits become the
//! final layer's log-probabilities minus those of an earlier ("premature") layer, over the
//! tokens the final layer finds plausible.
//!
//! Parity: transformers 4.55's `_dola_select_contrast` and `_relative_top_filter` (DoLa left
//! the library in 5.x). With several candidate layers, the premature layer is the one whose
//! distribution is farthest from the final layer's by Jensen-Shannon divergence, averaged over
//! the vocabulary and then over the *whole batch*: one layer for all rows of a step, as there.
//! Tokens whose final log-probability is below `max + ln(0.1)` get `-inf`.
//!
//! The model (and projecting the premature layers' hidden states through the LM head) stays
//! in Python; this module sees only logits.

use crate::error::{CoreError, Result};

/// transformers' `relative_top`: keep tokens at least this fraction as likely as the best one.
const RELATIVE_TOP: f64 = 0.1;

/// The shape of one DoLa step: `rows` rows of `vocab` logits, `layers` candidate layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DolaShape {
    pub rows: usize,
    pub vocab: usize,
    pub layers: usize,
}

impl DolaShape {
    /// Checks the buffers' lengths against the shape (products checked, nothing allocated).
    fn check(&self, final_len: usize, premature_len: usize) -> Result<()> {
        let per_layer = self.rows.checked_mul(self.vocab).ok_or_else(|| {
            CoreError::invalid("final_logits", "rows * vocab overflows the address space")
        })?;
        let all = per_layer.checked_mul(self.layers).ok_or_else(|| {
            CoreError::invalid(
                "premature_logits",
                "layers * rows * vocab overflows the address space",
            )
        })?;
        if self.layers == 0 {
            return Err(CoreError::invalid(
                "premature_logits",
                "DoLa needs at least one premature layer to contrast with",
            ));
        }
        if final_len != per_layer {
            return Err(shape_error(
                "final_logits",
                format!("[{}, {}]", self.rows, self.vocab),
                final_len,
            ));
        }
        if premature_len != all {
            return Err(shape_error(
                "premature_logits",
                format!("[{}, {}, {}]", self.layers, self.rows, self.vocab),
                premature_len,
            ));
        }
        Ok(())
    }
}

fn shape_error(name: &'static str, expected: String, got: usize) -> CoreError {
    CoreError::Shape {
        name,
        expected,
        got: format!("{got} values"),
    }
}

/// Replaces `final_logits` (`[rows, vocab]`) by the DoLa contrast against the layer chosen from
/// `premature` (`[layers, rows, vocab]`, the candidate layers in the caller's order) and returns
/// that layer's position in the candidate list. NaN propagates as in torch (a NaN row stays NaN).
pub fn contrast(final_logits: &mut [f32], premature: &[f32], shape: DolaShape) -> Result<usize> {
    shape.check(final_logits.len(), premature.len())?;
    if shape.rows == 0 || shape.vocab == 0 {
        return Ok(0);
    }
    let per_layer = shape.rows * shape.vocab;
    let chosen = if shape.layers == 1 {
        0
    } else {
        most_divergent_layer(final_logits, premature, shape)
    };
    let base = &premature[chosen * per_layer..(chosen + 1) * per_layer];
    let mut final_lp = Vec::new();
    let mut base_lp = Vec::new();
    for (row, base_row) in final_logits
        .chunks_exact_mut(shape.vocab)
        .zip(base.chunks_exact(shape.vocab))
    {
        log_softmax_into(row, &mut final_lp);
        log_softmax_into(base_row, &mut base_lp);
        contrast_row(row, &final_lp, &base_lp);
    }
    Ok(chosen)
}

/// `_relative_top_filter` then `final - base` for one row (both already log-softmaxed, in f64).
/// The threshold is computed and compared in f32, as torch does on float32 logits.
fn contrast_row(out: &mut [f32], final_lp: &[f64], base_lp: &[f64]) {
    let best = final_lp
        .iter()
        .map(|&v| v as f32)
        .fold(f32::NEG_INFINITY, nan_max);
    let threshold = best + RELATIVE_TOP.ln() as f32;
    for ((o, &f), &b) in out.iter_mut().zip(final_lp).zip(base_lp) {
        let f32_f = f as f32;
        // `<` is false for NaN: a NaN stays and propagates, as with torch's boolean mask.
        *o = if f32_f < threshold {
            f32::NEG_INFINITY
        } else {
            f32_f - b as f32
        };
    }
}

/// torch.max: NaN wins.
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// Position of the candidate layer with the largest batch-mean JS divergence from the final
/// layer; the first on ties, and a NaN divergence counts as the largest (torch.argmax).
fn most_divergent_layer(final_logits: &[f32], premature: &[f32], shape: DolaShape) -> usize {
    let per_layer = shape.rows * shape.vocab;
    let mut final_lp = Vec::new();
    let mut layer_lp = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    for layer in 0..shape.layers {
        let logits = &premature[layer * per_layer..(layer + 1) * per_layer];
        let mut total = 0.0f64;
        for (f_row, l_row) in final_logits
            .chunks_exact(shape.vocab)
            .zip(logits.chunks_exact(shape.vocab))
        {
            log_softmax_into(f_row, &mut final_lp);
            log_softmax_into(l_row, &mut layer_lp);
            total += js_divergence(&final_lp, &layer_lp);
        }
        let mean = total / shape.rows as f64;
        best = match best {
            Some((_, b)) if b.is_nan() => best,
            Some((_, b)) if !(mean > b) && !mean.is_nan() => best,
            _ => Some((layer, mean)),
        };
    }
    best.map_or(0, |(layer, _)| layer)
}

/// `0.5 * (KL(M || P) + KL(M || Q))` with `M = (P + Q) / 2`, each KL averaged over the vocabulary
/// (torch's `F.kl_div(log P, M, reduction="none").mean(-1)`, where `0 * log 0 = 0`).
fn js_divergence(p_lp: &[f64], q_lp: &[f64]) -> f64 {
    let mut kl_p = 0.0f64;
    let mut kl_q = 0.0f64;
    for (&lp, &lq) in p_lp.iter().zip(q_lp) {
        let m = 0.5 * (lp.exp() + lq.exp());
        let m_log_m = if m == 0.0 { 0.0 } else { m * m.ln() };
        kl_p += m_log_m - m * lp;
        kl_q += m_log_m - m * lq;
    }
    let n = p_lp.len() as f64;
    0.5 * (kl_p / n + kl_q / n)
}

/// Log-softmax of one row in f64 (`-inf` entries stay `-inf`; a row of `-inf` or with a NaN or
/// `+inf` becomes NaN, as torch's log_softmax gives).
fn log_softmax_into(row: &[f32], out: &mut Vec<f64>) {
    out.clear();
    out.extend(row.iter().map(|&v| f64::from(v)));
    let max = out.iter().copied().fold(f64::NEG_INFINITY, |a, b| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    });
    let sum: f64 = out.iter().map(|&v| (v - max).exp()).sum();
    let lse = max + sum.ln();
    for v in out.iter_mut() {
        *v -= lse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(rows: usize, vocab: usize, layers: usize) -> DolaShape {
        DolaShape {
            rows,
            vocab,
            layers,
        }
    }

    fn log_softmax(row: &[f32]) -> Vec<f64> {
        let mut out = Vec::new();
        log_softmax_into(row, &mut out);
        out
    }

    #[test]
    fn one_layer_contrasts_plausible_tokens_only() {
        let mut fin = vec![3.0f32, 2.9, 0.0, -5.0];
        let base = vec![2.0f32, 1.0, 3.0, 4.0];
        let (f, b) = (log_softmax(&fin), log_softmax(&base));
        assert_eq!(contrast(&mut fin, &base, shape(1, 4, 1)), Ok(0));
        // tokens 2 and 3 are below 0.1 * p(best) in the final layer
        assert_eq!(fin[2], f32::NEG_INFINITY);
        assert_eq!(fin[3], f32::NEG_INFINITY);
        assert!((fin[0] - (f[0] - b[0]) as f32).abs() < 1e-6);
        assert!((fin[1] - (f[1] - b[1]) as f32).abs() < 1e-6);
        // the contrast flips the choice: token 1 grew more between the layers than token 0
        assert!(fin[1] > fin[0]);
    }

    #[test]
    fn picks_the_layer_farthest_from_the_final_one() {
        let fin = vec![4.0f32, 0.0, 0.0];
        let near = vec![3.9f32, 0.0, 0.0];
        let far = vec![0.0f32, 4.0, 0.0];
        let premature: Vec<f32> = [near.clone(), far.clone(), near].concat();
        let mut out = fin.clone();
        assert_eq!(contrast(&mut out, &premature, shape(1, 3, 3)), Ok(1));
        let mut alone = fin;
        contrast(&mut alone, &far, shape(1, 3, 1)).unwrap();
        assert_eq!(out, alone);
    }

    #[test]
    fn the_layer_is_chosen_for_the_whole_batch() {
        // row 0 alone would pick layer 0, but row 1's divergence from layer 1 dominates the mean
        let fin = vec![1.0f32, 0.0, 5.0, 0.0];
        let layer0 = vec![0.0f32, 1.0, 5.0, 0.0];
        let layer1 = vec![1.0f32, 0.0, 0.0, 5.0];
        let premature = [layer0, layer1].concat();
        let mut out = fin;
        assert_eq!(contrast(&mut out, &premature, shape(2, 2, 2)), Ok(1));
    }

    #[test]
    fn identical_divergences_pick_the_first_layer() {
        let mut fin = vec![1.0f32, 2.0];
        let premature = vec![0.0f32, 0.0, 0.0, 0.0];
        assert_eq!(contrast(&mut fin, &premature, shape(1, 2, 2)), Ok(0));
    }

    #[test]
    fn nan_propagates_and_does_not_panic() {
        let mut fin = vec![f32::NAN, 1.0];
        assert_eq!(
            contrast(&mut fin, &[0.0, 0.0, 1.0, 1.0], shape(1, 2, 2)),
            Ok(0)
        );
        assert!(fin.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn minus_infinity_stays_filtered() {
        let mut fin = vec![f32::NEG_INFINITY, 1.0, 1.0];
        contrast(&mut fin, &[0.0, f32::NEG_INFINITY, 0.0], shape(1, 3, 1)).unwrap();
        assert_eq!(fin[0], f32::NEG_INFINITY);
        assert_eq!(fin[1], f32::INFINITY); // final - (-inf), as torch computes it
        assert!(fin[2].is_finite());
    }

    #[test]
    fn empty_batches_are_fine_and_bad_shapes_are_errors() {
        assert_eq!(contrast(&mut [], &[], shape(0, 5, 2)), Ok(0));
        assert!(matches!(
            contrast(&mut [0.0; 3], &[0.0; 3], shape(1, 3, 0)),
            Err(CoreError::InvalidArgument {
                name: "premature_logits",
                ..
            })
        ));
        assert!(matches!(
            contrast(&mut [0.0; 3], &[0.0; 5], shape(1, 3, 2)),
            Err(CoreError::Shape {
                name: "premature_logits",
                ..
            })
        ));
        assert!(matches!(
            contrast(&mut [0.0; 2], &[0.0; 3], shape(1, 3, 1)),
            Err(CoreError::Shape {
                name: "final_logits",
                ..
            })
        ));
        assert!(contrast(&mut [], &[], shape(usize::MAX, 2, 1)).is_err());
        assert!(contrast(&mut [], &[], shape(2, usize::MAX / 2, 3)).is_err());
    }
}
