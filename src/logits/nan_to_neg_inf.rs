//! Not a transformers processor: the first warper stage, which makes the warpers'
//! "NaN counts as -inf" convention visible in the returned scores.

use super::{RowProcessor, Scratch, StepContext};

/// Replaces NaN scores by -inf.
pub struct NanToNegInf;

impl RowProcessor for NanToNegInf {
    fn name(&self) -> &'static str {
        "NanToNegInf"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], _: &mut Scratch) {
        super::math::nan_to_neg_inf(logits);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn only_nan_changes() {
        let mut row = vec![f32::NAN, 1.0, f32::INFINITY, NEG];
        run1(&NanToNegInf, &mut row);
        assert_eq!(row, vec![NEG, 1.0, f32::INFINITY, NEG]);
    }
}
