//! `logit_bias` (OpenAI / vLLM / llama.cpp): a fixed additive bias per token id.

use super::{RowProcessor, Scratch, StepContext};

/// `x[t] += bias[t]` (float32) for every configured token; a token listed twice gets
/// both biases, in order (llama.cpp adds each entry). Ids outside the vocabulary are
/// ignored (the config refuses them when the vocabulary is known).
pub struct LogitBias {
    bias: Vec<(usize, f32)>,
}

impl LogitBias {
    pub fn new(bias: &[(i64, f64)]) -> Self {
        LogitBias {
            bias: bias
                .iter()
                .filter(|(t, _)| *t >= 0)
                .map(|&(t, b)| (t as usize, b as f32))
                .collect(),
        }
    }
}

impl RowProcessor for LogitBias {
    fn name(&self) -> &'static str {
        "LogitBias"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], _: &mut Scratch) {
        for &(t, b) in &self.bias {
            if let Some(x) = logits.get_mut(t) {
                *x += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn adds_each_bias() {
        let mut row = vec![1.0, 2.0, NEG, 0.5];
        run1(
            &LogitBias::new(&[(1, -2.5), (2, 3.0), (3, 1.0), (3, 1.0), (7, 9.0)]),
            &mut row,
        );
        assert_eq!(row, vec![1.0, -0.5, NEG, 2.5]);
    }
}
