//! Choosing a token from a processed logits row.

/// Index of the largest value; the first one wins ties (as `torch.argmax`).
/// NaN entries are skipped; `None` when no entry is finite or +inf.
pub fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() || v == f32::NEG_INFINITY {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_max_wins_and_nan_is_skipped() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, 0.5, f32::NAN]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::INFINITY]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN]), None);
        assert_eq!(argmax(&[]), None);
    }
}
