//! Length penalty and the "can a running beam still win?" tests.

use super::settings::EarlyStopping;

/// `score / generated_len ^ length_penalty` in float32, as transformers 5.x divides a
/// float32 tensor by a Python float (the power is taken in double, then rounded).
pub fn normalized_score(score: f32, generated_len: usize, length_penalty: f64) -> f32 {
    score / (generated_len as f64).powf(length_penalty) as f32
}

/// The same in double precision, as transformers 4.x's `BeamHypotheses` (Python floats).
pub fn normalized_score_f64(score: f64, generated_len: usize, length_penalty: f64) -> f64 {
    score / (generated_len as f64).powf(length_penalty)
}

/// Generated length at which the best running beam is judged (transformers 5.x's
/// `_check_early_stop_heuristic`): its current length, or `max_length` for "never"
/// with a positive length penalty (longer can only score better then).
pub fn best_hypothetical_len(
    early_stopping: EarlyStopping,
    length_penalty: f64,
    generated_len: usize,
    max_generated_len: usize,
) -> usize {
    if early_stopping == EarlyStopping::Never && length_penalty > 0.0 {
        max_generated_len
    } else {
        generated_len
    }
}

/// transformers 4.x `BeamHypotheses.is_done` given a full list: whether the best
/// running sum of log-probs can still beat the worst kept hypothesis.
pub fn group_is_done(
    early_stopping: EarlyStopping,
    length_penalty: f64,
    worst_score: f64,
    best_sum_logprobs: f64,
    generated_len: usize,
    max_generated_len: usize,
) -> bool {
    match early_stopping {
        EarlyStopping::AllFinished => true,
        _ => {
            let len = best_hypothetical_len(
                early_stopping,
                length_penalty,
                generated_len,
                max_generated_len,
            );
            worst_score >= normalized_score_f64(best_sum_logprobs, len, length_penalty)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_divides_by_length_power() {
        assert_eq!(normalized_score(-4.0, 4, 1.0), -1.0);
        assert_eq!(normalized_score(-4.0, 4, 0.5), -2.0);
        assert_eq!(normalized_score(-4.0, 4, 0.0), -4.0);
        assert_eq!(normalized_score_f64(-8.0, 4, 1.5), -1.0);
    }

    #[test]
    fn never_with_positive_penalty_looks_at_max_length() {
        assert_eq!(best_hypothetical_len(EarlyStopping::Never, 1.0, 3, 10), 10);
        assert_eq!(best_hypothetical_len(EarlyStopping::Never, -1.0, 3, 10), 3);
        assert_eq!(
            best_hypothetical_len(EarlyStopping::Heuristic, 1.0, 3, 10),
            3
        );
        // worst kept -1.0; best running sum -6 over 3 tokens = -2 -> done; over 10 tokens = -0.6 -> not done
        assert!(group_is_done(
            EarlyStopping::Heuristic,
            1.0,
            -1.0,
            -6.0,
            3,
            10
        ));
        assert!(!group_is_done(EarlyStopping::Never, 1.0, -1.0, -6.0, 3, 10));
        assert!(group_is_done(
            EarlyStopping::AllFinished,
            1.0,
            -9.0,
            0.0,
            3,
            10
        ));
    }
}
