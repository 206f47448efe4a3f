//! DRY, "don't repeat yourself" (p-e-w, text-generation-webui #5677; llama.cpp's `dry`
//! sampler, ported from koboldcpp).

use super::presence_frequency::window;
use super::{RowProcessor, Scratch, StepContext};

/// Penalises every token that would extend a repetition: when the last `L` tokens of
/// the window also occur earlier followed by token `t`, and `L >= allowed_length`,
/// `x[t] -= multiplier * base^(L - allowed_length)` with `L` the longest such match.
/// Matches do not reach back past the most recent sequence breaker (a breaker is a token
/// sequence; the match length is capped at the distance to the last occurrence of one,
/// as llama.cpp's restart sequences), and single-token breakers are never penalised.
/// The exponent is clamped to `floor(88.7228 / ln(base))` (llama.cpp) so the penalty
/// stays finite. The window is the row without its left padding, or its last
/// `last_n` tokens. The penalty is computed in float64 and subtracted in float64
/// (llama.cpp's `float -= double`).
pub struct Dry {
    multiplier: f64,
    base: f64,
    allowed_length: usize,
    breakers: Vec<Vec<i64>>,
    last_n: Option<usize>,
    prompt_ignore: Vec<usize>,
}

impl Dry {
    pub fn new(
        multiplier: f64,
        base: f64,
        allowed_length: usize,
        breakers: Vec<Vec<i64>>,
        last_n: Option<usize>,
        prompt_ignore: Vec<usize>,
    ) -> Self {
        let breakers = breakers.into_iter().filter(|b| !b.is_empty()).collect();
        Dry {
            multiplier,
            base,
            allowed_length: allowed_length.max(1),
            breakers,
            last_n: Some(last_n.unwrap_or(usize::MAX)),
            prompt_ignore,
        }
    }

    /// How far back from the end a match may reach (llama.cpp's `rep_limit`): scanning
    /// from the end for the nearest token that starts a breaker occurrence (the longest
    /// breaker starting there), the distance from the end to that occurrence's last token.
    fn rep_limit(&self, tokens: &[i64]) -> usize {
        let n = tokens.len();
        let from_end = |i: usize| tokens[n - 1 - i];
        for i in 0..n {
            let head = from_end(i);
            let longest = self
                .breakers
                .iter()
                .filter(|b| b[0] == head && b.len() - 1 <= i)
                .filter(|b| (1..b.len()).all(|o| b[o] == from_end(i - o)))
                .map(|b| b.len() - 1)
                .max();
            if let Some(tail) = longest {
                return i - tail;
            }
        }
        n
    }

    fn is_single_breaker(&self, t: i64) -> bool {
        self.breakers.iter().any(|b| b.len() == 1 && b[0] == t)
    }
}

/// `z[k]` = length of the longest common prefix of `rev` and `rev[k..]` (Z-algorithm).
fn z_function(rev: &[i64], z: &mut Vec<u32>) {
    let n = rev.len();
    z.clear();
    z.resize(n, 0);
    let (mut l, mut r) = (0usize, 0usize);
    for k in 1..n {
        let mut len = if k < r {
            (r - k).min(z[k - l] as usize)
        } else {
            0
        };
        while k + len < n && rev[len] == rev[k + len] {
            len += 1;
        }
        z[k] = len as u32;
        if k + len > r {
            l = k;
            r = k + len;
        }
    }
}

impl RowProcessor for Dry {
    fn name(&self) -> &'static str {
        "DRY"
    }

    fn process_row(&self, ctx: &StepContext<'_>, r: usize, logits: &mut [f32], s: &mut Scratch) {
        if self.multiplier == 0.0 {
            return;
        }
        let tokens = window(ctx, r, self.last_n, &self.prompt_ignore);
        let n = tokens.len();
        if n <= self.allowed_length {
            return;
        }
        let rep_limit = self.rep_limit(tokens);
        if rep_limit < self.allowed_length {
            return;
        }
        let rev: Vec<i64> = tokens.iter().rev().copied().collect();
        let mut z = std::mem::take(&mut s.ids);
        z_function(&rev, &mut z);
        // For each earlier occurrence of a suffix, the token that followed it (rev[k-1])
        // would extend the repeat to z[k] + 1 tokens.
        let mut longest: Vec<(i64, usize)> = Vec::new();
        for k in 1..n {
            let len = (z[k] as usize).min(rep_limit);
            if len >= self.allowed_length {
                longest.push((rev[k - 1], len));
            }
        }
        s.ids = z;
        longest.sort_unstable();
        let max_exponent = if self.base > 1.000001 {
            (88.722_84f32 / (self.base as f32).ln()) as usize
        } else {
            0
        };
        let vocab = logits.len();
        for (i, &(t, len)) in longest.iter().enumerate() {
            let last_of_token = longest.get(i + 1).map_or(true, |&(u, _)| u != t);
            if !last_of_token || t < 0 || t as usize >= vocab || self.is_single_breaker(t) {
                continue;
            }
            let mut exponent = len - self.allowed_length;
            if max_exponent > 0 && exponent > max_exponent {
                exponent = max_exponent;
            }
            let penalty = self.multiplier * self.base.powi(exponent as i32);
            let x = &mut logits[t as usize];
            *x = (*x as f64 - penalty) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;
    use crate::history::TokenHistory;
    use proptest::prelude::*;

    fn dry(breakers: Vec<Vec<i64>>) -> Dry {
        Dry::new(1.0, 2.0, 2, breakers, None, vec![])
    }

    fn apply(d: &Dry, tokens: &[i64], vocab: usize) -> Vec<f32> {
        let h = TokenHistory::new(tokens, 1);
        let mut row = vec![0.0f32; vocab];
        run(d, &h, &mut row, vocab);
        row
    }

    #[test]
    fn llama_cpp_example() {
        // llama.cpp's comment: "a b c c b c y a b c": repeats of the suffix end before
        // c (a b c, len 3), b (c, len 1) and y (b c, len 2).
        let (a, b, c, y) = (0, 1, 2, 3);
        let row = apply(&dry(vec![]), &[a, b, c, c, b, c, y, a, b, c], 5);
        // allowed 2: c gets 2^(3-2) = 2, y gets 2^0 = 1, b (len 1) nothing
        assert_eq!(row, vec![0.0, 0.0, -2.0, -1.0, 0.0]);
    }

    #[test]
    fn breakers_cap_the_match_and_are_never_penalised() {
        let (a, b, c, y) = (0, 1, 2, 3);
        let tokens = [a, b, c, c, b, c, y, a, b, c];
        // `a` as a breaker: the last a is 3 tokens from the end, matches cap at 2
        let row = apply(&dry(vec![vec![a]]), &tokens, 5);
        assert_eq!(row, vec![0.0, 0.0, -1.0, -1.0, 0.0]);
        // a two-token breaker "y a" ends 3 tokens from the end: same cap
        let row = apply(&dry(vec![vec![y, a]]), &tokens, 5);
        assert_eq!(row, vec![0.0, 0.0, -1.0, -1.0, 0.0]);
        // `c` as a breaker ends the context: nothing is penalised
        let row = apply(&dry(vec![vec![c]]), &tokens, 5);
        assert_eq!(row, vec![0.0; 5]);
        // a single-token breaker that would extend a repeat is not penalised
        let row = apply(&dry(vec![vec![y]]), &[y, a, b, y, a, b], 5);
        assert_eq!(row, vec![0.0; 5], "y follows a b but is a breaker");
    }

    #[test]
    fn window_and_exponent_clamp() {
        let tokens: Vec<i64> = (0..200).map(|i| i % 2).collect();
        let d = Dry::new(1.0, 1e30, 2, vec![], None, vec![]);
        let row = apply(&d, &tokens, 2);
        // exponent clamped to floor(88.72 / ln 1e30) = 1
        assert_eq!(row, vec![-1e30, 0.0]);
        let d = Dry::new(0.5, 2.0, 2, vec![], Some(5), vec![]);
        let row = apply(&d, &tokens, 2);
        // window 0 1 0 1 0... last 5 = 1 0 1 0 1: the suffix 1 0 1 repeats before 0 (len 3)
        assert_eq!(row, vec![-1.0, 0.0]);
    }

    proptest! {
        /// DRY never raises a score, and leaves tokens that never occurred alone.
        #[test]
        fn never_raises_a_probability(
            tokens in proptest::collection::vec(0i64..4, 1..60),
            scores in proptest::collection::vec(-10.0f32..10.0, 6),
            multiplier in 0.0f64..3.0, base in 1.0f64..4.0, allowed in 1usize..4,
        ) {
            let d = Dry::new(multiplier, base, allowed, vec![vec![3]], None, vec![]);
            let h = TokenHistory::new(&tokens, 1);
            let mut row = scores.clone();
            run(&d, &h, &mut row, 6);
            for t in 0..6 {
                prop_assert!(row[t] <= scores[t]);
                if t >= 4 || t == 3 { prop_assert_eq!(row[t], scores[t]); }
            }
        }
    }
}
