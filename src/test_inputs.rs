//! The tests' offline inputs: `../shared` beside the checkout (the real IMDB archive, MiniLM,
//! the fixtures), read in place. The unit tests use this module, and `tests/it/util.rs`
//! includes the same file (`#[path]`), since an integration test cannot import a `cfg(test)`
//! module of the library. A test whose input is missing fails, saying what is
//! missing and where it comes from, instead of passing without having run.

use std::path::{Path, PathBuf};

/// `../shared/<relative>`; panics naming the path when it is absent.
#[track_caller]
pub(crate) fn shared(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the checkout has a parent directory")
        .join("shared")
        .join(relative);
    assert!(
        path.exists(),
        "missing {} (../shared beside the checkout holds the offline inputs: IMDB archive, \
         MiniLM, fixtures; see README)",
        path.display()
    );
    path
}
