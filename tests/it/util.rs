//! Shared helpers: paths to ../shared, a once-built test model, float comparisons.

#[cfg(feature = "workstation")]
use std::path::{Path, PathBuf};
#[cfg(feature = "workstation")]
use std::{process::Command, sync::OnceLock};

#[cfg(feature = "workstation")]
use sentimq::export::{self, BuildOptions};
#[cfg(feature = "workstation")]
use sentimq::tokenizer::Truncation;

#[path = "../../src/test_inputs.rs"]
mod test_inputs;

/// `../shared/<relative>`, the unit tests' helper: panics naming the path when it is absent.
pub(crate) use test_inputs::shared;

/// The real pretrained BERT used as TinyBERT's stand-in.
#[cfg(feature = "workstation")]
#[track_caller]
pub fn minilm() -> PathBuf {
    shared("models/all-MiniLM-L6-v2")
}

/// A MiniLM model directory with a random head, built once per test binary.
#[cfg(feature = "workstation")]
pub fn minilm_random_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let base = minilm();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("minilm-random");
        let mut options = BuildOptions::new(base.to_string_lossy(), &out);
        options.random_head = true;
        options.truncation = Truncation::head_tail(128, 64);
        export::build(&options).expect("building the MiniLM test model");
        out
    })
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

/// Runs `tests/python/<script>` with `args` and returns its stdout; panics with the script's
/// stderr when it fails, and says what to install (`needs`) when python3 cannot start.
#[cfg(feature = "workstation")]
pub fn python(script: &str, args: &[&str], needs: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "running python3 {script}: {error} \
                 (install {needs}: pip install -r tests/python/requirements.txt)"
            )
        });
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
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
