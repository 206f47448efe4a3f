//! One error type for the whole core. The Python bindings map each variant to a
//! named exception class, so callers can tell a bad argument from a bad model output.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum CoreError {
    /// A configuration value is outside its allowed range; `name` is the argument.
    #[error("{name}: {message}")]
    InvalidArgument { name: &'static str, message: String },

    /// A setting of the wrong type; `expected` says what it must be.
    #[error("{name}: must be {expected}")]
    WrongType {
        name: &'static str,
        expected: &'static str,
    },

    /// An array does not have the shape the current state expects.
    #[error("{name}: expected shape {expected}, got {got}")]
    Shape {
        name: &'static str,
        expected: String,
        got: String,
    },

    /// A token id that cannot index the vocabulary.
    #[error("{name}: token id {token} is outside the vocabulary [0, {vocab})")]
    TokenOutOfVocab {
        name: &'static str,
        token: i64,
        vocab: usize,
    },

    /// Every entry of a logits row is NaN or -inf after processing, so no token can be chosen.
    #[error("logits row {row} has no finite value to choose from (all NaN or -inf)")]
    NoValidToken { row: usize },

    /// A buffer sized from `name` cannot be allocated (the memory is not there).
    #[error("{name}: cannot allocate {bytes} bytes for it; use a smaller value")]
    OutOfMemory { name: &'static str, bytes: usize },
}

impl CoreError {
    pub fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            name,
            message: message.into(),
        }
    }
}

/// A per-row argument (`got` values) must have one value for each of `rows` rows.
pub fn expect_rows(name: &'static str, rows: usize, got: usize) -> Result<()> {
    if got == rows {
        Ok(())
    } else {
        Err(CoreError::Shape {
            name,
            expected: format!("[{rows}] (one value per row)"),
            got: format!("{got} values"),
        })
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;
