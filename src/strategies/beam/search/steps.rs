//! One-call steps: process, warp, propose and commit, writing the processed scores or not.

use super::super::select::{
    log_softmax_shift, log_softmax_shifts, shift_is_certain, RowCandidates,
};
use super::propose::Rows;
use super::BeamSearch;
use crate::error::Result;
use crate::logits::{with_scratch, LogitsMut, StepContext};
use rayon::prelude::*;

impl BeamSearch {
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
}
