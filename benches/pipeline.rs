//! Criterion microbenchmarks of every processor and of whole pipelines, at
//! B ∈ {1, 8, 32} rows × V ∈ {32k, 50k, 128k, 256k} (`cargo bench --bench pipeline`).
//!
//! Each iteration processes a fresh copy of the logits (copied into a reused buffer,
//! not timed, so the data is as warm as logits just written by a model); the "sample"
//! pipelines also draw one token per row. Filter with criterion's usual
//! argument, e.g. `cargo bench --bench pipeline -- 'full/sample/B8xV128k'`.
//! `FERROGEN_BENCH_QUICK=1` measures only B8 × V128k.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrogen_core::history::TokenHistory;
use ferrogen_core::logits::{LogitsMut, Pipeline, PipelineConfig, StepContext};
use ferrogen_core::rng;
use ferrogen_core::sampling::draw;

fn shapes() -> Vec<(usize, usize)> {
    if std::env::var_os("FERROGEN_BENCH_QUICK").is_some() {
        return vec![(8, 128_000)];
    }
    let mut out = Vec::new();
    for b in [1, 8, 32] {
        for v in [32_000, 50_257, 128_256, 256_000] {
            out.push((b, v));
        }
    }
    out
}

/// Logits shaped like a language model's: a normal body, a few peaked tokens.
fn logits(rows: usize, vocab: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(rows * vocab);
    for _ in 0..rows * vocab {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // sum of 4 uniforms ~ normal, times 2.5
        let u = |s: u64, k: u32| ((s >> (16 * k)) & 0xFFFF) as f32 / 65536.0;
        let n = (u(state, 0) + u(state, 1) + u(state, 2) + u(state, 3) - 2.0) * 2.5 * 1.7;
        out.push(n);
    }
    for r in 0..rows {
        for j in 0..20 {
            out[r * vocab + (j * 7919 + r * 31) % vocab] += 8.0 + j as f32 * 0.3;
        }
    }
    out
}

fn history(rows: usize, vocab: usize) -> TokenHistory {
    let len = 512;
    let flat: Vec<i64> = (0..rows * len)
        .map(|i| ((i * 2_654_435_761) % vocab) as i64)
        .collect();
    TokenHistory::new(&flat, rows)
}

fn processors() -> Vec<(&'static str, PipelineConfig)> {
    let s = |c: PipelineConfig| PipelineConfig {
        do_sample: true,
        ..c
    };
    let d = PipelineConfig::default;
    vec![
        (
            "temperature",
            s(PipelineConfig {
                temperature: 0.7,
                ..d()
            }),
        ),
        ("top_k", s(PipelineConfig { top_k: 50, ..d() })),
        ("top_p", s(PipelineConfig { top_p: 0.9, ..d() })),
        (
            "typical_p",
            s(PipelineConfig {
                typical_p: 0.9,
                ..d()
            }),
        ),
        (
            "min_p",
            s(PipelineConfig {
                min_p: Some(0.05),
                ..d()
            }),
        ),
        (
            "top_h",
            s(PipelineConfig {
                top_h: Some(0.5),
                ..d()
            }),
        ),
        (
            "epsilon_cutoff",
            s(PipelineConfig {
                epsilon_cutoff: 3e-4,
                ..d()
            }),
        ),
        (
            "eta_cutoff",
            s(PipelineConfig {
                eta_cutoff: 3e-4,
                ..d()
            }),
        ),
        (
            "repetition_penalty",
            PipelineConfig {
                repetition_penalty: 1.3,
                ..d()
            },
        ),
        (
            "encoder_repetition_penalty",
            PipelineConfig {
                encoder_repetition_penalty: 1.3,
                encoder_input_ids: vec![(0..512).collect()],
                ..d()
            },
        ),
        (
            "no_repeat_ngram_size",
            PipelineConfig {
                no_repeat_ngram_size: 3,
                ..d()
            },
        ),
        (
            "encoder_no_repeat_ngram_size",
            PipelineConfig {
                encoder_no_repeat_ngram_size: 3,
                encoder_input_ids: vec![(0..512).collect()],
                ..d()
            },
        ),
        (
            "bad_words_ids",
            PipelineConfig {
                bad_words_ids: (0..100).map(|i| vec![i * 13, i * 7 + 1]).collect(),
                ..d()
            },
        ),
        (
            "sequence_bias",
            PipelineConfig {
                sequence_bias: (0..100).map(|i| (vec![i * 11], 1.5)).collect(),
                ..d()
            },
        ),
        (
            "min_length",
            PipelineConfig {
                min_length: 10_000,
                eos_token_ids: vec![2],
                ..d()
            },
        ),
        (
            "forced_eos",
            PipelineConfig {
                forced_eos_token_id: vec![2],
                max_length: Some(513),
                ..d()
            },
        ),
        (
            "remove_invalid_values",
            PipelineConfig {
                remove_invalid_values: true,
                ..d()
            },
        ),
        (
            "exponential_decay",
            PipelineConfig {
                exponential_decay_length_penalty: Some((1, 1.1)),
                eos_token_ids: vec![2],
                ..d()
            },
        ),
        (
            "suppress_tokens",
            PipelineConfig {
                suppress_tokens: (0..200).collect(),
                ..d()
            },
        ),
        (
            "renormalize_logits",
            PipelineConfig {
                renormalize_logits: true,
                ..d()
            },
        ),
        // llama.cpp / vLLM samplers (the bench history is 512 prompt tokens: the presence
        // penalties count them through penalty_last_n)
        (
            "presence_frequency",
            PipelineConfig {
                presence_penalty: 0.5,
                frequency_penalty: 0.3,
                penalty_last_n: Some(512),
                ..d()
            },
        ),
        (
            "logit_bias",
            PipelineConfig {
                logit_bias: (0..200).map(|t| (t * 97, -1.5)).collect(),
                ..d()
            },
        ),
        (
            "allowed_token_ids",
            PipelineConfig {
                allowed_token_ids: Some((0..1000).map(|t| t * 13).collect()),
                ..d()
            },
        ),
        (
            "dry",
            PipelineConfig {
                dry_multiplier: 0.8,
                dry_sequence_breaker_ids: vec![vec![13], vec![25], vec![1], vec![9]],
                ..d()
            },
        ),
        (
            "xtc",
            s(PipelineConfig {
                xtc_probability: 1.0,
                xtc_threshold: 0.1,
                ..d()
            }),
        ),
        (
            "top_n_sigma",
            s(PipelineConfig {
                top_n_sigma: Some(1.0),
                ..d()
            }),
        ),
        (
            "dynatemp",
            s(PipelineConfig {
                dynatemp_range: 0.5,
                ..d()
            }),
        ),
        (
            "mirostat_v2",
            s(PipelineConfig {
                mirostat_mode: 2,
                ..d()
            }),
        ),
    ]
}

fn bench_one(c: &mut Criterion, group: &str, name: &str, pipeline: &Pipeline, sample: bool) {
    let mut g = c.benchmark_group(format!("{group}/{name}"));
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(15);
    for (rows, vocab) in shapes() {
        let base = logits(rows, vocab);
        let hist = history(rows, vocab);
        let keys: Vec<u64> = (0..rows as u64).collect();
        g.throughput(Throughput::Bytes((rows * vocab * 4) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("B{rows}xV{}k", vocab / 1000)),
            &(),
            |b, _| {
                b.iter_custom(|iters| {
                    let mut data = base.clone();
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        data.copy_from_slice(&base);
                        let start = Instant::now();
                        let ctx = StepContext::new(&hist);
                        let mut view = LogitsMut::new(&mut data, vocab);
                        if sample {
                            let t = pipeline.process_then(&ctx, &mut view, |r, row, s| {
                                draw(
                                    row,
                                    s.sparse.then_some(s.cand.as_slice()),
                                    rng::uniform(keys[r], 0),
                                )
                            });
                            black_box(t);
                        } else {
                            pipeline.process(&ctx, &mut view);
                        }
                        total += start.elapsed();
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

fn each_processor(c: &mut Criterion) {
    for (name, cfg) in processors() {
        let mut p = cfg.build_processors(512);
        p.extend(&cfg.build_warpers(1));
        bench_one(c, "processor", name, &p, false);
    }
}

fn full_pipelines(c: &mut Criterion) {
    let sample = PipelineConfig {
        do_sample: true,
        temperature: 0.8,
        top_k: 50,
        top_p: 0.9,
        ..Default::default()
    };
    bench_one(c, "full", "sample", &sample.build_all(512, 1), true);
    let dense = PipelineConfig {
        do_sample: true,
        temperature: 0.8,
        top_p: 0.9,
        ..Default::default()
    };
    bench_one(
        c,
        "full",
        "sample_top_p_only",
        &dense.build_all(512, 1),
        true,
    );
    let heavy = PipelineConfig {
        do_sample: true,
        temperature: 0.8,
        top_k: 50,
        top_p: 0.9,
        repetition_penalty: 1.2,
        no_repeat_ngram_size: 3,
        min_p: Some(0.02),
        ..Default::default()
    };
    bench_one(
        c,
        "full",
        "processors+warpers",
        &heavy.build_all(512, 1),
        true,
    ); // the chain `ferrogen bench` times against a transformers custom LogitsProcessor
    let dry_xtc_min_p = PipelineConfig {
        do_sample: true,
        dry_multiplier: 0.8,
        dry_sequence_breaker_ids: vec![vec![13], vec![25], vec![1], vec![9]],
        xtc_probability: 0.5,
        xtc_threshold: 0.1,
        min_p: Some(0.05),
        ..Default::default()
    };
    bench_one(
        c,
        "full",
        "dry+xtc+min_p",
        &dry_xtc_min_p.build_all(512, 1),
        true,
    );
}

/// The memory-bound reference: one pass (row max) over the same array.
fn one_pass(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference/max");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(15);
    for (rows, vocab) in shapes() {
        let base = logits(rows, vocab);
        g.throughput(Throughput::Bytes((rows * vocab * 4) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("B{rows}xV{}k", vocab / 1000)),
            &base,
            |b, data| {
                b.iter(|| {
                    let m: Vec<f32> = data
                        .chunks_exact(vocab)
                        .map(ferrogen_core::logits::math::max)
                        .collect();
                    black_box(m)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, full_pipelines, one_pass, each_processor);
criterion_main!(benches);
