//! `GenerationSettings`: the settings of one generation, read once from a `GenerationConfig`
//! (its attributes, by field name) plus what the caller resolved for this call, checked once
//! by the core's `validate`, and handed typed to every strategy core.

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyMapping, PyString, PyTuple};

use super::errors::to_py;
use super::ints::{Int, Named};
use crate::error::{CoreError, Result};
use crate::settings::{FlagOrText, GenerationSettings as Core, SettingsSource};

/// Reads settings from an object's attributes (`None` or a missing attribute: no value).
struct Attributes<'a, 'py>(&'a Bound<'py, PyAny>);

impl<'py> Attributes<'_, 'py> {
    fn get(&self, name: &'static str) -> Result<Option<Bound<'py, PyAny>>> {
        match self.0.getattr(name) {
            Ok(v) if v.is_none() => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance_of::<PyAttributeError>(self.0.py()) => Ok(None),
            Err(_) => Err(wrong(name, "readable")),
        }
    }

    fn typed<T: for<'a> FromPyObject<'a, 'py>>(
        &self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<Option<T>> {
        self.get(name)?
            .map(|v| v.extract::<T>().map_err(|_| wrong(name, expected)))
            .transpose()
    }
}

fn wrong(name: &'static str, expected: &'static str) -> CoreError {
    CoreError::WrongType { name, expected }
}

impl SettingsSource for Attributes<'_, '_> {
    fn float(&self, name: &'static str) -> Result<Option<f64>> {
        self.typed(name, "a number")
    }

    fn uint(&self, name: &'static str) -> Result<Option<u64>> {
        self.typed::<Int<u64>>(name, "a non-negative int")?
            .named(name)
    }

    fn int(&self, name: &'static str) -> Result<Option<i64>> {
        self.typed::<Int<i64>>(name, "an int")?.named(name)
    }

    fn flag(&self, name: &'static str) -> Result<Option<bool>> {
        self.typed(name, "a bool")
    }

    fn ids(&self, name: &'static str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(name)? else {
            return Ok(None);
        };
        if let Ok(id) = v.extract::<Int<i64>>() {
            return Ok(Some(vec![id.named(name)?]));
        }
        v.extract::<Vec<Int<i64>>>()
            .map_err(|_| wrong(name, "an int or a list of ints"))?
            .named(name)
            .map(Some)
    }

    fn id_lists(&self, name: &'static str) -> Result<Option<Vec<Vec<i64>>>> {
        self.typed::<Vec<Vec<Int<i64>>>>(name, "a list of lists of token ids")?
            .named(name)
    }

    fn uints(&self, name: &'static str) -> Result<Option<Vec<u64>>> {
        self.typed::<Vec<Int<u64>>>(name, "a list of non-negative ints")?
            .named(name)
    }

    fn biases(&self, name: &'static str) -> Result<Option<crate::settings::SequenceBiases>> {
        const EXPECTED: &str = "a dict {tuple of token ids: float} or a list of [ids, float] pairs";
        let Some(v) = self.get(name)? else {
            return Ok(None);
        };
        let pairs = match v.cast::<PyMapping>() {
            Ok(m) => m.items().map_err(|_| wrong(name, EXPECTED))?.into_any(),
            Err(_) => v,
        };
        let pairs: Vec<Bound<'_, PyAny>> = pairs.extract().map_err(|_| wrong(name, EXPECTED))?;
        pairs
            .iter()
            .map(|p| {
                let (ids, bias): (Bound<'_, PyAny>, f64) =
                    p.extract().map_err(|_| wrong(name, EXPECTED))?;
                let ids = match ids.extract::<Int<i64>>() {
                    Ok(id) => vec![id.named(name)?],
                    Err(_) => ids
                        .extract::<Vec<Int<i64>>>()
                        .map_err(|_| wrong(name, EXPECTED))?
                        .named(name)?,
                };
                Ok((ids, bias))
            })
            .collect::<Result<_>>()
            .map(Some)
    }

    fn uint_float(&self, name: &'static str) -> Result<Option<(u64, f64)>> {
        const EXPECTED: &str = "a (count >= 0, number) pair";
        let Some(v) = self.get(name)? else {
            return Ok(None);
        };
        let items: Vec<Bound<'_, PyAny>> = match v.cast::<PyTuple>() {
            Ok(t) => t.iter().collect(),
            Err(_) => v.extract().map_err(|_| wrong(name, EXPECTED))?,
        };
        match items.as_slice() {
            [n, x] => Ok(Some((
                n.extract::<Int<u64>>()
                    .map_err(|_| wrong(name, EXPECTED))?
                    .named(name)?,
                x.extract().map_err(|_| wrong(name, EXPECTED))?,
            ))),
            _ => Err(wrong(name, EXPECTED)),
        }
    }

    fn flag_or_text(&self, name: &'static str) -> Result<Option<FlagOrText>> {
        let Some(v) = self.get(name)? else {
            return Ok(None);
        };
        if let Ok(b) = v.cast::<PyBool>() {
            return Ok(Some(FlagOrText::Flag(b.is_true())));
        }
        if let Ok(s) = v.cast::<PyString>() {
            return Ok(Some(FlagOrText::Text(s.to_string())));
        }
        Err(wrong(name, "a bool or a str"))
    }
}

/// The settings of one generation, checked: built from a `GenerationConfig` (or any object
/// with its attribute names) and the values resolved for this call, which replace the
/// config's. `turned_off`: transformers class names of the user's logits processors; a
/// processor the config would build with the same class is left to the user's.
#[pyclass(module = "ferrogen._core", frozen)]
pub struct GenerationSettings {
    pub(super) inner: Core,
    /// Unpadded prompt of every batch entry (sampling keys); `None`: the rows' prompts.
    pub(super) seed_prompts: Option<Vec<Vec<i64>>>,
    /// One sampling seed per batch entry, replacing `seed`.
    pub(super) row_seeds: Option<Vec<u64>>,
}

#[pymethods]
impl GenerationSettings {
    #[new]
    #[pyo3(signature = (
        config, *, eos_token_ids=None, min_length=None, max_length=None, pad_token_id=None,
        vocab_size=None, encoder_input_ids=None, prompt_ignore_lengths=None, seed=None,
        seed_prompts=None, row_seeds=None, turned_off=Vec::new(), grammar=None,
        prefix_allowed=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: &Bound<'_, PyAny>,
        eos_token_ids: Option<Vec<Int<i64>>>,
        min_length: Option<Int<usize>>,
        max_length: Option<Int<usize>>,
        pad_token_id: Option<Int<i64>>,
        vocab_size: Option<Int<usize>>,
        encoder_input_ids: Option<Vec<Vec<Int<i64>>>>,
        prompt_ignore_lengths: Option<Vec<Int<usize>>>,
        seed: Option<Int<u64>>,
        seed_prompts: Option<Vec<Vec<Int<i64>>>>,
        row_seeds: Option<Vec<Int<u64>>>,
        turned_off: Vec<String>,
        grammar: Option<&Bound<'_, PyAny>>,
        prefix_allowed: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let eos_token_ids = eos_token_ids.arg("eos_token_ids")?;
        let (min_length, max_length) =
            (min_length.arg("min_length")?, max_length.arg("max_length")?);
        let (pad_token_id, vocab_size) = (
            pad_token_id.arg("pad_token_id")?,
            vocab_size.arg("vocab_size")?,
        );
        let encoder_input_ids = encoder_input_ids.arg("encoder_input_ids")?;
        let prompt_ignore_lengths = prompt_ignore_lengths.arg("prompt_ignore_lengths")?;
        let (seed, row_seeds) = (seed.arg("seed")?, row_seeds.arg("row_seeds")?);
        let seed_prompts = seed_prompts.arg("seed_prompts")?;
        let mut inner = Core::read(&Attributes(config)).map_err(to_py)?;
        let (pipeline, beam) = (&mut inner.pipeline, &mut inner.beam);
        if let Some(eos) = eos_token_ids {
            pipeline.eos_token_ids = eos.clone();
            beam.eos_token_ids = eos;
        }
        if let Some(n) = min_length {
            pipeline.min_length = n;
        }
        if let Some(n) = max_length {
            pipeline.max_length = Some(n);
            beam.max_length = n;
        }
        if let Some(pad) = pad_token_id {
            beam.pad_token_id = pad;
        }
        if let Some(rows) = encoder_input_ids {
            pipeline.encoder_input_ids = rows;
        }
        if let Some(lengths) = prompt_ignore_lengths {
            pipeline.prompt_ignore_lengths = lengths;
        }
        for stage in &turned_off {
            pipeline.turn_off(stage);
        }
        pipeline.prefix_allowed = super::prefix::prefix_of(prefix_allowed)?;
        #[cfg(feature = "grammar")]
        {
            pipeline.grammar = super::grammar::handle_of(grammar.cloned())?;
        }
        #[cfg(not(feature = "grammar"))]
        if grammar.is_some() {
            return Err(to_py(CoreError::invalid(
                "grammar",
                "this build has no grammar support (cargo feature `grammar`)",
            )));
        }
        pipeline.watermark = super::guidance::watermark_of(config, vocab_size)?;
        pipeline.synthid = super::synthid::synthid_of(config)?;
        inner.seed = seed.or(inner.seed);
        inner.vocab_size = vocab_size;
        inner.validate().map_err(to_py)?;
        Ok(GenerationSettings {
            inner,
            seed_prompts,
            row_seeds,
        })
    }

    /// The pad token that fills finished rows.
    #[getter]
    fn pad_token_id(&self) -> i64 {
        self.inner.beam.pad_token_id
    }

    /// The sampling seed (`None`: the caller passes noise, or rows use seed 0).
    #[getter]
    fn seed(&self) -> Option<u64> {
        self.inner.seed
    }

    fn __repr__(&self) -> String {
        format!("GenerationSettings({:?})", self.inner)
    }
}

impl GenerationSettings {
    /// `seed_prompts`, else the rows of `prompts` (row-major, `width` wide).
    pub(super) fn key_prompts(&self, prompts: &[i64], width: usize) -> Vec<Vec<i64>> {
        self.seed_prompts
            .clone()
            .unwrap_or_else(|| prompts.chunks(width.max(1)).map(<[i64]>::to_vec).collect())
    }
}
