//! Bindings of SynthID watermarking: its settings from transformers'
//! `SynthIDTextWatermarkingConfig` (or its dict), and the detector's inputs (g-values and
//! masks). Conversion only: the arithmetic is `crate::logits::synthid`.

use numpy::{PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::arrays::contiguous;
use super::errors::to_py;
use super::ints::{Int, Named};
use crate::error::CoreError;
use crate::logits::{eos_token_mask, SynthIdHash, SynthIdSpec};

/// Whether a `watermarking_config` value is SynthID's (transformers tells the two
/// configs apart by `ngram_len`, as here).
pub(crate) fn is_synthid(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    match value.cast::<PyDict>() {
        Ok(d) => d.contains("ngram_len"),
        Err(_) => value.hasattr("ngram_len"),
    }
}

/// Field `key` of the config (attribute) or dict; `default` when absent or `None`, an error
/// naming `full` when required and absent or of the wrong type (`what` says the type).
fn field<'py, T: for<'a> FromPyObject<'a, 'py>>(
    value: &Bound<'py, PyAny>,
    (key, full, what): (&str, &'static str, &str),
    default: Option<T>,
) -> PyResult<T> {
    let got = match value.cast::<PyDict>() {
        Ok(d) => d.get_item(key)?,
        Err(_) => value.getattr(key).ok(),
    };
    match (got.filter(|v| !v.is_none()), default) {
        (Some(v), _) => v
            .extract::<T>()
            .map_err(|_| to_py(CoreError::invalid(full, format!("must be {what}, got {v}")))),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(to_py(CoreError::invalid(full, "is required"))),
    }
}

const INT: &str = "an integer";
const BOOL: &str = "a bool";

/// A `SynthIDTextWatermarkingConfig` (or dict) as the core's spec, unchecked.
pub(crate) fn spec_of(value: &Bound<'_, PyAny>) -> PyResult<SynthIdSpec> {
    Ok(SynthIdSpec {
        ngram_len: field(
            value,
            ("ngram_len", "watermarking_config.ngram_len", INT),
            None,
        )?,
        keys: field(
            value,
            (
                "keys",
                "watermarking_config.keys",
                "a list of int64 integers",
            ),
            None,
        )?,
        sampling_table_size: field(
            value,
            (
                "sampling_table_size",
                "watermarking_config.sampling_table_size",
                INT,
            ),
            Some(1i64 << 16),
        )?,
        sampling_table_seed: field(
            value,
            (
                "sampling_table_seed",
                "watermarking_config.sampling_table_seed",
                INT,
            ),
            Some(0i128),
        )?,
        context_history_size: field(
            value,
            (
                "context_history_size",
                "watermarking_config.context_history_size",
                INT,
            ),
            Some(1024i64),
        )?,
        skip_first_ngram_calls: field(
            value,
            (
                "skip_first_ngram_calls",
                "watermarking_config.skip_first_ngram_calls",
                BOOL,
            ),
            Some(false),
        )?,
        debug_mode: field(
            value,
            ("debug_mode", "watermarking_config.debug_mode", BOOL),
            Some(false),
        )?,
    })
}

/// The config's `watermarking_config` when it is SynthID's, checked; `None` otherwise.
pub(crate) fn synthid_of(config: &Bound<'_, PyAny>) -> PyResult<Option<SynthIdSpec>> {
    let value = match config.getattr("watermarking_config") {
        Ok(v) if !v.is_none() => v,
        _ => return Ok(None),
    };
    if !is_synthid(&value)? {
        return Ok(None);
    }
    let spec = spec_of(&value)?;
    spec.validate().map_err(to_py)?;
    Ok(Some(spec))
}

fn hash_of(watermarking_config: &Bound<'_, PyAny>) -> PyResult<SynthIdHash> {
    SynthIdHash::new(&spec_of(watermarking_config)?).map_err(to_py)
}

/// What every SynthID binding reads from `input_ids` (`[rows, length]`): its C-contiguous
/// data, rows and length.
fn id_rows<'a>(input_ids: &'a PyReadonlyArray2<'_, i64>) -> PyResult<(&'a [i64], usize, usize)> {
    let ids = contiguous("input_ids", input_ids)?;
    Ok((ids, input_ids.shape()[0], input_ids.shape()[1]))
}

/// transformers' `SynthIDTextWatermarkLogitsProcessor.compute_g_values`: int64
/// `[rows, length - ngram_len + 1, depth]`.
#[pyfunction]
pub fn synthid_g_values<'py>(
    py: Python<'py>,
    watermarking_config: &Bound<'py, PyAny>,
    input_ids: PyReadonlyArray2<'py, i64>,
) -> PyResult<Bound<'py, PyArray3<i64>>> {
    let hash = hash_of(watermarking_config)?;
    let (ids, rows, _) = id_rows(&input_ids)?;
    let (g, positions) = py.detach(|| hash.g_values(ids, rows)).map_err(to_py)?;
    let wide: Vec<i64> = g.into_iter().map(i64::from).collect();
    numpy::PyArray1::from_vec(py, wide).reshape([rows, positions, hash.depth()])
}

/// transformers' `compute_context_repetition_mask`: bool `[rows, length - ngram_len + 1]`,
/// false where the context repeats.
#[pyfunction]
pub fn synthid_context_repetition_mask<'py>(
    py: Python<'py>,
    watermarking_config: &Bound<'py, PyAny>,
    input_ids: PyReadonlyArray2<'py, i64>,
) -> PyResult<Bound<'py, PyArray2<bool>>> {
    let hash = hash_of(watermarking_config)?;
    let (ids, rows, _) = id_rows(&input_ids)?;
    let (mask, positions) = py
        .detach(|| hash.context_repetition_mask(ids, rows))
        .map_err(to_py)?;
    numpy::PyArray1::from_vec(py, mask).reshape([rows, positions])
}

/// transformers' `compute_eos_token_mask`: bool `[rows, length]`, false from each row's
/// first `eos_token_id` on.
#[pyfunction]
pub fn synthid_eos_token_mask<'py>(
    py: Python<'py>,
    input_ids: PyReadonlyArray2<'py, i64>,
    eos_token_id: Int<i64>,
) -> PyResult<Bound<'py, PyArray2<bool>>> {
    let eos_token_id = eos_token_id.arg("eos_token_id")?;
    let (ids, rows, len) = id_rows(&input_ids)?;
    let mask = eos_token_mask(ids, rows, eos_token_id).map_err(to_py)?;
    numpy::PyArray1::from_vec(py, mask).reshape([rows, len])
}
