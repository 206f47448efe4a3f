//! Finished hypotheses of one batch item (or one group of it).
//!
//! [`FinishedSlots`] is transformers 5.x's fixed array of `num_beams` slots merged by
//! top-k each step; [`NBest`] is transformers 4.x's `BeamHypotheses` list, which
//! group beam search keeps (scores in double precision, as Python floats).

use super::tree::NO_NODE;
use super::NEG_LARGE;
use crate::buffers;
use crate::error::Result;

/// Most entries allocated up front for a list whose bound comes from the caller.
const PREALLOCATED: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// Length-normalised score; `-1e9` while empty.
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

#[derive(Debug, Clone)]
pub struct FinishedSlots {
    slots: Vec<Slot>,
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
        })
    }

    /// Best first.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn all_finished(&self) -> bool {
        self.slots.iter().all(|s| s.finished)
    }

    /// transformers' early-stop test: can `best_possible` beat a finished slot's floor?
    /// (A finished slot's floor is the lowest slot score, an unfinished one's `-1e9`.)
    pub fn can_improve(&self, best_possible: f32) -> bool {
        let min = self
            .slots
            .iter()
            .map(|s| s.score)
            .fold(f32::INFINITY, f32::min);
        self.slots
            .iter()
            .any(|s| best_possible > if s.finished { min } else { NEG_LARGE })
    }

    /// Keeps the best `num_beams` of the current slots and the candidates
    /// (`(score, just finished)`; a candidate that may not enter carries a `-1e9`
    /// penalty in its score). Returns where each new slot came from; the caller
    /// fills in the nodes of new candidates with [`Self::set_node`].
    pub fn merge(&mut self, candidates: &[(f32, bool)]) -> Vec<Source> {
        let n = self.slots.len();
        let mut order: Vec<(f32, usize)> = self
            .slots
            .iter()
            .map(|s| s.score)
            .chain(candidates.iter().map(|c| c.0))
            .zip(0..)
            .collect();
        // stable: equal scores keep their position order (old slots first)
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let old = self.slots.clone();
        let mut sources = Vec::with_capacity(n);
        for (slot, &(score, pos)) in self.slots.iter_mut().zip(&order) {
            if pos < n {
                *slot = old[pos];
                sources.push(Source::Kept(pos));
            } else {
                let (_, finished) = candidates[pos - n];
                *slot = Slot {
                    score,
                    node: NO_NODE,
                    finished,
                };
                sources.push(Source::Candidate(pos - n));
            }
        }
        sources
    }

    pub fn set_node(&mut self, slot: usize, node: u32) {
        self.slots[slot].node = node;
    }
}

/// transformers 4.x `BeamHypotheses`: the `capacity` best finished hypotheses in
/// insertion order, the worst one replaced when a better one arrives.
#[derive(Debug, Clone)]
pub struct NBest {
    capacity: usize,
    beams: Vec<(f64, u32)>,
    worst: f64,
}

impl NBest {
    pub fn new(capacity: usize) -> Self {
        NBest {
            capacity,
            // Grows past this only with hypotheses actually added.
            beams: Vec::with_capacity(capacity.saturating_add(1).min(PREALLOCATED)),
            worst: 1e9,
        }
    }

    pub fn is_full(&self) -> bool {
        self.beams.len() >= self.capacity
    }

    pub fn worst_score(&self) -> f64 {
        self.worst
    }

    /// `(score, node)` in insertion order (with removals).
    pub fn beams(&self) -> &[(f64, u32)] {
        &self.beams
    }

    /// Whether a hypothesis with this score would be kept.
    pub fn accepts(&self, score: f64) -> bool {
        self.beams.len() < self.capacity || score > self.worst
    }

    /// Adds a hypothesis (if [`Self::accepts`] it); returns the node it evicted, if any.
    pub fn add(&mut self, score: f64, node: u32) -> Option<u32> {
        if !self.accepts(score) {
            return None;
        }
        self.beams.push((score, node));
        if self.beams.len() > self.capacity {
            let mut ranked: Vec<(f64, usize)> = self.beams.iter().map(|b| b.0).zip(0..).collect();
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let evicted = self.beams.remove(ranked[0].1).1;
            self.worst = ranked[1].0;
            Some(evicted)
        } else {
            self.worst = self.worst.min(score);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_merge_keeps_best_and_marks_finished() {
        let mut s = FinishedSlots::new(2).unwrap();
        let src = s.merge(&[(-1.0, true), (-3.0, true), (-0.5 + NEG_LARGE, false)]);
        assert_eq!(src, vec![Source::Candidate(0), Source::Candidate(1)]);
        assert!(s.all_finished());
        assert!(s.can_improve(-2.0) && !s.can_improve(-3.5));
        let src = s.merge(&[(-2.0, true)]);
        assert_eq!(src, vec![Source::Kept(0), Source::Candidate(0)]);
        assert_eq!(s.slots()[1].score, -2.0);
    }

    #[test]
    fn unfinished_slots_can_always_improve() {
        let mut s = FinishedSlots::new(2).unwrap();
        s.merge(&[(-1.0, true)]);
        assert!(!s.all_finished());
        assert!(s.can_improve(-100.0));
    }

    #[test]
    fn nbest_replaces_worst() {
        let mut h = NBest::new(2);
        assert_eq!(h.add(-2.0, 1), None);
        assert_eq!(h.add(-1.0, 2), None);
        assert_eq!(h.worst_score(), -2.0);
        assert!(!h.accepts(-3.0));
        assert_eq!(h.add(-1.5, 3), Some(1));
        assert_eq!(h.beams(), &[(-1.0, 2), (-1.5, 3)]);
        assert_eq!(h.worst_score(), -1.5);
    }
}
