//! `NoBadWordsLogitsProcessor`: forbid token sequences (a sequence bias of -inf).

use super::sequence_bias::SequenceBias;

/// A [`SequenceBias`] of -inf on every bad word, leaving out one-token words that are
/// an EOS token, as transformers does.
pub fn bad_words_bias(bad_words_ids: &[Vec<i64>], eos_token_ids: &[i64]) -> SequenceBias {
    let entries: Vec<(Vec<i64>, f32)> = bad_words_ids
        .iter()
        .filter(|w| !(w.len() == 1 && eos_token_ids.contains(&w[0])))
        .map(|w| (w.clone(), f32::NEG_INFINITY))
        .collect();
    SequenceBias::named("NoBadWordsLogitsProcessor", &entries)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, NEG};
    use super::super::RowProcessor;
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn forbids_words_but_not_a_lone_eos() {
        let p = bad_words_bias(&[vec![1], vec![2], vec![3, 0], vec![4, 0]], &[2]);
        assert_eq!(p.name(), "NoBadWordsLogitsProcessor");
        let h = TokenHistory::new(&[3], 1);
        let mut row = vec![0.5f32; 5];
        run(&p, &h, &mut row, 5);
        assert_eq!(row, vec![NEG, NEG, 0.5, 0.5, 0.5]);
    }
}
