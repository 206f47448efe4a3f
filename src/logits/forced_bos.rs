//! `ForcedBOSTokenLogitsProcessor`: the first generated token of an encoder-decoder
//! (history length 1) is forced.

use super::{RowProcessor, Scratch, StepContext};

/// While the history is exactly one token long, every score becomes -inf except
/// `bos_token_id`'s, which becomes 0.
pub struct ForcedBos {
    bos: i64,
}

impl ForcedBos {
    pub fn new(bos_token_id: i64) -> Self {
        ForcedBos { bos: bos_token_id }
    }
}

/// Every score -inf, the `forced` ones (inside the vocabulary) 0.
pub(super) fn force(logits: &mut [f32], forced: &[i64], s: &mut Scratch) {
    logits.fill(f32::NEG_INFINITY);
    s.cand.clear();
    for &t in forced {
        if t >= 0 && (t as usize) < logits.len() {
            logits[t as usize] = 0.0;
            if !s.cand.contains(&(t as u32)) {
                s.cand.push(t as u32);
            }
        }
    }
    s.cand.sort_unstable();
    s.sparse = true;
}

impl RowProcessor for ForcedBos {
    fn name(&self) -> &'static str {
        "ForcedBOSTokenLogitsProcessor"
    }

    fn process_row(&self, ctx: &StepContext<'_>, _: usize, logits: &mut [f32], s: &mut Scratch) {
        if ctx.history.len() == 1 {
            force(logits, &[self.bos], s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, NEG};
    use super::*;
    use crate::history::TokenHistory;

    #[test]
    fn forces_only_the_first_step() {
        let mut h = TokenHistory::new(&[0], 1);
        let mut row = vec![3.0f32, 1.0, NEG];
        run(&ForcedBos::new(2), &h, &mut row, 3);
        assert_eq!(row, vec![NEG, NEG, 0.0]);
        h.push(&[2]);
        let mut row = vec![3.0f32, 1.0, NEG];
        run(&ForcedBos::new(2), &h, &mut row, 3);
        assert_eq!(row, vec![3.0, 1.0, NEG]);
    }
}
