//! Which processors a generation uses, decided once from its settings.

use super::{MinLength, Pipeline};
use crate::error::{CoreError, Result};

/// The processor settings of one generation (the subset of transformers'
/// `GenerationConfig` that acts on logits). `None`/0 means "off".
#[derive(Debug, Clone, Default)]
pub struct PipelineConfig {
    pub eos_token_ids: Vec<i64>,
    pub min_length: usize,
    pub min_new_tokens: usize,
}

impl PipelineConfig {
    pub fn validate(&self, vocab: Option<usize>) -> Result<()> {
        if let Some(v) = vocab {
            if let Some(&t) = self.eos_token_ids.iter().find(|&&t| t < 0 || t as usize >= v) {
                return Err(CoreError::TokenOutOfVocab { name: "eos_token_id", token: t, vocab: v });
            }
        }
        Ok(())
    }

    /// Builds the pipeline in transformers' order of application.
    pub fn build(&self, prompt_len: usize) -> Pipeline {
        let mut p = Pipeline::new();
        if self.min_length > 0 && !self.eos_token_ids.is_empty() {
            p.push(Box::new(MinLength::new(self.min_length, &self.eos_token_ids)));
        }
        if self.min_new_tokens > 0 && !self.eos_token_ids.is_empty() {
            p.push(Box::new(MinLength::new(prompt_len + self.min_new_tokens, &self.eos_token_ids)));
        }
        p
    }
}
