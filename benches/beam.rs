//! Criterion benches of the beam core: one step of beam search, beam sampling, diverse
//! group beam search and constrained beam search over a GPT-2-sized vocabulary, and the
//! Hamming penalty and the constraint-state update alone.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ferrogen_core::beam::diversity::penalize_group;
use ferrogen_core::beam::{
    exponential, log_softmax_rows, top_k_into, BeamSearch, BeamSettings, ConstrainedBeamSearch,
    GroupBeamSearch, SampleSettings, TopK, TorchExponential, TORCH_STATE_BYTES,
};
use ferrogen_core::constraints::{ConstraintSet, ConstraintSpec};
use ferrogen_core::logits::PipelineConfig;

const VOCAB: usize = 50257;
const BATCH: usize = 4;

fn logits(rows: usize, seed: u64) -> Vec<f32> {
    (0..rows * VOCAB)
        .map(|i| -3.0 * exponential(seed, 0, i).ln())
        .collect()
}

fn settings(beams: usize, groups: usize, sample: bool) -> BeamSettings {
    BeamSettings {
        num_beams: beams,
        num_beam_groups: groups,
        diversity_penalty: if groups > 1 { 0.5 } else { 0.0 },
        eos_token_ids: vec![50256],
        max_length: 1 << 20,
        sample: sample.then_some(SampleSettings {
            item_keys: Some((0..BATCH as u64).collect()),
        }),
        ..Default::default()
    }
}

fn bench_steps(c: &mut Criterion) {
    let prompts: Vec<i64> = (0..BATCH as i64 * 16).collect();
    for (name, beams, groups, sample) in [
        ("beam4", 4, 1, false),
        ("beam8", 8, 1, false),
        ("beam_sample4", 4, 1, true),
        ("group8x4", 8, 4, false),
    ] {
        let rows = BATCH * beams;
        let data = logits(rows, 1);
        let config = PipelineConfig {
            eos_token_ids: vec![50256],
            do_sample: sample,
            top_k: 50,
            ..Default::default()
        };
        // `step`, and `step_unread`: the same step when the caller does not read the
        // processed scores (nothing written)
        for (label, unread) in [("step", false), ("step_unread", true)] {
            c.bench_function(&format!("{label}/{name}/batch{BATCH}/vocab{VOCAB}"), |b| {
                if groups > 1 {
                    let mut s = GroupBeamSearch::new(
                        &prompts,
                        BATCH,
                        &config,
                        settings(beams, groups, sample),
                    )
                    .unwrap();
                    b.iter_batched(
                        || data.clone(),
                        |mut l| {
                            if unread {
                                s.step_unread(&mut l, VOCAB)
                            } else {
                                s.step(&mut l, VOCAB)
                            }
                            .unwrap()
                        },
                        BatchSize::LargeInput,
                    );
                } else {
                    let mut s =
                        BeamSearch::new(&prompts, BATCH, &config, settings(beams, groups, sample))
                            .unwrap();
                    b.iter_batched(
                        || data.clone(),
                        |mut l| {
                            if unread {
                                s.step_unread(&mut l, VOCAB, None)
                            } else {
                                s.step(&mut l, VOCAB, None)
                            }
                            .unwrap()
                        },
                        BatchSize::LargeInput,
                    );
                }
            });
        }
    }
    let data = logits(BATCH * 4, 3);
    c.bench_function("log_softmax/rows16", |b| {
        b.iter_batched(
            || data.clone(),
            |mut l| log_softmax_rows(&mut l, VOCAB),
            BatchSize::LargeInput,
        )
    });
    let mut top = TopK::new(8);
    c.bench_function("top_k/beams4x8", |b| {
        b.iter(|| {
            top_k_into(
                &mut top,
                &data[..4 * VOCAB],
                VOCAB,
                &[0.0, -1.0, -2.0, -3.0],
            )
        })
    });
    let mut block = logits(BATCH * 2, 2);
    let chosen: Vec<Vec<i64>> = (0..BATCH as i64)
        .map(|b| vec![b, b + 1, b, 7, 9, 11])
        .collect();
    let chosen: Vec<&[i64]> = chosen.iter().map(Vec::as_slice).collect();
    c.bench_function("hamming/group2/batch4", |b| {
        b.iter(|| penalize_group(&mut block, VOCAB, 2, &chosen, 0.5))
    });
}

/// Two phrases and one disjunctive constraint, as the guide's examples use.
fn constraint_set() -> ConstraintSet {
    let specs = vec![
        ConstraintSpec::Phrase(vec![1000, 1001]),
        ConstraintSpec::Phrase(vec![4000, 4001, 4002]),
        ConstraintSpec::OneOf(vec![vec![2000], vec![3000, 3001], vec![3000, 3002, 3003]]),
    ];
    ConstraintSet::new(specs, Some(VOCAB)).unwrap()
}

fn bench_constrained(c: &mut Criterion) {
    let prompts: Vec<i64> = (0..BATCH as i64 * 16).collect();
    let config = PipelineConfig {
        eos_token_ids: vec![50256],
        ..Default::default()
    };
    for beams in [4, 8] {
        let data = logits(BATCH * beams, 4);
        c.bench_function(
            &format!("step/constrained{beams}/batch{BATCH}/vocab{VOCAB}"),
            |b| {
                let mut s = ConstrainedBeamSearch::new(
                    &prompts,
                    BATCH,
                    &config,
                    settings(beams, 1, false),
                    constraint_set(),
                    None,
                )
                .unwrap();
                b.iter_batched(
                    || data.clone(),
                    |mut l| s.step(&mut l, VOCAB).unwrap(),
                    BatchSize::LargeInput,
                );
            },
        );
    }
    let set = constraint_set();
    let tokens: Vec<i64> = (0..64)
        .map(|i| [1000, 7, 1001, 3000, 3002, 3003, 4000, 9][i % 8])
        .collect();
    c.bench_function("constraint_state/advance64", |b| {
        b.iter(|| {
            let mut state = set.initial_state();
            for &t in &tokens {
                state.add(&set, t);
            }
            state.completed_count()
        })
    });
}

/// Beam sampling's noise without a seed at batch 16 × 4 beams (3.2M entries): the words of
/// torch's generator alone (what every step pays), and every entry transformed as torch's
/// `exponential_()` stores it (what a step without a top-k cut reads).
fn bench_torch_noise(c: &mut Criterion) {
    const ENTRIES: usize = 16 * 4 * VOCAB;
    let mut state = torch_state();
    let mut noise = TorchExponential::default();
    // torch's state handed back: every block twisted once
    c.bench_function("torch_noise/words/16x4x50257", |b| {
        b.iter(|| noise.draw(&mut state, ENTRIES).unwrap())
    });
    // a full scan's bulk transform (per item in the search; all at once here)
    let (mut out, mut words) = (vec![0.0f32; ENTRIES], Vec::new());
    c.bench_function("torch_noise/every_entry/16x4x50257", |b| {
        b.iter(|| {
            noise.draw(&mut state, ENTRIES).unwrap();
            noise.fill(0, &mut out, &mut words).unwrap();
        })
    });
}

/// torch's CPU generator state right after `torch.manual_seed(0)`: MT19937's seeding,
/// `left = 1`, `next = 0`, the words as u64 from byte 24.
fn torch_state() -> Vec<u8> {
    let mut state = vec![0u8; TORCH_STATE_BYTES];
    state[8..12].copy_from_slice(&1i32.to_le_bytes());
    let mut word = 0u32;
    for j in 0..624u32 {
        if j > 0 {
            word = 1_812_433_253u32
                .wrapping_mul(word ^ (word >> 30))
                .wrapping_add(j);
        }
        state[24 + 8 * j as usize..32 + 8 * j as usize]
            .copy_from_slice(&(word as u64).to_le_bytes());
    }
    state
}

criterion_group!(benches, bench_steps, bench_constrained, bench_torch_noise);
criterion_main!(benches);
