//! `allowed_token_ids` (vLLM): only these tokens may be generated.

use super::{RowProcessor, Scratch, StepContext};

/// Every token not in the allowed set gets -inf (NaN included); allowed tokens keep their
/// score. Ids outside the vocabulary are ignored (the config refuses them when the
/// vocabulary is known).
pub struct AllowedTokens {
    allowed: Vec<usize>,
}

impl AllowedTokens {
    pub fn new(allowed: &[i64]) -> Self {
        let mut allowed: Vec<usize> = allowed
            .iter()
            .filter(|&&t| t >= 0)
            .map(|&t| t as usize)
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        AllowedTokens { allowed }
    }
}

impl RowProcessor for AllowedTokens {
    fn name(&self) -> &'static str {
        "AllowedTokenIds"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], _: &mut Scratch) {
        // Sorted ids: blank the gaps between them.
        let mut start = 0;
        for &t in &self.allowed {
            if t >= logits.len() {
                break;
            }
            logits[start..t].fill(f32::NEG_INFINITY);
            start = t + 1;
        }
        logits[start..].fill(f32::NEG_INFINITY);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_only_the_allowed() {
        let mut row = vec![1.0, 2.0, f32::NAN, 0.5, 4.0];
        run1(&AllowedTokens::new(&[3, 1, 3, 99]), &mut row);
        assert_eq!(row, vec![NEG, 2.0, NEG, 0.5, NEG]);
    }

    proptest! {
        #[test]
        fn allowed_keep_their_score_and_others_are_removed(
            row in proptest::collection::vec(-5.0f32..5.0, 10),
            allowed in proptest::collection::vec(0i64..12, 1..6),
        ) {
            let mut out = row.clone();
            run1(&AllowedTokens::new(&allowed), &mut out);
            for t in 0..10 {
                let want = if allowed.contains(&(t as i64)) { row[t] } else { NEG };
                prop_assert_eq!(out[t], want);
            }
        }
    }
}
