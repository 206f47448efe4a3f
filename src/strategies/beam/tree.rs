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

/// A hypothesis node, recorded or deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// A node of the tree ([`NO_NODE`]: the prompt).
    Made(u32),
    /// A node put off with [`BeamTree::defer`] (an index into its deferred ones).
    Deferred(u32),
}

impl NodeRef {
    pub const ROOT: NodeRef = NodeRef::Made(NO_NODE);
}

/// Every node the search recorded, and the deferred ones: nodes of beams that are no
/// hypotheses of their own (a search's placeholder rows), made only when a node recorded
/// after them extends them ([`Self::push_under`]).
#[derive(Debug, Clone, Default)]
pub struct BeamTree {
    nodes: Vec<Node>,
    /// Each deferred node (its `parent` unused), its parent, and its id once made.
    deferred: Vec<(Node, NodeRef, u32)>,
}

impl BeamTree {
    pub fn push(&mut self, node: Node) -> u32 {
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }

    /// Records `node` as a child of `parent`, making `parent` (and the deferred nodes
    /// it extends) first if it was deferred.
    pub fn push_under(&mut self, parent: NodeRef, node: Node) -> u32 {
        let parent = self.make(parent);
        self.push(Node { parent, ..node })
    }

    /// Puts off a child of `parent`: no node unless [`Self::push_under`] extends it.
    pub fn defer(&mut self, parent: NodeRef, node: Node) -> NodeRef {
        self.deferred.push((node, parent, NO_NODE));
        NodeRef::Deferred((self.deferred.len() - 1) as u32)
    }

    /// The node's id if it is one of the tree's.
    pub fn made(&self, r: NodeRef) -> Option<u32> {
        let id = match r {
            NodeRef::Made(id) => id,
            NodeRef::Deferred(d) => self.deferred[d as usize].2,
        };
        (id != NO_NODE).then_some(id)
    }

    /// `r`'s id, recording it (and the deferred nodes it extends, oldest first) if deferred.
    fn make(&mut self, r: NodeRef) -> u32 {
        let mut chain = Vec::new();
        let mut cur = r;
        let mut parent = loop {
            match cur {
                NodeRef::Made(id) => break id,
                NodeRef::Deferred(d) => match self.deferred[d as usize] {
                    (_, _, id) if id != NO_NODE => break id,
                    (_, up, _) => {
                        chain.push(d as usize);
                        cur = up;
                    }
                },
            }
        };
        for d in chain.into_iter().rev() {
            parent = self.push(Node {
                parent,
                ..self.deferred[d].0
            });
            self.deferred[d].2 = parent;
        }
        parent
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

    /// [`Self::extend_tokens`] of a node that may be deferred (nothing is made).
    fn extend_ref_tokens(&self, r: NodeRef, out: &mut Vec<i64>) {
        let mut tail = Vec::new();
        let mut cur = r;
        while let NodeRef::Deferred(d) = cur {
            let (node, parent, id) = self.deferred[d as usize];
            if id != NO_NODE {
                cur = NodeRef::Made(id);
                break;
            }
            tail.push(node.token);
            cur = parent;
        }
        if let NodeRef::Made(id) = cur {
            self.extend_tokens(id, out);
        }
        out.extend(tail.into_iter().rev());
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

    /// Tokens of the prefix every hypothesis ending at a node of `ids` shares, beyond the
    /// first `*streamed` ones already handed out (then `*streamed` is moved to the end of
    /// that prefix): what a beam streamer may print once every hypothesis that can still
    /// win agrees on it.
    pub fn settled_tokens(&self, ids: &[NodeRef], streamed: &mut usize) -> Vec<i64> {
        let mut shared = self.shared_tokens(ids);
        if shared.len() <= *streamed {
            return Vec::new();
        }
        let new = shared.split_off(*streamed);
        *streamed += new.len();
        new
    }

    /// The longest run of generated tokens that every hypothesis ending at a node of
    /// `ids` starts with. Compared by token, not by node: the groups of a diverse beam
    /// search grow separate nodes for the same continuation, which agree all the same.
    pub fn shared_tokens(&self, ids: &[NodeRef]) -> Vec<i64> {
        let Some((&first, rest)) = ids.split_first() else {
            return Vec::new();
        };
        let mut shared = Vec::new();
        self.extend_ref_tokens(first, &mut shared);
        let mut other = Vec::new();
        for &id in rest {
            if shared.is_empty() {
                break;
            }
            other.clear();
            self.extend_ref_tokens(id, &mut other);
            let same = shared
                .iter()
                .zip(&other)
                .take_while(|(a, b)| a == b)
                .count();
            shared.truncate(same);
        }
        shared
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

    fn made(ids: &[u32]) -> Vec<NodeRef> {
        ids.iter().map(|&id| NodeRef::Made(id)).collect()
    }

    #[test]
    fn deferred_nodes_are_made_when_extended() {
        let mut t = BeamTree::default();
        let a = t.push(node(NO_NODE, 5, 0));
        let b = t.defer(NodeRef::Made(a), node(NO_NODE, 6, 1));
        let c = t.defer(b, node(NO_NODE, 7, 2));
        let other = t.defer(NodeRef::Made(a), node(NO_NODE, 9, 1));
        assert_eq!(t.nodes().len(), 1, "deferred: no nodes yet");
        assert_eq!(
            t.shared_tokens(&[c]),
            vec![5, 6, 7],
            "tokens without making"
        );
        assert_eq!(t.shared_tokens(&[c, other]), vec![5]);
        assert_eq!(t.made(c), None);
        let d = t.push_under(c, node(NO_NODE, 8, 3));
        assert_eq!(t.nodes().len(), 4, "b, c, then d: `other` stays deferred");
        let mut toks = Vec::new();
        t.extend_tokens(d, &mut toks);
        assert_eq!(toks, vec![5, 6, 7, 8]);
        assert_eq!(
            (t.made(b), t.made(c), t.made(other)),
            (Some(1), Some(2), None)
        );
        let e = t.push_under(b, node(NO_NODE, 4, 2));
        assert_eq!(t.get(e).parent, 1, "made once");
        assert_eq!(t.made(NodeRef::ROOT), None);
    }

    #[test]
    fn paths_and_shared_tokens() {
        let mut t = BeamTree::default();
        let a = t.push(node(NO_NODE, 5, 0));
        let b = t.push(node(a, 6, 1));
        let c = t.push(node(a, 7, 1));
        let d = t.push(node(b, 8, 2));
        let e = t.push(node(NO_NODE, 9, 0));
        let mut toks = Vec::new();
        t.extend_tokens(d, &mut toks);
        assert_eq!(toks, vec![5, 6, 8]);
        assert_eq!(t.shared_tokens(&made(&[d, c])), vec![5]);
        assert_eq!(t.shared_tokens(&made(&[d, b])), vec![5, 6]);
        assert_eq!(t.shared_tokens(&made(&[d])), vec![5, 6, 8]);
        assert_eq!(t.shared_tokens(&made(&[d, e])), Vec::<i64>::new());
        assert_eq!(t.shared_tokens(&made(&[])), Vec::<i64>::new());
        assert_eq!(t.depth(d), 3);
        assert_eq!(t.on_paths(&[d]), vec![true, true, false, true, false]);
    }

    #[test]
    fn separate_nodes_with_the_same_tokens_settle() {
        // two groups of a diverse beam search, each with its own nodes for tokens 5, 6
        let mut t = BeamTree::default();
        let a0 = t.push(node(NO_NODE, 5, 0));
        let a1 = t.push(node(NO_NODE, 5, 0));
        let b0 = t.push(node(a0, 6, 1));
        let b1 = t.push(node(a1, 6, 1));
        let c0 = t.push(node(b0, 7, 2));
        let c1 = t.push(node(b1, 8, 2));
        let mut streamed = 0;
        assert_eq!(
            t.settled_tokens(&made(&[b0, b1]), &mut streamed),
            vec![5, 6]
        );
        assert_eq!(streamed, 2);
        assert_eq!(
            t.settled_tokens(&made(&[c0, c1]), &mut streamed),
            Vec::<i64>::new()
        );
        assert_eq!(t.settled_tokens(&made(&[c0]), &mut streamed), vec![7]);
        assert_eq!(streamed, 3);
    }
}
