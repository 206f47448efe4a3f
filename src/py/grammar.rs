//! Bindings of [`crate::grammar`]: a tokenizer's vocabulary, a compiled constraint and
//! the per-row matchers of one generation. Conversion and delegation only; compiling
//! and masking run with the GIL released.

use std::sync::Arc;

use numpy::PyArray1;
use pyo3::prelude::*;

use super::errors::to_py;
use super::ints::{Int, Named};
use crate::grammar::{
    allowed_after, dead_after, CompiledGrammar, GrammarHandle, GrammarSpec,
    GrammarVocab as CoreVocab, RowGrammars,
};

/// llguidance's view of one tokenizer (built from its `tokenizer.json` text); build
/// once per tokenizer and reuse.
#[pyclass(module = "ferrogen._core", frozen)]
pub struct GrammarVocab {
    inner: Arc<CoreVocab>,
}

#[pymethods]
impl GrammarVocab {
    #[new]
    #[pyo3(signature = (tokenizer_json, vocab_size=None))]
    fn new(
        py: Python<'_>,
        tokenizer_json: String,
        vocab_size: Option<Int<usize>>,
    ) -> PyResult<Self> {
        let vocab_size = vocab_size.arg("vocab_size")?;
        let inner = py
            .detach(|| CoreVocab::from_tokenizer_json(&tokenizer_json, vocab_size))
            .map_err(to_py)?;
        Ok(GrammarVocab {
            inner: Arc::new(inner),
        })
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
}

/// One constraint compiled against a vocabulary. `kind`: "json_schema" (JSON text),
/// "regex", "grammar" (llguidance's Lark) or "choices" (a list of strings).
#[pyclass(module = "ferrogen._core", frozen)]
pub struct Grammar {
    inner: Arc<CompiledGrammar>,
}

#[pymethods]
impl Grammar {
    #[new]
    fn new(
        py: Python<'_>,
        vocab: &GrammarVocab,
        kind: &str,
        spec: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let text = || spec.extract::<String>();
        let spec = match kind {
            "json_schema" => GrammarSpec::JsonSchema(text()?),
            "regex" => GrammarSpec::Regex(text()?),
            "grammar" => GrammarSpec::Lark(text()?),
            "choices" => GrammarSpec::Choices(spec.extract::<Vec<String>>()?),
            other => {
                return Err(super::errors::InvalidArgumentError::new_err(format!(
                    "kind: must be json_schema, regex, grammar or choices, got {other:?}"
                )))
            }
        };
        let vocab = vocab.inner.clone();
        let inner = py
            .detach(|| CompiledGrammar::new(vocab, &spec))
            .map_err(to_py)?;
        Ok(Grammar {
            inner: Arc::new(inner),
        })
    }

    /// Token ids allowed after `generated` (a fresh matcher replays it; EOS ids allowed
    /// exactly when the grammar accepts), over a vocabulary of `vocab_size`.
    fn allowed_after(
        &self,
        py: Python<'_>,
        generated: Vec<Int<i64>>,
        eos_token_ids: Vec<Int<i64>>,
        vocab_size: Int<usize>,
    ) -> PyResult<Vec<u32>> {
        let (generated, eos_token_ids) = (
            generated.arg("generated")?,
            eos_token_ids.arg("eos_token_ids")?,
        );
        let vocab_size = vocab_size.arg("vocab_size")?;
        let inner = &self.inner;
        py.detach(|| allowed_after(inner, &generated, &eos_token_ids, vocab_size))
            .map_err(to_py)
    }

    /// Whether a row that generated `generated` (its final EOS excluded) had reached a
    /// state no token continues (or had received a token the grammar rejects): the
    /// finish reason `"grammar"` of a sequence that ended on EOS.
    fn dead_after(
        &self,
        py: Python<'_>,
        generated: Vec<Int<i64>>,
        eos_token_ids: Vec<Int<i64>>,
    ) -> PyResult<bool> {
        let (generated, eos_token_ids) = (
            generated.arg("generated")?,
            eos_token_ids.arg("eos_token_ids")?,
        );
        let inner = &self.inner;
        py.detach(|| dead_after(inner, &generated, &eos_token_ids))
            .map_err(to_py)
    }
}

/// The matchers of one generation: `grammars[p]` constrains prompt `p`, which has
/// `rows_per_prompt` rows (return sequences or beams). Pass it to a core strategy as
/// the `grammar` setting; it reads the strategy's token history on its own.
#[pyclass(module = "ferrogen._core", frozen)]
pub struct GrammarMatchers {
    pub(crate) handle: GrammarHandle,
}

#[pymethods]
impl GrammarMatchers {
    #[new]
    fn new(
        grammars: Vec<PyRef<'_, Grammar>>,
        rows_per_prompt: Int<usize>,
        eos_token_ids: Vec<Int<i64>>,
    ) -> PyResult<Self> {
        let rows_per_prompt = rows_per_prompt.arg("rows_per_prompt")?;
        let eos_token_ids = eos_token_ids.arg("eos_token_ids")?;
        let compiled: Vec<Arc<CompiledGrammar>> =
            grammars.iter().map(|g| g.inner.clone()).collect();
        let rows = RowGrammars::new(&compiled, rows_per_prompt, &eos_token_ids).map_err(to_py)?;
        Ok(GrammarMatchers {
            handle: GrammarHandle::new(rows),
        })
    }

    /// Bool `[rows]`: rows whose grammar reached a state with no allowed token.
    fn dead<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<bool>> {
        PyArray1::from_vec(py, self.handle.lock().dead())
    }

    /// Whether row `row`'s grammar accepts what it has consumed so far.
    fn accepting(&self, row: Int<usize>) -> PyResult<bool> {
        Ok(self.handle.lock().accepting(row.arg("row")?))
    }

    /// How many of `tokens` row `row` accepts in order (the row is not changed).
    fn valid_prefix(
        &self,
        py: Python<'_>,
        row: Int<usize>,
        tokens: Vec<Int<i64>>,
    ) -> PyResult<usize> {
        let (row, tokens) = (row.arg("row")?, tokens.arg("tokens")?);
        let handle = &self.handle;
        Ok(py.detach(|| handle.lock().valid_prefix(row, &tokens)))
    }
}

/// The `grammar` setting: a `GrammarMatchers` or None.
pub(crate) fn handle_of(value: Option<Bound<'_, PyAny>>) -> PyResult<Option<GrammarHandle>> {
    match value {
        None => Ok(None),
        Some(v) => match v.extract::<PyRef<'_, GrammarMatchers>>() {
            Ok(m) => Ok(Some(m.handle.clone())),
            Err(_) => Err(super::errors::InvalidArgumentError::new_err(
                "grammar: must be a ferrogen._core.GrammarMatchers",
            )),
        },
    }
}
