//! Binding of [`crate::logits::PrefixAllowed`]: a Python callable as the source of each
//! row's allowed tokens. The core calls it with the GIL re-acquired (the pipeline runs
//! with it released); a Python exception is kept and the caller raises it after the step.

use std::sync::{Arc, Mutex};

use numpy::PyArray1;
use pyo3::prelude::*;

use crate::logits::{AllowedTokensSource, PrefixAllowed};

/// `func(batch_id, row)` with `row` an int64 numpy array (the row's whole history), returning
/// the allowed ids as a sequence of ints; the core's rows map to batch entries by
/// `rows_per_batch` (transformers' `num_beams` argument of `PrefixConstrainedLogitsProcessor`).
/// Pass it to `GenerationSettings(prefix_allowed=...)`; call `raise_pending()` after the
/// generation to raise what the callable raised (the rows end at once when it fails).
#[pyclass(module = "ferrogen._core", frozen)]
pub struct PrefixAllowedTokens {
    source: Arc<PyAllowedTokens>,
    rows_per_batch: usize,
}

struct PyAllowedTokens {
    func: Py<PyAny>,
    failure: Mutex<Option<PyErr>>,
}

impl PyAllowedTokens {
    fn failure(&self) -> std::sync::MutexGuard<'_, Option<PyErr>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AllowedTokensSource for PyAllowedTokens {
    fn allowed(&self, batch_id: usize, row: &[i64]) -> Option<Vec<i64>> {
        if self.failure().is_some() {
            return None;
        }
        Python::attach(|py| {
            let answer = self
                .func
                .call1(py, (batch_id, PyArray1::from_slice(py, row)))
                .and_then(|ids| ids.extract::<Vec<i64>>(py));
            match answer {
                Ok(ids) => Some(ids),
                Err(err) => {
                    *self.failure() = Some(err);
                    None
                }
            }
        })
    }

    fn fail(&self, message: String) {
        let mut failure = self.failure();
        if failure.is_none() {
            *failure = Some(pyo3::exceptions::PyValueError::new_err(message));
        }
    }
}

#[pymethods]
impl PrefixAllowedTokens {
    #[new]
    fn new(func: Py<PyAny>, rows_per_batch: super::ints::Int<usize>) -> PyResult<Self> {
        let rows_per_batch = super::ints::Named::arg(rows_per_batch, "rows_per_batch")?;
        if rows_per_batch == 0 {
            return Err(super::errors::InvalidArgumentError::new_err(
                "rows_per_batch: must be >= 1",
            ));
        }
        Ok(PrefixAllowedTokens {
            source: Arc::new(PyAllowedTokens {
                func,
                failure: Mutex::new(None),
            }),
            rows_per_batch,
        })
    }

    /// Raises what the callable raised (or what was wrong with its answer), once.
    fn raise_pending(&self) -> PyResult<()> {
        match self.source.failure().take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// The `prefix_allowed` setting: a `PrefixAllowedTokens` or None.
pub(crate) fn prefix_of(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<PrefixAllowed>> {
    let Some(value) = value else { return Ok(None) };
    match value.extract::<PyRef<'_, PrefixAllowedTokens>>() {
        Ok(p) => Ok(Some(PrefixAllowed {
            source: p.source.clone(),
            rows_per_batch: p.rows_per_batch,
            first_row: 0,
        })),
        Err(_) => Err(super::errors::InvalidArgumentError::new_err(
            "prefix_allowed: must be a ferrogen._core.PrefixAllowedTokens",
        )),
    }
}
