//! The f32 ONNX graph, run by tract, reproduces Hugging Face `BertModel` hidden states
//! (`../shared/fixtures/golden-bert.json`) for the TinyBERT-format fixtures and MiniLM.
//!
//! [`check_engine`] needs no workstation code, so the device checks (`device.rs`) run it on ARM
//! with graphs written on x86_64.

#[cfg(feature = "workstation")]
use std::path::Path;

use sentimq::engine::{Engine, NamedOutput};
use sentimq::tokenizer::{Encoded, TokenBatch};
#[cfg(feature = "workstation")]
use sentimq::{
    checkpoint::{self, Checkpoint},
    export::{self, onnx, GraphOptions, Precision},
    pooling::Pooling,
};

use crate::util::{assert_close, shared};

/// One sentence of `golden-bert.json`: its ids and the first 8 values transformers computed.
#[derive(serde::Deserialize)]
pub struct Case {
    pub text: String,
    pub input_ids: Vec<u32>,
    pub cls_hidden_first8: Vec<f32>,
    pub mean_hidden_first8: Vec<f32>,
    pub pooler_first8: Vec<f32>,
}

impl Case {
    /// Asserts the [CLS] hidden state, the mean hidden state and the pooler output (first 8
    /// values each) match transformers' to 1e-4.
    pub fn assert_matches(&self, cls: &[f32], mean: &[f32], pooled: &[f32], what: &str) {
        let part = |name: &str| format!("{what} {name} for {:?}", self.text);
        assert_close(
            cls,
            &self.cls_hidden_first8,
            1e-4,
            1e-4,
            &part("cls hidden"),
        );
        assert_close(
            mean,
            &self.mean_hidden_first8,
            1e-4,
            1e-4,
            &part("mean hidden"),
        );
        assert_close(pooled, &self.pooler_first8, 1e-4, 1e-4, &part("pooler"));
    }
}

/// The golden cases of one model (`models.<model>` of `../shared/fixtures/golden-bert.json`).
pub fn golden_cases(model: &str) -> Vec<Case> {
    let path = shared("fixtures/golden-bert.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    serde_json::from_value(json["models"][model].clone())
        .unwrap_or_else(|e| panic!("{}: models.{model}: {e}", path.display()))
}

/// The f32 graph with hidden-state outputs (`last_hidden_state`, `pooler_output`) for a
/// checkpoint, as ONNX bytes.
#[cfg(feature = "workstation")]
pub fn hidden_state_graph(checkpoint_dir: &Path) -> Vec<u8> {
    let checkpoint = Checkpoint::load(checkpoint_dir).expect("loading checkpoint");
    let mut weights = checkpoint.tensors.clone();
    checkpoint::insert_random_head(&mut weights, &checkpoint.config, 2, 0);
    let graph = export::classifier_graph(
        &weights,
        &checkpoint.config,
        GraphOptions {
            precision: Precision::F32,
            with_hidden_states: true,
            pooling: Pooling::Cls,
        },
    )
    .expect("writing graph");
    onnx::encode(&graph)
}

/// [`hidden_state_graph`] loaded in tract.
#[cfg(feature = "workstation")]
fn hidden_state_engine(checkpoint_dir: &Path) -> Engine {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hidden.onnx");
    std::fs::write(&path, hidden_state_graph(checkpoint_dir)).expect("writing graph file");
    Engine::load(&path).expect("loading graph in tract")
}

fn output<'a>(outputs: &'a [NamedOutput], name: &str) -> &'a NamedOutput {
    outputs
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name}"))
}

#[cfg(feature = "workstation")]
fn check_model(checkpoint_dir: &Path, golden_name: &str) {
    check_engine(&hidden_state_engine(checkpoint_dir), golden_name);
}

/// Runs every golden case of `golden_name` through a hidden-state graph and compares the
/// [CLS], mean and pooler values with transformers' to 1e-4. Returns the cases checked.
pub fn check_engine(engine: &Engine, golden_name: &str) -> usize {
    let cases = golden_cases(golden_name);
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
        case.assert_matches(&cls, &mean, pooled, golden_name);
    }
    cases.len()
}

#[cfg(feature = "workstation")]
#[test]
fn tinybert_zip_fixture_matches_transformers() {
    let dir = shared("fixtures/tinybert-format");
    check_model(&dir, "tinybert-format");
}

#[cfg(feature = "workstation")]
#[test]
fn tinybert_legacy_fixture_matches_transformers() {
    let dir = shared("fixtures/tinybert-format-legacy");
    check_model(&dir, "tinybert-format");
}

#[cfg(feature = "workstation")]
#[test]
fn minilm_matches_transformers() {
    let dir = shared("models/all-MiniLM-L6-v2");
    check_model(&dir, "all-MiniLM-L6-v2");
}

/// Padding must not change a text's result: a batch padded to its longest row gives each row
/// the hidden states and probabilities it gets alone.
#[cfg(feature = "workstation")]
#[test]
fn padded_batch_equals_single_runs() {
    let (dir, cases) = (
        shared("fixtures/tinybert-format"),
        golden_cases("tinybert-format"),
    );
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
