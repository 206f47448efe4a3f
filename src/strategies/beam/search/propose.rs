//! Proposing a step's candidates: chosen from full scores (top `K`, or `K` sampled) or
//! taken from a device that chose them.

use super::super::noise::exponential;
use super::super::select::{
    check_picked, log_softmax_rows, sample_k_into, sample_k_sparse, top_k_into,
    top_k_log_softmax_into, RowCandidates,
};
use super::super::torch_noise::{TorchExponential, MAX_DRAW};
use super::{BeamSearch, Candidate};
use crate::buffers;
use crate::error::{CoreError, Result};
use crate::logits::{LogitsMut, LogitsProcessor, StepContext};

/// The scores [`BeamSearch::propose_from`] chooses from.
pub(super) enum Rows<'a> {
    /// Processed rows.
    Dense(&'a [f32]),
    /// Processed rows that the warpers cut to the listed candidates.
    Cut(&'a [f32], &'a [RowCandidates]),
    /// Raw logits and the candidates (with processed values) the lazy top-k keeps: the
    /// rows are processed (into a copy) only if an item needs the full scan.
    Raw(&'a [f32], &'a [RowCandidates]),
    /// Raw logits and every row's log-softmax shift (plain beam search, no processor):
    /// log-probabilities are computed inside the top-k scan, nothing is written.
    Unnormalised(&'a [f32], &'a [(f32, f32)]),
}

impl<'a> Rows<'a> {
    fn logits(&self) -> &'a [f32] {
        match *self {
            Rows::Dense(l) | Rows::Cut(l, _) | Rows::Raw(l, _) | Rows::Unnormalised(l, _) => l,
        }
    }

    fn candidates(&self) -> Option<&'a [RowCandidates]> {
        match *self {
            Rows::Dense(_) | Rows::Unnormalised(..) => None,
            Rows::Cut(_, c) | Rows::Raw(_, c) => Some(c),
        }
    }
}

/// Where one batch item's sampling noise comes from.
enum ItemNoise<'a> {
    /// The counter-based stream of a seeded item at a step.
    Keyed { key: u64, step: usize },
    /// Draws passed by the caller, `[num_beams * vocab]`.
    Drawn(&'a [f32]),
    /// torch's draws for the step, from entry `base` on (transformed when read).
    Torch {
        noise: &'a mut TorchExponential,
        base: usize,
    },
    /// Not sampling.
    None,
}

impl<'a> ItemNoise<'a> {
    /// For a full scan, which reads every entry: torch's draws transformed in bulk into
    /// `dense` (not one by one); other noise as it is.
    fn in_bulk(self, width: usize, dense: &'a mut Vec<f32>, words: &mut Vec<u32>) -> Result<Self> {
        let ItemNoise::Torch { noise, base } = self else {
            return Ok(self);
        };
        if dense.len() < width {
            *dense = buffers::filled("noise", width, 0.0)?;
        }
        let dense = &mut dense[..width];
        noise.fill(base, dense, words)?;
        Ok(ItemNoise::Drawn(dense))
    }

    #[inline]
    fn at(&mut self, i: usize) -> f32 {
        match self {
            ItemNoise::Keyed { key, step } => exponential(*key, *step, i),
            ItemNoise::Drawn(q) => q[i],
            ItemNoise::Torch { noise, base } => noise.at(*base + i),
            ItemNoise::None => 1.0,
        }
    }
}

impl BeamSearch {
    /// Proposes the `K` best (or sampled) continuations of every batch item from
    /// processed scores. `noise` (`[batch, num_beams * vocab]`, `Exp(1)` draws) is
    /// required when [`Self::needs_noise`]. Follow with [`Self::commit`].
    pub fn propose(
        &mut self,
        logits: &[f32],
        vocab: usize,
        noise: Option<&[f32]>,
    ) -> Result<&[Candidate]> {
        self.propose_from(Rows::Dense(logits), vocab, noise)
    }

    /// [`Self::propose`] from `rows` (see [`Rows`]).
    pub(super) fn propose_from(
        &mut self,
        rows: Rows<'_>,
        vocab: usize,
        noise: Option<&[f32]>,
    ) -> Result<&[Candidate]> {
        let logits = rows.logits();
        self.check_propose(logits.len(), vocab)?;
        let width = self.beams * vocab;
        let sampling = self.s.sample.is_some();
        if sampling && self.item_keys.is_none() {
            self.check_noise(noise, width)?;
            self.torch_noise_pending = false;
        }
        self.candidates.clear();
        for b in 0..self.batch {
            let item = b * self.beams..(b + 1) * self.beams;
            let offsets = &self.running_scores[item.clone()];
            // caller noise is only read (and its length only checked above) when sampling
            let mut noise = match (sampling, &self.item_keys, noise) {
                (false, _, _) => ItemNoise::None,
                (true, Some(keys), _) => ItemNoise::Keyed {
                    key: keys[b],
                    step: self.step,
                },
                (true, None, Some(q)) => ItemNoise::Drawn(&q[b * width..(b + 1) * width]),
                // checked above: torch's draws for this step are there
                (true, None, None) => ItemNoise::Torch {
                    noise: &mut self.torch_noise,
                    base: b * width,
                },
            };
            let fast = match (sampling, rows.candidates()) {
                (true, Some(c)) => {
                    sample_k_sparse(&mut self.top, vocab, offsets, &c[item.clone()], |i| {
                        noise.at(i)
                    })
                }
                _ => None,
            };
            let picked: Vec<(f32, usize)> = if let Some(p) = fast {
                p
            } else {
                let mut item_rows = &logits[b * width..(b + 1) * width];
                if let (Rows::Raw(..), Some(top_k)) = (&rows, &self.lazy_top_k) {
                    // the full scan needs the processed rows: process a copy of this item's
                    self.dense.clear();
                    self.dense.extend_from_slice(item_rows);
                    log_softmax_rows(&mut self.dense, vocab);
                    let ctx = StepContext::new(&self.history);
                    top_k.process(&ctx, &mut LogitsMut::new(&mut self.dense, vocab));
                    item_rows = &self.dense;
                }
                if sampling {
                    noise = noise.in_bulk(width, &mut self.dense_noise, &mut self.noise_words)?;
                    sample_k_into(
                        &mut self.top,
                        item_rows,
                        vocab,
                        offsets,
                        &mut self.scratch,
                        |i| noise.at(i),
                    )
                } else {
                    match rows {
                        Rows::Unnormalised(_, shifts) => top_k_log_softmax_into(
                            &mut self.top,
                            item_rows,
                            vocab,
                            offsets,
                            &shifts[item],
                            &[],
                        ),
                        _ => top_k_into(&mut self.top, item_rows, vocab, offsets),
                    }
                    self.top.items().to_vec()
                }
            };
            self.push_picked(b, &picked, vocab)?;
        }
        self.proposed = true;
        Ok(&self.candidates)
    }

    /// Draws the next proposal's noise from torch's CPU generator: what
    /// `torch.empty(batch, num_beams * vocab).exponential_()` would draw from `state`
    /// (`torch.get_rng_state()` bytes), which is advanced past the draws. The next
    /// [`Self::propose`] (or step) given no caller noise reads them. `vocab` is at most
    /// [`MAX_DRAW`] / (batch × beams): the draw's time is bounded (see [`MAX_DRAW`]).
    pub fn draw_torch_noise(&mut self, state: &mut [u8], vocab: usize) -> Result<()> {
        let rows = buffers::product("num_beams", &[self.batch, self.beams])?;
        let most = MAX_DRAW / rows.max(1) as u64;
        if vocab as u64 > most {
            return Err(CoreError::invalid(
                "vocab",
                format!(
                    "expected 0 to {most} for {} prompts × {} beams (torch's noise is drawn \
                     for at most 2^32 entries a step), got {vocab}",
                    self.batch, self.beams
                ),
            ));
        }
        let len = buffers::product("noise", &[rows, vocab])?;
        self.torch_noise_pending = false;
        self.torch_noise.draw(state, len)?;
        self.torch_noise_pending = true;
        Ok(())
    }

    /// Noise for unseeded beam sampling: the caller's `[batch, width]` Exp(1) draws, or
    /// (given none) those of [`Self::draw_torch_noise`] since the last proposal.
    fn check_noise(&self, noise: Option<&[f32]>, width: usize) -> Result<()> {
        let torch = self.torch_noise_pending.then_some(self.torch_noise.len());
        match noise {
            Some(n) if n.len() == self.batch * width => Ok(()),
            None if torch == Some(self.batch * width) => Ok(()),
            None if torch.is_some() => Err(CoreError::Shape {
                name: "noise",
                expected: format!("[{}, {}]", self.batch, width),
                got: format!("{} drawn from torch's generator", self.torch_noise.len()),
            }),
            Some(n) => Err(CoreError::Shape {
                name: "noise",
                expected: format!("[{}, {}]", self.batch, width),
                got: format!("{} values", n.len()),
            }),
            None => Err(CoreError::invalid(
                "noise",
                "beam sampling without a seed needs noise each step",
            )),
        }
    }

    fn check_propose(&self, len: usize, vocab: usize) -> Result<()> {
        self.check(len, vocab)?;
        if self.done {
            return Err(CoreError::invalid(
                "beam_step",
                "the search is finished; call finalize",
            ));
        }
        if self.beams * vocab < self.k {
            return Err(CoreError::invalid(
                "num_beams",
                format!("vocab {vocab} is too small for {} beams", self.beams),
            ));
        }
        Ok(())
    }

    /// Adds batch item `b`'s picked `(score, beam * vocab + token)` to the candidates.
    /// A closed item (it cannot improve: e.g. every running beam's score fell to -inf once
    /// a grammar allowed them nothing but EOS) is not checked: its candidates only fill
    /// its rows until the search ends, as transformers keeps computing finished items.
    fn push_picked(&mut self, b: usize, picked: &[(f32, usize)], vocab: usize) -> Result<()> {
        let checked = if self.open[b] {
            check_picked(picked, b * self.beams)
        } else {
            Ok(())
        };
        if let Err(e) = checked {
            self.candidates.clear();
            return Err(e);
        }
        for &(score, idx) in picked {
            self.candidates.push(Candidate {
                score,
                parent_row: b * self.beams + idx / vocab,
                token: (idx % vocab) as i64,
            });
        }
        Ok(())
    }

    /// Takes this step's candidates from outside instead of choosing them from full
    /// scores: the caller (a device holding the logits) already added each beam's
    /// [`Self::running_scores`] to its processed log-probabilities, flattened every batch
    /// item to `num_beams * vocab` and kept its best `K` (or sampled `K`, sorted).
    /// `scores` and `indices` are `[batch * K]`, best first within each item; an index
    /// is `beam * vocab + token`. Follow with [`Self::commit`].
    pub fn propose_candidates(
        &mut self,
        scores: &[f32],
        indices: &[i64],
        vocab: usize,
    ) -> Result<&[Candidate]> {
        if self.done {
            return Err(CoreError::invalid(
                "beam_step",
                "the search is finished; call finalize",
            ));
        }
        let (k, width) = (self.k, buffers::product("vocab", &[self.beams, vocab])?);
        let want = self.batch * k;
        for (name, len) in [
            ("candidate scores", scores.len()),
            ("candidate indices", indices.len()),
        ] {
            if len != want {
                return Err(CoreError::Shape {
                    name,
                    expected: format!("[{}, {k}]", self.batch),
                    got: format!("{len} values"),
                });
            }
        }
        if vocab == 0 || width < k {
            return Err(CoreError::invalid(
                "num_beams",
                format!("vocab {vocab} is too small for {} beams", self.beams),
            ));
        }
        if let Some(bad) = indices.iter().find(|&&i| i < 0 || i as usize >= width) {
            return Err(CoreError::invalid(
                "candidate indices",
                format!("{bad} is outside [0, {width})"),
            ));
        }
        // NaN compares false either way: it is accepted anywhere, as torch.topk places it
        if scores
            .chunks_exact(k)
            .any(|item| item.windows(2).any(|w| w[0] < w[1]))
        {
            return Err(CoreError::invalid(
                "candidate scores",
                "must be sorted best first within each batch item",
            ));
        }
        self.candidates.clear();
        for (n, (&score, &idx)) in scores.iter().zip(indices).enumerate() {
            let (b, idx) = (n / k, idx as usize);
            self.candidates.push(Candidate {
                score,
                parent_row: b * self.beams + idx / vocab,
                token: (idx % vocab) as i64,
            });
        }
        self.proposed = true;
        Ok(&self.candidates)
    }
}
