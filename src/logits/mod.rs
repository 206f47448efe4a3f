//! Logits processors and warpers. Each lives in its own file and implements
//! [`LogitsProcessor`]; a [`Pipeline`] runs a fixed list of them, composed once.

mod config;
mod min_length;

pub use config::PipelineConfig;

pub use min_length::MinLength;

use crate::history::TokenHistory;

/// A mutable `[rows, vocab]` float32 matrix, row-major and contiguous.
pub struct LogitsMut<'a> {
    data: &'a mut [f32],
    vocab: usize,
}

impl<'a> LogitsMut<'a> {
    /// Panics only on a programming error; callers validate shapes first.
    pub fn new(data: &'a mut [f32], vocab: usize) -> Self {
        assert!(vocab > 0 && data.len() % vocab == 0, "logits length must be rows * vocab");
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
}

/// What a processor may read besides the logits: the history of every row.
pub struct StepContext<'a> {
    pub history: &'a TokenHistory,
}

pub trait LogitsProcessor: Send + Sync {
    fn process(&self, ctx: &StepContext<'_>, logits: &mut LogitsMut<'_>);
}

/// An ordered list of processors, fixed when generation starts.
#[derive(Default)]
pub struct Pipeline {
    stages: Vec<Box<dyn LogitsProcessor>>,
}

impl Pipeline {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, stage: Box<dyn LogitsProcessor>) {
        self.stages.push(stage);
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    pub fn len(&self) -> usize {
        self.stages.len()
    }

    pub fn process(&self, ctx: &StepContext<'_>, logits: &mut LogitsMut<'_>) {
        for stage in &self.stages {
            stage.process(ctx, logits);
        }
    }
}
