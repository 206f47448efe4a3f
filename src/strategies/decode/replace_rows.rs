//! Writing newly prefilled prompts into the rows of finished ones, so a batch engine refills
//! its batch without moving the rows that still run (continuous batching with fixed slots).
//!
//! Moving rows costs the model's side a copy of its whole KV cache (the finished rows are
//! gathered out, the new ones concatenated in). With fixed slots the model writes only the
//! new rows' cache into the finished rows' places, and the core does the same with its
//! per-row state here: each new row goes on exactly as after [`Decoder::append_rows`], in the
//! place of the row it replaces. The new rows are taken from a core built once for a whole
//! group of prefilled prompts (`source`), which is left as it is: one refill takes some of
//! its rows, the next refill others.

use super::Decoder;
use crate::error::{CoreError, Result};

impl Decoder {
    /// Row `slots[j]` afterwards is `source`'s row `source_rows[j]` (same settings, apart from
    /// the per-row inputs, as for [`Decoder::append_rows`]); every other row stays where it is
    /// and goes on as before. `slots` are distinct row indices of `self`, `source_rows` distinct
    /// row indices of `source`, one per slot. `self` is unchanged when it is an error.
    pub fn replace_rows(
        &mut self,
        slots: &[usize],
        source: &Decoder,
        source_rows: &[usize],
    ) -> Result<()> {
        let (n, m) = (self.history.n_rows(), source.history.n_rows());
        check_distinct("slots", slots, n, slots.len())?;
        check_distinct("source_rows", source_rows, m, slots.len())?;
        // Every row of `source` joins, then the rows not taken leave with the replaced ones.
        self.append_rows(source)?;
        let mut order: Vec<usize> = (0..n).collect();
        for (&slot, &row) in slots.iter().zip(source_rows) {
            order[slot] = n + row;
        }
        self.take_rows(&order);
        Ok(())
    }
}

/// `rows` must be `count` distinct indices below `n`, at least one.
fn check_distinct(name: &'static str, rows: &[usize], n: usize, count: usize) -> Result<()> {
    let mut seen = vec![false; n];
    let fits = !rows.is_empty()
        && rows.len() == count
        && rows
            .iter()
            .all(|&r| r < n && !std::mem::replace(&mut seen[r], true));
    if !fits {
        return Err(CoreError::Shape {
            name,
            expected: format!("{count} distinct row indices in [0, {n}), at least one"),
            got: format!("{rows:?}"),
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

    /// One step of `batch` (3 rows) on `logits(.., at)`: each `(row, alone)` must pick what
    /// its decoder alone picks from the same row of logits.
    fn step_matches(batch: &mut Decoder, at: usize, alone: &mut [(usize, &mut Decoder)]) {
        let vocab = 6;
        let got = batch
            .step_sample(&mut logits(3, vocab, at), vocab)
            .unwrap()
            .to_vec();
        for (row, decoder) in alone.iter_mut() {
            let mut own = row_logits(vocab, at, *row);
            let want = decoder.step_sample(&mut own, vocab).unwrap()[0];
            assert_eq!(got[*row], want, "row {row} at step {at}");
        }
    }

    #[test]
    fn replaced_rows_sample_as_if_alone_and_the_others_go_on() {
        let config = PipelineConfig {
            do_sample: true,
            repetition_penalty: 1.7,
            ..PipelineConfig::default()
        };
        let mut batch = sampler(&[1, 2, 3, 4, 5, 1], 3, 9, &config);
        let mut first = sampler(&[1, 2], 1, 9, &config);
        let mut third = sampler(&[5, 1], 1, 9, &config);
        // A group of prefilled prompts, taken row by row by two refills; it is never consumed.
        let source = sampler(&[7, 4, 9], 3, 11, &config);
        let (mut four, mut nine) = (sampler(&[4], 1, 11, &config), sampler(&[9], 1, 11, &config));
        for at in 0..3 {
            step_matches(&mut batch, at, &mut [(0, &mut first), (2, &mut third)]);
        }
        batch.replace_rows(&[1], &source, &[1]).unwrap();
        assert_eq!(batch.history().n_rows(), 3);
        for at in 3..5 {
            let rows = &mut [(0, &mut first), (1, &mut four), (2, &mut third)];
            step_matches(&mut batch, at, rows);
        }
        batch.replace_rows(&[2], &source, &[2]).unwrap();
        for at in 5..8 {
            let rows = &mut [(0, &mut first), (1, &mut four), (2, &mut nine)];
            step_matches(&mut batch, at, rows);
        }
        assert_eq!(batch.row_status().unfinished().len(), 3);
        assert_eq!(source.history().n_rows(), 3, "the source keeps its rows");
    }

    #[test]
    fn bad_rows_change_nothing() {
        let config = PipelineConfig::default();
        let mut d = Decoder::new(&[1, 2, 3], 3, &config, 0).unwrap();
        let two = Decoder::new(&[4, 5], 2, &config, 0).unwrap();
        let bad: [(&[usize], &[usize], &str); 7] = [
            (&[3], &[0], "slot out of range"),
            (&[1, 1], &[0, 1], "distinct slots"),
            (&[], &[], "at least one"),
            (&[0], &[2], "source row out of range"),
            (&[0, 1], &[1, 1], "distinct source rows"),
            (&[0], &[0, 1], "one source row per slot"),
            (&[0, 1], &[0], "one slot per source row"),
        ];
        for (slots, rows, why) in bad {
            assert!(d.replace_rows(slots, &two, rows).is_err(), "{why}");
        }
        let sampled = PipelineConfig {
            do_sample: true,
            ..PipelineConfig::default()
        };
        let other_settings = Decoder::new(&[4], 1, &sampled, 0).unwrap();
        assert!(d.replace_rows(&[0], &other_settings, &[0]).is_err());
        assert_eq!(d.history().row(0), &[1], "a refused call changes nothing");
        assert_eq!(d.history().n_rows(), 3);
        d.replace_rows(&[2, 0], &two, &[0, 1]).unwrap();
        assert_eq!(
            (d.history().row(0), d.history().row(2)),
            (&[5][..], &[4][..])
        );
    }
}
