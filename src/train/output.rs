//! The kept model: a PEFT-format LoRA adapter in `adapter/` (what `sentimq build --adapter`
//! and Python PEFT load), or with `--full` a whole Hugging Face checkpoint in `model/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::adapter::{AdapterConfig, LoraAdapter, LoraPair, TargetModules};
use crate::checkpoint::{write_safetensors, Checkpoint, Tensor, TensorMap};
use crate::pooling::Pooling;

use super::params::Parameters;
use super::{Error, TrainConfig};

/// Directory of the adapter inside the run directory.
pub(crate) const ADAPTER_DIR: &str = "adapter";
/// Directory of the full model (`--full`) inside the run directory.
pub(crate) const MODEL_DIR: &str = "model";
/// Files copied next to a full model so that it is a complete checkpoint directory.
const BASE_FILES: [&str; 5] = [
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Where the kept model of a run goes.
pub(crate) fn model_dir(run_dir: &Path, config: &TrainConfig) -> PathBuf {
    run_dir.join(if config.full { MODEL_DIR } else { ADAPTER_DIR })
}

/// The adapter of the current trainable tensors (LoRA pairs, pooler, classifier).
pub(crate) fn adapter_from(trained: &TensorMap, config: &TrainConfig) -> LoraAdapter {
    let mut pairs = BTreeMap::new();
    let mut saved = TensorMap::new();
    let mut modules_to_save = Vec::new();
    for (name, tensor) in trained {
        if let Some(module) = name.strip_suffix(".lora_A.weight") {
            let b = trained.get(&format!("{module}.lora_B.weight"));
            if let Some(b) = b {
                pairs.insert(
                    module.to_string(),
                    LoraPair {
                        a: tensor.clone(),
                        b: b.clone(),
                    },
                );
            }
        } else if !name.ends_with(".lora_B.weight") {
            saved.insert(name.clone(), tensor.clone());
            let module = if name.starts_with("classifier.") {
                "classifier"
            } else {
                "pooler"
            };
            if !modules_to_save.iter().any(|m| m == module) {
                modules_to_save.push(module.to_string());
            }
        }
    }
    LoraAdapter {
        config: AdapterConfig {
            peft_type: "LORA".into(),
            task_type: Some("SEQ_CLS".into()),
            r: config.lora.r,
            lora_alpha: config.lora.alpha,
            lora_dropout: config.lora.dropout,
            target_modules: TargetModules::Names(config.lora.targets.clone()),
            modules_to_save: Some(modules_to_save),
            use_rslora: false,
            fan_in_fan_out: false,
            bias: "none".into(),
            base_model_name_or_path: Some(config.base.clone()),
            extra: pooling_record(config.pooling),
        },
        pairs,
        saved,
        sha256: String::new(),
    }
}

/// `adapter_config.json`'s record of a pooling other than `[CLS]` (PEFT ignores the key).
fn pooling_record(pooling: Pooling) -> BTreeMap<String, serde_json::Value> {
    let mut extra = BTreeMap::new();
    if !pooling.is_default() {
        extra.insert(
            crate::adapter::POOLING_KEY.to_string(),
            serde_json::Value::String(pooling.to_string()),
        );
    }
    extra
}

/// Writes the kept model of the current parameters into `dir`.
pub fn save_model(
    dir: &Path,
    params: &Parameters,
    config: &TrainConfig,
    base: &Checkpoint,
) -> Result<(), Error> {
    let trained = params.trainable_to_host().map_err(|source| Error::Tensor {
        context: "downloading trained tensors",
        source,
    })?;
    if !config.full {
        adapter_from(&trained, config).save(dir)?;
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    // Hugging Face names: the encoder under `bert.`, the head beside it.
    let tensors: Vec<(String, &Tensor)> = trained
        .iter()
        .map(|(name, t)| {
            let key = if name.starts_with("classifier.") {
                name.clone()
            } else {
                format!("bert.{name}")
            };
            (key, t)
        })
        .collect();
    let weights = dir.join("model.safetensors");
    write_safetensors(&tensors, &weights).map_err(|source| Error::WriteTensors {
        path: weights.clone(),
        source: Box::new(source),
    })?;
    for file in BASE_FILES {
        let from = base.dir.join(file);
        if from.is_file() {
            let to = dir.join(file);
            std::fs::copy(&from, &to).map_err(|source| Error::Write { path: to, source })?;
        }
    }
    if !config.pooling.is_default() {
        record_pooling_in_config(&dir.join("config.json"), config.pooling)?;
    }
    Ok(())
}

/// Adds `sentimq_pooling` to a full model's `config.json` (Hugging Face ignores the key), so
/// that `sentimq build --base <model/>` builds the head the model was trained with.
fn record_pooling_in_config(path: &Path, pooling: Pooling) -> Result<(), Error> {
    let read = |source: std::io::Error| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(read)?;
    let mut json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| read(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    if let Some(object) = json.as_object_mut() {
        object.insert(
            crate::adapter::POOLING_KEY.to_string(),
            serde_json::Value::String(pooling.to_string()),
        );
    }
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| read(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the kept model back from `dir` as trainable tensors by canonical name.
pub fn load_model(dir: &Path, config: &TrainConfig) -> Result<TensorMap, Error> {
    if config.full {
        let path = dir.join("model.safetensors");
        let tensors =
            crate::checkpoint::read_safetensors(&path).map_err(|e| Error::CorruptCheckpoint {
                path: path.clone(),
                source: e.into(),
            })?;
        return Ok(tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("bert.").map_or(k.clone(), str::to_string), v))
            .collect());
    }
    Ok(adapter_tensors(LoraAdapter::load(dir)?))
}

/// An adapter's tensors by canonical name: its LoRA pairs and its fully trained tensors.
pub(crate) fn adapter_tensors(adapter: LoraAdapter) -> TensorMap {
    let mut tensors = adapter.saved;
    for (module, pair) in adapter.pairs {
        tensors.insert(format!("{module}.lora_A.weight"), pair.a);
        tensors.insert(format!("{module}.lora_B.weight"), pair.b);
    }
    tensors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_models_config_records_mean_pooling_for_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, r#"{"model_type": "bert", "hidden_size": 384}"#).unwrap();
        assert_eq!(
            crate::adapter::recorded_pooling(dir.path()).unwrap(),
            Pooling::Cls,
            "a Hugging Face config records nothing"
        );
        record_pooling_in_config(&config, Pooling::Mean).unwrap();
        assert_eq!(
            crate::adapter::recorded_pooling(dir.path()).unwrap(),
            Pooling::Mean
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        assert_eq!(json["hidden_size"], 384, "the other keys are kept");

        std::fs::write(&config, r#"{"sentimq_pooling": "max"}"#).unwrap();
        let error = crate::adapter::recorded_pooling(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("config.json"),
            "{error} names the file"
        );
    }
}
