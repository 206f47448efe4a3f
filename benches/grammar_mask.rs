//! Grammar mask cost per token per row (llguidance through `ferrogen_core::grammar`):
//! consume the row's new token, then write its allowed-token mask into a logits row.
//! Median and p99 over a JSON-schema walk (nested objects, enums, bounded strings), at
//! V = 4096 (the embedded tokenizer) and V = 128k (a byte-level BPE vocabulary built here:
//! the 256 byte tokens plus 1-3 letter words, with and without a leading space).
//!
//! `cargo bench --bench grammar_mask` (plain timing loop: criterion reports no p99).

use std::sync::Arc;
use std::time::Instant;

use ferrogen_core::grammar::{CompiledGrammar, GrammarSpec, GrammarVocab, RowGrammars};
use ferrogen_core::history::TokenHistory;

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
    let mut vocab: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    let space = byte_char(b' ');
    'outer: for len in 1..=3 {
        let mut idx = vec![0usize; len];
        loop {
            let word: String = idx.iter().map(|&i| letters[i]).collect();
            for w in [word.clone(), format!("{space}{word}")] {
                if vocab.len() >= n - 1 {
                    break 'outer;
                }
                if w.chars().count() > 1 {
                    vocab.push(w);
                }
            }
            let mut k = len;
            loop {
                if k == 0 {
                    continue 'outer;
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < letters.len() {
                    break;
                }
                idx[k] = 0;
            }
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

/// Per-token mask times (µs) over `walks` walks of up to `steps` tokens each, the token
/// picked pseudo-randomly among the allowed ones (EOS ends a walk).
fn measure(vocab: Arc<GrammarVocab>, eos: i64, walks: usize, steps: usize) -> Vec<f64> {
    let v = vocab.vocab_size();
    let grammar =
        Arc::new(CompiledGrammar::new(vocab, &GrammarSpec::JsonSchema(SCHEMA.into())).unwrap());
    let mut times = Vec::new();
    let mut logits = vec![0.0f32; v];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..walks {
        let mut rows = RowGrammars::new(std::slice::from_ref(&grammar), 1, &[eos]).unwrap();
        let mut history = TokenHistory::new(&[0], 1);
        for _ in 0..steps {
            logits.fill(0.0);
            let t0 = Instant::now();
            rows.apply(&history, &mut logits, v, None);
            times.push(t0.elapsed().as_secs_f64() * 1e6);
            let allowed: Vec<usize> = (0..v).filter(|&i| logits[i] == 0.0).collect();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pick = allowed[(state as usize) % allowed.len()] as i64;
            if pick == eos {
                break;
            }
            history.push(&[pick]);
        }
    }
    times
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

fn main() {
    let embedded = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/python/ferrogen/_embedded/kjv-gpt2/tokenizer.json"
    );
    let json = std::fs::read_to_string(embedded).unwrap();
    let small = Arc::new(GrammarVocab::from_tokenizer_json(&json, None).unwrap());
    report("V=4096 (embedded tokenizer)", measure(small, 1, 20, 80));
    for n in [50_257usize, 128_256] {
        let big =
            Arc::new(GrammarVocab::from_tokenizer_json(&synthetic_tokenizer(n), None).unwrap());
        let eos = (big.vocab_size() - 1) as i64;
        report(
            &format!("V={} (synthetic byte-level BPE)", big.vocab_size()),
            measure(big, eos, 10, 80),
        );
    }
}
