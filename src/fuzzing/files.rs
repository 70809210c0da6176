//! Files an operator or a download hands over: `sentimqd.toml` (with `SENTIMQ_*` variables),
//! `model.json`, and checkpoints (`config.json` with `model.safetensors` or `pytorch_model.bin`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{fields, flags, shipped_model};
use crate::checkpoint::Checkpoint;
use crate::daemon::config::{load_text, Sources};
use crate::manifest::ModelManifest;
use crate::tokenizer::TextTokenizer;

/// `config file text · 0xFF · environment` (lines of `NAME=value`).
///
/// Invariants: loading never panics; a loaded config resolves its derived values (server,
/// input filters, threads), and written back as TOML it loads again to the same config.
pub fn config_file(data: &[u8]) {
    let [text, env] = fields::<2>(data);
    let text = String::from_utf8_lossy(text);
    let env = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let sources = Sources {
        file: Some(PathBuf::from("fuzz.toml")),
        env,
        flags: Vec::new(),
    };
    let Ok(loaded) = load_text(sources, Some(text.as_ref())) else {
        return;
    };
    let mut config = loaded.config;
    config
        .server()
        .expect("a loaded config has a usable server");
    assert!(!config.input_filters().is_empty());
    assert!(config.workers() >= 1 && config.intra_op_threads() >= 1);
    let _ = config.batch_window();

    let written = toml::to_string(&config).expect("a config serializes to TOML");
    let again = load_text(
        Sources {
            file: Some(PathBuf::from("written.toml")),
            ..Sources::default()
        },
        Some(&written),
    )
    .unwrap_or_else(|e| panic!("the written config does not load: {e}\n{written}"));
    let mut again = again.config;
    config.mqtt.password = None;
    again.mqtt.password = None;
    assert_eq!(
        config, again,
        "the written config loads differently:\n{written}"
    );
}

/// The text of a `model.json`.
///
/// Invariants: parsing never panics; an accepted manifest names itself, and its truncation
/// configures the shipped tokenizer, whose encodings then fit the window.
pub fn model_manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(manifest) = ModelManifest::parse(&text, Path::new("model.json")) else {
        return;
    };
    assert!(manifest.identity().starts_with(&manifest.name));
    assert!(manifest.labels.len() >= 2);
    let tokenizer = shipped_tokenizer()
        .clone()
        .with_truncation(manifest.truncation)
        .expect("a manifest's truncation was checked");
    let window = manifest.truncation.max_tokens;
    for text in [
        "ok",
        "a long review that is longer than the shortest window by a few words",
    ] {
        let encoded = tokenizer.encode(text).expect("plain text encodes");
        assert!(encoded.ids.len() <= window);
    }
}

/// The shipped model's tokenizer (its own window).
pub(super) fn shipped_tokenizer() -> &'static TextTokenizer {
    static TOKENIZER: OnceLock<TextTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let dir = shipped_model();
        let manifest = ModelManifest::read(&dir).expect("the shipped model.json reads");
        TextTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"), manifest.truncation)
            .expect("the shipped tokenizer.json loads")
    })
}

/// A two-layer, 8-wide BERT `config.json` (the shape of `fuzz/make_seeds.py`'s checkpoints),
/// which the checkpoint target's weights are checked against.
const TINY_CONFIG: &str = r#"{"model_type": "bert", "vocab_size": 16, "hidden_size": 8,
"num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 12,
"max_position_embeddings": 12, "type_vocab_size": 2, "hidden_act": "gelu",
"layer_norm_eps": 1e-12}"#;

/// `flags · file`: flags 0 writes `model.safetensors`, 1 `pytorch_model.bin` (zip or legacy
/// pickle), both next to a tiny two-layer `config.json`; anything else writes `config.json`
/// next to an empty `model.safetensors`. The directory is then loaded as `sentimq build` and
/// `train` load a checkpoint.
///
/// Invariants: loading never panics; a loaded checkpoint's tensors have the sizes their shapes
/// say.
pub fn checkpoint_file(data: &[u8]) {
    /// A safetensors file with no tensors: an 8-byte header length, then `{}`.
    const NO_TENSORS: &[u8] = b"\x02\x00\x00\x00\x00\x00\x00\x00{}";

    let (flags, file) = flags(data);
    let (config, weights_name, weights) = match flags {
        0 => (TINY_CONFIG.as_bytes(), "model.safetensors", file),
        1 => (TINY_CONFIG.as_bytes(), "pytorch_model.bin", file),
        _ => (file, "model.safetensors", NO_TENSORS),
    };
    with_scratch_dir(|dir| {
        for name in ["model.safetensors", "pytorch_model.bin", "config.json"] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.join(name), bytes).expect("the scratch directory is writable")
        };
        write("config.json", config);
        write(weights_name, weights);
        if let Ok(checkpoint) = Checkpoint::load(dir) {
            for (name, tensor) in &checkpoint.tensors {
                let elements: usize = tensor.shape.iter().product();
                assert_eq!(elements, tensor.data.len(), "{name}");
            }
        }
    });
}

/// Runs `f` on this thread's scratch directory, which is removed when the thread ends.
fn with_scratch_dir(f: impl FnOnce(&Path)) {
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    thread_local! {
        static SCRATCH: Scratch = {
            let dir = std::env::temp_dir().join(format!(
                "sentimq-fuzz-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).expect("the temp dir is writable");
            Scratch(dir)
        };
    }
    SCRATCH.with(|scratch| f(&scratch.0));
}
