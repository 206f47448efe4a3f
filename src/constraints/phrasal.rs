//! A phrase that must appear contiguously, matched with KMP fallback so that a
//! mismatch never forgets a partial match that is still alive.

/// Progress is the length of the longest prefix of the phrase that ends the text so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Phrase {
    tokens: Vec<i64>,
    /// `fallback[p]`: progress after a mismatch at progress `p` (KMP failure function).
    fallback: Vec<usize>,
}

impl Phrase {
    /// `tokens` must be non-empty (checked by [`super::ConstraintSet::new`]).
    pub fn new(tokens: Vec<i64>) -> Self {
        let mut fallback = vec![0; tokens.len() + 1];
        let mut k = 0;
        for i in 1..tokens.len() {
            while k > 0 && tokens[i] != tokens[k] {
                k = fallback[k];
            }
            if tokens[i] == tokens[k] {
                k += 1;
            }
            fallback[i + 1] = k;
        }
        Phrase { tokens, fallback }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[i64] {
        &self.tokens
    }

    /// The token that advances progress `p` (`p < len`).
    pub fn next_token(&self, p: usize) -> i64 {
        self.tokens[p]
    }

    /// Progress after reading `token` at progress `p` (`p < len`).
    pub fn step(&self, mut p: usize, token: i64) -> usize {
        loop {
            if self.tokens[p] == token {
                return p + 1;
            }
            if p == 0 {
                return 0;
            }
            p = self.fallback[p];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(phrase: &Phrase, text: &[i64]) -> usize {
        let mut p = 0;
        for &t in text {
            p = phrase.step(p, t);
            if p == phrase.len() {
                return p;
            }
        }
        p
    }

    #[test]
    fn restart_inside_a_failed_match_is_kept() {
        let p = Phrase::new(vec![33, 34, 35]);
        assert_eq!(
            run(&p, &[33, 33, 34, 35]),
            3,
            "the second 33 restarts the match"
        );
        let q = Phrase::new(vec![5, 5, 6]);
        assert_eq!(
            run(&q, &[5, 5, 5, 6]),
            3,
            "overlapping prefix survives the mismatch"
        );
        assert_eq!(run(&q, &[5, 6, 5]), 1);
    }
}
