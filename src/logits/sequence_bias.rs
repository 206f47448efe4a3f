//! `SequenceBiasLogitsProcessor`: add a bias to a token when it would complete a given
//! token sequence (a bias on its own when the sequence is one token long).

use super::{RowProcessor, Scratch, StepContext};

/// For every `(sequence, bias)`: a one-token sequence always biases its token; a
/// longer one biases its last token when the row ends with the rest of it (padding
/// counts, as in transformers). Biases of one token add up in transformers' order
/// (single-token bias first, then sequences grouped by length in order of first
/// appearance), in float32, and are added to the score once.
pub struct SequenceBias {
    name: &'static str,
    single: Vec<(i64, f32)>,
    groups: Vec<Vec<(Vec<i64>, i64, f32)>>,
}

impl SequenceBias {
    /// `entries` in their (dict) order; a repeated sequence keeps its first position
    /// and its last bias, like a Python dict.
    pub fn new(entries: &[(Vec<i64>, f32)]) -> Self {
        Self::named("SequenceBiasLogitsProcessor", entries)
    }

    pub(super) fn named(name: &'static str, entries: &[(Vec<i64>, f32)]) -> Self {
        let mut unique: Vec<(Vec<i64>, f32)> = Vec::new();
        for (seq, bias) in entries {
            if seq.is_empty() {
                continue;
            }
            match unique.iter_mut().find(|(s, _)| s == seq) {
                Some(slot) => slot.1 = *bias,
                None => unique.push((seq.clone(), *bias)),
            }
        }
        let single = unique
            .iter()
            .filter(|(s, _)| s.len() == 1)
            .map(|(s, b)| (s[0], *b))
            .collect();
        let mut lengths: Vec<usize> = Vec::new();
        for (s, _) in &unique {
            if s.len() > 1 && !lengths.contains(&s.len()) {
                lengths.push(s.len());
            }
        }
        let groups = lengths
            .iter()
            .map(|&len| {
                unique
                    .iter()
                    .filter(|(s, _)| s.len() == len)
                    .map(|(s, b)| (s[..len - 1].to_vec(), s[len - 1], *b))
                    .collect()
            })
            .collect();
        SequenceBias {
            name,
            single,
            groups,
        }
    }
}

impl RowProcessor for SequenceBias {
    fn name(&self) -> &'static str {
        self.name
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], s: &mut Scratch) {
        let row = ctx.history.row(r);
        let vocab = logits.len() as i64;
        // (token, accumulated bias) in the scratch's candidate buffers: this stage runs
        // before the warpers, so it drops the sparse form (`sparse = false` below).
        let acc = &mut s.floats;
        let ids = &mut s.cand;
        acc.clear();
        ids.clear();
        for &(t, b) in &self.single {
            if (0..vocab).contains(&t) {
                ids.push(t as u32);
                acc.push(b);
            }
        }
        for group in &self.groups {
            for (prefix, last, b) in group {
                if prefix.len() > row.len() || !row.ends_with(prefix) || !(0..vocab).contains(last)
                {
                    continue;
                }
                match ids.iter().position(|&i| i as i64 == *last) {
                    Some(j) => acc[j] += *b,
                    None => {
                        ids.push(*last as u32);
                        acc.push(0.0 + *b);
                    }
                }
            }
        }
        for (&t, &b) in ids.iter().zip(acc.iter()) {
            logits[t as usize] += b;
        }
        s.sparse = false;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, NEG};
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn single_and_matching_sequences_add_up() {
        let h = TokenHistory::new(&[4, 1, 2], 1);
        let p = SequenceBias::new(&[
            (vec![3], 1.0),
            (vec![2, 3], 0.5),          // row ends with 2: applies
            (vec![1, 2, 0], -1.0),      // ends with 1, 2: applies
            (vec![9, 3], 7.0),          // does not apply
            (vec![4, 1, 2, 4, 1], 9.0), // longer than the row
        ]);
        let mut row = vec![0.0f32, 0.0, 0.0, 1.0, 0.0];
        run(&p, &h, &mut row, 5);
        assert_eq!(row, vec![-1.0, 0.0, 0.0, 2.5, 0.0]);
    }

    #[test]
    fn neg_inf_bias_on_pos_inf_score_is_nan_like_torch() {
        let h = TokenHistory::new(&[0], 1);
        let mut row = vec![f32::INFINITY, 1.0];
        run(&SequenceBias::new(&[(vec![0], NEG)]), &h, &mut row, 2);
        assert!(row[0].is_nan());
    }
}
