//! Every hypothesis the search kept, as a tree over the prompt: each node is one
//! generated token with a pointer to the node it extends. Returned sequences,
//! `beam_indices`, the settled prefix for streaming and the exported beam tree are
//! all read from here.

/// "No node": the parent of a first generated token (the prompt is the root).
pub const NO_NODE: u32 = u32::MAX;

/// Why a hypothesis ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Still running (not a finished hypothesis).
    Running,
    Eos,
    /// Reached `max_length`.
    Length,
    /// A stopping criterion evaluated outside the core; the code (>= 1) tells the
    /// caller which one.
    Stop(u8),
}

impl EndReason {
    /// The stopping criterion's code for [`EndReason::Stop`], else 0.
    pub fn stop_code(self) -> u8 {
        match self {
            EndReason::Stop(code) => code,
            _ => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Running => "running",
            EndReason::Eos => "eos",
            EndReason::Length => "length",
            EndReason::Stop(_) => "stop",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    pub parent: u32,
    pub token: i64,
    /// Row (in `[batch * num_beams]`) of the beam this token extended: the beam index.
    pub parent_row: u32,
    pub batch: u32,
    /// Beam group (0 without groups).
    pub group: u32,
    /// 0 for the first generated token.
    pub step: u32,
    /// Cumulative processed log-probability.
    pub score: f32,
    /// Length-normalised score when the node ended a finished hypothesis, else NaN.
    pub final_score: f32,
    pub end: EndReason,
}

#[derive(Debug, Clone, Default)]
pub struct BeamTree {
    nodes: Vec<Node>,
}

impl BeamTree {
    pub fn push(&mut self, node: Node) -> u32 {
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn get(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn get_mut(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// Number of generated tokens up to and including `id`.
    pub fn depth(&self, id: u32) -> usize {
        if id == NO_NODE {
            0
        } else {
            self.get(id).step as usize + 1
        }
    }

    /// Node ids from the first generated token to `id`.
    pub fn path(&self, id: u32) -> Vec<u32> {
        let mut path = Vec::with_capacity(self.depth(id));
        let mut cur = id;
        while cur != NO_NODE {
            path.push(cur);
            cur = self.get(cur).parent;
        }
        path.reverse();
        path
    }

    /// Generated tokens of the hypothesis ending at `id`, appended to `out`.
    pub fn extend_tokens(&self, id: u32, out: &mut Vec<i64>) {
        out.extend(self.path(id).into_iter().map(|n| self.get(n).token));
    }

    /// For every node: whether it lies on the path to one of `ends` (it or a
    /// descendant survived); the other nodes were pruned.
    pub fn on_paths(&self, ends: &[u32]) -> Vec<bool> {
        let mut keep = vec![false; self.nodes.len()];
        for &end in ends {
            let mut cur = end;
            while cur != NO_NODE && !keep[cur as usize] {
                keep[cur as usize] = true;
                cur = self.get(cur).parent;
            }
        }
        keep
    }

    /// The deepest node that every node of `ids` descends from (or is): the prefix
    /// all those hypotheses share. `NO_NODE` when they share no generated token.
    pub fn common_ancestor(&self, ids: &[u32]) -> u32 {
        let mut set: Vec<u32> = ids.to_vec();
        set.sort_unstable();
        set.dedup();
        if set.is_empty() {
            return NO_NODE;
        }
        loop {
            if set.len() == 1 || set.contains(&NO_NODE) {
                return if set.len() == 1 { set[0] } else { NO_NODE };
            }
            // lift the deepest nodes one level, so every node meets the others on the way up
            let deepest = set.iter().map(|&n| self.depth(n)).max().unwrap_or(0);
            for n in set.iter_mut() {
                if self.depth(*n) == deepest {
                    *n = self.get(*n).parent;
                }
            }
            set.sort_unstable();
            set.dedup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(parent: u32, token: i64, step: u32) -> Node {
        Node {
            parent,
            token,
            parent_row: 0,
            batch: 0,
            group: 0,
            step,
            score: 0.0,
            final_score: f32::NAN,
            end: EndReason::Running,
        }
    }

    #[test]
    fn paths_and_common_ancestor() {
        let mut t = BeamTree::default();
        let a = t.push(node(NO_NODE, 5, 0));
        let b = t.push(node(a, 6, 1));
        let c = t.push(node(a, 7, 1));
        let d = t.push(node(b, 8, 2));
        let e = t.push(node(NO_NODE, 9, 0));
        let mut toks = Vec::new();
        t.extend_tokens(d, &mut toks);
        assert_eq!(toks, vec![5, 6, 8]);
        assert_eq!(t.common_ancestor(&[d, c]), a);
        assert_eq!(t.common_ancestor(&[d, b]), b);
        assert_eq!(t.common_ancestor(&[d]), d);
        assert_eq!(t.common_ancestor(&[d, e]), NO_NODE);
        assert_eq!(t.common_ancestor(&[]), NO_NODE);
        assert_eq!(t.depth(d), 3);
        assert_eq!(t.on_paths(&[d]), vec![true, true, false, true, false]);
    }
}
