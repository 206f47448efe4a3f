//! Committing a step: finished candidates into the slots, the best running ones into the
//! beams, their nodes into the tree, and whether the search goes on.

use super::super::hypotheses::{FinishedSlots, Offer, Source};
use super::super::length::{best_hypothetical_len, normalized_score};
use super::super::settings::EarlyStopping;
use super::super::torch_order;
use super::super::tree::{EndReason, Node, NodeRef, NO_NODE};
use super::super::NEG_LARGE;
use super::{BeamSearch, Candidate};
use crate::error::{CoreError, Result};

impl BeamSearch {
    /// Applies the proposed step. `extra_hits` (`[batch * K]`) marks candidates that a
    /// stopping criterion outside the core ended, with that criterion's code (>= 1; 0 =
    /// not ended); EOS and `max_length` are checked here.
    pub fn commit(&mut self, extra_hits: Option<&[u8]>) -> Result<()> {
        if !self.proposed {
            return Err(CoreError::invalid("beam_step", "commit without propose"));
        }
        if let Some(h) = extra_hits {
            if h.len() != self.candidates.len() {
                return Err(CoreError::Shape {
                    name: "stopping criteria",
                    expected: format!("[{}]", self.candidates.len()),
                    got: format!("{} values", h.len()),
                });
            }
        }
        self.proposed = false;
        let ends = self.end_reasons(extra_hits);
        let mut new_scores = vec![0.0f32; self.beams * self.batch];
        let mut new_nodes = vec![NodeRef::ROOT; self.beams * self.batch];
        for b in 0..self.batch {
            self.commit_item(b, &ends, &mut new_scores, &mut new_nodes);
        }
        let parents: Vec<usize> = self.choice.parents.iter().map(|&p| p as usize).collect();
        self.history.reorder(&parents);
        self.pipeline.reorder(&parents);
        self.warpers.reorder(&parents);
        self.history.push(&self.choice.tokens);
        self.running_scores = new_scores;
        self.running_nodes = new_nodes;
        self.step += 1;
        self.update_done(&ends);
        Ok(())
    }

    /// Why each candidate would end (EOS, `max_length`, a stopping criterion's code in
    /// `extra_hits`), or [`EndReason::Running`].
    fn end_reasons(&self, extra_hits: Option<&[u8]>) -> Vec<EndReason> {
        let at_max = self.history.len() + 1 >= self.s.max_length;
        let reason = |c: &Candidate, extra: u8| {
            if self.s.is_eos(c.token) {
                EndReason::Eos
            } else if at_max {
                EndReason::Length
            } else if extra > 0 {
                EndReason::Stop(extra)
            } else {
                EndReason::Running
            }
        };
        self.candidates
            .iter()
            .enumerate()
            .map(|(i, c)| reason(c, extra_hits.map_or(0, |h| h[i])))
            .collect()
    }

    /// Batch item `b`'s step: its finished candidates into its slots, its best running
    /// ones into its beams (`new_scores` and `new_nodes` rows, the step's choice).
    fn commit_item(
        &mut self,
        b: usize,
        ends: &[EndReason],
        new_scores: &mut [f32],
        new_nodes: &mut [NodeRef],
    ) {
        let (beams, k) = (self.beams, self.k);
        let generated = self.history.len() + 1 - self.prompt_len;
        let cands: Vec<Candidate> = self.candidates[b * k..(b + 1) * k].to_vec();
        let ends = &ends[b * k..(b + 1) * k];
        let mut node_of = vec![NO_NODE; k];
        let (penalised, order) = rank_running(&cands, ends, beams);
        // finished slots: only the top `num_beams` candidates may enter, and only while useful
        let full =
            self.s.early_stopping == EarlyStopping::AllFinished && self.slots[b].all_finished();
        let open = self.open[b];
        // `open && !full`: a done item's rows run on (transformers keeps computing them)
        // but are no hypotheses, nothing of theirs can enter its slots again: no nodes
        let searching = self.searching(b);
        let offers: Vec<Offer> = cands
            .iter()
            .zip(ends)
            .enumerate()
            .map(|(r, (c, e))| Offer {
                score: normalized_score(c.score, generated, self.s.length_penalty),
                barred: [full, !open, *e == EndReason::Running || r >= beams],
                possible: c.score > f32::NEG_INFINITY,
            })
            .collect();
        let sources = self.slots[b].merge_placed(&offers);
        for (slot, src) in sources.into_iter().enumerate() {
            if let Source::Candidate(r) = src {
                let id = self.node_for(&mut node_of, &cands, r, b);
                let n = self.tree.get_mut(id);
                n.end = ends[r];
                n.final_score = offers[r].score;
                self.slots[b].set_node(slot, id);
            }
        }
        for (j, &r) in order.iter().take(beams).enumerate() {
            let row = b * beams + j;
            new_nodes[row] = if searching {
                self.running_node(&mut node_of, &cands, ends[r], r, b)
            } else {
                NodeRef::ROOT
            };
            new_scores[row] = penalised[r];
            self.choice.tokens[row] = cands[r].token;
            self.choice.parents[row] = cands[r].parent_row as i64;
        }
    }

    /// Candidate `r`'s node (recorded once per step: as a finished hypothesis and a row).
    fn node_for(&mut self, node_of: &mut [u32], cands: &[Candidate], r: usize, b: usize) -> u32 {
        if node_of[r] == NO_NODE {
            let c = cands[r];
            let node = self.new_node(c, b);
            node_of[r] = self.tree.push_under(self.running_nodes[c.parent_row], node);
        }
        node_of[r]
    }

    /// The node of a row continuing with candidate `r`, which ended with `end`. A row
    /// filled with a stopped candidate (transformers' -1e9 placeholder: fewer than
    /// `num_beams` candidates still run) or extending one is no hypothesis the search kept:
    /// its node is deferred, made only if a descendant enters the finished slots (a
    /// finished candidate keeps its own node). The other rows' nodes are made now, pruned
    /// or not (a pruned branch is part of the tree's picture).
    fn running_node(
        &mut self,
        node_of: &mut [u32],
        cands: &[Candidate],
        end: EndReason,
        r: usize,
        b: usize,
    ) -> NodeRef {
        let c = cands[r];
        if end == EndReason::Running && !self.placeholder(c.parent_row) {
            NodeRef::Made(self.node_for(node_of, cands, r, b))
        } else if node_of[r] != NO_NODE {
            NodeRef::Made(node_of[r])
        } else {
            let node = self.new_node(c, b);
            self.tree.defer(self.running_nodes[c.parent_row], node)
        }
    }

    /// Whether `row` holds a placeholder (see [`Self::running_node`]): its node is deferred,
    /// or it is a finished hypothesis's.
    fn placeholder(&self, row: usize) -> bool {
        match self.running_nodes[row] {
            NodeRef::Deferred(_) => true,
            NodeRef::Made(id) => id != NO_NODE && self.tree.get(id).end != EndReason::Running,
        }
    }

    /// Candidate `c` of batch item `b` as a node of this step (its parent set when recorded).
    fn new_node(&self, c: Candidate, b: usize) -> Node {
        Node {
            parent: NO_NODE,
            token: c.token,
            parent_row: c.parent_row as u32,
            batch: b as u32,
            group: 0,
            step: (self.history.len() - self.prompt_len) as u32,
            score: c.score,
            final_score: f32::NAN,
            end: EndReason::Running,
        }
    }

    /// transformers' `_check_early_stop_heuristic` and `_beam_search_has_unfinished_sequences`.
    fn update_done(&mut self, ends: &[EndReason]) {
        let generated = self.history.len() - self.prompt_len;
        let max_generated = self.s.max_length - self.prompt_len;
        let len = best_hypothetical_len(
            self.s.early_stopping,
            self.s.length_penalty,
            generated,
            max_generated,
        );
        for b in 0..self.batch {
            if self.open[b] {
                let raw = self.running_scores[b * self.beams];
                let best = normalized_score(raw, len, self.s.length_penalty);
                self.open[b] = self.slots[b].can_improve(best, raw > f32::NEG_INFINITY);
            }
        }
        let improvable = self.open.iter().any(|&o| o);
        let all_full = self.s.early_stopping == EarlyStopping::AllFinished
            && self.slots.iter().all(FinishedSlots::all_finished);
        let continuable = ends.contains(&EndReason::Running);
        self.done = !(improvable && !all_full && continuable);
    }
}

/// One item's candidates ranked for the running beams: each score with stopped ones sunk
/// by -1e9, and the `beams` chosen, in order. As transformers: `torch.topk` of those
/// scores, with torch's order among equal ones (see [`torch_order`]).
fn rank_running(cands: &[Candidate], ends: &[EndReason], beams: usize) -> (Vec<f32>, Vec<usize>) {
    // running beams: the best candidates that did not stop (stopped ones sink by -1e9)
    let penalised: Vec<f32> = cands
        .iter()
        .zip(ends)
        .map(|(c, e)| {
            c.score
                + if *e != EndReason::Running {
                    NEG_LARGE
                } else {
                    -0.0
                }
        })
        .collect();
    let stopped = |r: usize| ends[r] != EndReason::Running;
    let chosen = torch_order::top_k(&penalised, beams);
    let running = (0..cands.len()).filter(|&r| !stopped(r)).count();
    if chosen.iter().filter(|&&r| !stopped(r)).count() == running.min(beams) {
        return (penalised, chosen);
    }
    // ranked by stopping first: with scores near or beyond -1e9 (a +inf score, a
    // -1e9 penalty of no use) the penalty alone would let a finished one continue
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|&x, &y| {
        (stopped(x).cmp(&stopped(y)))
            .then(penalised[y].total_cmp(&penalised[x]))
            .then(x.cmp(&y))
    });
    order.truncate(beams);
    (penalised, order)
}
