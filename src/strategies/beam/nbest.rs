//! transformers 4.x `BeamHypotheses`, which group and constrained beam search keep: the
//! best finished hypotheses of one batch item (or one group of it), scores in double
//! precision (as Python floats).

/// Most entries allocated up front for a list whose bound comes from the caller.
const PREALLOCATED: usize = 1024;

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
