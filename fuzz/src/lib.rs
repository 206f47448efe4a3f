//! Bodies of the fuzz targets, shared by the libFuzzer binaries in `fuzz_targets/`
//! and by the deterministic replay driver (`src/bin/replay.rs`).
//!
//! Every body takes raw bytes, decodes them with `arbitrary::Unstructured` into
//! inputs of the public core API (configs, shapes, float bit patterns, token
//! streams), runs the core, and asserts the invariants the core promises: it
//! returns `Err` for bad input and never panics, and its successful outputs have
//! the documented shapes and ranges. A panic (or a failed assertion) is a crash.

mod assisted;
mod constructors;

pub use assisted::assisted;
pub use constructors::constructors;

use arbitrary::{Result, Unstructured};
use ferrogen_core::beam::{
    BeamCore, BeamSearch, BeamSettings, ConstrainedBeamSearch, EarlyStopping, Finalized, GroupBeamSearch,
    SampleSettings,
};
use ferrogen_core::constraints::{bank_order, ConstraintSet, ConstraintSpec};
use ferrogen_core::decode::Decoder;
use ferrogen_core::row_status::HasRowStatus;
use ferrogen_core::history::TokenHistory;
use ferrogen_core::logits::{LogitsMut, PipelineConfig, SamplerOrder, StepContext, SynthIdSpec};
use ferrogen_core::CoreError;

// ---------------------------------------------------------------- generators

/// A float32 that is often special: NaN (quiet and signalling), ±inf, ±0,
/// denormals, extremes, or any bit pattern at all.
pub fn f32_any(u: &mut Unstructured<'_>) -> Result<f32> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => f32::NAN,
        1 => f32::from_bits(0x7f80_0001), // signalling NaN
        2 => f32::INFINITY,
        3 => f32::NEG_INFINITY,
        4 => -0.0,
        5 => f32::from_bits(1), // smallest denormal
        6 => -f32::from_bits(0x007f_ffff),
        7 => f32::MAX,
        8 => f32::MIN,
        9 => f32::from_bits(u.arbitrary::<u32>()?),
        _ => (u.int_in_range(-2000i32..=2000)? as f32) / 100.0,
    })
}

/// A float64 setting: usually its neutral value, else something in or near its
/// range, or a special value.
pub fn f64_setting(u: &mut Unstructured<'_>, neutral: f64) -> Result<f64> {
    Ok(match u.int_in_range(0u8..=12)? {
        0..=5 => neutral,
        6 => f64::NAN,
        7 => f64::INFINITY,
        8 => f64::NEG_INFINITY,
        9 => f64::from_bits(u.arbitrary::<u64>()?),
        10 => 0.0,
        11 => f64::MIN_POSITIVE / 4.0,
        _ => (u.int_in_range(-200i32..=300)? as f64) / 100.0,
    })
}

/// A token id: mostly inside `[0, vocab)`, sometimes just outside, sometimes extreme.
pub fn token(u: &mut Unstructured<'_>, vocab: usize) -> Result<i64> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => -1,
        1 => vocab as i64,
        2 => i64::MAX,
        3 => i64::MIN,
        _ => u.int_in_range(0..=vocab.max(1) as i64 - 1)?,
    })
}

/// A size as callers may pass one: mostly small (0..8), else huge (>= 2^61, so that its
/// product with any row count or element size overflows).
pub fn size(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(if u.ratio(1u8, 6)? {
        match u.int_in_range(0u8..=3)? {
            0 => usize::MAX,
            1 => usize::MAX / 2 + 1,
            2 => 1 << 61,
            _ => u.int_in_range(1usize << 61..=usize::MAX)?,
        }
    } else {
        u.int_in_range(0..=8)?
    })
}

pub fn tokens(u: &mut Unstructured<'_>, vocab: usize, max_len: usize) -> Result<Vec<i64>> {
    let n = u.int_in_range(0..=max_len)?;
    (0..n).map(|_| token(u, vocab)).collect()
}

pub(crate) fn small(u: &mut Unstructured<'_>, max: usize) -> Result<usize> {
    Ok(if u.ratio(1u8, 16)? {
        u.arbitrary::<usize>()? % (1 << 20)
    } else {
        u.int_in_range(0..=max)?
    })
}

fn opt<T>(
    u: &mut Unstructured<'_>,
    f: impl FnOnce(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Option<T>> {
    Ok(if u.ratio(1u8, 3)? { Some(f(u)?) } else { None })
}

/// Any [`PipelineConfig`]: every field either neutral or arbitrary.
pub fn pipeline_config(
    u: &mut Unstructured<'_>,
    vocab: usize,
    rows: usize,
) -> Result<PipelineConfig> {
    let mut c = PipelineConfig {
        eos_token_ids: tokens(u, vocab, 3)?,
        min_length: small(u, 8)?,
        min_new_tokens: small(u, 8)?,
        do_sample: u.arbitrary()?,
        temperature: f64_setting(u, 1.0)?,
        top_k: small(u, vocab + 2)?,
        top_p: f64_setting(u, 1.0)?,
        min_p: opt(u, |u| f64_setting(u, 0.1))?,
        top_h: opt(u, |u| f64_setting(u, 0.5))?,
        typical_p: f64_setting(u, 1.0)?,
        epsilon_cutoff: f64_setting(u, 0.0)?,
        eta_cutoff: f64_setting(u, 0.0)?,
        repetition_penalty: f64_setting(u, 1.0)?,
        prompt_ignore_lengths: Vec::new(),
        encoder_repetition_penalty: f64_setting(u, 1.0)?,
        encoder_input_ids: Vec::new(),
        no_repeat_ngram_size: small(u, 4)?,
        encoder_no_repeat_ngram_size: small(u, 4)?,
        bad_words_ids: Vec::new(),
        sequence_bias: Vec::new(),
        forced_bos_token_id: opt(u, |u| token(u, vocab))?,
        forced_eos_token_id: tokens(u, vocab, 2)?,
        max_length: opt(u, |u| small(u, 12))?,
        remove_invalid_values: u.arbitrary()?,
        exponential_decay_length_penalty: opt(u, |u| Ok((small(u, 6)?, f64_setting(u, 1.5)?)))?,
        suppress_tokens: tokens(u, vocab, 3)?,
        begin_suppress_tokens: tokens(u, vocab, 3)?,
        renormalize_logits: u.arbitrary()?,
        // Samplers (issue 18): drawn below, after every older field, so that older corpus
        // inputs keep their meaning.
        ..Default::default() // grammar: masks have their own tests
    };
    if u.ratio(1u8, 3)? {
        let n = u.int_in_range(0..=rows + 1)?;
        c.prompt_ignore_lengths = (0..n).map(|_| small(u, 6)).collect::<Result<_>>()?;
    }
    if u.ratio(1u8, 3)? {
        let n = u.int_in_range(0..=rows + 1)?;
        let len = u.int_in_range(0..=4)?;
        c.encoder_input_ids = (0..n)
            .map(|_| {
                let extra = usize::from(u.ratio(1u8, 10)?);
                (0..len + extra).map(|_| token(u, vocab)).collect()
            })
            .collect::<Result<_>>()?;
    }
    if u.ratio(1u8, 3)? {
        let n = u.int_in_range(0..=3)?;
        c.bad_words_ids = (0..n).map(|_| tokens(u, vocab, 3)).collect::<Result<_>>()?;
    }
    if u.ratio(1u8, 3)? {
        let n = u.int_in_range(0..=3)?;
        c.sequence_bias = (0..n)
            .map(|_| Ok((tokens(u, vocab, 3)?, f64_setting(u, 2.0)?)))
            .collect::<Result<_>>()?;
    }
    samplers(u, vocab, &mut c)?;
    Ok(c)
}

/// The llama.cpp / vLLM / text-generation-webui samplers, each group on in a third of the
/// inputs.
fn samplers(u: &mut Unstructured<'_>, vocab: usize, c: &mut PipelineConfig) -> Result<()> {
    if u.ratio(1u8, 3)? {
        c.presence_penalty = f64_setting(u, 0.0)?;
        c.frequency_penalty = f64_setting(u, 0.0)?;
        c.penalty_last_n = opt(u, |u| small(u, 8))?;
    }
    if u.ratio(1u8, 3)? {
        let n = u.int_in_range(0..=3)?;
        c.logit_bias = (0..n)
            .map(|_| Ok((token(u, vocab)?, f64_setting(u, 5.0)?)))
            .collect::<Result<_>>()?;
        c.allowed_token_ids = opt(u, |u| tokens(u, vocab, 3))?;
    }
    if u.ratio(1u8, 3)? {
        c.dry_multiplier = f64_setting(u, 0.8)?;
        c.dry_base = f64_setting(u, 1.75)?;
        c.dry_allowed_length = small(u, 4)?;
        let n = u.int_in_range(0..=3)?;
        c.dry_sequence_breaker_ids = (0..n).map(|_| tokens(u, vocab, 2)).collect::<Result<_>>()?;
        c.dry_penalty_last_n = opt(u, |u| small(u, 8))?;
    }
    if u.ratio(1u8, 3)? {
        c.xtc_probability = f64_setting(u, 0.5)?;
        c.xtc_threshold = f64_setting(u, 0.1)?;
    }
    if u.ratio(1u8, 3)? {
        c.top_n_sigma = opt(u, |u| f64_setting(u, 1.0))?;
        c.dynatemp_range = f64_setting(u, 0.0)?;
        c.dynatemp_exponent = f64_setting(u, 1.0)?;
    }
    if u.ratio(1u8, 3)? {
        c.mirostat_mode = small(u, 3)?;
        c.mirostat_tau = f64_setting(u, 5.0)?;
        c.mirostat_eta = f64_setting(u, 0.1)?;
    }
    if u.ratio(1u8, 4)? {
        c.sampler_order = Some(if u.arbitrary()? {
            SamplerOrder::llama_cpp()
        } else {
            SamplerOrder::transformers()
        });
    }
    if u.ratio(1u8, 4)? {
        c.synthid = Some(synthid(u)?);
    }
    Ok(())
}

/// SynthID settings (issue 22), valid or not: sizes at and past the limits, empty keys.
fn synthid(u: &mut Unstructured<'_>) -> Result<SynthIdSpec> {
    let depth = u.int_in_range(0..=4)?;
    Ok(SynthIdSpec {
        ngram_len: *u.choose(&[-1, 0, 1, 2, 3, 6, i64::MAX])?,
        keys: (0..depth).map(|_| u.arbitrary()).collect::<Result<_>>()?,
        sampling_table_size: *u.choose(&[-1, 0, 1, 2, 97, 1 << 16, (1 << 24) + 1, i64::MAX])?,
        sampling_table_seed: *u.choose(&[0, -1, 5, 1 << 63, 1 << 64, i128::MIN])?,
        context_history_size: *u.choose(&[-1, 0, 1, 3, 1024, i64::MAX])?,
        skip_first_ngram_calls: u.arbitrary()?,
        debug_mode: u.arbitrary()?,
    })
}

/// `n` float32 values, each one of [`f32_any`]; a row may also be all one special value.
pub fn logits(u: &mut Unstructured<'_>, n: usize) -> Result<Vec<f32>> {
    let fill = match u.int_in_range(0u8..=9)? {
        0 => Some(f32::NAN),
        1 => Some(f32::NEG_INFINITY),
        2 => Some(f32::INFINITY),
        _ => None,
    };
    (0..n)
        .map(|_| {
            if let Some(x) = fill {
                Ok(x)
            } else {
                f32_any(u)
            }
        })
        .collect()
}

/// Logits for `rows × vocab`, occasionally the wrong length.
fn step_logits(u: &mut Unstructured<'_>, rows: usize, vocab: usize) -> Result<Vec<f32>> {
    let n = if u.ratio(1u8, 12)? {
        (rows * vocab + u.int_in_range(0..=3)?).saturating_sub(2)
    } else {
        rows * vocab
    };
    logits(u, n)
}

pub(crate) fn is_error(e: &CoreError) -> bool {
    // every error must name something
    let text = e.to_string();
    assert!(!text.is_empty());
    true
}

// ---------------------------------------------------------------- targets

/// (a) The logits pipeline and the single-sequence decoder (greedy and sampling).
pub fn pipeline(data: &[u8]) {
    let _ = pipeline_inner(&mut Unstructured::new(data));
}

fn pipeline_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let vocab = u.int_in_range(0..=40)?;
    let rows = u.int_in_range(0..=4)?;
    let prompt_len = u.int_in_range(0..=5)?;
    let prompts: Vec<i64> = (0..rows * prompt_len)
        .map(|_| token(u, vocab))
        .collect::<Result<_>>()?;
    let cfg = pipeline_config(u, vocab, rows)?;
    let pad = token(u, vocab)?;

    // The pipeline on its own, as the bindings run it after validation.
    if vocab > 0 && cfg.validate(Some(vocab)).is_ok() && cfg.validate_rows(rows).is_ok() {
        let history = TokenHistory::new(&prompts, rows);
        let keep = u.int_in_range(0..=4)?;
        let p = cfg.build_all(prompt_len, keep);
        let mut x = logits(u, rows * vocab)?;
        p.process(
            &StepContext::new(&history),
            &mut LogitsMut::new(&mut x, vocab),
        );
        assert_eq!(x.len(), rows * vocab);
    }

    // The decoder: any config, any shapes; errors are fine, panics are not.
    let mut d = match Decoder::new(&prompts, rows, &cfg, pad) {
        Ok(d) => d,
        Err(e) => return Ok(assert!(is_error(&e))),
    };
    if u.arbitrary()? {
        let seeds: Vec<Vec<i64>> = (0..u.int_in_range(0..=rows)?)
            .map(|_| tokens(u, vocab, 3))
            .collect::<Result<_>>()?;
        d = match d.seeded(u.arbitrary()?, &seeds) {
            Ok(d) => d,
            Err(e) => return Ok(assert!(is_error(&e))),
        };
    }
    for _ in 0..u.int_in_range(0..=6)? {
        let v = if u.ratio(1u8, 10)? {
            u.int_in_range(0..=40)?
        } else {
            vocab
        };
        let mut x = step_logits(u, rows, v)?;
        let before: Vec<bool> = d.row_status().unfinished().to_vec();
        let out = match u.int_in_range(0u8..=3)? {
            0 => d.step_greedy(&mut x, v).map(<[i64]>::to_vec),
            1 => d.step_sample(&mut x, v).map(<[i64]>::to_vec),
            2 => d
                .process(&mut x, v)
                .and_then(|_| d.choose_greedy(&x, v).map(<[i64]>::to_vec)),
            _ => d
                .process(&mut x, v)
                .and_then(|_| d.warp(&mut x, v))
                .and_then(|_| d.choose_sample(&mut x, v).map(<[i64]>::to_vec)),
        };
        match out {
            Ok(next) => {
                assert_eq!(next.len(), rows);
                for (r, &t) in next.iter().enumerate() {
                    if before[r] {
                        assert!(t >= 0 && (t as usize) < v, "token {t} outside vocab {v}");
                    } else {
                        assert_eq!(t, pad, "finished rows get the pad token");
                    }
                }
            }
            Err(e) => {
                assert!(is_error(&e));
                break;
            }
        }
        if u.ratio(1u8, 8)? {
            let done: Vec<bool> = (0..rows).map(|_| u.arbitrary()).collect::<Result<_>>()?;
            let _ = d.row_status_mut().finish_rows(&done);
        }
    }
    Ok(())
}

fn beam_settings(
    u: &mut Unstructured<'_>,
    vocab: usize,
    prompt_len: usize,
) -> Result<BeamSettings> {
    Ok(BeamSettings {
        num_beams: u.int_in_range(0..=5)?,
        num_beam_groups: u.int_in_range(0..=3)?,
        diversity_penalty: f64_setting(u, 0.0)?,
        length_penalty: f64_setting(u, 1.0)?,
        early_stopping: match u.int_in_range(0u8..=2)? {
            0 => EarlyStopping::Heuristic,
            1 => EarlyStopping::AllFinished,
            _ => EarlyStopping::Never,
        },
        max_length: prompt_len + small(u, 6)?.min(64),
        num_return_sequences: u.int_in_range(0..=6)?,
        eos_token_ids: tokens(u, vocab, 3)?,
        pad_token_id: token(u, vocab)?,
        sample: None,
    })
}

fn check_finalized(f: &Finalized, batch: usize, n: usize, prompt_len: usize) {
    assert_eq!(f.rows, batch * n);
    assert_eq!(f.sequences.len(), f.rows * f.width);
    assert_eq!(f.scores.len(), f.rows);
    assert_eq!(f.reasons.len(), f.rows);
    assert_eq!(f.width, prompt_len + f.generated_width);
    assert_eq!(f.beam_indices.len(), f.rows * f.generated_width);
}

/// (b) Beam search, beam sampling and group (diverse) beam search steps.
pub fn beam(data: &[u8]) {
    let _ = beam_inner(&mut Unstructured::new(data));
}

fn beam_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let vocab = u.int_in_range(0..=12)?;
    let batch = u.int_in_range(0..=3)?;
    let prompt_len = u.int_in_range(0..=3)?;
    let prompts: Vec<i64> = (0..batch * prompt_len)
        .map(|_| token(u, vocab))
        .collect::<Result<_>>()?;
    let mut settings = beam_settings(u, vocab, prompt_len)?;
    let mut cfg = if u.ratio(1u8, 2)? {
        pipeline_config(u, vocab, batch)?
    } else {
        PipelineConfig::default()
    };
    let group = u.ratio(1u8, 3)?;
    if !group {
        settings.num_beam_groups = 1;
        if u.arbitrary()? {
            cfg.do_sample = true;
            let keys = if u.arbitrary()? {
                Some(
                    (0..u.int_in_range(0..=batch + 1)?)
                        .map(|_| u.arbitrary())
                        .collect::<Result<_>>()?,
                )
            } else {
                None
            };
            settings.sample = Some(SampleSettings { item_keys: keys });
        }
    }
    let nrs = settings.num_return_sequences;
    if std::env::var_os("FERROGEN_FUZZ_DEBUG").is_some() {
        eprintln!(
            "group={group} vocab={vocab} batch={batch} prompts={prompts:?}\n{settings:?}\n{cfg:?}"
        );
    }
    if group {
        let mut s = match GroupBeamSearch::new(&prompts, batch, &cfg, settings) {
            Ok(s) => s,
            Err(e) => return Ok(assert!(is_error(&e))),
        };
        let rows = s.rows();
        for _ in 0..u.int_in_range(0..=8)? {
            if s.is_done() {
                break;
            }
            let mut x = step_logits(u, rows, vocab)?;
            let r = if u.arbitrary()? {
                s.step(&mut x, vocab)
            } else {
                s.step_unread(&mut x, vocab)
            };
            if let Err(e) = r {
                assert!(is_error(&e));
                break;
            }
            assert_eq!(s.next_tokens().len(), rows);
            assert!(s.parents().iter().all(|&p| p >= 0 && (p as usize) < rows));
            if u.ratio(1u8, 4)? {
                let _ = s.take_settled();
            }
        }
        if u.ratio(1u8, 8)? {
            s.stop(u.arbitrary()?);
        }
        let f = s.finalize();
        check_finalized(&f, batch, nrs, prompt_len);
        return Ok(());
    }
    let mut s = match BeamSearch::new(&prompts, batch, &cfg, settings) {
        Ok(s) => s,
        Err(e) => return Ok(assert!(is_error(&e))),
    };
    let rows = s.rows();
    for _ in 0..u.int_in_range(0..=8)? {
        let mut x = step_logits(u, rows, vocab)?;
        let noise = if u.ratio(1u8, 2)? {
            let n = if u.ratio(1u8, 10)? {
                u.int_in_range(0..=rows * vocab + 1)?
            } else {
                rows * vocab
            };
            Some(
                (0..n)
                    .map(|_| f32_any(u).map(f32::abs))
                    .collect::<Result<Vec<f32>>>()?,
            )
        } else {
            None
        };
        let r = if u.arbitrary()? {
            if u.arbitrary()? {
                s.step(&mut x, vocab, noise.as_deref())
            } else {
                s.step_unread(&mut x, vocab, noise.as_deref())
            }
        } else {
            let k = s.candidates_per_item() * s.batch();
            let hits: Option<Vec<u8>> = if u.arbitrary()? {
                let n = if u.ratio(1u8, 10)? {
                    u.int_in_range(0..=k + 1)?
                } else {
                    k
                };
                Some(
                    (0..n)
                        .map(|_| u.int_in_range(0u8..=2))
                        .collect::<Result<_>>()?,
                )
            } else {
                None
            };
            s.process(&mut x, vocab)
                .and_then(|_| s.warp(&mut x, vocab))
                .and_then(|_| {
                    s.propose(&x, vocab, noise.as_deref())
                        .map(|c| assert_eq!(c.len(), k))
                })
                .and_then(|_| s.commit(hits.as_deref()))
        };
        if let Err(e) = r {
            assert!(is_error(&e));
            break;
        }
        assert!(s
            .next_tokens()
            .iter()
            .all(|&t| t >= 0 && (t as usize) < vocab));
        assert!(s.parents().iter().all(|&p| p >= 0 && (p as usize) < rows));
        if u.ratio(1u8, 4)? {
            let _ = s.take_settled();
        }
        if s.is_done() {
            break;
        }
    }
    let f = s.finalize();
    check_finalized(&f, batch, nrs, prompt_len);
    for b in 0..batch {
        let scores = &f.scores[b * nrs..(b + 1) * nrs];
        assert!(
            scores.windows(2).all(|w| !(w[0] < w[1])),
            "scores sorted best first: {scores:?}"
        );
    }
    Ok(())
}

fn spec(u: &mut Unstructured<'_>, alphabet: i64) -> Result<ConstraintSpec> {
    let word = |u: &mut Unstructured<'_>| -> Result<Vec<i64>> {
        let n = u.int_in_range(0..=4)?;
        (0..n)
            .map(|_| {
                if u.ratio(1u8, 20)? {
                    Ok(-1)
                } else {
                    u.int_in_range(0..=alphabet - 1)
                }
            })
            .collect()
    };
    Ok(if u.arbitrary()? {
        ConstraintSpec::Phrase(word(u)?)
    } else {
        let n = u.int_in_range(0..=3)?;
        ConstraintSpec::OneOf((0..n).map(|_| word(u)).collect::<Result<_>>()?)
    })
}

fn contains(text: &[i64], phrase: &[i64]) -> bool {
    phrase.is_empty() || text.windows(phrase.len()).any(|w| w == phrase)
}

/// (c) The constraint trie, the per-hypothesis state, the bank ordering and the
/// constrained beam search.
pub fn constraints(data: &[u8]) {
    let _ = constraints_inner(&mut Unstructured::new(data));
}

fn constraints_inner(u: &mut Unstructured<'_>) -> Result<()> {
    // bank ordering on its own: any banks, any scores (NaN included), any keep
    let n = u.int_in_range(0..=12)?;
    let banks: Vec<usize> = (0..n).map(|_| small(u, 6)).collect::<Result<_>>()?;
    let scores = logits(u, n)?;
    let keep = small(u, 14)?;
    let order = bank_order(&banks, &scores, keep);
    assert_eq!(order.len(), keep.min(n));
    let mut seen = vec![false; n];
    for &i in &order {
        assert!(!seen[i], "index {i} twice");
        seen[i] = true;
    }

    let alphabet = u.int_in_range(1..=6)?;
    let specs: Vec<ConstraintSpec> = (0..u.int_in_range(0..=3)?)
        .map(|_| spec(u, alphabet))
        .collect::<Result<_>>()?;
    let vocab = if u.ratio(1u8, 4)? {
        None
    } else {
        Some(u.int_in_range(0..=8)?)
    };
    let set = match ConstraintSet::new(specs.clone(), vocab) {
        Ok(s) => s,
        Err(e) => return Ok(assert!(is_error(&e))),
    };
    // a token stream through one state
    let mut st = set.initial_state();
    let mut adv = Vec::new();
    for _ in 0..u.int_in_range(0..=24)? {
        let t = if u.ratio(1u8, 10)? {
            token(u, 8)?
        } else {
            u.int_in_range(0..=alphabet)?
        };
        st.add(&set, t);
        assert!(st.completed_count() <= set.len());
        assert!(st.bank(&set) <= set.max_bank(), "bank above its maximum");
        st.advance_tokens(&set, &mut adv);
        assert_eq!(adv.is_empty(), st.is_complete());
    }

    // the constrained beam search over it
    let vocab = vocab.unwrap_or(alphabet as usize + 1);
    let batch = u.int_in_range(0..=2)?;
    let prompt_len = u.int_in_range(0..=3)?;
    let prompts: Vec<i64> = (0..batch * prompt_len)
        .map(|_| token(u, vocab))
        .collect::<Result<_>>()?;
    let mask: Option<Vec<bool>> = if u.ratio(1u8, 4)? {
        Some(
            (0..prompts.len())
                .map(|_| u.arbitrary())
                .collect::<Result<_>>()?,
        )
    } else {
        None
    };
    let mut settings = beam_settings(u, vocab, prompt_len)?;
    settings.num_beam_groups = 1;
    settings.max_length = settings.max_length.min(prompt_len + 12);
    let cfg = if u.ratio(1u8, 3)? {
        pipeline_config(u, vocab, batch)?
    } else {
        PipelineConfig::default()
    };
    let nrs = settings.num_return_sequences;
    let mut s =
        match ConstrainedBeamSearch::new(&prompts, batch, &cfg, settings, set, mask.as_deref()) {
            Ok(s) => s,
            Err(e) => return Ok(assert!(is_error(&e))),
        };
    let rows = s.rows();
    for _ in 0..u.int_in_range(0..=12)? {
        let mut x = step_logits(u, rows, vocab)?;
        if let Err(e) = s.step(&mut x, vocab) {
            assert!(is_error(&e));
            break;
        }
        assert!(s.parents().iter().all(|&p| p >= 0 && (p as usize) < rows));
        if u.ratio(1u8, 4)? {
            let _ = s.take_settled();
        }
        if s.is_done() {
            break;
        }
    }
    let out = s.finalize();
    check_finalized(&out, batch, nrs, prompt_len);
    assert_eq!(out.constraints_satisfied.len(), out.rows);
    if mask.is_none() {
        // a hypothesis reported as satisfying its constraints contains every one of them
        for (r, &ok) in out.constraints_satisfied.iter().enumerate() {
            if !ok {
                continue;
            }
            let seq = &out.sequences[r * out.width..(r + 1) * out.width];
            for sp in &specs {
                match sp {
                    ConstraintSpec::Phrase(p) => {
                        assert!(contains(seq, p), "{p:?} missing from {seq:?}")
                    }
                    ConstraintSpec::OneOf(a) => assert!(
                        a.iter().any(|p| contains(seq, p)),
                        "{a:?} missing from {seq:?}"
                    ),
                }
            }
        }
    }
    Ok(())
}

/// (d) The configuration validators: whatever the values, `validate` either accepts
/// them (and the processors then build and run on one row) or names the field.
/// The Python dict → `PipelineConfig` conversion itself needs an interpreter and is
/// covered by `tests/test_properties.py`.
pub fn config(data: &[u8]) {
    let _ = config_inner(&mut Unstructured::new(data));
}

const FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "typical_p",
    "min_p",
    "top_h",
    "epsilon_cutoff",
    "eta_cutoff",
    "repetition_penalty",
    "encoder_repetition_penalty",
    "exponential_decay_length_penalty",
    "bad_words_ids",
    "sequence_bias",
    "eos_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "suppress_tokens",
    "begin_suppress_tokens",
    "encoder_input_ids",
    "prompt_ignore_lengths",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "num_return_sequences",
    "length_penalty",
    "max_length",
    "early_stopping",
];

fn named(e: &CoreError) {
    let name = match e {
        CoreError::InvalidArgument { name, .. }
        | CoreError::Shape { name, .. }
        | CoreError::TokenOutOfVocab { name, .. }
        | CoreError::OutOfMemory { name, .. }
        | CoreError::WrongType { name, .. } => *name,
        CoreError::NoValidToken { .. } => panic!("a validator reported a model-output error: {e}"),
    };
    // a SynthID watermark's settings are named inside their field ("watermarking_config.keys")
    let watermark = name
        .strip_prefix("watermarking_config")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    assert!(
        FIELDS.contains(&name) || watermark,
        "error names {name:?}, not a configuration field"
    );
}

fn config_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let vocab = u.int_in_range(1..=64)?;
    let rows = u.int_in_range(0..=6)?;
    let mut cfg = pipeline_config(u, vocab, rows)?;
    // fully arbitrary bit patterns for the float fields, sometimes
    if u.ratio(1u8, 3)? {
        cfg.temperature = f64::from_bits(u.arbitrary()?);
        cfg.top_p = f64::from_bits(u.arbitrary()?);
        cfg.typical_p = f64::from_bits(u.arbitrary()?);
        cfg.repetition_penalty = f64::from_bits(u.arbitrary()?);
    }
    let checked_vocab = if u.arbitrary()? { Some(vocab) } else { None };
    let ok = match cfg
        .validate(checked_vocab)
        .and_then(|_| cfg.validate_rows(rows))
    {
        Ok(()) => true,
        Err(e) => {
            named(&e);
            false
        }
    };
    if ok && checked_vocab.is_some() && rows > 0 {
        let keep = u.int_in_range(0..=3)?;
        let prompt_len = u.int_in_range(0..=4)?;
        let prompts: Vec<i64> = (0..rows * prompt_len)
            .map(|_| u.int_in_range(0..=vocab as i64 - 1))
            .collect::<Result<_>>()?;
        let history = TokenHistory::new(&prompts, rows);
        let mut x: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 7919) % 13) as f32 - 6.0)
            .collect();
        cfg.build_all(prompt_len, keep).process(
            &StepContext::new(&history),
            &mut LogitsMut::new(&mut x, vocab),
        );
    }
    let prompt_len = u.int_in_range(0..=4)?;
    let settings = beam_settings(u, vocab, prompt_len)?;
    if let Err(e) = settings.validate(prompt_len) {
        named(&e);
    }
    let text: String = u.arbitrary()?;
    if let Err(e) = EarlyStopping::parse(&text) {
        named(&e);
    }
    Ok(())
}
