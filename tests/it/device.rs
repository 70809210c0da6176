//! Device parity: the engine built for ARM (run under qemu by `cross/check.sh`) reproduces the
//! golden hidden states and classifies 50 real IMDB reviews as x86_64 does.
//!
//! The x86_64 run (`cargo test`, workstation feature) writes what the devices need into
//! [`reference_dir`]: hidden-state graphs of the TinyBERT-format fixture and MiniLM, the 50
//! texts, and its own probabilities. The device build of this test binary
//! (`--no-default-features`, no export code) reads them back and compares.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use sentimq::classifier::Classifier;

/// Where the x86_64 run leaves the reference: `$SENTIMQ_DEVICE_CHECK_DIR`, else
/// `<target dir>/tmp/device-check`.
pub fn reference_dir() -> PathBuf {
    match std::env::var_os("SENTIMQ_DEVICE_CHECK_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("device-check"),
    }
}

/// The model both sides classify with: the shipped default model, in this checkout (the
/// reference's `model` records where the x86_64 run found it).
fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imdb-minilm")
}

/// Tolerance on probabilities between architectures: `$SENTIMQ_DEVICE_TOLERANCE` (set per
/// target by `cross/targets.sh`), else 1e-3 (different SIMD kernels and summation order; the
/// int8 products themselves are exact).
pub fn tolerance() -> f32 {
    std::env::var("SENTIMQ_DEVICE_TOLERANCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1e-3)
}

#[derive(Serialize, Deserialize)]
struct Reference {
    /// `(golden-bert.json model name, hidden-state graph file in the reference dir)`.
    hidden_state_graphs: Vec<(String, String)>,
    model: PathBuf,
    texts: Vec<String>,
    labels: Vec<String>,
    probabilities: Vec<Vec<f32>>,
}

/// Classifies `texts` one by one: `(label, probabilities)` per text.
fn classify_all(model: &Path, texts: &[String]) -> (Vec<String>, Vec<Vec<f32>>) {
    let classifier = Classifier::load(model, None).expect("loading the default model");
    texts
        .iter()
        .map(|text| {
            let verdict = classifier
                .classify(&[text.as_str()])
                .expect("classifying")
                .remove(0);
            let probabilities = verdict.scores.iter().map(|(_, p)| *p).collect();
            (verdict.label, probabilities)
        })
        .unzip()
}

#[cfg(feature = "workstation")]
#[test]
fn writes_reference_for_device_runs() {
    use sentimq::data::{self, Split};

    use crate::golden::{check_engine, hidden_state_graph};
    use crate::util::shared;

    let (Some(tinybert), Some(minilm), Some(imdb)) = (
        shared("fixtures/tinybert-format"),
        shared("models/all-MiniLM-L6-v2"),
        shared("data/imdb/aclImdb_v1_labeled.tar.gz"),
    ) else {
        return;
    };
    let dir = reference_dir();
    std::fs::create_dir_all(&dir).expect("creating the reference dir");
    let mut hidden_state_graphs = Vec::new();
    for (golden_name, checkpoint) in [("tinybert-format", tinybert), ("all-MiniLM-L6-v2", minilm)] {
        let file = format!("{golden_name}.hidden.onnx");
        std::fs::write(dir.join(&file), hidden_state_graph(&checkpoint)).expect("writing graph");
        // The same check the devices run, here on x86_64.
        let engine = sentimq::engine::Engine::load(&dir.join(&file)).expect("loading graph");
        assert!(check_engine(&engine, golden_name) > 0);
        hidden_state_graphs.push((golden_name.to_string(), file));
    }

    let texts: Vec<String> = data::take_balanced(
        data::load(&imdb, Split::Test).expect("imdb test split"),
        50,
        11,
    )
    .into_iter()
    .map(|e| data::clean_text(&e.text))
    .collect();
    let model = model_dir();
    let (labels, probabilities) = classify_all(&model, &texts);
    let reference = Reference {
        hidden_state_graphs,
        model,
        texts,
        labels,
        probabilities,
    };
    let json = serde_json::to_vec(&reference).expect("reference serializes");
    std::fs::write(dir.join("reference.json"), json).expect("writing reference.json");
}

#[cfg(not(feature = "workstation"))]
fn read_reference() -> (PathBuf, Reference) {
    let dir = reference_dir();
    let path = dir.join("reference.json");
    let json = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run the x86_64 tests first (cargo test --test it device::), or point \
             SENTIMQ_DEVICE_CHECK_DIR at their output",
            path.display()
        )
    });
    let reference = serde_json::from_slice(&json).expect("reading reference.json");
    (dir, reference)
}

#[cfg(not(feature = "workstation"))]
#[test]
fn golden_hidden_states_on_device() {
    let (dir, reference) = read_reference();
    for (golden_name, file) in &reference.hidden_state_graphs {
        let engine = sentimq::engine::Engine::load(&dir.join(file)).expect("loading graph");
        let checked = crate::golden::check_engine(&engine, golden_name);
        assert!(checked > 0, "no golden cases for {golden_name}");
        eprintln!("{golden_name}: {checked} golden cases match transformers to 1e-4");
    }
}

#[cfg(not(feature = "workstation"))]
#[test]
fn classifies_like_x86_64() {
    let (_, reference) = read_reference();
    let (labels, probabilities) = classify_all(&model_dir(), &reference.texts);
    assert_eq!(labels, reference.labels, "labels differ from x86_64");
    let diffs: Vec<f32> = probabilities
        .iter()
        .zip(&reference.probabilities)
        .map(|(found, expected)| {
            found
                .iter()
                .zip(expected)
                .map(|(f, e)| (f - e).abs())
                .fold(0.0, f32::max)
        })
        .collect();
    let (worst, max_diff) =
        diffs.iter().copied().enumerate().fold(
            (0, 0f32),
            |best, (i, d)| if d > best.1 { (i, d) } else { best },
        );
    let over = diffs.iter().filter(|&&d| d > 1e-4).count();
    eprintln!(
        "{} texts: labels equal, max probability difference to x86_64 {max_diff:.2e} (text \
         {worst}), {over} texts differ by more than 1e-4",
        reference.texts.len()
    );
    let tolerance = tolerance();
    assert!(
        max_diff <= tolerance,
        "text {worst}: probabilities {:?} here, {:?} on x86_64 (tolerance {tolerance})",
        probabilities[worst],
        reference.probabilities[worst]
    );
}
