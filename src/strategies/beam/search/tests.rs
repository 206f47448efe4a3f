//! `BeamSearch`'s unit tests: steps against hand-made logits, the unwritten-scores and
//! device-candidates paths against the plain step, returned scores against the beam paths.

use super::super::noise::exponential;
use super::super::tree::EndReason;
use super::super::{NodeRef, NEG_LARGE};
use super::*;
use crate::beam::SampleSettings;
use proptest::prelude::*;

fn settings(beams: usize, eos: &[i64], max_length: usize) -> BeamSettings {
    BeamSettings {
        num_beams: beams,
        eos_token_ids: eos.to_vec(),
        max_length,
        ..Default::default()
    }
}

fn log_probs(p: &[f32]) -> Vec<f32> {
    p.iter().map(|x| x.ln()).collect()
}

#[test]
fn all_nan_or_neg_inf_logits_are_a_named_error() {
    // issue 10: a model returning NaN logits made beam search return arbitrary tokens
    for bad in [f32::NAN, f32::NEG_INFINITY] {
        let mut s =
            BeamSearch::new(&[7, 8], 2, &PipelineConfig::default(), settings(2, &[1], 4)).unwrap();
        let mut logits = [vec![0.0; 6], vec![bad; 6]].concat();
        assert_eq!(
            s.step(&mut logits, 3, None),
            Err(CoreError::NoValidToken { row: 2 })
        );
        let keys = Some(vec![1, 2]);
        let sample = BeamSettings {
            sample: Some(SampleSettings { item_keys: keys }),
            ..settings(2, &[1], 4)
        };
        let cfg = PipelineConfig {
            do_sample: true,
            ..Default::default()
        };
        let mut s = BeamSearch::new(&[7, 8], 2, &cfg, sample).unwrap();
        let mut logits = vec![bad; 12];
        assert_eq!(
            s.step(&mut logits, 3, None),
            Err(CoreError::NoValidToken { row: 0 })
        );
    }
}

#[test]
fn first_step_expands_beam_zero_only_and_eos_finishes() {
    // vocab 3, eos = 1; one batch item, 2 beams, prompt [7]
    let mut s = BeamSearch::new(&[7], 1, &PipelineConfig::default(), settings(2, &[1], 4)).unwrap();
    let mut logits = [log_probs(&[0.5, 0.3, 0.2]), log_probs(&[0.5, 0.3, 0.2])].concat();
    s.step(&mut logits, 3, None).unwrap();
    // candidates (beam 0 only): 0 (.5), 1=eos (.3), 2 (.2), then beam 1's at -1e9
    assert_eq!(s.next_tokens(), &[0, 2]);
    assert_eq!(s.parents(), &[0, 0]);
    let slots = s.slots[0].slots();
    assert!(slots[0].finished && !slots[1].finished);
    assert!(
        (slots[0].score - 0.3f32.ln()).abs() < 1e-6,
        "length 1, penalty 1"
    );
    assert!(!s.is_done());
    assert_eq!(s.history().row(1), &[7, 2]);
}

/// One step of `s` over `logits` (log-softmaxed here), with a stopping criterion
/// ending the candidates that `hits` marks; returns the candidates.
fn step_with_hits(s: &mut BeamSearch, logits: &[f32], hits: &[u8]) -> Vec<Candidate> {
    let mut logits = logits.to_vec();
    s.process(&mut logits, 5).unwrap();
    let cands = s.propose(&logits, 5, None).unwrap().to_vec();
    s.commit(Some(hits)).unwrap();
    cands
}

/// Some but not all candidates stopped, fewer than `num_beams` run: the second row is a
/// stopped candidate that took no slot (rank 2 of 4; torch's order among the stopped
/// ones tied at -1e9 picks it), a placeholder, not a hypothesis. It gets no node until
/// a descendant enters the finished slots. (The old code recorded a node for it at
/// once, 3 nodes after the first step.)
#[test]
fn placeholder_rows_get_a_node_only_when_a_descendant_needs_it() {
    // vocab 5, eos 4 (K = 4); one item, 2 beams, prompt [7]
    let mut s =
        BeamSearch::new(&[7], 1, &PipelineConfig::default(), settings(2, &[4], 10)).unwrap();
    let first = [0.0, -1.0, -2.0, -3.0, -20.0];
    step_with_hits(&mut s, &first.repeat(2), &[0, 1, 1, 1]);
    // candidates: tokens 0 (runs), 1 (stopped, enters), 2 and 3 (stopped, rank >= 2)
    assert_eq!(s.next_tokens(), &[0, 2]);
    let nodes: Vec<(i64, EndReason)> = s.tree.nodes().iter().map(|n| (n.token, n.end)).collect();
    assert_eq!(
        nodes,
        vec![(1, EndReason::Stop(1)), (0, EndReason::Running)]
    );
    assert!(matches!(s.running_nodes[1], NodeRef::Deferred(_)));
    assert_eq!(s.tree.made(s.running_nodes[1]), None);
    assert_eq!(
        s.surviving_nodes().len(),
        2,
        "the finished slot and the running beam"
    );
    // the running beam can continue only with token 0: a continuation of the
    // placeholder (all tied at -1e9) ranks second and stops, so it enters the empty slot
    let ninf = f32::NEG_INFINITY;
    let second = [
        [0.0, ninf, ninf, ninf, ninf],
        [-3.0, -2.0, -1.0, 0.0, -20.0],
    ]
    .concat();
    let cands = step_with_hits(&mut s, &second, &[0, 1, 0, 0]);
    assert_eq!(cands[1].parent_row, 1);
    let slot = s.slots[0].slots()[1];
    assert!(slot.finished);
    let mut tokens = Vec::new();
    s.tree.extend_tokens(slot.node, &mut tokens);
    assert_eq!(
        tokens,
        vec![2, cands[1].token],
        "the placeholder's node made for its child"
    );
    assert_eq!(
        s.tree.nodes().len(),
        5,
        "and no other: stopped 3 of step 0 stays out"
    );
}

proptest! {
    /// Leaving the scores unwritten changes nothing the search decides: tokens,
    /// parents, running scores and the final hypotheses are bit-identical.
    #[test]
    fn unread_scores_step_is_the_step(seed in any::<u64>(), beams in 1usize..4, vocab in 2usize..200) {
        let (batch, rows) = (2, 2 * beams);
        let eos = [1i64];
        let mut a = BeamSearch::new(&[5, 6], batch, &PipelineConfig::default(), settings(beams, &eos, 9)).unwrap();
        let mut b = BeamSearch::new(&[5, 6], batch, &PipelineConfig::default(), settings(beams, &eos, 9)).unwrap();
        let mut step = 0;
        while !a.is_done() {
            let logits = crate::beam::tied_logits(seed, step, rows * vocab);
            let (mut la, mut lb) = (logits.clone(), logits.clone());
            a.step(&mut la, vocab, None).unwrap();
            b.step_unread(&mut lb, vocab, None).unwrap();
            prop_assert_eq!(lb, logits, "the scores are left as they were");
            prop_assert_eq!(a.next_tokens(), b.next_tokens());
            prop_assert_eq!(a.parents(), b.parents());
            let bits = |s: &BeamSearch| s.running_scores().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&a), bits(&b));
            step += 1;
        }
        prop_assert!(b.is_done());
        let (fa, fb) = (a.finalize(), b.finalize());
        prop_assert_eq!(fa.sequences, fb.sequences);
        prop_assert_eq!(fa.scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), fb.scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }
}

proptest! {
    /// Beam sampling with top-k as its only warper: the unwritten path draws exactly
    /// what the written one draws, seeded or with caller noise, including the items
    /// that fall back to the full scan (top_k 1: fewer positive keys than candidates).
    #[test]
    fn unread_scores_beam_sampling_is_the_step(
        seed in any::<u64>(),
        beams in 1usize..4,
        vocab in 130usize..300,
        top_k in prop_oneof![Just(1usize), Just(3), Just(50)],
        temperature in prop_oneof![Just(1.0f64), Just(0.7)],
        keyed in any::<bool>(),
    ) {
        let batch = 2;
        let rows = batch * beams;
        let cfg = PipelineConfig { do_sample: true, top_k, temperature, ..Default::default() };
        let keys = keyed.then(|| vec![seed, seed ^ 1]);
        let sample = BeamSettings { sample: Some(SampleSettings { item_keys: keys }), ..settings(beams, &[1], 9) };
        let mut a = BeamSearch::new(&[5, 6], batch, &cfg, sample.clone()).unwrap();
        let mut b = BeamSearch::new(&[5, 6], batch, &cfg, sample).unwrap();
        prop_assert!(b.lazy_top_k.is_some());
        let mut step = 0;
        while !a.is_done() {
            let logits = crate::beam::tied_logits(seed, step, rows * vocab);
            let noise: Vec<f32> = (0..rows * vocab).map(|i| crate::beam::exponential(seed, step + 100, i)).collect();
            let noise = (!keyed).then_some(noise.as_slice());
            let (mut la, mut lb) = (logits.clone(), logits.clone());
            a.step(&mut la, vocab, noise).unwrap();
            b.step_unread(&mut lb, vocab, noise).unwrap();
            prop_assert_eq!(&lb, &logits, "the scores are left as they were");
            prop_assert_eq!(a.next_tokens(), b.next_tokens());
            prop_assert_eq!(a.parents(), b.parents());
            let bits = |s: &BeamSearch| s.running_scores().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&a), bits(&b));
            step += 1;
        }
        prop_assert_eq!(a.finalize().sequences, b.finalize().sequences);
    }
}

#[test]
fn noise_passed_to_a_search_that_does_not_sample_is_ignored() {
    // fuzz (beam target): beam search without sampling sliced caller noise of any length
    let mut s = BeamSearch::new(&[7], 1, &PipelineConfig::default(), settings(2, &[1], 4)).unwrap();
    let mut logits = vec![0.0, -1.0, -2.0, 0.5, -0.5, -3.0];
    assert!(s.step(&mut logits, 3, Some(&[])).is_ok());
}

#[test]
fn max_length_finishes_everything() {
    let mut s =
        BeamSearch::new(&[7, 8], 2, &PipelineConfig::default(), settings(2, &[], 3)).unwrap();
    let mut steps = 0;
    while !s.is_done() {
        let mut logits: Vec<f32> = (0..4 * 5).map(|i| ((i * 7) % 5) as f32).collect();
        s.step(&mut logits, 5, None).unwrap();
        steps += 1;
    }
    assert_eq!(steps, 2);
    let out = s.finalize();
    assert_eq!((out.rows, out.width, out.generated_width), (2, 3, 2));
    assert!(out.reasons.iter().all(|&r| r == EndReason::Length));
    assert!(out.beam_indices.iter().all(|&i| (0..4).contains(&i)));
    assert!(
        s.propose(&[0.0; 20], 5, None).is_err(),
        "finished searches refuse more steps"
    );
}

#[test]
fn commit_needs_propose_and_noise_is_checked() {
    let sample = SampleSettings::default();
    let mut s = BeamSearch::new(
        &[7],
        1,
        &PipelineConfig::default(),
        BeamSettings {
            sample: Some(sample),
            ..settings(2, &[1], 5)
        },
    )
    .unwrap();
    assert!(s.commit(None).is_err());
    assert!(s.needs_noise());
    assert!(s.propose(&[0.0; 6], 3, None).is_err());
    assert!(matches!(
        s.propose(&[0.0; 6], 3, Some(&[1.0; 5])),
        Err(CoreError::Shape { .. })
    ));
    assert_eq!(s.propose(&[0.0; 6], 3, Some(&[1.0; 6])).unwrap().len(), 4);
    assert!(matches!(
        s.commit(Some(&[0; 3])),
        Err(CoreError::Shape { .. })
    ));
}

/// Runs a search over pseudo-random logits; returns it and the processed scores of every step.
fn run(
    batch: usize,
    beams: usize,
    eos: &[i64],
    lp: f64,
    early: EarlyStopping,
    seed: u64,
    sample: bool,
) -> (BeamSearch, Vec<Vec<f32>>) {
    let vocab = 6;
    let st = BeamSettings {
        num_beams: beams,
        eos_token_ids: eos.to_vec(),
        max_length: 9,
        length_penalty: lp,
        early_stopping: early,
        num_return_sequences: beams,
        sample: sample.then_some(SampleSettings {
            item_keys: Some((0..batch as u64).map(|b| seed * 31 + b).collect()),
        }),
        ..Default::default()
    };
    let prompts: Vec<i64> = (0..batch as i64 * 2).collect();
    let mut s = BeamSearch::new(&prompts, batch, &PipelineConfig::default(), st).unwrap();
    let mut scores = Vec::new();
    while !s.is_done() {
        let step = scores.len();
        let mut logits: Vec<f32> = (0..s.rows() * vocab)
            .map(|i| 3.0 * exponential(seed, step, i).ln())
            .collect();
        s.step(&mut logits, vocab, None).unwrap();
        scores.push(logits);
    }
    (s, scores)
}

/// What a device does with the full scores: log-softmax, add running scores, keep the best K.
fn device_candidates(s: &BeamSearch, logits: &[f32], vocab: usize) -> (Vec<f32>, Vec<i64>) {
    let mut lp = logits.to_vec();
    log_softmax_rows(&mut lp, vocab);
    let (beams, k) = (s.beams, s.candidates_per_item());
    let (mut scores, mut indices) = (Vec::new(), Vec::new());
    for b in 0..s.batch() {
        let mut all: Vec<(f32, usize)> = (0..beams * vocab)
            .map(|i| {
                (
                    lp[b * beams * vocab + i] + s.running_scores()[b * beams + i / vocab],
                    i,
                )
            })
            .collect();
        all.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        scores.extend(all[..k].iter().map(|x| x.0));
        indices.extend(all[..k].iter().map(|x| x.1 as i64));
    }
    (scores, indices)
}

#[test]
fn propose_candidates_checks_its_input() {
    let mut s = BeamSearch::new(&[7], 1, &PipelineConfig::default(), settings(2, &[1], 5)).unwrap();
    assert!(matches!(
        s.propose_candidates(&[0.0; 3], &[0; 4], 3),
        Err(CoreError::Shape { .. })
    ));
    assert!(
        s.propose_candidates(&[0.0; 4], &[0, 1, 2, 6], 3).is_err(),
        "index past beams * vocab"
    );
    assert!(
        s.propose_candidates(&[-2.0, -1.0, -3.0, -4.0], &[0, 1, 2, 3], 3)
            .is_err(),
        "unsorted"
    );
    assert_eq!(s.running_scores(), &[0.0, NEG_LARGE]);
    let c = s
        .propose_candidates(&[-1.0, -2.0, -3.0, -4.0], &[0, 1, 2, 3], 3)
        .unwrap()
        .to_vec();
    assert_eq!((c[3].parent_row, c[3].token), (1, 0));
    s.commit(None).unwrap();
    assert_eq!(s.next_tokens(), &[0, 2], "1 is EOS");
    assert_eq!(s.running_scores(), &[-1.0, -3.0]);
    assert_eq!(s.stage_names(), (vec![], vec![]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Candidates chosen outside the core (as a device does) give the same search.
    #[test]
    fn device_candidates_match_host_selection(batch in 1usize..3, beams in 1usize..5, lp in -1.0f64..2.0,
                                              early in 0usize..3, seed in 0u64..1000, n_eos in 0usize..3) {
        let early = [EarlyStopping::Heuristic, EarlyStopping::AllFinished, EarlyStopping::Never][early];
        let vocab = 7;
        let st = BeamSettings {
            num_beams: beams,
            eos_token_ids: (1..=n_eos as i64).collect(),
            max_length: 10,
            length_penalty: lp,
            early_stopping: early,
            num_return_sequences: beams,
            ..Default::default()
        };
        let prompts: Vec<i64> = (0..batch as i64 * 2).collect();
        let mut host = BeamSearch::new(&prompts, batch, &PipelineConfig::default(), st.clone()).unwrap();
        let mut dev = BeamSearch::new(&prompts, batch, &PipelineConfig::default(), st).unwrap();
        let mut step = 0;
        while !host.is_done() {
            prop_assert!(!dev.is_done());
            let logits: Vec<f32> = (0..host.rows() * vocab).map(|i| 3.0 * exponential(seed, step, i).ln()).collect();
            let (scores, indices) = device_candidates(&dev, &logits, vocab);
            host.step(&mut logits.clone(), vocab, None).unwrap();
            dev.propose_candidates(&scores, &indices, vocab).unwrap();
            dev.commit(None).unwrap();
            prop_assert_eq!(host.next_tokens(), dev.next_tokens());
            prop_assert_eq!(host.parents(), dev.parents());
            prop_assert_eq!(host.running_scores(), dev.running_scores());
            step += 1;
        }
        prop_assert!(dev.is_done());
        let (a, b) = (host.finalize(), dev.finalize());
        prop_assert_eq!(a.sequences, b.sequences);
        prop_assert_eq!(a.scores, b.scores);
        prop_assert_eq!(a.beam_indices, b.beam_indices);
        prop_assert_eq!(a.reasons, b.reasons);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Every returned score is the sum of the processed scores along its beam path,
    /// divided by its length to the power of the length penalty; results are sorted.
    #[test]
    fn scores_follow_beam_indices(batch in 1usize..3, beams in 1usize..5, lp in -1.0f64..2.0,
                                  early in 0usize..3, seed in 0u64..1000, sample in any::<bool>()) {
        let early = [EarlyStopping::Heuristic, EarlyStopping::AllFinished, EarlyStopping::Never][early];
        let (mut s, scores) = run(batch, beams, &[1], lp, early, seed, sample);
        let out = s.finalize();
        let vocab = 6;
        for r in 0..out.rows {
            let gen_len = (0..out.generated_width).filter(|&t| out.beam_indices[r * out.generated_width + t] >= 0).count();
            prop_assert!(gen_len > 0);
            let mut sum = 0.0f64;
            for (t, step) in scores.iter().enumerate().take(gen_len) {
                let row = out.beam_indices[r * out.generated_width + t] as usize;
                let token = out.sequences[r * out.width + 2 + t] as usize;
                sum += f64::from(step[row * vocab + token]);
            }
            let expected = sum / (gen_len as f64).powf(lp);
            prop_assert!((expected - f64::from(out.scores[r])).abs() < 1e-3 * (1.0 + expected.abs()),
                         "row {} expected {} got {}", r, expected, out.scores[r]);
            let ends_eos = out.sequences[r * out.width + 1 + gen_len] == 1;
            prop_assert_eq!(out.reasons[r] == EndReason::Eos, ends_eos);
            if r % beams > 0 {
                prop_assert!(out.scores[r - 1] >= out.scores[r]);
            }
        }
    }
}
