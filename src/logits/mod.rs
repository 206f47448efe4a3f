//! Logits processors and warpers. Each lives in its own file and implements
//! [`RowProcessor`] (or the whole-batch [`LogitsProcessor`]); a [`Pipeline`] runs a
//! fixed list of them, composed once by [`PipelineConfig`].
//!
//! Execution: consecutive row stages are fused, so each row runs through all of them
//! while it is hot in cache (one read of the row from memory, not one per processor),
//! and rows run in parallel on rayon's pool when the batch is large enough to pay for
//! it. Scratch buffers live per thread and are reused from step to step.
//!
//! Conventions shared by every stage (and documented in `benches/README.md`):
//! - scores are float32 `[rows, vocab]`, modified in place;
//! - processors (before the user's Python processors) follow IEEE arithmetic on NaN
//!   and ±inf exactly like transformers' torch code;
//! - warpers (after them) and the samplers treat NaN as -inf; a row with +inf
//!   entries is a distribution uniform over those entries;
//! - token ids outside the vocabulary are refused by [`PipelineConfig::validate`], and
//!   ignored (never indexed) if a stage is built without validation.

mod config;
pub mod math;

mod allowed_tokens;
mod bad_words;
mod dry;
mod dynatemp;
mod encoder_no_repeat_ngram;
mod encoder_repetition_penalty;
mod epsilon;
mod eta;
mod exponential_decay;
mod forced_bos;
mod forced_eos;
mod guidance;
mod logit_bias;
mod min_length;
mod min_p;
mod mirostat;
mod nan_to_neg_inf;
mod no_repeat_ngram;
mod prefix_constrained;
mod presence_frequency;
mod remove_invalid;
mod renormalize;
mod repetition_penalty;
mod sampler_order;
mod sequence_bias;
mod suppress;
mod suppress_at_begin;
mod synthid;
mod synthid_processor;
mod temperature;
mod top_h;
mod top_k;
mod top_n_sigma;
mod top_p;
pub(crate) mod torch_mt;
mod typical;
mod watermark;
mod xtc;

pub use config::{PipelineConfig, TEMPERATURE_FLOOR};

pub use allowed_tokens::AllowedTokens;
pub use bad_words::bad_words_bias;
pub use dry::Dry;
pub use dynatemp::DynamicTemperature;
pub use encoder_no_repeat_ngram::EncoderNoRepeatNGram;
pub use encoder_repetition_penalty::EncoderRepetitionPenalty;
pub use epsilon::EpsilonCutoff;
pub use eta::EtaCutoff;
pub use exponential_decay::ExponentialDecayLengthPenalty;
pub use forced_bos::ForcedBos;
pub use forced_eos::ForcedEos;
pub use guidance::apply_guidance;
pub use logit_bias::LogitBias;
pub use min_length::MinLength;
pub use min_p::MinP;
pub use mirostat::{Mirostat, MirostatMode};
pub use nan_to_neg_inf::NanToNegInf;
pub use no_repeat_ngram::NoRepeatNGram;
pub use prefix_constrained::{AllowedTokensSource, PrefixAllowed, PrefixConstrained};
pub use presence_frequency::PresenceFrequencyPenalty;
pub use remove_invalid::RemoveInvalidValues;
pub use renormalize::Renormalize;
pub use repetition_penalty::RepetitionPenalty;
pub use sampler_order::{SamplerOrder, Warper};
pub use sequence_bias::SequenceBias;
pub use suppress::SuppressTokens;
pub use suppress_at_begin::SuppressTokensAtBegin;
pub use synthid::{eos_token_mask, SynthIdHash, SynthIdSpec};
pub use synthid_processor::SynthIdWatermark;
pub use temperature::Temperature;
pub use top_h::TopH;
pub use top_k::TopK;
pub use top_n_sigma::TopNSigma;
pub use top_p::TopP;
pub use typical::Typical;
pub use watermark::{GreenListWatermark, SeedingScheme, WatermarkSpec};
pub use xtc::Xtc;

use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;

use crate::history::TokenHistory;
use math::Item;

/// A mutable `[rows, vocab]` float32 matrix, row-major and contiguous.
pub struct LogitsMut<'a> {
    data: &'a mut [f32],
    vocab: usize,
}

impl<'a> LogitsMut<'a> {
    /// Panics only on a programming error; callers validate shapes first.
    pub fn new(data: &'a mut [f32], vocab: usize) -> Self {
        assert!(
            vocab > 0 && data.len() % vocab == 0,
            "logits length must be rows * vocab"
        );
        LogitsMut { data, vocab }
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn n_rows(&self) -> usize {
        self.data.len() / self.vocab
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.vocab..(r + 1) * self.vocab]
    }

    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.vocab..(r + 1) * self.vocab]
    }

    pub fn rows_mut(&mut self) -> std::slice::ChunksExactMut<'_, f32> {
        self.data.chunks_exact_mut(self.vocab)
    }

    pub fn as_slice(&self) -> &[f32] {
        self.data
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data
    }
}

/// What a processor may read besides the logits: the history of every row and, when
/// the caller samples with per-row keys, each row's random key (see [`crate::rng`]).
pub struct StepContext<'a> {
    pub history: &'a TokenHistory,
    /// One key per row, or empty (stages that draw then key a row by its history).
    pub keys: &'a [u64],
}

impl<'a> StepContext<'a> {
    pub fn new(history: &'a TokenHistory) -> Self {
        StepContext { history, keys: &[] }
    }

    pub fn with_keys(history: &'a TokenHistory, keys: &'a [u64]) -> Self {
        StepContext { history, keys }
    }

    /// Row `r`'s random key: the caller's, else a digest of the row's tokens (the same
    /// row gives the same key whatever the batch).
    pub fn row_key(&self, r: usize) -> u64 {
        match self.keys.get(r) {
            Some(&k) => k,
            None => crate::rng::prompt_hash(self.history.row(r)),
        }
    }
}

/// A stage that works on the whole `[rows, vocab]` batch at once.
pub trait LogitsProcessor: Send + Sync {
    fn process(&self, ctx: &StepContext<'_>, logits: &mut LogitsMut<'_>);

    /// Rows were replaced by `parents[i]`'s row (beam search); stateful stages follow.
    fn reorder(&self, _parents: &[usize]) {}
}

/// A stage that works on one row at a time; the [`Pipeline`] fuses consecutive row
/// stages and runs rows in parallel. Every processor of this crate is one.
pub trait RowProcessor: Send + Sync {
    /// transformers' class name of the processor, for diagnostics.
    fn name(&self) -> &'static str;

    /// Names of every processor this stage performs (several when it fuses stages).
    fn names(&self) -> Vec<&'static str> {
        vec![self.name()]
    }

    /// Processes row `row` (`logits` is that row, `vocab` long) in place.
    fn process_row(
        &self,
        ctx: &StepContext<'_>,
        row: usize,
        logits: &mut [f32],
        scratch: &mut Scratch,
    );

    /// Rows were replaced by `parents[i]`'s row (beam search); stateful stages follow.
    fn reorder(&self, _parents: &[usize]) {}
}

impl<T: RowProcessor> LogitsProcessor for T {
    fn process(&self, ctx: &StepContext<'_>, logits: &mut LogitsMut<'_>) {
        with_scratch(|s| {
            for (r, row) in logits.rows_mut().enumerate() {
                s.begin_row();
                self.process_row(ctx, r, row, s);
            }
        })
    }

    fn reorder(&self, parents: &[usize]) {
        RowProcessor::reorder(self, parents)
    }
}

/// Names of a warper that runs the fused prelude (NaN to -inf when `sanitize`, then the
/// temperature) before its own `name`, in transformers' order.
pub(crate) fn prelude_names(
    sanitize: bool,
    temperature: Option<f32>,
    name: &'static str,
) -> Vec<&'static str> {
    let mut names = Vec::new();
    if sanitize {
        names.push("NanToNegInf");
    }
    if temperature.is_some() {
        names.push("TemperatureLogitsWarper");
    }
    names.push(name);
    names
}

/// Per-thread working memory of the row stages, reused across rows and steps.
///
/// `cand` is the sparse form of a row that warpers maintain: once a stage has cut the
/// row down (top-k, top-p, ...), `sparse` is set and every index not in `cand` holds
/// -inf, so later warpers and the sampler only look at the candidates.
#[derive(Default)]
pub struct Scratch {
    pub cand: Vec<u32>,
    pub sparse: bool,
    pub vals: Vec<f32>,
    pub probs: Vec<f32>,
    pub keep: Vec<bool>,
    pub items: Vec<Item>,
    pub tmp: Vec<Item>,
    pub floats: Vec<f32>,
    /// Token ids (processors that count or sort the history).
    pub ids: Vec<u32>,
    marks: Vec<u32>,
    epoch: u32,
}

impl Scratch {
    /// Forgets the sparse form; called before the first stage of every row.
    pub fn begin_row(&mut self) {
        self.sparse = false;
    }

    /// Makes `cand` valid: when the row is dense, lists every index whose value is
    /// larger than -inf, writing -inf over NaN (warpers treat NaN as -inf).
    pub fn ensure_candidates(&mut self, row: &mut [f32]) {
        if self.sparse {
            return;
        }
        self.cand.clear();
        for (i, x) in row.iter_mut().enumerate() {
            if x.is_nan() {
                *x = f32::NEG_INFINITY;
            } else if *x > f32::NEG_INFINITY {
                self.cand.push(i as u32);
            }
        }
        self.sparse = true;
    }

    /// `vals[j] = row[cand[j]]`.
    pub fn gather(&mut self, row: &[f32]) {
        self.vals.clear();
        self.vals.extend(self.cand.iter().map(|&i| row[i as usize]));
    }

    /// Writes -inf at every candidate `j` with `keep[j] == false` and drops it from `cand`.
    pub fn apply_keep(&mut self, row: &mut [f32]) {
        let mut w = 0;
        for j in 0..self.cand.len() {
            let i = self.cand[j];
            if self.keep[j] {
                self.cand[w] = i;
                w += 1;
            } else {
                row[i as usize] = f32::NEG_INFINITY;
            }
        }
        self.cand.truncate(w);
    }

    /// Starts a new set of marked token ids over a vocabulary of `vocab`.
    pub fn clear_marks(&mut self, vocab: usize) {
        if self.marks.len() < vocab {
            self.marks.resize(vocab, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// Marks `t`; true when it was not marked yet since [`Self::clear_marks`].
    pub fn mark(&mut self, t: usize) -> bool {
        let fresh = self.marks[t] != self.epoch;
        self.marks[t] = self.epoch;
        fresh
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a fresh one if it is in use further up the stack).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

#[derive(Clone)]
enum Stage {
    Batch(Arc<dyn LogitsProcessor>),
    Row(Arc<dyn RowProcessor>),
}

/// An ordered list of processors, fixed when generation starts. Cloning shares the
/// stages (and the state of stateful ones).
#[derive(Default, Clone)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

impl Pipeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a whole-batch stage (runs alone, between fused row stages).
    pub fn push(&mut self, stage: Box<dyn LogitsProcessor>) {
        self.stages.push(Stage::Batch(Arc::from(stage)));
    }

    /// Appends a row stage (fused with its row-stage neighbours).
    pub fn push_row(&mut self, stage: Box<dyn RowProcessor>) {
        self.stages.push(Stage::Row(Arc::from(stage)));
    }

    /// Appends every stage of `other` (shared, not copied).
    pub fn extend(&mut self, other: &Pipeline) {
        self.stages.extend(other.stages.iter().cloned());
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Names of the stages in order of application ("batch" for whole-batch stages).
    pub fn names(&self) -> Vec<&'static str> {
        self.stages
            .iter()
            .flat_map(|s| match s {
                Stage::Row(p) => p.names(),
                Stage::Batch(_) => vec!["batch"],
            })
            .collect()
    }

    /// Rows were replaced by `parents[i]`'s row (beam search): tells stateful stages.
    pub fn reorder(&self, parents: &[usize]) {
        for s in &self.stages {
            match s {
                Stage::Row(p) => p.reorder(parents),
                Stage::Batch(p) => p.reorder(parents),
            }
        }
    }

    pub fn process(&self, ctx: &StepContext<'_>, logits: &mut LogitsMut<'_>) {
        self.process_then(ctx, logits, |_, _, _| ());
    }

    /// Runs every stage, then `finish(row, logits_row, scratch)` on each processed row
    /// while it is still in cache (with the scratch's sparse form of the row intact).
    pub fn process_then<T, F>(
        &self,
        ctx: &StepContext<'_>,
        logits: &mut LogitsMut<'_>,
        finish: F,
    ) -> Vec<T>
    where
        T: Send,
        F: Fn(usize, &mut [f32], &mut Scratch) -> T + Sync,
    {
        let tail_start = self
            .stages
            .iter()
            .rposition(|s| matches!(s, Stage::Batch(_)))
            .map_or(0, |b| b + 1);
        let mut run: Vec<&Arc<dyn RowProcessor>> = Vec::new();
        for stage in &self.stages[..tail_start] {
            match stage {
                Stage::Row(p) => run.push(p),
                Stage::Batch(p) => {
                    if !run.is_empty() {
                        for_rows(logits, |r, row, s| run_row(&run, ctx, r, row, s));
                        run.clear();
                    }
                    p.process(ctx, logits);
                }
            }
        }
        let tail: Vec<&Arc<dyn RowProcessor>> = self.stages[tail_start..]
            .iter()
            .filter_map(|s| match s {
                Stage::Row(p) => Some(p),
                Stage::Batch(_) => None,
            })
            .collect();
        for_rows(logits, |r, row, s| {
            run_row(&tail, ctx, r, row, s);
            finish(r, row, s)
        })
    }
}

fn run_row(
    stages: &[&Arc<dyn RowProcessor>],
    ctx: &StepContext<'_>,
    r: usize,
    row: &mut [f32],
    s: &mut Scratch,
) {
    s.begin_row();
    for p in stages {
        p.process_row(ctx, r, row, s);
    }
}

/// Runs `f` on every row, in parallel when the batch is large enough.
fn for_rows<T, F>(logits: &mut LogitsMut<'_>, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, &mut [f32], &mut Scratch) -> T + Sync,
{
    let vocab = logits.vocab;
    let rows = logits.n_rows();
    if crate::parallel::worth_parallel(rows, rows * vocab) {
        logits
            .data
            .par_chunks_exact_mut(vocab)
            .enumerate()
            .map(|(r, row)| with_scratch(|s| f(r, row, s)))
            .collect()
    } else {
        with_scratch(|s| {
            logits
                .data
                .chunks_exact_mut(vocab)
                .enumerate()
                .map(|(r, row)| f(r, row, s))
                .collect()
        })
    }
}

/// Test helpers shared by the processors' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Runs one row stage over `rows` (row-major, `vocab` wide) with `history`.
    pub fn run(stage: &dyn RowProcessor, history: &TokenHistory, rows: &mut [f32], vocab: usize) {
        let ctx = StepContext::new(history);
        let mut s = Scratch::default();
        for (r, row) in rows.chunks_exact_mut(vocab).enumerate() {
            s.begin_row();
            stage.process_row(&ctx, r, row, &mut s);
        }
    }

    /// Runs one row stage on a single row with a one-token history.
    pub fn run1(stage: &dyn RowProcessor, row: &mut [f32]) {
        let h = TokenHistory::new(&[0], 1);
        let v = row.len();
        run(stage, &h, row, v);
    }

    pub const NEG: f32 = f32::NEG_INFINITY;
}

#[cfg(test)]
mod tests {
    use super::testing::NEG;
    use super::*;

    #[test]
    fn fused_pipeline_equals_stage_by_stage_and_runs_batch_stages_in_order() {
        let mut p = Pipeline::new();
        p.push_row(Box::new(Temperature::new(0.5)));
        p.push(Box::new(MinLength::new(5, &[0])));
        p.push_row(Box::new(TopK::new(2, 1)));
        assert_eq!(
            p.names(),
            ["TemperatureLogitsWarper", "batch", "TopKLogitsWarper"]
        );
        let h = TokenHistory::new(&[1, 2], 2);
        let mut data = vec![1.0, 2.0, 3.0, 0.5, /* row 1 */ 4.0, -1.0, 0.0, 2.0];
        p.process(&StepContext::new(&h), &mut LogitsMut::new(&mut data, 4));
        assert_eq!(data, vec![NEG, 4.0, 6.0, NEG, NEG, NEG, 0.0, 4.0]);
    }

    #[test]
    fn parallel_and_serial_give_the_same_rows() {
        let vocab = 300_000;
        let rows = 4;
        // large enough for the pool (unless the machine has a single thread)
        assert!(
            crate::parallel::worth_parallel(rows, rows * vocab)
                || rayon::current_num_threads() == 1
        );
        let mut data: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 7919) % 1013) as f32 / 100.0)
            .collect();
        let mut serial = data.clone();
        let mut p = Pipeline::new();
        p.push_row(Box::new(Temperature::new(0.7)));
        p.push_row(Box::new(TopK::new(40, 1)));
        p.push_row(Box::new(TopP::new(0.8, 1)));
        let h = TokenHistory::new(&vec![1; rows], rows);
        let ctx = StepContext::new(&h);
        p.process(&ctx, &mut LogitsMut::new(&mut data, vocab));
        for row in serial.chunks_exact_mut(vocab) {
            p.process(&ctx, &mut LogitsMut::new(row, vocab));
        }
        assert_eq!(data, serial);
    }
}
