//! Token history of every row: the prompt (padding included, as the model saw it)
//! followed by the generated tokens. Processors that look at the past read it here.

#[derive(Debug, Clone)]
pub struct TokenHistory {
    rows: Vec<Vec<i64>>,
    prompt_len: usize,
}

impl TokenHistory {
    /// `flat` is row-major `[n_rows, prompt_len]`.
    pub fn new(flat: &[i64], n_rows: usize) -> Self {
        let prompt_len = if n_rows == 0 { 0 } else { flat.len() / n_rows };
        let rows = (0..n_rows)
            .map(|r| {
                let mut row = Vec::with_capacity(prompt_len + 64);
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
}
