//! The returned sequences of a finished search, shaped as transformers returns them.

use super::tree::{BeamTree, EndReason, NO_NODE};

/// `rows = batch × num_return_sequences`, best first within each batch item.
#[derive(Debug, Clone, PartialEq)]
pub struct Finalized {
    pub rows: usize,
    /// Prompt plus the longest returned hypothesis.
    pub width: usize,
    /// `[rows, width]`, padded with the pad token after a hypothesis ends.
    pub sequences: Vec<i64>,
    /// Length-normalised score of each returned hypothesis.
    pub scores: Vec<f32>,
    /// `width - prompt length`.
    pub generated_width: usize,
    /// `[rows, generated_width]`: at each step the row (`batch × num_beams + beam`) of
    /// the beam that the token extended; `-1` after the hypothesis ends.
    pub beam_indices: Vec<i64>,
    pub reasons: Vec<EndReason>,
    /// Last node of each returned hypothesis (`NO_NODE` for an empty one).
    pub nodes: Vec<u32>,
    /// Constrained search: whether each returned row satisfies every constraint (empty for
    /// the other searches).
    pub constraints_satisfied: Vec<bool>,
}

/// One returned hypothesis: its prompt, its last node and its score.
pub(crate) struct Pick<'a> {
    pub prompt: &'a [i64],
    pub node: u32,
    pub score: f32,
}

pub(crate) fn assemble(tree: &BeamTree, picks: &[Pick<'_>], pad: i64) -> Finalized {
    let prompt_len = picks.first().map_or(0, |p| p.prompt.len());
    let generated_width = picks.iter().map(|p| tree.depth(p.node)).max().unwrap_or(0);
    let width = prompt_len + generated_width;
    let rows = picks.len();
    let mut sequences = Vec::with_capacity(rows * width);
    let mut beam_indices = Vec::with_capacity(rows * generated_width);
    for pick in picks {
        let start = sequences.len();
        sequences.extend_from_slice(pick.prompt);
        tree.extend_tokens(pick.node, &mut sequences);
        sequences.resize(start + width, pad);
        let start = beam_indices.len();
        beam_indices.extend(
            tree.path(pick.node)
                .into_iter()
                .map(|n| i64::from(tree.get(n).parent_row)),
        );
        beam_indices.resize(start + generated_width, -1);
    }
    Finalized {
        rows,
        width,
        sequences,
        scores: picks.iter().map(|p| p.score).collect(),
        generated_width,
        beam_indices,
        reasons: picks
            .iter()
            .map(|p| {
                if p.node == NO_NODE {
                    EndReason::Length
                } else {
                    tree.get(p.node).end
                }
            })
            .collect(),
        nodes: picks.iter().map(|p| p.node).collect(),
        constraints_satisfied: Vec::new(),
    }
}
