//! The tokenizer bridge: a transformers `tokenizer.json` → llguidance's token trie and
//! parser factory. Building it walks the whole vocabulary, so callers build it once per
//! tokenizer and share it (it is immutable and `Send + Sync`).

use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokenId};
use llguidance::ParserFactory;
use toktrie_hf_tokenizers::ByteTokenizer;

use crate::error::{CoreError, Result};

/// llguidance's view of one tokenizer, with the parser factory compiled over it.
pub struct GrammarVocab {
    pub(crate) factory: Arc<ParserFactory>,
    tokenizer_eos: Vec<TokenId>,
}

impl std::fmt::Debug for GrammarVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarVocab")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl GrammarVocab {
    /// From the text of a `tokenizer.json` (transformers' fast tokenizers write one:
    /// `tokenizer.backend_tokenizer.to_str()`). `n_vocab`: the model's vocabulary size
    /// when it is larger than the tokenizer's (padded embedding matrices).
    pub fn from_tokenizer_json(json: &str, n_vocab: Option<usize>) -> Result<Self> {
        let tok = ByteTokenizer::from_json_bytes(json.as_bytes()).map_err(bridge)?;
        let tok_n = tok.hf_tokenizer.get_vocab_size(true);
        let n_vocab = n_vocab.filter(|&n| n > tok_n);
        let env: TokEnv = tok.into_tok_env(n_vocab).map_err(bridge)?;
        let mut factory = ParserFactory::new_simple(&env).map_err(bridge)?;
        factory.quiet();
        let trie = env.tok_trie();
        let tokenizer_eos = trie.eos_tokens().to_vec();
        Ok(GrammarVocab {
            factory: Arc::new(factory),
            tokenizer_eos,
        })
    }

    /// Number of tokens the trie knows (the mask's width).
    pub fn vocab_size(&self) -> usize {
        self.factory.tok_env().tok_trie().vocab_size()
    }

    /// The tokenizer's own end-of-sequence tokens (never allowed by the mask: the
    /// configured EOS ids decide when a row may end).
    pub(crate) fn tokenizer_eos(&self) -> &[TokenId] {
        &self.tokenizer_eos
    }
}

fn bridge(e: impl std::fmt::Display) -> CoreError {
    CoreError::invalid(
        "tokenizer",
        format!(
            "cannot be bridged to llguidance (it needs a byte-level or byte-fallback \
             tokenizer.json): {e}"
        ),
    )
}
