//! Integer arguments, the one rule for every binding. pyo3 turns an int that does not fit the
//! Rust type (2**70 for a `u64`, -1 for a `usize`) into a bare `OverflowError` that names no
//! argument (its "while processing" note is not in the message). An argument typed [`Int<T>`]
//! (or a list or `Option` of them) accepts any Python int and keeps one that does not fit;
//! [`Named::named`] then refuses it as `CoreError::InvalidArgument`, by the argument's name and
//! the allowed range. Not an int at all stays pyo3's `TypeError`.

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::Borrowed;

use super::errors::to_py;
use crate::error::{CoreError, Result};

/// The values a Rust integer type takes, as the message states them.
pub trait Bounded {
    const ALLOWED: &'static str;
}

impl Bounded for u8 {
    const ALLOWED: &'static str = "in [0, 256)";
}

impl Bounded for u64 {
    const ALLOWED: &'static str = "in [0, 2**64)";
}

impl Bounded for i64 {
    const ALLOWED: &'static str = "in [-2**63, 2**63)";
}

#[cfg(target_pointer_width = "64")]
impl Bounded for usize {
    const ALLOWED: &'static str = "in [0, 2**64)";
}

#[cfg(target_pointer_width = "32")]
impl Bounded for usize {
    const ALLOWED: &'static str = "in [0, 2**32)";
}

/// A Python int as `T`, or (`Err`) how the one that does not fit reads.
pub struct Int<T>(std::result::Result<T, String>);

/// A default value in a `#[pyo3(signature)]`.
impl<T> From<T> for Int<T> {
    fn from(value: T) -> Self {
        Int(Ok(value))
    }
}

impl<'a, 'py, T> FromPyObject<'a, 'py> for Int<T>
where
    T: FromPyObject<'a, 'py> + Bounded,
{
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match T::extract(obj) {
            Ok(v) => Ok(Int(Ok(v))),
            Err(err) => {
                let err: PyErr = err.into();
                if err.is_instance_of::<PyOverflowError>(obj.py()) {
                    Ok(Int(Err(shown(&obj))))
                } else {
                    Err(err)
                }
            }
        }
    }
}

/// The int as the message shows it: its digits, or their count when there are many, or its
/// size in bits when Python refuses to write it out (over `sys.get_int_max_str_digits()`).
fn shown(obj: &Bound<'_, PyAny>) -> String {
    let Ok(text) = obj.str().map(|s| s.to_string()) else {
        let bits = obj
            .call_method0("bit_length")
            .and_then(|b| b.extract::<u64>());
        return match bits {
            Ok(bits) => format!("an int of {bits} bits"),
            Err(_) => "an int too large to write out".to_owned(),
        };
    };
    let digits = text.trim_start_matches('-').len();
    if digits <= 40 {
        text
    } else {
        format!("an int of {digits} digits")
    }
}

/// An extracted argument whose ints are checked by name: `Int<T>`, and `Option`s and lists of
/// such (an absent value stays `None`).
pub trait Named: Sized {
    type Value;

    /// `item`: the value is an item of the argument (a list's), as the message says.
    fn check(self, name: &'static str, item: bool) -> Result<Self::Value>;

    /// The value, or `InvalidArgument` naming `name` and the allowed range.
    fn named(self, name: &'static str) -> Result<Self::Value> {
        self.check(name, false)
    }

    /// [`Named::named`] as the Python exception (`GenerationConfigError` for a setting).
    fn arg(self, name: &'static str) -> PyResult<Self::Value> {
        self.named(name).map_err(to_py)
    }
}

impl<T: Bounded> Named for Int<T> {
    type Value = T;

    fn check(self, name: &'static str, item: bool) -> Result<T> {
        let what = if item {
            "every item must be"
        } else {
            "must be"
        };
        self.0
            .map_err(|got| CoreError::invalid(name, format!("{what} {}, got {got}", T::ALLOWED)))
    }
}

impl<N: Named> Named for Option<N> {
    type Value = Option<N::Value>;

    fn check(self, name: &'static str, item: bool) -> Result<Self::Value> {
        self.map(|v| v.check(name, item)).transpose()
    }
}

impl<N: Named> Named for Vec<N> {
    type Value = Vec<N::Value>;

    fn check(self, name: &'static str, _: bool) -> Result<Self::Value> {
        self.into_iter().map(|v| v.check(name, true)).collect()
    }
}
