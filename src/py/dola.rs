//! Binding of [`crate::dola::contrast`]: convert, run with the GIL released.

use numpy::{PyReadonlyArray3, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::arrays::contiguous_mut;
use super::errors::{to_py, ShapeError};
use crate::dola::{contrast, DolaShape};

/// DoLa's contrast in place: `final_logits` (float32 `[rows, vocab]`, overwritten) against the
/// candidate layers' logits `premature_logits` (float32 `[layers, rows, vocab]`); returns the
/// position, in that list, of the layer contrasted with.
#[pyfunction]
pub fn dola_contrast(
    py: Python<'_>,
    mut final_logits: PyReadwriteArray2<'_, f32>,
    premature_logits: PyReadonlyArray3<'_, f32>,
) -> PyResult<usize> {
    let [rows, vocab] = [final_logits.shape()[0], final_logits.shape()[1]];
    let pshape = premature_logits.shape();
    if pshape[1] != rows || pshape[2] != vocab {
        return Err(ShapeError::new_err(format!(
            "premature_logits: expected shape [layers, {rows}, {vocab}], got {pshape:?}"
        )));
    }
    let shape = DolaShape {
        rows,
        vocab,
        layers: pshape[0],
    };
    let premature = premature_logits
        .as_slice()
        .map_err(|_| ShapeError::new_err("premature_logits: array must be C-contiguous"))?;
    let out = contiguous_mut("final_logits", &mut final_logits)?;
    py.detach(|| contrast(out, premature, shape)).map_err(to_py)
}
