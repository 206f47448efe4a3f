//! Assisted (speculative) decoding: a draft source proposes several tokens per row, the
//! main model scores them all in one forward pass, and the core keeps, per row, the
//! longest prefix the main model agrees with plus one token of the main model's own.
//!
//! Rows accept different numbers of drafts, so each row keeps its own history; the
//! caller pads and masks the model inputs. One round, as Python drives it:
//!
//! 1. drafts: [`AssistedDecoder::begin_round`] + one [`AssistedDecoder::draft_greedy`]
//!    per assistant step, or [`AssistedDecoder::lookup_drafts`] (n-grams of the row itself);
//! 2. the main model runs `[last token, drafts...]` of every row in one pass;
//! 3. [`AssistedDecoder::verify_greedy`] processes those logits position by position with
//!    each row's own history, emits the agreed tokens and commits them.

use rayon::prelude::*;

use crate::error::{CoreError, Result};
use crate::history::TokenHistory;
use crate::logits::{LogitsMut, Pipeline, PipelineConfig, StepContext};
use crate::sampling::argmax;

/// One row: its committed history and the drafts of the current round.
#[derive(Debug, Clone)]
struct Row {
    /// The prompt as the model saw it (padding included) and every committed token.
    history: TokenHistory,
    /// First non-padding position (n-gram lookup ignores the padding).
    start: usize,
    unfinished: bool,
    /// `history` plus this round's drafts: what the draft source has seen.
    scratch: TokenHistory,
    drafts: Vec<i64>,
    /// Whether the draft source still proposes tokens for this row this round.
    open: bool,
}

impl Row {
    fn len(&self) -> usize {
        self.history.len()
    }
}

/// What one verification round did to one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Tokens appended to the row: accepted drafts, then (usually) the main model's own.
    pub emitted: Vec<i64>,
    /// How many drafts were accepted (a prefix of `emitted`).
    pub accepted: usize,
}

pub struct AssistedDecoder {
    rows: Vec<Row>,
    eos: Vec<i64>,
    pad: i64,
    pipeline: Pipeline,
    max_len: usize,
}

impl AssistedDecoder {
    /// `prompts` is row-major `[n_rows, prompt_len]`, `starts[r]` the first non-padding
    /// position of row `r`; rows stop at `max_len` tokens (prompt included).
    pub fn new(prompts: &[i64], n_rows: usize, starts: &[usize], config: &PipelineConfig, pad: i64, max_len: usize) -> Result<Self> {
        if n_rows == 0 || prompts.len() % n_rows != 0 || starts.len() != n_rows {
            return Err(CoreError::Shape {
                name: "input_ids",
                expected: "[batch >= 1, length] with one start per row".into(),
                got: format!("{} values, {} starts for {} rows", prompts.len(), starts.len(), n_rows),
            });
        }
        config.validate(None)?;
        let width = prompts.len() / n_rows;
        if let Some(&s) = starts.iter().find(|&&s| s > width) {
            return Err(CoreError::invalid("attention_mask", format!("start {s} is past the prompt length {width}")));
        }
        let rows = starts
            .iter()
            .enumerate()
            .map(|(r, &start)| {
                let history = TokenHistory::new(&prompts[r * width..(r + 1) * width], 1);
                Row { scratch: history.clone(), history, start, unfinished: true, drafts: Vec::new(), open: false }
            })
            .collect();
        Ok(AssistedDecoder { rows, eos: config.eos_token_ids.clone(), pad, pipeline: config.build(width), max_len })
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    /// Current length of every row (prompt included).
    pub fn lengths(&self) -> Vec<usize> {
        self.rows.iter().map(Row::len).collect()
    }

    pub fn row(&self, r: usize) -> &[i64] {
        self.rows[r].history.row(0)
    }

    /// Rows that stopped at an EOS token or a criterion (not at `max_len`).
    pub fn unfinished(&self) -> Vec<bool> {
        self.rows.iter().map(|r| r.unfinished).collect()
    }

    /// Rows that can still grow: unfinished and shorter than `max_len`.
    pub fn active(&self) -> Vec<bool> {
        self.rows.iter().map(|r| self.is_active(r)).collect()
    }

    pub fn any_active(&self) -> bool {
        self.rows.iter().any(|r| self.is_active(r))
    }

    pub fn finish_rows(&mut self, done: &[bool]) {
        for (row, &d) in self.rows.iter_mut().zip(done) {
            row.unfinished &= !d;
        }
    }

    /// The last token of every row (what the main model is fed first in a round).
    pub fn last_tokens(&self) -> Vec<i64> {
        self.rows.iter().map(|r| *r.history.row(0).last().unwrap_or(&self.pad)).collect()
    }

    /// Every row right-padded with `pad` to the longest: `([rows * width], width)`.
    pub fn sequences(&self) -> (Vec<i64>, usize) {
        let width = self.rows.iter().map(Row::len).max().unwrap_or(0);
        let mut out = vec![self.pad; self.rows.len() * width];
        for (r, row) in self.rows.iter().enumerate() {
            out[r * width..r * width + row.len()].copy_from_slice(row.history.row(0));
        }
        (out, width)
    }

    /// Most drafts a row can still use: it emits at most `max_len - len` tokens, one of
    /// which comes from the main model.
    fn budget(&self, row: &Row) -> usize {
        self.max_len.saturating_sub(row.len() + 1)
    }

    fn is_active(&self, row: &Row) -> bool {
        row.unfinished && row.len() < self.max_len
    }

    /// Starts a drafting round: clears the drafts and opens every active row with budget.
    pub fn begin_round(&mut self) {
        let open: Vec<bool> = self.rows.iter().map(|r| self.is_active(r) && self.budget(r) > 0).collect();
        for (row, open) in self.rows.iter_mut().zip(open) {
            row.drafts.clear();
            row.open = open;
            if open {
                row.scratch = row.history.clone();
            }
        }
    }

    /// Whether any row still takes drafts this round.
    pub fn any_open(&self) -> bool {
        self.rows.iter().any(|r| r.open)
    }

    /// One greedy drafting step from the draft model's logits (`[rows, vocab]`, processed
    /// in place with each row's history plus its drafts). Returns the token to feed the
    /// draft model for every row (pad for rows no longer drafting). A row stops drafting
    /// after an EOS token, after a token whose probability is below `confidence`
    /// (0 disables this), or when its budget is used up.
    pub fn draft_greedy(&mut self, logits: &mut [f32], vocab: usize, confidence: f32) -> Result<Vec<i64>> {
        self.check(logits, vocab, 1)?;
        let budgets: Vec<usize> = self.rows.iter().map(|r| self.budget(r)).collect();
        let (pipeline, eos, pad) = (&self.pipeline, &self.eos, self.pad);
        let picked: Vec<Result<i64>> = self
            .rows
            .par_iter_mut()
            .zip(logits.par_chunks_exact_mut(vocab))
            .zip(budgets)
            .enumerate()
            .map(|(r, ((row, logits), budget))| {
                if !row.open {
                    return Ok(pad);
                }
                pipeline.process(&StepContext { history: &row.scratch }, &mut LogitsMut::new(logits, vocab));
                let t = argmax(logits).ok_or(CoreError::NoValidToken { row: r })?;
                let token = t as i64;
                row.scratch.push(&[token]);
                row.drafts.push(token);
                let unsure = confidence > 0.0 && probability_of(logits, t) < confidence as f64;
                if eos.contains(&token) || unsure || row.drafts.len() >= budget {
                    row.open = false;
                }
                Ok(token)
            })
            .collect();
        picked.into_iter().collect()
    }

    /// Drafts for every active row by prompt lookup: the longest suffix n-gram of the row
    /// (`max_ngram` down to 1, padding excluded) that also occurs earlier; the tokens that
    /// followed its first occurrence, at most `num_tokens`, cut before an EOS token. As
    /// transformers' `PromptLookupCandidateGenerator`, which searches the whole sequence.
    pub fn lookup_drafts(&mut self, max_ngram: usize, num_tokens: usize) -> Result<()> {
        if max_ngram == 0 || num_tokens == 0 {
            return Err(CoreError::invalid(
                if max_ngram == 0 { "max_matching_ngram_size" } else { "prompt_lookup_num_tokens" },
                "must be >= 1",
            ));
        }
        self.begin_round();
        let budgets: Vec<usize> = self.rows.iter().map(|r| self.budget(r)).collect();
        let eos = &self.eos;
        self.rows.par_iter_mut().zip(budgets).for_each(|(row, budget)| {
            if !row.open {
                return;
            }
            let tokens = &row.history.row(0)[row.start..];
            let mut drafts = lookup(tokens, max_ngram, num_tokens.min(budget));
            if let Some(cut) = drafts.iter().position(|t| eos.contains(t)) {
                drafts.truncate(cut);
            }
            row.drafts = drafts;
            row.open = false;
        });
        Ok(())
    }

    /// This round's drafts, right-padded with `pad`: `([rows * width], width)`, plus how
    /// many are real in each row.
    pub fn drafts(&self) -> (Vec<i64>, usize, Vec<usize>) {
        let width = self.rows.iter().map(|r| r.drafts.len()).max().unwrap_or(0);
        let mut out = vec![self.pad; self.rows.len() * width];
        for (r, row) in self.rows.iter().enumerate() {
            out[r * width..r * width + row.drafts.len()].copy_from_slice(&row.drafts);
        }
        (out, width, self.rows.iter().map(|r| r.drafts.len()).collect())
    }

    /// Greedy verification. `logits` is `[rows, width + 1, vocab]` for the inputs
    /// `[last token, drafts...]` (`width` as returned by [`Self::drafts`]). Position `i` of a
    /// row is processed with the row's history plus its first `i` drafts; the row takes the
    /// main model's argmax there and goes on while it equals the draft, stopping at an EOS
    /// token or at `max_len`. Logits of the positions used are left processed. Inactive
    /// rows emit nothing.
    pub fn verify_greedy(&mut self, logits: &mut [f32], vocab: usize) -> Result<Vec<Verdict>> {
        let width = self.rows.iter().map(|r| r.drafts.len()).max().unwrap_or(0);
        self.check(logits, vocab, width + 1)?;
        let (pipeline, eos, max_len) = (&self.pipeline, &self.eos, self.max_len);
        let verdicts: Vec<Result<Verdict>> = self
            .rows
            .par_iter_mut()
            .zip(logits.par_chunks_exact_mut((width + 1) * vocab))
            .enumerate()
            .map(|(r, (row, logits))| {
                let mut verdict = Verdict::default();
                if !row.unfinished {
                    return Ok(verdict);
                }
                for (i, logits) in logits.chunks_exact_mut(vocab).enumerate() {
                    if row.len() >= max_len {
                        break;
                    }
                    pipeline.process(&StepContext { history: &row.history }, &mut LogitsMut::new(logits, vocab));
                    let token = argmax(logits).ok_or(CoreError::NoValidToken { row: r })? as i64;
                    row.history.push(&[token]);
                    verdict.emitted.push(token);
                    let agreed = row.drafts.get(i) == Some(&token);
                    verdict.accepted += agreed as usize;
                    if eos.contains(&token) {
                        row.unfinished = false;
                        break;
                    }
                    if !agreed {
                        break;
                    }
                }
                row.drafts.clear();
                row.open = false;
                Ok(verdict)
            })
            .collect();
        verdicts.into_iter().collect()
    }

    fn check(&self, logits: &[f32], vocab: usize, positions: usize) -> Result<()> {
        let rows = self.rows.len();
        if vocab == 0 || logits.len() != rows * positions * vocab {
            return Err(CoreError::Shape {
                name: "logits",
                expected: format!("[{rows}, {positions}, vocab >= 1]"),
                got: format!("{} values with vocab {vocab}", logits.len()),
            });
        }
        Ok(())
    }
}

/// Softmax probability of entry `t` of a logits row whose maximum is at `t`.
fn probability_of(logits: &[f32], t: usize) -> f64 {
    let max = logits[t];
    let sum: f64 = logits.iter().filter(|x| !x.is_nan()).map(|&x| ((x - max) as f64).exp()).sum();
    1.0 / sum
}

/// Prompt lookup on one row's tokens: see [`AssistedDecoder::lookup_drafts`].
pub fn lookup(tokens: &[i64], max_ngram: usize, num_tokens: usize) -> Vec<i64> {
    let len = tokens.len();
    if num_tokens == 0 || len < 2 {
        return Vec::new();
    }
    for n in (1..=max_ngram.min(len - 1)).rev() {
        let suffix = &tokens[len - n..];
        // The first occurrence wins; the suffix itself (nothing follows it) does not count.
        if let Some(at) = tokens.windows(n).position(|w| w == suffix) {
            let from = at + n;
            if from < len {
                return tokens[from..(from + num_tokens).min(len)].to_vec();
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(prompts: &[i64], rows: usize, eos: i64, max_len: usize) -> AssistedDecoder {
        let config = PipelineConfig { eos_token_ids: vec![eos], ..Default::default() };
        AssistedDecoder::new(prompts, rows, &vec![0; rows], &config, 0, max_len).unwrap()
    }

    /// Logits `[positions, vocab]` whose argmax at each position is the given token.
    fn peaked(tokens: &[usize], vocab: usize) -> Vec<f32> {
        let mut out = vec![0.0; tokens.len() * vocab];
        for (i, &t) in tokens.iter().enumerate() {
            out[i * vocab + t] = 5.0;
        }
        out
    }

    #[test]
    fn lookup_takes_the_longest_ngram_and_its_first_occurrence() {
        // Suffix [7, 8] occurs at 1 and 5; the first occurrence is followed by 9, 4.
        assert_eq!(lookup(&[3, 7, 8, 9, 4, 7, 8, 5, 7, 8], 2, 3), vec![9, 4, 7]);
        // No bigram match: the unigram 8 first occurs at 1.
        assert_eq!(lookup(&[3, 8, 6, 7, 8], 2, 2), vec![6, 7]);
        assert_eq!(lookup(&[1, 2, 3], 2, 5), Vec::<i64>::new());
        assert_eq!(lookup(&[5, 5], 3, 4), vec![5]);
    }

    #[test]
    fn greedy_accepts_the_agreeing_prefix_and_adds_a_token() {
        let mut d = decoder(&[5, 6, 5, 6], 2, 1, 20);
        d.begin_round();
        let mut l = peaked(&[3, 4], 8);
        assert_eq!(d.draft_greedy(&mut l, 8, 0.0).unwrap(), vec![3, 4]);
        let mut l = peaked(&[2, 2], 8);
        assert_eq!(d.draft_greedy(&mut l, 8, 0.0).unwrap(), vec![2, 2]);
        let (drafts, width, counts) = d.drafts();
        assert_eq!((drafts, width, counts), (vec![3, 2, 4, 2], 2, vec![2, 2]));
        // Row 0 agrees with both drafts and gets a bonus token; row 1 disagrees at once.
        let mut logits = [peaked(&[3, 2, 7], 8), peaked(&[6, 2, 2], 8)].concat();
        let v = d.verify_greedy(&mut logits, 8).unwrap();
        assert_eq!(v[0], Verdict { emitted: vec![3, 2, 7], accepted: 2 });
        assert_eq!(v[1], Verdict { emitted: vec![6], accepted: 0 });
        assert_eq!(d.lengths(), vec![5, 3]);
        assert_eq!(d.sequences(), (vec![5, 6, 3, 2, 7, 5, 6, 6, 0, 0], 5));
        assert_eq!(d.last_tokens(), vec![7, 6]);
    }

    #[test]
    fn eos_and_max_len_stop_a_row_mid_round() {
        let mut d = decoder(&[5, 5], 2, 1, 4);
        d.begin_round();
        d.draft_greedy(&mut peaked(&[1, 3], 8), 8, 0.0).unwrap();
        // Row 0 drafted EOS and stops drafting; row 1 has budget 4 - 1 - 1 = 2.
        d.draft_greedy(&mut peaked(&[4, 3], 8), 8, 0.0).unwrap();
        assert!(!d.any_open());
        let (_, width, counts) = d.drafts();
        assert_eq!((width, counts), (2, vec![1, 2]));
        let mut logits = [peaked(&[1, 4, 4], 8), peaked(&[3, 3, 6], 8)].concat();
        let v = d.verify_greedy(&mut logits, 8).unwrap();
        assert_eq!(v[0], Verdict { emitted: vec![1], accepted: 1 });
        assert_eq!(v[1], Verdict { emitted: vec![3, 3, 6], accepted: 2 });
        assert_eq!(d.unfinished(), vec![false, true]);
        assert_eq!(d.active(), vec![false, false], "row 1 is at max_len");
        assert!(!d.any_active());
        d.begin_round();
        assert!(!d.any_open());
        let v = d.verify_greedy(&mut peaked(&[2, 2], 8), 8).unwrap();
        assert!(v.iter().all(|v| v.emitted.is_empty()));
    }

    #[test]
    fn low_confidence_closes_drafting() {
        let mut d = decoder(&[5], 1, 1, 20);
        d.begin_round();
        // Nearly flat logits: the top token has probability ~1/8 < 0.4.
        let mut flat = vec![0.0f32; 8];
        flat[3] = 0.1;
        assert_eq!(d.draft_greedy(&mut flat, 8, 0.4).unwrap(), vec![3]);
        assert!(!d.any_open());
        assert_eq!(d.drafts().2, vec![1]);
    }

    #[test]
    fn processors_see_each_rows_own_length() {
        // min_new_tokens = 2 over a 1-token prompt: EOS is forbidden below length 3.
        let config = PipelineConfig { eos_token_ids: vec![1], min_new_tokens: 2, ..Default::default() };
        let mut d = AssistedDecoder::new(&[5, 5], 2, &[0, 0], &config, 0, 10).unwrap();
        d.begin_round();
        d.draft_greedy(&mut peaked(&[2, 2], 4), 4, 0.0).unwrap();
        // Row 0 accepts the draft, then wants EOS at length 2: suppressed, so 0 (runner-up).
        let mut logits = [peaked(&[2, 1], 4), peaked(&[3, 1], 4)].concat();
        let v = d.verify_greedy(&mut logits, 4).unwrap();
        assert_eq!((v[0].emitted.clone(), v[1].emitted.clone()), (vec![2, 0], vec![3]));
        assert_eq!(logits[4 + 1], f32::NEG_INFINITY, "used positions are left processed");
        // Now row 0 has length 3 (EOS allowed) and row 1 length 2 (still suppressed).
        let v = d.verify_greedy(&mut [peaked(&[1], 4), peaked(&[1], 4)].concat(), 4).unwrap();
        assert_eq!((v[0].emitted.clone(), v[1].emitted.clone()), (vec![1], vec![0]));
        assert_eq!((d.row(0), d.row(1)), (&[5, 2, 0, 1][..], &[5, 3, 0][..]));
        assert_eq!(d.unfinished(), vec![false, true]);
    }

    #[test]
    fn shapes_are_checked() {
        let mut d = decoder(&[5, 6], 1, 1, 10);
        assert!(d.verify_greedy(&mut [0.0; 7], 8).is_err());
        assert!(d.draft_greedy(&mut [0.0; 8], 4, 0.0).is_err());
        assert!(d.lookup_drafts(0, 3).is_err());
        assert!(AssistedDecoder::new(&[1, 2, 3], 2, &[0, 0], &PipelineConfig::default(), 0, 5).is_err());
        assert!(AssistedDecoder::new(&[1, 2], 1, &[3], &PipelineConfig::default(), 0, 5).is_err());
    }
}
