//! State of one single-sequence generation (greedy and sampling): history,
//! finished rows, and the pipeline. Python runs the model and calls [`Decoder::step`].

use crate::error::{CoreError, Result};
use crate::history::TokenHistory;
use crate::logits::{LogitsMut, Pipeline, PipelineConfig, StepContext};
use crate::sampling::argmax;

pub struct Decoder {
    history: TokenHistory,
    unfinished: Vec<bool>,
    eos: Vec<i64>,
    pad: i64,
    pipeline: Pipeline,
    next: Vec<i64>,
}

impl Decoder {
    /// `prompts` is row-major `[n_rows, prompt_len]`; `pad` fills finished rows.
    pub fn new(prompts: &[i64], n_rows: usize, config: &PipelineConfig, pad: i64) -> Result<Self> {
        if n_rows == 0 || prompts.len() % n_rows != 0 {
            return Err(CoreError::Shape {
                name: "input_ids",
                expected: "[batch >= 1, length]".into(),
                got: format!("{} values for {} rows", prompts.len(), n_rows),
            });
        }
        config.validate(None)?;
        let history = TokenHistory::new(prompts, n_rows);
        let pipeline = config.build(history.prompt_len());
        Ok(Decoder {
            history,
            unfinished: vec![true; n_rows],
            eos: config.eos_token_ids.clone(),
            pad,
            pipeline,
            next: vec![0; n_rows],
        })
    }

    pub fn history(&self) -> &TokenHistory {
        &self.history
    }

    pub fn unfinished(&self) -> &[bool] {
        &self.unfinished
    }

    pub fn all_finished(&self) -> bool {
        !self.unfinished.iter().any(|&u| u)
    }

    /// Marks rows finished by a criterion evaluated outside the core.
    pub fn finish_rows(&mut self, done: &[bool]) {
        for (u, &d) in self.unfinished.iter_mut().zip(done) {
            *u &= !d;
        }
    }

    /// Runs the processors over `logits` (`[n_rows, vocab]`) in place.
    pub fn process(&self, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.check_logits(logits, vocab)?;
        let mut view = LogitsMut::new(logits, vocab);
        self.pipeline.process(&StepContext { history: &self.history }, &mut view);
        Ok(())
    }

    /// Picks each unfinished row's most probable token from already processed
    /// logits, appends it (pad for finished rows), and updates which rows finished.
    pub fn choose_greedy(&mut self, logits: &[f32], vocab: usize) -> Result<&[i64]> {
        self.check_logits(logits, vocab)?;
        for (r, row) in logits.chunks_exact(vocab).enumerate() {
            self.next[r] = if self.unfinished[r] {
                argmax(row).ok_or(CoreError::NoValidToken { row: r })? as i64
            } else {
                self.pad
            };
        }
        self.commit();
        Ok(&self.next)
    }

    /// [`Self::process`] then [`Self::choose_greedy`]: one greedy step.
    pub fn step_greedy(&mut self, logits: &mut [f32], vocab: usize) -> Result<&[i64]> {
        self.process(logits, vocab)?;
        self.choose_greedy(logits, vocab)
    }

    fn check_logits(&self, logits: &[f32], vocab: usize) -> Result<()> {
        let rows = self.history.n_rows();
        if vocab == 0 || logits.len() != rows * vocab {
            return Err(CoreError::Shape {
                name: "logits",
                expected: format!("[{rows}, vocab >= 1]"),
                got: format!("{} values with vocab {vocab}", logits.len()),
            });
        }
        Ok(())
    }

    fn commit(&mut self) {
        self.history.push(&self.next);
        for (u, t) in self.unfinished.iter_mut().zip(&self.next) {
            if *u && self.eos.contains(t) {
                *u = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(eos: i64, min_new: usize) -> PipelineConfig {
        PipelineConfig { eos_token_ids: vec![eos], min_new_tokens: min_new, ..Default::default() }
    }

    #[test]
    fn greedy_pads_after_eos() {
        let mut d = Decoder::new(&[7, 8], 2, &config(1, 0), 0).unwrap();
        let mut logits = vec![0.0, 5.0, 1.0, /* row 1 */ 0.0, 1.0, 5.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[1, 2]);
        assert_eq!(d.unfinished(), &[false, true]);
        let mut logits = vec![0.0, 5.0, 9.0, 0.0, 5.0, 1.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[0, 1]);
        assert!(d.all_finished());
        assert_eq!(d.history().row(0), &[7, 1, 0]);
    }

    #[test]
    fn min_new_tokens_delays_eos() {
        let mut d = Decoder::new(&[7], 1, &config(1, 2), 0).unwrap();
        let mut logits = vec![0.0, 5.0, 1.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[2]);
        assert_eq!(logits[1], f32::NEG_INFINITY, "processed scores are written back");
        let mut logits = vec![0.0, 5.0, 1.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[2]);
        let mut logits = vec![0.0, 5.0, 1.0];
        assert_eq!(d.step_greedy(&mut logits, 3).unwrap(), &[1]);
    }

    #[test]
    fn bad_shapes_and_dead_rows_are_errors() {
        let mut d = Decoder::new(&[7], 1, &config(1, 0), 0).unwrap();
        assert!(matches!(d.step_greedy(&mut [0.0; 4], 3), Err(CoreError::Shape { .. })));
        let mut dead = vec![f32::NAN, f32::NEG_INFINITY];
        assert_eq!(d.step_greedy(&mut dead, 2), Err(CoreError::NoValidToken { row: 0 }));
        assert!(Decoder::new(&[], 0, &config(1, 0), 0).is_err());
    }
}
