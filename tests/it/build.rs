//! `sentimq build`, `classify` and `eval` end to end, and their handling of bad input.

use std::path::Path;

use sentimq::classifier::Classifier;
use sentimq::data::{self, Split};
use sentimq::manifest::ModelManifest;
use sentimq::tokenizer::TokenBatch;

use crate::util::{minilm, minilm_random_model, sentimq, shared};

#[test]
fn build_writes_a_complete_model_directory() {
    let model = minilm_random_model();
    for file in [
        "model.onnx",
        "model.int8.onnx",
        "tokenizer.json",
        "model.json",
    ] {
        assert!(model.join(file).is_file(), "{file} missing");
    }
    let manifest = ModelManifest::read(model).expect("model.json");
    assert!(manifest.random_head);
    assert_eq!(manifest.default_graph, "model.int8.onnx");
    assert_eq!(manifest.labels, ["negative", "positive"]);
    let f32_bytes = manifest.files["model.onnx"].bytes as f64;
    let int8_bytes = manifest.files["model.int8.onnx"].bytes as f64;
    assert!(
        int8_bytes <= 0.30 * f32_bytes,
        "int8 file is {:.1} % of f32",
        100.0 * int8_bytes / f32_bytes
    );
    let parity = &manifest.parity[0];
    assert!(parity.max_probability_diff < 0.1, "{parity:?}");
    // Every recorded digest matches the file on disk.
    for (name, digest) in &manifest.files {
        assert_eq!(
            &sentimq::manifest::digest_file(&model.join(name)).expect("digest"),
            digest,
            "{name}"
        );
    }
}

/// int8 and f32 predictions agree on 2,000 real IMDB test reviews.
#[test]
fn int8_agrees_with_f32_on_2000_imdb_reviews() {
    let (model, imdb) = (
        minilm_random_model(),
        shared("data/imdb/aclImdb_v1_labeled.tar.gz"),
    );
    let examples = data::take_balanced(
        data::load(&imdb, Split::Test).expect("imdb test split"),
        2000,
        7,
    );
    let f32_model = Classifier::load(model, Some("model.onnx")).expect("f32 model");
    let int8_model = Classifier::load(model, Some("model.int8.onnx")).expect("int8 model");
    sentimq::engine::set_intra_op_threads(2);
    let mut encoded: Vec<_> = examples
        .iter()
        .map(|e| {
            f32_model
                .encode(&data::clean_text(&e.text))
                .expect("encoding")
        })
        .collect();
    encoded.sort_by_key(|e| e.ids.len());
    let (mut f32_session, mut int8_session) = (
        f32_model.engine().session().unwrap(),
        int8_model.engine().session().unwrap(),
    );
    let mut scratch = TokenBatch::default();
    let (mut agree, mut max_diff) = (0usize, 0f32);
    for chunk in encoded.chunks(32) {
        let a = f32_model
            .classify_encoded(&mut f32_session, chunk, &mut scratch)
            .expect("f32 run");
        let b = int8_model
            .classify_encoded(&mut int8_session, chunk, &mut scratch)
            .expect("int8 run");
        for (a, b) in a.iter().zip(&b) {
            agree += usize::from(a.label == b.label);
            max_diff = max_diff.max((a.scores[1].1 - b.scores[1].1).abs());
        }
    }
    sentimq::engine::set_intra_op_threads(1);
    let agreement = agree as f64 / encoded.len() as f64;
    eprintln!("int8 vs f32 on {} IMDB reviews: agreement {agreement:.4}, max probability diff {max_diff:.4}", encoded.len());
    assert!(agreement >= 0.99, "agreement {agreement}");
}

#[test]
fn classify_prints_json_lines_and_handles_bad_input() {
    let model = minilm_random_model();
    let model = model.to_string_lossy();
    let (ok, stdout, _) = sentimq(
        &["classify", "--model", &model, "A great film.", "Awful."],
        None,
    );
    assert!(ok);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert!(["negative", "positive"].contains(&line["label"].as_str().unwrap()));
        let total: f64 = line["scores"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-4);
        assert_eq!(line["truncated"], false);
    }

    // Below --uncertain-below (the random head's scores are near 0.5): `uncertain`, the score kept.
    let (ok, stdout, _) = sentimq(
        &[
            "classify",
            "--model",
            &model,
            "--uncertain-below",
            "0.99",
            "A great film.",
        ],
        None,
    );
    assert!(ok);
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON line");
    assert_eq!(line["label"], "uncertain", "{line}");
    assert_eq!(line["score"], lines[0]["score"], "{line}");
    let (ok, _, stderr) = sentimq(
        &["classify", "--model", &model, "--uncertain-below", "1", "x"],
        None,
    );
    assert!(
        !ok && stderr.contains("up to (not including) 1"),
        "{stderr}"
    );

    // stdin: a good line, an empty line, invalid UTF-8, a 1 MB line. Each gets a line back.
    let mut input = b"fine movie\n\n\xff\xfe broken\n".to_vec();
    input.extend("so long ".repeat(131_072).as_bytes());
    input.push(b'\n');
    let (ok, stdout, stderr) = sentimq(&["classify", "--model", &model], Some(&input));
    assert!(!ok, "failed lines make a non-zero exit");
    assert!(
        stderr.contains("2 text(s) could not be classified"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0]["label"].is_string());
    assert_eq!(lines[1]["error"], "the text is empty");
    assert!(lines[2]["error"]
        .as_str()
        .unwrap()
        .contains("not valid UTF-8"));
    assert_eq!(lines[3]["truncated"], true);
    assert_eq!(lines[3]["tokens"], 128);
}

#[test]
fn eval_reports_metrics_on_imdb() {
    let (model, imdb) = (
        minilm_random_model(),
        shared("data/imdb/aclImdb_v1_labeled.tar.gz"),
    );
    let args = [
        "eval",
        "--model",
        &model.to_string_lossy(),
        "--data",
        &imdb.to_string_lossy(),
        "--limit",
        "40",
        "--json",
    ];
    let (ok, stdout, stderr) = sentimq(&args, None);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["examples"], 40);
    let confusion = report["confusion"].as_array().unwrap();
    let truth_negative: u64 = confusion[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(truth_negative, 20, "balanced sample");
}

/// `eval --spans`: sentences of 40 real test reviews (every one of 3+ words, labelled as its
/// review), and their first 200 characters, one piece per review.
#[test]
fn eval_scores_sentence_spans_and_review_openings() {
    let (model, imdb) = (
        minilm_random_model(),
        shared("data/imdb/aclImdb_v1_labeled.tar.gz"),
    );
    let run = |spans: &str| {
        let args = [
            "eval",
            "--model",
            &model.to_string_lossy(),
            "--data",
            &imdb.to_string_lossy(),
            "--limit",
            "40",
            "--spans",
            spans,
            "--json",
        ];
        let (ok, stdout, stderr) = sentimq(&args, None);
        assert!(ok, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).expect("JSON report")
    };
    let sentences = run("sentences");
    assert_eq!(sentences["spans"], "sentences");
    let ece = sentences["ece"].as_f64().expect("ece in the report");
    assert!((0.0..=1.0).contains(&ece), "{ece}");
    let count = sentences["examples"].as_u64().unwrap();
    assert!(count > 200, "40 reviews gave {count} sentences");
    let short = sentences["by_length"][0]["words"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        short.starts_with("0-") || short.starts_with("1-"),
        "{short}"
    );
    let openings = run("first:200");
    assert_eq!(openings["examples"], 40);
    let (ok, _, stderr) = sentimq(
        &[
            "eval",
            "--model",
            &model.to_string_lossy(),
            "--data",
            &imdb.to_string_lossy(),
            "--spans",
            "words",
        ],
        None,
    );
    assert!(!ok && stderr.contains("first:<characters>"), "{stderr}");
}

#[test]
fn build_refuses_without_adapter_or_random_head() {
    let base = minilm();
    let out = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = sentimq(
        &[
            "build",
            "--base",
            &base.to_string_lossy(),
            "--out",
            &out.path().to_string_lossy(),
        ],
        None,
    );
    assert!(!ok);
    assert!(stderr.contains("--adapter"), "{stderr}");
}

#[test]
fn build_reports_bad_bases_clearly() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("model");
    let run = |base: &Path| {
        sentimq(
            &[
                "build",
                "--random-head",
                "--base",
                &base.to_string_lossy(),
                "--out",
                &out_dir.to_string_lossy(),
            ],
            None,
        )
    };

    // A directory without config.json.
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(empty.path());
    assert!(!ok);
    assert!(stderr.contains("config.json"), "{stderr}");

    // Corrupt weights next to a valid config and vocabulary.
    let fixture = shared("fixtures/tinybert-format");
    let corrupt = tempfile::tempdir().unwrap();
    for file in ["config.json", "vocab.txt"] {
        std::fs::copy(fixture.join(file), corrupt.path().join(file)).unwrap();
    }
    std::fs::write(
        corrupt.path().join("pytorch_model.bin"),
        b"PK\x03\x04 definitely not a checkpoint",
    )
    .unwrap();
    let (ok, _, stderr) = run(corrupt.path());
    assert!(!ok);
    assert!(stderr.contains("pytorch_model.bin"), "{stderr}");

    // Missing vocabulary: a clear tokenizer error.
    let no_vocab = tempfile::tempdir().unwrap();
    for file in ["config.json", "pytorch_model.bin"] {
        std::fs::copy(fixture.join(file), no_vocab.path().join(file)).unwrap();
    }
    let (ok, _, stderr) = run(no_vocab.path());
    assert!(!ok);
    assert!(stderr.contains("tokenizer.json or vocab.txt"), "{stderr}");
}

#[test]
fn both_tinybert_formats_build() {
    for name in [
        "fixtures/tinybert-format",
        "fixtures/tinybert-format-legacy",
    ] {
        let base = shared(name);
        let out = tempfile::tempdir().unwrap();
        let args = [
            "build",
            "--random-head",
            "--base",
            &base.to_string_lossy(),
            "--out",
            &out.path().to_string_lossy(),
        ];
        let (ok, _, stderr) = sentimq(&args, None);
        assert!(ok, "{name}: {stderr}");
        let classifier = Classifier::load(out.path(), None).expect("built model loads");
        assert_eq!(classifier.classify(&["a test"]).unwrap().len(), 1);
    }
}

#[test]
fn f16_build_is_served_by_default_and_agrees_with_f32() {
    let base = shared("fixtures/tinybert-format");
    let out = tempfile::tempdir().unwrap();
    let args = [
        "build",
        "--random-head",
        "--precision",
        "f16",
        "--base",
        &base.to_string_lossy(),
        "--out",
        &out.path().to_string_lossy(),
    ];
    let (ok, _, stderr) = sentimq(&args, None);
    assert!(ok, "{stderr}");
    let manifest = ModelManifest::read(out.path()).unwrap();
    assert_eq!(manifest.default_graph, "model.f16.onnx");
    assert!(
        manifest.parity[0].max_probability_diff < 0.01,
        "{:?}",
        manifest.parity
    );
    let f32_bytes = manifest.files["model.onnx"].bytes as f64;
    assert!((manifest.files["model.f16.onnx"].bytes as f64) < 0.55 * f32_bytes);
}
