//! ferrogen-core: everything in text generation that touches logits and tokens.
//! Pure Rust; the Python bindings live in `py/` behind the `python` feature.

// `!(x > t)` is deliberately true for NaN throughout the core: these are its NaN-safe tests.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod buffers;
pub mod constraints;
pub mod error;
#[cfg(feature = "grammar")]
pub mod grammar;
pub mod history;
pub mod logits;
pub mod parallel;
pub mod rng;
pub mod row_status;
pub mod sampling;
pub mod settings;
pub mod strategies;

#[cfg(feature = "python")]
mod py;

pub use error::{CoreError, Result};
// The strategy cores live under `strategies/`; their short paths stay the public ones.
pub use strategies::{assisted, beam, contrastive, decode, dola};
