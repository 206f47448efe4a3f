//! Binding of the standalone pipeline (`ferrogen.LogitsPipeline`): the processors and
//! warpers of a config applied to any `(input_ids, logits)`, outside `generate`.

use numpy::{PyArray1, PyReadonlyArray2, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::arrays::{contiguous, contiguous_mut};
use super::errors::{to_py, InvalidArgumentError, ShapeError};
use super::ints::{Int, Named};
use super::settings::GenerationSettings;
use crate::history::TokenHistory;
use crate::logits::{LogitsMut, Pipeline, PipelineConfig, StepContext};
use crate::rng;
use crate::sampling::draw;

/// The processors and warpers of one config, composed once.
#[pyclass(module = "ferrogen._core", name = "LogitsPipeline")]
pub struct LogitsPipelineCore {
    /// Tokens of each row that are prompt (the rest were generated: presence penalties).
    prompt_length: usize,
    config: PipelineConfig,
    processors: Pipeline,
    warpers: Pipeline,
    full: Pipeline,
}

impl LogitsPipelineCore {
    fn part(&self, part: &str) -> PyResult<&Pipeline> {
        match part {
            "all" => Ok(&self.full),
            "processors" => Ok(&self.processors),
            "warpers" => Ok(&self.warpers),
            other => Err(InvalidArgumentError::new_err(format!(
                "part: must be 'all', 'processors' or 'warpers', got {other:?}"
            ))),
        }
    }
}

fn shapes(
    ids: &PyReadonlyArray2<'_, i64>,
    logits: &PyReadwriteArray2<'_, f32>,
) -> PyResult<(usize, usize)> {
    let rows = logits.shape()[0];
    let vocab = logits.shape()[1];
    if ids.shape()[0] != rows {
        return Err(ShapeError::new_err(format!(
            "input_ids: has {} rows but logits has {rows}",
            ids.shape()[0]
        )));
    }
    Ok((rows, vocab))
}

#[pymethods]
impl LogitsPipelineCore {
    /// `settings`: the processor settings (checked when they were built); `prompt_length`:
    /// length of the prompt (for min_new_tokens, begin_suppress_tokens, exponential decay);
    /// `min_tokens_to_keep`: for the warpers (beam sampling uses 1 + number of EOS).
    #[new]
    // The defaults are not literals: the text signature states them for `inspect` and stubtest.
    #[pyo3(
        signature = (settings, prompt_length = Int::from(0), min_tokens_to_keep = Int::from(1)),
        text_signature = "(settings, prompt_length=0, min_tokens_to_keep=1)"
    )]
    fn new(
        settings: &GenerationSettings,
        prompt_length: Int<usize>,
        min_tokens_to_keep: Int<usize>,
    ) -> PyResult<Self> {
        let prompt_length = prompt_length.arg("prompt_length")?;
        let min_tokens_to_keep = min_tokens_to_keep.arg("min_tokens_to_keep")?;
        let config = settings.inner.pipeline.clone();
        if min_tokens_to_keep == 0 {
            return Err(InvalidArgumentError::new_err(
                "min_tokens_to_keep: must be >= 1, got 0",
            ));
        }
        let processors = config.build_processors(prompt_length);
        let warpers = config.build_warpers(min_tokens_to_keep);
        let mut full = processors.clone();
        full.extend(&warpers);
        Ok(LogitsPipelineCore {
            prompt_length,
            config,
            processors,
            warpers,
            full,
        })
    }

    /// Names of the stages in order of application (transformers' class names).
    #[pyo3(signature = (part = "all"))]
    fn names(&self, part: &str) -> PyResult<Vec<&'static str>> {
        Ok(self.part(part)?.names())
    }

    /// Processes `logits` (float32 `[rows, vocab]`, C-contiguous) in place given the
    /// rows' token history `input_ids` (int64 `[rows, length]`).
    #[pyo3(signature = (input_ids, logits, part = "all"))]
    fn process(
        &self,
        py: Python<'_>,
        input_ids: PyReadonlyArray2<'_, i64>,
        mut logits: PyReadwriteArray2<'_, f32>,
        part: &str,
    ) -> PyResult<()> {
        let pipeline = self.part(part)?;
        let (rows, vocab) = shapes(&input_ids, &logits)?;
        let ids = contiguous("input_ids", &input_ids)?;
        let data = contiguous_mut("logits", &mut logits)?;
        let config = &self.config;
        py.detach(|| {
            if rows == 0 {
                return Ok(());
            }
            config.validate(Some(vocab))?;
            config.validate_rows(rows)?;
            if vocab == 0 {
                return Ok(());
            }
            let history = TokenHistory::with_prompt_len(ids, rows, self.prompt_length);
            pipeline.process(
                &StepContext::new(&history),
                &mut LogitsMut::new(data, vocab),
            );
            Ok(())
        })
        .map_err(to_py)
    }

    /// Processes `logits` in place (whole pipeline) and draws one token per row.
    ///
    /// Row `r`'s draw depends only on `seed`, the first `key_length` tokens of its row
    /// (all of them by default), how many earlier rows share those tokens, and the
    /// row's length (the step): never on the other rows or on threads.
    #[pyo3(signature = (input_ids, logits, seed, key_length = None))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        input_ids: PyReadonlyArray2<'py, i64>,
        mut logits: PyReadwriteArray2<'py, f32>,
        seed: Int<u64>,
        key_length: Option<Int<usize>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let (seed, key_length) = (seed.arg("seed")?, key_length.arg("key_length")?);
        let (rows, vocab) = shapes(&input_ids, &logits)?;
        let width = input_ids.shape()[1];
        let ids = contiguous("input_ids", &input_ids)?;
        let data = contiguous_mut("logits", &mut logits)?;
        let config = &self.config;
        let pipeline = &self.full;
        let tokens = py
            .detach(|| -> crate::Result<Vec<i64>> {
                if rows == 0 {
                    return Ok(Vec::new());
                }
                config.validate(Some(vocab))?;
                config.validate_rows(rows)?;
                if vocab == 0 {
                    return Err(crate::CoreError::NoValidToken { row: 0 });
                }
                let keep = key_length.unwrap_or(width).min(width);
                let prompts: Vec<Vec<i64>> = (0..rows)
                    .map(|r| ids[r * width..r * width + keep].to_vec())
                    .collect();
                let keys = rng::row_keys(seed, &prompts, 1);
                let history = TokenHistory::with_prompt_len(ids, rows, self.prompt_length);
                let step = width as u64;
                pipeline
                    .process_then(
                        &StepContext::with_keys(&history, &keys),
                        &mut LogitsMut::new(data, vocab),
                        |r, row, s| {
                            let cand = s.sparse.then_some(s.cand.as_slice());
                            draw(row, cand, rng::uniform(keys[r], step))
                                .map(|t| t as i64)
                                .ok_or(crate::CoreError::NoValidToken { row: r })
                        },
                    )
                    .into_iter()
                    .collect()
            })
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, tokens))
    }
}
