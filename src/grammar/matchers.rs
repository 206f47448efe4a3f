//! One llguidance matcher per row: masks, consumption, beam reorder and rollback.
//!
//! The matchers follow the token history lazily: before each mask they consume what the
//! history gained since the last one (one token per step; several after an accepted
//! assisted draft) and roll back what it lost (rejected draft tokens). So every strategy
//! only has to keep its history, which it does anyway.

use std::sync::Arc;

use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;
use rayon::prelude::*;

use super::CompiledGrammar;
use crate::error::{CoreError, Result};
use crate::history::TokenHistory;

/// Where a row's grammar stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    /// Still generating under the grammar.
    Active,
    /// The row produced an EOS token (the grammar accepted): nothing more to constrain.
    Done,
    /// The grammar reached a state with no allowed token, or a token it rejects arrived
    /// (a user processor or a forced token overrode the mask): only EOS stays allowed.
    Dead,
}

#[derive(Clone)]
struct Row {
    matcher: Matcher,
    /// Rows cloned from one compiled grammar share its lexer, behind one mutex that
    /// llguidance holds for a whole mask: such rows run one after the other (in parallel
    /// they only wait on each other, and on the pool's wake-ups). The grammar's index.
    lexer: usize,
    /// History length the matcher has seen (None until the first mask).
    seen: Option<usize>,
    /// For each history position after the start: whether the matcher consumed it.
    fed: Vec<bool>,
    status: RowStatus,
    /// `fed.len()` when the status left `Active` (rolling back past it revives the row).
    ended_at: usize,
}

/// The per-row matchers of one generation.
pub struct RowGrammars {
    rows: Vec<Row>,
    eos: Vec<i64>,
    /// The tokenizer's own EOS ids: never allowed through the mask (see [`super`]).
    tokenizer_eos: Vec<u32>,
}

impl RowGrammars {
    /// `grammars[p]` constrains prompt `p`; each prompt has `rows_per_prompt` rows
    /// (return sequences or beams), laid out prompt-major as the strategies do.
    /// `eos`: the configured EOS ids, allowed exactly when a row's grammar accepts.
    pub fn new(
        grammars: &[Arc<CompiledGrammar>],
        rows_per_prompt: usize,
        eos: &[i64],
    ) -> Result<Self> {
        if grammars.is_empty() || rows_per_prompt == 0 {
            return Err(CoreError::invalid(
                "grammar",
                "needs at least one prompt and one row per prompt",
            ));
        }
        let tokenizer_eos = grammars[0].vocab.tokenizer_eos().to_vec();
        let n = grammars
            .len()
            .checked_mul(rows_per_prompt)
            .ok_or_else(|| CoreError::invalid("grammar", "too many rows"))?;
        let mut rows = Vec::new();
        rows.try_reserve_exact(n)
            .map_err(|_| CoreError::invalid("grammar", "too many rows"))?;
        for g in grammars {
            let lexer = grammars
                .iter()
                .position(|other| Arc::ptr_eq(other, g))
                .unwrap_or(0);
            for _ in 0..rows_per_prompt {
                rows.push(Row {
                    matcher: g.initial.clone(),
                    lexer,
                    seen: None,
                    fed: Vec::new(),
                    status: RowStatus::Active,
                    ended_at: 0,
                });
            }
        }
        Ok(RowGrammars {
            rows,
            eos: eos.to_vec(),
            tokenizer_eos,
        })
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    pub fn status(&self, row: usize) -> Option<RowStatus> {
        self.rows.get(row).map(|r| r.status)
    }

    /// Rows whose grammar died (see [`RowStatus::Dead`]).
    pub fn dead(&self) -> Vec<bool> {
        self.rows
            .iter()
            .map(|r| r.status == RowStatus::Dead)
            .collect()
    }

    /// Whether row `row`'s grammar would accept ending here.
    pub fn accepting(&mut self, row: usize) -> bool {
        self.rows.get_mut(row).is_some_and(|r| {
            r.status == RowStatus::Done || r.matcher.is_accepting().unwrap_or(false)
        })
    }

    /// Brings the rows `map[i]` up to `history.row(i)`, then writes their masks into the
    /// logits rows `i` (`logits` is `[map.len(), vocab]`). `map` = None: row `i` is row `i`.
    pub fn apply(
        &mut self,
        history: &TokenHistory,
        logits: &mut [f32],
        vocab: usize,
        map: Option<&[usize]>,
    ) {
        if vocab == 0 {
            return;
        }
        let n = (logits.len() / vocab).min(history.n_rows());
        let eos = &self.eos;
        let tok_eos = &self.tokenizer_eos;
        let work = |(i, row, out): (usize, &mut Row, &mut [f32])| {
            row.sync(history.row(i), eos);
            row.write_mask(out, eos, tok_eos);
        };
        let mut picked: Vec<(usize, &mut Row)> = match map {
            None => self.rows.iter_mut().enumerate().take(n).collect(),
            Some(m) => select_mut(&mut self.rows, &m[..n.min(m.len())]),
        };
        let mut items: Vec<(usize, &mut Row, &mut [f32])> = picked
            .iter_mut()
            .map(|(_, r)| &mut **r)
            .zip(logits.chunks_exact_mut(vocab))
            .enumerate()
            .map(|(i, (row, out))| (i, row, out))
            .collect();
        // Rows of one lexer form one task (see `Row::lexer`); tasks of different grammars
        // go to the pool when there is enough work.
        items.sort_by_key(|(_, row, _)| row.lexer);
        let mut tasks: Vec<Vec<(usize, &mut Row, &mut [f32])>> = Vec::new();
        for item in items {
            match tasks.last_mut() {
                Some(task) if task[0].1.lexer == item.1.lexer => task.push(item),
                _ => tasks.push(vec![item]),
            }
        }
        let elems = n.saturating_mul(crate::parallel::GRAMMAR_MASK_ELEMS);
        if crate::parallel::worth_parallel(tasks.len(), elems) {
            tasks
                .into_par_iter()
                .for_each(|task| task.into_iter().for_each(work));
        } else {
            tasks.into_iter().flatten().for_each(work);
        }
    }

    /// Row `i` becomes a copy of row `parents[i]` (beam selection): the matcher is
    /// cloned, not replayed. With `map`, only rows `map[..]` take part (one beam group).
    pub fn reorder(&mut self, parents: &[usize], map: Option<&[usize]>) {
        match map {
            None => {
                if parents.iter().all(|&p| p < self.rows.len()) {
                    let old = std::mem::take(&mut self.rows);
                    self.rows = parents.iter().map(|&p| old[p].clone()).collect();
                }
            }
            Some(m) => {
                let ok = parents.len() <= m.len()
                    && parents
                        .iter()
                        .all(|&p| m.get(p).is_some_and(|&g| g < self.rows.len()));
                if ok {
                    let copies: Vec<Row> =
                        parents.iter().map(|&p| self.rows[m[p]].clone()).collect();
                    for (i, row) in copies.into_iter().enumerate() {
                        if let Some(slot) = self.rows.get_mut(m[i]) {
                            *slot = row;
                        }
                    }
                }
            }
        }
    }

    /// Token-level check for drafts: how many of `tokens` row `row` would accept in
    /// order, without changing the row.
    pub fn valid_prefix(&mut self, row: usize, tokens: &[i64]) -> usize {
        let Some(r) = self.rows.get_mut(row) else {
            return 0;
        };
        if r.status != RowStatus::Active {
            return 0;
        }
        let mut m = r.matcher.clone();
        let mut n = 0;
        for &t in tokens {
            if self.eos.contains(&t) {
                if m.is_accepting().unwrap_or(false) {
                    n += 1;
                }
                break;
            }
            let Ok(t32) = u32::try_from(t) else { break };
            if m.try_consume_tokens(&[t32]).unwrap_or(0) != 1 {
                break;
            }
            n += 1;
        }
        n
    }
}

fn select_mut<'a>(rows: &'a mut [Row], map: &[usize]) -> Vec<(usize, &'a mut Row)> {
    // `map` holds distinct indices (a group's rows); anything else selects nothing.
    let mut wanted: Vec<(usize, usize)> = map.iter().enumerate().map(|(i, &g)| (g, i)).collect();
    wanted.sort_unstable();
    if wanted.windows(2).any(|w| w[0].0 == w[1].0)
        || wanted.last().is_some_and(|w| w.0 >= rows.len())
    {
        return Vec::new();
    }
    let mut out: Vec<(usize, &mut Row)> = Vec::with_capacity(map.len());
    let mut it = wanted.iter().peekable();
    for (g, row) in rows.iter_mut().enumerate() {
        if let Some(&&(want, local)) = it.peek() {
            if want == g {
                out.push((local, row));
                it.next();
            }
        }
    }
    out.sort_unstable_by_key(|(local, _)| *local);
    out
}

impl Row {
    fn end(&mut self, status: RowStatus) {
        if self.status == RowStatus::Active {
            self.status = status;
            self.ended_at = self.fed.len();
        }
    }

    /// Consumes what `history` gained since the last call; rolls back what it lost.
    fn sync(&mut self, history: &[i64], eos: &[i64]) {
        let start = *self.seen.get_or_insert(history.len());
        let known = start + self.fed.len();
        if history.len() < known {
            self.rollback(known - history.len());
        }
        let known = start + self.fed.len();
        for &t in history.get(known..).unwrap_or(&[]) {
            let mut fed = false;
            if self.status == RowStatus::Active {
                if eos.contains(&t) {
                    self.end(RowStatus::Done);
                } else {
                    let ok = u32::try_from(t)
                        .ok()
                        .is_some_and(|t| self.matcher.try_consume_tokens(&[t]).unwrap_or(0) == 1);
                    if ok {
                        fed = true;
                    } else {
                        self.end(RowStatus::Dead);
                    }
                }
            }
            self.fed.push(fed);
        }
    }

    fn rollback(&mut self, n: usize) {
        let keep = self.fed.len().saturating_sub(n);
        let consumed = self.fed[keep..].iter().filter(|&&f| f).count();
        self.fed.truncate(keep);
        if consumed > 0 && self.matcher.rollback(consumed).is_err() {
            self.status = RowStatus::Dead;
            self.ended_at = keep;
            return;
        }
        if self.status != RowStatus::Active && keep <= self.ended_at && !self.matcher.is_error() {
            self.status = RowStatus::Active;
        }
    }

    /// -inf on every token the grammar does not allow; EOS allowed iff it accepts.
    fn write_mask(&mut self, out: &mut [f32], eos: &[i64], tok_eos: &[u32]) {
        if self.status == RowStatus::Done {
            return;
        }
        let mut accepting = false;
        let mut mask = None;
        if self.status == RowStatus::Active && !self.matcher.is_stopped() {
            accepting = self.matcher.is_accepting().unwrap_or(false);
            mask = self.matcher.compute_mask().ok();
        } else if self.status == RowStatus::Active {
            accepting = self.matcher.is_accepting().unwrap_or(false);
        }
        let mut mask = mask.unwrap_or_else(|| SimpleVob::alloc(0));
        for &t in tok_eos {
            if (t as usize) < mask.len() {
                mask.disallow_token(t);
            }
        }
        if self.status == RowStatus::Active && !accepting && mask.is_zero() {
            self.end(RowStatus::Dead);
        }
        let allow_eos = accepting || self.status == RowStatus::Dead;
        let saved: Vec<(usize, f32)> = eos
            .iter()
            .filter_map(|&e| usize::try_from(e).ok())
            .filter_map(|e| out.get(e).map(|&v| (e, v)))
            .collect();
        write_allowed(out, &mask);
        for (e, v) in saved {
            out[e] = if allow_eos { v } else { f32::NEG_INFINITY };
        }
    }
}

/// `out[i] = -inf` wherever `mask` does not allow `i` (tokens past the mask's width
/// included). Whole 32-token words are handled at once: most words of a grammar mask
/// are all-zero (a plain fill) or all-ones (nothing to do); only mixed words go bit by
/// bit, branch-free. (The per-bit loop over every word cost ~80 µs per row at V=128k,
/// 8x llguidance's own mask time: benches/grammar_mask.rs.)
fn write_allowed(out: &mut [f32], mask: &SimpleVob) {
    let width = mask.len().min(out.len());
    let (inside, past) = out.split_at_mut(width);
    past.fill(f32::NEG_INFINITY);
    let words = mask.as_slice();
    for (w, chunk) in inside.chunks_mut(32).enumerate() {
        let mut bits = words.get(w).copied().unwrap_or(0);
        if chunk.len() < 32 {
            bits &= (1u32 << chunk.len()) - 1;
        }
        match bits {
            0 => chunk.fill(f32::NEG_INFINITY),
            u32::MAX => {}
            _ => {
                for (b, x) in chunk.iter_mut().enumerate() {
                    let keep = (bits >> b) & 1 == 1;
                    *x = if keep { *x } else { f32::NEG_INFINITY };
                }
            }
        }
    }
}

/// A fresh matcher set for `grammar` (one row) brought to `generated` and masked once,
/// exactly as a generation's row would be: the reference the cloned and rolled-back
/// matchers of a generation must agree with.
fn replay(
    grammar: &Arc<CompiledGrammar>,
    generated: &[i64],
    eos: &[i64],
    row: &mut [f32],
) -> Result<RowGrammars> {
    let mut rows = RowGrammars::new(std::slice::from_ref(grammar), 1, eos)?;
    let mut history = TokenHistory::new(&[], 1);
    let vocab = row.len();
    rows.apply(&history, row, vocab, None);
    for &t in generated {
        history.push(&[t]);
    }
    row.fill(0.0);
    rows.apply(&history, row, vocab, None);
    Ok(rows)
}

/// The tokens `grammar` allows after `generated` (replayed on a fresh matcher, with the
/// same EOS rule as the masks), over a vocabulary of `vocab`. For tests and tools.
pub fn allowed_after(
    grammar: &Arc<CompiledGrammar>,
    generated: &[i64],
    eos: &[i64],
    vocab: usize,
) -> Result<Vec<u32>> {
    let mut row = vec![0.0f32; vocab];
    replay(grammar, generated, eos, &mut row)?;
    Ok((0..vocab as u32)
        .filter(|&i| row[i as usize] > f32::NEG_INFINITY)
        .collect())
}

/// Whether a row that generated `generated` (its final EOS excluded) was [`RowStatus::Dead`]
/// when it picked its next token: what finish reason `grammar` reports for a sequence that
/// ended on EOS. A replay, so it holds for any strategy's returned sequences (beam
/// hypotheses included) without tracking which beam row they ended on.
pub fn dead_after(grammar: &Arc<CompiledGrammar>, generated: &[i64], eos: &[i64]) -> Result<bool> {
    let mut row = vec![0.0f32; grammar.vocab.vocab_size()];
    let rows = replay(grammar, generated, eos, &mut row)?;
    Ok(rows.status(0) == Some(RowStatus::Dead))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::{GrammarSpec, GrammarVocab};

    const EOS: i64 = 1;

    fn vocab() -> Arc<GrammarVocab> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/ferrogen/_embedded/kjv-gpt2/tokenizer.json"
        );
        let json = std::fs::read_to_string(path).unwrap();
        Arc::new(GrammarVocab::from_tokenizer_json(&json, None).unwrap())
    }

    fn compiled(spec: GrammarSpec) -> Arc<CompiledGrammar> {
        Arc::new(CompiledGrammar::new(vocab(), &spec).unwrap())
    }

    fn allowed(rows: &mut RowGrammars, history: &TokenHistory, r: usize) -> Vec<u32> {
        let v = 4096;
        let mut logits = vec![0.0f32; history.n_rows() * v];
        rows.apply(history, &mut logits, v, None);
        let row = &logits[r * v..(r + 1) * v];
        (0..v as u32).filter(|&i| row[i as usize] == 0.0).collect()
    }

    #[test]
    fn eos_only_when_accepting_and_masks_follow_the_history() {
        let g = compiled(GrammarSpec::Choices(vec!["ab".into(), "abab".into()]));
        let mut rows = RowGrammars::new(std::slice::from_ref(&g), 1, &[EOS]).unwrap();
        let mut h = TokenHistory::new(&[7], 1);
        let first = allowed(&mut rows, &h, 0);
        assert!(!first.is_empty() && !first.contains(&(EOS as u32)));
        // walk the grammar with its own allowed tokens until EOS is allowed
        for _ in 0..8 {
            let now = allowed(&mut rows, &h, 0);
            assert_eq!(
                now,
                allowed_after(&g, &h.row(0)[1..], &[EOS], 4096).unwrap()
            );
            if now.contains(&(EOS as u32)) {
                assert!(rows.accepting(0));
                return;
            }
            h.push(&[now[0] as i64]);
        }
        panic!("the grammar never accepted");
    }

    #[test]
    fn reorder_clones_parents_and_rollback_restores() {
        let g = compiled(GrammarSpec::Regex("(yea|nay)+".into()));
        let mut rows = RowGrammars::new(std::slice::from_ref(&g), 2, &[EOS]).unwrap();
        let mut h = TokenHistory::new(&[7, 7], 2);
        let start = allowed(&mut rows, &h, 0);
        let t = start[0] as i64;
        h.push(&[t, t]);
        let after_one = allowed(&mut rows, &h, 1);
        h.reorder(&[1, 1]);
        rows.reorder(&[1, 1], None);
        assert_eq!(allowed(&mut rows, &h, 0), after_one);
        // a history that lost its last token (rejected draft) is rolled back
        let h0 = TokenHistory::new(&[7, 7], 2);
        assert_eq!(allowed(&mut rows, &h0, 0), start);
        // a token the grammar rejects kills the row: only EOS is left
        let mut bad = TokenHistory::new(&[7, 7], 2);
        let forbidden = (0..4096)
            .find(|i| !start.contains(i) && *i != EOS as u32)
            .unwrap();
        bad.push(&[forbidden as i64, t]);
        assert_eq!(allowed(&mut rows, &bad, 0), vec![EOS as u32]);
        assert_eq!(rows.dead(), vec![true, false]);
    }

    #[test]
    fn dead_after_tells_a_dead_end_from_an_accepting_end() {
        let g = compiled(GrammarSpec::Choices(vec!["ab".into()]));
        // walk the grammar with its own allowed tokens until it accepts
        let mut complete: Vec<i64> = Vec::new();
        for _ in 0..8 {
            let now = allowed_after(&g, &complete, &[EOS], 4096).unwrap();
            if now.contains(&(EOS as u32)) {
                break;
            }
            complete.push(now[0] as i64);
        }
        assert!(!complete.is_empty());
        assert!(!dead_after(&g, &complete, &[EOS]).unwrap());
        assert!(!dead_after(&g, &[], &[EOS]).unwrap());
        // a token the grammar rejects (as a forced token would give) kills the row
        let start = allowed_after(&g, &[], &[EOS], 4096).unwrap();
        let forbidden = (2..4096).find(|i| !start.contains(i)).unwrap();
        assert!(dead_after(&g, &[forbidden as i64], &[EOS]).unwrap());
    }

    #[test]
    fn write_allowed_keeps_exactly_the_allowed_tokens() {
        // full, empty and mixed 32-token words, a partial last word, a row wider than the mask
        let mut mask = SimpleVob::alloc(101);
        for t in (0..32).chain([40, 63, 64, 99, 100]) {
            mask.allow_token(t);
        }
        let mut out: Vec<f32> = (0..130).map(|i| i as f32).collect();
        write_allowed(&mut out, &mask);
        for (i, &x) in out.iter().enumerate() {
            let allowed = i < 101 && mask.is_allowed(i as u32);
            assert_eq!(x, if allowed { i as f32 } else { f32::NEG_INFINITY }, "{i}");
        }
    }

    #[test]
    fn invalid_specs_name_their_argument() {
        let v = vocab();
        for (spec, name) in [
            (GrammarSpec::Regex("(ab".into()), "regex"),
            (GrammarSpec::JsonSchema("{\"type\": ".into()), "json_schema"),
            (GrammarSpec::Lark("start: nope".into()), "grammar"),
            (GrammarSpec::Choices(vec![]), "choices"),
        ] {
            match CompiledGrammar::new(v.clone(), &spec) {
                Err(CoreError::InvalidArgument { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{spec:?}: {other:?}"),
            }
        }
        assert!(GrammarVocab::from_tokenizer_json("{}", None).is_err());
    }
}
