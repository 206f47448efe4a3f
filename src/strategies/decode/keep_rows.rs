//! Dropping finished rows from a running [`Decoder`], so a batch engine stops paying the
//! forward pass for rows that already ended (EOS or a stopping criterion).
//!
//! A kept row must go on exactly as if nothing was dropped: its history, status and
//! sampling key move with it, and the per-row inputs of the processors (left-padding
//! lengths, encoder input) are taken for the kept rows before the processors are rebuilt
//! (every processor but mirostat and SynthID's watermark derives its state from the history; per-row objects the
//! caller supplied, grammar matchers and `prefix_allowed_tokens_fn`, cannot be re-indexed).

use super::Decoder;
use crate::error::{CoreError, Result};

impl Decoder {
    /// Keeps only the rows `rows` (indices of the current rows, strictly increasing, at
    /// least one): row `i` afterwards is row `rows[i]` before.
    pub fn keep_rows(&mut self, rows: &[usize]) -> Result<()> {
        let n = self.history.n_rows();
        check_kept("rows", rows, n)?;
        if let Some(why) = not_droppable(&self.config) {
            return Err(CoreError::invalid(
                "rows",
                format!("rows cannot be dropped with {why}"),
            ));
        }
        self.take_rows(rows);
        Ok(())
    }

    /// Row `i` afterwards is row `rows[i]` before (indices below the row count, in any order;
    /// the caller checked them and that no processor keeps per-row state).
    pub(super) fn take_rows(&mut self, rows: &[usize]) {
        let n = self.history.n_rows();
        let mut config = self.config.clone();
        config.prompt_ignore_lengths = per_row_subset(&config.prompt_ignore_lengths, rows, n);
        config.encoder_input_ids = per_row_subset(&config.encoder_input_ids, rows, n);
        let pipeline = config.build_processors(self.history.prompt_len());
        let warpers = config.build_warpers(1);
        let mut full = pipeline.clone();
        full.extend(&warpers);
        let kept_unfinished: Vec<bool> =
            rows.iter().map(|&r| self.status.is_unfinished(r)).collect();
        self.history.reorder(rows);
        self.status = crate::row_status::RowStatus::from_unfinished(kept_unfinished);
        self.keys = rows.iter().map(|&r| self.keys[r]).collect();
        if !self.step_offsets.is_empty() {
            self.step_offsets = rows.iter().map(|&r| self.step_offsets[r]).collect();
        }
        self.next.resize(rows.len(), self.pad);
        (self.config, self.pipeline, self.warpers, self.full) = (config, pipeline, warpers, full);
    }
}

/// Why the rows of a generation with `config` cannot be dropped, if they cannot.
pub(super) fn not_droppable(config: &crate::logits::PipelineConfig) -> Option<&'static str> {
    if config.mirostat_mode != 0 {
        return Some("mirostat (its per-row state is not re-indexed)");
    }
    if config.synthid.is_some() {
        return Some("the SynthID watermark (its per-row state is not re-indexed)");
    }
    if config.prefix_allowed.is_some() {
        return Some("prefix_allowed_tokens_fn (it is called with the batch row index)");
    }
    #[cfg(feature = "grammar")]
    if config.grammar.is_some() {
        return Some("a grammar (its matchers are per row)");
    }
    None
}

/// `rows` must be strictly increasing indices below `n`, and not empty.
fn check_kept(name: &'static str, rows: &[usize], n: usize) -> Result<()> {
    let increasing = rows.windows(2).all(|w| w[0] < w[1]);
    if rows.is_empty() || !increasing || rows.last().is_some_and(|&last| last >= n) {
        return Err(CoreError::Shape {
            name,
            expected: format!("strictly increasing row indices in [0, {n}), at least one"),
            got: format!("{rows:?}"),
        });
    }
    Ok(())
}

/// A per-row input (one entry per row, or per batch entry when the rows are entries
/// repeated, see `validate_rows`) taken for `rows`, one entry per kept row.
pub(super) fn per_row_subset<T: Clone>(values: &[T], rows: &[usize], n: usize) -> Vec<T> {
    if values.is_empty() || n % values.len() != 0 {
        return values.to_vec();
    }
    let copies = n / values.len();
    rows.iter().map(|&r| values[r / copies].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logits::PipelineConfig;
    use crate::row_status::HasRowStatus;

    fn decoder(prompts: &[i64], rows: usize, config: &PipelineConfig) -> Decoder {
        Decoder::new(prompts, rows, config, 0).unwrap()
    }

    fn logits_for(rows: &[usize], vocab: usize) -> Vec<f32> {
        // Row r prefers token (r + step) % vocab: distinct per original row.
        rows.iter()
            .flat_map(|&r| {
                (0..vocab).map(move |t| if t == (r * 3 + 1) % vocab { 1.0 } else { 0.0 })
            })
            .collect()
    }

    #[test]
    fn kept_rows_continue_as_if_nothing_was_dropped() {
        let config = PipelineConfig {
            repetition_penalty: 1.5,
            prompt_ignore_lengths: vec![0, 1, 2, 0],
            ..PipelineConfig::default()
        };
        let prompts = [1, 2, 0, 3, 0, 0, 4, 5];
        let mut all = decoder(&prompts, 4, &config);
        let mut kept = decoder(&prompts, 4, &config);
        let vocab = 8;
        all.step_sample(&mut logits_for(&[0, 1, 2, 3], vocab), vocab)
            .unwrap();
        kept.step_sample(&mut logits_for(&[0, 1, 2, 3], vocab), vocab)
            .unwrap();
        kept.keep_rows(&[1, 3]).unwrap();
        for _ in 0..3 {
            let a = all
                .step_sample(&mut logits_for(&[0, 1, 2, 3], vocab), vocab)
                .unwrap()
                .to_vec();
            let k = kept
                .step_sample(&mut logits_for(&[1, 3], vocab), vocab)
                .unwrap()
                .to_vec();
            assert_eq!(k, [a[1], a[3]]);
        }
        assert_eq!(kept.history().row(1), all.history().row(3));
        assert_eq!(kept.row_status().unfinished().len(), 2);
    }

    #[test]
    fn bad_row_lists_and_stateful_processors_are_errors() {
        let config = PipelineConfig::default();
        let mut d = decoder(&[1, 2, 3], 3, &config);
        for bad in [&[][..], &[1, 1], &[2, 1], &[0, 3]] {
            assert!(d.keep_rows(bad).is_err(), "{bad:?}");
        }
        assert_eq!(d.history().n_rows(), 3, "a refused call changes nothing");
        let miro = PipelineConfig {
            mirostat_mode: 2,
            ..PipelineConfig::default()
        };
        assert!(decoder(&[1, 2], 2, &miro).keep_rows(&[0]).is_err());
    }
}
