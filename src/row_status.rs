//! Which rows of a one-sequence-per-row generation (greedy, sampling, contrastive, assisted)
//! are still going. A row ends at an EOS token or when a stopping criterion evaluated
//! outside the core says so; finished rows are filled with the pad token.

/// The status of every row; one type for every strategy that decodes rows independently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowStatus {
    unfinished: Vec<bool>,
}

impl RowStatus {
    /// `rows` rows, all still going.
    pub fn new(rows: usize) -> Self {
        RowStatus {
            unfinished: vec![true; rows],
        }
    }

    /// Rows whose status is `unfinished[r]` (the kept rows of a batch that dropped some).
    pub fn from_unfinished(unfinished: Vec<bool>) -> Self {
        RowStatus { unfinished }
    }

    /// Per row: still generating.
    pub fn unfinished(&self) -> &[bool] {
        &self.unfinished
    }

    pub fn is_unfinished(&self, row: usize) -> bool {
        self.unfinished[row]
    }

    pub fn all_finished(&self) -> bool {
        !self.unfinished.iter().any(|&u| u)
    }

    /// Marks rows finished by a criterion evaluated outside the core (`done[r]`, one value
    /// per row).
    pub fn finish_rows(&mut self, done: &[bool]) -> crate::Result<()> {
        crate::error::expect_rows("done", self.unfinished.len(), done.len())?;
        for (u, &d) in self.unfinished.iter_mut().zip(done) {
            *u &= !d;
        }
        Ok(())
    }

    pub fn finish(&mut self, row: usize) {
        self.unfinished[row] = false;
    }

    /// Ends every unfinished row whose newly appended token is one of `eos`.
    pub fn finish_at_eos(&mut self, tokens: &[i64], eos: &[i64]) {
        for (u, t) in self.unfinished.iter_mut().zip(tokens) {
            if *u && eos.contains(t) {
                *u = false;
            }
        }
    }
}

/// A decoding state whose rows carry a [`RowStatus`] (the bindings wrap it once).
pub trait HasRowStatus {
    fn row_status(&self) -> &RowStatus;
    fn row_status_mut(&mut self) -> &mut RowStatus;
}

/// `impl HasRowStatus` for a core that keeps its [`RowStatus`] in a field `status`.
macro_rules! row_status_field {
    ($core:ty) => {
        impl $crate::row_status::HasRowStatus for $core {
            fn row_status(&self) -> &$crate::row_status::RowStatus {
                &self.status
            }

            fn row_status_mut(&mut self) -> &mut $crate::row_status::RowStatus {
                &mut self.status
            }
        }
    };
}
pub(crate) use row_status_field;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_end_at_eos_or_when_told() {
        let mut s = RowStatus::new(3);
        s.finish_at_eos(&[5, 2, 7], &[2]);
        assert_eq!(s.unfinished(), [true, false, true]);
        s.finish_rows(&[true, false, false]).unwrap();
        assert!(s.finish_rows(&[true]).is_err(), "one value per row");
        assert_eq!(s.unfinished(), [false, false, true]);
        s.finish_at_eos(&[2, 2, 2], &[9]);
        assert!(!s.all_finished());
        s.finish(2);
        assert!(s.all_finished());
    }
}
