//! The grammar as a pipeline stage, at transformers' `PrefixConstrainedLogitsProcessor`
//! position. The strategies' cores own the history; the stage reads it to keep the
//! matchers in step, and follows beam reorders.

use std::sync::{Arc, Mutex, MutexGuard};

use super::RowGrammars;
use crate::logits::{LogitsMut, LogitsProcessor, StepContext};

/// Shared handle to one generation's matchers: the pipeline stage writes the masks, the
/// caller (Python) reads which rows died. Cloning shares the matchers. A handle may see
/// only some rows (one beam group's): its logits row `i` is matcher `rows[i]`.
#[derive(Clone)]
pub struct GrammarHandle {
    matchers: Arc<Mutex<RowGrammars>>,
    rows: Option<Arc<Vec<usize>>>,
}

impl std::fmt::Debug for GrammarHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarHandle")
            .field("rows", &self.lock().n_rows())
            .finish()
    }
}

impl GrammarHandle {
    pub fn new(rows: RowGrammars) -> Self {
        GrammarHandle {
            matchers: Arc::new(Mutex::new(rows)),
            rows: None,
        }
    }

    /// The same matchers, seen through `rows` (logits row `i` is matcher `rows[i]`).
    pub fn for_rows(&self, rows: Vec<usize>) -> Self {
        GrammarHandle {
            matchers: self.matchers.clone(),
            rows: Some(Arc::new(rows)),
        }
    }

    /// The matchers (a panic elsewhere cannot leave them half-updated in a way that
    /// matters more than a wrong mask, so a poisoned lock is taken over).
    pub fn lock(&self) -> MutexGuard<'_, RowGrammars> {
        self.matchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pipeline stage over this handle's rows.
    pub fn stage(&self) -> GrammarStage {
        GrammarStage {
            handle: self.clone(),
        }
    }
}

/// Writes every row's grammar mask (-inf on disallowed tokens) into the logits.
pub struct GrammarStage {
    handle: GrammarHandle,
}

impl LogitsProcessor for GrammarStage {
    fn process(&self, ctx: &StepContext<'_>, logits: &mut LogitsMut<'_>) {
        let vocab = logits.vocab();
        self.handle
            .lock()
            .apply(ctx.history, logits.as_mut_slice(), vocab, self.rows());
    }

    fn reorder(&self, parents: &[usize]) {
        self.handle.lock().reorder(parents, self.rows());
    }
}

impl GrammarStage {
    fn rows(&self) -> Option<&[usize]> {
        self.handle.rows.as_deref().map(Vec::as_slice)
    }
}
