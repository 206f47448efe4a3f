//! The stages [`PipelineConfig`] builds: processors and warpers, in transformers' order.

use super::PipelineConfig;
use crate::logits::{
    bad_words_bias, AllowedTokens, Dry, DynamicTemperature, EncoderNoRepeatNGram,
    EncoderRepetitionPenalty, EpsilonCutoff, EtaCutoff, ExponentialDecayLengthPenalty, ForcedBos,
    ForcedEos, GreenListWatermark, LogitBias, MinLength, MinP, Mirostat, MirostatMode, NanToNegInf,
    NoRepeatNGram, Pipeline, PresenceFrequencyPenalty, RemoveInvalidValues, Renormalize,
    RepetitionPenalty, SequenceBias, SuppressTokens, SuppressTokensAtBegin, SynthIdWatermark,
    Temperature, TopH, TopK, TopNSigma, TopP, Typical, Xtc,
};

impl PipelineConfig {
    /// The processors (everything that runs before the user's logits processors), in
    /// transformers' order, for a decoder prompt of `prompt_len` tokens.
    pub fn build(&self, prompt_len: usize) -> Pipeline {
        self.build_processors(prompt_len)
    }

    /// Same as [`Self::build`].
    pub fn build_processors(&self, prompt_len: usize) -> Pipeline {
        let mut p = Pipeline::new();
        self.push_biases_and_penalties(&mut p);
        self.push_token_rules(&mut p, prompt_len);
        p
    }

    /// The first processors, in transformers' order: biases, allowed tokens, penalties and
    /// n-gram blocking.
    fn push_biases_and_penalties(&self, p: &mut Pipeline) {
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
    }

    /// The processors after them, in transformers' order: bad words, lengths, prefix and
    /// grammar constraints, forced tokens, invalid values, decay and suppression.
    fn push_token_rules(&self, p: &mut Pipeline, prompt_len: usize) {
        let eos = &self.eos_token_ids;
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
            self.push_sampling_warpers(&mut p, keep);
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

    /// transformers' warpers (plus the llama.cpp / vLLM ones at their places), fusing the
    /// temperature into top-k or top-p where nothing runs between them.
    fn push_sampling_warpers(&self, p: &mut Pipeline, keep: usize) {
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
            self.push_temperature(p);
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
