//! The `assisted` target: [`AssistedDecoder`] driven through random rounds of drafting
//! (model drafts and prompt lookup), verification, tails, truncation and finishing, with
//! arguments in and out of range.

use arbitrary::{Result, Unstructured};
use ferrogen_core::assisted::AssistedDecoder;
use ferrogen_core::rng;
use ferrogen_core::row_status::HasRowStatus;

use crate::{f32_any, is_error, logits, pipeline_config, size, small, token};

pub fn assisted(data: &[u8]) {
    let _ = assisted_inner(&mut Unstructured::new(data));
}

fn assisted_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let vocab = u.int_in_range(0..=12)?;
    let rows = u.int_in_range(0..=3)?;
    let width = u.int_in_range(0..=5)?;
    let prompts: Vec<i64> = (0..rows * width)
        .map(|_| token(u, vocab))
        .collect::<Result<_>>()?;
    let n_starts = if u.ratio(1u8, 12)? {
        u.int_in_range(0..=4)?
    } else {
        rows
    };
    let starts: Vec<usize> = (0..n_starts)
        .map(|_| u.int_in_range(0..=width + 1))
        .collect::<Result<_>>()?;
    let config = pipeline_config(u, vocab, rows)?;
    let keys = if config.do_sample && !u.ratio(1u8, 12)? {
        let prompts: Vec<Vec<i64>> = prompts.chunks(width.max(1)).map(<[i64]>::to_vec).collect();
        rng::row_keys(u.arbitrary()?, &prompts, 1)
    } else {
        Vec::new()
    };
    let max_len = if u.ratio(1u8, 10)? {
        size(u)?
    } else {
        width + small(u, 10)?.min(40)
    };
    let pad = token(u, vocab)?;
    let mut d = match AssistedDecoder::new(&prompts, rows, &starts, &config, pad, max_len, &keys) {
        Ok(d) => d,
        Err(e) => {
            is_error(&e);
            return Ok(());
        }
    };
    assert_eq!(d.n_rows(), rows);
    let in_vocab = |t: i64| t >= 0 && (t as usize) < vocab;
    for _ in 0..u.int_in_range(0..=12)? {
        let before = d.lengths();
        match u.int_in_range(0u8..=9)? {
            0 => d.begin_round(),
            1 => {
                let n = if u.ratio(1u8, 12)? {
                    small(u, 20)?
                } else {
                    rows * vocab
                };
                let mut l = logits(u, n)?;
                match d.draft(&mut l, vocab, f32_any(u)?) {
                    Ok(picked) => {
                        assert_eq!(picked.len(), rows);
                        assert!(picked.iter().all(|&t| t == pad || in_vocab(t)));
                    }
                    Err(e) => _ = is_error(&e),
                }
            }
            2 => {
                if let Err(e) = d.lookup_drafts(small(u, 4)?, small(u, 5)?) {
                    is_error(&e);
                }
            }
            3 => {
                let (drafts, w, counts) = d.drafts();
                assert_eq!((drafts.len(), counts.len()), (rows * w, rows));
                assert!(counts.iter().all(|&c| c <= w));
            }
            4 => {
                let (_, w, _) = d.drafts();
                let n = if u.ratio(1u8, 12)? {
                    small(u, 40)?
                } else {
                    rows * (w + 1) * vocab
                };
                let mut l = logits(u, n)?;
                match d.verify(&mut l, vocab, u.arbitrary()?) {
                    Ok(verdicts) => {
                        assert_eq!(verdicts.len(), rows);
                        for (r, v) in verdicts.iter().enumerate() {
                            assert!(v.emitted.len() <= w + 1 && v.accepted <= v.emitted.len());
                            assert!(v.emitted.iter().all(|&t| in_vocab(t)));
                            assert_eq!(d.lengths()[r], before[r] + v.emitted.len());
                        }
                    }
                    Err(e) => _ = is_error(&e),
                }
            }
            5 => {
                let n = size(u)?;
                match d.tails(n) {
                    Ok(t) => assert_eq!(t.len(), rows * n),
                    Err(e) => _ = is_error(&e),
                }
            }
            6 => {
                let n = if u.ratio(1u8, 6)? {
                    u.int_in_range(0..=4)?
                } else {
                    rows
                };
                let lengths: Vec<usize> = (0..n).map(|_| size(u)).collect::<Result<_>>()?;
                match d.truncate(&lengths) {
                    Ok(()) => {
                        for ((&now, &was), &cap) in d.lengths().iter().zip(&before).zip(&lengths) {
                            assert_eq!(now, was.min(cap));
                        }
                    }
                    Err(e) => {
                        is_error(&e);
                        assert_eq!(d.lengths(), before, "a refused truncate changes nothing");
                    }
                }
            }
            7 => {
                let n = if u.ratio(1u8, 6)? {
                    u.int_in_range(0..=4)?
                } else {
                    rows
                };
                let done: Vec<bool> = (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?;
                let was = d.row_status().unfinished().to_vec();
                match d.row_status_mut().finish_rows(&done) {
                    Ok(()) => {
                        for ((&now, &w), &f) in d.row_status().unfinished().iter().zip(&was).zip(&done) {
                            assert_eq!(now, w && !f);
                        }
                    }
                    Err(e) => {
                        is_error(&e);
                        assert_eq!(d.row_status().unfinished(), was);
                    }
                }
            }
            8 => {
                let (seq, w) = d.sequences();
                assert_eq!(seq.len(), rows * w);
                assert_eq!(w, d.lengths().into_iter().max().unwrap_or(0));
            }
            _ => {
                let active = d.active();
                assert_eq!(active.iter().any(|&a| a), d.any_active());
                for (r, &a) in active.iter().enumerate() {
                    assert!(!a || d.row_status().unfinished()[r]);
                    assert_eq!(d.row(r).len(), d.lengths()[r]);
                }
            }
        }
    }
    Ok(())
}
