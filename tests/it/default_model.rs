//! The shipped model, `models/imdb-minilm`: rebuilding it from the committed adapter and the
//! base reproduces its predictions, and the daemon uses it when no model is configured.

use std::path::{Path, PathBuf};

use sentimq::calibration::Calibration;
use sentimq::classifier::Classifier;
use sentimq::data::{self, Split};
use sentimq::export::{self, BuildOptions};
use sentimq::manifest::{digest_file, ModelManifest};

use crate::util::{minilm, shared};

/// The default model directory (`model.path`'s default, relative to the repository root).
pub fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imdb-minilm")
}

/// `sentimq build` of the default model from its committed adapter and `base` into `out`.
pub fn rebuild(base: &Path, out: &Path) {
    let shipped = ModelManifest::read(&default_model()).expect("model.json");
    let mut options = BuildOptions::new(base.to_string_lossy(), out);
    options.adapter = Some(default_model().join("adapter"));
    options.truncation = shipped.truncation;
    options.labels = shipped.labels;
    export::build(&options).expect("rebuilding the default model");
}

#[test]
fn default_model_is_complete_and_small() {
    let model = default_model();
    let manifest = ModelManifest::read(&model).expect("models/imdb-minilm/model.json");
    assert!(!manifest.random_head, "the shipped model is trained");
    assert_eq!(manifest.default_graph, "model.int8.onnx");
    let mut committed = 0;
    for file in ["model.int8.onnx", "tokenizer.json", "model.json"] {
        let path = model.join(file);
        assert!(path.is_file(), "{} is missing", path.display());
        committed += std::fs::metadata(&path).unwrap().len();
    }
    for file in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/calibration.json",
    ] {
        let path = model.join(file);
        assert!(path.is_file(), "{} is missing", path.display());
        committed += std::fs::metadata(&path).unwrap().len();
    }
    assert!(
        !model.join("model.onnx").exists(),
        "the f32 graph is not shipped"
    );
    assert!(
        committed <= 30 << 20,
        "{committed} bytes committed (limit 30 MiB)"
    );
    let adapter = manifest
        .adapter
        .as_ref()
        .expect("model.json names the adapter");
    assert_eq!(
        digest_file(&model.join("adapter/adapter_model.safetensors"))
            .unwrap()
            .sha256,
        adapter.sha256,
        "the committed adapter is the one model.json was built from"
    );
    let calibration = Calibration::read(&model.join("adapter"))
        .expect("adapter/calibration.json is readable")
        .expect("the shipped adapter is calibrated (adapter/calibration.json)");
    assert_eq!(
        manifest.temperature,
        Some(calibration.temperature),
        "model.json's temperature is the one fitted on validation"
    );
    assert_eq!(calibration.fitted_on, "validation");
    // The window the model card's figures are for: 512 word pieces, head 128 + tail 382.
    assert_eq!(
        (
            manifest.truncation.max_tokens,
            manifest.truncation.head_tokens
        ),
        (512, 128)
    );
    let int8 = &manifest.files["model.int8.onnx"];
    assert_eq!(
        &digest_file(&model.join("model.int8.onnx")).unwrap(),
        int8,
        "model.int8.onnx matches model.json"
    );
}

/// The committed training records (`training/`) are the runs the card describes: stages 2 to
/// 6 each started from the previous stage's adapter, on the same base, data and validation
/// split, with short pieces of the reviews (spans, then openings too) in every stage after the
/// first, and the last report's calibration is the committed adapter's.
#[test]
fn training_records_describe_the_six_stage_recipe() {
    let training = default_model().join("training");
    let read = |file: &str| -> serde_json::Value {
        let path = training.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing or unreadable: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    const PREFIXES: [&str; 6] = ["stage1-", "stage2-", "stage3-", "stage4-", "stage5-", ""];
    let stages = PREFIXES.map(|prefix| read(&format!("{prefix}report.json")));
    for prefix in PREFIXES {
        for file in ["curve.png", "reliability.png"] {
            let file = format!("{prefix}{file}");
            assert!(training.join(&file).is_file(), "training/{file} is missing");
        }
    }
    assert!(
        stages[0]["config"]["init_from"].is_null(),
        "stage 1 starts fresh"
    );
    for (number, pair) in stages.windows(2).enumerate() {
        let (earlier, later) = (&pair[0], &pair[1]);
        let stage = number + 2;
        assert!(
            later["config"]["init_from"].is_string(),
            "stage {stage} starts from the previous stage's adapter"
        );
        for field in [
            "limit",
            "seed",
            "validation_fraction",
            "max_len",
            "head_len",
        ] {
            assert_eq!(
                earlier["config"][field], later["config"][field],
                "stage {stage} shares {field} with the stage before"
            );
        }
        // The same files, whichever way the run spelled their paths (`../shared/…` from the
        // repository, or absolute).
        let file_name = |report: &serde_json::Value, field: &str| {
            let path = report["config"][field]
                .as_str()
                .unwrap_or_default()
                .to_string();
            std::path::Path::new(&path)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        };
        for field in ["base", "data"] {
            assert_eq!(
                file_name(earlier, field),
                file_name(later, field),
                "stage {stage} shares {field} with the stage before"
            );
        }
        let pieces = |report: &serde_json::Value| {
            ["spans_per_review", "openings_per_review"]
                .iter()
                .map(|field| report["config"][field].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        assert!(
            pieces(later) > 0,
            "stage {stage} trains on short pieces of the reviews"
        );
    }
    for (index, stage) in stages.iter().enumerate().skip(3) {
        assert!(
            stage["config"]["openings_per_review"].as_u64() > Some(0),
            "stage {} adds review openings",
            index + 1
        );
    }
    let calibration = Calibration::read(&default_model().join("adapter"))
        .expect("adapter/calibration.json is readable")
        .expect("the shipped adapter is calibrated");
    assert_eq!(
        stages[5]["calibration"]["temperature"].as_f64(),
        Some(calibration.temperature),
        "the committed adapter is stage 6's"
    );
}

/// `sentimq build` from `adapter/` + MiniLM reproduces the committed int8 graph: byte for byte
/// (so every prediction is the shipped one), or else with the same labels on 1,000 IMDB test
/// reviews (a build on another CPU may round a few f32 values differently).
#[test]
fn rebuilding_from_the_adapter_reproduces_the_shipped_predictions() {
    let (base, imdb) = (minilm(), shared("data/imdb/aclImdb_v1_labeled.tar.gz"));
    let shipped_dir = default_model();
    let out = tempfile::tempdir().unwrap();
    let rebuilt_dir = out.path().join("imdb-minilm");
    rebuild(&base, &rebuilt_dir);

    let same_file = digest_file(&shipped_dir.join("model.int8.onnx")).unwrap()
        == digest_file(&rebuilt_dir.join("model.int8.onnx")).unwrap();
    if same_file {
        eprintln!("rebuilt model.int8.onnx is the shipped file byte for byte");
        return;
    }
    let shipped = Classifier::load(&shipped_dir, None).expect("shipped model");
    let rebuilt = Classifier::load(&rebuilt_dir, None).expect("rebuilt model");
    sentimq::engine::set_intra_op_threads(2);
    let reviews = data::take_balanced(
        data::load(&imdb, Split::Test).expect("imdb test split"),
        1000,
        23,
    );
    let mut differ = Vec::new();
    let mut max_diff = 0f32;
    for chunk in reviews.chunks(16) {
        let texts: Vec<String> = chunk.iter().map(|e| data::clean_text(&e.text)).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let a = shipped.classify(&texts).expect("shipped classifies");
        let b = rebuilt.classify(&texts).expect("rebuilt classifies");
        for ((x, y), text) in a.iter().zip(&b).zip(&texts) {
            if x.label != y.label {
                differ.push(text.chars().take(60).collect::<String>());
            }
            max_diff = max_diff.max((x.score - y.score).abs());
        }
    }
    eprintln!("rebuilt model.int8.onnx differs from the shipped file; max score difference {max_diff:.2e}");
    assert!(
        differ.is_empty(),
        "{} of 1000 labels differ: {differ:?}",
        differ.len()
    );
}
