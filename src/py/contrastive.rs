//! Binding of [`crate::contrastive::ContrastiveSearch`]: convert, run with the GIL
//! released, convert back.

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyReadonlyArray3, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use super::arrays::{contiguous, contiguous_mut};
use super::errors::{to_py, ShapeError};
use super::ints::{Int, Named};
use super::row_status::row_status_binding;
use super::settings::GenerationSettings;
use crate::contrastive::ContrastiveSearch as Core;

/// Per-generation state of contrastive search: history, processors and the scorer.
#[pyclass(module = "ferrogen._core")]
pub struct ContrastiveSearch {
    inner: Core,
}

/// An int64 `[rows]` array handed back to Python.
type Ints<'py> = Bound<'py, PyArray1<i64>>;

fn candidates_array<'py>(
    py: Python<'py>,
    ids: Vec<i64>,
    rows: usize,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let k = ids.len() / rows.max(1);
    PyArray1::from_vec(py, ids).reshape([rows, k])
}

row_status_binding!(ContrastiveSearch, {
    /// `input_ids`: int64 `[rows, prompt_len]` (the decoder's history so far); `settings`:
    /// this generation's settings; `top_k` candidates per step, `penalty_alpha` weight of
    /// the degeneration penalty.
    #[new]
    fn new(
        input_ids: PyReadonlyArray2<'_, i64>,
        settings: &GenerationSettings,
        top_k: Int<usize>,
        penalty_alpha: f32,
    ) -> PyResult<Self> {
        let top_k = top_k.arg("top_k")?;
        let rows = input_ids.shape()[0];
        let prompts = contiguous("input_ids", &input_ids)?;
        let config = &settings.inner.pipeline;
        let pad_token_id = settings.inner.beam.pad_token_id;
        let inner =
            Core::new(prompts, rows, config, pad_token_id, top_k, penalty_alpha).map_err(to_py)?;
        Ok(ContrastiveSearch { inner })
    }

    /// Adds hidden states (float32 `[rows, positions, hidden]`) to every row's context;
    /// positions where `keep` (bool `[rows, positions]`) is false are padding and left out.
    #[pyo3(signature = (hidden, keep = None))]
    fn add_context(
        &mut self,
        py: Python<'_>,
        hidden: PyReadonlyArray3<'_, f32>,
        keep: Option<PyReadonlyArray2<'_, bool>>,
    ) -> PyResult<()> {
        let [_, positions, size] = [hidden.shape()[0], hidden.shape()[1], hidden.shape()[2]];
        let data = hidden
            .as_slice()
            .map_err(|_| ShapeError::new_err("hidden_states: array must be C-contiguous"))?;
        let keep = match &keep {
            Some(k) => Some(contiguous("attention_mask", k)?),
            None => None,
        };
        let inner = &mut self.inner;
        py.detach(|| inner.add_context(data, positions, size, keep))
            .map_err(to_py)
    }

    /// Processors (and renormalisation) in place, then the `top_k` candidates of every
    /// row: int64 `[rows, top_k]`, best first.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let (rows, vocab) = (logits.shape()[0], logits.shape()[1]);
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &mut self.inner;
        let ids = py
            .detach(|| inner.step(data, vocab).map(<[i64]>::to_vec))
            .map_err(to_py)?;
        candidates_array(py, ids, rows)
    }

    /// Runs the built-in processors over `logits` in place (before user processors).
    fn process(&self, py: Python<'_>, mut logits: PyReadwriteArray2<'_, f32>) -> PyResult<()> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &self.inner;
        py.detach(|| inner.process(data, vocab)).map_err(to_py)
    }

    /// After user processors: renormalisation (if configured) in place, then the candidates.
    fn choose<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let (rows, vocab) = (logits.shape()[0], logits.shape()[1]);
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &mut self.inner;
        let ids = py
            .detach(|| {
                inner.warp(data, vocab)?;
                inner.candidates(data, vocab).map(<[i64]>::to_vec)
            })
            .map_err(to_py)?;
        candidates_array(py, ids, rows)
    }

    /// Scores the candidates from their last hidden states (float32 `[rows * top_k, hidden]`),
    /// commits the winners and returns `(tokens, chosen)`: int64 `[rows]` each, the token
    /// appended to every row (pad for finished rows) and the winner's index within `top_k`.
    fn select<'py>(
        &mut self,
        py: Python<'py>,
        hidden: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<(Ints<'py>, Ints<'py>)> {
        let data = contiguous("candidate_hidden_states", &hidden)?;
        let inner = &mut self.inner;
        let (tokens, chosen) = py
            .detach(|| {
                inner.select(data).map(|(t, c)| {
                    (
                        t.to_vec(),
                        c.into_iter().map(|c| c as i64).collect::<Vec<_>>(),
                    )
                })
            })
            .map_err(to_py)?;
        Ok((
            PyArray1::from_vec(py, tokens),
            PyArray1::from_vec(py, chosen),
        ))
    }
});
