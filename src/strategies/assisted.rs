//! Assisted (speculative) decoding: a draft source proposes several tokens per row, the
//! main model scores them all in one forward pass, and the core keeps, per row, the
//! longest prefix the main model agrees with plus one token of the main model's own.
//!
//! Rows accept different numbers of drafts, so every row has its own history and its
//! own processor pipeline (built from the row's part of the settings: its padding
//! length, its encoder input); the caller pads and masks the model inputs. One round:
//!
//! 1. drafts: [`AssistedDecoder::begin_round`] then one [`AssistedDecoder::draft`] per
//!    assistant forward pass, or [`AssistedDecoder::lookup_drafts`] (n-grams of the row);
//! 2. the main model runs `[last token, drafts...]` of every row in one pass;
//! 3. [`AssistedDecoder::verify`] processes those logits position by position, each with
//!    the row's history plus the drafts before it, emits the tokens and commits them.
//!
//! Greedy keeps drafts while they equal the main model's argmax. Sampling uses the
//! speculative rejection rule (Leviathan et al. 2023, algorithm 1): draft `d` drawn from
//! the assistant's `q` is kept with probability `min(1, p(d) / q(d))`, and the first
//! rejected position draws from `max(0, p - q)` renormalised, so every emitted token is
//! distributed as the main model's `p`. Drafts without a distribution (prompt lookup)
//! are checked by drawing from `p` and comparing. Draws come from the row's
//! counter-based key at the token's position, so they do not depend on the batch.

use rayon::prelude::*;

use crate::buffers;
use crate::error::{CoreError, Result};
use crate::history::TokenHistory;
use crate::logits::math::softmax_into;
use crate::logits::{LogitsMut, Pipeline, PipelineConfig, StepContext};
use crate::rng;
use crate::row_status::RowStatus;
use crate::sampling::argmax;

/// What a draw at a token position is for (part of the counter, so they never collide).
#[derive(Clone, Copy)]
enum Purpose {
    Draft = 0,
    Accept = 1,
    Sample = 2,
}

/// The draw for `purpose` at a token position of a row (counted without padding).
fn uniform(key: u64, position: usize, purpose: Purpose) -> f64 {
    rng::uniform(key, position as u64 * 3 + purpose as u64)
}

/// Index drawn from the probabilities `probs` (any non-negative weights) by inverse CDF.
fn draw_weights(probs: &[f32], u: f64) -> Option<usize> {
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let target = u * total;
    let mut cum = 0.0f64;
    let mut last = None;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cum += p as f64;
            last = Some(i);
            if cum > target {
                break;
            }
        }
    }
    last
}

/// `f(row index, row, its logits)` for every row, in parallel when the work is large.
fn for_rows<T, F>(rows: &mut [Row], logits: &mut [f32], chunk: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, &mut Row, &mut [f32]) -> T + Sync + Send,
{
    if crate::parallel::worth_parallel(rows.len(), logits.len()) {
        rows.par_iter_mut()
            .zip(logits.par_chunks_exact_mut(chunk))
            .enumerate()
            .map(|(r, (row, l))| f(r, row, l))
            .collect()
    } else {
        rows.iter_mut()
            .zip(logits.chunks_exact_mut(chunk))
            .enumerate()
            .map(|(r, (row, l))| f(r, row, l))
            .collect()
    }
}

/// One row: its committed history, its pipeline, and the drafts of the current round.
struct Row {
    /// The prompt as the model saw it (padding included) and every committed token.
    history: TokenHistory,
    pipeline: Pipeline,
    key: u64,
    /// First non-padding position (n-gram lookup ignores the padding).
    start: usize,
    /// `history` plus this round's drafts: what the draft source has seen.
    scratch: TokenHistory,
    drafts: Vec<i64>,
    /// The distribution each draft was drawn from (sampling with a draft model only).
    draft_probs: Vec<Vec<f32>>,
    /// Whether the draft source still proposes tokens for this row this round.
    open: bool,
}

impl Row {
    fn len(&self) -> usize {
        self.history.len()
    }

    fn process(&self, history: &TokenHistory, logits: &mut [f32]) {
        let vocab = logits.len();
        self.pipeline.process(
            &StepContext::new(history),
            &mut LogitsMut::new(logits, vocab),
        );
    }

    /// Greedy verification of this round's drafts into `scratch` (nothing is committed
    /// yet); see [`AssistedDecoder::verify`].
    fn verify_greedy(
        &mut self,
        r: usize,
        logits: &mut [f32],
        vocab: usize,
        eos: &[i64],
        max_len: usize,
    ) -> Result<Verdict> {
        let mut verdict = Verdict::default();
        self.scratch = self.history.clone();
        for (i, logits) in logits.chunks_exact_mut(vocab).enumerate() {
            if self.scratch.len() >= max_len {
                break;
            }
            self.process(&self.scratch, logits);
            let token = argmax(logits).ok_or(CoreError::NoValidToken { row: r })? as i64;
            let agreed = self.drafts.get(i) == Some(&token);
            if self.commit(token, agreed, eos, &mut verdict) || !agreed {
                break;
            }
        }
        Ok(verdict)
    }

    /// Speculative-sampling verification into `scratch`; see the module documentation.
    fn verify_sample(
        &mut self,
        r: usize,
        logits: &mut [f32],
        vocab: usize,
        eos: &[i64],
        max_len: usize,
    ) -> Result<Verdict> {
        let mut verdict = Verdict::default();
        let mut p = Vec::with_capacity(vocab);
        self.scratch = self.history.clone();
        for (i, logits) in logits.chunks_exact_mut(vocab).enumerate() {
            if self.scratch.len() >= max_len {
                break;
            }
            // Draws are indexed by the token's position without padding: batch-independent.
            let position = self.scratch.len() - self.start;
            self.process(&self.scratch, logits);
            if !softmax_into(logits, &mut p) {
                return Err(CoreError::NoValidToken { row: r });
            }
            let draft = self
                .drafts
                .get(i)
                .map(|&d| d as usize)
                .filter(|&d| d < vocab);
            let (token, agreed) = match (draft, self.draft_probs.get(i)) {
                (Some(d), Some(q)) => {
                    let ratio = p[d] as f64 / q[d] as f64;
                    if uniform(self.key, position, Purpose::Accept) <= ratio {
                        (d, true)
                    } else {
                        // Residual distribution max(0, p - q); p itself if that is all zero.
                        let residual: Vec<f32> =
                            p.iter().zip(q).map(|(&a, &b)| (a - b).max(0.0)).collect();
                        let u = uniform(self.key, position, Purpose::Sample);
                        let t = draw_weights(&residual, u).or_else(|| draw_weights(&p, u));
                        (t.ok_or(CoreError::NoValidToken { row: r })?, false)
                    }
                }
                _ => {
                    let t = draw_weights(&p, uniform(self.key, position, Purpose::Sample));
                    let t = t.ok_or(CoreError::NoValidToken { row: r })?;
                    (t, draft == Some(t))
                }
            };
            if self.commit(token as i64, agreed, eos, &mut verdict) || !agreed {
                break;
            }
        }
        Ok(verdict)
    }

    /// Appends `token` to `scratch` and the verdict; true when it is an EOS token.
    fn commit(&mut self, token: i64, agreed: bool, eos: &[i64], verdict: &mut Verdict) -> bool {
        self.scratch.push(&[token]);
        verdict.emitted.push(token);
        verdict.accepted += agreed as usize;
        verdict.ended = eos.contains(&token);
        verdict.ended
    }

    /// Commits the verdict's tokens, at most `limit` unless they end the row.
    fn settle(&mut self, verdict: &mut Verdict, limit: usize, max_len: usize) {
        if !verdict.ended && self.len() + verdict.emitted.len() < max_len {
            verdict.emitted.truncate(limit);
            verdict.accepted = verdict.accepted.min(limit);
        }
        for &t in &verdict.emitted {
            self.history.push(&[t]);
        }
    }
}

/// What one verification round did to one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Tokens appended to the row: accepted drafts, then (usually) one of the main model's.
    pub emitted: Vec<i64>,
    /// How many drafts were accepted (they are the first `accepted` tokens of `emitted`).
    pub accepted: usize,
    /// Whether the last emitted token is an EOS token (the row is finished).
    pub ended: bool,
}

pub struct AssistedDecoder {
    rows: Vec<Row>,
    /// Rows that ended at an EOS token or a criterion (not at `max_len`) are finished.
    status: RowStatus,
    eos: Vec<i64>,
    pad: i64,
    do_sample: bool,
    max_len: usize,
    config: PipelineConfig,
    checked_vocab: usize,
}

/// Row `r`'s entry of a per-row list that has one entry per row or per batch entry.
fn entry_of<T: Clone>(list: &[T], r: usize, rows: usize) -> Vec<T> {
    if list.is_empty() {
        Vec::new()
    } else {
        vec![list[r / (rows / list.len())].clone()]
    }
}

impl AssistedDecoder {
    /// `prompts` is row-major `[n_rows, prompt_len]`, `starts[r]` the first non-padding
    /// position of row `r`; rows stop at `max_len` tokens (prompt included). `keys` are the
    /// rows' sampling keys (see [`crate::rng::row_keys`]); empty for greedy.
    pub fn new(
        prompts: &[i64],
        n_rows: usize,
        starts: &[usize],
        config: &PipelineConfig,
        pad: i64,
        max_len: usize,
        keys: &[u64],
    ) -> Result<Self> {
        if n_rows == 0 || prompts.len() % n_rows != 0 || starts.len() != n_rows {
            return Err(CoreError::Shape {
                name: "input_ids",
                expected: "[batch >= 1, length] with one start per row".into(),
                got: format!(
                    "{} values, {} starts for {} rows",
                    prompts.len(),
                    starts.len(),
                    n_rows
                ),
            });
        }
        if config.do_sample && keys.len() != n_rows {
            return Err(CoreError::Shape {
                name: "seed",
                expected: format!("{n_rows} row keys"),
                got: format!("{}", keys.len()),
            });
        }
        config.validate(None)?;
        config.validate_rows(n_rows)?;
        let width = prompts.len() / n_rows;
        if let Some(&s) = starts.iter().find(|&&s| s > width) {
            return Err(CoreError::invalid(
                "attention_mask",
                format!("start {s} is past the prompt length {width}"),
            ));
        }
        let shared = PipelineConfig {
            prompt_ignore_lengths: Vec::new(),
            encoder_input_ids: Vec::new(),
            ..config.clone()
        };
        let rows: Vec<Row> = starts
            .iter()
            .enumerate()
            .map(|(r, &start)| {
                let own = PipelineConfig {
                    prompt_ignore_lengths: entry_of(&config.prompt_ignore_lengths, r, n_rows),
                    encoder_input_ids: entry_of(&config.encoder_input_ids, r, n_rows),
                    // the row's matcher follows its own history (drafts in, rejected ones out)
                    #[cfg(feature = "grammar")]
                    grammar: config.grammar.as_ref().map(|g| g.for_rows(vec![r])),
                    prefix_allowed: config.prefix_allowed.as_ref().map(|p| p.for_row(r)),
                    ..shared.clone()
                };
                let history = TokenHistory::new(&prompts[r * width..(r + 1) * width], 1);
                Row {
                    scratch: history.clone(),
                    history,
                    pipeline: own.build_all(width, 1),
                    key: keys.get(r).copied().unwrap_or(0),
                    start,
                    drafts: Vec::new(),
                    draft_probs: Vec::new(),
                    open: false,
                }
            })
            .collect();
        Ok(AssistedDecoder {
            status: RowStatus::new(rows.len()),
            rows,
            eos: config.eos_token_ids.clone(),
            pad,
            do_sample: config.do_sample,
            max_len,
            config: shared,
            checked_vocab: 0,
        })
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    pub fn pad(&self) -> i64 {
        self.pad
    }

    /// Current length of every row (prompt included).
    pub fn lengths(&self) -> Vec<usize> {
        self.rows.iter().map(Row::len).collect()
    }

    pub fn row(&self, r: usize) -> &[i64] {
        self.rows[r].history.row(0)
    }

    /// Rows that can still grow: unfinished and shorter than `max_len`.
    pub fn active(&self) -> Vec<bool> {
        (0..self.rows.len()).map(|r| self.is_active(r)).collect()
    }

    pub fn any_active(&self) -> bool {
        (0..self.rows.len()).any(|r| self.is_active(r))
    }

    /// Cuts every row longer than `lengths[r]` back to that length (a stopping criterion
    /// fired in the middle of a round; the caller also finishes the row). A row is never
    /// cut into its prompt.
    pub fn truncate(&mut self, lengths: &[usize]) -> Result<()> {
        crate::error::expect_rows("lengths", self.rows.len(), lengths.len())?;
        for (r, (row, &len)) in self.rows.iter().zip(lengths).enumerate() {
            let prompt = row.history.prompt_len();
            if len < prompt {
                return Err(CoreError::invalid(
                    "lengths",
                    format!("row {r}: {len} is shorter than its prompt ({prompt} tokens)"),
                ));
            }
        }
        for (row, &len) in self.rows.iter_mut().zip(lengths) {
            row.history.truncate(len);
        }
        Ok(())
    }

    /// The last `n` tokens of every row, `[rows * n]` (left-filled with pad for shorter
    /// rows). `n` is at most the longest a row can be (`max_length` or the prompt).
    pub fn tails(&self, n: usize) -> Result<Vec<i64>> {
        let longest = self
            .max_len
            .max(self.rows.iter().map(Row::len).max().unwrap_or(0));
        if n > longest {
            return Err(CoreError::invalid(
                "n",
                format!("must be <= {longest} (the longest a row can be), got {n}"),
            ));
        }
        let size = buffers::product("n", &[self.rows.len(), n])?;
        let mut out = buffers::filled("n", size, self.pad)?;
        for (r, row) in self.rows.iter().enumerate() {
            let tokens = row.history.row(0);
            let take = n.min(tokens.len());
            out[(r + 1) * n - take..(r + 1) * n].copy_from_slice(&tokens[tokens.len() - take..]);
        }
        Ok(out)
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

    /// Most drafts a row can use: it emits at most `max_len - len` tokens, the last of
    /// which comes from the main model.
    fn budget(&self, row: &Row) -> usize {
        self.max_len.saturating_sub(row.len() + 1)
    }

    fn is_active(&self, r: usize) -> bool {
        self.status.is_unfinished(r) && self.rows[r].len() < self.max_len
    }

    /// Starts a drafting round: clears the drafts and opens every active row with budget.
    pub fn begin_round(&mut self) {
        let open: Vec<bool> = (0..self.rows.len())
            .map(|r| self.is_active(r) && self.budget(&self.rows[r]) > 0)
            .collect();
        for (row, open) in self.rows.iter_mut().zip(open) {
            row.drafts.clear();
            row.draft_probs.clear();
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

    /// One drafting step from the draft model's logits (`[rows, vocab]`, processed in
    /// place with each row's history plus its drafts): argmax, or a draw when sampling.
    /// Returns the token to feed the draft model for every row (pad for rows no longer
    /// drafting). A row stops drafting after an EOS token, after a token of probability
    /// below `confidence` (0 disables this), or when its budget is used up.
    pub fn draft(&mut self, logits: &mut [f32], vocab: usize, confidence: f32) -> Result<Vec<i64>> {
        self.check(logits, vocab, 1)?;
        let (eos, pad, sample, max_len) = (&self.eos, self.pad, self.do_sample, self.max_len);
        let picked = for_rows(&mut self.rows, logits, vocab, |r, row, logits| {
            if !row.open {
                return Ok(pad);
            }
            let budget = max_len.saturating_sub(row.len() + 1);
            row.process(&row.scratch, logits);
            // The distribution is needed to sample, to keep for verification, or to judge
            // confidence; plain greedy drafting without a threshold needs only the argmax.
            let mut q = Vec::new();
            if (sample || confidence > 0.0) && !softmax_into(logits, &mut q) {
                return Err(CoreError::NoValidToken { row: r });
            }
            let t = if sample {
                draw_weights(
                    &q,
                    uniform(row.key, row.scratch.len() - row.start, Purpose::Draft),
                )
            } else {
                argmax(logits)
            };
            let t = t.ok_or(CoreError::NoValidToken { row: r })?;
            let token = t as i64;
            let unsure = confidence > 0.0 && q[t] < confidence;
            row.scratch.push(&[token]);
            row.drafts.push(token);
            if sample {
                row.draft_probs.push(q);
            }
            if eos.contains(&token) || unsure || row.drafts.len() >= budget {
                row.open = false;
            }
            Ok(token)
        });
        picked.into_iter().collect()
    }

    /// Drafts for every active row by prompt lookup (see [`lookup`]) over the row without
    /// its padding, at most `num_tokens` and the row's budget, cut before an EOS token.
    pub fn lookup_drafts(&mut self, max_ngram: usize, num_tokens: usize) -> Result<()> {
        if max_ngram == 0 {
            return Err(CoreError::invalid(
                "max_matching_ngram_size",
                "must be >= 1, got 0",
            ));
        }
        if num_tokens == 0 {
            return Err(CoreError::invalid(
                "prompt_lookup_num_tokens",
                "must be >= 1, got 0",
            ));
        }
        self.begin_round();
        let budgets: Vec<usize> = self.rows.iter().map(|r| self.budget(r)).collect();
        let eos = &self.eos;
        for (row, budget) in self.rows.iter_mut().zip(budgets) {
            if !row.open {
                continue;
            }
            let tokens = &row.history.row(0)[row.start..];
            let mut drafts = lookup(tokens, max_ngram, num_tokens.min(budget));
            if let Some(cut) = drafts.iter().position(|t| eos.contains(t)) {
                drafts.truncate(cut);
            }
            row.drafts = drafts;
            row.open = false;
        }
        Ok(())
    }

    /// This round's drafts, right-padded with `pad`: `([rows * width], width)`, and how
    /// many are real in each row.
    pub fn drafts(&self) -> (Vec<i64>, usize, Vec<usize>) {
        let width = self.width();
        let mut out = vec![self.pad; self.rows.len() * width];
        for (r, row) in self.rows.iter().enumerate() {
            out[r * width..r * width + row.drafts.len()].copy_from_slice(&row.drafts);
        }
        (
            out,
            width,
            self.rows.iter().map(|r| r.drafts.len()).collect(),
        )
    }

    fn width(&self) -> usize {
        self.rows.iter().map(|r| r.drafts.len()).max().unwrap_or(0)
    }

    /// Verifies this round's drafts and commits. `logits` is `[rows, width + 1, vocab]` for
    /// the inputs `[last token, drafts...]` (`width` as returned by [`Self::drafts`]).
    /// Position `i` of a row is processed with the row's history plus its first `i` drafts;
    /// greedy takes the main model's argmax and goes on while it equals the draft,
    /// sampling applies the rejection rule. A row also stops at an EOS token or at
    /// `max_len`. The logits of the positions used are left processed; inactive rows emit
    /// nothing.
    ///
    /// With `lockstep`, every row that stays active commits the same number of tokens (the
    /// smallest of theirs; a prefix of a valid continuation is valid), for models whose
    /// rows cannot be shifted against each other.
    pub fn verify(
        &mut self,
        logits: &mut [f32],
        vocab: usize,
        lockstep: bool,
    ) -> Result<Vec<Verdict>> {
        let positions = self.width() + 1;
        self.check(logits, vocab, positions)?;
        let (eos, max_len, sample) = (&self.eos, self.max_len, self.do_sample);
        let status = &self.status;
        let verdicts = for_rows(
            &mut self.rows,
            logits,
            positions * vocab,
            |r, row, logits| {
                let verdict = if !status.is_unfinished(r) {
                    Ok(Verdict::default())
                } else if sample {
                    row.verify_sample(r, logits, vocab, eos, max_len)
                } else {
                    row.verify_greedy(r, logits, vocab, eos, max_len)
                };
                row.drafts.clear();
                row.draft_probs.clear();
                row.open = false;
                verdict
            },
        );
        let mut verdicts: Vec<Verdict> = verdicts.into_iter().collect::<Result<_>>()?;
        let stays = |r: usize, row: &Row, v: &Verdict| {
            self.status.is_unfinished(r) && !v.ended && row.len() + v.emitted.len() < max_len
        };
        let limit = if lockstep {
            self.rows
                .iter()
                .enumerate()
                .zip(&verdicts)
                .filter(|((r, row), v)| stays(*r, row, v))
                .map(|(_, v)| v.emitted.len())
                .min()
        } else {
            None
        };
        for (r, (row, verdict)) in self.rows.iter_mut().zip(&mut verdicts).enumerate() {
            row.settle(verdict, limit.unwrap_or(usize::MAX), max_len);
            if verdict.ended {
                self.status.finish(r);
            }
        }
        Ok(verdicts)
    }

    fn check(&mut self, logits: &[f32], vocab: usize, positions: usize) -> Result<()> {
        let rows = self.rows.len();
        if vocab == 0 || logits.len() != rows * positions * vocab {
            return Err(CoreError::Shape {
                name: "logits",
                expected: format!("[{rows}, {positions}, vocab >= 1]"),
                got: format!("{} values with vocab {vocab}", logits.len()),
            });
        }
        if self.checked_vocab != vocab {
            self.config.validate(Some(vocab))?;
            self.checked_vocab = vocab;
        }
        Ok(())
    }
}

/// Prompt lookup on one row: the longest suffix n-gram (`max_ngram` down to 1 tokens)
/// that also occurs earlier in `tokens`, and up to `num_tokens` tokens that followed its
/// first occurrence. As transformers' `PromptLookupCandidateGenerator`, which searches
/// the whole sequence (prompt and generated tokens).
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

crate::row_status::row_status_field!(AssistedDecoder);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row_status::HasRowStatus;

    fn decoder(prompts: &[i64], rows: usize, eos: i64, max_len: usize) -> AssistedDecoder {
        let config = PipelineConfig {
            eos_token_ids: vec![eos],
            ..Default::default()
        };
        AssistedDecoder::new(prompts, rows, &vec![0; rows], &config, 0, max_len, &[]).unwrap()
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
    fn lookup_skips_padding_and_eos() {
        let config = PipelineConfig {
            eos_token_ids: vec![1],
            ..Default::default()
        };
        // Row 0 is [5, 0, 0] after 2 padding positions: with the padding, the bigram
        // [0, 0] would match at 0 and draft [5, 0, 0]; without, the unigram 0 drafts [0].
        // Row 1's continuation of 4 is [6, 1, 7]: cut before the EOS.
        let prompts = [0, 0, 5, 0, 0, /* row 1 */ 4, 6, 1, 7, 4];
        let mut d = AssistedDecoder::new(&prompts, 2, &[2, 0], &config, 0, 20, &[]).unwrap();
        d.lookup_drafts(2, 3).unwrap();
        let (drafts, width, counts) = d.drafts();
        assert_eq!((drafts, width, counts), (vec![0, 6], 1, vec![1, 1]));
    }

    #[test]
    fn greedy_accepts_the_agreeing_prefix_and_adds_a_token() {
        let mut d = decoder(&[5, 6, 5, 6], 2, 1, 20);
        d.begin_round();
        assert_eq!(
            d.draft(&mut peaked(&[3, 4], 8), 8, 0.0).unwrap(),
            vec![3, 4]
        );
        assert_eq!(
            d.draft(&mut peaked(&[2, 2], 8), 8, 0.0).unwrap(),
            vec![2, 2]
        );
        assert_eq!(d.drafts(), (vec![3, 2, 4, 2], 2, vec![2, 2]));
        // Row 0 agrees with both drafts and gets a bonus token; row 1 disagrees at once.
        let mut logits = [peaked(&[3, 2, 7], 8), peaked(&[6, 2, 2], 8)].concat();
        let v = d.verify(&mut logits, 8, false).unwrap();
        assert_eq!(
            v[0],
            Verdict {
                emitted: vec![3, 2, 7],
                accepted: 2,
                ended: false
            }
        );
        assert_eq!(
            v[1],
            Verdict {
                emitted: vec![6],
                accepted: 0,
                ended: false
            }
        );
        assert_eq!(d.lengths(), vec![5, 3]);
        assert_eq!(d.sequences(), (vec![5, 6, 3, 2, 7, 5, 6, 6, 0, 0], 5));
        assert_eq!(d.tails(1).unwrap(), vec![7, 6]);
        assert_eq!(d.tails(4).unwrap(), vec![6, 3, 2, 7, 0, 5, 6, 6]);
    }

    #[test]
    fn lockstep_commits_the_same_count_to_rows_that_go_on() {
        let mut d = decoder(&[5, 5, 5], 3, 1, 20);
        d.begin_round();
        d.draft(&mut peaked(&[3, 3, 3], 8), 8, 0.0).unwrap();
        d.draft(&mut peaked(&[4, 4, 4], 8), 8, 0.0).unwrap();
        // Row 0 would take 3 tokens, row 1 two, row 2 ends at EOS after one.
        let mut logits = [
            peaked(&[3, 4, 6], 8),
            peaked(&[3, 2, 2], 8),
            peaked(&[1, 2, 2], 8),
        ]
        .concat();
        let v = d.verify(&mut logits, 8, true).unwrap();
        assert_eq!(
            v[0],
            Verdict {
                emitted: vec![3, 4],
                accepted: 2,
                ended: false
            }
        );
        assert_eq!(
            v[1],
            Verdict {
                emitted: vec![3, 2],
                accepted: 1,
                ended: false
            }
        );
        assert_eq!(
            v[2],
            Verdict {
                emitted: vec![1],
                accepted: 0,
                ended: true
            }
        );
        assert_eq!(d.lengths(), vec![3, 3, 2]);
    }

    #[test]
    fn eos_and_max_len_stop_a_row_mid_round() {
        let mut d = decoder(&[5, 5], 2, 1, 4);
        d.begin_round();
        d.draft(&mut peaked(&[1, 3], 8), 8, 0.0).unwrap();
        // Row 0 drafted EOS and stops drafting; row 1 has budget 4 - 1 - 1 = 2.
        d.draft(&mut peaked(&[4, 3], 8), 8, 0.0).unwrap();
        assert!(!d.any_open());
        let (_, width, counts) = d.drafts();
        assert_eq!((width, counts), (2, vec![1, 2]));
        let mut logits = [peaked(&[1, 4, 4], 8), peaked(&[3, 3, 6], 8)].concat();
        let v = d.verify(&mut logits, 8, false).unwrap();
        assert_eq!(
            v[0],
            Verdict {
                emitted: vec![1],
                accepted: 1,
                ended: true
            }
        );
        assert_eq!(
            v[1],
            Verdict {
                emitted: vec![3, 3, 6],
                accepted: 2,
                ended: false
            }
        );
        assert_eq!(d.row_status().unfinished(), vec![false, true]);
        assert_eq!(d.active(), vec![false, false], "row 1 is at max_len");
        assert!(!d.any_active());
        d.begin_round();
        assert!(!d.any_open());
        let v = d.verify(&mut peaked(&[2, 2], 8), 8, false).unwrap();
        assert!(v.iter().all(|v| v.emitted.is_empty()));
    }

    #[test]
    fn low_confidence_closes_drafting() {
        let mut d = decoder(&[5], 1, 1, 20);
        d.begin_round();
        // Nearly flat logits: the top token has probability ~1/8 < 0.4.
        let mut flat = vec![0.0f32; 8];
        flat[3] = 0.1;
        assert_eq!(d.draft(&mut flat, 8, 0.4).unwrap(), vec![3]);
        assert!(!d.any_open());
        assert_eq!(d.drafts().2, vec![1]);
    }

    #[test]
    fn processors_see_each_rows_own_length() {
        // min_new_tokens = 2 over a 1-token prompt: EOS is forbidden below length 3.
        let config = PipelineConfig {
            eos_token_ids: vec![1],
            min_new_tokens: 2,
            ..Default::default()
        };
        let mut d = AssistedDecoder::new(&[5, 5], 2, &[0, 0], &config, 0, 10, &[]).unwrap();
        d.begin_round();
        d.draft(&mut peaked(&[2, 2], 4), 4, 0.0).unwrap();
        // Row 0 accepts the draft, then wants EOS at length 2: suppressed, so 0 (runner-up).
        let mut logits = [peaked(&[2, 1], 4), peaked(&[3, 1], 4)].concat();
        let v = d.verify(&mut logits, 4, false).unwrap();
        assert_eq!(
            (v[0].emitted.clone(), v[1].emitted.clone()),
            (vec![2, 0], vec![3])
        );
        assert_eq!(
            logits[4 + 1],
            f32::NEG_INFINITY,
            "used positions are left processed"
        );
        // Now row 0 has length 3 (EOS allowed) and row 1 length 2 (still suppressed).
        let v = d
            .verify(&mut [peaked(&[1], 4), peaked(&[1], 4)].concat(), 4, false)
            .unwrap();
        assert_eq!(
            (v[0].emitted.clone(), v[1].emitted.clone()),
            (vec![1], vec![0])
        );
        assert_eq!((d.row(0), d.row(1)), (&[5, 2, 0, 1][..], &[5, 3, 0][..]));
        assert_eq!(d.row_status().unfinished(), vec![false, true]);
    }

    #[test]
    fn each_row_gets_its_own_padding_length() {
        // Repetition penalty 2 ignoring row 0's first (padding) position only: token 0
        // is penalised in row 1 (it is history there) but not in row 0.
        let config = PipelineConfig {
            repetition_penalty: 2.0,
            prompt_ignore_lengths: vec![1, 0],
            ..Default::default()
        };
        let mut d = AssistedDecoder::new(&[0, 3, 0, 3], 2, &[1, 0], &config, 0, 10, &[]).unwrap();
        let row = [1.0f32, 0.0, 0.0, 0.8, 0.6];
        let mut logits = [row, row].concat();
        let v = d.verify(&mut logits, 5, false).unwrap();
        // Row 0: 0 -> 1.0, 3 -> 0.4: argmax 0. Row 1: 0 -> 0.5, 3 -> 0.4: argmax 4 (0.6).
        assert_eq!(
            (v[0].emitted.clone(), v[1].emitted.clone()),
            (vec![0], vec![4])
        );
    }

    /// Exact output distribution of speculative sampling on a 3-token vocabulary, one
    /// draft per round: the emitted first token must follow `p`, whatever `q` is.
    #[test]
    fn speculative_sampling_keeps_the_main_distribution() {
        let p_logits = [0.2f32.ln(), 0.5f32.ln(), 0.3f32.ln()];
        let q_logits = [0.6f32.ln(), 0.1f32.ln(), 0.3f32.ln()];
        let config = PipelineConfig {
            do_sample: true,
            ..Default::default()
        };
        let n = 20_000;
        let keys = rng::row_keys(7, &(0..n).map(|i| vec![i as i64]).collect::<Vec<_>>(), 1);
        let prompts: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
        let mut d = AssistedDecoder::new(&prompts, n, &vec![0; n], &config, 0, 10, &keys).unwrap();
        d.begin_round();
        let mut q: Vec<f32> = q_logits.repeat(n);
        d.draft(&mut q, 3, 0.0).unwrap();
        let mut logits: Vec<f32> = [p_logits, p_logits].concat().repeat(n);
        let verdicts = d.verify(&mut logits, 3, false).unwrap();
        let mut counts = [0f64; 3];
        let mut accepted = 0;
        for v in &verdicts {
            counts[v.emitted[0] as usize] += 1.0;
            accepted += v.accepted;
        }
        // chi-square with 2 degrees of freedom; 13.8 is the 0.999 quantile.
        let chi2: f64 = counts
            .iter()
            .zip([0.2, 0.5, 0.3])
            .map(|(&c, p)| (c - p * n as f64).powi(2) / (p * n as f64))
            .sum();
        assert!(chi2 < 13.8, "{counts:?} chi2 {chi2}");
        // Acceptance rate is sum min(p, q) = 0.2 + 0.1 + 0.3 = 0.6.
        assert!(
            (accepted as f64 / n as f64 - 0.6).abs() < 0.02,
            "{accepted}"
        );
    }

    #[test]
    fn truncate_cuts_longer_rows() {
        let mut d = decoder(&[5, 6, 5, 6], 2, 1, 20);
        d.begin_round();
        d.draft(&mut peaked(&[3, 3], 8), 8, 0.0).unwrap();
        d.verify(
            &mut [peaked(&[3, 4], 8), peaked(&[3, 4], 8)].concat(),
            8,
            false,
        )
        .unwrap();
        d.truncate(&[3, 9]).unwrap();
        assert_eq!((d.row(0), d.row(1)), (&[5, 6, 3][..], &[5, 6, 3, 4][..]));
    }

    /// Arguments that used to panic (slice ranges) or abort (allocations) are errors
    /// naming the argument, and leave the decoder usable.
    #[test]
    fn out_of_range_arguments_are_errors() {
        let config = PipelineConfig::default();
        let mut d =
            AssistedDecoder::new(&[0, 0, 5, 6, 7, 8], 2, &[2, 0], &config, 0, 20, &[]).unwrap();
        for n in [21, 1 << 40, usize::MAX] {
            assert!(
                matches!(
                    d.tails(n),
                    Err(CoreError::InvalidArgument { name: "n", .. })
                ),
                "{n}"
            );
        }
        assert_eq!(d.tails(20).unwrap().len(), 40);
        // Cutting into the prompt (below the padding start, too) would leave lookup a
        // row shorter than its start.
        assert!(matches!(
            d.truncate(&[1, 3]),
            Err(CoreError::InvalidArgument {
                name: "lengths",
                ..
            })
        ));
        assert!(matches!(
            d.truncate(&[3]),
            Err(CoreError::Shape {
                name: "lengths",
                ..
            })
        ));
        assert!(matches!(
            d.row_status_mut().finish_rows(&[true]),
            Err(CoreError::Shape { name: "done", .. })
        ));
        assert!(matches!(
            d.row_status_mut().finish_rows(&[true, false, true]),
            Err(CoreError::Shape { name: "done", .. })
        ));
        assert_eq!(
            d.row_status().unfinished(),
            vec![true, true],
            "a refused call changes nothing"
        );
        d.lookup_drafts(2, 3).unwrap();
        assert_eq!(d.lengths(), vec![3, 3]);
    }

    #[test]
    fn shapes_are_checked() {
        let mut d = decoder(&[5, 6], 1, 1, 10);
        assert!(d.verify(&mut [0.0; 7], 8, false).is_err());
        assert!(d.draft(&mut [0.0; 8], 4, 0.0).is_err());
        assert!(d.lookup_drafts(0, 3).is_err());
        let none = PipelineConfig::default();
        assert!(AssistedDecoder::new(&[1, 2, 3], 2, &[0, 0], &none, 0, 5, &[]).is_err());
        assert!(AssistedDecoder::new(&[1, 2], 1, &[3], &none, 0, 5, &[]).is_err());
        let sampling = PipelineConfig {
            do_sample: true,
            ..Default::default()
        };
        assert!(
            AssistedDecoder::new(&[1, 2], 1, &[0], &sampling, 0, 5, &[]).is_err(),
            "keys needed"
        );
        let mut d = AssistedDecoder::new(
            &[1],
            1,
            &[0],
            &PipelineConfig {
                suppress_tokens: vec![9],
                ..none
            },
            0,
            5,
            &[],
        )
        .unwrap();
        assert!(matches!(
            d.verify(&mut [0.0; 4], 4, false),
            Err(CoreError::TokenOutOfVocab { .. })
        ));
    }
}
