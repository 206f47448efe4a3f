//! Merging the rows of another [`Decoder`] into a running one, so a batch engine can refill
//! the slots of finished rows with new prompts (continuous batching).
//!
//! The new rows were prefilled as their own small batch; each must go on exactly as if it
//! ran alone. The two histories are padded on the left to a common length (the padding is
//! added to the rows' left-padding lengths, so penalties never see it), the sampling keys
//! move with their rows, and each row keeps its own step count (the draw of a row's `k`-th
//! token uses step `k`, whatever step the batch is at). Processors that read the total
//! length or a step shared by the batch (min_length, forced BOS/EOS, ...) cannot be merged:
//! [`merge_refusal`] names them, and Python asks it before trying.

use super::keep_rows::{not_droppable, per_row_subset};
use super::Decoder;
use crate::error::{CoreError, Result};
use crate::logits::PipelineConfig;
use crate::row_status::RowStatus;

impl Decoder {
    /// Appends the rows of `source` (same settings, apart from the per-row inputs) after the
    /// rows of `self`: row `n + i` afterwards is `source`'s row `i`. `self` is unchanged
    /// when it is an error.
    pub(super) fn append_rows(&mut self, source: &Decoder) -> Result<()> {
        if let Some(why) = merge_refusal(&self.config) {
            return Err(CoreError::invalid(
                "source",
                format!("rows cannot be merged with {why}"),
            ));
        }
        if self.pad != source.pad || self.eos != source.eos || !same_settings(self, source) {
            return Err(CoreError::invalid(
                "source",
                "the decoders' settings differ (only per-row inputs may)".to_string(),
            ));
        }
        let (n, m) = (self.history.n_rows(), source.history.n_rows());
        let (history, pad_self, pad_source) =
            self.history
                .try_merged(&source.history, self.pad, "source")?;
        let mut config = self.config.clone();
        config.prompt_ignore_lengths =
            merged_lengths(&self.config, n, pad_self, &source.config, m, pad_source);
        config.encoder_input_ids = merged_rows(
            &self.config.encoder_input_ids,
            n,
            &source.config.encoder_input_ids,
            m,
        );
        config.validate_rows(n + m)?;
        // Each row's own step = merged generated count (0 now) + its count before the merge.
        let step_offsets = own_steps(self)
            .into_iter()
            .chain(own_steps(source))
            .collect();
        let pipeline = config.build_processors(history.prompt_len());
        let warpers = config.build_warpers(1);
        let mut full = pipeline.clone();
        full.extend(&warpers);
        let unfinished = (0..n)
            .map(|r| self.status.is_unfinished(r))
            .chain((0..m).map(|r| source.status.is_unfinished(r)))
            .collect();
        self.keys.extend_from_slice(&source.keys);
        self.history = history;
        self.status = RowStatus::from_unfinished(unfinished);
        self.next.resize(n + m, self.pad);
        self.step_offsets = step_offsets;
        (self.config, self.pipeline, self.warpers, self.full) = (config, pipeline, warpers, full);
        Ok(())
    }

    /// Why these rows cannot be merged with others, if they cannot (see [`merge_refusal`]).
    pub fn merge_refusal(&self) -> Option<&'static str> {
        merge_refusal(&self.config)
    }
}

/// Why rows of a generation with `config` cannot be merged with other rows, if they cannot:
/// the processors that keep per-row state, and those that read the total length or the
/// batch's step (they would see the merged padding, or another row's step).
pub fn merge_refusal(config: &PipelineConfig) -> Option<&'static str> {
    if let Some(why) = not_droppable(config) {
        return Some(why);
    }
    let refusals = [
        (
            config.min_length > 0 || config.min_new_tokens > 0,
            "min_length / min_new_tokens (they count the batch's padded length and steps)",
        ),
        (config.forced_bos_token_id.is_some(), "forced_bos_token_id"),
        (
            !config.forced_eos_token_id.is_empty(),
            "forced_eos_token_id",
        ),
        (
            config.exponential_decay_length_penalty.is_some(),
            "exponential_decay_length_penalty",
        ),
        (
            !config.begin_suppress_tokens.is_empty(),
            "begin_suppress_tokens",
        ),
        (
            config.xtc_probability > 0.0,
            "xtc (its draws use the batch's step)",
        ),
        (
            config.presence_penalty != 0.0 || config.frequency_penalty != 0.0,
            "presence/frequency penalties",
        ),
        (config.dry_multiplier > 0.0, "dry"),
        (
            config.no_repeat_ngram_size > 0,
            "no_repeat_ngram_size (its n-grams would span the merge's padding)",
        ),
    ];
    refusals.into_iter().find(|(on, _)| *on).map(|(_, why)| why)
}

/// Whether two decoders were built from the same settings (per-row inputs aside).
fn same_settings(a: &Decoder, b: &Decoder) -> bool {
    let shared = |c: &PipelineConfig| {
        let mut c = c.clone();
        c.prompt_ignore_lengths.clear();
        c.encoder_input_ids.clear();
        format!("{c:?}")
    };
    shared(&a.config) == shared(&b.config)
}

/// Every row's step before the merge (its generated count).
fn own_steps(d: &Decoder) -> Vec<u64> {
    let common = d.history.new_tokens() as u64;
    (0..d.history.n_rows())
        .map(|r| common.wrapping_add(d.step_offsets.get(r).copied().unwrap_or(0)))
        .collect()
}

/// Per-row left-padding lengths of the merged rows: each side's own (0 when it has none)
/// plus the padding the merge put in front of it.
fn merged_lengths(
    a: &PipelineConfig,
    n: usize,
    pad_a: usize,
    b: &PipelineConfig,
    m: usize,
    pad_b: usize,
) -> Vec<usize> {
    let side = |c: &PipelineConfig, rows: usize, pad: usize| -> Vec<usize> {
        let all: Vec<usize> = (0..rows).collect();
        let own = per_row_subset(&c.prompt_ignore_lengths, &all, rows);
        if own.len() == rows {
            own.into_iter().map(|l| l + pad).collect()
        } else {
            vec![pad; rows]
        }
    };
    let mut lengths = side(a, n, pad_a);
    lengths.extend(side(b, m, pad_b));
    lengths
}

/// A per-row input of the merged rows (one entry per row), empty when neither side has one.
fn merged_rows<T: Clone>(a: &[T], n: usize, b: &[T], m: usize) -> Vec<T> {
    if a.is_empty() && b.is_empty() {
        return Vec::new();
    }
    let expand = |v: &[T], rows: usize| per_row_subset(v, &(0..rows).collect::<Vec<_>>(), rows);
    let mut rows = expand(a, n);
    rows.extend(expand(b, m));
    rows
}

#[cfg(test)]
mod tests {
    use super::super::test_rows::{logits, sampler};
    use super::*;
    use crate::row_status::HasRowStatus;

    #[test]
    fn merged_rows_sample_and_penalise_as_if_alone() {
        let config = PipelineConfig {
            do_sample: true,
            repetition_penalty: 1.7,
            ..PipelineConfig::default()
        };
        let vocab = 6;
        let mut alone_old = sampler(&[1, 2, 3], 1, 9, &config);
        let mut alone_new = sampler(&[4], 1, 9, &config);
        let mut merged = sampler(&[1, 2, 3], 1, 9, &config);
        for step in 0..3 {
            let a = alone_old
                .step_sample(&mut logits(1, vocab, step), vocab)
                .unwrap()[0];
            let m = merged
                .step_sample(&mut logits(1, vocab, step), vocab)
                .unwrap()[0];
            assert_eq!(a, m);
        }
        merged.append_rows(&sampler(&[4], 1, 9, &config)).unwrap();
        assert_eq!(
            merged.history().row(1),
            &[0, 0, 0, 0, 0, 4],
            "padded on the left"
        );
        for step in 0..4 {
            let a = alone_old
                .step_sample(&mut logits(1, vocab, step + 3), vocab)
                .unwrap()[0];
            let b = alone_new
                .step_sample(&mut logits(1, vocab, step), vocab)
                .unwrap()[0];
            let mut both = logits(1, vocab, step + 3);
            both.extend(logits(1, vocab, step));
            let m = merged.step_sample(&mut both, vocab).unwrap().to_vec();
            assert_eq!(m, [a, b], "step {step}");
        }
        merged.keep_rows(&[1]).unwrap();
        let b = alone_new
            .step_sample(&mut logits(1, vocab, 4), vocab)
            .unwrap()[0];
        let m = merged.step_sample(&mut logits(1, vocab, 4), vocab).unwrap()[0];
        assert_eq!(m, b, "a merged row keeps its step when others leave");
        assert_eq!(merged.row_status().unfinished().len(), 1);
    }

    #[test]
    fn refused_merges_change_nothing() {
        let config = PipelineConfig::default();
        let mut d = Decoder::new(&[1, 2], 1, &config, 0).unwrap();
        let other_pad = Decoder::new(&[3], 1, &config, 5).unwrap();
        assert!(d.append_rows(&other_pad).is_err());
        let sampled = PipelineConfig {
            do_sample: true,
            ..PipelineConfig::default()
        };
        assert!(d
            .append_rows(&Decoder::new(&[3], 1, &sampled, 0).unwrap())
            .is_err());
        let min_len = PipelineConfig {
            min_new_tokens: 2,
            eos_token_ids: vec![1],
            ..PipelineConfig::default()
        };
        let mut m = Decoder::new(&[1], 1, &min_len, 0).unwrap();
        assert!(m
            .append_rows(&Decoder::new(&[2], 1, &min_len, 0).unwrap())
            .is_err());
        assert!(m.merge_refusal().unwrap().contains("min_new_tokens"));
        assert_eq!(d.merge_refusal(), None);
        assert_eq!(d.history().n_rows(), 1);
        assert_eq!(d.history().row(0), &[1, 2]);
    }
}
