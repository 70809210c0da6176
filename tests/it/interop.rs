//! The exported graphs pass `onnx.checker` and give the same logits in onnxruntime as in tract.
//! Needs Python with `onnx` and `onnxruntime` (`.ci/run` installs them).

use std::process::Command;

use sentimq::classifier::Classifier;
use sentimq::engine::Engine;
use sentimq::tokenizer::TokenBatch;

use crate::util::{assert_close, minilm_random_model};

const TEXTS: &[&str] = &[
    "A moving, beautifully acted film.",
    "Dull and far too long. <br /><br />I left early.",
    "The effects are great but the story is thin, the pacing uneven, and the ending falls flat after a strong start.",
    "ok",
];

#[test]
fn onnxruntime_agrees_with_tract() {
    let Some(model) = minilm_random_model() else {
        return;
    };
    let classifier = Classifier::load(model, None).expect("loading model");
    let encoded: Vec<_> = TEXTS
        .iter()
        .map(|t| classifier.encode(t).expect("encoding"))
        .collect();
    let batch = TokenBatch::from_encoded(&encoded, classifier.tokenizer().pad_id());
    let rows = |flat: &[i64]| {
        flat.chunks(batch.sequence)
            .map(<[i64]>::to_vec)
            .collect::<Vec<_>>()
    };
    let batch_json = serde_json::json!({ "input_ids": rows(&batch.input_ids), "attention_mask": rows(&batch.attention_mask) });
    let dir = tempfile::tempdir().expect("temp dir");
    let batch_path = dir.path().join("batch.json");
    std::fs::write(&batch_path, batch_json.to_string()).expect("writing batch");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ort_logits.py");
    let output = Command::new("python3")
        .args([script, &model.to_string_lossy(), &batch_path.to_string_lossy(), "model.onnx", "model.int8.onnx"])
        .output()
        .expect("running python3 (install onnx and onnxruntime: pip install -r tests/python/requirements.txt)");
    assert!(
        output.status.success(),
        "ort_logits.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ort: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("ort_logits.py prints JSON");

    for (graph, tolerance) in [("model.onnx", 1e-4), ("model.int8.onnx", 1e-3)] {
        let engine = Engine::load(&model.join(graph)).expect("loading graph");
        let outputs = engine.run_all(&batch).expect("tract run");
        let logits = outputs
            .iter()
            .find(|o| o.name == "logits")
            .expect("logits output");
        let expected: Vec<f32> = ort[graph]["logits"]
            .as_array()
            .expect("logits rows")
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .expect("row")
                    .iter()
                    .map(|v| v.as_f64().expect("number") as f32)
            })
            .collect();
        assert_close(
            &logits.values,
            &expected,
            tolerance,
            0.0,
            &format!("{graph} tract vs onnxruntime logits"),
        );
    }
}
