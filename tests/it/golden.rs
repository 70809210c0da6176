//! The f32 ONNX graph, run by tract, reproduces Hugging Face `BertModel` hidden states
//! (`../shared/fixtures/golden-bert.json`) for the TinyBERT-format fixtures and MiniLM.

use std::path::Path;

use sentimq::checkpoint::Checkpoint;
use sentimq::engine::{Engine, NamedOutput};
use sentimq::export::{self, onnx, GraphOptions, Precision};
use sentimq::tokenizer::{Encoded, TokenBatch};

use crate::util::{assert_close, shared};

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    input_ids: Vec<u32>,
    cls_hidden_first8: Vec<f32>,
    mean_hidden_first8: Vec<f32>,
    pooler_first8: Vec<f32>,
}

fn golden_cases(model: &str) -> Option<Vec<Case>> {
    let path = shared("fixtures/golden-bert.json")?;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    serde_json::from_value(json["models"][model].clone()).ok()
}

/// Writes the f32 graph with hidden-state outputs for a checkpoint and loads it.
fn hidden_state_engine(checkpoint_dir: &Path) -> Engine {
    let checkpoint = Checkpoint::load(checkpoint_dir).expect("loading checkpoint");
    let mut weights = checkpoint.tensors.clone();
    export::insert_random_head(&mut weights, &checkpoint.config, 2, 0);
    let graph = export::classifier_graph(
        &weights,
        &checkpoint.config,
        GraphOptions {
            precision: Precision::F32,
            with_hidden_states: true,
        },
    )
    .expect("writing graph");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hidden.onnx");
    std::fs::write(&path, onnx::encode(&graph)).expect("writing graph file");
    Engine::load(&path).expect("loading graph in tract")
}

fn output<'a>(outputs: &'a [NamedOutput], name: &str) -> &'a NamedOutput {
    outputs
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name}"))
}

fn check_model(checkpoint_dir: &Path, golden_name: &str) {
    let Some(cases) = golden_cases(golden_name) else {
        return;
    };
    let engine = hidden_state_engine(checkpoint_dir);
    for case in &cases {
        let encoded = Encoded {
            ids: case.input_ids.clone(),
            is_truncated: false,
        };
        let outputs = engine
            .run_all(&TokenBatch::from_encoded(&[encoded], 0))
            .expect("running graph");
        let hidden = output(&outputs, "last_hidden_state");
        let (seq, h) = (hidden.shape[1], hidden.shape[2]);
        let cls: Vec<f32> = hidden.values[..8].to_vec();
        let mean: Vec<f32> = (0..8)
            .map(|j| (0..seq).map(|t| hidden.values[t * h + j]).sum::<f32>() / seq as f32)
            .collect();
        let pooled = &output(&outputs, "pooler_output").values[..8];
        let what = |part: &str| format!("{golden_name} {part} for {:?}", case.text);
        assert_close(
            &cls,
            &case.cls_hidden_first8,
            1e-4,
            1e-4,
            &what("cls hidden"),
        );
        assert_close(
            &mean,
            &case.mean_hidden_first8,
            1e-4,
            1e-4,
            &what("mean hidden"),
        );
        assert_close(pooled, &case.pooler_first8, 1e-4, 1e-4, &what("pooler"));
    }
}

#[test]
fn tinybert_zip_fixture_matches_transformers() {
    let Some(dir) = shared("fixtures/tinybert-format") else {
        return;
    };
    check_model(&dir, "tinybert-format");
}

#[test]
fn tinybert_legacy_fixture_matches_transformers() {
    let Some(dir) = shared("fixtures/tinybert-format-legacy") else {
        return;
    };
    check_model(&dir, "tinybert-format");
}

#[test]
fn minilm_matches_transformers() {
    let Some(dir) = shared("models/all-MiniLM-L6-v2") else {
        return;
    };
    check_model(&dir, "all-MiniLM-L6-v2");
}

/// Padding must not change a text's result: a batch padded to its longest row gives each row
/// the hidden states and probabilities it gets alone.
#[test]
fn padded_batch_equals_single_runs() {
    let (Some(dir), Some(cases)) = (
        shared("fixtures/tinybert-format"),
        golden_cases("tinybert-format"),
    ) else {
        return;
    };
    let engine = hidden_state_engine(&dir);
    let items: Vec<Encoded> = cases
        .iter()
        .map(|c| Encoded {
            ids: c.input_ids.clone(),
            is_truncated: false,
        })
        .collect();
    let batch = TokenBatch::from_encoded(&items, 0);
    let batched = engine.classify(&batch).expect("batched run");
    for (row, item) in items.iter().enumerate() {
        let single = engine
            .classify(&TokenBatch::from_encoded(std::slice::from_ref(item), 0))
            .expect("single run");
        assert_close(
            batched.row(row),
            single.row(0),
            1e-5,
            1e-5,
            &format!("row {row}"),
        );
    }
}
