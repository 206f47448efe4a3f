//! Bindings of [`crate::beam::BeamSearch`] and [`crate::beam::GroupBeamSearch`]:
//! convert, run with the GIL released, convert back.

use numpy::{
    PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::arrays::{contiguous, contiguous1, contiguous_mut};
use super::errors::{to_py, InvalidArgumentError};
use super::settings::{check_vocab, pipeline_config, seed};
use crate::beam::{
    BeamSearch as CoreBeamSearch, BeamSettings, BeamTree, EarlyStopping, Finalized,
    GroupBeamSearch as CoreGroupBeamSearch, SampleSettings, NO_NODE,
};
use crate::logits::PipelineConfig;
use crate::rng::row_keys;

pub(super) type Pair<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

fn get<'py, T: FromPyObjectOwned<'py>>(
    d: &Bound<'py, PyDict>,
    key: &'static str,
    default: T,
    what: &str,
) -> PyResult<T> {
    match d.get_item(key)? {
        None => Ok(default),
        Some(v) if v.is_none() => Ok(default),
        Some(v) => v
            .extract::<T>()
            .map_err(|_| InvalidArgumentError::new_err(format!("{key}: must be {what}"))),
    }
}

/// The beam fields (`beam`) plus, from `settings`, the EOS ids and the sampling seed:
/// with a seed every batch item gets its own [`crate::rng`] key (from its unpadded
/// prompt, `seed_prompts`), else the caller passes torch-drawn noise each step.
fn beam_settings(
    settings: &Bound<'_, PyDict>,
    beam: &Bound<'_, PyDict>,
    prompts: &[Vec<i64>],
) -> PyResult<BeamSettings> {
    let early = match beam.get_item("early_stopping")? {
        None => EarlyStopping::Heuristic,
        Some(v) if v.is_instance_of::<pyo3::types::PyBool>() => {
            if v.extract::<bool>()? {
                EarlyStopping::AllFinished
            } else {
                EarlyStopping::Heuristic
            }
        }
        Some(v) => EarlyStopping::parse(&v.extract::<String>().map_err(|_| {
            InvalidArgumentError::new_err("early_stopping: must be True, False or \"never\"")
        })?)
        .map_err(to_py)?,
    };
    let sample = if get(settings, "do_sample", false, "a bool")? {
        let item_keys = seed(settings)?.map(|(seed, seed_prompts)| {
            let rows = seed_prompts.unwrap_or_else(|| prompts.to_vec());
            row_keys(seed, &rows, 1)
        });
        Some(SampleSettings { item_keys })
    } else {
        None
    };
    Ok(BeamSettings {
        num_beams: get(beam, "num_beams", 1usize, "a positive int")?,
        num_beam_groups: get(beam, "num_beam_groups", 1usize, "a positive int")?,
        diversity_penalty: get(beam, "diversity_penalty", 0.0f32, "a float")?,
        length_penalty: get(beam, "length_penalty", 1.0f64, "a float")?,
        early_stopping: early,
        max_length: get(beam, "max_length", 20usize, "a positive int")?,
        num_return_sequences: get(beam, "num_return_sequences", 1usize, "a positive int")?,
        eos_token_ids: pipeline_config(settings)?.eos_token_ids,
        pad_token_id: get(beam, "pad_token_id", 0i64, "an int")?,
        sample,
    })
}

/// Shared constructor input: prompts, processor config, beam settings.
pub(super) fn parse<'py>(
    input_ids: &PyReadonlyArray2<'py, i64>,
    settings: &Bound<'py, PyDict>,
    beam: &Bound<'py, PyDict>,
) -> PyResult<(Vec<i64>, usize, PipelineConfig, BeamSettings)> {
    let batch = input_ids.shape()[0];
    let flat = contiguous("input_ids", input_ids)?.to_vec();
    let width = input_ids.shape()[1];
    let rows: Vec<Vec<i64>> = flat.chunks(width.max(1)).map(<[i64]>::to_vec).collect();
    let config = pipeline_config(settings)?;
    check_vocab(settings, &config)?;
    Ok((flat, batch, config, beam_settings(settings, beam, &rows)?))
}

pub(super) fn finalized_dict<'py>(py: Python<'py>, out: Finalized) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let seq = PyArray1::from_vec(py, out.sequences).reshape([out.rows, out.width])?;
    let idx = PyArray1::from_vec(py, out.beam_indices).reshape([out.rows, out.generated_width])?;
    d.set_item("sequences", seq)?;
    d.set_item("beam_indices", idx)?;
    d.set_item("scores", PyArray1::from_vec(py, out.scores))?;
    d.set_item(
        "reasons",
        out.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "stop_codes",
        PyArray1::from_vec(py, out.reasons.iter().map(|r| r.stop_code()).collect()),
    )?;
    d.set_item(
        "nodes",
        PyArray1::from_vec(py, out.nodes.iter().map(|&n| node_id(n)).collect()),
    )?;
    Ok(d)
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

pub(super) fn tokens_parents<'py>(py: Python<'py>, tokens: &[i64], parents: &[i64]) -> Pair<'py> {
    (
        PyArray1::from_slice(py, tokens),
        PyArray1::from_slice(py, parents),
    )
}

pub(super) fn settled_list<'py>(
    py: Python<'py>,
    settled: Vec<Vec<i64>>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, settled.into_iter().map(|v| PyArray1::from_vec(py, v)))
}

/// Beam search and beam-search sampling state (transformers 5.x semantics).
#[pyclass(module = "ferrogen._core")]
pub struct BeamSearch {
    inner: CoreBeamSearch,
}

#[pymethods]
impl BeamSearch {
    /// `input_ids`: int64 `[batch, prompt_len]` (not expanded); `settings`: processor
    /// fields (as for `Decoder`, plus `seed` / `seed_prompts`); `beam`: num_beams,
    /// num_beam_groups, diversity_penalty, length_penalty, early_stopping, max_length,
    /// num_return_sequences, pad_token_id.
    #[new]
    fn new(
        input_ids: PyReadonlyArray2<'_, i64>,
        settings: &Bound<'_, PyDict>,
        beam: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        let (prompts, batch, config, beam) = parse(&input_ids, settings, beam)?;
        let inner = CoreBeamSearch::new(&prompts, batch, &config, beam).map_err(to_py)?;
        Ok(BeamSearch { inner })
    }

    /// Whether each step needs `noise` (`[batch, num_beams * vocab]` Exp(1) draws).
    #[getter]
    fn needs_noise(&self) -> bool {
        self.inner.needs_noise()
    }

    /// Candidates per batch item and step (`K`).
    #[getter]
    fn candidates_per_item(&self) -> usize {
        self.inner.candidates_per_item()
    }

    /// Log-softmax and the processors over `logits` (float32 `[rows, vocab]`) in place.
    fn process(&self, py: Python<'_>, mut logits: PyReadwriteArray2<'_, f32>) -> PyResult<()> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &self.inner;
        py.detach(|| inner.process(data, vocab)).map_err(to_py)
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
        vocab: usize,
    ) -> PyResult<Pair<'py>> {
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
        Ok(tokens_parents(
            py,
            self.inner.next_tokens(),
            self.inner.parents(),
        ))
    }

    /// `process`, `warp`, `propose` and `commit` in one call; processed scores stay
    /// in `logits`. With `read_scores=False` the caller promises not to read them: plain
    /// beam search then leaves `logits` unprocessed (same result, less memory traffic).
    /// Returns `(tokens, parent_rows)`.
    #[pyo3(signature = (logits, noise=None, read_scores=true))]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        mut logits: PyReadwriteArray2<'py, f32>,
        noise: Option<PyReadonlyArray2<'py, f32>>,
        read_scores: bool,
    ) -> PyResult<Pair<'py>> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let noise = noise.as_ref().map(|n| contiguous("noise", n)).transpose()?;
        let inner = &mut self.inner;
        py.detach(|| {
            if read_scores {
                inner.step(data, vocab, noise)
            } else {
                inner.step_unread(data, vocab, noise)
            }
        })
        .map_err(to_py)?;
        Ok(tokens_parents(
            py,
            self.inner.next_tokens(),
            self.inner.parents(),
        ))
    }

    fn is_done(&self) -> bool {
        self.inner.is_done()
    }

    /// Per batch item, the tokens newly agreed on by every hypothesis that can still win.
    fn take_settled<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let settled = self.inner.take_settled();
        settled_list(py, settled)
    }

    /// `sequences`, `scores`, `beam_indices`, `reasons` and `nodes` of the returned hypotheses.
    fn finalize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = &self.inner;
        let out = py.detach(|| inner.finalize());
        finalized_dict(py, out)
    }

    /// Every kept hypothesis node as columns (parent, token, step, score, end, kept, ...).
    fn tree<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        tree_dict(py, self.inner.tree(), &self.inner.surviving_nodes())
    }
}

/// Diverse (group) beam search state (transformers 4.55 semantics).
#[pyclass(module = "ferrogen._core")]
pub struct GroupBeamSearch {
    inner: CoreGroupBeamSearch,
}

#[pymethods]
impl GroupBeamSearch {
    #[new]
    fn new(
        input_ids: PyReadonlyArray2<'_, i64>,
        settings: &Bound<'_, PyDict>,
        beam: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        let (prompts, batch, config, beam) = parse(&input_ids, settings, beam)?;
        let inner = CoreGroupBeamSearch::new(&prompts, batch, &config, beam).map_err(to_py)?;
        Ok(GroupBeamSearch { inner })
    }

    /// Rows of group `g` in `[rows]`, as int64.
    fn group_rows<'py>(&self, py: Python<'py>, g: usize) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let rows = self.inner.group_rows(g).map_err(to_py)?;
        Ok(PyArray1::from_vec(py, rows.map(|r| r as i64).collect()))
    }

    /// Log-softmax, Hamming diversity and processors over group `g`'s rows in place.
    fn process_group(
        &mut self,
        py: Python<'_>,
        g: usize,
        mut logits: PyReadwriteArray2<'_, f32>,
    ) -> PyResult<()> {
        let vocab = logits.shape()[1];
        let data = contiguous_mut("logits", &mut logits)?;
        let inner = &mut self.inner;
        py.detach(|| inner.process_group(g, data, vocab))
            .map_err(to_py)
    }

    /// Chooses group `g`'s next beams from its processed rows.
    fn select_group(
        &mut self,
        py: Python<'_>,
        g: usize,
        logits: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<()> {
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
        Ok(tokens_parents(
            py,
            self.inner.next_tokens(),
            self.inner.parents(),
        ))
    }

    /// `(tokens, parent_rows)` of the last complete step.
    fn last_step<'py>(&self, py: Python<'py>) -> Pair<'py> {
        tokens_parents(py, self.inner.next_tokens(), self.inner.parents())
    }

    fn is_done(&self) -> bool {
        self.inner.is_done()
    }

    /// Ends the search: the stopping criterion with `code` (>= 1) fired for every row.
    #[pyo3(signature = (code=1))]
    fn stop(&mut self, code: u8) {
        self.inner.stop(code)
    }

    fn take_settled<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let settled = self.inner.take_settled();
        settled_list(py, settled)
    }

    fn finalize<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = &mut self.inner;
        let out = py.detach(|| inner.finalize());
        finalized_dict(py, out)
    }

    fn tree<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        tree_dict(py, self.inner.tree(), &self.inner.surviving_nodes())
    }
}
