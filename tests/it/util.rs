//! Shared helpers: paths to ../shared, a once-built test model, float comparisons.

use std::path::{Path, PathBuf};
#[cfg(feature = "workstation")]
use std::{process::Command, sync::OnceLock};

#[cfg(feature = "workstation")]
use sentimq::export::{self, BuildOptions};
#[cfg(feature = "workstation")]
use sentimq::tokenizer::Truncation;

/// A path under `../shared`, or `None` (with the reason printed) when it is absent.
pub fn shared(relative: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {} is absent", path.display());
        None
    }
}

/// The real pretrained BERT used as TinyBERT's stand-in.
#[cfg(feature = "workstation")]
pub fn minilm() -> Option<PathBuf> {
    shared("models/all-MiniLM-L6-v2")
}

/// A MiniLM model directory with a random head, built once per test binary.
#[cfg(feature = "workstation")]
pub fn minilm_random_model() -> Option<&'static Path> {
    static MODEL: OnceLock<Option<PathBuf>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let base = minilm()?;
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("minilm-random");
            let mut options = BuildOptions::new(base.to_string_lossy(), &out);
            options.random_head = true;
            options.truncation = Truncation::head_tail(128, 64);
            export::build(&options).expect("building the MiniLM test model");
            Some(out)
        })
        .as_deref()
}

/// Runs the `sentimq` binary; returns (status success, stdout, stderr).
#[cfg(feature = "workstation")]
pub fn sentimq(args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    use std::io::Write;
    let mut command = Command::new(env!("CARGO_BIN_EXE_sentimq"));
    command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawning sentimq");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("writing stdin");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("waiting for sentimq");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        !stderr.contains("panicked"),
        "sentimq {args:?} panicked:\n{stderr}"
    );
    (output.status.success(), stdout, stderr)
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` element-wise, naming the first bad index.
pub fn assert_close(found: &[f32], expected: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: lengths differ");
    let bad: Vec<usize> = (0..found.len())
        .filter(|&i| {
            let diff = (found[i] - expected[i]).abs();
            diff.is_nan() || diff > atol + rtol * expected[i].abs()
        })
        .collect();
    if let Some(&i) = bad.first() {
        panic!(
            "{what}: {} of {} values off; first at {i}: found {} expected {} (atol {atol}, rtol {rtol})",
            bad.len(),
            found.len(),
            found[i],
            expected[i]
        );
    }
}
