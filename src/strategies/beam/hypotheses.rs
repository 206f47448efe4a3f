//! Finished hypotheses of one batch item: [`FinishedSlots`], transformers 5.x's fixed
//! array of `num_beams` slots merged by top-k each step (4.x's n-best list, which group
//! and constrained beam search keep, is `super::nbest`).

use super::torch_order;
use super::tree::NO_NODE;
use super::NEG_LARGE;
use crate::buffers;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// Length-normalised score; while empty, [`empty_slot_score`].
    pub score: f32,
    pub node: u32,
    pub finished: bool,
}

/// Where a slot's content comes from after a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Kept(usize),
    Candidate(usize),
}

/// A candidate offered to the finished slots. Whether it may enter and the value
/// transformers' merge ranks it by both come from these fields (one rule, two readings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer {
    /// Length-normalised score.
    pub score: f32,
    /// transformers' reasons to keep it out, each adding -1e9 to its merge value, in the
    /// order it adds them: the item's slots are full (`early_stopping=True`), the item
    /// can no longer improve, it did not finish among the top `num_beams` candidates.
    pub barred: [bool; 3],
    /// ferrogen's own condition: its sum of log-probabilities is above -inf (transformers
    /// would merge it at -inf).
    pub possible: bool,
}

impl Offer {
    /// Whether it takes a slot (if its score ranks among the best `num_beams`).
    pub fn may_enter(&self) -> bool {
        self.possible && !self.barred.contains(&true)
    }

    /// transformers' merge value: the score plus `reason × -1e9` per reason, each a torch
    /// float addition (`0 × -1e9` is `-0.0`, which leaves every score as it is).
    pub fn placed(&self) -> f32 {
        self.barred
            .iter()
            .fold(self.score, |v, &no| v + if no { NEG_LARGE } else { -0.0 })
    }
}

/// Score an empty slot reports, given the lowest finished score of its item (`+inf`
/// when none): transformers' `-1e9` placeholder, or `-inf` when a finished score is below
/// the placeholder (`length_penalty <= -10`, an overflow), so that an empty slot never
/// ranks above a hypothesis and the returned scores stay best first.
pub(crate) fn empty_slot_score(lowest_finished: f32) -> f32 {
    if lowest_finished < NEG_LARGE {
        f32::NEG_INFINITY
    } else {
        NEG_LARGE
    }
}

#[derive(Debug, Clone)]
pub struct FinishedSlots {
    slots: Vec<Slot>,
    /// transformers' `beam_scores`, slot by slot (placeholders included): what its merge
    /// ranks, so [`Self::merge_placed`] can order equal scores as it does.
    placed: Vec<f32>,
}

impl FinishedSlots {
    /// `num_beams` empty slots; an error naming `num_beams` when they cannot be allocated.
    pub fn new(num_beams: usize) -> Result<Self> {
        let empty = Slot {
            score: NEG_LARGE,
            node: NO_NODE,
            finished: false,
        };
        Ok(FinishedSlots {
            slots: buffers::filled("num_beams", num_beams, empty)?,
            placed: buffers::filled("num_beams", num_beams, NEG_LARGE)?,
        })
    }

    /// Best first: finished slots by score, then the empty ones, whose score
    /// ([`empty_slot_score`]) is below every finished one.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn all_finished(&self) -> bool {
        self.slots.iter().all(|s| s.finished)
    }

    /// transformers' early-stop test: can a running beam whose best possible score is
    /// `best_possible` still take a slot? An empty slot takes any possible hypothesis
    /// (`possible`: its sum of log-probabilities is above -inf); full slots only one that
    /// beats the lowest of them.
    ///
    /// transformers compares with its `-1e9` placeholder instead, so a running score
    /// below -1e9 (`length_penalty <= -10` makes those common) ends the search with empty
    /// slots; see docs/transformers-differences.md.
    pub fn can_improve(&self, best_possible: f32, possible: bool) -> bool {
        if !self.all_finished() {
            return possible;
        }
        let min = self
            .slots
            .iter()
            .map(|s| s.score)
            .fold(f32::INFINITY, f32::min);
        best_possible > min
    }

    /// Keeps the best `num_beams` of the finished slots and the candidates
    /// `(score, may enter)`. Only finished hypotheses fill slots: a candidate that may
    /// not enter (still running, the item closed, or impossible: a sum of log-probabilities
    /// of -inf) is never kept, and one that may takes an empty slot whatever its score
    /// (which can overflow to -inf); empty slots come last, scored by [`empty_slot_score`].
    /// Equal scores keep their position order (old slots first).
    /// Returns where each new slot came from; the caller fills in the nodes of new
    /// candidates with [`Self::set_node`].
    ///
    /// transformers merges placeholder arithmetic instead (running candidates at
    /// `score - 1e9` against empty slots at `-1e9`): the same slots whenever finished
    /// scores are above -1e9, but below it (`length_penalty <= -10`, a `+inf` score) a
    /// slot can keep its placeholder or a running beam's prefix.
    pub fn merge(&mut self, candidates: &[(f32, bool)]) -> Vec<Source> {
        let order = self.ranked(candidates);
        let sources = self.fill(&order);
        self.placed = self.slots.iter().map(Slot::placeholder).collect();
        sources
    }

    /// [`Self::merge`] of `offers`, with equal scores in the order transformers' merge gives
    /// them: `torch.topk` over its `beam_scores` (`self.placed`) and each offer's
    /// [`Offer::placed`] value, whose CPU kernel is not stable ([`torch_order`]).
    ///
    /// One ranking, torch's, wherever it keeps what [`Self::merge`] keeps: its top `n` must
    /// open with every entry that may enter (all of them, or `n`), and those hold no NaN.
    /// Then the two pick the same scores in the same places: an entry that may enter is
    /// placed at exactly its score (no -1e9 added; a finished slot's `placed` is its score),
    /// so both take the largest of the same values, best first; only the order among equal
    /// scores differs, and that is torch's. Where torch's pick differs, transformers'
    /// placeholder arithmetic keeps what ferrogen deliberately does not (a finished score
    /// near or below -1e9 with `length_penalty <= -10` loses to a running candidate's
    /// `score - 1e9` or an empty slot's -1e9; a `+inf` running score stays `+inf` after
    /// its -1e9; docs/transformers-differences.md), and [`Self::merge`] decides instead
    /// (`fallback_where_torch_keeps_a_running_candidate`). A NaN compares unequal to
    /// itself, so the old check of the two rankings against each other fell back there too.
    pub fn merge_placed(&mut self, offers: &[Offer]) -> Vec<Source> {
        let n = self.slots.len();
        let merged: Vec<f32> = self
            .placed
            .iter()
            .copied()
            .chain(offers.iter().map(Offer::placed))
            .collect();
        let enters = |e: usize| {
            if e < n {
                self.slots[e].finished
            } else {
                offers[e - n].may_enter()
            }
        };
        let top = torch_order::top_k(&merged, n);
        let kept = top.iter().take_while(|&&e| enters(e)).count();
        let entering = (0..merged.len()).filter(|&e| enters(e)).count();
        if kept != entering.min(n) || top[..kept].iter().any(|&e| merged[e].is_nan()) {
            let candidates: Vec<(f32, bool)> =
                offers.iter().map(|o| (o.score, o.may_enter())).collect();
            return self.merge(&candidates);
        }
        let order: Vec<(f32, usize)> = top[..kept].iter().map(|&e| (merged[e], e)).collect();
        let sources = self.fill(&order);
        self.placed = top.iter().map(|&e| merged[e]).collect();
        sources
    }

    /// The finished slots and the candidates that may enter, `(score, position)` (slots
    /// at `0..n`, candidates after), best first; equal scores in position order.
    fn ranked(&self, candidates: &[(f32, bool)]) -> Vec<(f32, usize)> {
        let n = self.slots.len();
        let mut order: Vec<(f32, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.finished)
            .map(|(i, s)| (s.score, i))
            .chain(
                candidates
                    .iter()
                    .enumerate()
                    .filter(|(_, &(_, may_enter))| may_enter)
                    .map(|(j, &(score, _))| (score, n + j)),
            )
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        order
    }

    /// The slots become `order`'s entries (positions as [`Self::ranked`] gives them), then
    /// the old empty slots; returns where each came from.
    fn fill(&mut self, order: &[(f32, usize)]) -> Vec<Source> {
        let n = self.slots.len();
        let old = self.slots.clone();
        let mut empty = (0..n).filter(|&i| !old[i].finished);
        let mut sources = Vec::with_capacity(n);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            match order.get(i) {
                Some(&(_, pos)) if pos < n => {
                    *slot = old[pos];
                    sources.push(Source::Kept(pos));
                }
                Some(&(score, pos)) => {
                    *slot = Slot {
                        score,
                        node: NO_NODE,
                        finished: true,
                    };
                    sources.push(Source::Candidate(pos - n));
                }
                None => {
                    // fewer hypotheses than slots: as many old slots were empty
                    let e = empty
                        .next()
                        .expect("an empty old slot per missing hypothesis");
                    *slot = old[e];
                    sources.push(Source::Kept(e));
                }
            }
        }
        let lowest = self
            .slots
            .iter()
            .filter(|s| s.finished)
            .map(|s| s.score)
            .fold(f32::INFINITY, f32::min);
        for slot in self.slots.iter_mut().filter(|s| !s.finished) {
            slot.score = empty_slot_score(lowest);
        }
        sources
    }

    pub fn set_node(&mut self, slot: usize, node: u32) {
        self.slots[slot].node = node;
    }
}

impl Slot {
    /// What transformers holds for this slot after a merge it agrees with: the score, or
    /// its `-1e9` placeholder for an empty slot.
    fn placeholder(&self) -> f32 {
        if self.finished {
            self.score
        } else {
            NEG_LARGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer that may enter (`barred` none, possible) or one held out as running
    /// among the top `num_beams`, as `commit_item` makes them.
    fn offer(score: f32, finished: bool) -> Offer {
        Offer {
            score,
            barred: [false, false, !finished],
            possible: true,
        }
    }

    #[test]
    fn placed_merge_orders_equal_scores_as_torch_topk() {
        // four finished candidates tied at -1, four running ones at -1 - 1e9 (-1e9 in
        // float32): torch.topk([-1e9 x4, -1 x4, -1e9 x4], 4) gives [6, 5, 4, 7] (printed by
        // torch 2.x; with -2e9 in the last four it gives [6, 4, 5, 7])
        let offers: Vec<Offer> = [true; 4]
            .into_iter()
            .chain([false; 4])
            .map(|f| offer(-1.0, f))
            .collect();
        assert_eq!(offers[4].placed(), -1.0e9 - 1.0);
        let mut s = FinishedSlots::new(4).unwrap();
        let got = s.merge_placed(&offers);
        let want = [2, 1, 0, 3].map(Source::Candidate);
        assert_eq!(got, want);
        let cands: Vec<(f32, bool)> = offers.iter().map(|o| (o.score, o.may_enter())).collect();
        let mut s = FinishedSlots::new(4).unwrap();
        assert_eq!(s.merge(&cands), [0, 1, 2, 3].map(Source::Candidate));
    }

    /// The case the fallback is for: a finished score below -1e9 (`length_penalty <= -10`)
    /// ranks under a running candidate's `score - 1e9` in transformers' merge, which would
    /// keep the running one (docs/transformers-differences.md); only the finished one enters.
    #[test]
    fn fallback_where_torch_keeps_a_running_candidate() {
        let offers = [offer(-0.5, false), offer(-5.0e9, true)];
        assert!(offers[0].placed() > offers[1].placed());
        let mut s = FinishedSlots::new(1).unwrap();
        assert_eq!(s.merge_placed(&offers), vec![Source::Candidate(1)]);
        assert_eq!(s.slots()[0].score, -5.0e9);
        // and `+inf` running: +inf - 1e9 is +inf, above every finished score
        let offers = [offer(f32::INFINITY, false), offer(-2.0, true)];
        let mut s = FinishedSlots::new(2).unwrap();
        assert_eq!(s.merge_placed(&offers)[0], Source::Candidate(1));
        assert!(s.slots()[0].finished && !s.slots()[1].finished);
    }

    /// The merge as it was before it ranked once: torch's top-k and [`FinishedSlots::ranked`]
    /// both, compared, falling back to [`FinishedSlots::merge`] where they part.
    fn merge_placed_ranking_twice(s: &mut FinishedSlots, offers: &[Offer]) -> Vec<Source> {
        let candidates: Vec<(f32, bool)> =
            offers.iter().map(|o| (o.score, o.may_enter())).collect();
        let placed: Vec<f32> = offers.iter().map(Offer::placed).collect();
        let n = s.slots.len();
        let ranked = s.ranked(&candidates);
        let merged: Vec<f32> = s.placed.iter().chain(&placed).copied().collect();
        let top = torch_order::top_k(&merged, n);
        let enters = |e: usize| {
            if e < n {
                s.slots[e].finished
            } else {
                candidates[e - n].1
            }
        };
        let kept = top.iter().take_while(|&&e| enters(e)).count();
        let same = kept == ranked.len().min(n)
            && top[kept..].iter().all(|&e| !enters(e))
            && top.iter().zip(&ranked).all(|(&e, r)| merged[e] == r.0);
        if !same {
            return s.merge(&candidates);
        }
        let order: Vec<(f32, usize)> = top[..kept].iter().map(|&e| (merged[e], e)).collect();
        let sources = s.fill(&order);
        s.placed = top.iter().map(|&e| merged[e]).collect();
        sources
    }

    proptest::proptest! {
        /// Ranking once gives what ranking twice gave, step after step (the slots carry
        /// over), with ties, signed zeros, infinities, NaN, scores near -1e9 and every
        /// reason to keep an offer out.
        #[test]
        fn ranking_once_is_ranking_twice(
            beams in 1usize..6,
            steps in proptest::collection::vec(
                proptest::collection::vec((0usize..12, proptest::bits::u8::ANY), 1..14), 1..6),
        ) {
            let values = [-1.0f32, -1.0, -2.0, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY,
                          f32::NAN, -1.0e9, -5.0e9, -3.0, -0.5];
            let (mut once, mut twice) = (FinishedSlots::new(beams).unwrap(), FinishedSlots::new(beams).unwrap());
            for step in steps {
                let offers: Vec<Offer> = step.iter().map(|&(v, bits)| Offer {
                    score: values[v],
                    barred: [bits & 1 != 0 && bits & 8 != 0, bits & 2 != 0 && bits & 16 != 0, bits & 4 != 0],
                    possible: bits & 32 == 0 || bits & 64 == 0,
                }).collect();
                let (a, b) = (once.merge_placed(&offers), merge_placed_ranking_twice(&mut twice, &offers));
                proptest::prop_assert_eq!(a, b);
                let bits = |s: &FinishedSlots| s.slots.iter().map(|x| (x.score.to_bits(), x.finished))
                    .chain(s.placed.iter().map(|p| (p.to_bits(), true))).collect::<Vec<_>>();
                proptest::prop_assert_eq!(bits(&once), bits(&twice));
            }
        }
    }

    #[test]
    fn slots_merge_keeps_best_and_marks_finished() {
        let mut s = FinishedSlots::new(2).unwrap();
        let src = s.merge(&[(-1.0, true), (-3.0, true), (-0.5, false)]);
        assert_eq!(src, vec![Source::Candidate(0), Source::Candidate(1)]);
        assert!(s.all_finished());
        assert!(s.can_improve(-2.0, true) && !s.can_improve(-3.5, true));
        let src = s.merge(&[(-2.0, true)]);
        assert_eq!(src, vec![Source::Kept(0), Source::Candidate(0)]);
        assert_eq!(s.slots()[1].score, -2.0);
    }

    #[test]
    fn unfinished_slots_can_always_improve() {
        let mut s = FinishedSlots::new(2).unwrap();
        s.merge(&[(-1.0, true)]);
        assert!(!s.all_finished());
        assert!(s.can_improve(-100.0, true));
        assert!(
            s.can_improve(-1.0e12, true),
            "below transformers' -1e9 placeholder"
        );
        assert!(
            s.can_improve(f32::NEG_INFINITY, true),
            "normalised to -inf, still possible"
        );
        assert!(!s.can_improve(-1.0, false), "no possible hypothesis");
    }

    /// Scores below -1e9 (`length_penalty <= -10`) and +inf are hypotheses like any other:
    /// they fill empty slots; running candidates never do, at any score.
    #[test]
    fn only_finished_hypotheses_fill_slots_whatever_their_score() {
        let mut s = FinishedSlots::new(3).unwrap();
        let src = s.merge(&[(-0.5, false), (-5.0e9, true), (f32::INFINITY, false)]);
        assert_eq!(src[0], Source::Candidate(1));
        assert!(matches!(src[1], Source::Kept(_)) && matches!(src[2], Source::Kept(_)));
        assert_eq!(s.slots()[0].score, -5.0e9);
        assert!(s.slots()[0].finished && !s.slots()[1].finished && !s.slots()[2].finished);
        s.merge(&[(f32::INFINITY, true), (-7.0, false), (f32::NAN, false)]);
        let scores: Vec<f32> = s.slots().iter().map(|x| x.score).collect();
        assert_eq!(scores, vec![f32::INFINITY, -5.0e9, f32::NEG_INFINITY]);
        assert!(!s.slots()[2].finished);
    }

    /// fuzz (beam target): a finished hypothesis scored below the -1e9 placeholder took
    /// slot 0 and the empty slots after it kept -1e9, so `finalize` returned
    /// `[-3.4028235e38, -1e9, -1e9]`, not best first.
    #[test]
    fn empty_slots_never_score_above_a_finished_hypothesis() {
        let best_first = |s: &FinishedSlots| {
            let scores: Vec<f32> = s.slots().iter().map(|x| x.score).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
            scores
        };
        let mut s = FinishedSlots::new(3).unwrap();
        assert_eq!(
            best_first(&s),
            vec![NEG_LARGE; 3],
            "transformers' placeholder"
        );
        s.merge(&[(-2.0, true)]);
        assert_eq!(best_first(&s), vec![-2.0, NEG_LARGE, NEG_LARGE]);
        s.merge(&[(f32::MIN, true), (-1.0, false)]);
        assert_eq!(best_first(&s), vec![-2.0, f32::MIN, f32::NEG_INFINITY]);
        s.merge(&[(-1.0, true)]);
        assert_eq!(best_first(&s), vec![-1.0, -2.0, f32::MIN]);
        assert!(s.all_finished());
    }
}
