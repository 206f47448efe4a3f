//! Core errors → Python exceptions. Every class subclasses `ValueError`, so
//! `except ValueError` keeps working while callers can tell the kinds apart, except
//! `CoreMemoryError`, a `MemoryError` (an allocation the machine refused). An invalid
//! setting raises `GenerationConfigError` (a subclass of `InvalidArgumentError` whose
//! `field` names the setting), the same class `GenerationConfig` raises; any other bad
//! argument (of a method, or an input array) raises `InvalidArgumentError`.

use pyo3::create_exception;
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::PyErr;

use crate::error::CoreError;
use crate::settings::GenerationSettings;

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
    InvalidArgumentError,
    "A token id cannot index the vocabulary."
);
create_exception!(
    ferrogen._core,
    NoValidTokenError,
    PyValueError,
    "A logits row has no finite value left to choose from."
);

// The settings error family is defined once, in Python (`ferrogen._validation`), as
// subclasses of `InvalidArgumentError`: the core raises the very classes the config raises.
pyo3::import_exception!(ferrogen._validation, GenerationConfigError);
pyo3::import_exception!(ferrogen._validation, GenerationConfigTypeError);

create_exception!(
    ferrogen._core,
    CoreMemoryError,
    PyMemoryError,
    "A buffer sized from an argument cannot be allocated; the message starts with its name."
);

pub fn to_py(err: CoreError) -> PyErr {
    let msg = err.to_string();
    match err {
        CoreError::InvalidArgument { name, message } if GenerationSettings::is_setting(name) => {
            GenerationConfigError::new_err((name, message))
        }
        CoreError::InvalidArgument { .. } => InvalidArgumentError::new_err(msg),
        CoreError::WrongType { name, expected } => {
            GenerationConfigTypeError::new_err((name, format!("must be {expected}")))
        }
        CoreError::Shape { .. } => ShapeError::new_err(msg),
        CoreError::TokenOutOfVocab { .. } => TokenOutOfVocabError::new_err(msg),
        CoreError::NoValidToken { .. } => NoValidTokenError::new_err(msg),
        CoreError::OutOfMemory { .. } => CoreMemoryError::new_err(msg),
    }
}
