//! Binding of [`crate::assisted::AssistedDecoder`]: convert, run with the GIL released,
//! convert back.

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2,
    PyReadwriteArray3, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use super::arrays::{contiguous, contiguous1, contiguous_mut};
use super::errors::{to_py, InvalidArgumentError, ShapeError};
use super::ints::{Int, Named};
use super::row_status::row_status_binding;
use super::settings::GenerationSettings;
use crate::assisted::{AssistedDecoder as Core, Verdict};
use crate::rng;

/// Per-generation state of assisted decoding: every row's history and drafts.
#[pyclass(module = "ferrogen._core")]
pub struct AssistedDecoder {
    inner: Core,
}

/// int64 `[rows]` and `[rows, n]` arrays handed back to Python.
type Ints<'py> = Bound<'py, PyArray1<i64>>;
type IntGrid<'py> = Bound<'py, PyArray2<i64>>;

fn int_array<'py>(
    py: Python<'py>,
    values: Vec<i64>,
    rows: usize,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let width = values.len().checked_div(rows).unwrap_or(0);
    PyArray1::from_vec(py, values).reshape([rows, width])
}

fn lengths<'py>(
    py: Python<'py>,
    values: impl IntoIterator<Item = usize>,
) -> Bound<'py, PyArray1<i64>> {
    PyArray1::from_vec(py, values.into_iter().map(|v| v as i64).collect())
}

row_status_binding!(AssistedDecoder, {
    /// `input_ids`: int64 `[rows, prompt_len]` (the decoder's history so far, padding
    /// included); `starts`: int64 `[rows]`, each row's first non-padding position;
    /// `settings`: this generation's settings (a seed is required when sampling); rows stop
    /// at its `max_length` tokens.
    #[new]
    fn new(
        input_ids: PyReadonlyArray2<'_, i64>,
        starts: PyReadonlyArray1<'_, i64>,
        settings: &GenerationSettings,
    ) -> PyResult<Self> {
        let (rows, width) = (input_ids.shape()[0], input_ids.shape()[1]);
        let prompts = contiguous("input_ids", &input_ids)?;
        let starts: Vec<usize> = contiguous1("starts", &starts)?
            .iter()
            .map(|&s| {
                usize::try_from(s).map_err(|_| {
                    InvalidArgumentError::new_err(format!("starts: must be >= 0, got {s}"))
                })
            })
            .collect::<PyResult<_>>()?;
        let core = &settings.inner;
        let config = &core.pipeline;
        let keys = match core.seed {
            Some(seed) if config.do_sample => {
                let key_prompts = settings.key_prompts(prompts, width);
                if key_prompts.is_empty() || rows % key_prompts.len() != 0 {
                    return Err(ShapeError::new_err(format!(
                        "seed_prompts: {} prompts do not divide {rows} rows",
                        key_prompts.len()
                    )));
                }
                rng::row_keys(seed, &key_prompts, rows / key_prompts.len())
            }
            _ if config.do_sample => {
                return Err(InvalidArgumentError::new_err(
                    "seed: required when sampling",
                ))
            }
            _ => Vec::new(),
        };
        let inner = Core::new(
            prompts,
            rows,
            &starts,
            config,
            core.beam.pad_token_id,
            core.beam.max_length,
            &keys,
        )
        .map_err(to_py)?;
        Ok(AssistedDecoder { inner })
    }

    /// Starts a drafting round.
    fn begin_round(&mut self) {
        self.inner.begin_round();
    }

    /// Whether any row still takes drafts this round.
    fn any_open(&self) -> bool {
        self.inner.any_open()
    }

    /// One drafting step from the draft model's logits (float32 `[rows, vocab]`, processed
    /// in place); returns int64 `[rows]`, the token to feed the draft model next.
    #[pyo3(signature = (logits, confidence = 0.0))]
    fn draft<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray2<'py, f32>,
        confidence: f32,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("draft_logits", &mut logits)?;
        let inner = &mut self.inner;
        let tokens = py
            .detach(|| inner.draft(data, vocab, confidence))
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, tokens))
    }

    /// Drafts every active row from its own n-grams (prompt lookup).
    fn lookup_drafts(
        &mut self,
        py: Python<'_>,
        max_matching_ngram_size: Int<usize>,
        prompt_lookup_num_tokens: Int<usize>,
    ) -> PyResult<()> {
        let max_matching_ngram_size = max_matching_ngram_size.arg("max_matching_ngram_size")?;
        let prompt_lookup_num_tokens = prompt_lookup_num_tokens.arg("prompt_lookup_num_tokens")?;
        let inner = &mut self.inner;
        py.detach(|| inner.lookup_drafts(max_matching_ngram_size, prompt_lookup_num_tokens))
            .map_err(to_py)
    }

    /// `(drafts, counts)`: int64 `[rows, width]` right-padded with pad, int64 `[rows]`.
    fn drafts<'py>(&self, py: Python<'py>) -> PyResult<(IntGrid<'py>, Ints<'py>)> {
        let (drafts, _, counts) = self.inner.drafts();
        Ok((
            int_array(py, drafts, self.inner.n_rows())?,
            lengths(py, counts),
        ))
    }

    /// Verifies the drafts from the main model's logits (float32 `[rows, width + 1, vocab]`,
    /// processed in place) and commits; with `lockstep`, rows that go on all commit the same
    /// number of tokens. Returns `(emitted, n_emitted, n_accepted)`: int64 `[rows, width + 1]`
    /// right-padded with pad, and int64 `[rows]` twice.
    #[pyo3(signature = (logits, lockstep = false))]
    fn verify<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray3<'py, f32>,
        lockstep: bool,
    ) -> PyResult<(IntGrid<'py>, Ints<'py>, Ints<'py>)> {
        let (positions, vocab) = (logits.shape()[1], logits.shape()[2]);
        let data = logits
            .as_slice_mut()
            .map_err(|_| ShapeError::new_err("logits: array must be C-contiguous"))?;
        let inner = &mut self.inner;
        let verdicts: Vec<Verdict> = py
            .detach(|| inner.verify(data, vocab, lockstep))
            .map_err(to_py)?;
        let rows = verdicts.len();
        let mut emitted = vec![self.inner.pad(); rows * positions];
        for (r, v) in verdicts.iter().enumerate() {
            emitted[r * positions..r * positions + v.emitted.len()].copy_from_slice(&v.emitted);
        }
        Ok((
            int_array(py, emitted, rows)?,
            lengths(py, verdicts.iter().map(|v| v.emitted.len())),
            lengths(py, verdicts.iter().map(|v| v.accepted)),
        ))
    }

    /// Int64 `[rows, n]`: the last `n` tokens of every row.
    fn tails<'py>(&self, py: Python<'py>, n: Int<usize>) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let tails = self.inner.tails(n.arg("n")?).map_err(to_py)?;
        int_array(py, tails, self.inner.n_rows())
    }

    /// Int64 `[rows]`: every row's length (prompt included).
    fn lengths<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        lengths(py, self.inner.lengths())
    }

    /// Int64 `[rows, longest]`: every row right-padded with pad.
    fn sequences<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let (values, _) = self.inner.sequences();
        int_array(py, values, self.inner.n_rows())
    }

    /// Bool `[rows]`: rows that can still grow (unfinished, below max_length).
    fn active<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<bool>> {
        PyArray1::from_vec(py, self.inner.active())
    }

    fn any_active(&self) -> bool {
        self.inner.any_active()
    }

    /// Cuts rows longer than `lengths` (int64 `[rows]`) back to it.
    fn truncate(&mut self, lengths: PyReadonlyArray1<'_, i64>) -> PyResult<()> {
        let lengths = contiguous1("lengths", &lengths)?
            .iter()
            .map(|&n| {
                usize::try_from(n).map_err(|_| {
                    InvalidArgumentError::new_err(format!("lengths: must be >= 0, got {n}"))
                })
            })
            .collect::<PyResult<Vec<usize>>>()?;
        self.inner.truncate(&lengths).map_err(to_py)
    }
});
