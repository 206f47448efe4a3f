//! Tests of [`PipelineConfig`]: what it builds and what it refuses.

use super::*;
use crate::error::CoreError;

#[test]
fn single_top_k_warper_is_exactly_the_built_warpers() {
    let base = PipelineConfig {
        do_sample: true,
        top_k: 50,
        ..Default::default()
    };
    let cases = [
        (base.clone(), true),
        (
            PipelineConfig {
                temperature: 0.7,
                ..base.clone()
            },
            true,
        ),
        (
            PipelineConfig {
                top_p: 0.9,
                ..base.clone()
            },
            false,
        ),
        (
            PipelineConfig {
                min_p: Some(0.1),
                ..base.clone()
            },
            false,
        ),
        (
            PipelineConfig {
                typical_p: 0.5,
                ..base.clone()
            },
            false,
        ),
        (
            PipelineConfig {
                epsilon_cutoff: 0.01,
                ..base.clone()
            },
            false,
        ),
        (
            PipelineConfig {
                eta_cutoff: 0.01,
                ..base.clone()
            },
            false,
        ),
        (
            PipelineConfig {
                renormalize_logits: true,
                ..base.clone()
            },
            false,
        ),
        (
            PipelineConfig {
                top_h: Some(0.5),
                ..base.clone()
            },
            false,
        ),
        (
            PipelineConfig {
                top_k: 0,
                ..base.clone()
            },
            false,
        ),
        (
            PipelineConfig {
                do_sample: false,
                ..base.clone()
            },
            false,
        ),
    ];
    for (cfg, single) in cases {
        let got = cfg.single_top_k_warper(2);
        assert_eq!(got.is_some(), single, "{cfg:?}");
        if let Some(top_k) = got {
            assert_eq!(
                cfg.build_warpers(2).names(),
                crate::logits::RowProcessor::names(&top_k)
            );
        }
    }
}

#[test]
fn order_follows_transformers() {
    let cfg = PipelineConfig {
        eos_token_ids: vec![1],
        min_length: 3,
        min_new_tokens: 2,
        do_sample: true,
        temperature: 0.7,
        top_k: 5,
        top_p: 0.9,
        min_p: Some(0.1),
        top_h: Some(0.5),
        typical_p: 0.9,
        epsilon_cutoff: 0.01,
        eta_cutoff: 0.01,
        repetition_penalty: 1.2,
        encoder_repetition_penalty: 1.1,
        encoder_input_ids: vec![vec![3, 4]],
        no_repeat_ngram_size: 2,
        encoder_no_repeat_ngram_size: 2,
        bad_words_ids: vec![vec![5]],
        sequence_bias: vec![(vec![6], 1.0)],
        forced_bos_token_id: Some(0),
        forced_eos_token_id: vec![1],
        max_length: Some(10),
        remove_invalid_values: true,
        exponential_decay_length_penalty: Some((2, 1.5)),
        suppress_tokens: vec![7],
        begin_suppress_tokens: vec![8],
        renormalize_logits: true,
        ..Default::default()
    };
    cfg.validate(Some(10)).unwrap();
    assert_eq!(
        cfg.build_all(1, 1).names(),
        [
            "SequenceBiasLogitsProcessor",
            "EncoderRepetitionPenaltyLogitsProcessor",
            "RepetitionPenaltyLogitsProcessor",
            "NoRepeatNGramLogitsProcessor",
            "EncoderNoRepeatNGramLogitsProcessor",
            "NoBadWordsLogitsProcessor",
            "MinLengthLogitsProcessor",
            "MinNewTokensLengthLogitsProcessor",
            "ForcedBOSTokenLogitsProcessor",
            "ForcedEOSTokenLogitsProcessor",
            "InfNanRemoveLogitsProcessor",
            "ExponentialDecayLengthPenalty",
            "SuppressTokensLogitsProcessor",
            "SuppressTokensAtBeginLogitsProcessor",
            "NanToNegInf",
            "TemperatureLogitsWarper",
            "TopHLogitsWarper",
            "TopKLogitsWarper",
            "TopPLogitsWarper",
            "MinPLogitsWarper",
            "TypicalLogitsWarper",
            "EpsilonLogitsWarper",
            "EtaLogitsWarper",
            "LogitNormalization",
        ]
    );
}

#[test]
fn fused_stages_keep_their_names() {
    let top_p = PipelineConfig {
        do_sample: true,
        temperature: 0.7,
        top_p: 0.9,
        ..Default::default()
    };
    assert_eq!(top_p.build_warpers(1).len(), 1, "one fused stage");
    assert_eq!(
        top_p.build_warpers(1).names(),
        ["NanToNegInf", "TemperatureLogitsWarper", "TopPLogitsWarper"]
    );
    let top_k = PipelineConfig { top_k: 5, ..top_p };
    assert_eq!(
        top_k.build_warpers(1).names(),
        [
            "NanToNegInf",
            "TemperatureLogitsWarper",
            "TopKLogitsWarper",
            "TopPLogitsWarper"
        ]
    );
}

#[test]
fn neutral_values_build_nothing() {
    let cfg = PipelineConfig {
        do_sample: true,
        ..Default::default()
    };
    assert_eq!(cfg.build_all(3, 1).names(), ["NanToNegInf"]);
    let greedy = PipelineConfig {
        top_k: 50,
        temperature: 0.5,
        ..Default::default()
    };
    assert!(greedy.build_all(3, 1).is_empty(), "warpers need do_sample");
}

#[test]
fn bad_values_name_the_field() {
    let field = |cfg: PipelineConfig| match cfg.validate(Some(10)) {
        Err(CoreError::InvalidArgument { name, .. })
        | Err(CoreError::TokenOutOfVocab { name, .. }) => name,
        other => panic!("expected an error, got {other:?}"),
    };
    let base = || PipelineConfig {
        do_sample: true,
        ..Default::default()
    };
    assert_eq!(
        field(PipelineConfig {
            temperature: 0.0,
            ..base()
        }),
        "temperature"
    );
    assert_eq!(
        field(PipelineConfig {
            top_p: 1.5,
            ..base()
        }),
        "top_p"
    );
    assert_eq!(
        field(PipelineConfig {
            top_p: 0.0,
            ..base()
        }),
        "top_p"
    );
    assert_eq!(
        field(PipelineConfig {
            typical_p: f64::NAN,
            ..base()
        }),
        "typical_p"
    );
    assert_eq!(
        field(PipelineConfig {
            min_p: Some(-0.1),
            ..base()
        }),
        "min_p"
    );
    assert_eq!(
        field(PipelineConfig {
            repetition_penalty: 0.0,
            ..base()
        }),
        "repetition_penalty"
    );
    assert_eq!(
        field(PipelineConfig {
            bad_words_ids: vec![vec![]],
            ..base()
        }),
        "bad_words_ids"
    );
    assert_eq!(
        field(PipelineConfig {
            bad_words_ids: vec![vec![-1]],
            ..base()
        }),
        "bad_words_ids"
    );
    assert_eq!(
        field(PipelineConfig {
            bad_words_ids: vec![vec![10]],
            ..base()
        }),
        "bad_words_ids"
    );
    assert_eq!(
        field(PipelineConfig {
            suppress_tokens: vec![12],
            ..base()
        }),
        "suppress_tokens"
    );
    assert_eq!(
        field(PipelineConfig {
            forced_bos_token_id: Some(99),
            ..base()
        }),
        "forced_bos_token_id"
    );
    let greedy_t0 = PipelineConfig {
        temperature: 0.0,
        ..Default::default()
    };
    assert!(
        greedy_t0.validate(None).is_ok(),
        "temperature only matters when sampling"
    );
}
