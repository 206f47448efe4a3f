//! Contrastive search (Su et al., 2022, "A Contrastive Framework for Neural Text Generation").
//!
//! Every step, each row's `top_k` most probable tokens are run through the model by the
//! caller, all rows and candidates in one batched forward pass. The core then scores
//! candidate `c` of row `r` as
//!
//! ```text
//! (1 - α) · p(c) - α · max_s cos(h_c, h_s)
//! ```
//!
//! where `h_c` is the candidate's last-layer hidden state and `h_s` ranges over the row's
//! context (the prompt without padding, then every chosen token), and keeps the best.
//! The context is stored unit-normalised, so each cosine is one dot product.

use std::sync::atomic::AtomicUsize;

use rayon::prelude::*;

use crate::error::{CoreError, Result};
use crate::history::TokenHistory;
use crate::logits::math::{exp, sum_exp};
use crate::logits::{LogitsMut, Pipeline, PipelineConfig, StepContext};
use crate::parallel::worth_parallel;
use crate::row_status::RowStatus;

const LANES: usize = 8;

/// Dot product in `LANES` independent accumulators, so LLVM vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Appends `v / |v|` to `out` (the norm is accumulated in f64; a zero vector stays zero).
fn push_unit(v: &[f32], out: &mut Vec<f32>) {
    let norm = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt() as f32;
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    out.extend(v.iter().map(|&x| x * inv));
}

/// The `k` largest entries of `row` (NaN counts as -inf), best first, ties to the lower
/// index, with their softmax probabilities over the whole row (computed as torch does,
/// `exp(x - max) / sum`; when the row holds `+inf`, its softmax's limit: the entries at
/// `+inf` share the probability, as in sampling). `None` when no entry is above -inf.
pub fn top_k_probs(row: &[f32], k: usize, ids: &mut [i64], probs: &mut [f32]) -> Option<()> {
    debug_assert!(k >= 1 && ids.len() == k && probs.len() == k && k <= row.len());
    let clean = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (i, &x) in row.iter().enumerate() {
        let x = clean(x);
        if best.len() == k && x <= best[k - 1].0 {
            continue;
        }
        // Strictly greater moves ahead, so among equal values the earlier index stays first.
        let at = best.iter().position(|&(v, _)| x > v).unwrap_or(best.len());
        best.insert(at, (x, i));
        best.truncate(k);
    }
    let max = best[0].0;
    if max == f32::NEG_INFINITY {
        return None;
    }
    if max == f32::INFINITY {
        let share = 1.0 / row.iter().filter(|&&x| x == f32::INFINITY).count() as f32;
        for (j, &(v, i)) in best.iter().enumerate() {
            ids[j] = i as i64;
            probs[j] = if v == f32::INFINITY { share } else { 0.0 };
        }
        return Some(());
    }
    let inv = (1.0 / sum_exp(row, max)) as f32;
    for (j, &(v, i)) in best.iter().enumerate() {
        ids[j] = i as i64;
        probs[j] = exp(v - max) * inv;
    }
    Some(())
}

/// Degeneration-penalty scoring over each row's context of hidden states.
#[derive(Debug, Clone)]
pub struct ContrastiveScorer {
    alpha: f32,
    top_k: usize,
    hidden: usize,
    /// Per row: unit-normalised hidden states, `[positions, hidden]` row-major.
    context: Vec<Vec<f32>>,
}

/// One row's slot in [`ContrastiveSearch::candidates`]: index, logits, then its candidate ids
/// and probabilities to fill.
type CandidateRow<'a> = (usize, (&'a [f32], (&'a mut [i64], &'a mut [f32])));

impl ContrastiveScorer {
    /// `hidden` may be 0: the first [`Self::add_context`] then fixes it.
    pub fn new(n_rows: usize, top_k: usize, alpha: f32, hidden: usize) -> Result<Self> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(CoreError::invalid(
                "penalty_alpha",
                format!("must be in [0, 1], got {alpha}"),
            ));
        }
        if top_k == 0 {
            return Err(CoreError::invalid(
                "top_k",
                "must be >= 1 for contrastive search, got 0",
            ));
        }
        Ok(ContrastiveScorer {
            alpha,
            top_k,
            hidden,
            context: vec![Vec::new(); n_rows],
        })
    }

    pub fn n_rows(&self) -> usize {
        self.context.len()
    }

    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// Number of context positions kept for row `r`.
    pub fn context_len(&self, r: usize) -> usize {
        self.context[r].len().checked_div(self.hidden).unwrap_or(0)
    }

    /// Adds `positions` hidden states per row (`hidden` is `[rows, positions, hidden_size]`);
    /// positions whose `keep` entry (`[rows, positions]`) is false (padding) are left out.
    pub fn add_context(
        &mut self,
        hidden: &[f32],
        positions: usize,
        hidden_size: usize,
        keep: Option<&[bool]>,
    ) -> Result<()> {
        let rows = self.n_rows();
        if hidden_size == 0
            || (self.hidden != 0 && hidden_size != self.hidden)
            || hidden.len() != rows * positions * hidden_size
        {
            return Err(CoreError::Shape {
                name: "hidden_states",
                expected: format!(
                    "[{rows}, positions, {}]",
                    if self.hidden == 0 {
                        "hidden >= 1".to_string()
                    } else {
                        self.hidden.to_string()
                    }
                ),
                got: format!(
                    "{} values for {positions} positions of size {hidden_size}",
                    hidden.len()
                ),
            });
        }
        if let Some(k) = keep {
            if k.len() != rows * positions {
                return Err(CoreError::Shape {
                    name: "attention_mask",
                    expected: format!("[{rows}, {positions}]"),
                    got: format!("{} values", k.len()),
                });
            }
        }
        self.hidden = hidden_size;
        let per_row = positions * hidden_size;
        let add = |(r, ctx): (usize, &mut Vec<f32>)| {
            let block = &hidden[r * per_row..(r + 1) * per_row];
            for (s, h) in block.chunks_exact(hidden_size).enumerate() {
                if keep.map_or(true, |k| k[r * positions + s]) {
                    push_unit(h, ctx);
                }
            }
        };
        if worth_parallel(rows, hidden.len()) {
            self.context.par_iter_mut().enumerate().for_each(add);
        } else {
            self.context.iter_mut().enumerate().for_each(add);
        }
        Ok(())
    }

    /// Scores each row's candidates and returns the index (in `0..top_k`) of the best one;
    /// its hidden state joins the row's context. `probs` is `[rows, top_k]`, `candidates`
    /// `[rows * top_k, hidden_size]` in the same order.
    pub fn select(&mut self, probs: &[f32], candidates: &[f32]) -> Result<Vec<usize>> {
        let (rows, k, h) = (self.n_rows(), self.top_k, self.hidden);
        if h == 0 || candidates.len() != rows * k * h {
            return Err(CoreError::Shape {
                name: "candidate_hidden_states",
                expected: format!("[{}, {h}] (rows * top_k, hidden)", rows * k),
                got: format!("{} values", candidates.len()),
            });
        }
        if probs.len() != rows * k {
            return Err(CoreError::Shape {
                name: "probs",
                expected: format!("[{rows}, {k}]"),
                got: format!("{} values", probs.len()),
            });
        }
        let alpha = self.alpha;
        let work = (self.context.iter().map(Vec::len).sum::<usize>() + rows * h) * k;
        let score = |(r, ctx): (usize, &mut Vec<f32>)| {
            let mut units = Vec::with_capacity(k * h);
            for c in 0..k {
                push_unit(
                    &candidates[(r * k + c) * h..(r * k + c + 1) * h],
                    &mut units,
                );
            }
            let mut best: Option<(usize, f32)> = None;
            for (c, unit) in units.chunks_exact(h).enumerate() {
                // No context (every position masked) gives f32::MIN, as transformers' mask does.
                let penalty = ctx
                    .chunks_exact(h)
                    .map(|s| dot(s, unit))
                    .fold(f32::MIN, f32::max);
                let score = (1.0 - alpha) * probs[r * k + c] - alpha * penalty;
                if !score.is_nan() && best.map_or(true, |(_, b)| score > b) {
                    best = Some((c, score));
                }
            }
            let c = best.map_or(0, |(c, _)| c);
            ctx.extend_from_slice(&units[c * h..(c + 1) * h]);
            c
        };
        Ok(if worth_parallel(rows, work) {
            self.context.par_iter_mut().enumerate().map(score).collect()
        } else {
            self.context.iter_mut().enumerate().map(score).collect()
        })
    }
}

/// The whole per-generation state of contrastive search: history, finished rows, the
/// logits pipeline and the scorer. Python runs the two forward passes per step.
pub struct ContrastiveSearch {
    scorer: ContrastiveScorer,
    history: TokenHistory,
    status: RowStatus,
    eos: Vec<i64>,
    pad: i64,
    /// Processors: run before the user's (Python) logits processors.
    processors: Pipeline,
    /// Renormalisation if configured: runs after them.
    warpers: Pipeline,
    /// Both, for steps without user processors.
    full: Pipeline,
    config: PipelineConfig,
    /// Vocabulary size the configured token ids were checked against (0: not yet).
    checked_vocab: AtomicUsize,
    candidates: Vec<i64>,
    probs: Vec<f32>,
    next: Vec<i64>,
}

impl ContrastiveSearch {
    /// `prompts` is row-major `[n_rows, prompt_len]` (what the decoder has seen so far).
    pub fn new(
        prompts: &[i64],
        n_rows: usize,
        config: &PipelineConfig,
        pad: i64,
        top_k: usize,
        alpha: f32,
    ) -> Result<Self> {
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
        // Contrastive search never samples: the "warpers" are at most the renormalisation.
        let config = PipelineConfig {
            do_sample: false,
            ..config.clone()
        };
        Ok(ContrastiveSearch {
            scorer: ContrastiveScorer::new(n_rows, top_k, alpha, 0)?,
            processors: config.build_processors(history.prompt_len()),
            warpers: config.build_warpers(1),
            full: config.build_all(history.prompt_len(), 1),
            eos: config.eos_token_ids.clone(),
            config,
            checked_vocab: AtomicUsize::new(0),
            history,
            status: RowStatus::new(n_rows),
            pad,
            candidates: Vec::new(),
            probs: Vec::new(),
            next: vec![0; n_rows],
        })
    }

    pub fn scorer(&self) -> &ContrastiveScorer {
        &self.scorer
    }

    pub fn history(&self) -> &TokenHistory {
        &self.history
    }

    /// See [`ContrastiveScorer::add_context`].
    pub fn add_context(
        &mut self,
        hidden: &[f32],
        positions: usize,
        hidden_size: usize,
        keep: Option<&[bool]>,
    ) -> Result<()> {
        self.scorer
            .add_context(hidden, positions, hidden_size, keep)
    }

    /// Runs the processors (before the user's) over `logits` (`[rows, vocab]`) in place.
    pub fn process(&self, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.run(&self.processors, logits, vocab)
    }

    /// Runs what comes after the user's processors (renormalisation) in place.
    pub fn warp(&self, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.run(&self.warpers, logits, vocab)
    }

    /// Every stage, then [`Self::candidates`]: one step without user processors.
    pub fn step(&mut self, logits: &mut [f32], vocab: usize) -> Result<&[i64]> {
        self.run(&self.full, logits, vocab)?;
        self.candidates(logits, vocab)
    }

    fn run(&self, pipeline: &Pipeline, logits: &mut [f32], vocab: usize) -> Result<()> {
        self.check_logits(logits, vocab)?;
        pipeline.process(
            &StepContext::new(&self.history),
            &mut LogitsMut::new(logits, vocab),
        );
        Ok(())
    }

    /// The `top_k` candidates of every row (`[rows, top_k]`, best first) from processed
    /// logits; their probabilities are kept for [`Self::select`].
    pub fn candidates(&mut self, logits: &[f32], vocab: usize) -> Result<&[i64]> {
        self.check_logits(logits, vocab)?;
        let k = self.scorer.top_k();
        if k > vocab {
            return Err(CoreError::invalid(
                "top_k",
                format!("{k} exceeds the vocabulary size {vocab}"),
            ));
        }
        let rows = self.history.n_rows();
        self.candidates = vec![0; rows * k];
        self.probs = vec![0.0; rows * k];
        let pick = |(r, (row, (ids, probs))): CandidateRow<'_>| {
            top_k_probs(row, k, ids, probs).is_none().then_some(r)
        };
        let failed = if worth_parallel(rows, logits.len()) {
            logits
                .par_chunks_exact(vocab)
                .zip(
                    self.candidates
                        .par_chunks_exact_mut(k)
                        .zip(self.probs.par_chunks_exact_mut(k)),
                )
                .enumerate()
                .filter_map(pick)
                .min()
        } else {
            logits
                .chunks_exact(vocab)
                .zip(
                    self.candidates
                        .chunks_exact_mut(k)
                        .zip(self.probs.chunks_exact_mut(k)),
                )
                .enumerate()
                .filter_map(pick)
                .min()
        };
        match failed {
            Some(row) => Err(CoreError::NoValidToken { row }),
            None => Ok(&self.candidates),
        }
    }

    /// Picks each row's candidate from their hidden states (`[rows * top_k, hidden]`),
    /// appends it to the history (pad for finished rows) and returns `(tokens, chosen)`,
    /// `chosen[r]` being the index of the picked candidate within row `r`'s `top_k`.
    pub fn select(&mut self, candidate_hidden: &[f32]) -> Result<(&[i64], Vec<usize>)> {
        let k = self.scorer.top_k();
        if self.candidates.len() != self.history.n_rows() * k {
            return Err(CoreError::invalid(
                "candidates",
                "select called before candidates for this step",
            ));
        }
        #[cfg(feature = "grammar")]
        if self.config.grammar.is_some() {
            // A grammar leaves fewer than top_k tokens possible at times; a candidate of
            // probability 0 is one it forbids and must not win on its degeneration penalty.
            self.probs
                .iter_mut()
                .filter(|p| **p <= 0.0)
                .for_each(|p| *p = f32::NEG_INFINITY);
        }
        let chosen = self.scorer.select(&self.probs, candidate_hidden)?;
        for (r, &c) in chosen.iter().enumerate() {
            self.next[r] = if self.status.is_unfinished(r) {
                self.candidates[r * k + c]
            } else {
                self.pad
            };
        }
        self.candidates.clear();
        self.history.push(&self.next);
        self.status.finish_at_eos(&self.next, &self.eos);
        Ok((&self.next, chosen))
    }

    fn check_logits(&self, logits: &[f32], vocab: usize) -> Result<()> {
        crate::decode::check_step_logits(
            logits,
            self.history.n_rows(),
            vocab,
            &self.config,
            &self.checked_vocab,
        )
    }
}

crate::row_status::row_status_field!(ContrastiveSearch);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row_status::HasRowStatus;
    use proptest::prelude::*;

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        let row = [1.0, 3.0, f32::NAN, 3.0, 2.0, f32::NEG_INFINITY];
        let (mut ids, mut probs) = ([0i64; 3], [0f32; 3]);
        top_k_probs(&row, 3, &mut ids, &mut probs).unwrap();
        assert_eq!(ids, [1, 3, 4]);
        let z: f64 = [1.0f64, 3.0, 3.0, 2.0]
            .iter()
            .map(|x| (x - 3.0).exp())
            .sum();
        assert!((probs[0] as f64 - 1.0 / z).abs() < 1e-6 && probs[0] == probs[1]);
        assert!(top_k_probs(&[f32::NAN, f32::NEG_INFINITY], 1, &mut [0], &mut [0.0]).is_none());
    }

    /// `+inf` logits are certain: the tokens at `+inf` share the probability (before, the
    /// row was refused as having no finite value).
    #[test]
    fn inf_logits_share_the_probability() {
        let inf = f32::INFINITY;
        let (mut ids, mut probs) = ([0i64; 3], [0f32; 3]);
        top_k_probs(&[1.0, inf, 2.0, inf], 3, &mut ids, &mut probs).unwrap();
        assert_eq!((ids, probs), ([1, 3, 2], [0.5, 0.5, 0.0]));
        top_k_probs(&[inf; 4], 3, &mut ids, &mut probs).unwrap();
        assert_eq!((ids, probs), ([0, 1, 2], [0.25; 3]));
    }

    #[test]
    fn penalty_prefers_the_dissimilar_candidate() {
        // Context: one position along x. Candidate 0 is parallel to it, candidate 1 orthogonal.
        let mut s = ContrastiveScorer::new(1, 2, 0.6, 0).unwrap();
        s.add_context(&[2.0, 0.0], 1, 2, None).unwrap();
        let chosen = s.select(&[0.55, 0.45], &[1.0, 0.0, 0.0, 3.0]).unwrap();
        // 0.4*0.55 - 0.6*1 = -0.38 < 0.4*0.45 - 0 = 0.18
        assert_eq!(chosen, vec![1]);
        assert_eq!(s.context_len(0), 2);
        // alpha = 0 is plain greedy over the candidates.
        let mut g = ContrastiveScorer::new(1, 2, 0.0, 2).unwrap();
        g.add_context(&[2.0, 0.0], 1, 2, None).unwrap();
        assert_eq!(
            g.select(&[0.55, 0.45], &[1.0, 0.0, 0.0, 3.0]).unwrap(),
            vec![0]
        );
    }

    #[test]
    fn masked_positions_are_not_context() {
        let mut s = ContrastiveScorer::new(2, 2, 0.5, 0).unwrap();
        // Row 0 keeps only its second position (along y); row 1 keeps nothing.
        let hidden = [1.0, 0.0, 0.0, 1.0, /* row 1 */ 1.0, 0.0, 1.0, 0.0];
        s.add_context(&hidden, 2, 2, Some(&[false, true, false, false]))
            .unwrap();
        assert_eq!((s.context_len(0), s.context_len(1)), (1, 0));
        let chosen = s
            .select(
                &[0.5, 0.5, 0.5, 0.4],
                &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0],
            )
            .unwrap();
        // Row 0: the x candidate is orthogonal to the kept context. Row 1: no context, so
        // every penalty is the same and the first candidate wins (as in transformers).
        assert_eq!(chosen, vec![0, 0]);
    }

    #[test]
    fn shape_and_argument_errors() {
        assert!(ContrastiveScorer::new(1, 2, 1.5, 0).is_err());
        assert!(ContrastiveScorer::new(1, 0, 0.5, 0).is_err());
        let mut s = ContrastiveScorer::new(1, 2, 0.5, 0).unwrap();
        assert!(
            s.select(&[0.5, 0.5], &[1.0; 4]).is_err(),
            "no hidden size yet"
        );
        assert!(s.add_context(&[1.0; 3], 1, 2, None).is_err());
        s.add_context(&[1.0; 2], 1, 2, None).unwrap();
        assert!(
            s.add_context(&[1.0; 3], 1, 3, None).is_err(),
            "hidden size is fixed"
        );
        assert!(s.select(&[0.5], &[1.0; 4]).is_err());
    }

    #[test]
    fn search_state_commits_pads_and_stops_at_eos() {
        let config = PipelineConfig {
            eos_token_ids: vec![1],
            ..Default::default()
        };
        let mut cs = ContrastiveSearch::new(&[5, 6], 2, &config, 0, 2, 0.5).unwrap();
        cs.add_context(&[1.0, 0.0, 1.0, 0.0], 1, 2, None).unwrap();
        let logits = [0.0, 3.0, 2.0, /* row 1 */ 0.0, 1.0, 4.0];
        assert_eq!(cs.candidates(&logits, 3).unwrap(), &[1, 2, 2, 1]);
        assert!(cs.select(&[1.0; 3]).is_err());
        // Row 0: candidate 1 (token 2) is orthogonal to the context; row 1: candidate 0 wins on p.
        let (tokens, chosen) = cs
            .select(&[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
            .unwrap();
        assert_eq!((tokens.to_vec(), chosen), (vec![2, 2], vec![1, 0]));
        cs.candidates(&[0.0, 9.0, 0.0, 0.0, 9.0, 0.0], 3).unwrap();
        let (tokens, _) = cs
            .select(&[0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
            .unwrap();
        assert_eq!(tokens, &[1, 1]);
        assert!(cs.row_status().all_finished());
        cs.candidates(&[0.0, 9.0, 0.0, 0.0, 9.0, 0.0], 3).unwrap();
        assert_eq!(
            cs.select(&[1.0; 8]).unwrap().0,
            &[0, 0],
            "finished rows get pad"
        );
        assert_eq!(cs.history().row(0), &[5, 2, 1, 0]);
        assert_eq!(
            cs.candidates(&[f32::NAN; 6], 3).unwrap_err(),
            CoreError::NoValidToken { row: 0 }
        );
        assert!(cs.candidates(&[0.0; 2], 1).is_err(), "top_k > vocab");
    }

    /// Reference: the formula evaluated directly in f64.
    fn reference(ctx: &[Vec<f64>], probs: &[f64], cands: &[Vec<f64>], alpha: f64) -> Vec<f64> {
        let unit = |v: &Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<_>>()
        };
        cands
            .iter()
            .zip(probs)
            .map(|(c, p)| {
                let uc = unit(c);
                let pen = ctx
                    .iter()
                    .map(|s| unit(s).iter().zip(&uc).map(|(a, b)| a * b).sum::<f64>())
                    .fold(f64::MIN, f64::max);
                (1.0 - alpha) * p - alpha * pen
            })
            .collect()
    }

    proptest! {
        #[test]
        fn selection_matches_the_formula(
            ctx in prop::collection::vec(prop::collection::vec(-2.0f64..2.0, 5), 1..6),
            cands in prop::collection::vec(prop::collection::vec(-2.0f64..2.0, 5), 3),
            probs in prop::collection::vec(0.01f64..1.0, 3),
            alpha in 0.0f64..1.0,
        ) {
            prop_assume!(ctx.iter().chain(&cands).all(|v| v.iter().map(|x| x * x).sum::<f64>() > 1e-3));
            let scores = reference(&ctx, &probs, &cands, alpha);
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
            prop_assume!(sorted[0] - sorted[1] > 1e-4); // no near-ties
            let best = scores.iter().position(|&s| s == sorted[0]).unwrap();
            let mut s = ContrastiveScorer::new(1, 3, alpha as f32, 0).unwrap();
            let flat: Vec<f32> = ctx.iter().flatten().map(|&x| x as f32).collect();
            s.add_context(&flat, ctx.len(), 5, None).unwrap();
            let cflat: Vec<f32> = cands.iter().flatten().map(|&x| x as f32).collect();
            let p: Vec<f32> = probs.iter().map(|&x| x as f32).collect();
            prop_assert_eq!(s.select(&p, &cflat).unwrap(), vec![best]);
        }

        #[test]
        fn top_k_agrees_with_a_full_sort(row in prop::collection::vec(-5.0f32..5.0, 1..40), k in 1usize..6) {
            let k = k.min(row.len());
            let (mut ids, mut probs) = (vec![0i64; k], vec![0f32; k]);
            top_k_probs(&row, k, &mut ids, &mut probs).unwrap();
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
            let expected: Vec<i64> = order[..k].iter().map(|&i| i as i64).collect();
            prop_assert_eq!(ids, expected);
            prop_assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs.iter().sum::<f32>() <= 1.0 + 1e-5);
        }
    }
}
