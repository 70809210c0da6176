//! Integration tests: one binary, one module per area.

mod build;
mod daemon;
mod golden;
mod interop;
#[cfg(feature = "train")]
mod train;
mod util;
