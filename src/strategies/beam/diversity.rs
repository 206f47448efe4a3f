//! Hamming diversity for diverse (group) beam search: a group is penalised for
//! choosing a token that earlier groups of the same batch item chose at this step,
//! once per occurrence (transformers' `HammingDiversityLogitsProcessor`).

/// Counts of each token in `tokens`, as sorted `(token, count)` pairs.
pub fn token_counts(tokens: &[i64]) -> Vec<(i64, u32)> {
    let mut sorted = tokens.to_vec();
    sorted.sort_unstable();
    let mut counts: Vec<(i64, u32)> = Vec::with_capacity(sorted.len());
    for t in sorted {
        match counts.last_mut() {
            Some((last, n)) if *last == t => *n += 1,
            _ => counts.push((t, 1)),
        }
    }
    counts
}

/// Subtracts `penalty × count` from each counted token of every row of `rows`
/// (`[n, vocab]`), in one subtraction per token as transformers does.
pub fn apply_hamming(rows: &mut [f32], vocab: usize, counts: &[(i64, u32)], penalty: f32) {
    if penalty == 0.0 || counts.is_empty() {
        return;
    }
    for row in rows.chunks_exact_mut(vocab) {
        for &(t, n) in counts {
            if t >= 0 && (t as usize) < vocab {
                row[t as usize] -= penalty * n as f32;
            }
        }
    }
}

/// The Hamming penalty of one group at one step for a whole batch: `block` is the
/// group's rows (`[batch * group_size, vocab]`, batch-major), `chosen[b]` the tokens
/// the earlier groups of batch item `b` chose at this step.
pub fn penalize_group(
    block: &mut [f32],
    vocab: usize,
    group_size: usize,
    chosen: &[&[i64]],
    penalty: f32,
) {
    for (rows, tokens) in block.chunks_exact_mut(group_size * vocab).zip(chosen) {
        apply_hamming(rows, vocab, &token_counts(tokens), penalty);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_per_occurrence() {
        assert_eq!(token_counts(&[3, 1, 3, 3]), vec![(1, 1), (3, 3)]);
        let mut block = vec![0.0f32; 2 * 4]; // batch 2, group size 1, vocab 4
        penalize_group(&mut block, 4, 1, &[&[1, 1, 2], &[3]], 0.5);
        assert_eq!(block, vec![0.0, -1.0, -0.5, 0.0, 0.0, 0.0, 0.0, -0.5]);
        let mut same = vec![1.0f32; 4];
        apply_hamming(&mut same, 4, &[(0, 2)], 0.0);
        assert_eq!(same, vec![1.0; 4]);
    }
}
