//! Integration tests: one binary, one module per area.

mod build;
mod golden;
mod interop;
mod util;
