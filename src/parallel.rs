//! When rows are worth spreading over rayon's thread pool.

/// Elements of work below which rows run on the calling thread. Waking the pool is a
/// scheduler round trip: tens of microseconds on a quiet machine, hundreds on a busy or
/// virtual one where torch's OpenMP threads are still spinning after the forward pass.
/// One step at batch 4 × 50257 (about 200k elements) ran 2-3× faster serially on a 2-core
/// box; at 1M elements and more the pool wins on 16 cores.
pub const PARALLEL_MIN_ELEMS: usize = 1 << 20;

/// True when `rows` rows holding `elems` elements of work in all should run in parallel.
pub fn worth_parallel(rows: usize, elems: usize) -> bool {
    rows >= 2 && elems >= min_elems() && rayon::current_num_threads() > 1
}

fn min_elems() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("FERROGEN_PARALLEL_MIN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PARALLEL_MIN_ELEMS)
    })
}

/// What one row's grammar mask costs, in elements of processor work: llguidance walks its
/// token trie in tens of microseconds per row (about 30 µs at V = 4096, ~50 µs at 128k),
/// as long as a pass of the fused processors over a quarter-million logits. Only rows of
/// different grammars can run at once (the rows of one grammar share its lexer's mutex:
/// `grammar::matchers`), so with this weight they go to the pool from about four rows on.
pub const GRAMMAR_MASK_ELEMS: usize = 1 << 18;
