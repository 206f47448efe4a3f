//! The settings of one generation, read once by name and checked once.
//!
//! A setting's name is its `GenerationConfig` field name. The core reads settings from a
//! [`SettingsSource`] (the Python binding reads a `GenerationConfig`'s attributes; tests and
//! the fuzzer build the structs directly), so the field list lives in one place: the struct
//! that declares it with [`settings_struct!`]. Every range and consistency rule lives in the
//! `validate` of the type that owns the field; the Python config calls it rather than
//! restating it.

use crate::beam::{BeamSettings, EarlyStopping};
use crate::error::{CoreError, Result};
use crate::logits::PipelineConfig;

/// Where settings are read from, one typed value at a time. `Ok(None)`: the source has no
/// value for `name` (absent or `None`), so the declared default stays. A value of the wrong
/// type is [`CoreError::WrongType`] naming the setting.
pub trait SettingsSource {
    fn float(&self, name: &'static str) -> Result<Option<f64>>;
    fn uint(&self, name: &'static str) -> Result<Option<u64>>;
    fn int(&self, name: &'static str) -> Result<Option<i64>>;
    fn flag(&self, name: &'static str) -> Result<Option<bool>>;
    /// A token id or a list of them.
    fn ids(&self, name: &'static str) -> Result<Option<Vec<i64>>>;
    fn id_lists(&self, name: &'static str) -> Result<Option<Vec<Vec<i64>>>>;
    fn uints(&self, name: &'static str) -> Result<Option<Vec<u64>>>;
    /// `{(ids...): bias}` or `[[ids, bias], ...]`, in order.
    fn biases(&self, name: &'static str) -> Result<Option<SequenceBiases>>;
    /// A `(count, number)` pair.
    fn uint_float(&self, name: &'static str) -> Result<Option<(u64, f64)>>;
    /// A bool or a string (`early_stopping`).
    fn flag_or_text(&self, name: &'static str) -> Result<Option<FlagOrText>>;
}

/// `(token sequence, bias)` pairs, in the user's order.
pub type SequenceBiases = Vec<(Vec<i64>, f64)>;

/// A setting that is a bool or a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagOrText {
    Flag(bool),
    Text(String),
}

/// A type a setting can have: how to read it from a [`SettingsSource`].
pub trait Setting: Sized {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>>;
}

fn to_usize(name: &'static str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| CoreError::invalid(name, format!("{v} is too large")))
}

impl Setting for f64 {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source.float(name)
    }
}

// No `Setting for f32`: a setting is read and checked as the f64 the user gave (rounding
// first let -1e-309 pass a `>= 0` rule as -0.0); a core narrows it where it computes.

impl Setting for usize {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source.uint(name)?.map(|v| to_usize(name, v)).transpose()
    }
}

impl Setting for u64 {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source.uint(name)
    }
}

impl Setting for i64 {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source.int(name)
    }
}

impl Setting for bool {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source.flag(name)
    }
}

impl Setting for Vec<i64> {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source.ids(name)
    }
}

impl Setting for Vec<Vec<i64>> {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source.id_lists(name)
    }
}

impl Setting for Vec<usize> {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source
            .uints(name)?
            .map(|v| v.into_iter().map(|x| to_usize(name, x)).collect())
            .transpose()
    }
}

impl Setting for Vec<(Vec<i64>, f64)> {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source.biases(name)
    }
}

/// Per-token biases (`logit_bias`): `{id: bias}` or `[[id, bias], ...]`; read as
/// [`SettingsSource::biases`] whose keys must each be one token id.
impl Setting for Vec<(i64, f64)> {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source
            .biases(name)?
            .map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(ids, bias)| match ids.as_slice() {
                        [id] => Ok((*id, bias)),
                        _ => Err(CoreError::WrongType {
                            name,
                            expected: "a dict {token id: float}",
                        }),
                    })
                    .collect()
            })
            .transpose()
    }
}

impl Setting for (usize, f64) {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source
            .uint_float(name)?
            .map(|(n, x)| Ok((to_usize(name, n)?, x)))
            .transpose()
    }
}

impl Setting for EarlyStopping {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        source
            .flag_or_text(name)?
            .map(|v| match v {
                FlagOrText::Flag(true) => Ok(EarlyStopping::AllFinished),
                FlagOrText::Flag(false) => Ok(EarlyStopping::Heuristic),
                FlagOrText::Text(t) => EarlyStopping::parse(&t),
            })
            .transpose()
    }
}

/// `None` in the source is the default `None`; a value is `Some`.
impl<T: Setting> Setting for Option<T> {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        Ok(T::read(source, name)?.map(Some))
    }
}

/// Declares a settings struct once: its fields, their defaults (the neutral value, "off"),
/// and for a processor's field the transformers class that a user processor of the same
/// class replaces. Generates the struct, `Default`, `FIELDS`, `read` (from a
/// [`SettingsSource`]) and `turn_off` (resets the fields of one stage). An optional
/// `runtime { ... }` block declares fields that are not settings (objects the caller hands
/// one generation, such as grammar matchers): default `Default::default()`, never read;
/// only `#[cfg]` attributes there (they are repeated on the field's default).
#[macro_export]
macro_rules! settings_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty = $default:expr $(, stage $stage:literal)?
            );* $(;)?
        }
        $(
            runtime {
                $( $(#[$rmeta:meta])* $rfield:ident : $rty:ty ),* $(,)?
            }
        )?
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            $( $( $(#[$rmeta])* pub $rfield: $rty, )* )?
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $( $field: $default, )*
                    $( $( $(#[$rmeta])* $rfield: Default::default(), )* )?
                }
            }
        }

        impl $name {
            /// The field names, in declaration order (`GenerationConfig` field names).
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Every field read by name from `source`; a value it lacks keeps its default.
            pub fn read(source: &dyn $crate::settings::SettingsSource) -> $crate::Result<Self> {
                let mut out = Self::default();
                $(
                    if let Some(v) = <$ty as $crate::settings::Setting>::read(source, stringify!($field))? {
                        out.$field = v;
                    }
                )*
                Ok(out)
            }

            /// Resets the fields that configure the stage named `stage` (a transformers class
            /// name) to their neutral default; false when no field belongs to it.
            pub fn turn_off(&mut self, stage: &str) -> bool {
                let _ = stage;
                let neutral = Self::default();
                let mut found = false;
                $( $(
                    if stage == $stage {
                        self.$field = neutral.$field;
                        found = true;
                    }
                )? )*
                found
            }
        }
    };
}

/// Everything one generation hands the core: the processors' settings, the beam settings
/// (read for every mode, used by the beam family), the sampling seed, and what the
/// binding resolved for this call (pad token, vocabulary size).
#[derive(Debug, Clone, Default)]
pub struct GenerationSettings {
    pub pipeline: PipelineConfig,
    pub beam: BeamSettings,
    /// Seed of the per-row generator (`None`: the caller draws one, or passes noise).
    pub seed: Option<u64>,
    /// Vocabulary size, when known before the first step: configured token ids are checked
    /// against it before any model work.
    pub vocab_size: Option<usize>,
}

impl GenerationSettings {
    /// Reads every setting the core uses from `source` (`GenerationConfig` field names).
    pub fn read(source: &dyn SettingsSource) -> Result<Self> {
        let pipeline = PipelineConfig::read(source)?;
        let mut beam = BeamSettings::read(source)?;
        beam.eos_token_ids = pipeline.eos_token_ids.clone();
        beam.max_length = pipeline.max_length.unwrap_or(beam.max_length);
        Ok(GenerationSettings {
            pipeline,
            beam,
            seed: Option::<u64>::read(source, "seed")?.flatten(),
            vocab_size: None,
        })
    }

    /// True when `name` is a setting (a `GenerationConfig` field the core reads, or `seed`):
    /// an error naming it is a configuration error, not a bad argument of a method.
    pub fn is_setting(name: &str) -> bool {
        name == "seed"
            || name == "max_length"
            || PipelineConfig::FIELDS.contains(&name)
            || BeamSettings::FIELDS.contains(&name)
    }

    /// Every rule over these settings, each named by its field: the processors' ranges and
    /// token ids (against `vocab_size` when known), then the beam counts and how they combine
    /// with sampling. Rules that need the prompt are checked when a search starts.
    pub fn validate(&self) -> Result<()> {
        self.pipeline.validate(self.vocab_size)?;
        self.beam.validate_counts(self.pipeline.do_sample)?;
        // A config rule, not a search rule: group search with one group runs the penalty-free
        // plain search, so the core's searches accept it.
        let penalty = self.beam.diversity_penalty;
        if penalty > 0.0 && self.beam.num_beam_groups == 1 {
            return Err(CoreError::invalid(
                "diversity_penalty",
                format!("{penalty} needs num_beam_groups > 1"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A source backed by a map of floats / ints (enough for these tests).
    struct Map(HashMap<&'static str, f64>);

    impl SettingsSource for Map {
        fn float(&self, name: &'static str) -> Result<Option<f64>> {
            Ok(self.0.get(name).copied())
        }
        fn uint(&self, name: &'static str) -> Result<Option<u64>> {
            Ok(self.0.get(name).map(|&v| v as u64))
        }
        fn int(&self, name: &'static str) -> Result<Option<i64>> {
            Ok(self.0.get(name).map(|&v| v as i64))
        }
        fn flag(&self, name: &'static str) -> Result<Option<bool>> {
            Ok(self.0.get(name).map(|&v| v != 0.0))
        }
        fn ids(&self, name: &'static str) -> Result<Option<Vec<i64>>> {
            Ok(self.0.get(name).map(|&v| vec![v as i64]))
        }
        fn id_lists(&self, _: &'static str) -> Result<Option<Vec<Vec<i64>>>> {
            Ok(None)
        }
        fn uints(&self, _: &'static str) -> Result<Option<Vec<u64>>> {
            Ok(None)
        }
        fn biases(&self, _: &'static str) -> Result<Option<SequenceBiases>> {
            Ok(None)
        }
        fn uint_float(&self, _: &'static str) -> Result<Option<(u64, f64)>> {
            Ok(None)
        }
        fn flag_or_text(&self, _: &'static str) -> Result<Option<FlagOrText>> {
            Ok(None)
        }
    }

    #[test]
    fn read_takes_named_values_and_keeps_defaults() {
        let src = Map(HashMap::from([
            ("top_p", 0.5),
            ("num_beams", 4.0),
            ("eos_token_ids", 2.0),
            ("max_length", 9.0),
        ]));
        let s = GenerationSettings::read(&src).unwrap();
        assert_eq!(s.pipeline.top_p, 0.5);
        assert_eq!(s.pipeline.typical_p, 1.0);
        assert_eq!(s.beam.num_beams, 4);
        assert_eq!(s.beam.eos_token_ids, [2]);
        assert_eq!(s.beam.max_length, 9);
        assert_eq!(s.seed, None);
    }

    #[test]
    fn turn_off_resets_the_fields_of_one_stage() {
        let mut cfg = PipelineConfig {
            top_p: 0.5,
            top_k: 7,
            ..Default::default()
        };
        assert!(cfg.turn_off("TopPLogitsWarper"));
        assert_eq!((cfg.top_p, cfg.top_k), (1.0, 7));
        assert!(!cfg.turn_off("NoSuchProcessor"));
    }

    #[test]
    fn validate_names_the_field_of_each_rule() {
        let field = |s: GenerationSettings| match s.validate() {
            Err(CoreError::InvalidArgument { name, .. }) => name,
            other => panic!("expected an error, got {other:?}"),
        };
        let beams = |n: usize, groups: usize| BeamSettings {
            num_beams: n,
            num_beam_groups: groups,
            ..Default::default()
        };
        let with = |beam: BeamSettings, do_sample: bool| GenerationSettings {
            beam,
            pipeline: PipelineConfig {
                do_sample,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(field(with(beams(4, 3), false)), "num_beam_groups");
        assert_eq!(field(with(beams(4, 2), true)), "num_beam_groups");
        let greedy_many = BeamSettings {
            num_return_sequences: 2,
            ..beams(1, 1)
        };
        assert_eq!(
            field(with(greedy_many.clone(), false)),
            "num_return_sequences"
        );
        assert!(
            with(greedy_many, true).validate().is_ok(),
            "sampling may return several"
        );
        let diverse_alone = BeamSettings {
            diversity_penalty: 0.5,
            ..beams(4, 1)
        };
        assert_eq!(field(with(diverse_alone, false)), "diversity_penalty");
    }
}
