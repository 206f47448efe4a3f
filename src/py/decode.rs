//! Binding of [`crate::decode::Decoder`]: convert, run with the GIL released, convert back.

use numpy::{
    PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use super::arrays::{contiguous, contiguous1, contiguous_mut};
use super::errors::to_py;
use super::row_status::row_status_binding;
use super::settings::GenerationSettings;
use crate::decode::Decoder as CoreDecoder;

/// Per-generation decoding state for greedy and sampling strategies.
#[pyclass(module = "ferrogen._core")]
pub struct Decoder {
    inner: CoreDecoder,
}

type Step = for<'a, 'b> fn(&'a mut CoreDecoder, &'b mut [f32], usize) -> crate::Result<&'a [i64]>;

impl Decoder {
    /// Runs `step` on `logits` (float32 `[rows, vocab]`, modified in place) without the GIL.
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray2<'py, f32>,
        step: Step,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &mut self.inner;
        let next = py
            .detach(|| step(inner, data, vocab).map(<[i64]>::to_vec))
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, next))
    }
}

/// The row indices in `rows` (int64), refused when one is negative.
fn row_indices(name: &str, rows: &PyReadonlyArray1<'_, i64>) -> PyResult<Vec<usize>> {
    let given = contiguous1(name, rows)?;
    given
        .iter()
        .map(|&r| {
            usize::try_from(r).map_err(|_| {
                pyo3::exceptions::PyValueError::new_err(format!("{name}: negative row index {r}"))
            })
        })
        .collect()
}

row_status_binding!(Decoder, {
    /// `input_ids`: int64 `[rows, prompt_len]`; `settings`: this generation's settings
    /// (its seed, `seed_prompts` and `row_seeds` key the sampled rows).
    #[new]
    fn new(input_ids: PyReadonlyArray2<'_, i64>, settings: &GenerationSettings) -> PyResult<Self> {
        let rows = input_ids.shape()[0];
        let prompts = contiguous("input_ids", &input_ids)?;
        let core = &settings.inner;
        let mut inner = CoreDecoder::new(prompts, rows, &core.pipeline, core.beam.pad_token_id)
            .map_err(to_py)?;
        if let Some(seed) = core.seed {
            let key_prompts = settings.key_prompts(prompts, input_ids.shape()[1]);
            inner = match &settings.row_seeds {
                Some(seeds) => inner.seeded_rows(seeds, &key_prompts),
                None => inner.seeded(seed, &key_prompts),
            }
            .map_err(to_py)?;
        }
        Ok(Decoder { inner })
    }

    /// Processors, renormalisation and argmax in one pass; `logits` is processed in place.
    fn step_greedy<'py>(
        &mut self,
        py: Python<'py>,
        logits: PyReadwriteArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        self.run(py, logits, CoreDecoder::step_greedy)
    }

    /// Processors, warpers and the seeded draw in one pass; `logits` is processed in place.
    fn step_sample<'py>(
        &mut self,
        py: Python<'py>,
        logits: PyReadwriteArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        self.run(py, logits, CoreDecoder::step_sample)
    }

    /// Keeps only the rows `rows` (int64, strictly increasing indices of the current rows):
    /// a batch engine drops finished rows; the kept rows go on as if nothing was dropped.
    fn keep_rows(&mut self, rows: PyReadonlyArray1<'_, i64>) -> PyResult<()> {
        let kept = row_indices("rows", &rows)?;
        self.inner.keep_rows(&kept).map_err(to_py)
    }

    /// Writes rows `source_rows` of `source` (int64; a core built from the same settings for
    /// a group of prefilled prompts, left unchanged) into rows `slots` (int64, distinct, one
    /// per source row): a batch engine refills the rows of finished prompts in place; every
    /// other row goes on as before.
    fn replace_rows(
        &mut self,
        slots: PyReadonlyArray1<'_, i64>,
        source: &Decoder,
        source_rows: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<()> {
        let slots = row_indices("slots", &slots)?;
        let source_rows = row_indices("source_rows", &source_rows)?;
        self.inner
            .replace_rows(&slots, &source.inner, &source_rows)
            .map_err(to_py)
    }

    /// Why these rows cannot be merged with others (`replace_rows`), or None when they can.
    fn merge_refusal(&self) -> Option<&'static str> {
        self.inner.merge_refusal()
    }

    /// Runs the built-in processors over `logits` in place (before user processors).
    fn process(&self, py: Python<'_>, mut logits: PyReadwriteArray2<'_, f32>) -> PyResult<()> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &self.inner;
        py.detach(|| inner.process(data, vocab)).map_err(to_py)
    }

    /// After user processors: renormalisation (if configured) then argmax, in place.
    fn choose_greedy<'py>(
        &mut self,
        py: Python<'py>,
        logits: PyReadwriteArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        fn warp_then_choose<'a>(
            d: &'a mut CoreDecoder,
            data: &mut [f32],
            vocab: usize,
        ) -> crate::Result<&'a [i64]> {
            d.warp(data, vocab)?;
            d.choose_greedy(data, vocab)
        }
        self.run(py, logits, warp_then_choose)
    }

    /// After user processors: warpers then the seeded draw, in place.
    fn choose_sample<'py>(
        &mut self,
        py: Python<'py>,
        logits: PyReadwriteArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        self.run(py, logits, CoreDecoder::choose_sample)
    }
});
