//! Bindings of classifier-free guidance and of the watermark settings: conversion only
//! (the arithmetic is `crate::logits::apply_guidance`, the watermark `crate::logits::watermark`).

use numpy::{PyReadonlyArray2, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::arrays::{contiguous, contiguous_mut};
use super::errors::{to_py, ShapeError};
use crate::error::CoreError;
use crate::logits::{SeedingScheme, WatermarkSpec};

/// Classifier-free guidance in place: `logits` (float32 `[rows, vocab]`) becomes
/// `scale * (log_softmax(logits) - log_softmax(uncond)) + log_softmax(uncond)`, as
/// transformers' `UnbatchedClassifierFreeGuidanceLogitsProcessor`; `uncond` has `rows`
/// rows or one shared row.
#[pyfunction]
pub fn apply_guidance(
    py: Python<'_>,
    mut logits: PyReadwriteArray2<'_, f32>,
    uncond: PyReadonlyArray2<'_, f32>,
    scale: f64,
) -> PyResult<()> {
    let vocab = logits.shape()[1];
    if uncond.shape()[1] != vocab {
        return Err(ShapeError::new_err(format!(
            "unconditional logits: {} columns, the logits have {vocab}",
            uncond.shape()[1]
        )));
    }
    let u = contiguous("unconditional logits", &uncond)?;
    let data = contiguous_mut("logits", &mut logits)?;
    if data.is_empty() {
        return Ok(());
    }
    py.detach(|| crate::logits::apply_guidance(data, u, vocab, scale))
        .map_err(to_py)
}

/// One field of a `WatermarkingConfig` (attribute) or of a dict (key), else `default`.
fn field<'py, T: for<'a> FromPyObject<'a, 'py>>(
    value: &Bound<'py, PyAny>,
    name: &'static str,
    default: T,
) -> PyResult<T> {
    let got = match value.cast::<PyDict>() {
        Ok(d) => d.get_item(name)?,
        Err(_) => value.getattr(name).ok(),
    };
    match got {
        Some(v) if !v.is_none() => v.extract::<T>().map_err(|_| {
            to_py(CoreError::invalid(
                name,
                format!("watermarking_config.{name}: has the wrong type"),
            ))
        }),
        _ => Ok(default),
    }
}

/// The config's `watermarking_config` (transformers' `WatermarkingConfig` or its dict) as
/// the core's spec; `None` when unset. `vocab_size` is the model's (0: the logits' width).
/// A SynthID config gives `None`.
pub(crate) fn watermark_of(
    config: &Bound<'_, PyAny>,
    vocab_size: Option<usize>,
) -> PyResult<Option<WatermarkSpec>> {
    let value = match config.getattr("watermarking_config") {
        Ok(v) if !v.is_none() => v,
        _ => return Ok(None),
    };
    if super::synthid::is_synthid(&value)? {
        // SynthID's config: `super::synthid::synthid_of` reads it.
        return Ok(None);
    }
    let scheme: String = field(&value, "seeding_scheme", "lefthash".to_string())?;
    let seeding_scheme = match scheme.as_str() {
        "lefthash" => SeedingScheme::LeftHash,
        "selfhash" => SeedingScheme::SelfHash,
        other => {
            return Err(to_py(CoreError::invalid(
                "watermarking_config",
                format!("seeding_scheme must be 'lefthash' or 'selfhash', got {other:?}"),
            )))
        }
    };
    Ok(Some(WatermarkSpec {
        vocab_size: vocab_size.unwrap_or(0),
        greenlist_ratio: field(&value, "greenlist_ratio", 0.25)?,
        bias: field(&value, "bias", 2.0)?,
        hashing_key: field(&value, "hashing_key", 15_485_863i64)?,
        seeding_scheme,
        context_width: field(&value, "context_width", 1usize)?,
    }))
}
