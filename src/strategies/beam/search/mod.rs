//! Beam search and beam-search sampling, step by step, with transformers 5.x semantics.
//!
//! Per batch item and step: add each beam's running score to its processed
//! log-probabilities, keep the best `K = (1 + n_eos) × num_beams` continuations (or
//! sample `K` without replacement), continue with the best `num_beams` that did not
//! hit a stopping condition, and merge the top `num_beams` that did into the
//! finished slots (scored with the length penalty).
//!
//! Proposing candidates is `propose`, committing a step `commit`, the one-call steps `steps`.

mod commit;
mod propose;
mod steps;
#[cfg(test)]
mod tests;

use super::core::{BeamCore, StepChoice};
use super::hypotheses::FinishedSlots;
use super::output::{assemble, Finalized, Pick};
use super::select::{log_softmax_rows, TopK};
use super::settings::{BeamSettings, EarlyStopping};
use super::torch_noise::TorchExponential;
use super::tree::{BeamTree, NodeRef, NO_NODE};
use super::NEG_LARGE;
use crate::buffers;
use crate::error::{CoreError, Result};
use crate::history::TokenHistory;
use crate::logits::{LogitsMut, Pipeline, PipelineConfig, StepContext, TopK as TopKWarper};

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
    /// Each row's node: deferred for a placeholder row ([`Self::running_node`]), the root
    /// (none) for a done item's rows, which nothing reads (see [`Self::searching`]).
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

    fn searching(&self, b: usize) -> bool {
        self.open[b]
            && !(self.s.early_stopping == EarlyStopping::AllFinished
                && self.slots[b].all_finished())
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
