//! Classifier-free guidance (`guidance_scale`): transformers'
//! `UnbatchedClassifierFreeGuidanceLogitsProcessor`, the logit arithmetic only. The
//! unconditional forward pass (over the negative prompt, with its own cache) is the
//! model's business and runs in the caller; this combines its logits with the
//! conditional ones.

use crate::error::{CoreError, Result};

/// `scale * (log_softmax(cond) - log_softmax(uncond)) + log_softmax(uncond)`, written
/// into `cond`, as transformers computes it in float32. `cond` is `[rows, vocab]`;
/// `uncond` is `[rows, vocab]` or one `[vocab]` row shared by every row (torch
/// broadcasting, which transformers relies on for one negative prompt and several beams).
///
/// A row whose log-softmax torch gives as NaN (a NaN or +inf entry, or nothing above
/// -inf) is NaN here too, so the result is NaN wherever transformers' is.
pub fn apply_guidance(cond: &mut [f32], uncond: &[f32], vocab: usize, scale: f64) -> Result<()> {
    if vocab == 0 || cond.len() % vocab != 0 || uncond.len() % vocab != 0 {
        return Err(CoreError::invalid(
            "unconditional logits",
            "both logits arrays must be [rows, vocab] with the same vocabulary",
        ));
    }
    let rows = cond.len() / vocab;
    let uncond_rows = uncond.len() / vocab;
    if uncond_rows != rows && uncond_rows != 1 {
        return Err(CoreError::invalid(
            "unconditional logits",
            "must have one row or as many rows as the conditional logits",
        ));
    }
    let scale = scale as f32; // torch multiplies a float32 tensor by the scalar in float32
                              // one negative row shared by every row (torch broadcasting): its log-softmax once
    let shared = (uncond_rows == 1).then(|| {
        let mut u = uncond[..vocab].to_vec();
        log_softmax(&mut u);
        u
    });
    let guide = |r: usize, row: &mut [f32], scratch: &mut Vec<f32>| {
        let u: &[f32] = match &shared {
            Some(u) => u,
            None => {
                scratch.clear();
                scratch.extend_from_slice(&uncond[r * vocab..(r + 1) * vocab]);
                log_softmax(scratch);
                scratch
            }
        };
        log_softmax(row);
        for (x, &u) in row.iter_mut().zip(u) {
            *x = scale * (*x - u) + u;
        }
    };
    // Three passes over every entry (two log-softmaxes and the blend): beam rows (batch x
    // beams x vocab) are worth the pool, as torch's own threads would take them.
    if crate::parallel::worth_parallel(rows, cond.len().saturating_mul(3)) {
        use rayon::prelude::*;
        cond.par_chunks_mut(vocab)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (r, row)| guide(r, row, scratch));
    } else {
        let mut scratch = Vec::new();
        for (r, row) in cond.chunks_exact_mut(vocab).enumerate() {
            guide(r, row, &mut scratch);
        }
    }
    Ok(())
}

/// torch's `log_softmax` of one row: `(x - max) - log(sum(exp(x - max)))`; all NaN where
/// torch's is (any NaN or +inf entry, or no entry above -inf).
pub fn log_softmax(row: &mut [f32]) {
    use crate::logits::math;
    // `math::max` skips NaN, so a NaN is looked for on its own; +inf shows as the maximum.
    let m = math::max(row);
    if m.is_infinite() || row.iter().any(|x| x.is_nan()) {
        row.fill(f32::NAN);
        return;
    }
    // The project's vectorised exp (f32 lanes, f64 across blocks), as the samplers and beam
    // scores use: a scalar f64 `exp` per entry cost 5 ms per step at 4 × 50k, more than the
    // unconditional forward pass of a small model.
    let ln_s = math::sum_exp(row, m).ln() as f32;
    for x in row.iter_mut() {
        *x = (*x - m) - ln_s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(cond: &[f32], uncond: &[f32], scale: f32) -> Vec<f32> {
        let ls = |v: &[f32]| {
            let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let s: f64 = v.iter().map(|&x| ((x - m) as f64).exp()).sum();
            v.iter()
                .map(|&x| (x - m) - s.ln() as f32)
                .collect::<Vec<_>>()
        };
        let (c, u) = (ls(cond), ls(uncond));
        c.iter().zip(&u).map(|(c, u)| scale * (c - u) + u).collect()
    }

    #[test]
    fn combines_log_probabilities_per_row_and_broadcasts_one_row() {
        let mut cond = vec![1.0, 2.0, 3.0, 0.5, -1.0, 0.0];
        let uncond = vec![0.0, 1.0, 0.0];
        let want: Vec<f32> = [
            reference(&cond[..3], &uncond, 1.5),
            reference(&cond[3..], &uncond, 1.5),
        ]
        .concat();
        apply_guidance(&mut cond, &uncond, 3, 1.5).unwrap();
        for (a, b) in cond.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn scale_one_leaves_the_conditional_log_probabilities() {
        let mut cond = vec![1.0, 2.0, 3.0];
        let mut want = cond.clone();
        log_softmax(&mut want);
        apply_guidance(&mut cond, &[5.0, -2.0, 0.0], 3, 1.0).unwrap();
        for (a, b) in cond.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn undefined_rows_are_nan_like_torch() {
        let mut cond = vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0, f32::NAN];
        apply_guidance(&mut cond, &[0.0, 0.0], 2, 2.0).unwrap();
        assert!(cond.iter().all(|x| x.is_nan()));
        let mut cond = vec![0.0, -1.0];
        apply_guidance(&mut cond, &[f32::INFINITY, 0.0], 2, 2.0).unwrap();
        assert!(cond.iter().all(|x| x.is_nan()));
    }

    #[test]
    fn rows_worth_the_pool_give_the_serial_result() {
        // 8 x 50k: three passes over 400k entries go to rayon's pool where it has threads
        let (rows, vocab) = (8, 50_000);
        let cond: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0)
            .collect();
        let uncond: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 104_729) % 977) as f32 / 89.0)
            .collect();
        for u_rows in [rows, 1] {
            let u = &uncond[..u_rows * vocab];
            let mut got = cond.clone();
            apply_guidance(&mut got, u, vocab, 2.5).unwrap();
            for (r, row) in got.chunks_exact(vocab).enumerate() {
                let ur = if u_rows == 1 { 0 } else { r };
                let want = reference(
                    &cond[r * vocab..(r + 1) * vocab],
                    &u[ur * vocab..(ur + 1) * vocab],
                    2.5,
                );
                for (a, b) in row.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        assert!(apply_guidance(&mut [0.0; 6], &[0.0; 4], 3, 2.0).is_err());
        assert!(apply_guidance(&mut [0.0; 6], &[0.0; 6], 0, 2.0).is_err());
        assert!(apply_guidance(&mut [0.0; 12], &[0.0; 6], 3, 2.0).is_err());
        assert!(apply_guidance(&mut [], &[0.0; 3], 3, 2.0).is_ok());
    }
}
