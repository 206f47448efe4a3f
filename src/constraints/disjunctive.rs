//! "One of these phrases must appear": a token trie with Aho-Corasick fallback links.

/// Node 0 is the root. A state is a node: the longest path from the root that ends the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternatives {
    children: Vec<Vec<(i64, usize)>>,
    depth: Vec<usize>,
    fallback: Vec<usize>,
    /// The text ending at this node ends some alternative (itself or via a fallback).
    complete: Vec<bool>,
    /// Fewest tokens from this node down to the end of an alternative (0 at a leaf).
    to_leaf: Vec<usize>,
    max_len: usize,
    phrases: Vec<Vec<i64>>,
}

impl Alternatives {
    /// Fails with the index of an alternative that is a prefix of (or equal to) another.
    pub fn new(phrases: Vec<Vec<i64>>) -> Result<Self, usize> {
        let mut children: Vec<Vec<(i64, usize)>> = vec![Vec::new()];
        let mut depth = vec![0];
        let mut ends = vec![false];
        for (i, phrase) in phrases.iter().enumerate() {
            let mut node = 0;
            for &t in phrase {
                if ends[node] {
                    return Err(i);
                }
                node = match children[node].iter().find(|(tok, _)| *tok == t) {
                    Some(&(_, n)) => n,
                    None => {
                        children.push(Vec::new());
                        depth.push(depth[node] + 1);
                        ends.push(false);
                        let n = children.len() - 1;
                        children[node].push((t, n));
                        n
                    }
                };
            }
            if ends[node] || !children[node].is_empty() {
                return Err(i);
            }
            ends[node] = true;
        }
        let (fallback, complete) = Self::fallback_links(&children);
        let max_len = phrases.iter().map(Vec::len).max().unwrap_or(0);
        // children are always created after their parent, so a reverse scan sees them first
        let mut to_leaf = vec![0; children.len()];
        for node in (0..children.len()).rev() {
            if let Some(m) = children[node].iter().map(|&(_, c)| to_leaf[c]).min() {
                to_leaf[node] = m + 1;
            }
        }
        Ok(Alternatives {
            children,
            depth,
            fallback,
            complete,
            to_leaf,
            max_len,
            phrases,
        })
    }

    /// Fallback links and completeness, breadth first so a node's fallback is done before it.
    fn fallback_links(children: &[Vec<(i64, usize)>]) -> (Vec<usize>, Vec<bool>) {
        let mut fallback = vec![0; children.len()];
        let mut complete: Vec<bool> = children.iter().map(Vec::is_empty).collect();
        complete[0] = false;
        let mut queue: std::collections::VecDeque<usize> =
            children[0].iter().map(|&(_, n)| n).collect();
        while let Some(node) = queue.pop_front() {
            for &(t, child) in &children[node] {
                let mut f = fallback[node];
                fallback[child] = loop {
                    if let Some(&(_, n)) = children[f].iter().find(|(tok, _)| *tok == t) {
                        if n != child {
                            break n;
                        }
                    }
                    if f == 0 {
                        break 0;
                    }
                    f = fallback[f];
                };
                complete[child] |= complete[fallback[child]];
                queue.push_back(child);
            }
        }
        (fallback, complete)
    }

    pub fn phrases(&self) -> &[Vec<i64>] {
        &self.phrases
    }

    /// Length of the longest alternative (transformers' `seqlen`).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Fewest tokens that complete an alternative from `node`, following the trie down
    /// (at the root: the length of the shortest alternative).
    pub fn shortest_remaining(&self, node: usize) -> usize {
        self.to_leaf[node]
    }

    pub fn depth(&self, node: usize) -> usize {
        self.depth[node]
    }

    /// Whether the text read so far ends with one of the alternatives.
    pub fn is_complete(&self, node: usize) -> bool {
        self.complete[node]
    }

    /// Tokens that advance `node`, in insertion order.
    pub fn next_tokens(&self, node: usize) -> impl Iterator<Item = i64> + '_ {
        self.children[node].iter().map(|&(t, _)| t)
    }

    /// State after reading `token` at `node`.
    pub fn step(&self, mut node: usize, token: i64) -> usize {
        loop {
            if let Some(&(_, n)) = self.children[node].iter().find(|(t, _)| *t == token) {
                return n;
            }
            if node == 0 {
                return 0;
            }
            node = self.fallback[node];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_rejected() {
        assert_eq!(
            Alternatives::new(vec![vec![1, 2], vec![1, 2, 3]]).unwrap_err(),
            1
        );
        assert_eq!(
            Alternatives::new(vec![vec![1, 2, 3], vec![1, 2]]).unwrap_err(),
            1
        );
        assert_eq!(Alternatives::new(vec![vec![4], vec![4]]).unwrap_err(), 1);
        assert!(Alternatives::new(vec![vec![1, 2], vec![1, 3], vec![7]]).is_ok());
    }

    #[test]
    fn steps_fall_back_to_other_alternatives() {
        let a = Alternatives::new(vec![vec![1, 2, 3], vec![2, 4]]).unwrap();
        let mut node = 0;
        for t in [1, 2, 4] {
            node = a.step(node, t);
        }
        assert!(a.is_complete(node), "[1,2] fails at 4 but [2,4] completes");
        assert_eq!(a.next_tokens(0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(a.max_len(), 3);
        assert_eq!(a.shortest_remaining(0), 2, "[2, 4] is the shortest");
        assert_eq!(a.shortest_remaining(a.step(0, 1)), 2);
        assert_eq!(a.shortest_remaining(a.step(0, 2)), 1);
    }
}
