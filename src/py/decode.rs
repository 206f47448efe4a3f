//! Binding of [`crate::decode::Decoder`]: convert, run with the GIL released, convert back.

use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::arrays::{contiguous, contiguous_mut};
use super::errors::{to_py, InvalidArgumentError};
use crate::decode::Decoder as CoreDecoder;
use crate::logits::PipelineConfig;

/// Per-generation decoding state for greedy and sampling strategies.
#[pyclass(module = "ferrogen._core")]
pub struct Decoder {
    inner: CoreDecoder,
}

fn opt_usize(settings: &Bound<'_, PyDict>, key: &'static str) -> PyResult<usize> {
    match settings.get_item(key)? {
        None => Ok(0),
        Some(v) if v.is_none() => Ok(0),
        Some(v) => v
            .extract::<usize>()
            .map_err(|_| InvalidArgumentError::new_err(format!("{key}: must be a non-negative int"))),
    }
}

fn pipeline_config(settings: &Bound<'_, PyDict>) -> PyResult<PipelineConfig> {
    let eos_token_ids = match settings.get_item("eos_token_ids")? {
        None => Vec::new(),
        Some(v) if v.is_none() => Vec::new(),
        Some(v) => v.extract::<Vec<i64>>().map_err(|_| {
            InvalidArgumentError::new_err("eos_token_id: must be an int or a list of ints")
        })?,
    };
    Ok(PipelineConfig {
        eos_token_ids,
        min_length: opt_usize(settings, "min_length")?,
        min_new_tokens: opt_usize(settings, "min_new_tokens")?,
    })
}

#[pymethods]
impl Decoder {
    /// `input_ids`: int64 `[rows, prompt_len]`; `settings`: processor fields of the config.
    #[new]
    fn new(input_ids: PyReadonlyArray2<'_, i64>, settings: &Bound<'_, PyDict>, pad_token_id: i64) -> PyResult<Self> {
        let rows = input_ids.shape()[0];
        let prompts = contiguous("input_ids", &input_ids)?;
        let config = pipeline_config(settings)?;
        let inner = CoreDecoder::new(prompts, rows, &config, pad_token_id).map_err(to_py)?;
        Ok(Decoder { inner })
    }

    /// Processes `logits` (float32 `[rows, vocab]`) in place and returns the chosen tokens.
    fn step_greedy<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &mut self.inner;
        let next = py
            .detach(|| inner.step_greedy(data, vocab).map(<[i64]>::to_vec))
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, next))
    }

    /// Runs the built-in processors over `logits` in place (before user processors).
    fn process(&self, py: Python<'_>, mut logits: PyReadwriteArray2<'_, f32>) -> PyResult<()> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &self.inner;
        py.detach(|| inner.process(data, vocab)).map_err(to_py)
    }

    /// Picks greedily from logits that are already processed.
    fn choose_greedy<'py>(
        &mut self,
        py: Python<'py>,
        logits: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let vocab = logits.shape()[1];
        let data = contiguous("logits", &logits)?;
        let inner = &mut self.inner;
        let next = py
            .detach(|| inner.choose_greedy(data, vocab).map(<[i64]>::to_vec))
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, next))
    }

    /// Marks rows as finished (bool `[rows]`), e.g. from a stopping criterion.
    fn finish_rows(&mut self, done: PyReadonlyArray1<'_, bool>) -> PyResult<()> {
        let done = done
            .as_slice()
            .map_err(|_| InvalidArgumentError::new_err("done: array must be contiguous"))?;
        self.inner.finish_rows(done);
        Ok(())
    }

    /// Bool `[rows]`: rows still generating.
    fn unfinished<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<bool>> {
        PyArray1::from_slice(py, self.inner.unfinished())
    }

    fn all_finished(&self) -> bool {
        self.inner.all_finished()
    }
}

