//! Bindings of [`crate::beam::BeamSearch`] and [`crate::beam::GroupBeamSearch`]:
//! convert, run with the GIL released, convert back.

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1,
    PyReadwriteArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::arrays::{contiguous, contiguous1, contiguous_mut, contiguous_mut1};
use super::errors::to_py;
use super::ints::{Int, Named};
use super::settings::GenerationSettings;
use crate::beam::{
    BeamCore, BeamSearch as CoreBeamSearch, BeamSettings, BeamTree, Finalized,
    GroupBeamSearch as CoreGroupBeamSearch, SampleSettings, NO_NODE,
};
use crate::logits::PipelineConfig;
use crate::rng::row_keys;

pub(super) type Pair<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

/// Shared constructor input: the prompts (row-major), the batch size, the processor settings
/// and the beam settings. Beam sampling with a seed keys every batch item's noise by the seed
/// and its unpadded prompt (`seed_prompts`); without one the caller passes torch-drawn noise.
pub(super) fn parse(
    input_ids: &PyReadonlyArray2<'_, i64>,
    settings: &GenerationSettings,
) -> PyResult<(Vec<i64>, usize, PipelineConfig, BeamSettings)> {
    let batch = input_ids.shape()[0];
    let flat = contiguous("input_ids", input_ids)?.to_vec();
    let core = &settings.inner;
    let mut beam = core.beam.clone();
    if core.pipeline.do_sample {
        let item_keys = core
            .seed
            .map(|seed| row_keys(seed, &settings.key_prompts(&flat, input_ids.shape()[1]), 1));
        beam.sample = Some(SampleSettings { item_keys });
    }
    Ok((flat, batch, core.pipeline.clone(), beam))
}

/// The hypotheses a beam search returns (`finalize`), as arrays shaped as transformers'.
#[pyclass(module = "ferrogen._core", frozen, get_all)]
pub struct BeamResult {
    /// int64 `[rows, width]`: prompt and hypothesis, padded after it ends.
    sequences: Py<PyArray2<i64>>,
    /// Length-normalised score of each returned hypothesis, float32 `[rows]`.
    scores: Py<PyArray1<f32>>,
    /// int64 `[rows, generated]`: the row each token extended, `-1` after the end.
    beam_indices: Py<PyArray2<i64>>,
    /// Why each hypothesis ended ("eos", "length", "stop", ...).
    reasons: Vec<&'static str>,
    /// uint8 `[rows]`: code of the stopping criterion that ended each hypothesis (0: none).
    stop_codes: Py<PyArray1<u8>>,
    /// int64 `[rows]`: last tree node of each hypothesis (`-1` for an empty one).
    nodes: Py<PyArray1<i64>>,
    /// Constrained search: whether each row satisfies every constraint; else `None`.
    constraints_satisfied: Option<Vec<bool>>,
}

pub(super) fn beam_result(
    py: Python<'_>,
    out: Finalized,
    constrained: bool,
) -> PyResult<BeamResult> {
    let sequences = PyArray1::from_vec(py, out.sequences).reshape([out.rows, out.width])?;
    let beam_indices =
        PyArray1::from_vec(py, out.beam_indices).reshape([out.rows, out.generated_width])?;
    Ok(BeamResult {
        sequences: sequences.unbind(),
        scores: PyArray1::from_vec(py, out.scores).unbind(),
        beam_indices: beam_indices.unbind(),
        reasons: out.reasons.iter().map(|r| r.as_str()).collect(),
        stop_codes: PyArray1::from_vec(py, out.reasons.iter().map(|r| r.stop_code()).collect())
            .unbind(),
        nodes: PyArray1::from_vec(py, out.nodes.iter().map(|&n| node_id(n)).collect()).unbind(),
        constraints_satisfied: constrained.then_some(out.constraints_satisfied),
    })
}

fn node_id(n: u32) -> i64 {
    if n == NO_NODE {
        -1
    } else {
        i64::from(n)
    }
}

pub(super) fn tree_dict<'py>(
    py: Python<'py>,
    tree: &BeamTree,
    surviving: &[u32],
) -> PyResult<Bound<'py, PyDict>> {
    let nodes = tree.nodes();
    let d = PyDict::new(py);
    let col_i64 = |f: &dyn Fn(&crate::beam::Node) -> i64| {
        PyArray1::from_vec(py, nodes.iter().map(f).collect())
    };
    d.set_item("parent", col_i64(&|n| node_id(n.parent)))?;
    d.set_item("token", col_i64(&|n| n.token))?;
    d.set_item("parent_row", col_i64(&|n| i64::from(n.parent_row)))?;
    d.set_item("batch", col_i64(&|n| i64::from(n.batch)))?;
    d.set_item("group", col_i64(&|n| i64::from(n.group)))?;
    d.set_item("step", col_i64(&|n| i64::from(n.step)))?;
    d.set_item(
        "score",
        PyArray1::from_vec(py, nodes.iter().map(|n| n.score).collect()),
    )?;
    d.set_item(
        "final_score",
        PyArray1::from_vec(py, nodes.iter().map(|n| n.final_score).collect()),
    )?;
    d.set_item(
        "end",
        PyList::new(py, nodes.iter().map(|n| n.end.as_str()))?,
    )?;
    d.set_item("kept", PyArray1::from_vec(py, tree.on_paths(surviving)))?;
    Ok(d)
}

pub(super) fn tokens_parents<'py>(py: Python<'py>, core: &impl BeamCore) -> Pair<'py> {
    (
        PyArray1::from_slice(py, core.next_tokens()),
        PyArray1::from_slice(py, core.parents()),
    )
}

/// The `#[pymethods]` of a beam-family binding: the methods every search shares through
/// [`BeamCore`] (written once here) followed by the search's own methods. `with process`: also
/// the `process(logits, log_softmax=True)` of the searches that score all rows at once (the
/// search's own `process` and `process_log_probs`).
macro_rules! beam_binding {
    ($name:ident, constrained: $constrained:expr, with process, { $($own:tt)* }) => {
        $crate::py::beam::beam_binding!($name, constrained: $constrained, {
            /// Log-softmax and the processors over `logits` (float32 `[rows, vocab]`) in place;
            /// `log_softmax=False`: the processors only, over scores already log-softmaxed.
            #[pyo3(signature = (logits, log_softmax=true))]
            fn process(
                &self,
                py: Python<'_>,
                mut logits: ::numpy::PyReadwriteArray2<'_, f32>,
                log_softmax: bool,
            ) -> PyResult<()> {
                use ::numpy::PyUntypedArrayMethods as _;
                let vocab = logits.shape()[1];
                let data = $crate::py::arrays::contiguous_mut("logits", &mut logits)?;
                let inner = &self.inner;
                py.detach(|| match log_softmax {
                    true => inner.process(data, vocab),
                    false => inner.process_log_probs(data, vocab),
                })
                .map_err($crate::py::errors::to_py)
            }

            $($own)*
        });
    };
    ($name:ident, constrained: $constrained:expr, { $($own:tt)* }) => {
        #[pymethods]
        impl $name {
            /// `(tokens, parent_rows)` of the last complete step.
            fn last_step<'py>(&self, py: Python<'py>) -> $crate::py::beam::Pair<'py> {
                $crate::py::beam::tokens_parents(py, &self.inner)
            }

            fn is_done(&self) -> bool {
                $crate::beam::BeamCore::is_done(&self.inner)
            }

            /// Ends the search: the stopping criterion with `code` (>= 1) fired for every row.
            // The default is not a literal: the text signature states it for `inspect` and stubtest.
            #[pyo3(
                signature = (code = $crate::py::ints::Int::from(1)),
                text_signature = "($self, code=1)"
            )]
            fn stop(&mut self, code: $crate::py::ints::Int<u8>) -> PyResult<()> {
                let code = $crate::py::ints::Named::arg(code, "code")?;
                $crate::beam::BeamCore::stop(&mut self.inner, code);
                Ok(())
            }

            /// Per batch item, the tokens newly agreed on by every hypothesis that can still win.
            fn take_settled<'py>(
                &mut self,
                py: Python<'py>,
            ) -> PyResult<Bound<'py, ::pyo3::types::PyList>> {
                let settled = $crate::beam::BeamCore::take_settled(&mut self.inner);
                ::pyo3::types::PyList::new(
                    py,
                    settled.into_iter().map(|v| ::numpy::PyArray1::from_vec(py, v)),
                )
            }

            /// The returned hypotheses (the first call closes the search).
            fn finalize(&mut self, py: Python<'_>) -> PyResult<$crate::py::beam::BeamResult> {
                let inner = &mut self.inner;
                let out = py.detach(|| $crate::beam::BeamCore::finalize(inner));
                $crate::py::beam::beam_result(py, out, $constrained)
            }

            /// Every kept hypothesis node as columns (parent, token, step, score, end, kept, ...).
            fn tree<'py>(
                &self,
                py: Python<'py>,
            ) -> PyResult<Bound<'py, ::pyo3::types::PyDict>> {
                let core = &self.inner;
                $crate::py::beam::tree_dict(
                    py,
                    $crate::beam::BeamCore::tree(core),
                    &$crate::beam::BeamCore::surviving_nodes(core),
                )
            }

            $($own)*
        }
    };
}
pub(super) use beam_binding;

/// Beam search and beam-search sampling state (transformers 5.x semantics).
#[pyclass(module = "ferrogen._core")]
pub struct BeamSearch {
    inner: CoreBeamSearch,
}

beam_binding!(BeamSearch, constrained: false, with process, {
    /// `input_ids`: int64 `[batch, prompt_len]` (not expanded); `settings`: this
    /// generation's settings (processors, beams, seed).
    #[new]
    fn new(input_ids: PyReadonlyArray2<'_, i64>, settings: &GenerationSettings) -> PyResult<Self> {
        let (prompts, batch, config, beam) = parse(&input_ids, settings)?;
        let inner = CoreBeamSearch::new(&prompts, batch, &config, beam).map_err(to_py)?;
        Ok(BeamSearch { inner })
    }

    /// Whether each step needs `noise` (`[batch, num_beams * vocab]` Exp(1) draws).
    #[getter]
    fn needs_noise(&self) -> bool {
        self.inner.needs_noise()
    }

    /// Draws the next `propose`/`step`'s noise from torch's CPU generator, as
    /// `torch.empty(batch, num_beams * vocab).exponential_()` would: `torch_rng_state` is
    /// `torch.get_rng_state().numpy()`, advanced in place past the draws (hand it back with
    /// `torch.set_rng_state`). Then call `propose`/`step` without `noise`. `vocab` is at most
    /// 2^32 / (batch × num_beams) (a ValueError naming it beyond): the draw's time is bounded.
    fn draw_torch_noise(
        &mut self,
        mut torch_rng_state: PyReadwriteArray1<'_, u8>,
        vocab: Int<usize>,
    ) -> PyResult<()> {
        let vocab = vocab.arg("vocab")?;
        let state = contiguous_mut1("torch_rng_state", &mut torch_rng_state)?;
        // Held on purpose (a few ms: the generator's words only, the transform comes later):
        // between the caller's `get_rng_state` and `set_rng_state` no other Python thread may
        // start a torch draw, whose words this draw would then repeat and whose state it would
        // overwrite.
        self.inner.draw_torch_noise(state, vocab).map_err(to_py)
    }

    /// Candidates per batch item and step (`K`).
    #[getter]
    fn candidates_per_item(&self) -> usize {
        self.inner.candidates_per_item()
    }

    /// The sampling warpers in place (no-op for beam search).
    fn warp(&self, py: Python<'_>, mut logits: PyReadwriteArray2<'_, f32>) -> PyResult<()> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &self.inner;
        py.detach(|| inner.warp(data, vocab)).map_err(to_py)
    }

    /// Proposes `K` continuations per batch item from processed scores; returns
    /// `(parent_rows, tokens)`, each `[batch * K]`. Follow with `commit`.
    #[pyo3(signature = (logits, noise=None))]
    fn propose<'py>(
        &mut self,
        py: Python<'py>,
        logits: PyReadonlyArray2<'py, f32>,
        noise: Option<PyReadonlyArray2<'py, f32>>,
    ) -> PyResult<Pair<'py>> {
        let vocab = logits.shape()[1];
        let data = contiguous("logits", &logits)?;
        let noise = noise.as_ref().map(|n| contiguous("noise", n)).transpose()?;
        let inner = &mut self.inner;
        let (parents, tokens): (Vec<i64>, Vec<i64>) = py
            .detach(|| {
                inner
                    .propose(data, vocab, noise)
                    .map(|c| c.iter().map(|c| (c.parent_row as i64, c.token)).unzip())
            })
            .map_err(to_py)?;
        Ok((
            PyArray1::from_vec(py, parents),
            PyArray1::from_vec(py, tokens),
        ))
    }

    /// Takes this step's candidates chosen elsewhere (on the device holding the logits):
    /// `scores` (float32) and `indices` (int64, `beam * vocab + token`), each `[batch, K]`,
    /// best first per item, over processed log-probabilities plus `running_scores`.
    /// Returns `(parent_rows, tokens)`, each `[batch * K]`. Follow with `commit`.
    fn propose_candidates<'py>(
        &mut self,
        py: Python<'py>,
        scores: PyReadonlyArray2<'py, f32>,
        indices: PyReadonlyArray2<'py, i64>,
        vocab: Int<usize>,
    ) -> PyResult<Pair<'py>> {
        let vocab = vocab.arg("vocab")?;
        let scores = contiguous("scores", &scores)?;
        let indices = contiguous("indices", &indices)?;
        let inner = &mut self.inner;
        let (parents, tokens): (Vec<i64>, Vec<i64>) = py
            .detach(|| {
                inner
                    .propose_candidates(scores, indices, vocab)
                    .map(|c| c.iter().map(|c| (c.parent_row as i64, c.token)).unzip())
            })
            .map_err(to_py)?;
        Ok((
            PyArray1::from_vec(py, parents),
            PyArray1::from_vec(py, tokens),
        ))
    }

    /// Accumulated score of every running beam, float32 `[batch * num_beams]`.
    #[getter]
    fn running_scores<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, self.inner.running_scores())
    }

    /// `(processors, warpers)`: names of the stages the core runs on the host each step.
    #[getter]
    fn stage_names(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        self.inner.stage_names()
    }

    /// Applies the proposed step; `hits` (uint8 `[batch * K]`) marks candidates a
    /// stopping criterion ended with its code (>= 1; 0 = not ended). Returns
    /// `(tokens, parent_rows)` of the running beams.
    #[pyo3(signature = (hits=None))]
    fn commit<'py>(
        &mut self,
        py: Python<'py>,
        hits: Option<PyReadonlyArray1<'py, u8>>,
    ) -> PyResult<Pair<'py>> {
        let hits = hits.as_ref().map(|h| contiguous1("hits", h)).transpose()?;
        let inner = &mut self.inner;
        py.detach(|| inner.commit(hits)).map_err(to_py)?;
        Ok(tokens_parents(py, &self.inner))
    }

    /// `process`, `warp`, `propose` and `commit` in one call; processed scores stay
    /// in `logits`. With `read_scores=False` the caller promises not to read them: plain
    /// beam search then leaves `logits` unprocessed (same result, less memory traffic).
    /// `log_softmax=False`: `logits` are already log-probabilities (the core's log-softmax
    /// is skipped; the processed scores stay in them whatever `read_scores` says).
    /// Returns `(tokens, parent_rows)`.
    #[pyo3(signature = (logits, noise=None, read_scores=true, log_softmax=true))]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray2<'py, f32>,
        noise: Option<PyReadonlyArray2<'py, f32>>,
        read_scores: bool,
        log_softmax: bool,
    ) -> PyResult<Pair<'py>> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let noise = noise.as_ref().map(|n| contiguous("noise", n)).transpose()?;
        let inner = &mut self.inner;
        py.detach(|| match (log_softmax, read_scores) {
            (false, _) => inner.step_log_probs(data, vocab, noise),
            (true, true) => inner.step(data, vocab, noise),
            (true, false) => inner.step_unread(data, vocab, noise),
        })
        .map_err(to_py)?;
        Ok(tokens_parents(py, &self.inner))
    }
});

/// Diverse (group) beam search state (transformers 4.55 semantics).
#[pyclass(module = "ferrogen._core")]
pub struct GroupBeamSearch {
    inner: CoreGroupBeamSearch,
}

beam_binding!(GroupBeamSearch, constrained: false, {
    #[new]
    fn new(input_ids: PyReadonlyArray2<'_, i64>, settings: &GenerationSettings) -> PyResult<Self> {
        let (prompts, batch, config, beam) = parse(&input_ids, settings)?;
        let inner = CoreGroupBeamSearch::new(&prompts, batch, &config, beam).map_err(to_py)?;
        Ok(GroupBeamSearch { inner })
    }

    /// Rows of group `g` in `[rows]`, as int64.
    fn group_rows<'py>(&self, py: Python<'py>, g: Int<usize>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let rows = self.inner.group_rows(g.arg("g")?).map_err(to_py)?;
        Ok(PyArray1::from_vec(py, rows.map(|r| r as i64).collect()))
    }

    /// Log-softmax, Hamming diversity and processors over group `g`'s rows in place;
    /// `log_softmax=False`: the rows are already log-softmaxed.
    #[pyo3(signature = (g, logits, log_softmax=true))]
    fn process_group(
        &mut self,
        py: Python<'_>,
        g: Int<usize>,
        mut logits: PyReadwriteArray2<'_, f32>,
        log_softmax: bool,
    ) -> PyResult<()> {
        let g = g.arg("g")?;
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &mut self.inner;
        py.detach(|| match log_softmax {
            true => inner.process_group(g, data, vocab),
            false => inner.process_group_log_probs(g, data, vocab),
        })
        .map_err(to_py)
    }

    /// Chooses group `g`'s next beams from its processed rows.
    fn select_group(
        &mut self,
        py: Python<'_>,
        g: Int<usize>,
        logits: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<()> {
        let g = g.arg("g")?;
        let vocab = logits.shape()[1];
        let data = contiguous("logits", &logits)?;
        let inner = &mut self.inner;
        py.detach(|| inner.select_group(g, data, vocab))
            .map_err(to_py)
    }

    /// Every group of one step in one call; returns `(tokens, parent_rows)`. With
    /// `read_scores=False` the caller promises not to read the processed scores: without
    /// processors `logits` is then left unprocessed (same result, less memory traffic).
    #[pyo3(signature = (logits, read_scores=true))]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray2<'py, f32>,
        read_scores: bool,
    ) -> PyResult<Pair<'py>> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &mut self.inner;
        py.detach(|| {
            if read_scores {
                inner.step(data, vocab)
            } else {
                inner.step_unread(data, vocab)
            }
        })
        .map_err(to_py)?;
        Ok(tokens_parents(py, &self.inner))
    }
});
