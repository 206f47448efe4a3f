//! What beam, group and constrained search share: the state one step leaves behind (next
//! token and parent row of every beam), the hypothesis tree, streaming of the settled prefix,
//! and how a search ends. The bindings wrap the three searches through this trait once.

use super::{BeamTree, Finalized, NodeRef};

/// The next token and the parent row of every running beam after the last complete step.
#[derive(Debug, Clone, Default)]
pub struct StepChoice {
    /// `[batch * num_beams]`.
    pub tokens: Vec<i64>,
    /// Row each beam continues: reorder the KV cache by it.
    pub parents: Vec<i64>,
}

impl StepChoice {
    /// The choice before any step: every row its own parent. Sized from `num_beams`
    /// (checked: an impossible size is an error, not an abort).
    pub fn new(rows: usize) -> crate::Result<Self> {
        Ok(StepChoice {
            tokens: crate::buffers::filled("num_beams", rows, 0)?,
            parents: crate::buffers::collect("num_beams", rows, 0..rows as i64)?,
        })
    }
}

/// The [`BeamCore`] accessors of a search whose fields `batch`, `tree`, `choice` and
/// `streamed` are what they return (written once for the three searches).
macro_rules! field_accessors {
    () => {
        fn batch(&self) -> usize {
            self.batch
        }

        fn tree(&self) -> &$crate::beam::BeamTree {
            &self.tree
        }

        fn choice(&self) -> &$crate::beam::StepChoice {
            &self.choice
        }

        fn streamed_mut(&mut self) -> &mut [usize] {
            &mut self.streamed
        }
    };
}
pub(crate) use field_accessors;

/// A beam search of any kind, as the decoding loop drives it.
pub trait BeamCore {
    /// Batch items (prompts).
    fn batch(&self) -> usize;
    fn tree(&self) -> &BeamTree;
    /// The last complete step's choice.
    fn choice(&self) -> &StepChoice;
    /// No step is needed any more (every item done, `max_length`, or [`Self::stop`]).
    fn is_done(&self) -> bool;
    /// Ends the search: the stopping criterion with `code` (>= 1) fired for every row
    /// outside the core.
    fn stop(&mut self, code: u8);
    /// Nodes whose common prefix is settled for batch item `b`: the best finished
    /// hypothesis and the running beams of an item still searching.
    fn settled_candidates(&self, b: usize) -> Vec<NodeRef>;
    /// Per batch item, how many tokens were already returned as settled.
    fn streamed_mut(&mut self) -> &mut [usize];
    /// The best `num_return_sequences` hypotheses of every batch item.
    fn finalize(&mut self) -> Finalized;
    /// Nodes still alive at the end (the rest of the tree was pruned).
    fn surviving_nodes(&self) -> Vec<u32>;

    /// Token of every row after the last complete step.
    fn next_tokens(&self) -> &[i64] {
        &self.choice().tokens
    }

    /// Row each beam continues after the last complete step.
    fn parents(&self) -> &[i64] {
        &self.choice().parents
    }

    /// Tokens that every hypothesis which can still win agrees on, per batch item, not yet
    /// returned by an earlier call.
    fn take_settled(&mut self) -> Vec<Vec<i64>> {
        (0..self.batch())
            .map(|b| {
                let set = self.settled_candidates(b);
                let mut streamed = self.streamed_mut()[b];
                let tokens = self.tree().settled_tokens(&set, &mut streamed);
                self.streamed_mut()[b] = streamed;
                tokens
            })
            .collect()
    }
}
