//! Core errors → Python exceptions. Every class subclasses `ValueError`, so
//! `except ValueError` keeps working while callers can tell the kinds apart, except
//! `CoreMemoryError`, a `MemoryError` (an allocation the machine refused).

use pyo3::create_exception;
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::PyErr;

use crate::error::CoreError;

create_exception!(
    ferrogen._core,
    InvalidArgumentError,
    PyValueError,
    "An argument is outside its allowed values; the message starts with its name."
);
create_exception!(
    ferrogen._core,
    ShapeError,
    PyValueError,
    "An array does not have the expected shape."
);
create_exception!(
    ferrogen._core,
    TokenOutOfVocabError,
    PyValueError,
    "A token id cannot index the vocabulary."
);
create_exception!(
    ferrogen._core,
    NoValidTokenError,
    PyValueError,
    "A logits row has no finite value left to choose from."
);

create_exception!(
    ferrogen._core,
    CoreMemoryError,
    PyMemoryError,
    "A buffer sized from an argument cannot be allocated; the message starts with its name."
);

pub fn to_py(err: CoreError) -> PyErr {
    let msg = err.to_string();
    match err {
        CoreError::InvalidArgument { .. } => InvalidArgumentError::new_err(msg),
        CoreError::Shape { .. } => ShapeError::new_err(msg),
        CoreError::TokenOutOfVocab { .. } => TokenOutOfVocabError::new_err(msg),
        CoreError::NoValidToken { .. } => NoValidTokenError::new_err(msg),
        CoreError::OutOfMemory { .. } => CoreMemoryError::new_err(msg),
    }
}
