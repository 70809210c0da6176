//! The exported graphs pass `onnx.checker` and give the same logits in onnxruntime as in tract.
//! Needs Python with `onnx` and `onnxruntime` (`.ci/run` installs them).

use sentimq::classifier::Classifier;
use sentimq::engine::Engine;
use sentimq::metrics::argmax;
use sentimq::tokenizer::TokenBatch;

use crate::util::{assert_close, minilm_random_model, python};

const TEXTS: &[&str] = &[
    "A moving, beautifully acted film.",
    "Dull and far too long. <br /><br />I left early.",
    "The effects are great but the story is thin, the pacing uneven, and the ending falls flat after a strong start.",
    "ok",
];

#[test]
fn onnxruntime_agrees_with_tract() {
    let model = minilm_random_model();
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

    let stdout = python(
        "ort_logits.py",
        &[
            &model.to_string_lossy(),
            &batch_path.to_string_lossy(),
            "model.onnx",
            "model.int8.onnx",
        ],
        "onnx and onnxruntime",
    );
    let ort: serde_json::Value =
        serde_json::from_slice(&stdout).expect("ort_logits.py prints JSON");

    let tract_output = |graph: &str, name: &str| {
        let engine = Engine::load(&model.join(graph)).expect("loading graph");
        let outputs = engine.run_all(&batch).expect("tract run");
        outputs
            .into_iter()
            .find(|o| o.name == name)
            .expect("graph output")
            .values
    };
    let ort_output = |graph: &str, name: &str| -> Vec<f32> {
        ort[graph][name]
            .as_array()
            .expect("rows")
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .expect("row")
                    .iter()
                    .map(|v| v.as_f64().expect("number") as f32)
            })
            .collect()
    };

    // f32: the two runtimes differ only by summation order.
    let graph = "model.onnx";
    assert_close(
        &tract_output(graph, "logits"),
        &ort_output(graph, "logits"),
        1e-4,
        0.0,
        "f32 logits",
    );

    // int8: both runtimes quantize the first layer's activations bit-identically, but a
    // 1e-7 f32 difference later on moves a value across a rounding boundary now and then, and
    // one flipped int8 step (max|x|/127) propagates. The probabilities and labels must agree
    // tightly; the logits' spread is printed for the record.
    let graph = "model.int8.onnx";
    let (tract_logits, ort_logits) = (tract_output(graph, "logits"), ort_output(graph, "logits"));
    let spread = tract_logits
        .iter()
        .zip(&ort_logits)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("int8 tract vs onnxruntime: max logit difference {spread:.2e}");
    assert_close(&tract_logits, &ort_logits, 1e-2, 0.0, "int8 logits");
    let (tract_probs, ort_probs) = (
        tract_output(graph, "probabilities"),
        ort_output(graph, "probabilities"),
    );
    assert_close(&tract_probs, &ort_probs, 1e-3, 0.0, "int8 probabilities");
    let labels = |p: &[f32]| p.chunks(2).map(argmax).collect::<Vec<_>>();
    assert_eq!(labels(&tract_probs), labels(&ort_probs), "int8 labels");
}
