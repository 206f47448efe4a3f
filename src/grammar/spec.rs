//! One user constraint (JSON Schema, regex, Lark grammar or choice list), checked and
//! compiled against a vocabulary before any model work.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::Matcher;

use super::GrammarVocab;
use crate::error::{CoreError, Result};

/// What the user asked the output to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrammarSpec {
    /// A JSON Schema, as JSON text.
    JsonSchema(String),
    /// A regular expression the whole output must match (Rust `regex` syntax).
    Regex(String),
    /// A grammar in llguidance's Lark dialect.
    Lark(String),
    /// The output is exactly one of these strings.
    Choices(Vec<String>),
}

impl GrammarSpec {
    /// The `generate` argument this constraint came from, for error messages.
    pub fn argument(&self) -> &'static str {
        match self {
            GrammarSpec::JsonSchema(_) => "json_schema",
            GrammarSpec::Regex(_) => "regex",
            GrammarSpec::Lark(_) => "grammar",
            GrammarSpec::Choices(_) => "choices",
        }
    }

    fn to_top_level(&self) -> Result<TopLevelGrammar> {
        let bad = |m: String| CoreError::invalid(self.argument(), m);
        Ok(match self {
            GrammarSpec::JsonSchema(text) => {
                let value: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
                if !(value.is_object() || value.is_boolean()) {
                    return Err(bad("a JSON Schema is an object (or true/false)".into()));
                }
                TopLevelGrammar::from_json_schema(value)
            }
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            GrammarSpec::Lark(text) => {
                if text.trim().is_empty() {
                    return Err(bad("the grammar is empty".into()));
                }
                TopLevelGrammar::from_lark(text.clone())
            }
            GrammarSpec::Choices(choices) => {
                if choices.is_empty() {
                    return Err(bad("give at least one choice".into()));
                }
                // JSON string literals are Lark string literals (same escapes).
                let alts: Vec<String> = choices
                    .iter()
                    .map(|c| serde_json::to_string(c).unwrap_or_default())
                    .collect();
                TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | ")))
            }
        })
    }
}

/// A constraint compiled against a vocabulary: the matcher every row starts from.
pub struct CompiledGrammar {
    pub(crate) vocab: Arc<GrammarVocab>,
    pub(crate) initial: Matcher,
}

impl std::fmt::Debug for CompiledGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledGrammar").finish_non_exhaustive()
    }
}

impl CompiledGrammar {
    /// Compiles `spec`; an invalid one is an `InvalidArgument` naming its argument with
    /// llguidance's message (which carries the position of the problem).
    pub fn new(vocab: Arc<GrammarVocab>, spec: &GrammarSpec) -> Result<Self> {
        let grammar = spec.to_top_level()?;
        let parser = vocab
            .factory
            .create_parser(grammar)
            .map_err(|e| CoreError::invalid(spec.argument(), format!("{e:#}")))?;
        let initial = Matcher::new(Ok(parser));
        if let Some(e) = initial.get_error() {
            return Err(CoreError::invalid(spec.argument(), e));
        }
        Ok(CompiledGrammar { vocab, initial })
    }
}
