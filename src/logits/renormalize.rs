//! `LogitNormalization` (`renormalize_logits=True`): scores become log-probabilities.

use super::math::{max, sum_exp};
use super::{RowProcessor, Scratch, StepContext};

/// `log_softmax` of the row as torch computes it (`x - max - log(sum(exp(x - max)))`).
/// Defined where torch gives NaN: a row with no value above -inf is left as it is;
/// with +inf entries they share the mass (`-log(count)`), everything else is -inf.
pub struct Renormalize;

impl RowProcessor for Renormalize {
    fn name(&self) -> &'static str {
        "LogitNormalization"
    }

    fn process_row(&self, _: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        if s.sparse {
            s.gather(logits);
            let vals = std::mem::take(&mut s.vals);
            if let Some(f) = log_softmax_map(&vals) {
                for &i in &s.cand {
                    logits[i as usize] = f(logits[i as usize]);
                }
            }
            s.vals = vals;
        } else if let Some(f) = log_softmax_map(logits) {
            for x in logits.iter_mut() {
                *x = f(*x);
            }
        }
    }
}

/// The map `x -> log_softmax(x)` of a row, `None` when the row has no distribution.
fn log_softmax_map(vals: &[f32]) -> Option<impl Fn(f32) -> f32> {
    let m = max(vals);
    if m == f32::NEG_INFINITY {
        return None;
    }
    let (m, ln_s, inf_mode) = if m == f32::INFINITY {
        let count = vals.iter().filter(|&&v| v == f32::INFINITY).count();
        (0.0, (count as f32).ln(), true)
    } else {
        (m, sum_exp(vals, m).ln() as f32, false)
    };
    Some(move |x: f32| {
        if inf_mode {
            if x == f32::INFINITY {
                -ln_s
            } else {
                f32::NEG_INFINITY
            }
        } else if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            (x - m) - ln_s
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run1, NEG};
    use super::*;

    #[test]
    fn log_probabilities_and_edge_rows() {
        let mut row = vec![0.0f32, 0.0, NEG, 2.0f32.ln()];
        run1(&Renormalize, &mut row);
        let want = [0.25f32.ln(), 0.25f32.ln(), NEG, 0.5f32.ln()];
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-6 || (a == &b), "{row:?}");
        }
        let mut row = vec![NEG, NEG];
        run1(&Renormalize, &mut row);
        assert_eq!(row, vec![NEG, NEG]);
        let mut row = vec![f32::INFINITY, 1.0, f32::INFINITY];
        run1(&Renormalize, &mut row);
        assert_eq!(row, vec![-(2.0f32.ln()), NEG, -(2.0f32.ln())]);
    }
}
