//! Diverse (group) beam search with transformers 4.55 semantics, the last release
//! that ships it: `num_beams` split into `num_beam_groups` groups searched in order
//! at every step, each penalised for tokens that earlier groups chose at this step
//! (Hamming diversity), each with its own n-best list of finished hypotheses.
//!
//! Each group keeps its own token history and processor pipeline, so processors
//! see exactly the rows they act on, as transformers runs them per group.

use super::core::{BeamCore, StepChoice};
use super::diversity::{penalize_group, token_counts};
use super::length::{group_is_done, normalized_score_f64};
use super::nbest::NBest;
use super::output::{assemble, Finalized, Pick};
use super::select::{
    check_picked, log_softmax_rows, log_softmax_shifts, shift_is_certain, top_k_into,
    top_k_log_softmax_into, TopK,
};
use super::settings::BeamSettings;
use super::tree::{BeamTree, EndReason, Node, NodeRef, NO_NODE};
use super::NEG_LARGE;
use crate::buffers;
use crate::error::{CoreError, Result};
use crate::history::TokenHistory;
use crate::logits::{LogitsMut, Pipeline, PipelineConfig, StepContext};

pub struct GroupBeamSearch {
    s: BeamSettings,
    batch: usize,
    beams: usize,
    groups: usize,
    group_size: usize,
    k: usize,
    prompt_len: usize,
    histories: Vec<TokenHistory>,
    pipelines: Vec<Pipeline>,
    beam_scores: Vec<f32>,
    running_nodes: Vec<u32>,
    /// Index `b * groups + g`.
    hyps: Vec<NBest>,
    group_done: Vec<bool>,
    tree: BeamTree,
    /// Tokens and parent rows chosen at the current step (transformers' `current_tokens`).
    choice: StepChoice,
    /// The group whose selection comes next in the current step.
    cursor: usize,
    finished: bool,
    /// The running beams were added as hypotheses (by the first `finalize`).
    closed: bool,
    /// Code of the outside criterion that ended the search (see [`Self::stop`]).
    stop_code: u8,
    streamed: Vec<usize>,
    block: Vec<f32>,
    top: TopK,
    /// A grammar constrains the rows: a group whose continuations are all -inf is done.
    grammar: bool,
}

impl GroupBeamSearch {
    /// `prompts` is row-major `[batch, prompt_len]`; rows are expanded to `num_beams` per item.
    pub fn new(
        prompts: &[i64],
        batch: usize,
        config: &PipelineConfig,
        settings: BeamSettings,
    ) -> Result<Self> {
        let prompt_len = super::prompt_len(prompts, batch)?;
        settings.validate(prompt_len)?;
        config.validate(None)?;
        let group_size = settings.num_beams / settings.num_beam_groups;
        config.validate_rows(buffers::product("num_beams", &[batch, group_size])?)?;
        if settings.sample.is_some() || config.do_sample {
            return Err(CoreError::invalid(
                "num_beam_groups",
                "diverse (group) beam search does not support do_sample=True",
            ));
        }
        let (beams, groups) = (settings.num_beams, settings.num_beam_groups);
        let (rows, k) = settings.checked_sizes(batch, group_size)?;
        let history = TokenHistory::try_repeated("num_beams", prompts, batch, group_size)?;
        let mut beam_scores = buffers::filled("num_beams", rows, NEG_LARGE)?;
        beam_scores
            .iter_mut()
            .step_by(group_size)
            .for_each(|s| *s = 0.0);
        Ok(GroupBeamSearch {
            batch,
            beams,
            groups,
            group_size,
            k,
            prompt_len,
            histories: buffers::filled("num_beam_groups", groups, history)?,
            pipelines: buffers::collect(
                "num_beam_groups",
                groups,
                (0..groups).map(|g| {
                    group_config(config, g, batch, beams, group_size).build_all(prompt_len, 1)
                }),
            )?,
            beam_scores,
            running_nodes: buffers::filled("num_beams", rows, NO_NODE)?,
            hyps: buffers::filled("num_beam_groups", batch * groups, NBest::new(group_size))?,
            group_done: buffers::filled("num_beam_groups", batch * groups, false)?,
            tree: BeamTree::default(),
            choice: StepChoice::new(rows)?,
            cursor: 0,
            finished: false,
            closed: false,
            stop_code: 1,
            streamed: vec![0; batch],
            block: Vec::new(),
            top: TopK::new(k),
            s: settings,
            grammar: super::has_grammar(config),
        })
    }

    pub fn rows(&self) -> usize {
        self.batch * self.beams
    }

    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Global rows of group `g`, batch-major: `b * num_beams + g * group_size + i`.
    pub fn group_rows(&self, g: usize) -> Result<impl Iterator<Item = usize> + '_> {
        if g >= self.groups {
            return Err(CoreError::invalid(
                "g",
                format!("must be a group in [0, {}), got {g}", self.groups),
            ));
        }
        Ok((0..self.batch).flat_map(move |b| {
            (0..self.group_size).map(move |i| b * self.beams + g * self.group_size + i)
        }))
    }

    /// Log-softmax, Hamming diversity against the groups before `g` at this step,
    /// then the processors, over group `g`'s rows of `logits` (`[rows, vocab]`) in place.
    pub fn process_group(&mut self, g: usize, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.process_group_rows(g, logits, vocab, true)
    }

    /// [`Self::process_group`] over rows the caller already log-softmaxed (and changed:
    /// classifier-free guidance runs between the two, as transformers' first processor).
    pub fn process_group_log_probs(
        &mut self,
        g: usize,
        scores: &mut [f32],
        vocab: usize,
    ) -> Result<()> {
        self.process_group_rows(g, scores, vocab, false)
    }

    fn process_group_rows(
        &mut self,
        g: usize,
        logits: &mut [f32],
        vocab: usize,
        log_softmax: bool,
    ) -> Result<()> {
        self.check(logits.len(), vocab)?;
        self.expect_group(g)?;
        self.gather(g, logits, vocab);
        if log_softmax {
            log_softmax_rows(&mut self.block, vocab);
        }
        if g > 0 {
            let chosen: Vec<&[i64]> = (0..self.batch)
                .map(|b| &self.choice.tokens[b * self.beams..b * self.beams + g * self.group_size])
                .collect();
            penalize_group(
                &mut self.block,
                vocab,
                self.group_size,
                &chosen,
                self.s.diversity_penalty as f32,
            );
        }
        let ctx = StepContext::new(&self.histories[g]);
        self.pipelines[g].process(&ctx, &mut LogitsMut::new(&mut self.block, vocab));
        self.scatter(g, logits, vocab);
        Ok(())
    }

    /// Chooses group `g`'s next beams from its processed rows of `logits`, records
    /// its finished hypotheses; groups go in order `0..num_beam_groups` every step.
    pub fn select_group(&mut self, g: usize, logits: &[f32], vocab: usize) -> Result<()> {
        self.check(logits.len(), vocab)?;
        self.expect_group(g)?;
        self.gather(g, logits, vocab);
        let block = std::mem::take(&mut self.block);
        let span = self.group_size * vocab;
        let out = self.select_with(g, vocab, |this, b, first| {
            let gs = this.group_size;
            top_k_into(
                &mut this.top,
                &block[b * span..(b + 1) * span],
                vocab,
                &this.beam_scores[first..first + gs],
            );
            this.top.items().to_vec()
        });
        self.block = block;
        out
    }

    /// [`Self::step`] for a caller that does not read the processed scores: with no
    /// logits processor, each group's candidates come from the log-softmax and the
    /// Hamming penalty computed only where they can be, and `logits` is left as it was
    /// (the same choices and bits as [`Self::step`], without four copies and a write of
    /// every row). With processors it is [`Self::step`].
    pub fn step_unread(&mut self, logits: &mut [f32], vocab: usize) -> Result<()> {
        if self.pipelines.iter().any(|p| !p.is_empty()) {
            return self.step(logits, vocab);
        }
        self.check(logits.len(), vocab)?;
        let mut shifts = Vec::new();
        log_softmax_shifts(logits, vocab, &mut shifts);
        if shifts.iter().copied().any(shift_is_certain) {
            return self.step(logits, vocab);
        }
        let (beams, gs, penalty) = (self.beams, self.group_size, self.s.diversity_penalty as f32);
        for g in 0..self.groups {
            self.expect_group(g)?;
            self.select_with(g, vocab, |this, b, first| {
                let earlier = &this.choice.tokens[b * beams..b * beams + g * gs];
                let minus: Vec<(u32, f32)> = if penalty == 0.0 {
                    Vec::new()
                } else {
                    token_counts(earlier)
                        .into_iter()
                        .filter(|&(t, _)| t >= 0 && (t as usize) < vocab)
                        .map(|(t, n)| (t as u32, penalty * n as f32))
                        .collect()
                };
                let rows = &logits[first * vocab..(first + gs) * vocab];
                let offsets = &this.beam_scores[first..first + gs];
                top_k_log_softmax_into(
                    &mut this.top,
                    rows,
                    vocab,
                    offsets,
                    &shifts[first..first + gs],
                    &minus,
                );
                this.top.items().to_vec()
            })?;
        }
        Ok(())
    }

    /// The selection of group `g` from the candidates `pick(self, b, first row of the
    /// group in item b)` returns for every item still searching, best first.
    fn select_with(
        &mut self,
        g: usize,
        vocab: usize,
        pick: impl Fn(&mut Self, usize, usize) -> Vec<(f32, usize)>,
    ) -> Result<()> {
        if self.group_size * vocab < self.k {
            return Err(CoreError::invalid(
                "num_beams",
                format!(
                    "vocab {vocab} is too small for groups of {}",
                    self.group_size
                ),
            ));
        }
        let (gs, beams) = (self.group_size, self.beams);
        let mut local_parents = vec![0usize; self.batch * gs];
        let mut tokens = vec![0i64; self.batch * gs];
        for b in 0..self.batch {
            let first = b * beams + g * gs;
            let item = b * self.groups + g;
            let cands = if self.group_done[item] {
                Vec::new()
            } else {
                pick(self, b, first)
            };
            if self.grammar
                && !self.group_done[item]
                && cands.iter().all(|c| c.0 == f32::NEG_INFINITY)
            {
                // Every continuation of the group is one its grammar forbids (its beams
                // ended): nothing can be added, as transformers' scorer concludes.
                self.group_done[item] = true;
            }
            let rows = b * gs..(b + 1) * gs;
            if self.group_done[item] {
                self.pad_finished_group(first, &mut tokens[rows.clone()]);
                local_parents[rows].fill(b * gs);
                continue;
            }
            check_picked(&cands, first)?;
            self.place_candidates(
                (g, b),
                &cands,
                vocab,
                &mut tokens[rows.clone()],
                &mut local_parents[rows],
            )?;
        }
        self.advance_group(g, &tokens, &local_parents);
        Ok(())
    }

    /// A finished group (rows from `first`) keeps running on padding.
    fn pad_finished_group(&mut self, first: usize, tokens: &mut [i64]) {
        let rows = first..first + self.group_size;
        self.beam_scores[rows.clone()].fill(0.0);
        self.running_nodes[rows.clone()].fill(NO_NODE);
        self.choice.parents[rows].fill(first as i64);
        tokens.fill(self.s.pad_token_id);
    }

    /// Group `g` of item `b` from its candidates (best first): EOS ones among the top
    /// `group_size` become hypotheses, the first `group_size` others the group's beams.
    /// `tokens` and `local_parents` are the group's rows of this step.
    fn place_candidates(
        &mut self,
        (g, b): (usize, usize),
        cands: &[(f32, usize)],
        vocab: usize,
        tokens: &mut [i64],
        local_parents: &mut [usize],
    ) -> Result<()> {
        let cur_len = self.histories[g].len();
        let generated = cur_len + 1 - self.prompt_len;
        let gs = self.group_size;
        let first = b * self.beams + g * gs;
        let item = b * self.groups + g;
        let mut filled = 0;
        let (mut new_scores, mut new_nodes) = (vec![0.0f32; gs], vec![NO_NODE; gs]);
        for (rank, &(score, idx)) in cands.iter().enumerate() {
            let (beam, token) = (idx / vocab, (idx % vocab) as i64);
            let parent_row = first + beam;
            if self.s.is_eos(token) {
                if rank >= gs {
                    continue;
                }
                let norm = normalized_score_f64(f64::from(score), generated, self.s.length_penalty);
                if self.hyps[item].accepts(norm) {
                    let id = self.push_node(parent_row, token, b, g, cur_len, score);
                    let n = self.tree.get_mut(id);
                    n.end = EndReason::Eos;
                    n.final_score = norm as f32;
                    self.hyps[item].add(norm, id);
                }
            } else {
                new_scores[filled] = score;
                new_nodes[filled] = self.push_node(parent_row, token, b, g, cur_len, score);
                tokens[filled] = token;
                local_parents[filled] = b * gs + beam;
                self.choice.parents[first + filled] = parent_row as i64;
                filled += 1;
                if filled == gs {
                    break;
                }
            }
        }
        if filled < gs {
            return Err(CoreError::invalid(
                "eos_token_id",
                "too many candidates ended in EOS to continue the group",
            ));
        }
        self.beam_scores[first..first + gs].copy_from_slice(&new_scores);
        self.running_nodes[first..first + gs].copy_from_slice(&new_nodes);
        let hyps = &self.hyps[item];
        self.group_done[item] = hyps.is_full()
            && group_is_done(
                self.s.early_stopping,
                self.s.length_penalty,
                hyps.worst_score(),
                f64::from(cands[0].0),
                generated,
                self.s.max_length - self.prompt_len,
            );
        Ok(())
    }

    /// Group `g`'s chosen tokens into the step's choice and its history; the step ends
    /// after the last group.
    fn advance_group(&mut self, g: usize, tokens: &[i64], local_parents: &[usize]) {
        let (gs, beams) = (self.group_size, self.beams);
        for b in 0..self.batch {
            let first = b * beams + g * gs;
            self.choice.tokens[first..first + gs].copy_from_slice(&tokens[b * gs..(b + 1) * gs]);
        }
        self.histories[g].reorder(local_parents);
        self.pipelines[g].reorder(local_parents);
        self.histories[g].push(tokens);
        self.cursor += 1;
        if self.cursor == self.groups {
            self.cursor = 0;
            let len = self.histories[0].len();
            self.finished = len >= self.s.max_length || self.group_done.iter().all(|&d| d);
        }
    }

    /// Every group of one step: [`Self::process_group`] then [`Self::select_group`]
    /// for `g = 0..num_beam_groups`, processed scores written back into `logits`.
    pub fn step(&mut self, logits: &mut [f32], vocab: usize) -> Result<()> {
        for g in 0..self.groups {
            self.process_group(g, logits, vocab)?;
            self.select_group(g, logits, vocab)?;
        }
        Ok(())
    }

    fn push_node(
        &mut self,
        parent_row: usize,
        token: i64,
        b: usize,
        g: usize,
        cur_len: usize,
        score: f32,
    ) -> u32 {
        self.tree.push(Node {
            parent: self.running_nodes[parent_row],
            token,
            parent_row: parent_row as u32,
            batch: b as u32,
            group: g as u32,
            step: (cur_len - self.prompt_len) as u32,
            score,
            final_score: f32::NAN,
            end: EndReason::Running,
        })
    }

    fn expect_group(&self, g: usize) -> Result<()> {
        if self.finished {
            return Err(CoreError::invalid(
                "beam_step",
                "the search is finished; call finalize",
            ));
        }
        if g != self.cursor {
            return Err(CoreError::invalid(
                "beam_group",
                format!(
                    "groups go in order; expected group {}, got {g}",
                    self.cursor
                ),
            ));
        }
        Ok(())
    }

    fn gather(&mut self, g: usize, logits: &[f32], vocab: usize) {
        self.block.clear();
        let span = self.group_size * vocab;
        for b in 0..self.batch {
            let start = (b * self.beams + g * self.group_size) * vocab;
            self.block.extend_from_slice(&logits[start..start + span]);
        }
    }

    fn scatter(&self, g: usize, logits: &mut [f32], vocab: usize) {
        let span = self.group_size * vocab;
        for b in 0..self.batch {
            let start = (b * self.beams + g * self.group_size) * vocab;
            logits[start..start + span].copy_from_slice(&self.block[b * span..(b + 1) * span]);
        }
    }

    fn check(&self, len: usize, vocab: usize) -> Result<()> {
        super::check_logits(len, self.rows(), vocab)
    }
}

impl BeamCore for GroupBeamSearch {
    super::core::field_accessors!();

    /// All groups of every item are done, or `max_length` is reached.
    fn is_done(&self) -> bool {
        self.finished
    }

    fn stop(&mut self, code: u8) {
        self.finished = true;
        self.stop_code = code.max(1);
    }

    fn settled_candidates(&self, b: usize) -> Vec<NodeRef> {
        let mut set = Vec::new();
        let best = (0..self.groups)
            .flat_map(|g| self.hyps[b * self.groups + g].beams().iter().copied())
            .max_by(|x, y| x.0.total_cmp(&y.0));
        if let Some((_, node)) = best {
            set.push(node);
        }
        for g in (0..self.groups).filter(|&g| !self.group_done[b * self.groups + g]) {
            let first = b * self.beams + g * self.group_size;
            set.extend_from_slice(&self.running_nodes[first..first + self.group_size]);
        }
        set.into_iter().map(NodeRef::Made).collect()
    }

    /// Adds the running beams of unfinished groups as hypotheses, then returns the
    /// best `num_return_sequences` per batch item across all its groups.
    fn finalize(&mut self) -> Finalized {
        let len = self.histories[0].len();
        let generated = len - self.prompt_len;
        let end = if len >= self.s.max_length {
            EndReason::Length
        } else {
            EndReason::Stop(self.stop_code)
        };
        for b in (0..self.batch).filter(|_| !self.closed) {
            for g in 0..self.groups {
                let item = b * self.groups + g;
                if self.group_done[item] {
                    continue;
                }
                for i in 0..self.group_size {
                    let row = b * self.beams + g * self.group_size + i;
                    let node = self.running_nodes[row];
                    let norm = normalized_score_f64(
                        f64::from(self.beam_scores[row]),
                        generated,
                        self.s.length_penalty,
                    );
                    if node != NO_NODE && self.hyps[item].accepts(norm) {
                        let n = self.tree.get_mut(node);
                        n.end = end;
                        n.final_score = norm as f32;
                        self.hyps[item].add(norm, node);
                    }
                }
            }
        }
        self.closed = true;
        let mut picks = Vec::with_capacity(self.batch * self.s.num_return_sequences);
        for b in 0..self.batch {
            let prompt = &self.histories[0].row(b * self.group_size)[..self.prompt_len];
            let mut all: Vec<(f64, u32)> = (0..self.groups)
                .flat_map(|g| self.hyps[b * self.groups + g].beams().iter().copied())
                .collect();
            // Python's stable ascending sort, then pop() from the end
            all.sort_by(|x, y| x.0.total_cmp(&y.0));
            let n = self.s.num_return_sequences;
            for &(score, node) in all.iter().rev().take(n) {
                picks.push(Pick {
                    prompt,
                    node,
                    score: score as f32,
                });
            }
            // Finalized before any step (a stopping criterion fired at once): every
            // item still returns `num_return_sequences` rows, the bare prompt, as
            // BeamSearch does with its empty slots.
            for _ in all.len()..n {
                picks.push(Pick {
                    prompt,
                    node: NO_NODE,
                    score: NEG_LARGE,
                });
            }
        }
        assemble(&self.tree, &picks, self.s.pad_token_id)
    }

    /// Nodes of every kept hypothesis at the end (the rest of the tree was pruned).
    fn surviving_nodes(&self) -> Vec<u32> {
        self.hyps
            .iter()
            .flat_map(|h| h.beams().iter().map(|&(_, n)| n))
            .collect()
    }
}

/// Group `g`'s pipeline settings: the grammar's matchers are the global rows, so the
/// group's pipeline sees them through its rows (`b * beams + g * group_size + i`).
fn group_config(
    config: &PipelineConfig,
    g: usize,
    batch: usize,
    beams: usize,
    group_size: usize,
) -> std::borrow::Cow<'_, PipelineConfig> {
    #[cfg(feature = "grammar")]
    if let Some(handle) = &config.grammar {
        let rows = (0..batch)
            .flat_map(|b| (0..group_size).map(move |i| b * beams + g * group_size + i))
            .collect();
        let mut own = config.clone();
        own.grammar = Some(handle.for_rows(rows));
        return std::borrow::Cow::Owned(own);
    }
    let _ = (g, batch, beams, group_size);
    std::borrow::Cow::Borrowed(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(beams: usize, groups: usize, penalty: f32, max_length: usize) -> BeamSettings {
        BeamSettings {
            num_beams: beams,
            num_beam_groups: groups,
            diversity_penalty: f64::from(penalty),
            eos_token_ids: vec![1],
            max_length,
            num_return_sequences: beams,
            ..Default::default()
        }
    }

    #[test]
    fn all_nan_logits_are_a_named_error() {
        let mut s =
            GroupBeamSearch::new(&[5], 1, &PipelineConfig::default(), settings(4, 2, 0.5, 4))
                .unwrap();
        let mut logits = vec![f32::NAN; 4 * 6];
        assert_eq!(
            s.step(&mut logits, 6),
            Err(CoreError::NoValidToken { row: 0 })
        );
    }

    #[test]
    fn finalize_before_any_step_returns_every_row() {
        // fuzz (beam target): a search stopped before its first step returned 0 rows
        let mut s =
            GroupBeamSearch::new(&[], 2, &PipelineConfig::default(), settings(4, 2, 0.0, 4))
                .unwrap();
        let out = s.finalize();
        assert_eq!(out.rows, 8, "batch 2 x num_return_sequences 4");
        assert_eq!(out.sequences.len(), 0);
        assert!(out.scores.iter().all(|&x| x == NEG_LARGE));
        let mut s = GroupBeamSearch::new(
            &[5, 6],
            2,
            &PipelineConfig::default(),
            settings(4, 2, 0.0, 4),
        )
        .unwrap();
        s.stop(2);
        let out = s.finalize();
        assert_eq!((out.rows, out.width), (8, 1));
        assert_eq!(out.sequences, [5, 5, 5, 5, 6, 6, 6, 6]);
    }

    proptest::proptest! {
        /// Leaving the scores unwritten changes nothing the search decides.
        #[test]
        fn unread_scores_step_is_the_step(
            seed in proptest::prelude::any::<u64>(),
            groups in 1usize..4,
            group_size in 1usize..3,
            vocab in 2usize..150,
            penalty in proptest::prop_oneof![proptest::strategy::Just(0.0f32), proptest::strategy::Just(0.5), proptest::strategy::Just(4.0)],
        ) {
            let beams = groups * group_size;
            let rows = 2 * beams;
            let mut a = GroupBeamSearch::new(&[5, 6], 2, &PipelineConfig::default(), settings(beams, groups, penalty, 8)).unwrap();
            let mut b = GroupBeamSearch::new(&[5, 6], 2, &PipelineConfig::default(), settings(beams, groups, penalty, 8)).unwrap();
            let mut step = 0;
            while !a.is_done() {
                let logits = crate::beam::tied_logits(seed, step, rows * vocab);
                let (mut la, mut lb) = (logits.clone(), logits.clone());
                let (ra, rb) = (a.step(&mut la, vocab), b.step_unread(&mut lb, vocab));
                proptest::prop_assert_eq!(&ra, &rb);
                if ra.is_err() {
                    return Ok(()); // e.g. too many EOS candidates for a tiny vocabulary: the same error
                }
                proptest::prop_assert_eq!(&lb, &logits, "the scores are left as they were");
                proptest::prop_assert_eq!(a.next_tokens(), b.next_tokens());
                proptest::prop_assert_eq!(a.parents(), b.parents());
                let bits = |s: &GroupBeamSearch| s.beam_scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                proptest::prop_assert_eq!(bits(&a), bits(&b));
                step += 1;
            }
            proptest::prop_assert!(b.is_done());
            let (fa, fb) = (a.finalize(), b.finalize());
            proptest::prop_assert_eq!(fa.sequences, fb.sequences);
            proptest::prop_assert_eq!(fa.scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), fb.scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn later_groups_avoid_tokens_of_earlier_groups() {
        // every row prefers token 3, then 2; with a large penalty group 1 must take 2
        let mut s =
            GroupBeamSearch::new(&[5], 1, &PipelineConfig::default(), settings(2, 2, 10.0, 3))
                .unwrap();
        let mut logits = vec![0.0f32, -9.0, 1.0, 2.0, 0.0, -9.0, 1.0, 2.0];
        s.step(&mut logits, 4).unwrap();
        assert_eq!(s.next_tokens(), &[3, 2]);
        assert_eq!(s.parents(), &[0, 1]);
        assert!(
            logits[7] < -9.0,
            "the processed (penalised) scores are written back"
        );
        let mut plain =
            GroupBeamSearch::new(&[5], 1, &PipelineConfig::default(), settings(2, 2, 0.0, 3))
                .unwrap();
        let mut logits = vec![0.0f32, -9.0, 1.0, 2.0, 0.0, -9.0, 1.0, 2.0];
        plain.step(&mut logits, 4).unwrap();
        assert_eq!(plain.next_tokens(), &[3, 3]);
    }

    #[test]
    fn groups_go_in_order_and_finalize_returns_best_first() {
        let mut s = GroupBeamSearch::new(
            &[5, 6],
            2,
            &PipelineConfig::default(),
            settings(4, 2, 0.5, 4),
        )
        .unwrap();
        let mut logits: Vec<f32> = (0..8 * 6).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        assert!(s.select_group(1, &logits, 6).is_err());
        while !s.is_done() {
            s.step(&mut logits, 6).unwrap();
        }
        assert!(s.step(&mut logits, 6).is_err());
        let out = s.finalize();
        assert_eq!(out.rows, 8);
        for item in out.scores.chunks(4) {
            assert!(item.windows(2).all(|w| w[0] >= w[1]));
        }
        assert_eq!(out.sequences[0], 5);
        assert_eq!(out.sequences[4 * out.width], 6);
        assert_eq!(s.finalize(), out, "finalize is idempotent");
    }
}
