//! `SuppressTokensLogitsProcessor`: tokens that are never generated.

use super::{RowProcessor, Scratch, StepContext};

/// The listed tokens' scores are always -inf.
pub struct SuppressTokens {
    tokens: Vec<i64>,
}

impl SuppressTokens {
    pub fn new(tokens: &[i64]) -> Self {
        SuppressTokens {
            tokens: tokens.to_vec(),
        }
    }
}

/// Sets the listed in-vocabulary tokens to -inf.
pub(super) fn suppress(logits: &mut [f32], tokens: &[i64]) {
    for &t in tokens {
        if t >= 0 && (t as usize) < logits.len() {
            logits[t as usize] = f32::NEG_INFINITY;
        }
    }
}

impl RowProcessor for SuppressTokens {
    fn name(&self) -> &'static str {
        "SuppressTokensLogitsProcessor"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], _: &mut Scratch) {
        suppress(logits, &self.tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn suppresses_listed_tokens() {
        let mut row = vec![1.0f32, 2.0, 3.0];
        run1(&SuppressTokens::new(&[0, 2, 7]), &mut row);
        assert_eq!(row, vec![NEG, 2.0, NEG]);
    }
}
