//! CPU kernels of sentimq's training step, with their backward passes: linear layers on
//! OpenBLAS's `sgemm`, multi-head attention as one op, LayerNorm, exact GELU and seeded
//! dropout. Plain `f32` slices in and out; `sentimq::train` wraps them as candle custom ops.
//!
//! Work is split across rayon's global pool (the pool candle uses) in blocks of a fixed size,
//! so results do not depend on the number of threads; BLAS runs single-threaded inside each
//! block. Built at `opt-level = 3` in every profile (the workspace's `Cargo.toml`).

#![warn(missing_docs)]

pub mod activation;
mod allocator;
pub mod attention;
mod blas;
pub mod dropout;
pub mod layer;
pub mod linear;
pub mod lora;
mod math;
pub mod norm;
mod simd;

pub use allocator::retain_freed_buffers;

/// Threads the kernels split work across (rayon's global pool, as candle's CPU ops).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
