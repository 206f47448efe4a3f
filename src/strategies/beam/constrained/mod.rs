//! Constrained beam search with transformers 4.55 semantics (the last release that
//! ships it), except where 4.55's constraint tracking is wrong (see `crate::constraints`).
//!
//! Per batch item and step:
//! 1. the best `K = max(2, 1 + n_eos) × num_beams` continuations over `beams × vocab`;
//!    an EOS among the first `num_beams` finishes its beam only if the beam satisfies
//!    every constraint (otherwise it is dropped), the first `num_beams` others are kept;
//! 2. every beam that still misses a constraint also proposes the tokens that advance it
//!    (skipping sequences already proposed);
//! 3. if any were proposed, all candidates are dealt out over their banks
//!    ([`crate::constraints::bank_order`]) and the first `num_beams` become the beams.
//!
//! Finished hypotheses live in transformers 4.x n-best lists (`NBest`). At the end the
//! running beams that satisfy the constraints join them; when fewer than
//! `num_return_sequences` hypotheses satisfy them, the best running beams that do not
//! fill the rest, ranked after every satisfying one and flagged.

mod endgame;

use std::collections::{HashMap, HashSet};

use super::core::{BeamCore, StepChoice};
use super::length::{group_is_done, normalized_score_f64};
use super::nbest::NBest;
use super::output::{assemble, Finalized, Pick};
use super::select::{check_picked, log_softmax_rows, top_k_into, TopK};
use super::settings::BeamSettings;
use super::tree::{BeamTree, EndReason, Node, NodeRef, NO_NODE};
use super::NEG_LARGE;
use crate::buffers;
use crate::constraints::{bank_order, ConstraintSet, ConstraintState};
use crate::error::{CoreError, Result};
use crate::history::TokenHistory;
use crate::logits::{LogitsMut, Pipeline, PipelineConfig, StepContext};

/// A candidate of the constraint step.
struct Cand {
    score: f32,
    parent_row: usize,
    token: i64,
    state: ConstraintState,
}

/// The beams being built by one step.
struct Next {
    scores: Vec<f32>,
    nodes: Vec<u32>,
    states: Vec<ConstraintState>,
    seq_ids: Vec<u32>,
    /// `(parent sequence id, token)` -> sequence id.
    table: HashMap<(u32, i64), u32>,
}

impl Next {
    /// Rows of finished items keep score 0, no node and their state.
    fn new(search: &ConstrainedBeamSearch) -> Self {
        let rows = search.rows();
        Next {
            scores: vec![0.0; rows],
            nodes: vec![NO_NODE; rows],
            states: search.states.clone(),
            seq_ids: vec![0; rows],
            table: HashMap::new(),
        }
    }
}

pub struct ConstrainedBeamSearch {
    s: BeamSettings,
    set: ConstraintSet,
    /// Largest token id any constraint uses (checked against the logits' vocab).
    max_token: i64,
    batch: usize,
    beams: usize,
    k: usize,
    prompt_len: usize,
    history: TokenHistory,
    pipeline: Pipeline,
    beam_scores: Vec<f32>,
    running_nodes: Vec<u32>,
    /// Constraint progress of every row.
    states: Vec<ConstraintState>,
    /// Equal ids ⇔ equal token sequences (rows of one batch item), for de-duplication.
    seq_ids: Vec<u32>,
    /// Finished hypotheses (all satisfying the constraints), per batch item.
    hyps: Vec<NBest>,
    item_done: Vec<bool>,
    tree: BeamTree,
    /// Tokens and parent rows chosen at the current step (transformers' `current_tokens`).
    choice: StepChoice,
    finished: bool,
    /// Code of the outside criterion that ended the search (see [`Self::stop`]).
    stop_code: u8,
    /// Running beams that missed a constraint at the end, per item: `(score, node)`.
    unmet: Option<Vec<Vec<(f64, u32)>>>,
    streamed: Vec<usize>,
    top: TopK,
    advance: Vec<i64>,
    /// A grammar constrains the rows (see `select` and `advance_candidates`).
    grammar: bool,
}

impl ConstrainedBeamSearch {
    /// `prompts` is row-major `[batch, prompt_len]` (expanded here to `num_beams` rows
    /// per item). The prompt counts towards the constraints, as in transformers;
    /// `prompt_mask` (same shape, `false` = padding) keeps padding out of them.
    pub fn new(
        prompts: &[i64],
        batch: usize,
        config: &PipelineConfig,
        settings: BeamSettings,
        set: ConstraintSet,
        prompt_mask: Option<&[bool]>,
    ) -> Result<Self> {
        let prompt_len = super::prompt_len(prompts, batch)?;
        if let Some(m) = prompt_mask {
            if m.len() != prompts.len() {
                return Err(CoreError::Shape {
                    name: "attention_mask",
                    expected: format!("{} values (as input_ids)", prompts.len()),
                    got: format!("{} values", m.len()),
                });
            }
        }
        settings.validate(prompt_len)?;
        config.validate(None)?;
        config.validate_rows(buffers::product("num_beams", &[batch, settings.num_beams])?)?;
        refuse_other_modes(&settings, config)?;
        let beams = settings.num_beams;
        let (rows, k) = settings.checked_sizes(batch, beams)?;
        let history = TokenHistory::try_repeated("num_beams", prompts, batch, beams)?;
        let mut states: Vec<ConstraintState> = buffers::with_capacity("num_beams", rows)?;
        states.extend((0..batch).flat_map(|b| {
            let prompt = &prompts[b * prompt_len..(b + 1) * prompt_len];
            let mask = prompt_mask.map(|m| &m[b * prompt_len..(b + 1) * prompt_len]);
            std::iter::repeat(prompt_state(&set, prompt, mask)).take(beams)
        }));
        let max_token = set.max_token().unwrap_or(0);
        let mut beam_scores = buffers::filled("num_beams", rows, NEG_LARGE)?;
        beam_scores.iter_mut().step_by(beams).for_each(|s| *s = 0.0);
        Ok(ConstrainedBeamSearch {
            batch,
            beams,
            k,
            prompt_len,
            history,
            pipeline: config.build(prompt_len),
            beam_scores,
            running_nodes: buffers::filled("num_beams", rows, NO_NODE)?,
            states,
            seq_ids: buffers::filled("num_beams", rows, 0)?,
            hyps: (0..batch).map(|_| NBest::new(beams)).collect(),
            item_done: vec![false; batch],
            grammar: super::has_grammar(config),
            tree: BeamTree::default(),
            choice: StepChoice::new(rows)?,
            finished: false,
            stop_code: 1,
            unmet: None,
            streamed: vec![0; batch],
            top: TopK::new(k),
            advance: Vec::new(),
            max_token,
            set,
            s: settings,
        })
    }

    pub fn rows(&self) -> usize {
        self.batch * self.beams
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn settings(&self) -> &BeamSettings {
        &self.s
    }

    pub fn constraints(&self) -> &ConstraintSet {
        &self.set
    }

    pub fn history(&self) -> &TokenHistory {
        &self.history
    }

    /// Constraint progress of each running beam (`[batch * num_beams]`).
    pub fn states(&self) -> &[ConstraintState] {
        &self.states
    }

    /// Log-softmax, then the logits processors, over `logits` (`[rows, vocab]`) in place.
    pub fn process(&self, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.check(logits.len(), vocab)?;
        log_softmax_rows(logits, vocab);
        self.process_log_probs(logits, vocab)
    }

    /// The processors over scores the caller already log-softmaxed (see
    /// [`crate::strategies::beam::BeamSearch::process_log_probs`]).
    pub fn process_log_probs(&self, scores: &mut [f32], vocab: usize) -> Result<()> {
        self.check(scores.len(), vocab)?;
        self.pipeline.process(
            &StepContext::new(&self.history),
            &mut LogitsMut::new(scores, vocab),
        );
        Ok(())
    }

    /// Chooses the next beams from processed scores (`[rows, vocab]`).
    pub fn select(&mut self, logits: &[f32], vocab: usize) -> Result<()> {
        self.check(logits.len(), vocab)?;
        if self.finished {
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
        if self.max_token as usize >= vocab {
            return Err(CoreError::TokenOutOfVocab {
                name: "force_words_ids",
                token: self.max_token,
                vocab,
            });
        }
        let beams = self.beams;
        let mut next = Next::new(self);
        for b in 0..self.batch {
            let first = b * beams;
            if self.item_done[b] {
                for row in first..first + beams {
                    self.choice.tokens[row] = self.s.pad_token_id;
                    self.choice.parents[row] = first as i64;
                }
                continue;
            }
            let rows = &logits[first * vocab..(first + beams) * vocab];
            let (mut cands, best) = match self.top_candidates(b, rows, vocab) {
                // Every continuation is one the grammar forbids (the beams ended): the
                // item has nothing left to add, as transformers' scorer concludes.
                Err(CoreError::NoValidToken { .. }) if self.grammar => {
                    self.item_done[b] = true;
                    for row in first..first + beams {
                        self.choice.tokens[row] = self.s.pad_token_id;
                        self.choice.parents[row] = first as i64;
                    }
                    continue;
                }
                other => other?,
            };
            let order = self.advance_candidates(b, rows, vocab, &mut cands);
            for (j, &c) in order.iter().enumerate() {
                self.take_candidate(b, first + j, &cands[c], &mut next);
            }
            let hyps = &self.hyps[b];
            self.item_done[b] = hyps.is_full()
                && group_is_done(
                    self.s.early_stopping,
                    self.s.length_penalty,
                    hyps.worst_score(),
                    f64::from(best),
                    self.history.len() + 1 - self.prompt_len,
                    self.s.max_length - self.prompt_len,
                );
        }
        let parents: Vec<usize> = self.choice.parents.iter().map(|&p| p as usize).collect();
        self.history.reorder(&parents);
        self.pipeline.reorder(&parents);
        self.history.push(&self.choice.tokens);
        self.beam_scores = next.scores;
        self.running_nodes = next.nodes;
        self.states = next.states;
        self.seq_ids = next.seq_ids;
        self.finished =
            self.history.len() >= self.s.max_length || self.item_done.iter().all(|&d| d);
        Ok(())
    }

    /// [`Self::process`] then [`Self::select`]; the processed scores stay in `logits`.
    pub fn step(&mut self, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.process(logits, vocab)?;
        self.select(logits, vocab)
    }

    /// Adds the running beams of unfinished items: satisfying ones to the n-best list,
    /// the others to `unmet`.
    fn close(&mut self) {
        let len = self.history.len();
        let generated = len - self.prompt_len;
        let end = if len >= self.s.max_length {
            EndReason::Length
        } else {
            EndReason::Stop(self.stop_code)
        };
        let mut unmet = vec![Vec::new(); self.batch];
        for b in (0..self.batch).filter(|&b| !self.item_done[b]) {
            for row in b * self.beams..(b + 1) * self.beams {
                let node = self.running_nodes[row];
                let norm = normalized_score_f64(
                    f64::from(self.beam_scores[row]),
                    generated,
                    self.s.length_penalty,
                );
                if !self.states[row].is_complete() {
                    unmet[b].push((norm, node));
                } else if self.hyps[b].accepts(norm) {
                    self.hyps[b].add(norm, node);
                } else {
                    continue;
                }
                if node != NO_NODE {
                    let n = self.tree.get_mut(node);
                    n.end = end;
                    n.final_score = norm as f32;
                }
            }
        }
        self.unmet = Some(unmet);
    }

    /// The first `num_beams` of item `b`'s top-`K` continuations that do not end in EOS,
    /// with their constraint states, and the best score of all `K`. An EOS among the first
    /// `num_beams` finishes its beam if the beam satisfies every constraint.
    fn top_candidates(&mut self, b: usize, rows: &[f32], vocab: usize) -> Result<(Vec<Cand>, f32)> {
        let first = b * self.beams;
        top_k_into(
            &mut self.top,
            rows,
            vocab,
            &self.beam_scores[first..first + self.beams],
        );
        let top: Vec<(f32, usize)> = self.top.items().to_vec();
        check_picked(&top, first)?;
        let mut cands: Vec<Cand> = Vec::with_capacity(2 * self.beams);
        for (rank, &(score, idx)) in top.iter().enumerate() {
            let (parent_row, token) = (first + idx / vocab, (idx % vocab) as i64);
            if self.s.is_eos(token) {
                if rank < self.beams && self.states[parent_row].is_complete() {
                    self.finish(b, parent_row, token, score);
                }
                continue;
            }
            let mut state = self.states[parent_row].clone();
            state.add(&self.set, token);
            cands.push(Cand {
                score,
                parent_row,
                token,
                state,
            });
            if cands.len() == self.beams {
                return Ok((cands, top[0].0));
            }
        }
        Err(CoreError::invalid(
            "eos_token_id",
            "too many candidates ended in EOS to continue the beams",
        ))
    }

    /// Makes `cand` the beam at `row` after this step.
    fn take_candidate(&mut self, b: usize, row: usize, cand: &Cand, next: &mut Next) {
        next.nodes[row] = self.push_node(cand.parent_row, cand.token, b, cand.score);
        next.scores[row] = cand.score;
        next.states[row] = cand.state.clone();
        let key = (self.seq_ids[cand.parent_row], cand.token);
        let fresh = next.table.len() as u32;
        next.seq_ids[row] = *next.table.entry(key).or_insert(fresh);
        self.choice.tokens[row] = cand.token;
        self.choice.parents[row] = cand.parent_row as i64;
    }

    /// Adds the tokens that advance each unsatisfied beam of item `b` to `cands`
    /// (unless that sequence is already a candidate); returns the `num_beams` survivors
    /// in the order they become beams.
    fn advance_candidates(
        &mut self,
        b: usize,
        rows: &[f32],
        vocab: usize,
        cands: &mut Vec<Cand>,
    ) -> Vec<usize> {
        let first = b * self.beams;
        let topk = cands.len();
        let mut seen: HashSet<(u32, i64)> = cands
            .iter()
            .map(|c| (self.seq_ids[c.parent_row], c.token))
            .collect();
        for i in 0..self.beams {
            let row = first + i;
            if self.states[row].is_complete() {
                continue;
            }
            self.states[row].advance_tokens(&self.set, &mut self.advance);
            for &token in &self.advance {
                if !seen.insert((self.seq_ids[row], token)) {
                    continue;
                }
                let score = rows[i * vocab + token as usize] + self.beam_scores[row];
                if self.grammar && score == f32::NEG_INFINITY {
                    continue; // a forced token the grammar forbids here: not a candidate
                }
                let mut state = self.states[row].clone();
                state.add(&self.set, token);
                cands.push(Cand {
                    score,
                    parent_row: row,
                    token,
                    state,
                });
            }
        }
        let order = if cands.len() == topk {
            (0..topk).collect()
        } else {
            self.bank_ranked(cands)
        };
        self.keep_completable(b, rows, vocab, cands, order)
    }

    /// Every index of `cands` in transformers' bank order.
    fn bank_ranked(&self, cands: &[Cand]) -> Vec<usize> {
        let banks: Vec<usize> = cands.iter().map(|c| c.state.bank(&self.set)).collect();
        let scores: Vec<f32> = cands.iter().map(|c| c.score).collect();
        let mut order = bank_order(&banks, &scores, cands.len());
        if self.grammar {
            // With a grammar, -inf candidates (tokens it forbids, taken only to fill the
            // beams) never displace a candidate it allows, whatever their banks.
            order.sort_by_key(|&c| cands[c].score == f32::NEG_INFINITY);
        }
        order
    }

    /// Records `parent_row + token` (an EOS) as a finished hypothesis of item `b`.
    fn finish(&mut self, b: usize, parent_row: usize, token: i64, score: f32) {
        let generated = self.history.len() + 1 - self.prompt_len;
        let norm = normalized_score_f64(f64::from(score), generated, self.s.length_penalty);
        if self.hyps[b].accepts(norm) {
            let id = self.push_node(parent_row, token, b, score);
            let n = self.tree.get_mut(id);
            n.end = EndReason::Eos;
            n.final_score = norm as f32;
            self.hyps[b].add(norm, id);
        }
    }

    /// A tree node for `parent_row + token` at the current step.
    fn push_node(&mut self, parent_row: usize, token: i64, b: usize, score: f32) -> u32 {
        self.tree.push(Node {
            parent: self.running_nodes[parent_row],
            token,
            parent_row: parent_row as u32,
            batch: b as u32,
            group: 0,
            step: (self.history.len() - self.prompt_len) as u32,
            score,
            final_score: f32::NAN,
            end: EndReason::Running,
        })
    }

    fn check(&self, len: usize, vocab: usize) -> Result<()> {
        super::check_logits(len, self.rows(), vocab)
    }
}

impl BeamCore for ConstrainedBeamSearch {
    super::core::field_accessors!();

    /// Every batch item is done, `max_length` is reached, or [`Self::stop`] was called.
    fn is_done(&self) -> bool {
        self.finished
    }

    fn stop(&mut self, code: u8) {
        self.finished = true;
        self.stop_code = code.max(1);
    }

    /// The best finished hypothesis and every running beam of an item still searching.
    fn settled_candidates(&self, b: usize) -> Vec<NodeRef> {
        let mut set = Vec::with_capacity(self.beams + 1);
        if let Some(&(_, node)) = self.hyps[b]
            .beams()
            .iter()
            .max_by(|x, y| x.0.total_cmp(&y.0))
        {
            set.push(node);
        }
        if !self.item_done[b] {
            set.extend_from_slice(&self.running_nodes[b * self.beams..(b + 1) * self.beams]);
        }
        set.into_iter().map(NodeRef::Made).collect()
    }

    /// The best `num_return_sequences` hypotheses of every batch item, satisfying ones
    /// first; the first call adds the running beams of unfinished items.
    fn finalize(&mut self) -> Finalized {
        if self.unmet.is_none() {
            self.close();
        }
        let unmet = self.unmet.as_ref().expect("closed above");
        let n = self.s.num_return_sequences;
        let mut picks = Vec::with_capacity(self.batch * n);
        let mut satisfied = Vec::with_capacity(self.batch * n);
        for (b, (hyps, unmet)) in self.hyps.iter().zip(unmet).enumerate() {
            let prompt = &self.history.row(b * self.beams)[..self.prompt_len];
            let start = picks.len();
            for (list, ok) in [(hyps.beams(), true), (&unmet[..], false)] {
                let mut sorted = list.to_vec();
                // Python's stable ascending sort, then pop() from the end
                sorted.sort_by(|x, y| x.0.total_cmp(&y.0));
                let room = n - (picks.len() - start);
                for &(score, node) in sorted.iter().rev().take(room) {
                    picks.push(Pick {
                        prompt,
                        node,
                        score: score as f32,
                    });
                    satisfied.push(ok);
                }
            }
        }
        Finalized {
            constraints_satisfied: satisfied,
            ..assemble(&self.tree, &picks, self.s.pad_token_id)
        }
    }

    /// Nodes of every hypothesis that can be returned (the rest of the tree was pruned).
    fn surviving_nodes(&self) -> Vec<u32> {
        let mut alive: Vec<u32> = self
            .hyps
            .iter()
            .flat_map(|h| h.beams().iter().map(|&(_, n)| n))
            .collect();
        match &self.unmet {
            Some(unmet) => alive.extend(unmet.iter().flatten().map(|&(_, n)| n)),
            None => {
                for b in (0..self.batch).filter(|&b| !self.item_done[b]) {
                    alive.extend_from_slice(
                        &self.running_nodes[b * self.beams..(b + 1) * self.beams],
                    );
                }
            }
        }
        alive.retain(|&n| n != NO_NODE);
        alive
    }
}

/// What constrained beam search does not combine with: fewer than two beams, sampling,
/// beam groups.
fn refuse_other_modes(settings: &BeamSettings, config: &PipelineConfig) -> Result<()> {
    if settings.num_beams < 2 {
        return Err(CoreError::invalid(
            "num_beams",
            "constrained beam search needs num_beams > 1",
        ));
    }
    if settings.sample.is_some() || config.do_sample {
        return Err(CoreError::invalid(
            "do_sample",
            "constrained beam search does not support do_sample=True",
        ));
    }
    if settings.num_beam_groups != 1 {
        return Err(CoreError::invalid(
            "num_beam_groups",
            "constrained beam search does not support num_beam_groups > 1",
        ));
    }
    Ok(())
}

/// The constraints' state after one prompt: its tokens count (padding, `false` in
/// `mask`, does not).
fn prompt_state(set: &ConstraintSet, prompt: &[i64], mask: Option<&[bool]>) -> ConstraintState {
    let mut st = set.initial_state();
    for (i, &t) in prompt.iter().enumerate() {
        if mask.map_or(true, |m| m[i]) {
            st.add(set, t);
        }
    }
    st
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::constraints::ConstraintSpec;
    use proptest::prelude::*;

    pub(super) fn settings(beams: usize, eos: &[i64], max_length: usize, n: usize) -> BeamSettings {
        BeamSettings {
            num_beams: beams,
            eos_token_ids: eos.to_vec(),
            max_length,
            num_return_sequences: n,
            ..Default::default()
        }
    }

    pub(super) fn set(specs: Vec<ConstraintSpec>) -> ConstraintSet {
        ConstraintSet::new(specs, None).unwrap()
    }

    pub(super) fn contains(text: &[i64], phrase: &[i64]) -> bool {
        text.windows(phrase.len()).any(|w| w == phrase)
    }

    pub(super) fn search(
        prompts: &[i64],
        batch: usize,
        st: BeamSettings,
        specs: Vec<ConstraintSpec>,
    ) -> ConstrainedBeamSearch {
        ConstrainedBeamSearch::new(
            prompts,
            batch,
            &PipelineConfig::default(),
            st,
            set(specs),
            None,
        )
        .unwrap()
    }

    #[test]
    fn all_nan_logits_are_a_named_error() {
        let mut s = search(
            &[5],
            1,
            settings(2, &[1], 4, 1),
            vec![ConstraintSpec::Phrase(vec![3])],
        );
        let mut logits = vec![f32::NAN; 2 * 6];
        assert_eq!(
            s.step(&mut logits, 6),
            Err(CoreError::NoValidToken { row: 0 })
        );
    }

    /// Runs to the end with logits `logits(step, row, token)`; returns the output and the step count.
    pub(super) fn run(
        s: &mut ConstrainedBeamSearch,
        vocab: usize,
        logits: impl Fn(usize, usize, usize) -> f32,
    ) -> (Finalized, Vec<bool>, usize) {
        let mut steps = 0;
        while !s.is_done() {
            let mut l: Vec<f32> = (0..s.rows() * vocab)
                .map(|i| logits(steps, i / vocab, i % vocab))
                .collect();
            s.step(&mut l, vocab).unwrap();
            steps += 1;
            assert!(steps < 1000, "the search must end by max_length");
        }
        let out = s.finalize();
        let satisfied = out.constraints_satisfied.clone();
        (out, satisfied, steps)
    }

    #[test]
    fn forced_phrase_appears_although_the_model_never_picks_it() {
        // vocab 6: the model prefers 3, then 1; phrase [4, 5] has low probability; eos = 2
        // two new tokens: [4, 5] is the only sequence that holds the phrase
        let prefs = [0.0f32, 1.0, 0.5, 3.0, -4.0, -4.0];
        let mut s = search(
            &[0],
            1,
            settings(3, &[2], 3, 3),
            vec![ConstraintSpec::Phrase(vec![4, 5])],
        );
        let (out, ok, _) = run(&mut s, 6, |_, _, t| prefs[t]);
        // one beam holds the phrase; the other two returned rows are flagged, ranked after it
        assert_eq!(ok, vec![true, false, false]);
        assert!(
            contains(&out.sequences[..out.width], &[4, 5]),
            "{:?}",
            out.sequences
        );
        assert!(out.scores[1] >= out.scores[2]);
        assert!(
            out.scores[1] > out.scores[0],
            "flagged rows rank after satisfying ones even when better"
        );
    }

    #[test]
    fn eos_of_an_unsatisfied_beam_is_dropped() {
        // EOS (2) is the favourite everywhere; the first step cannot satisfy [4]
        let prefs = [0.0f32, 0.0, 5.0, 0.0, -1.0, 0.0];
        let mut s = search(
            &[0],
            1,
            settings(2, &[2], 6, 1),
            vec![ConstraintSpec::Phrase(vec![4])],
        );
        let mut l: Vec<f32> = (0..2 * 6).map(|i| prefs[i % 6]).collect();
        s.step(&mut l, 6).unwrap();
        assert!(
            s.hyps[0].beams().is_empty(),
            "unsatisfied EOS must not finish"
        );
        assert!(
            s.next_tokens().contains(&4),
            "the advancing token became a beam"
        );
        let (out, ok, _) = run(&mut s, 6, |_, _, t| prefs[t]);
        assert_eq!(ok, vec![true]);
        assert_eq!(out.reasons, vec![EndReason::Eos]);
        assert_eq!(&out.sequences[..3], &[0, 4, 2]);
    }

    #[test]
    fn unsatisfiable_within_max_length_returns_flagged_beams() {
        let mut s = search(
            &[0, 1],
            2,
            settings(2, &[2], 3, 2),
            vec![ConstraintSpec::Phrase(vec![3, 4, 5])],
        );
        let (out, ok, steps) = run(&mut s, 6, |_, _, t| -(t as f32));
        assert_eq!(steps, 2);
        assert_eq!(out.rows, 4);
        assert_eq!(ok, vec![false; 4]);
        assert!(out.reasons.iter().all(|&r| r == EndReason::Length));
        assert_eq!(s.finalize(), out, "finalize is idempotent");
        assert!(
            s.select(&[0.0; 24], 6).is_err(),
            "a finished search refuses more steps"
        );
    }

    #[test]
    fn the_prompt_counts_and_padding_does_not() {
        // prompt row 0 ends with 4 (first token of the phrase [4, 5]); row 1 is all padding then 1
        let prompts = [0, 4, 4, 1];
        let mask = [true, true, false, true];
        let s = ConstrainedBeamSearch::new(
            &prompts,
            2,
            &PipelineConfig::default(),
            settings(2, &[], 5, 1),
            set(vec![ConstraintSpec::Phrase(vec![4, 5])]),
            Some(&mask),
        )
        .unwrap();
        assert_eq!(s.states()[0].bank(s.constraints()), 1);
        assert_eq!(
            s.states()[2].bank(s.constraints()),
            0,
            "the padded 4 is not read"
        );
    }

    #[test]
    fn invalid_settings_and_inputs_are_errors() {
        let mk = |st: BeamSettings| {
            ConstrainedBeamSearch::new(
                &[0],
                1,
                &PipelineConfig::default(),
                st,
                set(vec![ConstraintSpec::Phrase(vec![3])]),
                None,
            )
        };
        let name = |r: Result<ConstrainedBeamSearch>| match r {
            Err(CoreError::InvalidArgument { name, .. }) => name,
            other => panic!("expected an error, got ok={}", other.is_ok()),
        };
        assert_eq!(name(mk(settings(1, &[], 5, 1))), "num_beams");
        assert_eq!(
            name(mk(BeamSettings {
                num_beam_groups: 2,
                ..settings(2, &[], 5, 1)
            })),
            "num_beam_groups"
        );
        let sample = crate::beam::SampleSettings { item_keys: None };
        assert_eq!(
            name(mk(BeamSettings {
                sample: Some(sample),
                ..settings(2, &[], 5, 1)
            })),
            "do_sample"
        );
        let mut s = mk(settings(2, &[], 5, 1)).unwrap();
        assert!(
            matches!(
                s.select(&[0.0; 6], 3),
                Err(CoreError::TokenOutOfVocab { .. })
            ),
            "token 3 needs vocab > 3"
        );
        assert!(matches!(
            s.select(&[0.0; 7], 3),
            Err(CoreError::Shape { .. })
        ));
    }

    /// Pseudo-random log-probability-like values (splitmix64 of the position).
    pub(super) fn noise(seed: u64, step: usize, row: usize, token: usize) -> f32 {
        let mut z = seed ^ ((step as u64) << 40) ^ ((row as u64) << 20) ^ token as u64;
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        (2.0 * u.ln().max(-30.0)) as f32
    }

    pub(super) fn specs_strategy() -> impl Strategy<Value = Vec<ConstraintSpec>> {
        let phrase = proptest::collection::vec(3i64..8, 1..4);
        let spec = prop_oneof![
            phrase.clone().prop_map(ConstraintSpec::Phrase),
            proptest::collection::vec(phrase, 1..4).prop_map(ConstraintSpec::OneOf),
        ];
        proptest::collection::vec(spec, 1..4)
    }

    pub(super) fn satisfies(text: &[i64], specs: &[ConstraintSpec]) -> bool {
        specs.iter().all(|s| match s {
            ConstraintSpec::Phrase(p) => contains(text, p),
            ConstraintSpec::OneOf(alts) => alts.iter().any(|a| contains(text, a)),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// For random small vocabularies, constraints and logits: every output flagged as
        /// satisfying contains every constraint, every EOS-finished output is flagged so,
        /// and the search ends by max_length.
        #[test]
        fn flagged_outputs_contain_every_constraint(
            specs in specs_strategy(), vocab in 8usize..14, beams in 2usize..6, extra in 0usize..10,
            seed in 0u64..10_000, batch in 1usize..3, eos in any::<bool>(),
        ) {
            let Ok(cs) = ConstraintSet::new(specs.clone(), Some(vocab)) else { return Ok(()) };
            let max_length = 2 + cs.len() * cs.max_seqlen() + extra;
            let st = BeamSettings {
                num_beams: beams, eos_token_ids: if eos { vec![2] } else { vec![] }, max_length,
                num_return_sequences: 1 + (seed as usize % beams), ..Default::default()
            };
            let prompts: Vec<i64> = (0..batch as i64 * 2).map(|i| i % 3).collect();
            let mut s = ConstrainedBeamSearch::new(&prompts, batch, &PipelineConfig::default(), st, cs, None).unwrap();
            let (out, ok, steps) = run(&mut s, vocab, |step, row, t| noise(seed, step, row, t));
            prop_assert!(steps <= max_length - 2);
            for (r, &ok) in ok.iter().enumerate().take(out.rows) {
                let row = &out.sequences[r * out.width..(r + 1) * out.width];
                if ok {
                    prop_assert!(satisfies(row, &specs), "row {:?} misses {:?}", row, specs);
                }
                if out.reasons[r] == EndReason::Eos {
                    prop_assert!(ok);
                }
            }
        }
    }
}
