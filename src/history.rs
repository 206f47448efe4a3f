//! Token history of every row: the prompt (padding included, as the model saw it)
//! followed by the generated tokens. Processors that look at the past read it here.

use crate::buffers;
use crate::error::Result;

/// Tokens each row has room for beyond its prompt before it reallocates.
const SPARE: usize = 64;

#[derive(Debug, Clone)]
pub struct TokenHistory {
    rows: Vec<Vec<i64>>,
    prompt_len: usize,
}

impl TokenHistory {
    /// `flat` is row-major `[n_rows, prompt_len]`.
    /// `n_rows` rows of `flat` (row-major), each with room to grow; a history too large
    /// for the memory is an error naming `name`.
    pub fn try_new(name: &'static str, flat: &[i64], n_rows: usize) -> Result<Self> {
        Self::try_repeated(name, flat, n_rows, 1)
    }

    /// Every row of `flat` (`[items, prompt_len]`) `copies` times in a row, as
    /// `repeat_interleave` lays out the beams of a batch item; sizes and allocations are
    /// checked (an error naming `name`, the argument that multiplies the rows).
    pub fn try_repeated(
        name: &'static str,
        flat: &[i64],
        items: usize,
        copies: usize,
    ) -> Result<Self> {
        let prompt_len = flat.len().checked_div(items).unwrap_or(0);
        let n_rows = buffers::product(name, &[items, copies])?;
        let room = prompt_len.saturating_add(SPARE);
        buffers::product(name, &[n_rows, room, std::mem::size_of::<i64>()])?;
        let mut rows = buffers::with_capacity(name, n_rows)?;
        for prompt in (0..items).map(|i| &flat[i * prompt_len..(i + 1) * prompt_len]) {
            for _ in 0..copies {
                let mut row = buffers::with_capacity(name, room)?;
                row.extend_from_slice(prompt);
                rows.push(row);
            }
        }
        Ok(TokenHistory { rows, prompt_len })
    }

    /// As [`Self::try_new`] for inputs known to be small (tests, benches, per-step copies
    /// of arrays the caller already holds).
    pub fn new(flat: &[i64], n_rows: usize) -> Self {
        let prompt_len = flat.len().checked_div(n_rows).unwrap_or(0);
        let rows = (0..n_rows)
            .map(|r| {
                let mut row = Vec::with_capacity(prompt_len + SPARE);
                row.extend_from_slice(&flat[r * prompt_len..(r + 1) * prompt_len]);
                row
            })
            .collect();
        TokenHistory { rows, prompt_len }
    }

    /// Like [`Self::new`] for rows that already hold generated tokens: the first
    /// `prompt_len` tokens of each (at most the width) are the prompt.
    pub fn with_prompt_len(flat: &[i64], n_rows: usize, prompt_len: usize) -> Self {
        let mut h = Self::new(flat, n_rows);
        h.prompt_len = prompt_len.min(h.len());
        h
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    /// Current length of every row (all rows grow in lock step).
    pub fn len(&self) -> usize {
        self.rows.first().map_or(self.prompt_len, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Number of tokens generated so far.
    pub fn new_tokens(&self) -> usize {
        self.len() - self.prompt_len
    }

    pub fn row(&self, r: usize) -> &[i64] {
        &self.rows[r]
    }

    pub fn push(&mut self, tokens: &[i64]) {
        debug_assert_eq!(tokens.len(), self.rows.len());
        for (row, &t) in self.rows.iter_mut().zip(tokens) {
            row.push(t);
        }
    }

    /// Replace the rows by `parents[i]`'s row, as beam search does after selection.
    /// Cuts every row longer than `len` back to it (never into the prompt).
    pub fn truncate(&mut self, len: usize) {
        let len = len.max(self.prompt_len);
        for row in &mut self.rows {
            row.truncate(len);
        }
    }

    /// The rows of `self` then those of `other`, the shorter side padded on the left with
    /// `pad` to the common length; everything so far counts as prompt. Returns the merged
    /// history and how many positions each side was padded by (`self`'s, `other`'s).
    /// Sizes are checked before anything is allocated (an error naming `name`).
    pub fn try_merged(
        &self,
        other: &TokenHistory,
        pad: i64,
        name: &'static str,
    ) -> Result<(TokenHistory, usize, usize)> {
        let len = self.len().max(other.len());
        let n_rows = self
            .n_rows()
            .checked_add(other.n_rows())
            .ok_or_else(|| crate::error::CoreError::invalid(name, "too many rows".to_string()))?;
        let room = len.saturating_add(SPARE);
        buffers::product(name, &[n_rows, room, std::mem::size_of::<i64>()])?;
        let mut rows = buffers::with_capacity(name, n_rows)?;
        let (pad_self, pad_other) = (len - self.len(), len - other.len());
        for (side, by) in [(self, pad_self), (other, pad_other)] {
            for old in &side.rows {
                let mut row = buffers::with_capacity(name, room)?;
                row.resize(by, pad);
                row.extend_from_slice(old);
                rows.push(row);
            }
        }
        let merged = TokenHistory {
            rows,
            prompt_len: len,
        };
        Ok((merged, pad_self, pad_other))
    }

    pub fn reorder(&mut self, parents: &[usize]) {
        let old = std::mem::take(&mut self.rows);
        self.rows = parents.iter().map(|&p| old[p].clone()).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_reorder() {
        let mut h = TokenHistory::new(&[1, 2, 3, 4], 2);
        assert_eq!(h.prompt_len(), 2);
        h.push(&[5, 6]);
        assert_eq!(h.row(0), &[1, 2, 5]);
        assert_eq!(h.new_tokens(), 1);
        h.reorder(&[1, 1]);
        assert_eq!(h.row(0), &[3, 4, 6]);
        assert_eq!(h.row(1), &[3, 4, 6]);
    }

    #[test]
    fn repeated_rows_and_impossible_sizes() {
        let h = TokenHistory::try_repeated("num_beams", &[1, 2, 3, 4], 2, 2).unwrap();
        assert_eq!(
            (h.n_rows(), h.row(1), h.row(2)),
            (4, &[1, 2][..], &[3, 4][..])
        );
        let empty = TokenHistory::try_repeated("num_beams", &[], 2, 3).unwrap();
        assert_eq!((empty.n_rows(), empty.prompt_len()), (6, 0));
        for copies in [usize::MAX, 1 << 60] {
            assert!(matches!(
                TokenHistory::try_repeated("num_beams", &[1, 2], 1, copies),
                Err(crate::CoreError::InvalidArgument {
                    name: "num_beams",
                    ..
                }) | Err(crate::CoreError::OutOfMemory {
                    name: "num_beams",
                    ..
                })
            ));
        }
    }
}
