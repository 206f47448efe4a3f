//! Grammar mask cost per token per row (llguidance through `ferrogen_core::grammar`):
//! consume the row's new token, then write its allowed-token mask into a logits row.
//! Median and p99 over random walks (each token picked pseudo-randomly among the allowed
//! ones) under a JSON schema (nested objects, enums, bounded strings) and under a regex,
//! at V = 4096 (the embedded tokenizer) and V = 50k / 128k (byte-level BPE vocabularies
//! built here, see `synthetic_tokenizer`: no real 50k/128k tokenizer is stored offline).
//! The time covers the whole per-row step: consuming the new token, llguidance's
//! `compute_mask`, and writing -inf into the f32 logits row.
//!
//! `cargo bench --bench grammar_mask` (plain timing loop: criterion reports no p99).

use std::sync::Arc;
use std::time::Instant;

use ferrogen_core::grammar::{CompiledGrammar, GrammarSpec, GrammarVocab, RowGrammars};
use ferrogen_core::history::TokenHistory;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie_hf_tokenizers::ByteTokenizer;

/// Names, numbers and dates: a lexer-only grammar (one derivative automaton).
const REGEX: &str =
    r"([A-Z][a-z]{1,9} ){1,3}(is|was) [0-9]{1,3} on [0-9]{4}-[0-9]{2}-[0-9]{2}(, [a-z ]{0,20})?\.";

const SCHEMA: &str = r#"{"type":"object","properties":{
 "name":{"type":"string","maxLength":12},
 "kind":{"enum":["lamb","ox","dove","goat"]},
 "age":{"type":"integer","minimum":0,"maximum":999},
 "place":{"type":"object","properties":{"city":{"enum":["Zion","Babylon","Jericho"]},
   "holy":{"type":"boolean"}},"required":["city","holy"],"additionalProperties":false}},
 "required":["name","kind","age","place"],"additionalProperties":false,
 "x-guidance":{"whitespace_flexible":false}}"#;

fn byte_char(b: u8) -> char {
    // GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest above 255.
    let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

fn synthetic_tokenizer(n: usize) -> String {
    // Shaped like a real byte-level BPE vocabulary: the 256 byte tokens, the numbers
    // 0-999, punctuation runs (`{"`, `":`, `",`, ...), then pseudo-random words of 2-10
    // letters (Zipf-ish short-biased lengths), each bare, with a leading space and
    // capitalised, until `n - 1` tokens (the last id is EOS).
    let mut vocab: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut seen: std::collections::HashSet<String> = vocab.iter().cloned().collect();
    let gpt2 = |s: &str| s.bytes().map(byte_char).collect::<String>();
    let mut extra: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let punct = ["{", "}", "[", "]", "\"", ":", ",", ".", " ", "_", "-", "'"];
    for a in punct {
        for b in punct {
            extra.push(format!("{a}{b}"));
            for c in ["\"", " ", ","] {
                extra.push(format!("{a}{b}{c}"));
            }
        }
    }
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut push = |t: &str, vocab: &mut Vec<String>| {
        let t = gpt2(t);
        if vocab.len() < n - 1 && t.chars().count() > 1 && seen.insert(t.clone()) {
            vocab.push(t);
        }
    };
    for t in &extra {
        push(t, &mut vocab);
    }
    while vocab.len() < n - 1 {
        let len = 2 + (next() % 9).min(next() % 9) as usize;
        let w: String = (0..len)
            .map(|_| (b'a' + (next() % 26) as u8) as char)
            .collect();
        let cap = w[..1].to_uppercase() + &w[1..];
        for t in [format!(" {w}"), w, cap] {
            push(&t, &mut vocab);
        }
    }
    let entries: Vec<String> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}:{i}", serde_json::to_string(t).unwrap()))
        .collect();
    let eos = vocab.len();
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,
 "added_tokens":[{{"id":{eos},"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}],
 "normalizer":null,"pre_tokenizer":{{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}},
 "post_processor":null,"decoder":{{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}},
 "model":{{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,
 "fuse_unk":false,"byte_fallback":false,"vocab":{{{}}},"merges":[]}}}}"#,
        entries.join(",")
    )
}

/// llguidance alone over the same tokenizer: the reference the ferrogen step is held to.
fn raw_factory(json: &str) -> ParserFactory {
    let tok = ByteTokenizer::from_json_bytes(json.as_bytes()).unwrap();
    let mut f = ParserFactory::new_simple(&tok.into_tok_env(None).unwrap()).unwrap();
    f.quiet();
    f
}

fn raw_matcher(factory: &ParserFactory, spec: &GrammarSpec) -> Matcher {
    let top = match spec {
        GrammarSpec::JsonSchema(s) => {
            TopLevelGrammar::from_json_schema(serde_json::from_str(s).unwrap())
        }
        GrammarSpec::Regex(r) => TopLevelGrammar::from_regex(r),
        _ => unreachable!(),
    };
    Matcher::new(Ok(factory.create_parser(top).unwrap()))
}

/// Per-token times (µs) over `walks` walks of up to `steps` tokens each, the token
/// picked pseudo-randomly among the allowed ones (EOS ends a walk): ferrogen's whole
/// step (first walk, later walks), and llguidance's `compute_mask` alone on a matcher
/// walked in lockstep (later walks).
fn measure(
    vocab: &Arc<GrammarVocab>,
    factory: &ParserFactory,
    spec: &GrammarSpec,
    eos: i64,
    walks: usize,
    steps: usize,
) -> [Vec<f64>; 3] {
    let v = vocab.vocab_size();
    let grammar = Arc::new(CompiledGrammar::new(vocab.clone(), spec).unwrap());
    let mut times = Vec::new();
    let mut first = Vec::new();
    let mut raw_times = Vec::new();
    let mut logits = vec![0.0f32; v];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for walk in 0..walks {
        if walk == 1 {
            first = std::mem::take(&mut times);
        }
        let mut rows = RowGrammars::new(std::slice::from_ref(&grammar), 1, &[eos]).unwrap();
        let mut raw = raw_matcher(factory, spec);
        let mut history = TokenHistory::new(&[0], 1);
        for _ in 0..steps {
            logits.fill(0.0);
            let t0 = Instant::now();
            rows.apply(&history, &mut logits, v, None);
            times.push(t0.elapsed().as_secs_f64() * 1e6);
            if walk > 0 && !raw.is_stopped() {
                let t0 = Instant::now();
                std::hint::black_box(raw.compute_mask().unwrap());
                raw_times.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            let allowed: Vec<usize> = (0..v).filter(|&i| logits[i] == 0.0).collect();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pick = allowed[(state as usize) % allowed.len()] as i64;
            if pick == eos {
                break;
            }
            history.push(&[pick]);
            raw.consume_token(pick as u32).unwrap();
        }
    }
    [first, times, raw_times]
}

fn report(name: &str, mut times: Vec<f64>) {
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "{name}: {} masks, median {:.1} µs, p99 {:.1} µs, mean {:.1} µs",
        times.len(),
        q(0.5),
        q(0.99),
        times.iter().sum::<f64>() / times.len() as f64
    );
}

fn run_all(name: &str, json: &str, eos: Option<i64>, walks: usize) {
    let vocab = Arc::new(GrammarVocab::from_tokenizer_json(json, None).unwrap());
    let factory = raw_factory(json);
    // The floor of any mask written into f32 logits: one -inf fill of the row.
    let mut row = vec![0.0f32; vocab.vocab_size()];
    let fills = (0..1000)
        .map(|_| {
            let t0 = Instant::now();
            std::hint::black_box(&mut row).fill(f32::NEG_INFINITY);
            t0.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    report(
        &format!("V={} ({name}), floor: one -inf fill", vocab.vocab_size()),
        fills,
    );
    let eos = eos.unwrap_or(vocab.vocab_size() as i64 - 1);
    for (kind, spec) in [
        ("JSON schema", GrammarSpec::JsonSchema(SCHEMA.into())),
        ("regex", GrammarSpec::Regex(REGEX.into())),
    ] {
        let [first, rest, raw] = measure(&vocab, &factory, &spec, eos, walks, 80);
        let label = format!("V={} ({name}), {kind}", vocab.vocab_size());
        report(&format!("{label}, ferrogen step, first walk"), first);
        report(&format!("{label}, ferrogen step, later walks"), rest);
        report(&format!("{label}, llguidance compute_mask alone"), raw);
    }
}

fn main() {
    let embedded = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/python/ferrogen/_embedded/kjv-gpt2/tokenizer.json"
    );
    let json = std::fs::read_to_string(embedded).unwrap();
    run_all("embedded tokenizer", &json, Some(1), 20);
    for n in [50_257usize, 128_256] {
        run_all(
            "synthetic byte-level BPE",
            &synthetic_tokenizer(n),
            None,
            20,
        );
    }
}
