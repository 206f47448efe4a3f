//! The settings dict (`ferrogen.strategies.base.core_settings`) → [`PipelineConfig`].
//! Keys are `GenerationConfig` field names; a wrong type raises `InvalidArgumentError`
//! naming the key. Ranges and token ids are checked by the core.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping};

use super::errors::{to_py, InvalidArgumentError};
use crate::logits::PipelineConfig;

fn get<'py>(settings: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(settings.get_item(key)?.filter(|v| !v.is_none()))
}

fn bad(key: &str, expected: &str) -> PyErr {
    InvalidArgumentError::new_err(format!("{key}: must be {expected}"))
}

fn value<'py, T: pyo3::conversion::FromPyObjectOwned<'py>>(
    settings: &Bound<'py, PyDict>,
    key: &str,
    expected: &str,
) -> PyResult<Option<T>> {
    match get(settings, key)? {
        None => Ok(None),
        Some(v) => v.extract::<T>().map(Some).map_err(|_| bad(key, expected)),
    }
}

fn usize_or_zero(settings: &Bound<'_, PyDict>, key: &str) -> PyResult<usize> {
    Ok(value::<usize>(settings, key, "a non-negative int")?.unwrap_or(0))
}

fn float_or(settings: &Bound<'_, PyDict>, key: &str, default: f64) -> PyResult<f64> {
    Ok(value::<f64>(settings, key, "a number")?.unwrap_or(default))
}

fn flag(settings: &Bound<'_, PyDict>, key: &str) -> PyResult<bool> {
    Ok(value::<bool>(settings, key, "a bool")?.unwrap_or(false))
}

/// An int or a list of ints (eos_token_id and friends).
fn ids(settings: &Bound<'_, PyDict>, key: &str) -> PyResult<Vec<i64>> {
    match get(settings, key)? {
        None => Ok(Vec::new()),
        Some(v) => {
            if let Ok(t) = v.extract::<i64>() {
                return Ok(vec![t]);
            }
            v.extract::<Vec<i64>>()
                .map_err(|_| bad(key, "an int or a list of ints"))
        }
    }
}

fn id_lists(settings: &Bound<'_, PyDict>, key: &str) -> PyResult<Option<Vec<Vec<i64>>>> {
    value::<Vec<Vec<i64>>>(settings, key, "a list of lists of token ids")
}

/// `{(ids...): bias}` or `[[ids, bias], ...]`, in order.
fn sequence_bias(settings: &Bound<'_, PyDict>) -> PyResult<Vec<(Vec<i64>, f64)>> {
    const KEY: &str = "sequence_bias";
    const EXPECTED: &str = "a dict {tuple of token ids: float} or a list of [ids, float] pairs";
    let Some(v) = get(settings, KEY)? else {
        return Ok(Vec::new());
    };
    let pairs: Vec<(Bound<'_, PyAny>, f64)> = if let Ok(m) = v.cast::<PyMapping>() {
        m.items()?
            .iter()
            .map(|it| it.extract())
            .collect::<PyResult<_>>()
            .map_err(|_| bad(KEY, EXPECTED))?
    } else {
        v.extract().map_err(|_| bad(KEY, EXPECTED))?
    };
    let out: Vec<(Vec<i64>, f64)> = pairs
        .into_iter()
        .map(|(k, b)| {
            k.extract::<Vec<i64>>()
                .map(|k| (k, b))
                .map_err(|_| bad(KEY, EXPECTED))
        })
        .collect::<PyResult<_>>()?;
    if out.is_empty() {
        return Err(bad(KEY, "non-empty"));
    }
    Ok(out)
}

/// Refuses configured token ids outside the model's vocabulary (`vocab_size` in the settings,
/// when known) before the model runs; decoders check the logits' width again at each step.
pub fn check_vocab(settings: &Bound<'_, PyDict>, config: &PipelineConfig) -> PyResult<()> {
    if let Some(vocab) = settings.get_item("vocab_size")?.filter(|v| !v.is_none()) {
        let vocab: usize = vocab
            .extract()
            .map_err(|_| InvalidArgumentError::new_err("vocab_size: must be a non-negative int"))?;
        config.validate(Some(vocab)).map_err(to_py)?;
    }
    Ok(())
}

pub fn pipeline_config(settings: &Bound<'_, PyDict>) -> PyResult<PipelineConfig> {
    let bad_words_ids = id_lists(settings, "bad_words_ids")?;
    if bad_words_ids.as_ref().is_some_and(Vec::is_empty) {
        return Err(bad(
            "bad_words_ids",
            "a non-empty list of lists of token ids",
        ));
    }
    let decay = match get(settings, "exponential_decay_length_penalty")? {
        None => None,
        Some(v) => Some(v.extract::<(usize, f64)>().map_err(|_| {
            bad(
                "exponential_decay_length_penalty",
                "a (start_index >= 0, decay_factor) pair",
            )
        })?),
    };
    Ok(PipelineConfig {
        eos_token_ids: ids(settings, "eos_token_ids")?,
        min_length: usize_or_zero(settings, "min_length")?,
        min_new_tokens: usize_or_zero(settings, "min_new_tokens")?,
        do_sample: flag(settings, "do_sample")?,
        temperature: float_or(settings, "temperature", 1.0)?,
        top_k: usize_or_zero(settings, "top_k")?,
        top_p: float_or(settings, "top_p", 1.0)?,
        min_p: value::<f64>(settings, "min_p", "a number")?,
        top_h: value::<f64>(settings, "top_h", "a number")?,
        typical_p: float_or(settings, "typical_p", 1.0)?,
        epsilon_cutoff: float_or(settings, "epsilon_cutoff", 0.0)?,
        eta_cutoff: float_or(settings, "eta_cutoff", 0.0)?,
        repetition_penalty: float_or(settings, "repetition_penalty", 1.0)?,
        prompt_ignore_lengths: value::<Vec<usize>>(
            settings,
            "prompt_ignore_lengths",
            "a list of non-negative ints",
        )?
        .unwrap_or_default(),
        encoder_repetition_penalty: float_or(settings, "encoder_repetition_penalty", 1.0)?,
        encoder_input_ids: id_lists(settings, "encoder_input_ids")?.unwrap_or_default(),
        no_repeat_ngram_size: usize_or_zero(settings, "no_repeat_ngram_size")?,
        encoder_no_repeat_ngram_size: usize_or_zero(settings, "encoder_no_repeat_ngram_size")?,
        bad_words_ids: bad_words_ids.unwrap_or_default(),
        sequence_bias: sequence_bias(settings)?,
        forced_bos_token_id: value::<i64>(settings, "forced_bos_token_id", "an int")?,
        forced_eos_token_ids: ids(settings, "forced_eos_token_id")?,
        max_length: value::<usize>(settings, "max_length", "a non-negative int")?,
        remove_invalid_values: flag(settings, "remove_invalid_values")?,
        exponential_decay_length_penalty: decay,
        suppress_tokens: ids(settings, "suppress_tokens")?,
        begin_suppress_tokens: ids(settings, "begin_suppress_tokens")?,
        renormalize_logits: flag(settings, "renormalize_logits")?,
        #[cfg(feature = "grammar")]
        grammar: super::grammar::handle_of(get(settings, "grammar")?)?,
    })
}

/// `seed` (int in [0, 2^64)) and `seed_prompts` (unpadded prompt of every batch entry).
pub fn seed(settings: &Bound<'_, PyDict>) -> PyResult<Option<(u64, Option<Vec<Vec<i64>>>)>> {
    let Some(seed) = value::<u64>(settings, "seed", "an int in [0, 2**64)")? else {
        return Ok(None);
    };
    Ok(Some((seed, id_lists(settings, "seed_prompts")?)))
}

/// `row_seeds`: one seed per batch entry (int in [0, 2^64)), or absent.
pub fn row_seeds(settings: &Bound<'_, PyDict>) -> PyResult<Option<Vec<u64>>> {
    value::<Vec<u64>>(settings, "row_seeds", "a list of ints in [0, 2**64)")
}
