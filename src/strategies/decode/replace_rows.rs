//! Writing newly prefilled prompts into the rows of finished ones, so a batch engine refills
//! its batch without moving the rows that still run (continuous batching with fixed slots).
//!
//! Moving rows costs the model's side a copy of its whole KV cache (the finished rows are
//! gathered out, the new ones concatenated in). With fixed slots the model writes only the
//! new rows' cache into the finished rows' places, and the core does the same with its
//! per-row state here: each new row goes on exactly as after [`Decoder::append_rows`], in the
//! place of the row it replaces.

use super::Decoder;
use crate::error::{CoreError, Result};

impl Decoder {
    /// Row `slots[j]` afterwards is `other`'s row `j` (same settings, apart from the per-row
    /// inputs, as for [`Decoder::append_rows`]); every other row stays where it is and goes on
    /// as before. `slots` are distinct row indices, one per row of `other`. `self` is
    /// unchanged when it is an error.
    pub fn replace_rows(&mut self, slots: &[usize], other: &Decoder) -> Result<()> {
        let n = self.history.n_rows();
        check_slots(slots, n, other.history.n_rows())?;
        self.append_rows(other)?;
        let mut order: Vec<usize> = (0..n).collect();
        for (j, &slot) in slots.iter().enumerate() {
            order[slot] = n + j;
        }
        self.take_rows(&order);
        Ok(())
    }
}

/// `slots` must be `m` distinct indices below `n`.
fn check_slots(slots: &[usize], n: usize, m: usize) -> Result<()> {
    let mut seen = vec![false; n];
    let fits = slots.len() == m
        && slots
            .iter()
            .all(|&s| s < n && !std::mem::replace(&mut seen[s], true));
    if !fits {
        return Err(CoreError::Shape {
            name: "slots",
            expected: format!("{m} distinct row indices in [0, {n}) (one per row of `other`)"),
            got: format!("{slots:?}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_rows::{logits, sampler};
    use crate::logits::PipelineConfig;
    use crate::row_status::HasRowStatus;
    use crate::strategies::decode::Decoder;

    fn row_logits(vocab: usize, step: usize, seen_as: usize) -> Vec<f32> {
        logits(seen_as + 1, vocab, step)[seen_as * vocab..].to_vec()
    }

    #[test]
    fn a_replaced_row_samples_as_if_alone_and_the_others_go_on() {
        let config = PipelineConfig {
            do_sample: true,
            repetition_penalty: 1.7,
            ..PipelineConfig::default()
        };
        let vocab = 6;
        let mut batch = sampler(&[1, 2, 3, 4, 5, 1], 3, 9, &config);
        let mut alone = [
            sampler(&[1, 2], 1, 9, &config),
            sampler(&[5, 1], 1, 9, &config),
        ];
        for step in 0..3 {
            let got = batch
                .step_sample(&mut logits(3, vocab, step), vocab)
                .unwrap()
                .to_vec();
            for (a, row) in alone.iter_mut().zip([0, 2]) {
                let mut own = row_logits(vocab, step, row);
                assert_eq!(a.step_sample(&mut own, vocab).unwrap()[0], got[row]);
            }
        }
        let mut new_alone = sampler(&[4], 1, 11, &config);
        batch
            .replace_rows(&[1], &sampler(&[4], 1, 11, &config))
            .unwrap();
        assert_eq!(batch.history().n_rows(), 3);
        for step in 0..4 {
            let got = batch
                .step_sample(&mut logits(3, vocab, step + 3), vocab)
                .unwrap()
                .to_vec();
            for (a, row) in alone.iter_mut().zip([0, 2]) {
                let mut own = row_logits(vocab, step + 3, row);
                assert_eq!(a.step_sample(&mut own, vocab).unwrap()[0], got[row]);
            }
            let mut own = row_logits(vocab, step + 3, 1);
            let want = new_alone.step_sample(&mut own, vocab).unwrap()[0];
            assert_eq!(got[1], want, "step {step}");
        }
        assert_eq!(batch.row_status().unfinished().len(), 3);
    }

    #[test]
    fn bad_slots_change_nothing() {
        let config = PipelineConfig::default();
        let mut d = Decoder::new(&[1, 2, 3], 3, &config, 0).unwrap();
        let one = Decoder::new(&[4], 1, &config, 0).unwrap();
        let two = Decoder::new(&[4, 5], 2, &config, 0).unwrap();
        assert!(d.replace_rows(&[3], &one).is_err(), "out of range");
        assert!(d.replace_rows(&[0], &two).is_err(), "one slot per row");
        assert!(d.replace_rows(&[1, 1], &two).is_err(), "distinct");
        let sampled = PipelineConfig {
            do_sample: true,
            ..PipelineConfig::default()
        };
        assert!(d
            .replace_rows(&[0], &Decoder::new(&[4], 1, &sampled, 0).unwrap())
            .is_err());
        assert_eq!(d.history().row(0), &[1], "a refused call changes nothing");
        assert_eq!(d.history().n_rows(), 3);
    }
}
