//! Which processors a generation uses, decided once from its settings.

use super::sampler_order::SamplerOrder;
use super::{
    bad_words_bias, AllowedTokens, Dry, DynamicTemperature, EncoderNoRepeatNGram,
    EncoderRepetitionPenalty, EpsilonCutoff, EtaCutoff, ExponentialDecayLengthPenalty, ForcedBos,
    ForcedEos, GreenListWatermark, LogitBias, MinLength, MinP, Mirostat, MirostatMode, NanToNegInf,
    NoRepeatNGram, Pipeline, PresenceFrequencyPenalty, RemoveInvalidValues, Renormalize,
    RepetitionPenalty, SequenceBias, SuppressTokens, SuppressTokensAtBegin, SynthIdWatermark,
    Temperature, TopH, TopK, TopNSigma, TopP, Typical, Xtc,
};
use crate::error::{CoreError, Result};

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

fn range(name: &'static str, v: f64, ok: bool, rule: &str) -> Result<()> {
    if v.is_nan() {
        return Err(CoreError::invalid(name, "must not be NaN"));
    }
    if !ok {
        return Err(CoreError::invalid(name, format!("must be {rule}, got {v}")));
    }
    Ok(())
}

fn ids_in_vocab(name: &'static str, ids: &[i64], vocab: Option<usize>) -> Result<()> {
    for &t in ids {
        if t < 0 {
            return Err(CoreError::invalid(
                name,
                format!("token ids must be >= 0, got {t}"),
            ));
        }
        if let Some(v) = vocab {
            if t as usize >= v {
                return Err(CoreError::TokenOutOfVocab {
                    name,
                    token: t,
                    vocab: v,
                });
            }
        }
    }
    Ok(())
}

/// The smallest temperature the warpers divide by (see [`PipelineConfig::sampling_temperature`]):
/// divided by it, logits that differ by more than 1e-28 differ by more than 100 (a factor
/// e^-100 in probability), so the softmax is the limit, and `|logit| / 1e-30` stays finite
/// up to `|logit|` = 3.4e8.
pub const TEMPERATURE_FLOOR: f64 = 1e-30;

impl PipelineConfig {
    /// Checks every setting; with `vocab`, also that every configured token id can
    /// index the vocabulary. Errors name the setting (transformers' field name).
    pub fn validate(&self, vocab: Option<usize>) -> Result<()> {
        if let Some(w) = &self.watermark {
            w.validate()?;
        }
        if let Some(w) = &self.synthid {
            w.validate()?;
        }
        let t = self.temperature;
        range(
            "temperature",
            t,
            !self.do_sample || (t > 0.0 && t.is_finite()),
            "> 0 (and finite) when do_sample=True",
        )?;
        let p = self.top_p;
        range("top_p", p, p > 0.0 && p <= 1.0, "in (0, 1]")?;
        let p = self.typical_p;
        range("typical_p", p, p > 0.0 && p <= 1.0, "in (0, 1]")?;
        if let Some(p) = self.min_p {
            range("min_p", p, (0.0..=1.0).contains(&p), "in [0, 1]")?;
        }
        if let Some(p) = self.top_h {
            range("top_h", p, p > 0.0 && p <= 1.0, "in (0, 1]")?;
        }
        let e = self.epsilon_cutoff;
        range("epsilon_cutoff", e, (0.0..1.0).contains(&e), "in [0, 1)")?;
        let e = self.eta_cutoff;
        range("eta_cutoff", e, (0.0..1.0).contains(&e), "in [0, 1)")?;
        let r = self.repetition_penalty;
        range(
            "repetition_penalty",
            r,
            r > 0.0 && r.is_finite(),
            "> 0 (and finite)",
        )?;
        let r = self.encoder_repetition_penalty;
        range(
            "encoder_repetition_penalty",
            r,
            r > 0.0 && r.is_finite(),
            "> 0 (and finite)",
        )?;
        if let Some((_, f)) = self.exponential_decay_length_penalty {
            range(
                "exponential_decay_length_penalty",
                f,
                f.is_finite() && f >= 1.0,
                "a finite factor >= 1 (1 leaves EOS unchanged)",
            )?;
        }
        for word in &self.bad_words_ids {
            if word.is_empty() {
                return Err(CoreError::invalid(
                    "bad_words_ids",
                    "every bad word must be a non-empty list of token ids",
                ));
            }
            ids_in_vocab("bad_words_ids", word, vocab)?;
        }
        for (seq, bias) in &self.sequence_bias {
            if seq.is_empty() {
                return Err(CoreError::invalid(
                    "sequence_bias",
                    "every key must be a non-empty sequence of token ids",
                ));
            }
            ids_in_vocab("sequence_bias", seq, vocab)?;
            if bias.is_nan() {
                return Err(CoreError::invalid(
                    "sequence_bias",
                    "biases must not be NaN",
                ));
            }
        }
        self.validate_samplers(vocab)?;
        ids_in_vocab("eos_token_id", &self.eos_token_ids, vocab)?;
        ids_in_vocab(
            "forced_bos_token_id",
            self.forced_bos_token_id.as_slice(),
            vocab,
        )?;
        ids_in_vocab("forced_eos_token_id", &self.forced_eos_token_id, vocab)?;
        ids_in_vocab("suppress_tokens", &self.suppress_tokens, vocab)?;
        ids_in_vocab("begin_suppress_tokens", &self.begin_suppress_tokens, vocab)?;
        if let Some(first) = self.encoder_input_ids.first() {
            if self
                .encoder_input_ids
                .iter()
                .any(|r| r.len() != first.len())
            {
                return Err(CoreError::invalid(
                    "encoder_input_ids",
                    "rows must all have the same length",
                ));
            }
        }
        Ok(())
    }

    /// The rules of the llama.cpp / vLLM samplers' settings.
    fn validate_samplers(&self, vocab: Option<usize>) -> Result<()> {
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            range(name, v, v.is_finite(), "finite")?;
        }
        for &(t, b) in &self.logit_bias {
            ids_in_vocab("logit_bias", &[t], vocab)?;
            range("logit_bias", b, !b.is_nan(), "a number (not NaN)")?;
        }
        if let Some(ids) = &self.allowed_token_ids {
            if ids.is_empty() {
                return Err(CoreError::invalid(
                    "allowed_token_ids",
                    "must list at least one token id (None allows every token)",
                ));
            }
            ids_in_vocab("allowed_token_ids", ids, vocab)?;
        }
        let m = self.dry_multiplier;
        range(
            "dry_multiplier",
            m,
            m >= 0.0 && m.is_finite(),
            ">= 0 (and finite)",
        )?;
        let b = self.dry_base;
        range(
            "dry_base",
            b,
            b >= 1.0 && b.is_finite(),
            ">= 1 (and finite)",
        )?;
        if self.dry_allowed_length == 0 {
            return Err(CoreError::invalid(
                "dry_allowed_length",
                "must be >= 1, got 0",
            ));
        }
        if self.dry_penalty_last_n == Some(0) || self.penalty_last_n == Some(0) {
            let name = if self.penalty_last_n == Some(0) {
                "penalty_last_n"
            } else {
                "dry_penalty_last_n"
            };
            return Err(CoreError::invalid(name, "must be >= 1 or None, got 0"));
        }
        for seq in &self.dry_sequence_breaker_ids {
            if seq.is_empty() {
                return Err(CoreError::invalid(
                    "dry_sequence_breakers",
                    "every breaker must be a non-empty token sequence",
                ));
            }
            ids_in_vocab("dry_sequence_breakers", seq, vocab)?;
        }
        let p = self.xtc_probability;
        range("xtc_probability", p, (0.0..=1.0).contains(&p), "in [0, 1]")?;
        let t = self.xtc_threshold;
        range("xtc_threshold", t, (0.0..=1.0).contains(&t), "in [0, 1]")?;
        if let Some(n) = self.top_n_sigma {
            range(
                "top_n_sigma",
                n,
                n > 0.0 && n.is_finite(),
                "> 0 (and finite)",
            )?;
        }
        let r = self.dynatemp_range;
        range(
            "dynatemp_range",
            r,
            r >= 0.0 && r.is_finite(),
            ">= 0 (and finite)",
        )?;
        let e = self.dynatemp_exponent;
        range(
            "dynatemp_exponent",
            e,
            e > 0.0 && e.is_finite(),
            "> 0 (and finite)",
        )?;
        if self.mirostat_mode > 2 {
            return Err(CoreError::invalid(
                "mirostat_mode",
                format!("must be 0 (off), 1 or 2, got {}", self.mirostat_mode),
            ));
        }
        let t = self.mirostat_tau;
        range(
            "mirostat_tau",
            t,
            t > 0.0 && t.is_finite(),
            "> 0 (and finite)",
        )?;
        let e = self.mirostat_eta;
        range(
            "mirostat_eta",
            e,
            e >= 0.0 && e.is_finite(),
            ">= 0 (and finite)",
        )?;
        Ok(())
    }

    /// Checks that the per-row inputs (encoder rows, padding lengths) fit a batch of
    /// `rows` rows: one entry per row, or per batch entry when `rows` is a multiple.
    pub fn validate_rows(&self, rows: usize) -> Result<()> {
        let fits = |len: usize| len == 0 || (len <= rows && rows % len == 0);
        if !fits(self.encoder_input_ids.len()) {
            return Err(CoreError::Shape {
                name: "encoder_input_ids",
                expected: format!("a number of rows dividing {rows}"),
                got: format!("{} rows", self.encoder_input_ids.len()),
            });
        }
        if !fits(self.prompt_ignore_lengths.len()) {
            return Err(CoreError::Shape {
                name: "prompt_ignore_lengths",
                expected: format!("a number of entries dividing {rows}"),
                got: format!("{} entries", self.prompt_ignore_lengths.len()),
            });
        }
        Ok(())
    }

    /// The processors (everything that runs before the user's logits processors), in
    /// transformers' order, for a decoder prompt of `prompt_len` tokens.
    pub fn build(&self, prompt_len: usize) -> Pipeline {
        self.build_processors(prompt_len)
    }

    /// Same as [`Self::build`].
    pub fn build_processors(&self, prompt_len: usize) -> Pipeline {
        let mut p = Pipeline::new();
        let eos = &self.eos_token_ids;
        let has_encoder = !self.encoder_input_ids.is_empty();
        if !self.sequence_bias.is_empty() {
            let entries: Vec<(Vec<i64>, f32)> = self
                .sequence_bias
                .iter()
                .map(|(s, b)| (s.clone(), *b as f32))
                .collect();
            p.push_row(Box::new(SequenceBias::new(&entries)));
        }
        if !self.logit_bias.is_empty() {
            p.push_row(Box::new(LogitBias::new(&self.logit_bias)));
        }
        if let Some(ids) = &self.allowed_token_ids {
            p.push_row(Box::new(AllowedTokens::new(ids)));
        }
        if self.encoder_repetition_penalty != 1.0 && has_encoder {
            p.push_row(Box::new(EncoderRepetitionPenalty::new(
                self.encoder_repetition_penalty,
                self.encoder_input_ids.clone(),
            )));
        }
        if self.repetition_penalty != 1.0 {
            p.push_row(Box::new(RepetitionPenalty::new(
                self.repetition_penalty,
                self.prompt_ignore_lengths.clone(),
            )));
        }
        if self.presence_penalty != 0.0 || self.frequency_penalty != 0.0 {
            p.push_row(Box::new(PresenceFrequencyPenalty::new(
                self.presence_penalty,
                self.frequency_penalty,
                self.penalty_last_n,
                self.prompt_ignore_lengths.clone(),
            )));
        }
        if self.dry_multiplier > 0.0 {
            p.push_row(Box::new(Dry::new(
                self.dry_multiplier,
                self.dry_base,
                self.dry_allowed_length,
                self.dry_sequence_breaker_ids.clone(),
                self.dry_penalty_last_n,
                self.prompt_ignore_lengths.clone(),
            )));
        }
        if self.no_repeat_ngram_size > 0 {
            p.push_row(Box::new(NoRepeatNGram::new(self.no_repeat_ngram_size)));
        }
        if self.encoder_no_repeat_ngram_size > 0 && has_encoder {
            p.push_row(Box::new(EncoderNoRepeatNGram::new(
                self.encoder_no_repeat_ngram_size,
                &self.encoder_input_ids,
            )));
        }
        if !self.bad_words_ids.is_empty() {
            p.push_row(Box::new(bad_words_bias(&self.bad_words_ids, eos)));
        }
        if self.min_length > 0 && !eos.is_empty() {
            p.push_row(Box::new(MinLength::new(self.min_length, eos)));
        }
        if self.min_new_tokens > 0 && !eos.is_empty() {
            p.push_row(Box::new(MinLength::new_tokens(
                prompt_len,
                self.min_new_tokens,
                eos,
            )));
        }
        if let Some(prefix) = &self.prefix_allowed {
            p.push(Box::new(prefix.stage(eos)));
        }
        #[cfg(feature = "grammar")]
        if let Some(grammar) = &self.grammar {
            p.push(Box::new(grammar.stage()));
        }
        if let Some(bos) = self.forced_bos_token_id {
            p.push_row(Box::new(ForcedBos::new(bos)));
        }
        if let (false, Some(max_length)) = (self.forced_eos_token_id.is_empty(), self.max_length) {
            p.push_row(Box::new(ForcedEos::new(
                max_length,
                &self.forced_eos_token_id,
            )));
        }
        if self.remove_invalid_values {
            p.push_row(Box::new(RemoveInvalidValues));
        }
        if let (Some((start, factor)), false) =
            (self.exponential_decay_length_penalty, eos.is_empty())
        {
            p.push_row(Box::new(ExponentialDecayLengthPenalty::new(
                start, factor, eos, prompt_len,
            )));
        }
        if !self.suppress_tokens.is_empty() {
            p.push_row(Box::new(SuppressTokens::new(&self.suppress_tokens)));
        }
        if !self.begin_suppress_tokens.is_empty() {
            let begin = if prompt_len > 1 || self.forced_bos_token_id.is_none() {
                prompt_len
            } else {
                prompt_len + 1
            };
            p.push_row(Box::new(SuppressTokensAtBegin::new(
                &self.begin_suppress_tokens,
                begin,
            )));
        }
        p
    }

    /// The warpers (only with `do_sample`: temperature, top-h, top-k, top-p, min-p,
    /// typical, epsilon, eta, in transformers' order) and then, with
    /// `renormalize_logits`, the final log-softmax. Everything that runs after the
    /// user's logits processors. Sampling beam search passes
    /// `min_tokens_to_keep = 1 + number of EOS tokens`, as transformers does.
    pub fn build_warpers(&self, min_tokens_to_keep: usize) -> Pipeline {
        let keep = min_tokens_to_keep.max(1);
        let mut p = Pipeline::new();
        if self.do_sample && self.mirostat_mode > 0 {
            // llama.cpp's mirostat chains: the temperature, then mirostat (no other warper).
            p.push_row(Box::new(NanToNegInf));
            self.push_temperature(&mut p);
            let mode = if self.mirostat_mode == 1 {
                MirostatMode::V1
            } else {
                MirostatMode::V2
            };
            p.push_row(Box::new(Mirostat::new(
                mode,
                self.mirostat_tau,
                self.mirostat_eta,
            )));
        } else if let (true, Some(order)) = (self.do_sample, &self.sampler_order) {
            p.push_row(Box::new(NanToNegInf));
            order.push_warpers(self, keep, &mut p);
        } else if self.do_sample {
            // Dynamic temperature replaces the fixed one.
            let temperature = self
                .sampling_temperature()
                .filter(|_| self.dynatemp_range <= 0.0);
            // Stages that run between the temperature and top-k/top-p leave them unfused.
            let unfused =
                self.top_h.is_some() || self.top_n_sigma.is_some() || self.dynatemp_range > 0.0;
            if self.top_k != 0 && !unfused {
                p.push_row(Box::new(self.fused_top_k(keep)));
            } else if self.top_p < 1.0 && !unfused {
                // NaN to -inf and temperature fused into top-p's first pass.
                p.push_row(Box::new(TopP::with_prelude(
                    self.top_p,
                    keep,
                    true,
                    temperature,
                )));
            } else {
                p.push_row(Box::new(NanToNegInf));
                self.push_temperature(&mut p);
                if let Some(n) = self.top_n_sigma {
                    p.push_row(Box::new(TopNSigma::new(n)));
                }
                if let Some(h) = self.top_h {
                    p.push_row(Box::new(TopH::new(h)));
                }
                if self.top_k != 0 {
                    p.push_row(Box::new(TopK::new(self.top_k, keep)));
                }
            }
            let top_p_fused = self.top_k == 0 && !unfused;
            if self.top_p < 1.0 && !top_p_fused {
                p.push_row(Box::new(TopP::new(self.top_p, keep)));
            }
            if let Some(m) = self.min_p {
                p.push_row(Box::new(MinP::new(m, keep)));
            }
            if self.typical_p < 1.0 {
                p.push_row(Box::new(Typical::new(self.typical_p, keep)));
            }
            if self.epsilon_cutoff > 0.0 && self.epsilon_cutoff < 1.0 {
                p.push_row(Box::new(EpsilonCutoff::new(self.epsilon_cutoff, keep)));
            }
            if self.eta_cutoff > 0.0 && self.eta_cutoff < 1.0 {
                p.push_row(Box::new(EtaCutoff::new(self.eta_cutoff, keep)));
            }
            if self.xtc_probability > 0.0 {
                p.push_row(Box::new(Xtc::new(
                    self.xtc_probability,
                    self.xtc_threshold,
                    keep,
                )));
            }
        }
        if let Some(w) = self
            .watermark
            .as_ref()
            .and_then(|w| GreenListWatermark::new(w).ok())
        {
            // Invalid settings never get here: `validate` refuses them first.
            p.push_row(Box::new(w));
        }
        if let Some(w) = self
            .synthid
            .as_ref()
            .and_then(|w| SynthIdWatermark::new(w).ok())
        {
            // Each build starts fresh state, as transformers builds its processor per call.
            p.push_row(Box::new(w));
        }
        if self.renormalize_logits {
            p.push_row(Box::new(Renormalize));
        }
        p
    }

    /// The temperature stage: dynamic with `dynatemp_range > 0`, none at 1.
    fn push_temperature(&self, p: &mut Pipeline) {
        if self.dynatemp_range > 0.0 {
            p.push_row(Box::new(DynamicTemperature::new(
                self.temperature,
                self.dynatemp_range,
                self.dynatemp_exponent,
            )));
        } else if let Some(t) = self.sampling_temperature() {
            p.push_row(Box::new(Temperature::new(t)));
        }
    }

    /// NaN to -inf, temperature and top-k in one pass (the same result as the three).
    fn fused_top_k(&self, keep: usize) -> TopK {
        TopK::with_prelude(self.top_k, keep, true, self.sampling_temperature())
    }

    /// The temperature the warpers divide by (`None` at 1.0, which transformers skips).
    /// Below [`TEMPERATURE_FLOOR`] it is the floor: every such temperature means the limit
    /// `T -> 0`, sampling the most likely token (ties share), which the floor already gives
    /// for any float32 logits, while a smaller divisor overflows them to +-inf (transformers
    /// then fails in `torch.multinomial`).
    pub fn sampling_temperature(&self) -> Option<f64> {
        (self.temperature != 1.0).then_some(self.temperature.max(TEMPERATURE_FLOOR))
    }

    /// The warpers of [`Self::build_warpers`] when they are that one fused top-k stage,
    /// to call directly (beam sampling computes what it keeps without writing the row).
    pub fn single_top_k_warper(&self, min_tokens_to_keep: usize) -> Option<TopK> {
        let cut = |c: f64| c > 0.0 && c < 1.0;
        let only_top_k = self.do_sample
            && self.top_k != 0
            && self.top_h.is_none()
            && self.top_p >= 1.0
            && self.min_p.is_none()
            && self.typical_p >= 1.0
            && !cut(self.epsilon_cutoff)
            && !cut(self.eta_cutoff)
            && self.top_n_sigma.is_none()
            && self.xtc_probability <= 0.0
            && self.dynatemp_range <= 0.0
            && self.mirostat_mode == 0
            && self.sampler_order.is_none()
            && !self.renormalize_logits
            && self.watermark.is_none()
            && self.synthid.is_none();
        only_top_k.then(|| self.fused_top_k(min_tokens_to_keep.max(1)))
    }

    /// Processors then warpers: the whole list transformers would build.
    pub fn build_all(&self, prompt_len: usize, min_tokens_to_keep: usize) -> Pipeline {
        let mut p = self.build_processors(prompt_len);
        p.extend(&self.build_warpers(min_tokens_to_keep));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_top_k_warper_is_exactly_the_built_warpers() {
        let base = PipelineConfig {
            do_sample: true,
            top_k: 50,
            ..Default::default()
        };
        let cases = [
            (base.clone(), true),
            (
                PipelineConfig {
                    temperature: 0.7,
                    ..base.clone()
                },
                true,
            ),
            (
                PipelineConfig {
                    top_p: 0.9,
                    ..base.clone()
                },
                false,
            ),
            (
                PipelineConfig {
                    min_p: Some(0.1),
                    ..base.clone()
                },
                false,
            ),
            (
                PipelineConfig {
                    typical_p: 0.5,
                    ..base.clone()
                },
                false,
            ),
            (
                PipelineConfig {
                    epsilon_cutoff: 0.01,
                    ..base.clone()
                },
                false,
            ),
            (
                PipelineConfig {
                    eta_cutoff: 0.01,
                    ..base.clone()
                },
                false,
            ),
            (
                PipelineConfig {
                    renormalize_logits: true,
                    ..base.clone()
                },
                false,
            ),
            (
                PipelineConfig {
                    top_h: Some(0.5),
                    ..base.clone()
                },
                false,
            ),
            (
                PipelineConfig {
                    top_k: 0,
                    ..base.clone()
                },
                false,
            ),
            (
                PipelineConfig {
                    do_sample: false,
                    ..base.clone()
                },
                false,
            ),
        ];
        for (cfg, single) in cases {
            let got = cfg.single_top_k_warper(2);
            assert_eq!(got.is_some(), single, "{cfg:?}");
            if let Some(top_k) = got {
                assert_eq!(
                    cfg.build_warpers(2).names(),
                    crate::logits::RowProcessor::names(&top_k)
                );
            }
        }
    }

    #[test]
    fn order_follows_transformers() {
        let cfg = PipelineConfig {
            eos_token_ids: vec![1],
            min_length: 3,
            min_new_tokens: 2,
            do_sample: true,
            temperature: 0.7,
            top_k: 5,
            top_p: 0.9,
            min_p: Some(0.1),
            top_h: Some(0.5),
            typical_p: 0.9,
            epsilon_cutoff: 0.01,
            eta_cutoff: 0.01,
            repetition_penalty: 1.2,
            encoder_repetition_penalty: 1.1,
            encoder_input_ids: vec![vec![3, 4]],
            no_repeat_ngram_size: 2,
            encoder_no_repeat_ngram_size: 2,
            bad_words_ids: vec![vec![5]],
            sequence_bias: vec![(vec![6], 1.0)],
            forced_bos_token_id: Some(0),
            forced_eos_token_id: vec![1],
            max_length: Some(10),
            remove_invalid_values: true,
            exponential_decay_length_penalty: Some((2, 1.5)),
            suppress_tokens: vec![7],
            begin_suppress_tokens: vec![8],
            renormalize_logits: true,
            ..Default::default()
        };
        cfg.validate(Some(10)).unwrap();
        assert_eq!(
            cfg.build_all(1, 1).names(),
            [
                "SequenceBiasLogitsProcessor",
                "EncoderRepetitionPenaltyLogitsProcessor",
                "RepetitionPenaltyLogitsProcessor",
                "NoRepeatNGramLogitsProcessor",
                "EncoderNoRepeatNGramLogitsProcessor",
                "NoBadWordsLogitsProcessor",
                "MinLengthLogitsProcessor",
                "MinNewTokensLengthLogitsProcessor",
                "ForcedBOSTokenLogitsProcessor",
                "ForcedEOSTokenLogitsProcessor",
                "InfNanRemoveLogitsProcessor",
                "ExponentialDecayLengthPenalty",
                "SuppressTokensLogitsProcessor",
                "SuppressTokensAtBeginLogitsProcessor",
                "NanToNegInf",
                "TemperatureLogitsWarper",
                "TopHLogitsWarper",
                "TopKLogitsWarper",
                "TopPLogitsWarper",
                "MinPLogitsWarper",
                "TypicalLogitsWarper",
                "EpsilonLogitsWarper",
                "EtaLogitsWarper",
                "LogitNormalization",
            ]
        );
    }

    #[test]
    fn fused_stages_keep_their_names() {
        let top_p = PipelineConfig {
            do_sample: true,
            temperature: 0.7,
            top_p: 0.9,
            ..Default::default()
        };
        assert_eq!(top_p.build_warpers(1).len(), 1, "one fused stage");
        assert_eq!(
            top_p.build_warpers(1).names(),
            ["NanToNegInf", "TemperatureLogitsWarper", "TopPLogitsWarper"]
        );
        let top_k = PipelineConfig { top_k: 5, ..top_p };
        assert_eq!(
            top_k.build_warpers(1).names(),
            [
                "NanToNegInf",
                "TemperatureLogitsWarper",
                "TopKLogitsWarper",
                "TopPLogitsWarper"
            ]
        );
    }

    #[test]
    fn neutral_values_build_nothing() {
        let cfg = PipelineConfig {
            do_sample: true,
            ..Default::default()
        };
        assert_eq!(cfg.build_all(3, 1).names(), ["NanToNegInf"]);
        let greedy = PipelineConfig {
            top_k: 50,
            temperature: 0.5,
            ..Default::default()
        };
        assert!(greedy.build_all(3, 1).is_empty(), "warpers need do_sample");
    }

    #[test]
    fn bad_values_name_the_field() {
        let field = |cfg: PipelineConfig| match cfg.validate(Some(10)) {
            Err(CoreError::InvalidArgument { name, .. })
            | Err(CoreError::TokenOutOfVocab { name, .. }) => name,
            other => panic!("expected an error, got {other:?}"),
        };
        let base = || PipelineConfig {
            do_sample: true,
            ..Default::default()
        };
        assert_eq!(
            field(PipelineConfig {
                temperature: 0.0,
                ..base()
            }),
            "temperature"
        );
        assert_eq!(
            field(PipelineConfig {
                top_p: 1.5,
                ..base()
            }),
            "top_p"
        );
        assert_eq!(
            field(PipelineConfig {
                top_p: 0.0,
                ..base()
            }),
            "top_p"
        );
        assert_eq!(
            field(PipelineConfig {
                typical_p: f64::NAN,
                ..base()
            }),
            "typical_p"
        );
        assert_eq!(
            field(PipelineConfig {
                min_p: Some(-0.1),
                ..base()
            }),
            "min_p"
        );
        assert_eq!(
            field(PipelineConfig {
                repetition_penalty: 0.0,
                ..base()
            }),
            "repetition_penalty"
        );
        assert_eq!(
            field(PipelineConfig {
                bad_words_ids: vec![vec![]],
                ..base()
            }),
            "bad_words_ids"
        );
        assert_eq!(
            field(PipelineConfig {
                bad_words_ids: vec![vec![-1]],
                ..base()
            }),
            "bad_words_ids"
        );
        assert_eq!(
            field(PipelineConfig {
                bad_words_ids: vec![vec![10]],
                ..base()
            }),
            "bad_words_ids"
        );
        assert_eq!(
            field(PipelineConfig {
                suppress_tokens: vec![12],
                ..base()
            }),
            "suppress_tokens"
        );
        assert_eq!(
            field(PipelineConfig {
                forced_bos_token_id: Some(99),
                ..base()
            }),
            "forced_bos_token_id"
        );
        let greedy_t0 = PipelineConfig {
            temperature: 0.0,
            ..Default::default()
        };
        assert!(
            greedy_t0.validate(None).is_ok(),
            "temperature only matters when sampling"
        );
    }
}
