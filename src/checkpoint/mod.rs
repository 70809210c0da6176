//! Hugging Face BERT checkpoints: `config.json` plus weights, as f32 tensors with canonical names.
//!
//! This module owns everything between a checkpoint on disk (or on the Hub) and a map of
//! named tensors: resolving `--base` ([`resolve_base`]), parsing and validating the config
//! ([`BertConfig`]), reading weights (`model.safetensors`, or `pytorch_model.bin` in PyTorch's
//! zip or legacy format, through a non-executing pickle reader), renaming keys to Hugging
//! Face's `BertModel` names once (dropping a `bert.` prefix, `gamma`/`beta`, and tensors the
//! encoder does not use), and checking every shape against the config. Model maths, LoRA and
//! export are left to the modules that consume a [`Checkpoint`]; for their own safetensors
//! files (adapters) they use [`read_safetensors`] and [`write_safetensors`].
//!
//! Canonical names are `embeddings.{word,position,token_type}_embeddings.weight`,
//! `embeddings.LayerNorm.{weight,bias}`, per layer `i`
//! `encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}`,
//! `encoder.layer.{i}.attention.output.{dense,LayerNorm}.{weight,bias}`,
//! `encoder.layer.{i}.intermediate.dense.{weight,bias}`,
//! `encoder.layer.{i}.output.{dense,LayerNorm}.{weight,bias}`, and where the checkpoint has
//! them `pooler.dense.{weight,bias}` and `classifier.{weight,bias}`. Linear weights are
//! `[out_features, in_features]`, as PyTorch stores them.
//!
//! ```no_run
//! use sentimq::checkpoint::{resolve_base, Checkpoint};
//!
//! # fn main() -> Result<(), sentimq::checkpoint::Error> {
//! let base = resolve_base("huawei-noah/TinyBERT_General_4L_312D")?;
//! let checkpoint = Checkpoint::load(&base.dir)?;
//! let word_embeddings = checkpoint.get("embeddings.word_embeddings.weight")?;
//! let config = &checkpoint.config;
//! assert_eq!(word_embeddings.shape, [config.vocab_size, config.hidden_size]);
//! # Ok(())
//! # }
//! ```

mod config;
mod dtype;
mod error;
mod head;
mod hub;
mod keys;
mod safetensors;
mod torch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use self::config::{BertConfig, HiddenAct};
pub use self::error::Error;
pub use self::head::insert_random_head;
pub use self::hub::{resolve_base, ResolvedBase};
pub use self::safetensors::{read_safetensors, write_safetensors};

/// Weight files in order of preference, with the reader for each.
const WEIGHT_FILES: [(&str, Reader); 2] = [
    ("model.safetensors", safetensors::read),
    ("pytorch_model.bin", torch::read),
];

/// Reads the tensors of one weights file whose key the predicate keeps.
type Reader = fn(&Path, &dyn Fn(&str) -> bool) -> Result<FileTensors, Error>;

/// Name suffixes of weight files in formats this module does not read, quoted in
/// [`Error::NoWeights`] so the user sees what the directory does hold.
const UNSUPPORTED_WEIGHT_SUFFIXES: [&str; 9] = [
    ".h5",
    ".msgpack",
    ".index.json",
    ".onnx",
    ".ckpt",
    ".ckpt.index",
    ".ot",
    ".pt",
    ".pth",
];

/// A dense row-major f32 tensor.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    /// Size of each dimension, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements, last dimension fastest.
    pub data: Vec<f32>,
}

impl fmt::Debug for Tensor {
    /// Shape and the first few elements: real tensors have millions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 4;
        let head = &self.data[..self.data.len().min(SHOWN)];
        let more = if self.data.len() > SHOWN { ", .." } else { "" };
        write!(
            f,
            "Tensor {{ shape: {:?}, data: {head:?}{more} }}",
            self.shape
        )
    }
}

/// Tensors by canonical name, in name order.
pub type TensorMap = BTreeMap<String, Tensor>;

/// A loaded BERT checkpoint: its config and its encoder (plus pooler and classifier, where
/// present) tensors, renamed and shape-checked.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its `config.json`, validated.
    pub config: BertConfig,
    /// Tensors by canonical name; see the [module docs](self).
    pub tensors: TensorMap,
    /// The weights file the tensors came from.
    pub weights_file: PathBuf,
}

impl Checkpoint {
    /// Loads `dir/config.json` and the weights next to it (`model.safetensors`, else
    /// `pytorch_model.bin` in PyTorch's zip or legacy format), converts them to f32, maps
    /// their keys to canonical names, and checks every encoder tensor against the config.
    ///
    /// Errors: [`Error::NotADirectory`], [`Error::MissingConfig`], [`Error::ParseConfig`] and
    /// [`Error::InvalidConfig`] for the config; [`Error::NoWeights`] when no supported weights
    /// file exists; [`Error::Safetensors`], [`Error::Zip`], [`Error::NotTorchFile`],
    /// [`Error::Pickle`] and kin for corrupt weights; [`Error::UnknownKeyLayout`],
    /// [`Error::MissingTensor`] and [`Error::ShapeMismatch`] when the tensors do not fit.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        if !dir.is_dir() {
            return Err(Error::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        config.validate()?;

        let (weights_file, read) = WEIGHT_FILES
            .iter()
            .map(|&(name, read)| (dir.join(name), read))
            .find(|(path, _)| path.is_file())
            .ok_or_else(|| Error::NoWeights {
                dir: dir.to_path_buf(),
                found: unsupported_weight_files(dir),
            })?;
        let is_used = |key: &str| keys::canonical_name(key).is_some();
        let file = read(&weights_file, &is_used)?;
        let tensors = keys::canonicalize(&weights_file, file.tensors)?;
        keys::check_layout(&weights_file, &config, &tensors, &file.keys)?;

        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tensors,
            weights_file,
        })
    }

    /// The tensor with canonical name `name`.
    ///
    /// Errors: [`Error::MissingTensor`] naming the weights file, e.g. for `pooler.dense.weight`
    /// in a checkpoint saved without a pooler.
    pub fn get(&self, name: &str) -> Result<&Tensor, Error> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.weights_file.clone(),
            name: name.to_string(),
        })
    }
}

/// What a weights reader returns: every key of the file, and the kept tensors under their keys
/// as stored (before renaming).
#[derive(Debug)]
pub(crate) struct FileTensors {
    keys: Vec<String>,
    tensors: Vec<(String, Tensor)>,
}

/// Files of `dir` that look like weights in a format this module does not read.
fn unsupported_weight_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            UNSUPPORTED_WEIGHT_SUFFIXES
                .iter()
                .any(|suffix| name.ends_with(suffix))
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests;
