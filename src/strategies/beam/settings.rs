//! The settings of one beam search, checked once.

use crate::buffers;
use crate::error::{CoreError, Result};
use crate::settings::{Setting, SettingsSource};

/// When a batch item stops looking for better hypotheses (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    /// `False`: stop when the best running beam, scored at its current length, cannot
    /// beat the worst finished hypothesis.
    Heuristic,
    /// `True`: stop as soon as `num_beams` hypotheses are finished.
    AllFinished,
    /// `"never"`: stop only when no running beam can improve, even at `max_length`.
    Never,
}

impl EarlyStopping {
    /// Parses `"true"`, `"false"` or `"never"` (what the bindings pass).
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "true" | "True" => Ok(EarlyStopping::AllFinished),
            "false" | "False" => Ok(EarlyStopping::Heuristic),
            "never" => Ok(EarlyStopping::Never),
            other => Err(CoreError::invalid(
                "early_stopping",
                format!("must be True, False or \"never\", got {other:?}"),
            )),
        }
    }
}

/// Randomness of beam-search sampling (its warpers come from the `PipelineConfig`).
#[derive(Debug, Clone, Default)]
pub struct SampleSettings {
    /// `Some`: one [`crate::rng`] key per batch item, and the core draws its own noise;
    /// `None`: the caller passes exponential noise each step (drawn from torch's global
    /// generator exactly as `torch.multinomial` draws it, so results match transformers).
    pub item_keys: Option<Vec<u64>>,
}

#[derive(Debug, Clone)]
pub struct BeamSettings {
    pub num_beams: usize,
    pub num_beam_groups: usize,
    /// Read and checked as the f64 the user gave (a subnormal negative must not round to
    /// -0.0 and pass); the search applies it in f32, as transformers does on float32 scores.
    pub diversity_penalty: f64,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    /// Total length (prompt included) at which every beam stops.
    pub max_length: usize,
    pub num_return_sequences: usize,
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: i64,
    /// `Some` for beam-search sampling.
    pub sample: Option<SampleSettings>,
}

impl Default for BeamSettings {
    fn default() -> Self {
        BeamSettings {
            num_beams: 1,
            num_beam_groups: 1,
            diversity_penalty: 0.0,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            max_length: 20,
            num_return_sequences: 1,
            eos_token_ids: Vec::new(),
            pad_token_id: 0,
            sample: None,
        }
    }
}

impl BeamSettings {
    /// The beam fields of `source` (`GenerationConfig` names); `max_length`, the EOS ids and
    /// `sample` are the generation's, set by [`crate::settings::GenerationSettings::read`].
    pub fn read(source: &dyn SettingsSource) -> Result<Self> {
        let mut s = BeamSettings::default();
        macro_rules! fields {
            ($($f:ident),*) => {
                $(
                    if let Some(v) = Setting::read(source, stringify!($f))? {
                        s.$f = v;
                    }
                )*
                // The names read here, for `GenerationSettings::is_setting`.
                const _: () = assert!(BeamSettings::FIELDS.len() == [$(stringify!($f)),*].len());
            };
        }
        fields!(
            num_beams,
            num_beam_groups,
            diversity_penalty,
            length_penalty,
            early_stopping,
            num_return_sequences,
            pad_token_id
        );
        Ok(s)
    }

    /// The `GenerationConfig` fields [`Self::read`] reads.
    pub const FIELDS: &'static [&'static str] = &[
        "num_beams",
        "num_beam_groups",
        "diversity_penalty",
        "length_penalty",
        "early_stopping",
        "num_return_sequences",
        "pad_token_id",
    ];

    /// The rules over the beam counts and how they combine with sampling (`do_sample`),
    /// for every mode: greedy and sampling have `num_beams = 1`.
    pub fn validate_counts(&self, do_sample: bool) -> Result<()> {
        let (beams, groups, returned) = (
            self.num_beams,
            self.num_beam_groups,
            self.num_return_sequences,
        );
        if beams < 1 {
            return Err(CoreError::invalid(
                "num_beams",
                format!("must be >= 1, got {beams}"),
            ));
        }
        if groups < 1 {
            return Err(CoreError::invalid(
                "num_beam_groups",
                format!("must be >= 1, got {groups}"),
            ));
        }
        if groups > 1 && beams % groups != 0 {
            return Err(CoreError::invalid(
                "num_beam_groups",
                format!("num_beams ({beams}) must be divisible by num_beam_groups ({groups})"),
            ));
        }
        if groups > 1 && do_sample {
            return Err(CoreError::invalid(
                "num_beam_groups",
                "diverse (group) beam search does not support do_sample=True",
            ));
        }
        let penalty = self.diversity_penalty;
        if penalty.is_nan() || penalty < 0.0 {
            return Err(CoreError::invalid(
                "diversity_penalty",
                format!("must be >= 0, got {penalty}"),
            ));
        }
        if returned < 1 {
            return Err(CoreError::invalid(
                "num_return_sequences",
                format!("must be >= 1, got {returned}"),
            ));
        }
        if beams > 1 && returned > beams {
            return Err(CoreError::invalid(
                "num_return_sequences",
                format!("must be <= num_beams ({beams}) for beam search, got {returned}"),
            ));
        }
        if beams == 1 && !do_sample && returned > 1 {
            return Err(CoreError::invalid(
                "num_return_sequences",
                format!(
                    "greedy decoding returns one sequence per input, got {returned}; \
                     set do_sample=True or num_beams > 1"
                ),
            ));
        }
        Ok(())
    }

    /// Checks every value before a search starts; `prompt_len` is the length of the
    /// decoder's starting history.
    pub fn validate(&self, prompt_len: usize) -> Result<()> {
        self.validate_counts(self.sample.is_some())?;
        if self.num_return_sequences > self.num_beams {
            return Err(CoreError::invalid(
                "num_return_sequences",
                format!(
                    "must be in [1, num_beams={}], got {}",
                    self.num_beams, self.num_return_sequences
                ),
            ));
        }
        if !self.length_penalty.is_finite() {
            return Err(CoreError::invalid(
                "length_penalty",
                format!("must be finite, got {}", self.length_penalty),
            ));
        }
        if self.max_length <= prompt_len {
            return Err(CoreError::invalid(
                "max_length",
                format!(
                    "must exceed the prompt length {prompt_len}, got {}",
                    self.max_length
                ),
            ));
        }
        Ok(())
    }

    /// `min_tokens_to_keep` of the sampling warpers: transformers keeps `1 + n_eos`
    /// (at least 2) so that a beam can always continue past an EOS.
    pub fn min_tokens_to_keep(&self) -> usize {
        (1 + self.eos_token_ids.len()).max(2)
    }

    /// Continuations kept per batch item (or group) and step: enough that `beams`
    /// of them do not end in EOS.
    pub fn candidates_per_item(&self, beams: usize) -> usize {
        2.max(1 + self.eos_token_ids.len()) * beams
    }

    /// Rows (`batch × num_beams`) and candidates per item (or group) and step for
    /// `beams` beams per item, checked so that no buffer sized from them overflows.
    pub fn checked_sizes(&self, batch: usize, beams: usize) -> Result<(usize, usize)> {
        let rows = buffers::product("num_beams", &[batch, self.num_beams])?;
        let per_beam = 2.max(self.eos_token_ids.len().saturating_add(1));
        let k = buffers::product("num_beams", &[per_beam, beams])?;
        buffers::product("num_beams", &[batch, k])?;
        Ok((rows, k))
    }

    pub fn is_eos(&self, token: i64) -> bool {
        self.eos_token_ids.contains(&token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_name_the_field() {
        let bad = |f: fn(&mut BeamSettings), name: &str| {
            let mut s = BeamSettings::default();
            f(&mut s);
            match s.validate(3) {
                Err(CoreError::InvalidArgument { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        };
        bad(|s| s.num_beams = 0, "num_beams");
        bad(|s| s.num_return_sequences = 3, "num_return_sequences");
        bad(
            |s| {
                s.num_beams = 4;
                s.num_beam_groups = 3
            },
            "num_beam_groups",
        );
        bad(|s| s.max_length = 3, "max_length");
        bad(
            |s| {
                s.num_beam_groups = 2;
                s.sample = Some(SampleSettings::default())
            },
            "num_beam_groups",
        );
        assert!(EarlyStopping::parse("sometimes").is_err());
        assert_eq!(
            BeamSettings {
                eos_token_ids: vec![1, 2],
                ..Default::default()
            }
            .candidates_per_item(4),
            12
        );
    }
}
