//! Sizes and allocations of the core's big buffers, checked in one place.
//!
//! Sizes the core allocates from (beams × rows, beams × vocab, rows × tail length) come
//! from callers. A product that overflows, or an allocation the allocator refuses, must
//! become an error that names the argument responsible, never a panic or an abort of
//! the whole process (`vec![x; n]` aborts when the memory is not there).

use crate::error::{CoreError, Result};

/// The product of `factors`, or an error naming `name` when it does not fit a `usize`.
pub fn product(name: &'static str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| {
            let shown: Vec<String> = factors.iter().map(usize::to_string).collect();
            CoreError::invalid(name, format!("the size {} overflows", shown.join(" x ")))
        })
}

/// An empty vector with room for `len` values; an allocation that cannot be made is an
/// error naming `name`.
pub fn with_capacity<T>(name: &'static str, len: usize) -> Result<Vec<T>> {
    // Beyond the address space the allocator is not asked: a size error, not a memory one.
    let bytes = len.checked_mul(std::mem::size_of::<T>());
    if bytes.map_or(true, |b| b > isize::MAX as usize) {
        return Err(CoreError::invalid(
            name,
            format!(
                "{len} values of {} bytes do not fit the address space",
                std::mem::size_of::<T>()
            ),
        ));
    }
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| CoreError::OutOfMemory {
            name,
            bytes: len.saturating_mul(std::mem::size_of::<T>()),
        })?;
    Ok(v)
}

/// `len` copies of `value` (as `vec![value; len]`, without the abort).
pub fn filled<T: Clone>(name: &'static str, len: usize, value: T) -> Result<Vec<T>> {
    let mut v = with_capacity(name, len)?;
    v.resize(len, value);
    Ok(v)
}

/// The values of `items` (exactly `len` of them) collected into a vector allocated up
/// front (as `collect`, without the abort).
pub fn collect<T>(
    name: &'static str,
    len: usize,
    items: impl IntoIterator<Item = T>,
) -> Result<Vec<T>> {
    let mut v = with_capacity(name, len)?;
    v.extend(items);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_sizes_name_the_argument() {
        assert_eq!(product("num_beams", &[3, 4, 5]), Ok(60));
        assert_eq!(product("num_beams", &[]), Ok(1));
        match product("num_beams", &[usize::MAX, 2]) {
            Err(CoreError::InvalidArgument { name, message }) => {
                assert_eq!(name, "num_beams");
                assert!(message.contains("overflows"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn impossible_allocations_are_errors() {
        // More bytes than the address space: refused before the allocator is asked.
        assert!(matches!(
            filled::<u64>("n", usize::MAX / 4, 0),
            Err(CoreError::InvalidArgument { name: "n", .. })
        ));
        // 2^60 bytes: the allocator itself refuses.
        assert!(matches!(
            with_capacity::<u8>("n", 1 << 60),
            Err(CoreError::OutOfMemory { name: "n", .. })
        ));
        assert_eq!(filled("n", 3, 7i64), Ok(vec![7, 7, 7]));
        assert_eq!(collect("n", 2, [1, 2]), Ok(vec![1, 2]));
    }
}
