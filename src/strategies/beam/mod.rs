//! Beam search bookkeeping: candidate selection over `beams × vocab`, finished
//! hypotheses with length penalty and early stopping, diverse groups, and the tree
//! of every hypothesis the search kept.
//!
//! Python runs the model; each step it hands the core the logits of every running
//! beam and gets back the next token and the parent row of each beam (to reorder the
//! KV cache with one `index_select`). Two searches share the pieces here:
//!
//! - [`BeamSearch`]: beam search and beam-search sampling with transformers 5.x
//!   semantics (fixed `num_beams` finished slots per batch item, top-k over
//!   `(1 + n_eos) × num_beams` continuations, early-stop heuristic).
//! - [`GroupBeamSearch`]: diverse beam search with transformers 4.55 semantics
//!   (the last release shipping it): groups processed in order, Hamming penalty,
//!   per-group n-best lists.

mod constrained;
mod core;
pub mod diversity;
mod fastmath;
mod group;
mod hypotheses;
mod length;
mod nbest;
mod noise;
mod output;
mod search;
mod select;
mod settings;
mod torch_noise;
mod torch_order;
mod tree;

pub use constrained::ConstrainedBeamSearch;
pub use core::{BeamCore, StepChoice};
pub use group::GroupBeamSearch;
pub use length::{normalized_score, normalized_score_f64};
pub use noise::exponential;
pub use output::Finalized;
pub use search::{BeamSearch, Candidate};
pub use select::{log_softmax_rows, log_softmax_shifts, top_k_into, TopK};
pub use settings::{BeamSettings, EarlyStopping, SampleSettings};
pub use torch_noise::{TorchExponential, TORCH_STATE_BYTES};
pub use tree::{BeamTree, EndReason, Node, NodeRef, NO_NODE};

/// Score given to beams that must not be chosen (transformers' `-1e9`).
pub(crate) const NEG_LARGE: f32 = -1.0e9;

/// `logits` must hold `rows` rows of a non-empty vocabulary.
pub(crate) fn check_logits(len: usize, rows: usize, vocab: usize) -> crate::error::Result<()> {
    if vocab == 0 || rows.checked_mul(vocab) != Some(len) {
        return Err(crate::error::CoreError::Shape {
            name: "logits",
            expected: format!("[{rows}, vocab >= 1]"),
            got: format!("{len} values with vocab {vocab}"),
        });
    }
    Ok(())
}

/// Width of the row-major `[batch, prompt_len]` prompts (one row per batch item).
pub(crate) fn prompt_len(prompts: &[i64], batch: usize) -> crate::error::Result<usize> {
    if batch == 0 || prompts.len() % batch != 0 {
        return Err(crate::error::CoreError::Shape {
            name: "input_ids",
            expected: "[batch >= 1, length]".into(),
            got: format!("{} values for {} rows", prompts.len(), batch),
        });
    }
    Ok(prompts.len() / batch)
}

/// Logits with many ties (whole numbers 0..3), a different draw per `step`: the inputs of
/// the property tests that compare two ways of running a search.
#[cfg(test)]
pub(crate) fn tied_logits(seed: u64, step: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (exponential(seed, step, i) * 3.0).floor())
        .collect()
}

/// Whether a grammar constrains the rows: then an item whose continuations are all -inf
/// has ended (its grammar allows nothing more) instead of being a model error.
pub(crate) fn has_grammar(config: &crate::logits::PipelineConfig) -> bool {
    #[cfg(feature = "grammar")]
    return config.grammar.is_some();
    #[cfg(not(feature = "grammar"))]
    {
        let _ = config;
        false
    }
}
