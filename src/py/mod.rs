//! PyO3 bindings: the module `ferrogen._core`. Conversion and delegation only.

mod arrays;
mod assisted;
mod beam;
mod constraints;
mod contrastive;
mod decode;
mod dola;
mod errors;
#[cfg(feature = "grammar")]
mod grammar;
mod guidance;
mod ints;
mod pipeline;
mod prefix;
mod row_status;
mod settings;
mod synthid;
mod torch_noise;

#[pyo3::pymodule]
mod _core {
    #[pymodule_export]
    use super::assisted::AssistedDecoder;
    #[pymodule_export]
    use super::beam::{BeamResult, BeamSearch, GroupBeamSearch};
    #[pymodule_export]
    use super::constraints::{ConstrainedBeamSearch, ConstraintTracker};
    #[pymodule_export]
    use super::contrastive::ContrastiveSearch;
    #[pymodule_export]
    use super::decode::Decoder;
    #[pymodule_export]
    use super::dola::dola_contrast;
    #[pymodule_export]
    use super::errors::{
        CoreMemoryError, InvalidArgumentError, NoValidTokenError, ShapeError, TokenOutOfVocabError,
    };
    #[cfg(feature = "grammar")]
    #[pymodule_export]
    use super::grammar::{Grammar, GrammarMatchers, GrammarVocab};
    #[pymodule_export]
    use super::guidance::apply_guidance;
    #[pymodule_export]
    use super::pipeline::LogitsPipelineCore;
    #[pymodule_export]
    use super::prefix::PrefixAllowedTokens;
    #[pymodule_export]
    use super::settings::GenerationSettings;
    #[pymodule_export]
    use super::synthid::{
        synthid_context_repetition_mask, synthid_eos_token_mask, synthid_g_values,
    };
    #[pymodule_export]
    use super::torch_noise::torch_exponential;

    /// Sampling temperatures below this act as it (the limit `T -> 0`).
    #[pymodule_export]
    const TEMPERATURE_FLOOR: f64 = crate::logits::TEMPERATURE_FLOOR;
}
