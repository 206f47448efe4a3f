//! Grammar-constrained decoding: JSON Schema, regular expressions, Lark grammars and
//! choice lists, backed by the `llguidance` crate (no grammar engine of our own).
//!
//! - [`GrammarVocab`]: the tokenizer's vocabulary as llguidance sees it (built once per
//!   tokenizer from its `tokenizer.json`) and the parser factory over it.
//! - [`GrammarSpec`] / [`CompiledGrammar`]: one user constraint, checked and compiled.
//! - [`RowGrammars`]: one matcher per row (per beam in beam modes): the allowed-token
//!   mask written into a logits row (-inf elsewhere), token consumption, clone from a
//!   parent beam, rollback of rejected draft tokens, accepting / dead state.
//! - [`GrammarStage`]: the pipeline stage that applies the masks where transformers
//!   puts `PrefixConstrainedLogitsProcessor` (after min-length, before forced BOS/EOS).
//!
//! EOS rule: the configured EOS ids are allowed exactly when the row's grammar accepts;
//! llguidance's own idea of EOS (from the tokenizer) is not used. A row whose grammar
//! reaches a state with no allowed token (or rejects a token) is *dead*: only its EOS
//! ids stay allowed, so it ends cleanly, and the caller reports it (finish reason
//! `grammar`).

mod matchers;
mod spec;
mod stage;
mod vocab;

pub use matchers::{allowed_after, dead_after, RowGrammars, RowStatus};
pub use spec::{CompiledGrammar, GrammarSpec};
pub use stage::{GrammarHandle, GrammarStage};
pub use vocab::GrammarVocab;
