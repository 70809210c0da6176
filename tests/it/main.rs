//! Integration tests: one binary, one module per area.
//!
//! Built with `--no-default-features` (the device build, see `cross/check.sh`), only the
//! device checks remain: they need no export code and read what the x86_64 run wrote.

#[cfg(feature = "workstation")]
mod build;
#[cfg(feature = "workstation")]
mod daemon;
#[cfg(feature = "workstation")]
mod datasets;
#[cfg(feature = "workstation")]
mod default_model;
mod device;
mod golden;
#[cfg(feature = "workstation")]
mod hand_read;
#[cfg(feature = "workstation")]
mod interop;
#[cfg(feature = "train")]
mod train;
#[cfg(feature = "cuda")]
mod train_cuda;
mod util;
