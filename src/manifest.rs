//! `model.json`: what a built model directory contains and how it was made.
//!
//! Written by the build step, read by everything that serves the model. Our own format, so it is
//! read strictly (`deny_unknown_fields`): a typo in a hand-edited file is an error, not a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pooling::Pooling;
use crate::tokenizer::Truncation;

/// File name of the manifest inside a model directory.
pub const MANIFEST_FILE: &str = "model.json";

/// Errors of reading or writing `model.json`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing or unreadable.
    #[error("{path}: cannot read model manifest")]
    Unreadable {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid manifest: not JSON, or a field missing, unknown or mistyped.
    #[error("{path}: invalid model manifest")]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest lists fewer than two labels.
    #[error("{path}: invalid model manifest: labels: need at least 2, found {found}")]
    TooFewLabels {
        /// The manifest path.
        path: PathBuf,
        /// The number of labels listed.
        found: usize,
    },
    /// The manifest's truncation policy is unusable.
    #[error("{path}: invalid model manifest: truncation")]
    BadTruncation {
        /// The manifest path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: crate::tokenizer::Error,
    },
    /// Writing failed.
    #[error("{path}: cannot write model manifest")]
    Write {
        /// The manifest path.
        path: PathBuf,
        /// The I/O or JSON error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The contents of `model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Model name (the directory name by default).
    pub name: String,
    /// Class labels, index = output column.
    pub labels: Vec<String>,
    /// Truncation policy the model was trained and built with.
    pub truncation: Truncation,
    /// The graph file served by default (`model.int8.onnx`).
    pub default_graph: String,
    /// The base checkpoint.
    pub base: BaseModel,
    /// The LoRA adapter merged in, if any.
    pub adapter: Option<AdapterSummary>,
    /// Which rows of the last hidden states the head reads (`cls` when absent).
    #[serde(default, skip_serializing_if = "Pooling::is_default")]
    pub pooling: Pooling,
    /// The temperature the logits are divided by (folded into the classifier), when the
    /// model is calibrated (`calibration.json` of the adapter, or `--temperature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// True when the head is random (test builds only: predictions are meaningless).
    pub random_head: bool,
    /// sha256 and size of every file of the directory except this one.
    pub files: BTreeMap<String, FileDigest>,
    /// Measured agreement between the quantized and the f32 graph.
    pub parity: Vec<Parity>,
    /// Version of sentimq that built it.
    pub built_by: String,
}

/// Where the base weights came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseModel {
    /// Hugging Face id or local directory as given to `--base`.
    pub id: String,
    /// Hub revision, when downloaded.
    pub revision: Option<String>,
    /// sha256 of the weights file.
    pub weights_sha256: String,
    /// Layers, hidden size, heads.
    pub architecture: String,
}

/// The adapter merged into the base.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSummary {
    /// sha256 of `adapter_model.safetensors`.
    pub sha256: String,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// Adapted projections.
    pub target_modules: Vec<String>,
}

/// Digest of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Agreement of one graph with the f32 graph on the build's sample texts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parity {
    /// The graph file compared.
    pub graph: String,
    /// Number of texts.
    pub texts: usize,
    /// Fraction of texts with the same label as f32.
    pub label_agreement: f64,
    /// Largest absolute difference of any class probability.
    pub max_probability_diff: f64,
}

impl ModelManifest {
    /// Reads `model.json` from a model directory.
    pub fn read(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Unreadable {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    /// Parses and checks the text of a `model.json` read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let manifest: ModelManifest =
            serde_json::from_str(text).map_err(|source| Error::Invalid {
                path: path.to_path_buf(),
                source,
            })?;
        manifest.check(path)?;
        Ok(manifest)
    }

    fn check(&self, path: &Path) -> Result<(), Error> {
        if self.labels.len() < 2 {
            return Err(Error::TooFewLabels {
                path: path.to_path_buf(),
                found: self.labels.len(),
            });
        }
        self.truncation
            .validate()
            .map_err(|source| Error::BadTruncation {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(())
    }

    /// Writes `model.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Write {
            path: path.clone(),
            source: e.into(),
        })?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::Write {
            path,
            source: e.into(),
        })
    }

    /// Short model identity for results: `<name>@<first 12 hex of the default graph's sha256>`.
    pub fn identity(&self) -> String {
        let hash = self
            .files
            .get(&self.default_graph)
            .map(|f| f.sha256.get(..12).unwrap_or(&f.sha256))
            .unwrap_or("unknown");
        format!("{}@{}", self.name, hash)
    }
}

/// sha256 and size of a file, streamed.
pub fn digest_file(path: &Path) -> std::io::Result<FileDigest> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    Ok(FileDigest {
        sha256: hex(&hasher.finalize()),
        bytes,
    })
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
