//! The binding of [`crate::row_status::RowStatus`], written once for every core that has one
//! (greedy/sampling, contrastive and assisted decoding).

/// The `#[pymethods]` of a row-decoding binding: the row-status methods (written once here)
/// followed by the core's own methods.
macro_rules! row_status_binding {
    ($name:ident, { $($own:tt)* }) => {
        #[pymethods]
        impl $name {
            /// Marks rows as finished (bool `[rows]`), e.g. from a stopping criterion.
            fn finish_rows(&mut self, done: ::numpy::PyReadonlyArray1<'_, bool>) -> PyResult<()> {
                let done = $crate::py::arrays::contiguous1("done", &done)?;
                $crate::row_status::HasRowStatus::row_status_mut(&mut self.inner)
                    .finish_rows(done)
                    .map_err($crate::py::errors::to_py)
            }

            /// Bool `[rows]`: rows still generating (not ended by EOS or a criterion).
            fn unfinished<'py>(&self, py: Python<'py>) -> Bound<'py, ::numpy::PyArray1<bool>> {
                let status = $crate::row_status::HasRowStatus::row_status(&self.inner);
                ::numpy::PyArray1::from_slice(py, status.unfinished())
            }

            fn all_finished(&self) -> bool {
                $crate::row_status::HasRowStatus::row_status(&self.inner).all_finished()
            }

            $($own)*
        }
    };
}
pub(super) use row_status_binding;
