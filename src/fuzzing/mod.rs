//! Fuzz targets: everything that parses bytes from outside, driven the way the daemon and the
//! workstation drive it, with the invariants each must keep. Not a public API.
//!
//! Each target takes arbitrary bytes and panics only when an invariant breaks (a panic inside
//! the code under test counts too). `fuzz/` runs them under libFuzzer with coverage
//! (`scripts/fuzz.sh`); the unit tests replay the committed corpus and a fixed number of
//! mutations of it (`tests.rs`), so CI exercises them on every run without a nightly compiler.
//!
//! Inputs that need several fields split them at [`SEPARATOR`] (`0xFF`, a byte that never occurs
//! in UTF-8), after a first byte of flags where a target has options.

mod files;
mod mqtt;
#[cfg(test)]
mod tests;
mod text;

pub use files::{checkpoint_file, config_file, model_manifest};
pub use mqtt::mqtt_input;
pub use text::tokenizer_text;

/// Splits fields of a fuzz input: never part of UTF-8 text.
pub const SEPARATOR: u8 = 0xFF;

/// A fuzz target: arbitrary bytes in, a panic only when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every fuzz target, by the name of its `fuzz/fuzz_targets/` file and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("mqtt_input", mqtt_input),
    ("config_file", config_file),
    ("model_manifest", model_manifest),
    ("tokenizer_text", tokenizer_text),
    ("checkpoint_file", checkpoint_file),
];

/// The first byte (flags) and the rest of `data`; no flags byte means all flags clear.
fn flags(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&flags, rest)) => (flags, rest),
        None => (0, data),
    }
}

/// The first `count - 1` [`SEPARATOR`]-delimited fields of `data` and the rest (which may hold
/// separators); missing fields are empty.
fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[data.len()..]; N];
    let mut parts = data.splitn(N, |&b| b == SEPARATOR);
    for slot in &mut out {
        match parts.next() {
            Some(part) => *slot = part,
            None => break,
        }
    }
    out
}

/// The shipped model directory, which the targets that need a real tokenizer read.
fn shipped_model() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imdb-minilm")
}
