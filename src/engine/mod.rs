//! Runs an exported classifier graph with tract: load and optimize once, run many batches.
//!
//! [`Engine::load`] parses the ONNX file, keeps `batch` and `sequence` symbolic, optimizes the
//! graph and makes one runnable plan, shared (`Arc`) by every thread. Each thread that runs
//! batches repeatedly holds a [`Session`] (tract's per-run state and scratch), so nothing is
//! re-planned per batch. tract types do not leave this module.
//!
//! ```no_run
//! use sentimq::engine::Engine;
//! use sentimq::tokenizer::{Encoded, TokenBatch};
//! let engine = Engine::load("models/imdb-minilm/model.int8.onnx".as_ref())?;
//! let batch = TokenBatch::from_encoded(&[Encoded { ids: vec![101, 2204, 102], is_truncated: false }], 0);
//! let probabilities = engine.classify(&batch)?;
//! assert_eq!(probabilities.rows(), 1);
//! # Ok::<(), sentimq::engine::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::tokenizer::TokenBatch;

/// Errors of loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing or unreadable.
    #[error("{path}: cannot read model: {reason}")]
    Unreadable {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// tract could not parse, type or optimize the graph (corrupt or foreign file).
    #[error("{path}: not a usable sentimq ONNX classifier: {reason}")]
    BadModel {
        /// The model file.
        path: PathBuf,
        /// tract's error chain.
        reason: String,
    },
    /// The graph lacks an output the engine needs.
    #[error("{path}: the graph has no output named {name:?}")]
    MissingOutput {
        /// The model file.
        path: PathBuf,
        /// The expected output name.
        name: &'static str,
    },
    /// The batch's buffers disagree with its declared shape.
    #[error(
        "token batch is inconsistent: {batch}×{sequence} but {ids} ids and {mask} mask values"
    )]
    BadBatch {
        /// Declared rows.
        batch: usize,
        /// Declared row length.
        sequence: usize,
        /// Number of ids.
        ids: usize,
        /// Number of mask values.
        mask: usize,
    },
    /// tract failed while running a batch.
    #[error("inference failed: {0}")]
    Run(String),
}

type Plan = Arc<TypedRunnableModel>;

/// A loaded, optimized classifier graph. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Engine {
    plan: Plan,
    path: PathBuf,
    output_names: Arc<[String]>,
    probabilities: usize,
}

/// Per-thread run state over an [`Engine`]'s plan; reuse it for every batch of a thread.
pub struct Session {
    state: TypedSimpleState,
    probabilities: usize,
}

/// Row-major `(rows, labels)` class probabilities of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Probabilities {
    values: Vec<f32>,
    labels: usize,
}

impl Probabilities {
    /// Number of rows (texts).
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.labels).unwrap_or(0)
    }

    /// Number of classes.
    pub fn labels(&self) -> usize {
        self.labels
    }

    /// The probabilities of row `row`, one per class.
    pub fn row(&self, row: usize) -> &[f32] {
        &self.values[row * self.labels..(row + 1) * self.labels]
    }

    /// Iterates over rows.
    pub fn iter(&self) -> impl Iterator<Item = &[f32]> {
        self.values.chunks_exact(self.labels.max(1))
    }
}

/// One named f32 output of a run, for checks against reference implementations.
#[derive(Clone, Debug)]
pub struct NamedOutput {
    /// The graph output name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl Engine {
    /// Loads, types and optimizes an ONNX classifier with symbolic `batch` and `sequence`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let bad = |e: TractError| Error::BadModel {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let model = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(bad)?;
        let output_names: Arc<[String]> = model
            .output_outlets()
            .map_err(bad)?
            .iter()
            .map(|&outlet| {
                model
                    .outlet_label(outlet)
                    .unwrap_or(&model.node(outlet.node).name)
                    .to_string()
            })
            .collect();
        let probabilities = output_names
            .iter()
            .position(|n| n == "probabilities")
            .ok_or(Error::MissingOutput {
                path: path.to_path_buf(),
                name: "probabilities",
            })?;
        let plan = model
            .into_optimized()
            .map_err(bad)?
            .into_runnable()
            .map_err(bad)?;
        Ok(Engine {
            plan,
            path: path.to_path_buf(),
            output_names,
            probabilities,
        })
    }

    /// The file this engine was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A per-thread session for repeated runs.
    pub fn session(&self) -> Result<Session, Error> {
        let state = self
            .plan
            .spawn()
            .map_err(|e| Error::Run(format!("{e:#}")))?;
        Ok(Session {
            state,
            probabilities: self.probabilities,
        })
    }

    /// Classifies one batch (convenience for one-off calls; threads should hold a [`Session`]).
    pub fn classify(&self, batch: &TokenBatch) -> Result<Probabilities, Error> {
        self.session()?.classify(batch)
    }

    /// Runs a batch and returns every graph output as f32 (hidden states for golden checks).
    pub fn run_all(&self, batch: &TokenBatch) -> Result<Vec<NamedOutput>, Error> {
        let outputs = self
            .plan
            .run(inputs(batch)?)
            .map_err(|e| Error::Run(format!("{e:#}")))?;
        outputs
            .iter()
            .zip(self.output_names.iter())
            .map(|(value, name)| {
                let values = to_f32_vec(value)?;
                Ok(NamedOutput {
                    name: name.clone(),
                    shape: value.shape().to_vec(),
                    values,
                })
            })
            .collect()
    }
}

impl Session {
    /// Classifies one batch: `(batch, sequence)` ids and mask → `(batch, labels)` probabilities.
    pub fn classify(&mut self, batch: &TokenBatch) -> Result<Probabilities, Error> {
        if batch.is_empty() {
            return Ok(Probabilities {
                values: Vec::new(),
                labels: 0,
            });
        }
        let outputs = self
            .state
            .run(inputs(batch)?)
            .map_err(|e| Error::Run(format!("{e:#}")))?;
        let output = &outputs[self.probabilities];
        let labels = output.shape().last().copied().unwrap_or(0);
        Ok(Probabilities {
            values: to_f32_vec(output)?,
            labels,
        })
    }
}

fn inputs(batch: &TokenBatch) -> Result<TVec<TValue>, Error> {
    let (rows, seq) = (batch.batch, batch.sequence);
    if batch.input_ids.len() != rows * seq || batch.attention_mask.len() != rows * seq {
        return Err(Error::BadBatch {
            batch: rows,
            sequence: seq,
            ids: batch.input_ids.len(),
            mask: batch.attention_mask.len(),
        });
    }
    let ids = Tensor::from_shape(&[rows, seq], &batch.input_ids)
        .map_err(|e| Error::Run(format!("{e:#}")))?;
    let mask = Tensor::from_shape(&[rows, seq], &batch.attention_mask)
        .map_err(|e| Error::Run(format!("{e:#}")))?;
    Ok(tvec!(ids.into_tvalue(), mask.into_tvalue()))
}

fn to_f32_vec(value: &TValue) -> Result<Vec<f32>, Error> {
    let values = value
        .cast_to::<f32>()
        .map_err(|e| Error::Run(format!("{e:#}")))?;
    let view = values
        .try_as_plain_ram()
        .map_err(|e| Error::Run(format!("{e:#}")))?;
    let slice = view
        .as_slice::<f32>()
        .map_err(|e| Error::Run(format!("{e:#}")))?;
    Ok(slice.to_vec())
}

/// Sets how many threads tract's matrix products may use, process-wide (1 = no pool).
///
/// Keep `workers × intra-op threads ≤ cores`: the daemon runs several workers with 1 thread
/// each; the tool's one-off commands use all cores.
pub fn set_intra_op_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    if threads <= 1 {
        set_default_executor(Executor::SingleThread);
    } else {
        set_default_executor(Executor::multithread(threads));
    }
}
