//! Runs an exported classifier graph with tract: parse once, optimize once per input shape,
//! run many batches.
//!
//! [`Engine::load`] parses the ONNX file, types and declutters it once with symbolic `rows`
//! and `sequence` dimensions, and keeps that model. There is no single plan with symbolic
//! dimensions: tract fuses the element-wise ops only when it knows their sizes, so the engine
//! optimizes one runnable plan per concrete `(rows, sequence)` shape, on first use
//! (`plans.rs`). [`Session::classify`] runs each text as its own row, padded with
//! the batch's pad id up to its length bucket (every 16 tokens up to 128, 32 up to 256, 64 up
//! to 512: [`EngineOptions::sequence_bucket`] is the finest step), so a handful of plans covers
//! every length; [`Engine::run_all`] runs a batch at its exact shape. Plans live in an LRU cache
//! of at most [`EngineOptions::plan_cache_size`] (the daemon's `model.plans`), shared (`Arc`)
//! by every clone and thread; they share one copy of the packed weights, so a plan costs only
//! its graph. Loading optimizes the smallest bucket's plan, so a corrupt or foreign file fails
//! there. Each thread that runs batches repeatedly holds a [`Session`] (tract's per-run state
//! for each recently used shape, and scratch), so nothing is re-planned per batch once its
//! shape is cached. tract types do not leave this module.
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

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2_int8;
mod fused;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod int8_blocks;
mod model_file;
#[cfg(target_arch = "aarch64")]
mod neon_int8;
mod operators;
mod packing;
mod plans;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod softmax_rows;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod weight_packs;

pub use plans::EngineOptions;
use plans::{bucket, buckets_up_to, PlanCache, Shape};

/// Errors of loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing or unreadable.
    #[error("{path}: cannot read model")]
    Unreadable {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// tract could not parse, type or optimize the graph (corrupt or foreign file).
    #[error("{path}: not a usable sentimq ONNX classifier")]
    BadModel {
        /// The model file.
        path: PathBuf,
        /// tract's error, with its context chain as `source()`s.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The graph uses an operator or opset outside the ones `sentimq build` writes.
    #[error("{path}: {reason}")]
    UnsupportedGraph {
        /// The model file.
        path: PathBuf,
        /// What it uses that the engine does not run.
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
    /// A shape with no cached plan, after the parsed model was released
    /// ([`Engine::release_parsed_model`]).
    #[error("{path}: no plan for {rows}×{sequence} tokens, and the parsed model was released once every length bucket had its plan")]
    NoPlan {
        /// The model file.
        path: PathBuf,
        /// Rows of the shape asked for.
        rows: usize,
        /// Its sequence length.
        sequence: usize,
    },
    /// A token id past the rows of the graph's word-embedding table (a tokenizer larger
    /// than the graph's vocabulary).
    #[error("{path}: token id {id} is past the graph's {rows}-word vocabulary")]
    TokenOutOfRange {
        /// The model file.
        path: PathBuf,
        /// The id.
        id: i64,
        /// Rows of the word-embedding table.
        rows: usize,
    },
    /// The graph's `probabilities` output changed width with the text's length.
    #[error("{path}: the graph gives {found} probabilities per text for one length and {expected} for another")]
    OutputWidth {
        /// The model file.
        path: PathBuf,
        /// Width of the batch's first row.
        expected: usize,
        /// Width of a later row.
        found: usize,
    },
    /// tract failed while running a batch.
    #[error("inference failed")]
    Run(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A loaded classifier graph with its cache of shape-specialised plans. Cheap to clone
/// (clones share the cache); `Send + Sync`.
#[derive(Clone)]
pub struct Engine {
    plans: Arc<PlanCache>,
    path: PathBuf,
    output_names: Arc<[String]>,
    probabilities: usize,
    vocabulary: Option<usize>,
}

/// Per-thread run state over an [`Engine`]: tract's state for each recently used shape.
/// Reuse one per thread for every batch.
pub struct Session {
    engine: Engine,
    states: Vec<(Shape, TypedSimpleState)>,
    row: TokenBatch,
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
    /// Loads an ONNX classifier with default [`EngineOptions`].
    pub fn load(path: &Path) -> Result<Self, Error> {
        Self::load_with(path, EngineOptions::default())
    }

    /// Parses an ONNX classifier once and optimizes its smallest sequence bucket, so a corrupt
    /// or foreign file fails here rather than on the first text.
    pub fn load_with(path: &Path, options: EngineOptions) -> Result<Self, Error> {
        // The file is walked, not read whole: the data of its large initializers stays in it
        // until tract makes each tensor (`model_file`), and the embedding table's rows are
        // read from a map of it (`fused`), so the weights are in memory once while loading.
        let (mut proto, file) = model_file::read(path).map_err(|e| match e {
            model_file::ReadError::Io(source) => Error::Unreadable {
                path: path.to_path_buf(),
                source,
            },
            other => Error::BadModel {
                path: path.to_path_buf(),
                source: other.into(),
            },
        })?;
        let bad = |e: TractError| Error::BadModel {
            path: path.to_path_buf(),
            source: e.into(),
        };
        if let Some(reason) = operators::unsupported(&proto) {
            return Err(Error::UnsupportedGraph {
                path: path.to_path_buf(),
                reason,
            });
        }
        let vocabulary = vocabulary_rows(&proto);
        // The engine's own operators for the int8 layers' (de)quantization: same outputs, fewer passes.
        if let Some(graph) = proto.graph.as_mut() {
            fused::fuse(graph);
        }
        let file = Arc::new(file);
        let mut onnx = operators::framework();
        onnx.provider = file.clone();
        let directory = file.directory().to_str().ok_or_else(|| Error::Unreadable {
            path: path.to_path_buf(),
            source: std::io::Error::other("the model's directory is not a UTF-8 path"),
        })?;
        let parsed = onnx.parse(&proto, Some(directory)).map_err(bad)?;
        drop(proto);
        if !parsed.unresolved_inputs.is_empty() {
            return Err(bad(tract_onnx::tract_core::internal::format_err!(
                "the graph reads values nothing computes: {:?}",
                parsed.unresolved_inputs
            )));
        }
        let mut model = parsed.model;
        fused::attach_tables(&mut model, &file).map_err(bad)?;
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
        let plans = Arc::new(PlanCache::new(model, path, options)?);
        plans.get(Shape {
            rows: 1,
            sequence: bucket(1, options.sequence_bucket),
        })?;
        Ok(Engine {
            plans,
            path: path.to_path_buf(),
            output_names,
            probabilities,
            vocabulary,
        })
    }

    /// Optimizes the single-row plans of every length bucket up to `max_tokens` (rounded up to
    /// a bucket), smallest first and at most as many as the plan cache holds, so that the first
    /// texts of those lengths wait for no optimization (50–250 ms each on x86, about a second on
    /// a Pi 4). Returns how many plans are cached for those buckets afterwards.
    pub fn warm_up(&self, max_tokens: usize) -> Result<usize, Error> {
        self.warm_up_while(max_tokens, || true)
    }

    /// [`Engine::warm_up`], asking `keep_going` before each plan not cached yet and stopping
    /// when it says no; returns how many plans are cached for the buckets it went through.
    pub fn warm_up_while(
        &self,
        max_tokens: usize,
        mut keep_going: impl FnMut() -> bool,
    ) -> Result<usize, Error> {
        let options = self.plans.options;
        let mut warm = 0;
        for sequence in
            buckets_up_to(max_tokens, options.sequence_bucket).take(options.plan_cache_size.max(1))
        {
            let shape = Shape { rows: 1, sequence };
            if !self.plans.contains(shape) && !keep_going() {
                break;
            }
            self.plans.get(shape)?;
            warm += 1;
        }
        Ok(warm)
    }

    /// Once the single-row plan of every length bucket up to `max_tokens` is cached (and the
    /// cache holds them all), drops the parsed model plans are made from: what [`Session::classify`]
    /// needs for texts of up to `max_tokens` is then all built, and the parsed graph's memory
    /// is returned, except the constants the plans share with it (the embedding tables). Afterwards a shape without a plan
    /// ([`Engine::run_all`] of another shape, a longer text) is [`Error::NoPlan`]. Returns
    /// whether it released.
    pub fn release_parsed_model(&self, max_tokens: usize) -> bool {
        let step = self.plans.options.sequence_bucket;
        let shapes: Vec<Shape> = buckets_up_to(max_tokens, step)
            .map(|sequence| Shape { rows: 1, sequence })
            .collect();
        self.plans.release_source(&shapes)
    }

    /// Rows of the graph's word-embedding table: token ids must be below it (`None` when no
    /// `Gather` reads the ids from an initializer).
    pub fn vocabulary(&self) -> Option<usize> {
        self.vocabulary
    }

    /// [`Error::TokenOutOfRange`] for the first id of `batch` past the vocabulary: tract's
    /// `Gather` does not check its indices.
    fn check_ids(&self, batch: &TokenBatch) -> Result<(), Error> {
        let Some(rows) = self.vocabulary else {
            return Ok(());
        };
        match batch
            .input_ids
            .iter()
            .find(|&&id| usize::try_from(id).map_or(true, |id| id >= rows))
        {
            Some(&id) => Err(Error::TokenOutOfRange {
                path: self.path.clone(),
                id,
                rows,
            }),
            None => Ok(()),
        }
    }

    /// The file this engine was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A per-thread session for repeated runs.
    pub fn session(&self) -> Result<Session, Error> {
        Ok(Session {
            engine: self.clone(),
            states: Vec::new(),
            row: TokenBatch::default(),
        })
    }

    /// Classifies one batch (convenience for one-off calls; threads should hold a [`Session`]).
    pub fn classify(&self, batch: &TokenBatch) -> Result<Probabilities, Error> {
        self.session()?.classify(batch)
    }

    /// Runs a batch exactly as given (no bucketing) and returns every graph output as f32
    /// (hidden states for golden checks).
    pub fn run_all(&self, batch: &TokenBatch) -> Result<Vec<NamedOutput>, Error> {
        self.check_ids(batch)?;
        let plan = self.plans.get(Shape {
            rows: batch.batch,
            sequence: batch.sequence,
        })?;
        let outputs = plan.run(inputs(batch)?).map_err(run_error)?;
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
    ///
    /// Each row runs on its own, padded with `batch.pad_id` only up to its length bucket: with
    /// tract, a plan specialised to one shape is ~40 % faster than a symbolic one, and batch 1
    /// wastes no compute on padding.
    pub fn classify(&mut self, batch: &TokenBatch) -> Result<Probabilities, Error> {
        check_batch(batch)?;
        self.engine.check_ids(batch)?;
        let mut values = Vec::new();
        let mut labels = 0;
        let step = self.engine.plans.options.sequence_bucket;
        for row in 0..batch.batch {
            let tokens = batch.row_tokens(row).max(1);
            let sequence = bucket(tokens, step);
            let start = row * batch.sequence;
            self.row.batch = 1;
            self.row.sequence = sequence;
            self.row.pad_id = batch.pad_id;
            self.row.input_ids.clear();
            self.row.attention_mask.clear();
            let used = tokens.min(batch.sequence);
            self.row
                .input_ids
                .extend_from_slice(&batch.input_ids[start..start + used]);
            self.row.input_ids.resize(sequence, batch.pad_id);
            self.row
                .attention_mask
                .extend_from_slice(&batch.attention_mask[start..start + used]);
            self.row.attention_mask.resize(sequence, 0);
            let output = self.run_row(Shape { rows: 1, sequence })?;
            if row > 0 && output.len() != labels {
                return Err(Error::OutputWidth {
                    path: self.engine.path.clone(),
                    expected: labels,
                    found: output.len(),
                });
            }
            labels = output.len();
            values.extend_from_slice(&output);
        }
        Ok(Probabilities { values, labels })
    }

    fn run_row(&mut self, shape: Shape) -> Result<Vec<f32>, Error> {
        let index = match self.states.iter().position(|(s, _)| *s == shape) {
            Some(index) => index,
            None => {
                let plan = self.engine.plans.get(shape)?;
                let state = plan.spawn().map_err(run_error)?;
                if self.states.len() >= self.engine.plans.options.plan_cache_size.max(1) {
                    self.states.remove(0);
                }
                self.states.push((shape, state));
                self.states.len() - 1
            }
        };
        let state = &mut self.states[index].1;
        let outputs = state.run(inputs(&self.row)?).map_err(run_error)?;
        to_f32_vec(&outputs[self.engine.probabilities])
    }
}

/// tract's error (anyhow's, whose context chain becomes `source()`s) as [`Error::Run`].
fn run_error(error: TractError) -> Error {
    Error::Run(error.into())
}

fn check_batch(batch: &TokenBatch) -> Result<(), Error> {
    let (rows, seq) = (batch.batch, batch.sequence);
    if batch.input_ids.len() != rows * seq || batch.attention_mask.len() != rows * seq {
        return Err(Error::BadBatch {
            batch: rows,
            sequence: seq,
            ids: batch.input_ids.len(),
            mask: batch.attention_mask.len(),
        });
    }
    Ok(())
}

/// Rows of the smallest initializer that a `Gather` indexes with the graph's first input (the
/// token ids): the word-embedding table, or the int8 graph's table and its row scales.
fn vocabulary_rows(proto: &tract_onnx::pb::ModelProto) -> Option<usize> {
    let graph = proto.graph.as_ref()?;
    let ids = &graph.input.first()?.name;
    graph
        .node
        .iter()
        .filter(|node| node.op_type == "Gather" && node.input.get(1) == Some(ids))
        .filter_map(|node| {
            let table = node.input.first()?;
            let initializer = graph.initializer.iter().find(|i| &i.name == table)?;
            usize::try_from(*initializer.dims.first()?).ok()
        })
        .min()
}

fn inputs(batch: &TokenBatch) -> Result<TVec<TValue>, Error> {
    check_batch(batch)?;
    let (rows, seq) = (batch.batch, batch.sequence);
    let ids = Tensor::from_shape(&[rows, seq], &batch.input_ids).map_err(run_error)?;
    let mask = Tensor::from_shape(&[rows, seq], &batch.attention_mask).map_err(run_error)?;
    Ok(tvec!(ids.into_tvalue(), mask.into_tvalue()))
}

fn to_f32_vec(value: &TValue) -> Result<Vec<f32>, Error> {
    let values = value.cast_to::<f32>().map_err(run_error)?;
    let view = values.try_as_plain_ram().map_err(run_error)?;
    let slice = view.as_slice::<f32>().map_err(run_error)?;
    Ok(slice.to_vec())
}

/// Whether this build can split one matrix product over several threads: the
/// `intra-op-threads` feature (a default one; the device packages are built without it).
pub const HAS_INTRA_OP_THREADS: bool = cfg!(feature = "intra-op-threads");

/// Sets how many threads tract's matrix products may use, process-wide (1 = no pool); a build
/// without [`HAS_INTRA_OP_THREADS`] always uses 1.
///
/// Keep `workers × intra-op threads ≤ cores`: the daemon runs several workers with 1 thread
/// each; the tool's one-off commands use all cores.
pub fn set_intra_op_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    #[cfg(feature = "intra-op-threads")]
    if threads > 1 {
        set_default_executor(Executor::multithread(threads));
        return;
    }
    let _ = threads;
    set_default_executor(Executor::SingleThread);
}
