//! The `constructors` target: every core search/decoder constructor with arbitrary sizes
//! (batch, rows, num_beams, groups, return sequences, max length, top_k), then one step
//! when it accepts them.
//!
//! Sizes are small (0..8) or huge (>= 2^61, so that every product of them with a row or
//! an element size overflows): the core must refuse the huge ones with an error naming
//! the argument, without asking the allocator. Sizes in between, whose buffers the
//! allocator may or may not grant, are left to the unit tests of `ferrogen_core::buffers`
//! and to tests/test_core_boundary.py (a child process under a memory limit): here
//! libFuzzer's malloc limit would report them as crashes.

use arbitrary::{Result, Unstructured};
use ferrogen_core::assisted::AssistedDecoder;
use ferrogen_core::beam::{
    BeamSearch, BeamSettings, ConstrainedBeamSearch, EarlyStopping, GroupBeamSearch, SampleSettings,
};
use ferrogen_core::constraints::{ConstraintSet, ConstraintSpec};
use ferrogen_core::contrastive::ContrastiveSearch;
use ferrogen_core::decode::Decoder;
use ferrogen_core::row_status::HasRowStatus;
use ferrogen_core::{CoreError, Result as CoreResult};

use crate::{f32_any, is_error, logits, pipeline_config, size, token, tokens};

pub fn constructors(data: &[u8]) {
    let _ = constructors_inner(&mut Unstructured::new(data));
}

/// Prompts for `rows` rows: `rows × width` tokens when that is small, else none (a huge
/// row count can only come with empty prompts).
fn prompts(u: &mut Unstructured<'_>, rows: usize, vocab: usize) -> Result<(Vec<i64>, usize)> {
    let width = if rows <= 8 { u.int_in_range(0..=4)? } else { 0 };
    let flat = (0..rows.min(8) * width)
        .map(|_| token(u, vocab))
        .collect::<Result<_>>()?;
    Ok((flat, width))
}

fn beam_settings(u: &mut Unstructured<'_>, vocab: usize) -> Result<BeamSettings> {
    Ok(BeamSettings {
        num_beams: size(u)?,
        num_beam_groups: if u.ratio(1u8, 2)? { 1 } else { size(u)? },
        diversity_penalty: 0.5,
        length_penalty: 1.0,
        early_stopping: EarlyStopping::Heuristic,
        max_length: size(u)?,
        num_return_sequences: if u.ratio(1u8, 2)? { 1 } else { size(u)? },
        eos_token_ids: tokens(u, vocab, 2)?,
        pad_token_id: 0,
        sample: if u.ratio(1u8, 4)? {
            Some(SampleSettings { item_keys: None })
        } else {
            None
        },
    })
}

/// Rejections must name something; acceptances must have built a usable object.
fn built<T>(r: CoreResult<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            is_error(&e);
            if let CoreError::OutOfMemory { name, .. } = &e {
                panic!("{name}: a huge size reached the allocator");
            }
            None
        }
    }
}

fn constructors_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let vocab = u.int_in_range(1..=10)?;
    let batch = size(u)?;
    let (flat, _) = prompts(u, batch, vocab)?;
    let config = pipeline_config(u, vocab, batch.min(8))?;
    match u.int_in_range(0u8..=5)? {
        0 => {
            let s = beam_settings(u, vocab)?;
            let noise_needed = s.sample.is_some();
            if let Some(mut b) = built(BeamSearch::new(&flat, batch, &config, s)) {
                let mut l = logits(u, b.rows() * vocab)?;
                let noise = vec![1.0; l.len()];
                let noise = noise_needed.then_some(&noise[..]);
                let _ = b.step(&mut l, vocab, noise).map_err(|e| is_error(&e));
                let _ = b.propose_candidates(&[0.0], &[0], size(u)?);
            }
        }
        1 => {
            let s = beam_settings(u, vocab)?;
            if let Some(mut b) = built(GroupBeamSearch::new(&flat, batch, &config, s)) {
                let g = size(u)?;
                if let Ok(rows) = b.group_rows(g) {
                    assert!(g < b.groups());
                    assert!(rows.into_iter().all(|r| r < b.rows()));
                }
                let mut l = logits(u, b.rows() * vocab)?;
                let _ = b.step(&mut l, vocab).map_err(|e| is_error(&e));
            }
        }
        2 => {
            let s = beam_settings(u, vocab)?;
            let phrase = vec![token(u, vocab)?.clamp(0, vocab as i64 - 1)];
            let set = ConstraintSet::new(vec![ConstraintSpec::Phrase(phrase)], Some(vocab))
                .expect("a one-token phrase inside the vocabulary");
            let search = ConstrainedBeamSearch::new(&flat, batch, &config, s, set, None);
            if let Some(mut b) = built(search) {
                let mut l = logits(u, b.rows() * vocab)?;
                let _ = b.step(&mut l, vocab).map_err(|e| is_error(&e));
            }
        }
        3 => {
            if let Some(mut d) = built(Decoder::new(&flat, batch, &config, 0)) {
                let mut l = logits(u, batch * vocab)?;
                let _ = d.step_greedy(&mut l, vocab).map_err(|e| is_error(&e));
                let done = vec![true; size(u)?.min(16)];
                let _ = d.row_status_mut().finish_rows(&done).map_err(|e| is_error(&e));
            }
        }
        4 => {
            let (top_k, alpha) = (size(u)?, f32_any(u)?);
            let search = ContrastiveSearch::new(&flat, batch, &config, 0, top_k, alpha);
            if let Some(mut c) = built(search) {
                let mut l = logits(u, batch * vocab)?;
                let _ = c.step(&mut l, vocab).map_err(|e| is_error(&e));
            }
        }
        _ => {
            let starts = vec![0; batch.min(8)];
            let max_len = size(u)?;
            let made = AssistedDecoder::new(&flat, batch, &starts, &config, 0, max_len, &[]);
            if let Some(mut d) = built(made) {
                let n = size(u)?;
                if let Ok(t) = d.tails(n) {
                    assert_eq!(t.len(), batch * n);
                }
                let _ = d
                    .lookup_drafts(size(u)?, size(u)?)
                    .map_err(|e| is_error(&e));
            }
        }
    }
    Ok(())
}
