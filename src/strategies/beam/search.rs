//! Beam search and beam-search sampling, step by step, with transformers 5.x semantics.
//!
//! Per batch item and step: add each beam's running score to its processed
//! log-probabilities, keep the best `K = (1 + n_eos) × num_beams` continuations (or
//! sample `K` without replacement), continue with the best `num_beams` that did not
//! hit a stopping condition, and merge the top `num_beams` that did into the
//! finished slots (scored with the length penalty).

use super::core::{BeamCore, StepChoice};
use super::hypotheses::{FinishedSlots, Offer, Source};
use super::length::{best_hypothetical_len, normalized_score};
use super::noise::exponential;
use super::output::{assemble, Finalized, Pick};
use super::select::{
    check_picked, log_softmax_rows, log_softmax_shift, log_softmax_shifts, sample_k_into,
    sample_k_sparse, shift_is_certain, top_k_into, top_k_log_softmax_into, RowCandidates, TopK,
};
use super::settings::{BeamSettings, EarlyStopping};
use super::torch_noise::{TorchExponential, MAX_DRAW};
use super::torch_order;
use super::tree::{BeamTree, EndReason, Node, NodeRef, NO_NODE};
use super::NEG_LARGE;
use crate::buffers;
use crate::error::{CoreError, Result};
use crate::history::TokenHistory;
use crate::logits::{
    with_scratch, LogitsMut, LogitsProcessor, Pipeline, PipelineConfig, StepContext,
    TopK as TopKWarper,
};
use rayon::prelude::*;

/// A continuation proposed this step: `parent_row` is in `[batch * num_beams]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub score: f32,
    pub parent_row: usize,
    pub token: i64,
}

pub struct BeamSearch {
    s: BeamSettings,
    batch: usize,
    beams: usize,
    /// Candidates per batch item and step.
    k: usize,
    prompt_len: usize,
    history: TokenHistory,
    pipeline: Pipeline,
    warpers: Pipeline,
    /// Per batch item, with a seed: the key of its own noise.
    item_keys: Option<Vec<u64>>,
    /// Without a seed and without caller noise: the step's draws from torch's generator
    /// ([`Self::draw_torch_noise`]); `torch_noise_pending` until a proposal reads them.
    torch_noise: TorchExponential,
    torch_noise_pending: bool,
    /// One item's torch draws transformed in bulk (a full scan reads every entry), and
    /// their words.
    dense_noise: Vec<f32>,
    noise_words: Vec<u32>,
    running_scores: Vec<f32>,
    /// Each row's node: deferred for a placeholder row ([`Self::running_node`]).
    running_nodes: Vec<NodeRef>,
    slots: Vec<FinishedSlots>,
    /// Per batch item: can a running beam still beat the finished ones?
    open: Vec<bool>,
    tree: BeamTree,
    candidates: Vec<Candidate>,
    proposed: bool,
    /// Tokens and parent rows chosen at the current step (transformers' `current_tokens`).
    choice: StepChoice,
    done: bool,
    step: usize,
    streamed: Vec<usize>,
    top: TopK,
    scratch: Vec<f32>,
    /// The warpers as one top-k stage, when they are that and no processor runs (beam
    /// sampling may then leave the scores unwritten, see [`Self::step_unread`]).
    lazy_top_k: Option<TopKWarper>,
    /// One item's processed rows, when unwritten scores must be processed after all.
    dense: Vec<f32>,
}

/// The scores [`BeamSearch::propose_from`] chooses from.
enum Rows<'a> {
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
    /// `prompts` is row-major `[batch, prompt_len]` (one row per batch item; the core
    /// expands it to `num_beams` rows per item, as `repeat_interleave`). `config` gives
    /// the processors, run on log-probabilities as transformers does in beam modes, and
    /// (with `do_sample`) the warpers.
    pub fn new(
        prompts: &[i64],
        batch: usize,
        config: &PipelineConfig,
        settings: BeamSettings,
    ) -> Result<Self> {
        let prompt_len = super::prompt_len(prompts, batch)?;
        settings.validate(prompt_len)?;
        config.validate(None)?;
        config.validate_rows(buffers::product("num_beams", &[batch, settings.num_beams])?)?;
        if settings.num_beam_groups != 1 {
            return Err(CoreError::invalid(
                "num_beam_groups",
                "use GroupBeamSearch for num_beam_groups > 1",
            ));
        }
        let beams = settings.num_beams;
        let (rows, k) = settings.checked_sizes(batch, beams)?;
        let history = TokenHistory::try_repeated("num_beams", prompts, batch, beams)?;
        let pipeline = config.build_processors(prompt_len);
        let warpers = config.build_warpers(settings.min_tokens_to_keep());
        let item_keys = settings.sample.as_ref().and_then(|s| s.item_keys.clone());
        if item_keys.as_ref().is_some_and(|k| k.len() != batch) {
            return Err(CoreError::Shape {
                name: "seed_prompts",
                expected: format!("{batch} prompts"),
                got: format!("{} keys", item_keys.as_ref().map_or(0, Vec::len)),
            });
        }
        let lazy_top_k = match &settings.sample {
            Some(_) if pipeline.is_empty() => {
                config.single_top_k_warper(settings.min_tokens_to_keep())
            }
            _ => None,
        };
        let mut running_scores = buffers::filled("num_beams", rows, NEG_LARGE)?;
        running_scores
            .iter_mut()
            .step_by(beams)
            .for_each(|s| *s = 0.0);
        Ok(BeamSearch {
            batch,
            beams,
            k,
            prompt_len,
            history,
            pipeline,
            warpers,
            item_keys,
            torch_noise: TorchExponential::default(),
            torch_noise_pending: false,
            dense_noise: Vec::new(),
            noise_words: Vec::new(),
            running_scores,
            running_nodes: buffers::filled("num_beams", rows, NodeRef::ROOT)?,
            slots: (0..batch)
                .map(|_| FinishedSlots::new(beams))
                .collect::<Result<_>>()?,
            open: vec![true; batch],
            tree: BeamTree::default(),
            candidates: buffers::with_capacity("num_beams", batch * k)?,
            proposed: false,
            choice: StepChoice::new(rows)?,
            done: false,
            step: 0,
            streamed: vec![0; batch],
            top: TopK::new(k),
            scratch: Vec::new(),
            lazy_top_k,
            dense: Vec::new(),
            s: settings,
        })
    }

    pub fn rows(&self) -> usize {
        self.batch * self.beams
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Candidates per batch item each step (`K`).
    pub fn candidates_per_item(&self) -> usize {
        self.k
    }

    pub fn settings(&self) -> &BeamSettings {
        &self.s
    }

    pub fn history(&self) -> &TokenHistory {
        &self.history
    }

    /// Whether [`Self::propose`] needs caller-drawn noise (sampling without a seed).
    pub fn needs_noise(&self) -> bool {
        self.s.sample.is_some() && self.item_keys.is_none()
    }

    /// Log-softmax, then the logits processors, over `logits` (`[rows, vocab]`) in place.
    pub fn process(&self, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.check(logits.len(), vocab)?;
        log_softmax_rows(logits, vocab);
        self.process_log_probs(logits, vocab)
    }

    /// The logits processors over scores the caller already log-softmaxed (and changed:
    /// classifier-free guidance runs between the two, as transformers' first processor).
    pub fn process_log_probs(&self, scores: &mut [f32], vocab: usize) -> Result<()> {
        self.check(scores.len(), vocab)?;
        self.pipeline.process(
            &StepContext::new(&self.history),
            &mut LogitsMut::new(scores, vocab),
        );
        Ok(())
    }

    /// The warpers (beam sample) and the final renormalisation, if any; transformers
    /// runs them after the user's processors.
    pub fn warp(&self, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.check(logits.len(), vocab)?;
        if !self.warpers.is_empty() {
            self.warpers.process(
                &StepContext::new(&self.history),
                &mut LogitsMut::new(logits, vocab),
            );
        }
        Ok(())
    }

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
    fn propose_from(
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

    /// Accumulated score of every running beam (`[batch * num_beams]`): what the next
    /// step adds to each row's log-probabilities before choosing candidates.
    pub fn running_scores(&self) -> &[f32] {
        &self.running_scores
    }

    /// Names of the logits processors and of the sampling warpers this search runs on
    /// the host (empty when the scores are plain log-probabilities).
    pub fn stage_names(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        (self.pipeline.names(), self.warpers.names())
    }

    /// Applies the proposed step. `extra_hits` (`[batch * K]`) marks candidates that a
    /// stopping criterion outside the core ended, with that criterion's code (>= 1; 0 =
    /// not ended); EOS and `max_length` are checked here.
    pub fn commit(&mut self, extra_hits: Option<&[u8]>) -> Result<()> {
        if !self.proposed {
            return Err(CoreError::invalid("beam_step", "commit without propose"));
        }
        if let Some(h) = extra_hits {
            if h.len() != self.candidates.len() {
                return Err(CoreError::Shape {
                    name: "stopping criteria",
                    expected: format!("[{}]", self.candidates.len()),
                    got: format!("{} values", h.len()),
                });
            }
        }
        self.proposed = false;
        let ends = self.end_reasons(extra_hits);
        let mut new_scores = vec![0.0f32; self.beams * self.batch];
        let mut new_nodes = vec![NodeRef::ROOT; self.beams * self.batch];
        for b in 0..self.batch {
            self.commit_item(b, &ends, &mut new_scores, &mut new_nodes);
        }
        let parents: Vec<usize> = self.choice.parents.iter().map(|&p| p as usize).collect();
        self.history.reorder(&parents);
        self.pipeline.reorder(&parents);
        self.warpers.reorder(&parents);
        self.history.push(&self.choice.tokens);
        self.running_scores = new_scores;
        self.running_nodes = new_nodes;
        self.step += 1;
        self.update_done(&ends);
        Ok(())
    }

    /// Why each candidate would end (EOS, `max_length`, a stopping criterion's code in
    /// `extra_hits`), or [`EndReason::Running`].
    fn end_reasons(&self, extra_hits: Option<&[u8]>) -> Vec<EndReason> {
        let at_max = self.history.len() + 1 >= self.s.max_length;
        let reason = |c: &Candidate, extra: u8| {
            if self.s.is_eos(c.token) {
                EndReason::Eos
            } else if at_max {
                EndReason::Length
            } else if extra > 0 {
                EndReason::Stop(extra)
            } else {
                EndReason::Running
            }
        };
        self.candidates
            .iter()
            .enumerate()
            .map(|(i, c)| reason(c, extra_hits.map_or(0, |h| h[i])))
            .collect()
    }

    /// Batch item `b`'s step: its finished candidates into its slots, its best running
    /// ones into its beams (`new_scores` and `new_nodes` rows, the step's choice).
    fn commit_item(
        &mut self,
        b: usize,
        ends: &[EndReason],
        new_scores: &mut [f32],
        new_nodes: &mut [NodeRef],
    ) {
        let (beams, k) = (self.beams, self.k);
        let generated = self.history.len() + 1 - self.prompt_len;
        let cands: Vec<Candidate> = self.candidates[b * k..(b + 1) * k].to_vec();
        let ends = &ends[b * k..(b + 1) * k];
        let mut node_of = vec![NO_NODE; k];
        let (penalised, order) = rank_running(&cands, ends, beams);
        // finished slots: only the top `num_beams` candidates may enter, and only while useful
        let full =
            self.s.early_stopping == EarlyStopping::AllFinished && self.slots[b].all_finished();
        let open = self.open[b];
        let offers: Vec<Offer> = cands
            .iter()
            .zip(ends)
            .enumerate()
            .map(|(r, (c, e))| Offer {
                score: normalized_score(c.score, generated, self.s.length_penalty),
                barred: [full, !open, *e == EndReason::Running || r >= beams],
                possible: c.score > f32::NEG_INFINITY,
            })
            .collect();
        let sources = self.slots[b].merge_placed(&offers);
        for (slot, src) in sources.into_iter().enumerate() {
            if let Source::Candidate(r) = src {
                let id = self.node_for(&mut node_of, &cands, r, b);
                let n = self.tree.get_mut(id);
                n.end = ends[r];
                n.final_score = offers[r].score;
                self.slots[b].set_node(slot, id);
            }
        }
        for (j, &r) in order.iter().take(beams).enumerate() {
            let row = b * beams + j;
            new_nodes[row] = self.running_node(&mut node_of, &cands, ends[r], r, b);
            new_scores[row] = penalised[r];
            self.choice.tokens[row] = cands[r].token;
            self.choice.parents[row] = cands[r].parent_row as i64;
        }
    }

    /// [`Self::process`], [`Self::warp`], [`Self::propose`] and [`Self::commit`] in one call.
    pub fn step(&mut self, logits: &mut [f32], vocab: usize, noise: Option<&[f32]>) -> Result<()> {
        self.process(logits, vocab)?;
        self.warp_propose_commit(logits, vocab, noise)
    }

    /// [`Self::step`] over scores the caller already log-softmaxed (unseeded beam sampling
    /// takes `torch.log_softmax`'s bits, as transformers does, so the race sees its scores):
    /// the processors, warpers, proposal and commit; processed scores stay in `scores`.
    pub fn step_log_probs(
        &mut self,
        scores: &mut [f32],
        vocab: usize,
        noise: Option<&[f32]>,
    ) -> Result<()> {
        self.process_log_probs(scores, vocab)?;
        self.warp_propose_commit(scores, vocab, noise)
    }

    fn warp_propose_commit(
        &mut self,
        logits: &mut [f32],
        vocab: usize,
        noise: Option<&[f32]>,
    ) -> Result<()> {
        match self.warp_rows(logits, vocab)? {
            Some(cands) => self.propose_from(Rows::Cut(logits, &cands), vocab, noise)?,
            None => self.propose_from(Rows::Dense(logits), vocab, noise)?,
        };
        self.commit(None)
    }

    /// [`Self::step`] for a caller that does not read the processed scores: the same
    /// candidates and bits, without writing the `[rows, vocab]` scores where it can.
    /// Plain beam search (no processors, no warpers) computes each row's
    /// log-probabilities only where a candidate can be; beam sampling whose only warper
    /// is top-k (with temperature) computes them only for what top-k keeps. `logits` is
    /// then left as it was; other searches run [`Self::step`] (and `logits` holds their
    /// processed scores).
    pub fn step_unread(
        &mut self,
        logits: &mut [f32],
        vocab: usize,
        noise: Option<&[f32]>,
    ) -> Result<()> {
        if self.s.sample.is_some() {
            self.check(logits.len(), vocab)?;
            return match self.lazy_candidates(logits, vocab) {
                Some(cands) => {
                    self.propose_from(Rows::Raw(logits, &cands), vocab, noise)?;
                    self.commit(None)
                }
                None => self.step(logits, vocab, noise),
            };
        }
        if !self.pipeline.is_empty() || !self.warpers.is_empty() {
            return self.step(logits, vocab, noise);
        }
        self.check(logits.len(), vocab)?;
        let mut shifts = Vec::new();
        log_softmax_shifts(logits, vocab, &mut shifts);
        if shifts.iter().copied().any(shift_is_certain) {
            return self.step(logits, vocab, noise);
        }
        self.propose_from(Rows::Unnormalised(logits, &shifts), vocab, noise)?;
        self.commit(None)
    }

    /// [`Self::warp`], returning every row's candidate list (increasing indices; every
    /// other entry is -inf) when the warpers left each row in sparse form.
    fn warp_rows(&self, logits: &mut [f32], vocab: usize) -> Result<Option<Vec<RowCandidates>>> {
        self.check(logits.len(), vocab)?;
        if self.warpers.is_empty() {
            return Ok(None);
        }
        let ctx = StepContext::new(&self.history);
        let lists =
            self.warpers
                .process_then(&ctx, &mut LogitsMut::new(logits, vocab), |_, row, s| {
                    s.sparse.then(|| RowCandidates::gather(s.cand.clone(), row))
                });
        Ok(lists.into_iter().collect())
    }

    /// Beam sampling's candidates when the scores are not read and the only warper is
    /// top-k: each row's log-softmax is computed only where top-k keeps it, nothing is
    /// written. `None` when that does not apply (or a row has NaN or +inf logits).
    fn lazy_candidates(&self, logits: &[f32], vocab: usize) -> Option<Vec<RowCandidates>> {
        let top_k = self.lazy_top_k.as_ref()?;
        let one = |row: &[f32]| {
            let (max, log_sum) = log_softmax_shift(row);
            with_scratch(|s| {
                top_k
                    .keep_of_log_softmax(row, max, log_sum, s)
                    .then(|| RowCandidates {
                        index: s.cand.clone(),
                        value: s.vals.clone(),
                    })
            })
        };
        let rows = logits.len() / vocab;
        if crate::parallel::worth_parallel(rows, logits.len()) {
            logits.par_chunks_exact(vocab).map(one).collect()
        } else {
            logits.chunks_exact(vocab).map(one).collect()
        }
    }

    fn searching(&self, b: usize) -> bool {
        self.open[b]
            && !(self.s.early_stopping == EarlyStopping::AllFinished
                && self.slots[b].all_finished())
    }

    /// Candidate `r`'s node (recorded once per step: as a finished hypothesis and a row).
    fn node_for(&mut self, node_of: &mut [u32], cands: &[Candidate], r: usize, b: usize) -> u32 {
        if node_of[r] == NO_NODE {
            let c = cands[r];
            let node = self.new_node(c, b);
            node_of[r] = self.tree.push_under(self.running_nodes[c.parent_row], node);
        }
        node_of[r]
    }

    /// The node of a row continuing with candidate `r`, which ended with `end`. A row
    /// filled with a stopped candidate (transformers' -1e9 placeholder: fewer than
    /// `num_beams` candidates still run) or extending one is no hypothesis the search kept:
    /// its node is deferred, made only if a descendant enters the finished slots (a
    /// finished candidate keeps its own node). The other rows' nodes are made now, pruned
    /// or not (a pruned branch is part of the tree's picture).
    fn running_node(
        &mut self,
        node_of: &mut [u32],
        cands: &[Candidate],
        end: EndReason,
        r: usize,
        b: usize,
    ) -> NodeRef {
        let c = cands[r];
        if end == EndReason::Running && !self.placeholder(c.parent_row) {
            NodeRef::Made(self.node_for(node_of, cands, r, b))
        } else if node_of[r] != NO_NODE {
            NodeRef::Made(node_of[r])
        } else {
            let node = self.new_node(c, b);
            self.tree.defer(self.running_nodes[c.parent_row], node)
        }
    }

    /// Whether `row` holds a placeholder (see [`Self::running_node`]): its node is deferred,
    /// or it is a finished hypothesis's.
    fn placeholder(&self, row: usize) -> bool {
        match self.running_nodes[row] {
            NodeRef::Deferred(_) => true,
            NodeRef::Made(id) => id != NO_NODE && self.tree.get(id).end != EndReason::Running,
        }
    }

    /// Candidate `c` of batch item `b` as a node of this step (its parent set when recorded).
    fn new_node(&self, c: Candidate, b: usize) -> Node {
        Node {
            parent: NO_NODE,
            token: c.token,
            parent_row: c.parent_row as u32,
            batch: b as u32,
            group: 0,
            step: (self.history.len() - self.prompt_len) as u32,
            score: c.score,
            final_score: f32::NAN,
            end: EndReason::Running,
        }
    }

    /// transformers' `_check_early_stop_heuristic` and `_beam_search_has_unfinished_sequences`.
    fn update_done(&mut self, ends: &[EndReason]) {
        let generated = self.history.len() - self.prompt_len;
        let max_generated = self.s.max_length - self.prompt_len;
        let len = best_hypothetical_len(
            self.s.early_stopping,
            self.s.length_penalty,
            generated,
            max_generated,
        );
        for b in 0..self.batch {
            if self.open[b] {
                let raw = self.running_scores[b * self.beams];
                let best = normalized_score(raw, len, self.s.length_penalty);
                self.open[b] = self.slots[b].can_improve(best, raw > f32::NEG_INFINITY);
            }
        }
        let improvable = self.open.iter().any(|&o| o);
        let all_full = self.s.early_stopping == EarlyStopping::AllFinished
            && self.slots.iter().all(FinishedSlots::all_finished);
        let continuable = ends.contains(&EndReason::Running);
        self.done = !(improvable && !all_full && continuable);
    }

    fn check(&self, len: usize, vocab: usize) -> Result<()> {
        super::check_logits(len, self.rows(), vocab)
    }
}

impl BeamCore for BeamSearch {
    super::core::field_accessors!();

    fn is_done(&self) -> bool {
        self.done
    }

    /// Ends the search: the finished slots are what it returns.
    fn stop(&mut self, _code: u8) {
        self.done = true;
    }

    fn settled_candidates(&self, b: usize) -> Vec<NodeRef> {
        let mut set = Vec::with_capacity(self.beams + 1);
        let best = self.slots[b].slots()[0];
        if best.finished {
            set.push(NodeRef::Made(best.node));
        }
        if self.searching(b) {
            set.extend_from_slice(&self.running_nodes[b * self.beams..(b + 1) * self.beams]);
        }
        set
    }

    fn finalize(&mut self) -> Finalized {
        let picks: Vec<Pick<'_>> = (0..self.batch)
            .flat_map(|b| {
                let prompt = &self.history.row(b * self.beams)[..self.prompt_len];
                self.slots[b].slots()[..self.s.num_return_sequences]
                    .iter()
                    .map(move |slot| Pick {
                        prompt,
                        node: slot.node,
                        score: slot.score,
                    })
            })
            .collect();
        assemble(&self.tree, &picks, self.s.pad_token_id)
    }

    /// Every finished slot and, for items still searching, every running beam that has a
    /// node (a placeholder row's may be deferred).
    fn surviving_nodes(&self) -> Vec<u32> {
        let mut alive: Vec<u32> = self
            .slots
            .iter()
            .flat_map(|s| s.slots().iter().map(|x| x.node))
            .collect();
        for b in (0..self.batch).filter(|&b| self.searching(b) && !self.done) {
            let rows = &self.running_nodes[b * self.beams..(b + 1) * self.beams];
            alive.extend(rows.iter().filter_map(|&r| self.tree.made(r)));
        }
        alive.retain(|&n| n != NO_NODE);
        alive
    }
}

/// One item's candidates ranked for the running beams: each score with stopped ones sunk
/// by -1e9, and the `beams` chosen, in order. As transformers: `torch.topk` of those
/// scores, with torch's order among equal ones (see [`torch_order`]).
fn rank_running(cands: &[Candidate], ends: &[EndReason], beams: usize) -> (Vec<f32>, Vec<usize>) {
    // running beams: the best candidates that did not stop (stopped ones sink by -1e9)
    let penalised: Vec<f32> = cands
        .iter()
        .zip(ends)
        .map(|(c, e)| {
            c.score
                + if *e != EndReason::Running {
                    NEG_LARGE
                } else {
                    -0.0
                }
        })
        .collect();
    let stopped = |r: usize| ends[r] != EndReason::Running;
    let chosen = torch_order::top_k(&penalised, beams);
    let running = (0..cands.len()).filter(|&r| !stopped(r)).count();
    if chosen.iter().filter(|&&r| !stopped(r)).count() == running.min(beams) {
        return (penalised, chosen);
    }
    // ranked by stopping first: with scores near or beyond -1e9 (a +inf score, a
    // -1e9 penalty of no use) the penalty alone would let a finished one continue
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|&x, &y| {
        (stopped(x).cmp(&stopped(y)))
            .then(penalised[y].total_cmp(&penalised[x]))
            .then(x.cmp(&y))
    });
    order.truncate(beams);
    (penalised, order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beam::SampleSettings;
    use proptest::prelude::*;

    fn settings(beams: usize, eos: &[i64], max_length: usize) -> BeamSettings {
        BeamSettings {
            num_beams: beams,
            eos_token_ids: eos.to_vec(),
            max_length,
            ..Default::default()
        }
    }

    fn log_probs(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn all_nan_or_neg_inf_logits_are_a_named_error() {
        // issue 10: a model returning NaN logits made beam search return arbitrary tokens
        for bad in [f32::NAN, f32::NEG_INFINITY] {
            let mut s =
                BeamSearch::new(&[7, 8], 2, &PipelineConfig::default(), settings(2, &[1], 4))
                    .unwrap();
            let mut logits = [vec![0.0; 6], vec![bad; 6]].concat();
            assert_eq!(
                s.step(&mut logits, 3, None),
                Err(CoreError::NoValidToken { row: 2 })
            );
            let keys = Some(vec![1, 2]);
            let sample = BeamSettings {
                sample: Some(SampleSettings { item_keys: keys }),
                ..settings(2, &[1], 4)
            };
            let cfg = PipelineConfig {
                do_sample: true,
                ..Default::default()
            };
            let mut s = BeamSearch::new(&[7, 8], 2, &cfg, sample).unwrap();
            let mut logits = vec![bad; 12];
            assert_eq!(
                s.step(&mut logits, 3, None),
                Err(CoreError::NoValidToken { row: 0 })
            );
        }
    }

    #[test]
    fn first_step_expands_beam_zero_only_and_eos_finishes() {
        // vocab 3, eos = 1; one batch item, 2 beams, prompt [7]
        let mut s =
            BeamSearch::new(&[7], 1, &PipelineConfig::default(), settings(2, &[1], 4)).unwrap();
        let mut logits = [log_probs(&[0.5, 0.3, 0.2]), log_probs(&[0.5, 0.3, 0.2])].concat();
        s.step(&mut logits, 3, None).unwrap();
        // candidates (beam 0 only): 0 (.5), 1=eos (.3), 2 (.2), then beam 1's at -1e9
        assert_eq!(s.next_tokens(), &[0, 2]);
        assert_eq!(s.parents(), &[0, 0]);
        let slots = s.slots[0].slots();
        assert!(slots[0].finished && !slots[1].finished);
        assert!(
            (slots[0].score - 0.3f32.ln()).abs() < 1e-6,
            "length 1, penalty 1"
        );
        assert!(!s.is_done());
        assert_eq!(s.history().row(1), &[7, 2]);
    }

    /// One step of `s` over `logits` (log-softmaxed here), with a stopping criterion
    /// ending the candidates that `hits` marks; returns the candidates.
    fn step_with_hits(s: &mut BeamSearch, logits: &[f32], hits: &[u8]) -> Vec<Candidate> {
        let mut logits = logits.to_vec();
        s.process(&mut logits, 5).unwrap();
        let cands = s.propose(&logits, 5, None).unwrap().to_vec();
        s.commit(Some(hits)).unwrap();
        cands
    }

    /// Some but not all candidates stopped, fewer than `num_beams` run: the second row is a
    /// stopped candidate that took no slot (rank 2 of 4; torch's order among the stopped
    /// ones tied at -1e9 picks it), a placeholder, not a hypothesis. It gets no node until
    /// a descendant enters the finished slots. (The old code recorded a node for it at
    /// once, 3 nodes after the first step.)
    #[test]
    fn placeholder_rows_get_a_node_only_when_a_descendant_needs_it() {
        // vocab 5, eos 4 (K = 4); one item, 2 beams, prompt [7]
        let mut s =
            BeamSearch::new(&[7], 1, &PipelineConfig::default(), settings(2, &[4], 10)).unwrap();
        let first = [0.0, -1.0, -2.0, -3.0, -20.0];
        step_with_hits(&mut s, &first.repeat(2), &[0, 1, 1, 1]);
        // candidates: tokens 0 (runs), 1 (stopped, enters), 2 and 3 (stopped, rank >= 2)
        assert_eq!(s.next_tokens(), &[0, 2]);
        let nodes: Vec<(i64, EndReason)> =
            s.tree.nodes().iter().map(|n| (n.token, n.end)).collect();
        assert_eq!(
            nodes,
            vec![(1, EndReason::Stop(1)), (0, EndReason::Running)]
        );
        assert!(matches!(s.running_nodes[1], NodeRef::Deferred(_)));
        assert_eq!(s.tree.made(s.running_nodes[1]), None);
        assert_eq!(
            s.surviving_nodes().len(),
            2,
            "the finished slot and the running beam"
        );
        // the running beam can continue only with token 0: a continuation of the
        // placeholder (all tied at -1e9) ranks second and stops, so it enters the empty slot
        let ninf = f32::NEG_INFINITY;
        let second = [
            [0.0, ninf, ninf, ninf, ninf],
            [-3.0, -2.0, -1.0, 0.0, -20.0],
        ]
        .concat();
        let cands = step_with_hits(&mut s, &second, &[0, 1, 0, 0]);
        assert_eq!(cands[1].parent_row, 1);
        let slot = s.slots[0].slots()[1];
        assert!(slot.finished);
        let mut tokens = Vec::new();
        s.tree.extend_tokens(slot.node, &mut tokens);
        assert_eq!(
            tokens,
            vec![2, cands[1].token],
            "the placeholder's node made for its child"
        );
        assert_eq!(
            s.tree.nodes().len(),
            5,
            "and no other: stopped 3 of step 0 stays out"
        );
    }

    proptest! {
        /// Leaving the scores unwritten changes nothing the search decides: tokens,
        /// parents, running scores and the final hypotheses are bit-identical.
        #[test]
        fn unread_scores_step_is_the_step(seed in any::<u64>(), beams in 1usize..4, vocab in 2usize..200) {
            let (batch, rows) = (2, 2 * beams);
            let eos = [1i64];
            let mut a = BeamSearch::new(&[5, 6], batch, &PipelineConfig::default(), settings(beams, &eos, 9)).unwrap();
            let mut b = BeamSearch::new(&[5, 6], batch, &PipelineConfig::default(), settings(beams, &eos, 9)).unwrap();
            let mut step = 0;
            while !a.is_done() {
                let logits = crate::beam::tied_logits(seed, step, rows * vocab);
                let (mut la, mut lb) = (logits.clone(), logits.clone());
                a.step(&mut la, vocab, None).unwrap();
                b.step_unread(&mut lb, vocab, None).unwrap();
                prop_assert_eq!(lb, logits, "the scores are left as they were");
                prop_assert_eq!(a.next_tokens(), b.next_tokens());
                prop_assert_eq!(a.parents(), b.parents());
                let bits = |s: &BeamSearch| s.running_scores().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&a), bits(&b));
                step += 1;
            }
            prop_assert!(b.is_done());
            let (fa, fb) = (a.finalize(), b.finalize());
            prop_assert_eq!(fa.sequences, fb.sequences);
            prop_assert_eq!(fa.scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), fb.scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
    }

    proptest! {
        /// Beam sampling with top-k as its only warper: the unwritten path draws exactly
        /// what the written one draws, seeded or with caller noise, including the items
        /// that fall back to the full scan (top_k 1: fewer positive keys than candidates).
        #[test]
        fn unread_scores_beam_sampling_is_the_step(
            seed in any::<u64>(),
            beams in 1usize..4,
            vocab in 130usize..300,
            top_k in prop_oneof![Just(1usize), Just(3), Just(50)],
            temperature in prop_oneof![Just(1.0f64), Just(0.7)],
            keyed in any::<bool>(),
        ) {
            let batch = 2;
            let rows = batch * beams;
            let cfg = PipelineConfig { do_sample: true, top_k, temperature, ..Default::default() };
            let keys = keyed.then(|| vec![seed, seed ^ 1]);
            let sample = BeamSettings { sample: Some(SampleSettings { item_keys: keys }), ..settings(beams, &[1], 9) };
            let mut a = BeamSearch::new(&[5, 6], batch, &cfg, sample.clone()).unwrap();
            let mut b = BeamSearch::new(&[5, 6], batch, &cfg, sample).unwrap();
            prop_assert!(b.lazy_top_k.is_some());
            let mut step = 0;
            while !a.is_done() {
                let logits = crate::beam::tied_logits(seed, step, rows * vocab);
                let noise: Vec<f32> = (0..rows * vocab).map(|i| crate::beam::exponential(seed, step + 100, i)).collect();
                let noise = (!keyed).then_some(noise.as_slice());
                let (mut la, mut lb) = (logits.clone(), logits.clone());
                a.step(&mut la, vocab, noise).unwrap();
                b.step_unread(&mut lb, vocab, noise).unwrap();
                prop_assert_eq!(&lb, &logits, "the scores are left as they were");
                prop_assert_eq!(a.next_tokens(), b.next_tokens());
                prop_assert_eq!(a.parents(), b.parents());
                let bits = |s: &BeamSearch| s.running_scores().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&a), bits(&b));
                step += 1;
            }
            prop_assert_eq!(a.finalize().sequences, b.finalize().sequences);
        }
    }

    #[test]
    fn noise_passed_to_a_search_that_does_not_sample_is_ignored() {
        // fuzz (beam target): beam search without sampling sliced caller noise of any length
        let mut s =
            BeamSearch::new(&[7], 1, &PipelineConfig::default(), settings(2, &[1], 4)).unwrap();
        let mut logits = vec![0.0, -1.0, -2.0, 0.5, -0.5, -3.0];
        assert!(s.step(&mut logits, 3, Some(&[])).is_ok());
    }

    #[test]
    fn max_length_finishes_everything() {
        let mut s =
            BeamSearch::new(&[7, 8], 2, &PipelineConfig::default(), settings(2, &[], 3)).unwrap();
        let mut steps = 0;
        while !s.is_done() {
            let mut logits: Vec<f32> = (0..4 * 5).map(|i| ((i * 7) % 5) as f32).collect();
            s.step(&mut logits, 5, None).unwrap();
            steps += 1;
        }
        assert_eq!(steps, 2);
        let out = s.finalize();
        assert_eq!((out.rows, out.width, out.generated_width), (2, 3, 2));
        assert!(out.reasons.iter().all(|&r| r == EndReason::Length));
        assert!(out.beam_indices.iter().all(|&i| (0..4).contains(&i)));
        assert!(
            s.propose(&[0.0; 20], 5, None).is_err(),
            "finished searches refuse more steps"
        );
    }

    #[test]
    fn commit_needs_propose_and_noise_is_checked() {
        let sample = SampleSettings::default();
        let mut s = BeamSearch::new(
            &[7],
            1,
            &PipelineConfig::default(),
            BeamSettings {
                sample: Some(sample),
                ..settings(2, &[1], 5)
            },
        )
        .unwrap();
        assert!(s.commit(None).is_err());
        assert!(s.needs_noise());
        assert!(s.propose(&[0.0; 6], 3, None).is_err());
        assert!(matches!(
            s.propose(&[0.0; 6], 3, Some(&[1.0; 5])),
            Err(CoreError::Shape { .. })
        ));
        assert_eq!(s.propose(&[0.0; 6], 3, Some(&[1.0; 6])).unwrap().len(), 4);
        assert!(matches!(
            s.commit(Some(&[0; 3])),
            Err(CoreError::Shape { .. })
        ));
    }

    /// Runs a search over pseudo-random logits; returns it and the processed scores of every step.
    fn run(
        batch: usize,
        beams: usize,
        eos: &[i64],
        lp: f64,
        early: EarlyStopping,
        seed: u64,
        sample: bool,
    ) -> (BeamSearch, Vec<Vec<f32>>) {
        let vocab = 6;
        let st = BeamSettings {
            num_beams: beams,
            eos_token_ids: eos.to_vec(),
            max_length: 9,
            length_penalty: lp,
            early_stopping: early,
            num_return_sequences: beams,
            sample: sample.then_some(SampleSettings {
                item_keys: Some((0..batch as u64).map(|b| seed * 31 + b).collect()),
            }),
            ..Default::default()
        };
        let prompts: Vec<i64> = (0..batch as i64 * 2).collect();
        let mut s = BeamSearch::new(&prompts, batch, &PipelineConfig::default(), st).unwrap();
        let mut scores = Vec::new();
        while !s.is_done() {
            let step = scores.len();
            let mut logits: Vec<f32> = (0..s.rows() * vocab)
                .map(|i| 3.0 * exponential(seed, step, i).ln())
                .collect();
            s.step(&mut logits, vocab, None).unwrap();
            scores.push(logits);
        }
        (s, scores)
    }

    /// What a device does with the full scores: log-softmax, add running scores, keep the best K.
    fn device_candidates(s: &BeamSearch, logits: &[f32], vocab: usize) -> (Vec<f32>, Vec<i64>) {
        let mut lp = logits.to_vec();
        log_softmax_rows(&mut lp, vocab);
        let (beams, k) = (s.beams, s.candidates_per_item());
        let (mut scores, mut indices) = (Vec::new(), Vec::new());
        for b in 0..s.batch() {
            let mut all: Vec<(f32, usize)> = (0..beams * vocab)
                .map(|i| {
                    (
                        lp[b * beams * vocab + i] + s.running_scores()[b * beams + i / vocab],
                        i,
                    )
                })
                .collect();
            all.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            scores.extend(all[..k].iter().map(|x| x.0));
            indices.extend(all[..k].iter().map(|x| x.1 as i64));
        }
        (scores, indices)
    }

    #[test]
    fn propose_candidates_checks_its_input() {
        let mut s =
            BeamSearch::new(&[7], 1, &PipelineConfig::default(), settings(2, &[1], 5)).unwrap();
        assert!(matches!(
            s.propose_candidates(&[0.0; 3], &[0; 4], 3),
            Err(CoreError::Shape { .. })
        ));
        assert!(
            s.propose_candidates(&[0.0; 4], &[0, 1, 2, 6], 3).is_err(),
            "index past beams * vocab"
        );
        assert!(
            s.propose_candidates(&[-2.0, -1.0, -3.0, -4.0], &[0, 1, 2, 3], 3)
                .is_err(),
            "unsorted"
        );
        assert_eq!(s.running_scores(), &[0.0, NEG_LARGE]);
        let c = s
            .propose_candidates(&[-1.0, -2.0, -3.0, -4.0], &[0, 1, 2, 3], 3)
            .unwrap()
            .to_vec();
        assert_eq!((c[3].parent_row, c[3].token), (1, 0));
        s.commit(None).unwrap();
        assert_eq!(s.next_tokens(), &[0, 2], "1 is EOS");
        assert_eq!(s.running_scores(), &[-1.0, -3.0]);
        assert_eq!(s.stage_names(), (vec![], vec![]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Candidates chosen outside the core (as a device does) give the same search.
        #[test]
        fn device_candidates_match_host_selection(batch in 1usize..3, beams in 1usize..5, lp in -1.0f64..2.0,
                                                  early in 0usize..3, seed in 0u64..1000, n_eos in 0usize..3) {
            let early = [EarlyStopping::Heuristic, EarlyStopping::AllFinished, EarlyStopping::Never][early];
            let vocab = 7;
            let st = BeamSettings {
                num_beams: beams,
                eos_token_ids: (1..=n_eos as i64).collect(),
                max_length: 10,
                length_penalty: lp,
                early_stopping: early,
                num_return_sequences: beams,
                ..Default::default()
            };
            let prompts: Vec<i64> = (0..batch as i64 * 2).collect();
            let mut host = BeamSearch::new(&prompts, batch, &PipelineConfig::default(), st.clone()).unwrap();
            let mut dev = BeamSearch::new(&prompts, batch, &PipelineConfig::default(), st).unwrap();
            let mut step = 0;
            while !host.is_done() {
                prop_assert!(!dev.is_done());
                let logits: Vec<f32> = (0..host.rows() * vocab).map(|i| 3.0 * exponential(seed, step, i).ln()).collect();
                let (scores, indices) = device_candidates(&dev, &logits, vocab);
                host.step(&mut logits.clone(), vocab, None).unwrap();
                dev.propose_candidates(&scores, &indices, vocab).unwrap();
                dev.commit(None).unwrap();
                prop_assert_eq!(host.next_tokens(), dev.next_tokens());
                prop_assert_eq!(host.parents(), dev.parents());
                prop_assert_eq!(host.running_scores(), dev.running_scores());
                step += 1;
            }
            prop_assert!(dev.is_done());
            let (a, b) = (host.finalize(), dev.finalize());
            prop_assert_eq!(a.sequences, b.sequences);
            prop_assert_eq!(a.scores, b.scores);
            prop_assert_eq!(a.beam_indices, b.beam_indices);
            prop_assert_eq!(a.reasons, b.reasons);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every returned score is the sum of the processed scores along its beam path,
        /// divided by its length to the power of the length penalty; results are sorted.
        #[test]
        fn scores_follow_beam_indices(batch in 1usize..3, beams in 1usize..5, lp in -1.0f64..2.0,
                                      early in 0usize..3, seed in 0u64..1000, sample in any::<bool>()) {
            let early = [EarlyStopping::Heuristic, EarlyStopping::AllFinished, EarlyStopping::Never][early];
            let (mut s, scores) = run(batch, beams, &[1], lp, early, seed, sample);
            let out = s.finalize();
            let vocab = 6;
            for r in 0..out.rows {
                let gen_len = (0..out.generated_width).filter(|&t| out.beam_indices[r * out.generated_width + t] >= 0).count();
                prop_assert!(gen_len > 0);
                let mut sum = 0.0f64;
                for (t, step) in scores.iter().enumerate().take(gen_len) {
                    let row = out.beam_indices[r * out.generated_width + t] as usize;
                    let token = out.sequences[r * out.width + 2 + t] as usize;
                    sum += f64::from(step[row * vocab + token]);
                }
                let expected = sum / (gen_len as f64).powf(lp);
                prop_assert!((expected - f64::from(out.scores[r])).abs() < 1e-3 * (1.0 + expected.abs()),
                             "row {} expected {} got {}", r, expected, out.scores[r]);
                let ends_eos = out.sequences[r * out.width + 1 + gen_len] == 1;
                prop_assert_eq!(out.reasons[r] == EndReason::Eos, ends_eos);
                if r % beams > 0 {
                    prop_assert!(out.scores[r - 1] >= out.scores[r]);
                }
            }
        }
    }
}
