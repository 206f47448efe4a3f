//! The last steps of a constrained search: every chosen beam must still be able to
//! complete its constraints before `max_length`.
//!
//! transformers deals the candidates over banks up to the last step, so in the last steps
//! beams that can no longer fit the rest of their constraints keep their slots, and with
//! `num_return_sequences > 1` the later returned rows miss a constraint although there was
//! ample room. Here a candidate is *completable* when
//! [`ConstraintState::tokens_to_complete`] fits in the steps left after it. While at least
//! `num_return_sequences` chosen candidates are completable the step is transformers' own
//! (so the goldens where transformers meets the constraints are unchanged). Otherwise the
//! lowest-ranked chosen candidates that are not are replaced, in their slots, by the next
//! completable ones (first the rest of the bank order, then the best continuations of every
//! beam that can still complete) until `num_return_sequences` are.
//!
//! Why this keeps enough beams completable: a beam that can complete has a continuation that
//! can (the first token of its plan, see `tokens_to_complete`), and the continuations added
//! here include it; so the number of completable beams never falls below
//! `num_return_sequences` once reached, and at `max_length` that many beams satisfy the
//! constraints (only satisfying hypotheses are ever kept as finished).

use std::collections::{HashSet, VecDeque};

use super::{Cand, ConstrainedBeamSearch};
use crate::constraints::ConstraintState;

/// A token no constraint uses (constraint ids are >= 0): every such token has this effect.
const UNUSED_TOKEN: i64 = -1;

impl ConstrainedBeamSearch {
    /// The first `num_beams` of `order` (indices into `cands`, ranked), with each one that
    /// cannot complete its constraints in the steps left replaced by a completable one.
    pub(super) fn keep_completable(
        &self,
        b: usize,
        rows: &[f32],
        vocab: usize,
        cands: &mut Vec<Cand>,
        order: Vec<usize>,
    ) -> Vec<usize> {
        let left = self.steps_left_after_this();
        let beams = self.beams;
        let (chosen, rest) = order.split_at(beams.min(order.len()));
        let fitting = chosen
            .iter()
            .filter(|&&i| self.fits(&cands[i].state, left))
            .count();
        let wanted = self.s.num_return_sequences.min(chosen.len());
        if fitting >= wanted {
            return chosen.to_vec();
        }
        let mut spare: VecDeque<usize> = rest
            .iter()
            .copied()
            .filter(|&i| self.fits(&cands[i].state, left))
            .collect();
        let first_new = cands.len();
        self.completable_continuations(b, rows, vocab, left, cands);
        let added = self.bank_ranked(&cands[first_new..]);
        spare.extend(added.into_iter().map(|i| first_new + i));
        if self.grammar {
            // a token the grammar forbids never stands in for one it allows
            spare.retain(|&i| cands[i].score != f32::NEG_INFINITY);
        }
        // the lowest-ranked slots that cannot complete go first, and only as many as needed
        let mut chosen = chosen.to_vec();
        let mut missing = wanted - fitting;
        for slot in chosen.iter_mut().rev() {
            if missing == 0 {
                break;
            }
            if !self.fits(&cands[*slot].state, left) {
                match spare.pop_front() {
                    Some(i) => *slot = i,
                    None => break,
                }
                missing -= 1;
            }
        }
        chosen
    }

    /// Tokens that can still follow the token chosen in this step.
    fn steps_left_after_this(&self) -> usize {
        self.s.max_length.saturating_sub(self.history.len() + 1)
    }

    fn fits(&self, state: &ConstraintState, left: usize) -> bool {
        state.tokens_to_complete(&self.set) <= left
    }

    /// Appends, for every distinct beam of item `b` that can still complete, its best
    /// `num_beams` continuations that can too (not EOS, finite score, not already a
    /// candidate).
    fn completable_continuations(
        &self,
        b: usize,
        rows: &[f32],
        vocab: usize,
        left: usize,
        cands: &mut Vec<Cand>,
    ) {
        let first = b * self.beams;
        let mut seen: HashSet<(u32, i64)> = cands
            .iter()
            .map(|c| (self.seq_ids[c.parent_row], c.token))
            .collect();
        let mut beams_seen = HashSet::new();
        for i in 0..self.beams {
            let row = first + i;
            let state = &self.states[row];
            if !beams_seen.insert(self.seq_ids[row]) || !self.fits(state, left + 1) {
                continue;
            }
            let mut unused = state.clone();
            unused.add(&self.set, UNUSED_TOKEN);
            let unused_fits = self.fits(&unused, left);
            let mut best: Vec<(f32, i64)> = Vec::with_capacity(self.beams + 1);
            for (t, &logit) in rows[i * vocab..(i + 1) * vocab].iter().enumerate() {
                let (token, score) = (t as i64, logit + self.beam_scores[row]);
                if score.is_nan() || score == f32::NEG_INFINITY || self.s.is_eos(token) {
                    continue;
                }
                if best.len() == self.beams && score <= best[best.len() - 1].0 {
                    continue;
                }
                let fits = if self.set.uses_token(token) {
                    let mut next = state.clone();
                    next.add(&self.set, token);
                    self.fits(&next, left)
                } else {
                    unused_fits
                };
                if fits {
                    let at = best.partition_point(|&(s, _)| s >= score);
                    best.insert(at, (score, token));
                    best.truncate(self.beams);
                }
            }
            for (score, token) in best {
                if seen.insert((self.seq_ids[row], token)) {
                    let mut next = state.clone();
                    next.add(&self.set, token);
                    cands.push(Cand {
                        score,
                        parent_row: row,
                        token,
                        state: next,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{contains, noise, run, satisfies, search, settings, specs_strategy};
    use crate::beam::BeamSettings;
    use crate::constraints::{ConstraintSet, ConstraintSpec};
    use crate::logits::PipelineConfig;
    use proptest::prelude::*;

    /// Issue 15: 4 beams, 20 new tokens, a 3-token phrase and a disjunctive set, the model
    /// never choosing a constraint token: every returned row (not only the best) must hold
    /// both. Before the last steps were checked, rows 2-4 held neither.
    #[test]
    fn every_returned_row_meets_the_constraints_with_room_to_spare() {
        let specs = vec![
            ConstraintSpec::Phrase(vec![20, 21, 22]),
            ConstraintSpec::OneOf(vec![vec![30], vec![31, 32]]),
        ];
        for seed in 0..20 {
            let mut s = search(&[5], 1, settings(4, &[2], 21, 4), specs.clone());
            let (out, ok, _) = run(&mut s, 40, |step, row, t| {
                noise(seed, step, row, t) - if t >= 20 { 8.0 } else { 0.0 }
            });
            assert_eq!(ok, vec![true; 4], "seed {seed}");
            for r in 0..4 {
                let row = &out.sequences[r * out.width..(r + 1) * out.width];
                assert!(satisfies(row, &specs), "seed {seed}: {row:?}");
            }
        }
    }

    #[test]
    fn the_last_token_can_be_the_only_one_left() {
        // max_new_tokens equals the phrase length: the one sequence that fits is returned first
        let mut s = search(
            &[5],
            1,
            settings(3, &[], 4, 3),
            vec![ConstraintSpec::Phrase(vec![7, 8, 9])],
        );
        let (out, ok, _) = run(&mut s, 12, |step, row, t| noise(3, step, row, t));
        assert!(ok[0]);
        assert!(contains(&out.sequences[..out.width], &[7, 8, 9]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// Whenever the constraints fit in the new tokens with one to spare (by
        /// `tokens_to_complete` of the prompt's state), every returned row contains every
        /// constraint, for any logits, EOS or not, any `num_return_sequences`.
        #[test]
        fn every_returned_row_satisfies_when_the_constraints_fit(
            specs in specs_strategy(), vocab in 10usize..16, beams in 2usize..6, spare in 1usize..8,
            seed in 0u64..10_000, batch in 1usize..3, eos in any::<bool>(),
        ) {
            let Ok(cs) = ConstraintSet::new(specs.clone(), Some(vocab)) else { return Ok(()) };
            let need = cs.initial_state().tokens_to_complete(&cs);
            let st = BeamSettings {
                num_beams: beams, eos_token_ids: if eos { vec![2] } else { vec![] },
                max_length: 1 + need + spare, num_return_sequences: beams, ..Default::default()
            };
            let prompts: Vec<i64> = (0..batch as i64).collect();
            let mut s = crate::beam::ConstrainedBeamSearch::new(
                &prompts, batch, &PipelineConfig::default(), st, cs, None).unwrap();
            let (out, ok, _) = run(&mut s, vocab, |step, row, t| noise(seed, step, row, t));
            for (r, &ok) in ok.iter().enumerate().take(out.rows) {
                let row = &out.sequences[r * out.width..(r + 1) * out.width];
                prop_assert!(ok && satisfies(row, &specs), "row {} {:?} misses {:?}", r, row, specs);
            }
        }
    }
}
