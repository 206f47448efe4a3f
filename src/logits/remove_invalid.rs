//! `InfNanRemoveLogitsProcessor` (`remove_invalid_values=True`).

use super::{RowProcessor, Scratch, StepContext};

/// NaN becomes 0, +inf the largest float32, -inf the smallest (most negative) one.
pub struct RemoveInvalidValues;

impl RowProcessor for RemoveInvalidValues {
    fn name(&self) -> &'static str {
        "InfNanRemoveLogitsProcessor"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        for x in logits.iter_mut() {
            *x = if x.is_nan() {
                0.0
            } else if *x == f32::INFINITY {
                f32::MAX
            } else if *x == f32::NEG_INFINITY {
                f32::MIN
            } else {
                *x
            };
        }
        s.sparse = false;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn replaces_non_finite_values() {
        let mut row = vec![f32::NAN, f32::INFINITY, NEG, 1.5];
        run1(&RemoveInvalidValues, &mut row);
        assert_eq!(row, vec![0.0, f32::MAX, f32::MIN, 1.5]);
    }
}
