//! `Checkpoint::load` end to end: the shared fixtures in every weights format, and broken
//! checkpoint directories built in temporary folders.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use ::safetensors::tensor::TensorView;
use ::safetensors::Dtype;

use super::*;
use crate::test_inputs::shared;

/// Each fixture is loaded once per test binary.
fn fixture(relative: &'static str, cell: &'static OnceLock<Checkpoint>) -> &'static Checkpoint {
    let dir = shared(relative);
    cell.get_or_init(|| Checkpoint::load(&dir).unwrap_or_else(|e| panic!("{relative}: {e}")))
}

fn tinybert() -> &'static Checkpoint {
    static CELL: OnceLock<Checkpoint> = OnceLock::new();
    fixture("fixtures/tinybert-format", &CELL)
}

fn tinybert_legacy() -> &'static Checkpoint {
    static CELL: OnceLock<Checkpoint> = OnceLock::new();
    fixture("fixtures/tinybert-format-legacy", &CELL)
}

fn minilm() -> &'static Checkpoint {
    static CELL: OnceLock<Checkpoint> = OnceLock::new();
    fixture("models/all-MiniLM-L6-v2", &CELL)
}

#[test]
fn tinybert_zip_format_loads_with_canonical_names() {
    let checkpoint = tinybert();
    assert_eq!(checkpoint.config.model_type, None);
    assert!(checkpoint.weights_file.ends_with("pytorch_model.bin"));
    // 5 embedding tensors, 16 per layer, the pooler; no `bert.` prefix, no fit_dense.
    assert_eq!(
        checkpoint.tensors.len(),
        5 + 2 * 16 + 2,
        "{:?}",
        checkpoint.tensors.keys()
    );
    assert!(checkpoint
        .tensors
        .keys()
        .all(|name| !name.starts_with("bert.") && !name.contains("fit_dense")));

    let words = checkpoint.get("embeddings.word_embeddings.weight").unwrap();
    assert_eq!(words.shape, [30522, 32]);
    assert_eq!(words.data.len(), 30522 * 32);
    // Row 1, as Python's zipfile + struct read it from the storage.
    assert_eq!(
        words.data[32..34],
        [f32::from_bits(0xbcf4_2700), f32::from_bits(0x3c44_aa80)]
    );
    assert_eq!(
        checkpoint
            .get("encoder.layer.1.intermediate.dense.weight")
            .unwrap()
            .shape,
        [64, 32]
    );
    assert_eq!(
        checkpoint
            .get("encoder.layer.1.output.dense.weight")
            .unwrap()
            .shape,
        [32, 64]
    );
    assert_eq!(
        checkpoint.get("pooler.dense.weight").unwrap().shape,
        [32, 32]
    );
    let missing = checkpoint.get("classifier.weight").unwrap_err();
    assert!(
        matches!(&missing, Error::MissingTensor { name, .. } if name == "classifier.weight"),
        "{missing}"
    );
}

#[test]
fn tinybert_legacy_format_is_bit_identical_to_zip() {
    let (zip, legacy) = (tinybert(), tinybert_legacy());
    assert_eq!(legacy.config, zip.config);
    assert_eq!(
        legacy.tensors.keys().collect::<Vec<_>>(),
        zip.tensors.keys().collect::<Vec<_>>()
    );
    for (name, expected) in &zip.tensors {
        let found = &legacy.tensors[name];
        assert_eq!(found.shape, expected.shape, "{name}");
        let first_difference = found
            .data
            .iter()
            .zip(&expected.data)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first_difference, None, "{name}: first differing element");
    }
}

#[test]
fn minilm_safetensors_loads() {
    let checkpoint = minilm();
    assert_eq!(checkpoint.config.model_type.as_deref(), Some("bert"));
    assert!(checkpoint.weights_file.ends_with("model.safetensors"));
    assert_eq!(checkpoint.tensors.len(), 5 + 6 * 16 + 2);
    assert!(!checkpoint.tensors.contains_key("embeddings.position_ids"));
    let words = checkpoint.get("embeddings.word_embeddings.weight").unwrap();
    assert_eq!(words.shape, [30522, 384]);
    assert_eq!(
        words.data[..3],
        [0xbca3_c000, 0xbb5f_0000, 0xbc70_8000].map(f32::from_bits)
    );
    let query = checkpoint
        .get("encoder.layer.5.attention.self.query.weight")
        .unwrap();
    assert_eq!(query.shape, [384, 384]);
    assert_eq!(
        checkpoint
            .get("encoder.layer.5.intermediate.dense.weight")
            .unwrap()
            .shape,
        [1536, 384]
    );
}

/// A temporary checkpoint directory with a small valid config (hidden 4, 1 layer, 2 heads).
struct TempCheckpoint {
    dir: tempfile::TempDir,
}

impl TempCheckpoint {
    const CONFIG: &'static str = r#"{"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 16}"#;

    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), Self::CONFIG).unwrap();
        Self { dir }
    }

    fn config(&self) -> BertConfig {
        BertConfig::from_file(&self.dir.path().join("config.json")).unwrap()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `model.safetensors` holding `tensors` (zero-filled f32).
    fn write_safetensors(&self, tensors: &[(String, Vec<usize>)]) -> PathBuf {
        let bytes: HashMap<&str, Vec<u8>> = tensors
            .iter()
            .map(|(name, shape)| (name.as_str(), vec![0; 4 * shape.iter().product::<usize>()]))
            .collect();
        let views = tensors.iter().map(|(name, shape)| {
            (
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), &bytes[name.as_str()]).unwrap(),
            )
        });
        self.write(
            "model.safetensors",
            &::safetensors::serialize(views, None).unwrap(),
        )
    }

    fn load(&self) -> Result<Checkpoint, Error> {
        Checkpoint::load(self.dir.path())
    }
}

/// The tensors `TempCheckpoint::CONFIG` requires, under TinyBERT-style keys.
fn tf_style_tensors(config: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let mut tensors: Vec<_> = keys::required_shapes(config)
        .into_iter()
        .map(|(name, shape)| {
            let name = name
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            (format!("bert.{name}"), shape)
        })
        .collect();
    tensors.push(("cls.predictions.bias".into(), vec![10]));
    tensors.push(("bert.embeddings.position_ids".into(), vec![1, 16]));
    tensors
}

#[test]
fn safetensors_keys_are_mapped_like_torch_ones() {
    let checkpoint = TempCheckpoint::new();
    checkpoint.write_safetensors(&tf_style_tensors(&checkpoint.config()));
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.tensors.len(), 5 + 16);
    assert_eq!(
        loaded
            .get("encoder.layer.0.output.LayerNorm.bias")
            .unwrap()
            .shape,
        [4]
    );
}

#[test]
fn wrong_shape_is_reported_with_both_shapes() {
    let checkpoint = TempCheckpoint::new();
    let mut tensors = tf_style_tensors(&checkpoint.config());
    let transposed = "bert.encoder.layer.0.intermediate.dense.weight";
    tensors
        .iter_mut()
        .filter(|(name, _)| name == transposed)
        .for_each(|(_, shape)| shape.reverse());
    let weights = checkpoint.write_safetensors(&tensors);
    let error = checkpoint.load().unwrap_err();
    let Error::ShapeMismatch {
        path,
        name,
        expected,
        found,
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(
        (path, name.as_str()),
        (&weights, "encoder.layer.0.intermediate.dense.weight")
    );
    assert_eq!(
        (expected.as_slice(), found.as_slice()),
        (&[8, 4][..], &[4, 8][..])
    );
    assert!(
        error
            .to_string()
            .ends_with("is [4, 8], config.json implies [8, 4]"),
        "{error}"
    );
}

#[test]
fn missing_tensor_and_unknown_layout_are_told_apart() {
    let checkpoint = TempCheckpoint::new();
    let mut tensors = tf_style_tensors(&checkpoint.config());
    tensors.retain(|(name, _)| name != "bert.encoder.layer.0.attention.self.value.bias");
    checkpoint.write_safetensors(&tensors);
    let error = checkpoint.load().unwrap_err();
    assert!(
        matches!(&error, Error::MissingTensor { name, .. } if name == "encoder.layer.0.attention.self.value.bias"),
        "{error}"
    );

    let gpt_like = [
        ("model.layers.0.mlp.weight".to_string(), vec![4, 4]),
        ("lm_head.weight".to_string(), vec![10, 4]),
    ];
    checkpoint.write_safetensors(&gpt_like);
    let error = checkpoint.load().unwrap_err();
    let Error::UnknownKeyLayout { sample_keys, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        sample_keys,
        &["lm_head.weight", "model.layers.0.mlp.weight"]
    );
}

#[test]
fn directory_problems_name_the_file() {
    let checkpoint = TempCheckpoint::new();
    let error = checkpoint.load().unwrap_err();
    assert!(
        matches!(&error, Error::NoWeights { found, .. } if found.is_empty()),
        "{error}"
    );

    checkpoint.write("tf_model.h5", b"HDF");
    let error = checkpoint.load().unwrap_err();
    assert!(
        matches!(&error, Error::NoWeights { found, .. } if found == &["tf_model.h5"]),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("(found tf_model.h5); supported weights are model.safetensors"),
        "{message}"
    );

    std::fs::remove_file(checkpoint.dir.path().join("config.json")).unwrap();
    let error = checkpoint.load().unwrap_err();
    assert!(
        matches!(&error, Error::MissingConfig { path } if path.ends_with("config.json")),
        "{error}"
    );

    let error = Checkpoint::load(&checkpoint.dir.path().join("nope")).unwrap_err();
    assert!(matches!(error, Error::NotADirectory { .. }), "{error}");
}

#[test]
fn corrupt_weights_get_distinct_errors() {
    let checkpoint = TempCheckpoint::new();

    let safetensors = checkpoint.write(
        "model.safetensors",
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":",
    );
    assert!(
        matches!(checkpoint.load(), Err(Error::Safetensors { path, .. }) if path == safetensors)
    );
    std::fs::remove_file(&safetensors).unwrap();

    // Deterministic noise that starts like neither a zip archive nor a pickle.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = std::iter::once(0)
        .chain((0..4096).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        }))
        .collect();
    checkpoint.write("pytorch_model.bin", &noise);
    assert!(matches!(checkpoint.load(), Err(Error::NotTorchFile { .. })));
    checkpoint.write("pytorch_model.bin", b"");
    assert!(matches!(checkpoint.load(), Err(Error::NotTorchFile { .. })));

    let bytes = std::fs::read(shared("fixtures/tinybert-format/pytorch_model.bin")).unwrap();
    checkpoint.write("pytorch_model.bin", &bytes[..bytes.len() / 2]);
    let error = checkpoint.load().unwrap_err();
    assert!(matches!(error, Error::Zip { .. }), "{error}");
    let bytes = std::fs::read(shared("fixtures/tinybert-format-legacy/pytorch_model.bin")).unwrap();
    checkpoint.write("pytorch_model.bin", &bytes[..bytes.len() - 1]);
    let error = checkpoint.load().unwrap_err();
    assert!(matches!(&error, Error::StorageSize { .. }), "{error}");
    checkpoint.write("pytorch_model.bin", &bytes[..3000]);
    let error = checkpoint.load().unwrap_err();
    assert!(
        matches!(&error, Error::Pickle { offset, .. } if *offset > 0),
        "{error}"
    );
}

#[test]
fn tensor_debug_is_short() {
    let tensor = Tensor {
        shape: vec![2, 3],
        data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    };
    assert_eq!(
        format!("{tensor:?}"),
        "Tensor { shape: [2, 3], data: [1.0, 2.0, 3.0, 4.0], .. }"
    );
}
