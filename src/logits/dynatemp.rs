//! Dynamic temperature, entropy-scaled (kalomaze; llama.cpp's `temp-ext` sampler).

use super::{RowProcessor, Scratch, StepContext};

/// Divides the logits by `T = lo + (hi - lo) * (H / ln n)^exponent`, where
/// `lo = max(0, temperature - range)`, `hi = temperature + range`, `H` is the entropy
/// (nats) of the softmax over the row's `n` candidates and `ln n` its maximum. With
/// `T <= 0` only the first maximum is kept (llama.cpp's `temp <= 0`). A row with at
/// most one candidate is left alone. Entropy and `T` are computed in float64
/// (llama.cpp: float32), the division in float32.
pub struct DynamicTemperature {
    temperature: f64,
    range: f64,
    exponent: f64,
}

impl DynamicTemperature {
    pub fn new(temperature: f64, range: f64, exponent: f64) -> Self {
        DynamicTemperature {
            temperature,
            range,
            exponent,
        }
    }

    /// The temperature this row gets (`None`: fewer than two candidates).
    fn temperature_for(&self, vals: &[f32]) -> Option<f64> {
        let n = vals.len();
        if n <= 1 {
            return None;
        }
        let lo = (self.temperature - self.range).max(0.0);
        let hi = self.temperature + self.range;
        let m = vals.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = vals.iter().map(|&x| (x as f64 - m).exp()).sum();
        let entropy: f64 = vals
            .iter()
            .map(|&x| (x as f64 - m).exp() / z)
            .filter(|&p| p > 0.0)
            .map(|p| -p * p.ln())
            .sum();
        let normalized = entropy / (n as f64).ln();
        Some(lo + (hi - lo) * normalized.powf(self.exponent))
    }
}

impl RowProcessor for DynamicTemperature {
    fn name(&self) -> &'static str {
        "DynamicTemperature"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        s.ensure_candidates(logits);
        s.gather(logits);
        let Some(t) = self.temperature_for(&s.vals) else {
            return;
        };
        if !t.is_finite() {
            return; // +inf logits: the row is already a uniform choice among them
        }
        if t <= 0.0 {
            let best = (0..s.vals.len()).fold(0, |b, j| if s.vals[j] > s.vals[b] { j } else { b });
            s.keep.clear();
            s.keep.extend((0..s.vals.len()).map(|j| j == best));
            s.apply_keep(logits);
            return;
        }
        let t = t as f32;
        for &i in &s.cand {
            logits[i as usize] /= t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uniform_rows_get_the_top_temperature_and_peaked_rows_the_bottom() {
        // uniform over 4: H / ln 4 = 1, T = 1 + 0.5 = 1.5
        let mut row = vec![3.0, 3.0, 3.0, 3.0, NEG];
        run1(&DynamicTemperature::new(1.0, 0.5, 1.0), &mut row);
        assert_eq!(row, vec![2.0, 2.0, 2.0, 2.0, NEG]);
        // two tokens, p = (0.8808, 0.1192): H = 0.36533 nats, / ln 2 = 0.52707;
        // T = 0.5 + 1.0 * 0.52707^2 = 0.77780
        let d = DynamicTemperature::new(1.0, 0.5, 2.0);
        let t = d.temperature_for(&[2.0, 0.0]).unwrap();
        assert!((t - 0.777_80).abs() < 1e-4, "{t}");
        // T <= 0 keeps the maximum only
        let mut row = vec![0.0, 5.0, 0.0];
        let peaked = DynamicTemperature::new(0.5, 0.5, 1e9);
        run1(&peaked, &mut row);
        assert_eq!(row, vec![NEG, 5.0, NEG]);
    }

    proptest! {
        /// The temperature stays within [max(0, t - r), t + r] and the order of the
        /// logits is kept.
        #[test]
        fn temperature_in_range_and_order_kept(
            row in proptest::collection::vec(-10.0f32..10.0, 2..30),
            t in 0.6f64..2.0, r in 0.0f64..0.5, e in 0.1f64..3.0,
        ) {
            let d = DynamicTemperature::new(t, r, e);
            let got = d.temperature_for(&row).unwrap();
            prop_assert!(got >= (t - r).max(0.0) - 1e-9 && got <= t + r + 1e-9);
            let mut out = row.clone();
            run1(&d, &mut out);
            for i in 0..row.len() {
                for j in 0..row.len() {
                    if row[i] < row[j] { prop_assert!(out[i] <= out[j]); }
                }
            }
        }
    }
}
