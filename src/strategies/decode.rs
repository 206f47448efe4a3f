//! State of one single-sequence generation (greedy and sampling): history,
//! finished rows, the processors and warpers, and the per-row random keys.
//! Python runs the model and calls the `step_*` / `choose_*` methods.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{CoreError, Result};
use crate::history::TokenHistory;
use crate::logits::{LogitsMut, Pipeline, PipelineConfig, Scratch, StepContext};
use crate::rng;
use crate::row_status::RowStatus;
use crate::sampling::{argmax, draw};

mod append_rows;
mod keep_rows;
mod replace_rows;
#[cfg(test)]
mod test_rows;

pub struct Decoder {
    history: TokenHistory,
    status: RowStatus,
    eos: Vec<i64>,
    pad: i64,
    config: PipelineConfig,
    /// Processors: run before the user's (Python) logits processors.
    pipeline: Pipeline,
    /// Warpers and renormalisation: run after them.
    warpers: Pipeline,
    /// `pipeline` then `warpers`, for steps without user processors (one fused pass).
    full: Pipeline,
    /// Sampling key of every row (see [`crate::rng`]).
    keys: Vec<u64>,
    /// Vocabulary size the configured token ids were checked against (0: not yet).
    checked_vocab: AtomicUsize,
    next: Vec<i64>,
    /// Per row, what to add to the history's generated count to get the row's own step
    /// (rows merged in by [`Self::replace_rows`] started at another step); empty: all zero.
    step_offsets: Vec<u64>,
}

impl Decoder {
    /// `prompts` is row-major `[n_rows, prompt_len]`; `pad` fills finished rows.
    /// Sampling keys default to seed 0 and the rows' full prompts; see [`Self::seeded`].
    pub fn new(prompts: &[i64], n_rows: usize, config: &PipelineConfig, pad: i64) -> Result<Self> {
        if n_rows == 0 || prompts.len() % n_rows != 0 {
            return Err(CoreError::Shape {
                name: "input_ids",
                expected: "[batch >= 1, length]".into(),
                got: format!("{} values for {} rows", prompts.len(), n_rows),
            });
        }
        config.validate(None)?;
        config.validate_rows(n_rows)?;
        let history = TokenHistory::try_new("input_ids", prompts, n_rows)?;
        let pipeline = config.build_processors(history.prompt_len());
        let warpers = config.build_warpers(1);
        let mut full = pipeline.clone();
        full.extend(&warpers);
        let rows: Vec<Vec<i64>> = (0..n_rows).map(|r| history.row(r).to_vec()).collect();
        Ok(Decoder {
            keys: rng::row_keys(0, &rows, 1),
            history,
            status: RowStatus::new(n_rows),
            eos: config.eos_token_ids.clone(),
            pad,
            config: config.clone(),
            pipeline,
            warpers,
            full,
            checked_vocab: AtomicUsize::new(0),
            next: vec![0; n_rows],
            step_offsets: Vec::new(),
        })
    }

    /// Sets the sampling keys from `seed` and the unpadded prompt of every batch entry
    /// (`key_prompts`; the rows are those entries repeated `n_rows / key_prompts.len()`
    /// times each, as `num_return_sequences` lays them out).
    pub fn seeded(mut self, seed: u64, key_prompts: &[Vec<i64>]) -> Result<Self> {
        let rows = self.history.n_rows();
        if key_prompts.is_empty() || rows % key_prompts.len() != 0 {
            return Err(CoreError::Shape {
                name: "seed_prompts",
                expected: format!("a number of prompts dividing {rows}"),
                got: format!("{} prompts", key_prompts.len()),
            });
        }
        self.keys = rng::row_keys(seed, key_prompts, rows / key_prompts.len());
        Ok(self)
    }

    /// Like [`Self::seeded`] with one seed per batch entry: entry `i`'s rows get
    /// `row_key(seeds[i], key_prompts[i], 0, copy)`, the keys they would have if that entry
    /// were generated alone with `seed = seeds[i]`.
    pub fn seeded_rows(self, seeds: &[u64], key_prompts: &[Vec<i64>]) -> Result<Self> {
        if seeds.len() != key_prompts.len() {
            return Err(CoreError::Shape {
                name: "row_seeds",
                expected: format!("one seed per prompt ({})", key_prompts.len()),
                got: format!("{} seeds", seeds.len()),
            });
        }
        let mut this = self.seeded(0, key_prompts)?;
        let copies = this.keys.len() / key_prompts.len();
        for (i, (&seed, prompt)) in seeds.iter().zip(key_prompts).enumerate() {
            for c in 0..copies {
                this.keys[i * copies + c] = rng::row_key(seed, prompt, 0, c as u64);
            }
        }
        Ok(this)
    }

    pub fn history(&self) -> &TokenHistory {
        &self.history
    }

    /// Runs the processors (not the warpers) over `logits` (`[n_rows, vocab]`) in place.
    pub fn process(&self, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.check_logits(logits, vocab)?;
        let ctx = StepContext::with_keys(&self.history, &self.keys);
        self.pipeline
            .process(&ctx, &mut LogitsMut::new(logits, vocab));
        Ok(())
    }

    /// Runs the warpers (and renormalisation) over `logits` in place.
    pub fn warp(&self, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.check_logits(logits, vocab)?;
        let ctx = StepContext::with_keys(&self.history, &self.keys);
        self.warpers
            .process(&ctx, &mut LogitsMut::new(logits, vocab));
        Ok(())
    }

    /// Picks each unfinished row's most probable token from already processed
    /// logits, appends it (pad for finished rows), and updates which rows finished.
    pub fn choose_greedy(&mut self, logits: &[f32], vocab: usize) -> Result<&[i64]> {
        self.check_logits(logits, vocab)?;
        for (r, row) in logits.chunks_exact(vocab).enumerate() {
            self.next[r] = if self.status.is_unfinished(r) {
                argmax(row).ok_or(CoreError::NoValidToken { row: r })? as i64
            } else {
                self.pad
            };
        }
        self.commit();
        Ok(&self.next)
    }

    /// One greedy step: processors, renormalisation if configured, argmax, in one pass.
    pub fn step_greedy(&mut self, logits: &mut [f32], vocab: usize) -> Result<&[i64]> {
        self.run_and_pick(Which::Full, logits, vocab, |_, row, _| argmax(row))?;
        Ok(&self.next)
    }

    /// Warpers then a draw for every unfinished row (logits already processed).
    pub fn choose_sample(&mut self, logits: &mut [f32], vocab: usize) -> Result<&[i64]> {
        let (keys, steps) = self.sampling_steps();
        self.run_and_pick(Which::Warpers, logits, vocab, |r, row, s| {
            sample(row, s, keys[r], steps.at(r))
        })?;
        Ok(&self.next)
    }

    /// One sampling step: processors, warpers and the draw, fused per row.
    pub fn step_sample(&mut self, logits: &mut [f32], vocab: usize) -> Result<&[i64]> {
        let (keys, steps) = self.sampling_steps();
        self.run_and_pick(Which::Full, logits, vocab, |r, row, s| {
            sample(row, s, keys[r], steps.at(r))
        })?;
        Ok(&self.next)
    }

    fn run_and_pick<F>(
        &mut self,
        which: Which,
        logits: &mut [f32],
        vocab: usize,
        pick: F,
    ) -> Result<()>
    where
        F: Fn(usize, &mut [f32], &mut Scratch) -> Option<usize> + Sync,
    {
        self.check_logits(logits, vocab)?;
        let pipeline = match which {
            Which::Full => &self.full,
            Which::Warpers => &self.warpers,
        };
        let ctx = StepContext::with_keys(&self.history, &self.keys);
        let status = &self.status;
        let picked =
            pipeline.process_then(&ctx, &mut LogitsMut::new(logits, vocab), |r, row, s| {
                if status.is_unfinished(r) {
                    pick(r, row, s)
                        .map(|t| t as i64)
                        .ok_or(CoreError::NoValidToken { row: r })
                } else {
                    Ok(self.pad)
                }
            });
        for (slot, p) in self.next.iter_mut().zip(picked) {
            *slot = p?;
        }
        self.commit();
        Ok(())
    }

    /// Every row's sampling key and the step its next draw is (its own generated count).
    fn sampling_steps(&self) -> (Vec<u64>, RowSteps) {
        let steps = RowSteps {
            common: self.history.new_tokens() as u64,
            offsets: self.step_offsets.clone(),
        };
        (self.keys.clone(), steps)
    }

    fn check_logits(&self, logits: &[f32], vocab: usize) -> Result<()> {
        check_step_logits(
            logits,
            self.history.n_rows(),
            vocab,
            &self.config,
            &self.checked_vocab,
        )
    }

    fn commit(&mut self) {
        self.history.push(&self.next);
        self.status.finish_at_eos(&self.next, &self.eos);
    }
}

/// A step's logits are `[rows, vocab]`; the configured token ids are checked against each
/// new vocabulary size once (`checked_vocab` keeps the last one checked, 0 before any).
pub(crate) fn check_step_logits(
    logits: &[f32],
    rows: usize,
    vocab: usize,
    config: &PipelineConfig,
    checked_vocab: &AtomicUsize,
) -> Result<()> {
    if vocab == 0 || logits.len() != rows * vocab {
        return Err(CoreError::Shape {
            name: "logits",
            expected: format!("[{rows}, vocab >= 1]"),
            got: format!("{} values with vocab {vocab}", logits.len()),
        });
    }
    if checked_vocab.load(Ordering::Relaxed) != vocab {
        config.validate(Some(vocab))?;
        checked_vocab.store(vocab, Ordering::Relaxed);
    }
    Ok(())
}

/// The step of every row: the history's generated count, plus the row's offset if any.
struct RowSteps {
    common: u64,
    offsets: Vec<u64>,
}

impl RowSteps {
    fn at(&self, r: usize) -> u64 {
        self.common
            .wrapping_add(self.offsets.get(r).copied().unwrap_or(0))
    }
}

enum Which {
    Full,
    Warpers,
}

/// The draw of one row at `step`: candidates of the sparse form when the warpers made one.
fn sample(row: &[f32], s: &Scratch, key: u64, step: u64) -> Option<usize> {
    draw(
        row,
        s.sparse.then_some(s.cand.as_slice()),
        rng::uniform(key, step),
    )
}

crate::row_status::row_status_field!(Decoder);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row_status::HasRowStatus;

    fn config(eos: i64, min_new: usize) -> PipelineConfig {
        PipelineConfig {
            eos_token_ids: vec![eos],
            min_new_tokens: min_new,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_pads_after_eos() {
        let mut d = Decoder::new(&[7, 8], 2, &config(1, 0), 0).unwrap();
        let mut logits = vec![0.0, 5.0, 1.0, /* row 1 */ 0.0, 1.0, 5.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[1, 2]);
        assert_eq!(d.row_status().unfinished(), &[false, true]);
        let mut logits = vec![0.0, 5.0, 9.0, 0.0, 5.0, 1.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[0, 1]);
        assert!(d.row_status().all_finished());
        assert_eq!(d.history().row(0), &[7, 1, 0]);
    }

    #[test]
    fn min_new_tokens_delays_eos() {
        let mut d = Decoder::new(&[7], 1, &config(1, 2), 0).unwrap();
        let mut logits = vec![0.0, 5.0, 1.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[2]);
        assert_eq!(
            logits[1],
            f32::NEG_INFINITY,
            "processed scores are written back"
        );
        let mut logits = vec![0.0, 5.0, 1.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[2]);
        let mut logits = vec![0.0, 5.0, 1.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[1]);
    }

    #[test]
    fn bad_shapes_and_dead_rows_are_errors() {
        let mut d = Decoder::new(&[7], 1, &config(1, 0), 0).unwrap();
        assert!(matches!(
            d.step_greedy(&mut [0.0; 4], 3),
            Err(CoreError::Shape { .. })
        ));
        let mut dead = vec![f32::NAN, f32::NEG_INFINITY];
        assert_eq!(
            d.step_greedy(&mut dead, 2),
            Err(CoreError::NoValidToken { row: 0 })
        );
        assert!(Decoder::new(&[], 0, &config(1, 0), 0).is_err());
        let mut d = Decoder::new(
            &[7],
            1,
            &PipelineConfig {
                do_sample: true,
                ..config(1, 0)
            },
            0,
        )
        .unwrap();
        assert_eq!(
            d.step_sample(&mut dead, 2),
            Err(CoreError::NoValidToken { row: 0 })
        );
    }

    #[test]
    fn token_ids_are_checked_against_the_vocab_at_the_first_step() {
        let cfg = PipelineConfig {
            suppress_tokens: vec![5],
            ..config(1, 0)
        };
        let mut d = Decoder::new(&[7], 1, &cfg, 0).unwrap();
        let err = d.step_greedy(&mut [0.0; 3], 3).unwrap_err();
        assert_eq!(
            err,
            CoreError::TokenOutOfVocab {
                name: "suppress_tokens",
                token: 5,
                vocab: 3
            }
        );
    }

    fn sampler(prompts: &[Vec<i64>], copies: usize, seed: u64) -> Decoder {
        let width = prompts[0].len();
        let flat: Vec<i64> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat(p.clone()).take(copies))
            .flatten()
            .collect();
        let cfg = PipelineConfig {
            do_sample: true,
            top_k: 50,
            temperature: 0.9,
            ..Default::default()
        };
        let rows = prompts.len() * copies;
        assert_eq!(flat.len(), rows * width);
        Decoder::new(&flat, rows, &cfg, 0)
            .unwrap()
            .seeded(seed, prompts)
            .unwrap()
    }

    fn flat_logits(rows: usize, vocab: usize) -> Vec<f32> {
        (0..rows * vocab)
            .map(|i| ((i % vocab) as f32 * 0.37).sin())
            .collect()
    }

    #[test]
    fn samples_do_not_depend_on_batch_composition_or_order() {
        let (a, b) = (vec![3i64, 4, 5], vec![9i64, 9, 2]);
        let vocab = 200;
        let run = |prompts: &[Vec<i64>]| {
            let mut d = sampler(prompts, 1, 11);
            let mut out = vec![Vec::new(); prompts.len()];
            for _ in 0..20 {
                let mut logits = flat_logits(prompts.len(), vocab);
                for (r, &t) in d
                    .step_sample(&mut logits, vocab)
                    .unwrap()
                    .iter()
                    .enumerate()
                {
                    out[r].push(t);
                }
            }
            out
        };
        let alone = run(std::slice::from_ref(&a));
        let ab = run(&[a.clone(), b.clone()]);
        let ba = run(&[b.clone(), a.clone()]);
        assert_eq!(alone[0], ab[0]);
        assert_eq!(ab[0], ba[1]);
        assert_eq!(ab[1], ba[0]);
        assert_ne!(ab[0], ab[1]);
        let twice = run(&[a.clone(), a.clone()]);
        assert_eq!(twice[0], alone[0], "the first occurrence keeps its samples");
        assert_ne!(
            twice[0], twice[1],
            "a duplicated prompt samples differently"
        );
    }

    #[test]
    fn return_sequences_differ_and_seeds_reproduce() {
        let vocab = 100;
        let mut d = sampler(&[vec![1, 2]], 3, 5);
        let mut logits = flat_logits(3, vocab);
        let first = d.step_sample(&mut logits, vocab).unwrap().to_vec();
        let mut again = sampler(&[vec![1, 2]], 3, 5);
        let mut logits = flat_logits(3, vocab);
        assert_eq!(
            again.step_sample(&mut logits, vocab).unwrap(),
            first.as_slice()
        );
        let mut other = sampler(&[vec![1, 2]], 3, 6);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            let mut logits = flat_logits(3, vocab);
            seen.extend(
                other
                    .step_sample(&mut logits, vocab)
                    .unwrap()
                    .iter()
                    .copied(),
            );
        }
        assert!(seen.len() > 3);
    }

    #[test]
    fn row_seeds_give_each_entry_the_keys_it_has_alone() {
        let (a, b) = (vec![3i64, 4], vec![3i64, 4]);
        let rows = |d: &Decoder| d.keys.clone();
        let alone_a = rows(&sampler(std::slice::from_ref(&a), 2, 7));
        let alone_b = rows(&sampler(std::slice::from_ref(&b), 2, 9));
        let both = sampler(&[a.clone(), b.clone()], 2, 0)
            .seeded_rows(&[7, 9], &[a.clone(), b.clone()])
            .unwrap();
        assert_eq!(
            rows(&both),
            [alone_a, alone_b].concat(),
            "duplicates keep their own seed, occurrence 0"
        );
        assert!(sampler(std::slice::from_ref(&a), 1, 0)
            .seeded_rows(&[1, 2], &[a])
            .is_err());
    }
}
