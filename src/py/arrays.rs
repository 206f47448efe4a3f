//! Checks made once at the boundary: arrays must be C-contiguous with the right rank.

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1, PyReadwriteArray2};
use pyo3::PyResult;

use super::errors::ShapeError;

pub fn contiguous<'a, T: numpy::Element>(
    name: &str,
    arr: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<&'a [T]> {
    arr.as_slice()
        .map_err(|_| ShapeError::new_err(format!("{name}: array must be C-contiguous")))
}

pub fn contiguous1<'a, T: numpy::Element>(
    name: &str,
    arr: &'a PyReadonlyArray1<'_, T>,
) -> PyResult<&'a [T]> {
    arr.as_slice()
        .map_err(|_| ShapeError::new_err(format!("{name}: array must be C-contiguous")))
}

pub fn contiguous_mut<'a, T: numpy::Element>(
    name: &str,
    arr: &'a mut PyReadwriteArray2<'_, T>,
) -> PyResult<&'a mut [T]> {
    arr.as_slice_mut()
        .map_err(|_| ShapeError::new_err(format!("{name}: array must be C-contiguous")))
}

pub fn contiguous_mut1<'a, T: numpy::Element>(
    name: &str,
    arr: &'a mut PyReadwriteArray1<'_, T>,
) -> PyResult<&'a mut [T]> {
    arr.as_slice_mut()
        .map_err(|_| ShapeError::new_err(format!("{name}: array must be C-contiguous")))
}
