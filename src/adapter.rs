//! LoRA adapters in PEFT's on-disk format: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! Written by `sentimq train`, read by `sentimq build`; adapters trained with Python PEFT
//! (`get_peft_model(model, LoraConfig(task_type="SEQ_CLS", ...))`) load too. Keys follow PEFT:
//! `base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight` (`[r, in]`),
//! `...lora_B.weight` (`[out, r]`), and the trained head as `base_model.model.classifier.weight`
//! (and `base_model.model.bert.pooler.dense.*` when the pooler was trained).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{BertConfig, Tensor, TensorMap};
use crate::manifest::{digest_file, AdapterSummary};
use crate::pooling::Pooling;

/// Adapter config file name.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// Adapter weights file name.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PEFT_PREFIX: &str = "base_model.model.";

/// Errors of reading, writing or merging an adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file is missing or unreadable.
    #[error("{path}: cannot read adapter file")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O, JSON or safetensors error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The config names something this tool does not implement.
    #[error("{path}: {field}: {requirement}")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// The offending field.
        field: &'static str,
        /// What this tool supports, e.g. `only LORA adapters are supported`.
        requirement: &'static str,
    },
    /// A LoRA pair is incomplete.
    #[error("{path}: {module} has {present} but no {absent}")]
    IncompletePair {
        /// The weights file.
        path: PathBuf,
        /// The adapted module.
        module: String,
        /// The tensor found.
        present: &'static str,
        /// The tensor missing.
        absent: &'static str,
    },
    /// A tensor's shape does not fit the base model.
    #[error("adapter tensor {name} is {found:?}, the base model implies {expected:?}: was the adapter trained on another base?")]
    ShapeMismatch {
        /// The tensor.
        name: String,
        /// Shape implied by the base.
        expected: Vec<usize>,
        /// Shape in the adapter.
        found: Vec<usize>,
    },
    /// The adapter adapts a module the base does not have.
    #[error("adapter targets {module}, which the base model does not have: was it trained on another base?")]
    UnknownModule {
        /// The module name.
        module: String,
    },
    /// The adapter adapts a base tensor that is not a matrix (a LayerNorm's, say).
    #[error(
        "adapter targets {module}, whose base weight of shape {shape:?} is not a linear layer's"
    )]
    NotLinear {
        /// The module name.
        module: String,
        /// The base weight's shape.
        shape: Vec<usize>,
    },
    /// The adapter has no classifier head.
    #[error("{path}: no classifier head (base_model.model.classifier.weight/bias): a sequence-classification adapter needs one")]
    MissingHead {
        /// The weights file.
        path: PathBuf,
    },
    /// Writing failed.
    #[error("{path}: cannot write adapter")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O, JSON or safetensors error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Key of `adapter_config.json` recording a pooling other than `[CLS]` (see
/// [`crate::pooling`]); PEFT ignores it.
pub const POOLING_KEY: &str = "sentimq_pooling";

/// The pooling a trained model in `dir` records under [`POOLING_KEY`]: in `adapter_config.json`
/// for an adapter, in `config.json` for a fully fine-tuned checkpoint; `[CLS]` when neither
/// file records one (PEFT's and Hugging Face's own files).
///
/// Errors: [`Error::Unreadable`] for an unreadable file or a value other than `cls`/`mean`.
pub fn recorded_pooling(dir: &Path) -> Result<Pooling, Error> {
    let Some(path) = [CONFIG_FILE, "config.json"]
        .iter()
        .map(|file| dir.join(file))
        .find(|path| path.is_file())
    else {
        return Ok(Pooling::Cls);
    };
    let text = std::fs::read_to_string(&path).map_err(unreadable(&path))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(unreadable(&path))?;
    match json.get(POOLING_KEY) {
        None => Ok(Pooling::Cls),
        Some(value) => serde_json::from_value(value.clone()).map_err(unreadable(&path)),
    }
}

/// The parts of PEFT's `LoraConfig` that matter for merging; other keys are kept verbatim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// `"LORA"`.
    pub peft_type: String,
    /// `"SEQ_CLS"`.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank.
    pub r: usize,
    /// Scaling numerator.
    pub lora_alpha: f64,
    /// Dropout used in training (informational).
    #[serde(default)]
    pub lora_dropout: f64,
    /// The modules adapted, e.g. `["query", "value"]`.
    pub target_modules: TargetModules,
    /// Modules trained in full and saved whole (classifier, pooler).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// rsLoRA scaling `α/√r` instead of `α/r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Must be false for BERT (`Linear` layout).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Bias training mode; only `"none"` is supported.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// The base the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Any other PEFT keys, preserved on save.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// PEFT's `target_modules`: module name suffixes, or one string (a regular expression, or
/// `"all-linear"`). Which modules an adapter adapts is read from its tensors' names, so either
/// form loads; it is kept as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Suffixes of the adapted modules' names.
    Names(Vec<String>),
    /// A regular expression over module names, or `"all-linear"`.
    Pattern(String),
}

impl TargetModules {
    /// The names, or the pattern alone, as `model.json` records them.
    pub fn to_list(&self) -> Vec<String> {
        match self {
            TargetModules::Names(names) => names.clone(),
            TargetModules::Pattern(pattern) => vec![pattern.clone()],
        }
    }
}

fn default_bias() -> String {
    "none".into()
}

/// One low-rank update `ΔW = scale · B · A`.
#[derive(Clone, Debug)]
pub struct LoraPair {
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
}

/// A loaded adapter: LoRA pairs by canonical module name and fully trained tensors.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// The adapter config.
    pub config: AdapterConfig,
    /// LoRA pairs keyed by canonical module (`encoder.layer.0.attention.self.query`).
    pub pairs: BTreeMap<String, LoraPair>,
    /// Trained tensors merged by replacement (`classifier.weight`, `pooler.dense.bias`, ...).
    pub saved: TensorMap,
    /// sha256 of the weights file, once read from or written to disk.
    pub sha256: String,
}

impl LoraAdapter {
    /// Reads an adapter directory.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(unreadable(&config_path))?;
        let config: AdapterConfig =
            serde_json::from_str(&text).map_err(unreadable(&config_path))?;
        check_config(&config, &config_path)?;

        let weights_path = dir.join(WEIGHTS_FILE);
        let tensors = crate::checkpoint::read_safetensors(&weights_path)
            .map_err(unreadable(&weights_path))?;
        let mut a_parts = BTreeMap::new();
        let mut b_parts = BTreeMap::new();
        let mut saved = TensorMap::new();
        for (key, tensor) in tensors {
            let name = canonical_name(&key);
            if let Some(module) = lora_module(&name, "lora_A") {
                a_parts.insert(module, tensor);
            } else if let Some(module) = lora_module(&name, "lora_B") {
                b_parts.insert(module, tensor);
            } else {
                saved.insert(name, tensor);
            }
        }
        let mut pairs = BTreeMap::new();
        for (module, a) in a_parts {
            let b = b_parts
                .remove(&module)
                .ok_or_else(|| Error::IncompletePair {
                    path: weights_path.clone(),
                    module: module.clone(),
                    present: "lora_A",
                    absent: "lora_B",
                })?;
            pairs.insert(module, LoraPair { a, b });
        }
        if let Some(module) = b_parts.into_keys().next() {
            return Err(Error::IncompletePair {
                path: weights_path,
                module,
                present: "lora_B",
                absent: "lora_A",
            });
        }
        if !saved.contains_key("classifier.weight") || !saved.contains_key("classifier.bias") {
            return Err(Error::MissingHead { path: weights_path });
        }
        let sha256 = digest_file(&weights_path)
            .map_err(unreadable(&weights_path))?
            .sha256;
        Ok(LoraAdapter {
            config,
            pairs,
            saved,
            sha256,
        })
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT key names) into `dir`.
    pub fn save(&mut self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(write_error(dir))?;
        let config_path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&self.config).map_err(write_error(&config_path))?;
        std::fs::write(&config_path, text + "\n").map_err(write_error(&config_path))?;

        let mut tensors: Vec<(String, &Tensor)> = Vec::new();
        for (module, pair) in &self.pairs {
            tensors.push((peft_name(&format!("{module}.lora_A.weight")), &pair.a));
            tensors.push((peft_name(&format!("{module}.lora_B.weight")), &pair.b));
        }
        for (name, tensor) in &self.saved {
            tensors.push((peft_name(name), tensor));
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        crate::checkpoint::write_safetensors(&tensors, &weights_path)
            .map_err(write_error(&weights_path))?;
        self.sha256 = digest_file(&weights_path)
            .map_err(unreadable(&weights_path))?
            .sha256;
        Ok(())
    }

    /// The LoRA scaling factor: `α/r`, or `α/√r` with rsLoRA.
    pub fn scale(&self) -> f32 {
        let r = self.config.r as f64;
        (if self.config.use_rslora {
            self.config.lora_alpha / r.sqrt()
        } else {
            self.config.lora_alpha / r
        }) as f32
    }

    /// Merges into base weights: `W += scale · B·A` for each pair, saved tensors replace the base's.
    pub fn merge_into(&self, weights: &mut TensorMap, config: &BertConfig) -> Result<(), Error> {
        let scale = self.scale();
        for (module, pair) in &self.pairs {
            let name = format!("{module}.weight");
            let base = weights.get_mut(&name).ok_or_else(|| Error::UnknownModule {
                module: module.clone(),
            })?;
            let [out, inp] = base.shape[..] else {
                return Err(Error::NotLinear {
                    module: module.clone(),
                    shape: base.shape.clone(),
                });
            };
            let r = self.config.r;
            expect_shape(&format!("{module}.lora_A.weight"), &pair.a, &[r, inp])?;
            expect_shape(&format!("{module}.lora_B.weight"), &pair.b, &[out, r])?;
            for o in 0..out {
                let b_row = &pair.b.data[o * r..(o + 1) * r];
                let w_row = &mut base.data[o * inp..(o + 1) * inp];
                for (k, &b) in b_row.iter().enumerate() {
                    let a_row = &pair.a.data[k * inp..(k + 1) * inp];
                    let sb = scale * b;
                    w_row.iter_mut().zip(a_row).for_each(|(w, a)| *w += sb * a);
                }
            }
        }
        let h = config.hidden_size;
        for (name, tensor) in &self.saved {
            let expected = match weights.get(name) {
                Some(base) => base.shape.clone(),
                None => match name.as_str() {
                    "pooler.dense.weight" => vec![h, h],
                    "pooler.dense.bias" => vec![h],
                    "classifier.weight" => vec![tensor.shape.first().copied().unwrap_or(0), h],
                    "classifier.bias" => vec![tensor.shape.first().copied().unwrap_or(0)],
                    _ => {
                        return Err(Error::UnknownModule {
                            module: name.clone(),
                        })
                    }
                },
            };
            expect_shape(name, tensor, &expected)?;
            weights.insert(name.clone(), tensor.clone());
        }
        Ok(())
    }

    /// What `model.json` records about this adapter.
    pub fn summary(&self) -> AdapterSummary {
        AdapterSummary {
            sha256: self.sha256.clone(),
            rank: self.config.r,
            alpha: self.config.lora_alpha,
            target_modules: self.config.target_modules.to_list(),
        }
    }
}

/// `map_err` adapter: `path` could not be read or parsed.
fn unreadable<E>(path: &Path) -> impl FnOnce(E) -> Error + '_
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |error| Error::Unreadable {
        path: path.to_path_buf(),
        source: error.into(),
    }
}

/// `map_err` adapter: `path` could not be written.
fn write_error<E>(path: &Path) -> impl FnOnce(E) -> Error + '_
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |error| Error::Write {
        path: path.to_path_buf(),
        source: error.into(),
    }
}

fn check_config(config: &AdapterConfig, path: &Path) -> Result<(), Error> {
    let unsupported = |field, requirement| {
        Err(Error::Unsupported {
            path: path.to_path_buf(),
            field,
            requirement,
        })
    };
    if config.peft_type != "LORA" {
        return unsupported("peft_type", "only LORA adapters are supported");
    }
    if config.r == 0 {
        return unsupported("r", "rank must be at least 1");
    }
    if config.fan_in_fan_out {
        return unsupported("fan_in_fan_out", "BERT uses nn.Linear: must be false");
    }
    if config.bias != "none" {
        return unsupported("bias", "only bias=\"none\" is supported");
    }
    Ok(())
}

fn expect_shape(name: &str, tensor: &Tensor, expected: &[usize]) -> Result<(), Error> {
    if tensor.shape != expected {
        return Err(Error::ShapeMismatch {
            name: name.into(),
            expected: expected.to_vec(),
            found: tensor.shape.clone(),
        });
    }
    Ok(())
}

/// PEFT key → canonical name: drop `base_model.model.`, `bert.`, the adapter name `.default`,
/// and `modules_to_save.`.
fn canonical_name(key: &str) -> String {
    let key = key.strip_prefix(PEFT_PREFIX).unwrap_or(key);
    let key = key.strip_prefix("bert.").unwrap_or(key);
    key.replace(".modules_to_save.default.", ".")
        .replace(".modules_to_save.", ".")
        .replace(".default.weight", ".weight")
}

/// Canonical name → PEFT key (`classifier.*` sits beside `bert`, the rest inside it).
fn peft_name(name: &str) -> String {
    if name.starts_with("classifier.") {
        format!("{PEFT_PREFIX}{name}")
    } else {
        format!("{PEFT_PREFIX}bert.{name}")
    }
}

/// `encoder.layer.0.attention.self.query.lora_A.weight` → `encoder.layer.0.attention.self.query`.
fn lora_module(name: &str, part: &str) -> Option<String> {
    name.strip_suffix(&format!(".{part}.weight"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_names_round_trip() {
        for name in [
            "classifier.weight",
            "pooler.dense.bias",
            "encoder.layer.3.attention.self.value.lora_B.weight",
        ] {
            assert_eq!(canonical_name(&peft_name(name)), name);
        }
        assert_eq!(
            canonical_name("base_model.model.classifier.modules_to_save.default.weight"),
            "classifier.weight"
        );
        assert_eq!(
            lora_module(
                "encoder.layer.0.attention.self.query.lora_A.weight",
                "lora_A"
            )
            .as_deref(),
            Some("encoder.layer.0.attention.self.query")
        );
    }

    #[test]
    fn peft_target_modules_load_as_a_list_or_as_one_pattern() {
        for targets in [
            serde_json::json!(["query", "value"]),
            serde_json::json!("all-linear"),
        ] {
            let json = serde_json::json!({
                "peft_type": "LORA", "r": 8, "lora_alpha": 16.0, "target_modules": targets
            });
            let config: AdapterConfig = serde_json::from_value(json.clone()).unwrap();
            let written = serde_json::to_value(&config).unwrap();
            assert_eq!(
                written["target_modules"], json["target_modules"],
                "kept as written"
            );
        }
    }

    #[test]
    fn an_adapter_on_a_tensor_that_is_no_matrix_is_an_error() {
        let config: AdapterConfig = serde_json::from_value(serde_json::json!({
            "peft_type": "LORA", "r": 2, "lora_alpha": 4.0, "target_modules": ["LayerNorm"]
        }))
        .unwrap();
        assert_eq!(config.target_modules.to_list(), ["LayerNorm"]);
        let tensor = |shape: Vec<usize>| Tensor {
            data: vec![0.0; shape.iter().product()],
            shape,
        };
        let module = "embeddings.LayerNorm".to_string();
        let pair = LoraPair {
            a: tensor(vec![2, 4]),
            b: tensor(vec![4, 2]),
        };
        let adapter = LoraAdapter {
            config,
            pairs: BTreeMap::from([(module.clone(), pair)]),
            saved: TensorMap::new(),
            sha256: String::new(),
        };
        let mut weights = TensorMap::from([(format!("{module}.weight"), tensor(vec![4]))]);
        let error = adapter
            .merge_into(&mut weights, &BertConfig::default())
            .unwrap_err();
        assert!(
            matches!(&error, Error::NotLinear { module: m, shape } if *m == module && shape == &[4]),
            "{error}"
        );
    }
}
