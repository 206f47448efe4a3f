//! Binding of [`crate::beam::TorchExponential`] alone: the check that this torch's
//! `exponential_()` is the stream the core reproduces, and the tests' window on it.

use numpy::{PyArray1, PyReadwriteArray1};
use pyo3::prelude::*;

use super::arrays::contiguous_mut1;
use super::errors::to_py;
use super::ints::{Int, Named};
use crate::beam::TorchExponential;

/// `torch.empty(n).exponential_()` from `torch_rng_state` (`torch.get_rng_state().numpy()`,
/// advanced in place past the draws): float32 `[n]`.
#[pyfunction]
pub fn torch_exponential<'py>(
    py: Python<'py>,
    mut torch_rng_state: PyReadwriteArray1<'py, u8>,
    n: Int<usize>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let n = n.arg("n")?;
    let state = contiguous_mut1("torch_rng_state", &mut torch_rng_state)?;
    let draws = py
        .detach(|| {
            TorchExponential::check_len("n", n)?;
            let mut out = crate::buffers::filled("n", n, 0.0f32)?;
            let mut noise = TorchExponential::default();
            noise.draw(state, n)?;
            noise.fill(0, &mut out, &mut Vec::new())?;
            Ok::<_, crate::error::CoreError>(out)
        })
        .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, draws))
}
