//! The strategy cores: one decoding state per strategy family, each driven step by step by
//! the Python loop (the model runs there) and owning everything that touches logits.
//!
//! - [`decode`]: greedy and sampling, rows decoded independently.
//! - [`contrastive`]: contrastive search (candidates scored against the context's hidden states).
//! - [`dola`]: DoLa's contrast of the final layer against an earlier one (a logits transform).
//! - [`assisted`]: assisted decoding and prompt lookup (drafts verified in one forward).
//! - [`beam`]: the beam family: beam search and beam sampling, diverse group beam search
//!   (with its Hamming diversity), constrained beam search, behind the `BeamCore` trait.

pub mod assisted;
pub mod beam;
pub mod contrastive;
pub mod decode;
pub mod dola;
