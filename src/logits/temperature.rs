//! `TemperatureLogitsWarper`: divide every score by the temperature.

use super::{RowProcessor, Scratch, StepContext};

/// Scores divided by `temperature` (in float32, as torch does). The pipeline leaves it
/// out when the temperature is exactly 1.0, like transformers.
pub struct Temperature {
    t: f32,
}

impl Temperature {
    /// `temperature` must be > 0 (checked by [`super::PipelineConfig::validate`]).
    pub fn new(temperature: f64) -> Self {
        Temperature {
            t: temperature as f32,
        }
    }
}

impl RowProcessor for Temperature {
    fn name(&self) -> &'static str {
        "TemperatureLogitsWarper"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        let t = self.t;
        if s.sparse {
            for &i in &s.cand {
                logits[i as usize] /= t;
            }
        } else {
            super::math::divide(logits, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn divides_in_f32() {
        let mut row = vec![1.0, -2.0, NEG, 0.3];
        run1(&Temperature::new(0.7), &mut row);
        assert_eq!(row, vec![1.0 / 0.7f32, -2.0 / 0.7f32, NEG, 0.3 / 0.7f32]);
    }
}
