//! The rules of [`PipelineConfig`]'s settings, each error naming its field.

use super::PipelineConfig;
use crate::error::{CoreError, Result};

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
        self.validate_ranges()?;
        self.validate_sequences(vocab)?;
        self.validate_samplers(vocab)?;
        self.validate_token_ids(vocab)
    }

    /// The number ranges of the transformers processors and warpers.
    fn validate_ranges(&self) -> Result<()> {
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
        Ok(())
    }

    /// The token sequences (bad words, sequence biases): non-empty, in the vocabulary.
    fn validate_sequences(&self, vocab: Option<usize>) -> Result<()> {
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
        Ok(())
    }

    /// The single token ids and the encoder rows.
    fn validate_token_ids(&self, vocab: Option<usize>) -> Result<()> {
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
        self.validate_penalty_samplers(vocab)?;
        self.validate_warper_samplers()
    }

    /// The penalties and biases among those samplers (presence/frequency, logit bias,
    /// allowed tokens, DRY).
    fn validate_penalty_samplers(&self, vocab: Option<usize>) -> Result<()> {
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
        Ok(())
    }

    /// The warpers among those samplers (XTC, top-n-sigma, dynamic temperature, mirostat).
    fn validate_warper_samplers(&self) -> Result<()> {
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
}
