//! Bindings of the constraint core and [`crate::beam::ConstrainedBeamSearch`]:
//! convert, run with the GIL released, convert back.

use numpy::{PyReadonlyArray2, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::arrays::{contiguous, contiguous_mut};
use super::beam::{beam_binding, parse, tokens_parents, Pair};
use super::errors::{to_py, InvalidArgumentError};
use super::ints::{Int, Named};
use super::settings::GenerationSettings;
use crate::beam::ConstrainedBeamSearch as CoreSearch;
use crate::constraints::{ConstraintSet, ConstraintSpec, ConstraintState};
use crate::error::CoreError;

/// The argument name errors carry: the config field the constraints came from.
fn field_name(field: &str) -> &'static str {
    match field {
        "constraints" => "constraints",
        "force_words" => "force_words",
        _ => "force_words_ids",
    }
}

/// `specs`: a list whose items are a phrase (`list[int]`) or alternatives (`list[list[int]]`).
fn constraint_set(
    specs: &Bound<'_, PyList>,
    vocab: Option<usize>,
    field: &str,
) -> PyResult<ConstraintSet> {
    let name = field_name(field);
    let mut out = Vec::with_capacity(specs.len());
    for (i, item) in specs.iter().enumerate() {
        let spec = if let Ok(phrase) = item.extract::<Vec<Int<i64>>>() {
            ConstraintSpec::Phrase(phrase.arg(name)?)
        } else if let Ok(alts) = item.extract::<Vec<Vec<Int<i64>>>>() {
            ConstraintSpec::OneOf(alts.arg(name)?)
        } else {
            return Err(InvalidArgumentError::new_err(format!(
                "{name}: constraint {i} must be a list of token ids or a list of such lists"
            )));
        };
        out.push(spec);
    }
    ConstraintSet::new(out, vocab).map_err(|e| {
        to_py(match e {
            CoreError::InvalidArgument { message, .. } => {
                CoreError::InvalidArgument { name, message }
            }
            CoreError::TokenOutOfVocab { token, vocab, .. } => {
                CoreError::TokenOutOfVocab { name, token, vocab }
            }
            other => other,
        })
    })
}

/// Progress through a list of constraints, token by token (the state one hypothesis keeps).
#[pyclass(module = "ferrogen._core")]
pub struct ConstraintTracker {
    set: ConstraintSet,
    state: ConstraintState,
}

#[pymethods]
impl ConstraintTracker {
    /// Validates `specs` (errors name `field`); `vocab` bounds the token ids when given.
    #[new]
    #[pyo3(signature = (specs, vocab=None, field="force_words_ids"))]
    fn new(specs: &Bound<'_, PyList>, vocab: Option<Int<usize>>, field: &str) -> PyResult<Self> {
        let set = constraint_set(specs, vocab.arg("vocab")?, field)?;
        let state = set.initial_state();
        Ok(ConstraintTracker { set, state })
    }

    /// Reads one token.
    fn add(&mut self, token: Int<i64>) -> PyResult<()> {
        self.state.add(&self.set, token.arg("token")?);
        Ok(())
    }

    /// Starts over, then reads `tokens` (if given).
    #[pyo3(signature = (tokens=None))]
    fn reset(&mut self, tokens: Option<Vec<Int<i64>>>) -> PyResult<()> {
        let tokens = tokens.arg("tokens")?;
        self.state = ConstraintState::from_tokens(&self.set, tokens.as_deref().unwrap_or(&[]));
        Ok(())
    }

    /// Tokens that make progress now (empty once every constraint is satisfied).
    fn advance(&self) -> Vec<i64> {
        let mut out = Vec::new();
        self.state.advance_tokens(&self.set, &mut out);
        out
    }

    fn does_advance(&self, token: Int<i64>) -> PyResult<bool> {
        Ok(self.advance().contains(&token.arg("token")?))
    }

    fn is_complete(&self) -> bool {
        self.state.is_complete()
    }

    /// Number of constraints satisfied so far.
    fn completed_count(&self) -> usize {
        self.state.completed_count()
    }

    /// Progress measure that groups hypotheses in constrained beam search.
    fn bank(&self) -> usize {
        self.state.bank(&self.set)
    }

    /// The bank of a state that satisfies every constraint.
    #[getter]
    fn max_bank(&self) -> usize {
        self.set.max_bank()
    }
}

/// Constrained beam search state (transformers 4.55 semantics, fixed constraint tracking).
#[pyclass(module = "ferrogen._core")]
pub struct ConstrainedBeamSearch {
    inner: CoreSearch,
}

beam_binding!(ConstrainedBeamSearch, constrained: true, with process, {
    /// `input_ids`: int64 `[batch, prompt_len]` (not expanded); `settings` as for
    /// `BeamSearch`; `specs` as for `ConstraintTracker` (checked against the settings'
    /// vocabulary size); `prompt_mask`: bool, `False` at padding.
    #[new]
    #[pyo3(signature = (input_ids, settings, specs, prompt_mask=None))]
    fn new(
        input_ids: PyReadonlyArray2<'_, i64>,
        settings: &GenerationSettings,
        specs: &Bound<'_, PyList>,
        prompt_mask: Option<PyReadonlyArray2<'_, bool>>,
    ) -> PyResult<Self> {
        let vocab = settings.inner.vocab_size;
        let (prompts, batch, config, beam) = parse(&input_ids, settings)?;
        let mask = prompt_mask
            .as_ref()
            .map(|m| contiguous("prompt_mask", m))
            .transpose()?;
        let set = constraint_set(specs, vocab, "force_words_ids")?;
        let inner = CoreSearch::new(&prompts, batch, &config, beam, set, mask).map_err(to_py)?;
        Ok(ConstrainedBeamSearch { inner })
    }

    /// Chooses the next beams from processed scores; returns `(tokens, parent_rows)`.
    fn select<'py>(
        &mut self,
        py: Python<'py>,
        logits: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Pair<'py>> {
        let vocab = logits.shape()[1];
        let data = contiguous("logits", &logits)?;
        let inner = &mut self.inner;
        py.detach(|| inner.select(data, vocab)).map_err(to_py)?;
        Ok(tokens_parents(py, &self.inner))
    }

    /// `process` then `select`; processed scores stay in `logits`. Returns `(tokens, parent_rows)`.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray2<'py, f32>,
    ) -> PyResult<Pair<'py>> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &mut self.inner;
        py.detach(|| inner.step(data, vocab)).map_err(to_py)?;
        Ok(tokens_parents(py, &self.inner))
    }

    /// Bool `[batch * num_beams]`: running beams that satisfy every constraint.
    fn beams_satisfied(&self) -> Vec<bool> {
        self.inner
            .states()
            .iter()
            .map(ConstraintState::is_complete)
            .collect()
    }
});
