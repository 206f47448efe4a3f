//! Constraints for constrained beam search: phrases that must appear in the output,
//! either one fixed phrase ([`Phrase`]) or one of several ([`Alternatives`]), and
//! the per-hypothesis progress through all of them ([`ConstraintState`]).
//!
//! Progress is tracked as transformers' `ConstraintListState` does (one constraint in
//! progress at a time, banks counted the same way), except that a mismatch falls back
//! to the longest partial match still alive (KMP / Aho-Corasick) and a token that ends
//! one attempt may start another: transformers drops both, which is how it can miss a
//! forced phrase (its issue 19070).

mod bank_step;
mod disjunctive;
mod phrasal;
mod state;

pub use bank_step::bank_order;
pub use disjunctive::Alternatives;
pub use phrasal::Phrase;
pub use state::ConstraintState;

use crate::error::{CoreError, Result};

/// How a constraint is given: a phrase, or a list of alternative phrases.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    Phrase(Vec<i64>),
    OneOf(Vec<Vec<i64>>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    Phrase(Phrase),
    OneOf(Alternatives),
}

impl Constraint {
    /// Tokens needed to complete it from scratch (longest alternative for `OneOf`).
    pub fn seqlen(&self) -> usize {
        match self {
            Constraint::Phrase(p) => p.len(),
            Constraint::OneOf(a) => a.max_len(),
        }
    }

    /// The state after `token` (0 means no progress).
    pub fn step(&self, state: usize, token: i64) -> usize {
        match self {
            Constraint::Phrase(p) => p.step(state, token),
            Constraint::OneOf(a) => a.step(state, token),
        }
    }

    pub fn is_complete(&self, state: usize) -> bool {
        match self {
            Constraint::Phrase(p) => state == p.len(),
            Constraint::OneOf(a) => a.is_complete(state),
        }
    }

    /// Tokens still needed from `state`, as transformers counts them.
    pub fn remaining(&self, state: usize) -> usize {
        match self {
            Constraint::Phrase(p) => p.len() - state,
            Constraint::OneOf(a) if a.is_complete(state) => 0,
            Constraint::OneOf(a) => a.max_len() - a.depth(state),
        }
    }

    /// Fewest tokens that complete it from `state` by following its own continuation
    /// (what [`ConstraintState::tokens_to_complete`] plans with).
    pub fn shortest_remaining(&self, state: usize) -> usize {
        match self {
            Constraint::Phrase(p) => p.len() - state,
            Constraint::OneOf(a) if a.is_complete(state) => 0,
            Constraint::OneOf(a) => a.shortest_remaining(state),
        }
    }

    /// Appends the tokens that advance `state`.
    pub fn next_tokens(&self, state: usize, out: &mut Vec<i64>) {
        match self {
            Constraint::Phrase(p) => out.push(p.next_token(state)),
            Constraint::OneOf(a) => out.extend(a.next_tokens(state)),
        }
    }

    fn tokens(&self) -> Box<dyn Iterator<Item = i64> + '_> {
        match self {
            Constraint::Phrase(p) => Box::new(p.tokens().iter().copied()),
            Constraint::OneOf(a) => Box::new(a.phrases().iter().flatten().copied()),
        }
    }
}

/// The constraints of one generation, shared by every hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintSet {
    constraints: Vec<Constraint>,
    max_seqlen: usize,
    /// Every token any constraint uses, sorted and de-duplicated.
    tokens: Vec<i64>,
}

impl ConstraintSet {
    /// Validates and builds the constraints; `vocab` bounds the token ids when known.
    pub fn new(specs: Vec<ConstraintSpec>, vocab: Option<usize>) -> Result<Self> {
        const NAME: &str = "force_words_ids";
        if specs.is_empty() {
            return Err(CoreError::invalid(NAME, "needs at least one constraint"));
        }
        if specs.len() > u16::MAX as usize {
            return Err(CoreError::invalid(NAME, "too many constraints"));
        }
        let mut constraints = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            let c = match spec {
                ConstraintSpec::Phrase(p) if p.is_empty() => {
                    return Err(CoreError::invalid(NAME, format!("constraint {i} is an empty phrase")))
                }
                ConstraintSpec::Phrase(p) => Constraint::Phrase(Phrase::new(p)),
                ConstraintSpec::OneOf(alts) if alts.is_empty() || alts.iter().any(Vec::is_empty) => {
                    return Err(CoreError::invalid(NAME, format!("constraint {i} has an empty alternative")))
                }
                ConstraintSpec::OneOf(alts) => Constraint::OneOf(Alternatives::new(alts).map_err(|j| {
                    CoreError::invalid(
                        NAME,
                        format!("constraint {i}: alternative {j} is a prefix of (or equal to) another alternative"),
                    )
                })?),
            };
            if let Some(t) = c
                .tokens()
                .find(|&t| t < 0 || vocab.is_some_and(|v| t as usize >= v))
            {
                return Err(CoreError::TokenOutOfVocab {
                    name: NAME,
                    token: t,
                    vocab: vocab.unwrap_or(0),
                });
            }
            constraints.push(c);
        }
        let max_seqlen = constraints
            .iter()
            .map(Constraint::seqlen)
            .max()
            .unwrap_or(0);
        let mut tokens: Vec<i64> = constraints.iter().flat_map(Constraint::tokens).collect();
        tokens.sort_unstable();
        tokens.dedup();
        Ok(ConstraintSet {
            constraints,
            max_seqlen,
            tokens,
        })
    }

    pub fn len(&self) -> usize {
        self.constraints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }

    pub fn max_seqlen(&self) -> usize {
        self.max_seqlen
    }

    /// Whether some constraint uses `token`. Every other token has the same effect on a
    /// [`ConstraintState`]: it breaks the match in progress and starts nothing.
    pub fn uses_token(&self, token: i64) -> bool {
        self.tokens.binary_search(&token).is_ok()
    }

    /// Largest token id any constraint uses.
    pub fn max_token(&self) -> Option<i64> {
        self.tokens.last().copied()
    }

    pub fn get(&self, i: usize) -> &Constraint {
        &self.constraints[i]
    }

    /// Most banks a hypothesis can reach: every constraint complete.
    pub fn max_bank(&self) -> usize {
        self.constraints.len() * self.max_seqlen
    }

    /// A fresh state with every constraint pending.
    pub fn initial_state(&self) -> ConstraintState {
        ConstraintState::new(self.constraints.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contains(text: &[i64], phrase: &[i64]) -> bool {
        text.windows(phrase.len()).any(|w| w == phrase)
    }

    proptest! {
        /// Matching a phrase or a set of alternatives token by token completes exactly when
        /// a brute-force scan finds one in the text (small alphabet, so overlaps are common).
        #[test]
        fn matchers_agree_with_brute_force(
            alts in proptest::collection::vec(proptest::collection::vec(0i64..3, 1..4), 1..4),
            text in proptest::collection::vec(0i64..3, 0..24),
        ) {
            let phrase = Constraint::Phrase(Phrase::new(alts[0].clone()));
            let mut state = 0;
            let mut done = false;
            for &t in &text {
                state = phrase.step(state, t);
                done |= phrase.is_complete(state);
                if done { break; }
            }
            prop_assert_eq!(done, contains(&text, &alts[0]));
            if let Ok(trie) = Alternatives::new(alts.clone()) {
                let mut node = 0;
                let mut done = false;
                for &t in &text {
                    node = trie.step(node, t);
                    done |= trie.is_complete(node);
                    if done { break; }
                }
                prop_assert_eq!(done, alts.iter().any(|a| contains(&text, a)));
            }
        }
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let bad = [
            vec![],
            vec![ConstraintSpec::Phrase(vec![])],
            vec![ConstraintSpec::OneOf(vec![vec![1], vec![]])],
            vec![ConstraintSpec::OneOf(vec![vec![1, 2], vec![1, 2, 3]])],
            vec![ConstraintSpec::Phrase(vec![1, 99])],
            vec![ConstraintSpec::Phrase(vec![-1])],
        ];
        for specs in bad {
            let err = ConstraintSet::new(specs.clone(), Some(50)).unwrap_err();
            assert!(
                err.to_string().starts_with("force_words_ids"),
                "{specs:?}: {err}"
            );
        }
    }
}
