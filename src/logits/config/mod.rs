//! Which processors a generation uses, decided once from its settings: the settings
//! ([`PipelineConfig`], here), their rules (`validate`) and the stages they build (`build`).

mod build;
#[cfg(test)]
mod tests;
mod validate;

use super::sampler_order::SamplerOrder;

crate::settings_struct! {
    /// The processor settings of one generation: the part of transformers'
    /// `GenerationConfig` that acts on logits, plus the inputs some processors need
    /// (encoder input, left-padding lengths, `max_length`). Neutral values mean "off".
    /// A field's `stage` is the transformers class a user processor replaces it with.
    #[derive(Debug, Clone)]
    pub struct PipelineConfig {
        eos_token_ids: Vec<i64> = Vec::new();
        min_length: usize = 0, stage "MinLengthLogitsProcessor";
        min_new_tokens: usize = 0, stage "MinNewTokensLengthLogitsProcessor";

        /// Builds the warpers (temperature ... eta) when true.
        do_sample: bool = false;
        temperature: f64 = 1.0, stage "TemperatureLogitsWarper";
        /// 0 = off.
        top_k: usize = 0, stage "TopKLogitsWarper";
        top_p: f64 = 1.0, stage "TopPLogitsWarper";
        min_p: Option<f64> = None, stage "MinPLogitsWarper";
        top_h: Option<f64> = None, stage "TopHLogitsWarper";
        typical_p: f64 = 1.0, stage "TypicalLogitsWarper";
        epsilon_cutoff: f64 = 0.0, stage "EpsilonLogitsWarper";
        eta_cutoff: f64 = 0.0, stage "EtaLogitsWarper";

        repetition_penalty: f64 = 1.0, stage "RepetitionPenaltyLogitsProcessor";
        /// Left-padding length of every row (or of every batch entry, repeated over its
        /// beams / return sequences): those positions are not history for the penalty.
        prompt_ignore_lengths: Vec<usize> = Vec::new();
        encoder_repetition_penalty: f64 = 1.0, stage "EncoderRepetitionPenaltyLogitsProcessor";
        /// The encoder's input ids per batch entry (for decoder-only models, the prompt);
        /// empty when there is none. Used by the two `encoder_*` processors.
        encoder_input_ids: Vec<Vec<i64>> = Vec::new();
        no_repeat_ngram_size: usize = 0, stage "NoRepeatNGramLogitsProcessor";
        encoder_no_repeat_ngram_size: usize = 0, stage "EncoderNoRepeatNGramLogitsProcessor";
        bad_words_ids: Vec<Vec<i64>> = Vec::new(), stage "NoBadWordsLogitsProcessor";
        /// `(sequence, bias)` pairs in the dict's order.
        sequence_bias: Vec<(Vec<i64>, f64)> = Vec::new(), stage "SequenceBiasLogitsProcessor";
        forced_bos_token_id: Option<i64> = None, stage "ForcedBOSTokenLogitsProcessor";
        forced_eos_token_id: Vec<i64> = Vec::new(), stage "ForcedEOSTokenLogitsProcessor";
        /// Total length at which generation stops (needed by `forced_eos_token_id`).
        max_length: Option<usize> = None;
        remove_invalid_values: bool = false, stage "InfNanRemoveLogitsProcessor";
        /// `(start_index, decay_factor)`.
        exponential_decay_length_penalty: Option<(usize, f64)> = None,
            stage "ExponentialDecayLengthPenalty";
        suppress_tokens: Vec<i64> = Vec::new(), stage "SuppressTokensLogitsProcessor";
        begin_suppress_tokens: Vec<i64> = Vec::new(), stage "SuppressTokensAtBeginLogitsProcessor";
        renormalize_logits: bool = false, stage "LogitNormalization";

        // Samplers from llama.cpp / vLLM / text-generation-webui (docs/samplers.md).
        /// Additive, over the generated tokens (or the `penalty_last_n` window).
        presence_penalty: f64 = 0.0;
        frequency_penalty: f64 = 0.0;
        /// `None`: count the generated tokens (vLLM); `n`: the last `n` tokens, prompt
        /// included (llama.cpp's window).
        penalty_last_n: Option<usize> = None;
        /// `(token id, bias)` pairs.
        logit_bias: Vec<(i64, f64)> = Vec::new();
        allowed_token_ids: Option<Vec<i64>> = None;
        dry_multiplier: f64 = 0.0;
        dry_base: f64 = 1.75;
        dry_allowed_length: usize = 2;
        /// Token sequences that end a repetition (the binding resolves strings).
        dry_sequence_breaker_ids: Vec<Vec<i64>> = Vec::new();
        /// `None`: the whole row (llama.cpp's -1); `n`: the last `n` tokens.
        dry_penalty_last_n: Option<usize> = None;
        xtc_probability: f64 = 0.0;
        xtc_threshold: f64 = 0.1;
        top_n_sigma: Option<f64> = None;
        /// > 0: the temperature varies in `temperature ± dynatemp_range` with the entropy.
        dynatemp_range: f64 = 0.0;
        dynatemp_exponent: f64 = 1.0;
        /// 0 off, 1 mirostat, 2 mirostat v2 (then only the temperature runs before it).
        mirostat_mode: usize = 0;
        mirostat_tau: f64 = 5.0;
        mirostat_eta: f64 = 0.1;
        /// The warpers' order (`None`: transformers'); see [`SamplerOrder`].
        sampler_order: Option<SamplerOrder> = None;
    }
    // Not settings: objects the caller hands each generation (never read from a config).
    runtime {
        // `prefix_allowed_tokens_fn`: the caller's function naming each row's allowed
        // tokens, applied at transformers' `PrefixConstrainedLogitsProcessor` position.
        prefix_allowed: Option<super::PrefixAllowed>,
        // Grammar constraint (JSON Schema, regex, Lark, choices): the rows' matchers,
        // applied at transformers' `PrefixConstrainedLogitsProcessor` position.
        #[cfg(feature = "grammar")]
        grammar: Option<crate::grammar::GrammarHandle>,
        // `watermarking_config` (green-list `WatermarkingConfig`), at transformers'
        // position: after every warper, before `renormalize_logits`.
        watermark: Option<super::WatermarkSpec>,
        // `watermarking_config` (`SynthIDTextWatermarkingConfig`), at the same position.
        synthid: Option<super::SynthIdSpec>,
    }
}

/// The smallest temperature the warpers divide by (see [`PipelineConfig::sampling_temperature`]):
/// divided by it, logits that differ by more than 1e-28 differ by more than 100 (a factor
/// e^-100 in probability), so the softmax is the limit, and `|logit| / 1e-30` stays finite
/// up to `|logit|` = 3.4e8.
pub const TEMPERATURE_FLOOR: f64 = 1e-30;

impl PipelineConfig {
    /// The temperature the warpers divide by (`None` at 1.0, which transformers skips).
    /// Below [`TEMPERATURE_FLOOR`] it is the floor: every such temperature means the limit
    /// `T -> 0`, sampling the most likely token (ties share), which the floor already gives
    /// for any float32 logits, while a smaller divisor overflows them to +-inf (transformers
    /// then fails in `torch.multinomial`).
    pub fn sampling_temperature(&self) -> Option<f64> {
        (self.temperature != 1.0).then_some(self.temperature.max(TEMPERATURE_FLOOR))
    }
}
