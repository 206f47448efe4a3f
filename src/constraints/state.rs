//! Progress of one hypothesis through every constraint of a [`ConstraintSet`].

use super::ConstraintSet;

/// Completed constraints, pending ones (in transformers' order: a reset constraint
/// goes to the back), and at most one in progress with its matcher state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConstraintState {
    completed: Vec<u16>,
    pending: Vec<u16>,
    in_progress: Option<(u16, usize)>,
}

impl ConstraintState {
    pub(super) fn new(n: usize) -> Self {
        ConstraintState {
            completed: Vec::new(),
            pending: (0..n as u16).collect(),
            in_progress: None,
        }
    }

    /// Every constraint is fulfilled.
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty() && self.in_progress.is_none()
    }

    pub fn completed_count(&self) -> usize {
        self.completed.len()
    }

    /// Progress measure used to group hypotheses into banks (transformers' `get_bank`).
    pub fn bank(&self, set: &ConstraintSet) -> usize {
        let partial = self.in_progress.map_or(0, |(c, s)| {
            set.max_seqlen() - set.get(c as usize).remaining(s)
        });
        self.completed.len() * set.max_seqlen() + partial
    }

    /// Tokens that always suffice to complete every constraint from here: finish the one in
    /// progress along its shortest continuation, then write each pending one's shortest
    /// alternative in pending order (0 when complete). The first token of that plan is one
    /// of [`Self::advance_tokens`] and leaves a state whose count is at least one lower, so
    /// a beam with `tokens_to_complete() <= steps left` can always still be completed.
    /// Overlapping constraints may fit in fewer tokens; this is an upper bound.
    pub fn tokens_to_complete(&self, set: &ConstraintSet) -> usize {
        let current = self
            .in_progress
            .map_or(0, |(c, s)| set.get(c as usize).shortest_remaining(s));
        self.pending
            .iter()
            .map(|&c| set.get(c as usize).shortest_remaining(0))
            .fold(current, usize::saturating_add)
    }

    /// Tokens that would make progress now: the in-progress constraint's next tokens,
    /// else the first tokens of every pending constraint. Empty when complete.
    pub fn advance_tokens(&self, set: &ConstraintSet, out: &mut Vec<i64>) {
        out.clear();
        match self.in_progress {
            Some((c, s)) => set.get(c as usize).next_tokens(s, out),
            None => {
                for &c in &self.pending {
                    set.get(c as usize).next_tokens(0, out);
                }
            }
        }
    }

    /// Reads one generated token.
    pub fn add(&mut self, set: &ConstraintSet, token: i64) {
        if self.is_complete() {
            return;
        }
        if let Some((c, s)) = self.in_progress {
            let constraint = set.get(c as usize);
            let next = constraint.step(s, token);
            if constraint.is_complete(next) {
                self.completed.push(c);
                self.in_progress = None;
            } else if next > 0 {
                self.in_progress = Some((c, next));
            } else {
                self.in_progress = None;
                self.pending.push(c);
                self.start(set, token);
            }
        } else {
            self.start(set, token);
        }
    }

    /// The first pending constraint that `token` starts becomes the one in progress.
    fn start(&mut self, set: &ConstraintSet, token: i64) {
        for i in 0..self.pending.len() {
            let c = self.pending[i];
            let constraint = set.get(c as usize);
            let state = constraint.step(0, token);
            if state > 0 {
                self.pending.remove(i);
                if constraint.is_complete(state) {
                    self.completed.push(c);
                } else {
                    self.in_progress = Some((c, state));
                }
                return;
            }
        }
    }

    /// A state that has read `tokens` from scratch.
    pub fn from_tokens(set: &ConstraintSet, tokens: &[i64]) -> Self {
        let mut state = set.initial_state();
        for &t in tokens {
            state.add(set, t);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConstraintSet, ConstraintSpec};
    use super::*;
    use proptest::prelude::*;

    fn set(specs: Vec<ConstraintSpec>) -> ConstraintSet {
        ConstraintSet::new(specs, None).unwrap()
    }

    #[test]
    fn banks_and_advance_follow_transformers() {
        let s = set(vec![
            ConstraintSpec::Phrase(vec![5, 6, 7]),
            ConstraintSpec::OneOf(vec![vec![8], vec![9, 10]]),
        ]);
        let mut st = s.initial_state();
        let mut adv = Vec::new();
        st.advance_tokens(&s, &mut adv);
        assert_eq!(adv, vec![5, 8, 9]);
        st.add(&s, 5);
        assert_eq!(st.bank(&s), 1);
        st.advance_tokens(&s, &mut adv);
        assert_eq!(adv, vec![6]);
        st.add(&s, 6);
        st.add(&s, 7);
        assert_eq!(st.bank(&s), 3);
        st.add(&s, 9);
        assert_eq!(
            st.bank(&s),
            3 + 3 - 1,
            "one of two tokens of the longest alternative"
        );
        st.add(&s, 10);
        assert!(st.is_complete());
        assert_eq!(st.bank(&s), s.max_bank());
    }

    /// A repeated first token keeps its progress (and bank), in a phrase and in alternatives;
    /// transformers 4.55 resets both to bank 0 (issue 19070). On a random GPT-2 with these
    /// constraints this alone parts 4.55's 64-token result from ferrogen's (the golden
    /// `gpt2-multi-long32` pins it).
    #[test]
    fn a_repeated_first_token_keeps_its_bank() {
        let s = set(vec![
            ConstraintSpec::Phrase(vec![1000, 1001]),
            ConstraintSpec::OneOf(vec![vec![2000], vec![3000, 3001]]),
        ]);
        let mut adv = Vec::new();
        for (tokens, next) in [(vec![3000, 3000], 3001), (vec![1000, 1000, 1000], 1001)] {
            let st = ConstraintState::from_tokens(&s, &tokens);
            assert_eq!(st.bank(&s), 1, "{tokens:?}");
            st.advance_tokens(&s, &mut adv);
            assert_eq!(adv, vec![next], "{tokens:?}");
        }
    }

    proptest! {
        /// From any state, some advancing token lowers `tokens_to_complete` by at least one,
        /// so following such tokens completes every constraint within that many tokens.
        #[test]
        fn tokens_to_complete_is_an_achievable_plan(
            specs in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(0i64..4, 1..4).prop_map(ConstraintSpec::Phrase),
                    proptest::collection::vec(proptest::collection::vec(0i64..4, 1..4), 1..4)
                        .prop_map(ConstraintSpec::OneOf),
                ],
                1..4,
            ),
            text in proptest::collection::vec(0i64..5, 0..12),
        ) {
            let Ok(s) = ConstraintSet::new(specs, None) else { return Ok(()) };
            let mut st = ConstraintState::from_tokens(&s, &text);
            let budget = st.tokens_to_complete(&s);
            let mut adv = Vec::new();
            for _ in 0..budget {
                if st.is_complete() {
                    break;
                }
                st.advance_tokens(&s, &mut adv);
                let before = st.tokens_to_complete(&s);
                let best = adv.iter().map(|&t| {
                    let mut next = st.clone();
                    next.add(&s, t);
                    next
                }).min_by_key(|n| n.tokens_to_complete(&s)).unwrap();
                prop_assert!(best.tokens_to_complete(&s) < before, "{:?} -> {:?}", st, best);
                st = best;
            }
            prop_assert!(st.is_complete(), "not complete after {} tokens", budget);
            prop_assert_eq!(st.tokens_to_complete(&s), 0);
        }
    }

    #[test]
    fn a_token_that_breaks_one_attempt_can_start_another() {
        let s = set(vec![
            ConstraintSpec::Phrase(vec![1, 2]),
            ConstraintSpec::Phrase(vec![3]),
        ]);
        let st = ConstraintState::from_tokens(&s, &[1, 3]);
        assert_eq!(
            st.completed_count(),
            1,
            "3 completes the second phrase although it broke the first"
        );
        let s = set(vec![ConstraintSpec::Phrase(vec![33, 34, 35])]);
        assert!(ConstraintState::from_tokens(&s, &[33, 33, 34, 35]).is_complete());
    }
}
