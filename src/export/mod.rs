//! The offline build step: base checkpoint + LoRA adapter → ONNX classifier graphs → model directory.
//!
//! [`build`] merges the adapter (`W + (α/r)·B·A`, plus the trained head), writes the f32 graph
//! (`model.onnx`), checks it against a plain-Rust reference forward pass, writes the requested
//! quantized graph (`model.int8.onnx` or `model.f16.onnx`), measures its agreement with f32 on
//! built-in sample texts, and records everything in `model.json`.
//!
//! Reading checkpoints is `checkpoint`'s job, adapters `adapter`'s; running graphs is `engine`'s.

mod bert_graph;
pub mod onnx;
pub mod quantize;
pub mod reference;
mod samples;

use std::path::{Path, PathBuf};

pub use bert_graph::{classifier_graph, GraphOptions, Precision};

use crate::adapter::{self, LoraAdapter};
use crate::calibration::Calibration;
use crate::checkpoint::{self, BertConfig, Checkpoint, TensorMap};
use crate::engine::{self, Engine};
use crate::manifest::{self, AdapterSummary, BaseModel, ModelManifest, Parity};
use crate::metrics::argmax;
use crate::pooling::Pooling;
use crate::tokenizer::{self, Encoded, TextTokenizer, TokenBatch, Truncation};

/// Errors of the build step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base checkpoint could not be resolved or read.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::Error),
    /// The adapter could not be read or does not fit the base.
    #[error(transparent)]
    Adapter(#[from] adapter::Error),
    /// The base's tokenizer could not be read or written.
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::Error),
    /// A built graph failed to load or run in tract.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// `model.json` could not be written.
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
    /// The adapter's `calibration.json` could not be read.
    #[error(transparent)]
    Calibration(#[from] crate::calibration::Error),
    /// `--temperature` is not a positive number.
    #[error("--temperature {temperature}: must be a positive number")]
    BadTemperature {
        /// The value given.
        temperature: f64,
    },
    /// The classifier has another number of rows than there are labels.
    #[error("the classifier has {rows} output rows (bias: {bias}) but the model has {labels} labels (--labels)")]
    HeadLabels {
        /// Rows of `classifier.weight`.
        rows: usize,
        /// Length of `classifier.bias`.
        bias: usize,
        /// Labels of the model.
        labels: usize,
    },
    /// A merged weight holds NaN or an infinity (a diverged training run).
    #[error("merged weight {name} holds {value} (a diverged training run?)")]
    NonFiniteWeight {
        /// The canonical tensor name.
        name: String,
        /// The first such value.
        value: f32,
    },
    /// The base's tokenizer gives ids past its word-embedding table.
    #[error("the base's tokenizer gives token ids up to {}, but config.json's vocab_size is {vocabulary}", ids - 1)]
    TokenizerPastVocabulary {
        /// One past the tokenizer's largest id.
        ids: usize,
        /// `vocab_size`: rows of the word-embedding table.
        vocabulary: usize,
    },
    /// The window is longer than the base's position table.
    #[error("--max-len {max_len} exceeds the base's max_position_embeddings ({positions})")]
    WindowPastPositions {
        /// The window asked for.
        max_len: usize,
        /// Rows of the position table.
        positions: usize,
    },
    /// Neither `--adapter` nor `--random-head` was given.
    #[error("no adapter given and the base has no classifier for the labels: pass --adapter <dir> (trained with `sentimq train` or PEFT), a fully fine-tuned checkpoint as --base (`sentimq train --full`'s model/), or --random-head for a test build")]
    NoAdapter,
    /// A tensor the graph needs is absent from the merged weights.
    #[error("merged weights lack tensor {name}")]
    MissingWeight {
        /// The canonical tensor name.
        name: String,
    },
    /// A token id or position is beyond the embedding tables.
    #[error("token id {id} at position {position} is outside the embedding tables")]
    TokenOutOfRange {
        /// The token id.
        id: u32,
        /// Its position.
        position: usize,
    },
    /// The f32 graph does not reproduce the reference forward pass.
    #[error("the f32 graph disagrees with the reference forward pass: {output} differ by {diff:.2e} > {tolerance:.0e} on sample {sample:?}")]
    ReferenceMismatch {
        /// The compared output (`last_hidden_state` or `logits`).
        output: &'static str,
        /// Largest absolute logit difference.
        diff: f32,
        /// Allowed difference.
        tolerance: f32,
        /// The sample text.
        sample: String,
    },
    /// The quantized graph drifts too far from f32.
    #[error("{graph} disagrees with model.onnx: max probability diff {diff:.3} > {tolerance}, label agreement {agreement:.3}")]
    ParityFailed {
        /// The quantized graph file.
        graph: String,
        /// Measured largest probability difference.
        diff: f64,
        /// Allowed difference.
        tolerance: f64,
        /// Measured label agreement.
        agreement: f64,
    },
    /// A graph built with its hidden-state outputs lacks one the reference check compares.
    #[error("the f32 graph has no output named {name:?}")]
    MissingOutput {
        /// The expected output name (`last_hidden_state` or `logits`).
        name: &'static str,
    },
    /// Writing an output file failed.
    #[error("{path}: cannot write")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a file back (for its digest) failed.
    #[error("{path}: cannot read")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What `sentimq build` is asked to do.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Local checkpoint directory or Hugging Face id.
    pub base: String,
    /// PEFT-format LoRA adapter directory.
    pub adapter: Option<PathBuf>,
    /// Use a seeded random classifier head instead of an adapter (tests only).
    pub random_head: bool,
    /// Output model directory.
    pub out: PathBuf,
    /// The quantized form to write besides `model.onnx`.
    pub precision: Precision,
    /// Truncation policy recorded for serving.
    pub truncation: Truncation,
    /// Class labels, index = output column.
    pub labels: Vec<String>,
    /// Largest allowed probability difference between the quantized and the f32 graph.
    pub parity_tolerance: f64,
    /// Seed of the random head.
    pub seed: u64,
    /// Divide the logits by this temperature (folded into the classifier's weight and bias,
    /// so every runtime's probabilities are calibrated). `None`: the adapter directory's
    /// `calibration.json` if it has one, else none.
    pub temperature: Option<f64>,
    /// Which rows of the last hidden states the head reads. `None`: what the adapter (or the
    /// fully fine-tuned checkpoint's `config.json`) records, else `[CLS]`.
    pub pooling: Option<Pooling>,
}

impl BuildOptions {
    /// Defaults for a binary sentiment model built from `base` into `out`.
    pub fn new(base: impl Into<String>, out: impl Into<PathBuf>) -> Self {
        BuildOptions {
            base: base.into(),
            adapter: None,
            random_head: false,
            out: out.into(),
            precision: Precision::Int8,
            truncation: Truncation::head_tail(256, 128),
            labels: vec!["negative".into(), "positive".into()],
            parity_tolerance: 0.1,
            seed: 0,
            temperature: None,
            pooling: None,
        }
    }
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// The written manifest.
    pub manifest: ModelManifest,
    /// Largest hidden-state or logit difference between tract's f32 run and the reference.
    pub reference_diff: f32,
}

/// Tolerance of the f32 graph against the plain-Rust reference (both f32, different op order).
const REFERENCE_TOLERANCE: f32 = 1e-3;

/// Runs the whole build step.
pub fn build(options: &BuildOptions) -> Result<BuildReport, Error> {
    let base = checkpoint::resolve_base(&options.base)?;
    let checkpoint = Checkpoint::load(&base.dir)?;
    let positions = checkpoint.config.max_position_embeddings;
    if options.truncation.max_tokens > positions {
        return Err(Error::WindowPastPositions {
            max_len: options.truncation.max_tokens,
            positions,
        });
    }
    let (mut weights, adapter_summary) = merged_weights(&checkpoint, options)?;
    check_merged(&weights, options.labels.len())?;
    let pooling = match (options.pooling, &options.adapter) {
        (Some(pooling), _) => pooling,
        (None, Some(dir)) => adapter::recorded_pooling(dir)?,
        (None, None) => adapter::recorded_pooling(&base.dir)?,
    };
    let temperature = match (options.temperature, &options.adapter) {
        (Some(t), _) => Some(t),
        (None, Some(dir)) => Calibration::read(dir)?.map(|c| c.temperature),
        // A fully fine-tuned checkpoint (`sentimq train --full`'s `model/`) keeps its
        // calibration beside its weights.
        (None, None) => Calibration::read(&base.dir)?.map(|c| c.temperature),
    };
    if let Some(t) = temperature {
        apply_temperature(&mut weights, t)?;
    }
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(|source| Error::Write {
        path: out.clone(),
        source,
    })?;

    let tokenizer = TextTokenizer::from_dir(&base.dir, options.truncation)?;
    let vocabulary = checkpoint.config.vocab_size;
    if tokenizer.id_bound() > vocabulary {
        return Err(Error::TokenizerPastVocabulary {
            ids: tokenizer.id_bound(),
            vocabulary,
        });
    }
    tokenizer.save(&out.join("tokenizer.json"))?;

    let f32_path = out.join(Precision::F32.file_name());
    write_graph(
        &weights,
        &checkpoint.config,
        Precision::F32,
        pooling,
        &f32_path,
    )?;
    let samples: Vec<Encoded> = samples::TEXTS
        .iter()
        .map(|t| tokenizer.encode(t))
        .collect::<Result<_, _>>()?;
    let reference_diff =
        check_against_reference(&weights, &checkpoint.config, pooling, out, &samples)?;

    let mut parity = Vec::new();
    let mut default_graph = Precision::F32.file_name().to_string();
    if options.precision != Precision::F32 {
        let path = out.join(options.precision.file_name());
        write_graph(
            &weights,
            &checkpoint.config,
            options.precision,
            pooling,
            &path,
        )?;
        let measured = measure_parity(&f32_path, &path, &samples, tokenizer.pad_id())?;
        let diff = measured.max_probability_diff;
        if diff.is_nan() || diff > options.parity_tolerance {
            return Err(Error::ParityFailed {
                graph: measured.graph,
                diff: measured.max_probability_diff,
                tolerance: options.parity_tolerance,
                agreement: measured.label_agreement,
            });
        }
        parity.push(measured);
        default_graph = options.precision.file_name().to_string();
    }

    let manifest = ModelManifest {
        name: model_name(out),
        labels: options.labels.clone(),
        truncation: options.truncation,
        default_graph,
        base: BaseModel {
            id: base.id.clone(),
            revision: base.revision.clone(),
            weights_sha256: digest(&checkpoint.weights_file)?.sha256,
            architecture: architecture(&checkpoint.config),
        },
        adapter: adapter_summary,
        pooling,
        temperature,
        random_head: options.random_head && options.adapter.is_none(),
        files: directory_digests(out)?,
        parity,
        built_by: format!("sentimq {}", env!("CARGO_PKG_VERSION")),
    };
    manifest.write(out)?;
    Ok(BuildReport {
        manifest,
        reference_diff,
    })
}

/// Divides the classifier's weight and bias by `temperature`: the logits become `logits / T`.
fn apply_temperature(weights: &mut TensorMap, temperature: f64) -> Result<(), Error> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::BadTemperature { temperature });
    }
    for name in ["classifier.weight", "classifier.bias"] {
        let tensor = weights.get_mut(name).ok_or_else(|| Error::MissingWeight {
            name: name.to_string(),
        })?;
        for v in &mut tensor.data {
            *v = (f64::from(*v) / temperature) as f32;
        }
    }
    Ok(())
}

/// Base weights with the adapter merged in (or a random head), and the adapter's summary.
fn merged_weights(
    checkpoint: &Checkpoint,
    options: &BuildOptions,
) -> Result<(TensorMap, Option<AdapterSummary>), Error> {
    let mut weights = checkpoint.tensors.clone();
    match (&options.adapter, options.random_head) {
        (Some(dir), _) => {
            let adapter = LoraAdapter::load(dir)?;
            adapter.merge_into(&mut weights, &checkpoint.config)?;
            Ok((weights, Some(adapter.summary())))
        }
        (None, true) => {
            checkpoint::insert_random_head(
                &mut weights,
                &checkpoint.config,
                options.labels.len(),
                options.seed,
            );
            Ok((weights, None))
        }
        // A fully fine-tuned checkpoint already holds its classifier.
        (None, false) if has_head(&weights, options.labels.len()) => Ok((weights, None)),
        (None, false) => Err(Error::NoAdapter),
    }
}

/// The larger of `a` and `b`, or NaN if either is (`f32::max` would drop a NaN).
fn max_or_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// Rows of `classifier.weight` and of `classifier.bias`, where present.
fn head_rows(weights: &TensorMap) -> (Option<usize>, Option<usize>) {
    let rows = |name: &str| weights.get(name).and_then(|t| t.shape.first().copied());
    (rows("classifier.weight"), rows("classifier.bias"))
}

/// Whether `weights` hold a classifier for `labels` labels (after a pooler).
fn has_head(weights: &TensorMap, labels: usize) -> bool {
    head_rows(weights) == (Some(labels), Some(labels))
        && weights.contains_key("pooler.dense.weight")
}

/// The merged weights are finite and end in a classifier for `labels` labels.
fn check_merged(weights: &TensorMap, labels: usize) -> Result<(), Error> {
    if let Some((name, value)) = weights.iter().find_map(|(name, tensor)| {
        let value = tensor.data.iter().find(|v| !v.is_finite())?;
        Some((name.clone(), *value))
    }) {
        return Err(Error::NonFiniteWeight { name, value });
    }
    match head_rows(weights) {
        (Some(rows), Some(bias)) if rows == labels && bias == labels => Ok(()),
        (rows, bias) => Err(Error::HeadLabels {
            rows: rows.unwrap_or(0),
            bias: bias.unwrap_or(0),
            labels,
        }),
    }
}

/// Writes one graph file.
pub fn write_graph(
    weights: &TensorMap,
    config: &BertConfig,
    precision: Precision,
    pooling: Pooling,
    path: &Path,
) -> Result<(), Error> {
    let model = classifier_graph(
        weights,
        config,
        GraphOptions {
            precision,
            with_hidden_states: false,
            pooling,
        },
    )?;
    std::fs::write(path, onnx::encode(&model)).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs the f32 graph (with its hidden-state outputs) in tract on a few samples and compares
/// the final hidden states and logits with the plain-Rust reference forward pass.
fn check_against_reference(
    weights: &TensorMap,
    config: &BertConfig,
    pooling: Pooling,
    out: &Path,
    samples: &[Encoded],
) -> Result<f32, Error> {
    let graph = classifier_graph(
        weights,
        config,
        GraphOptions {
            precision: Precision::F32,
            with_hidden_states: true,
            pooling,
        },
    )?;
    let path = out.join(".reference-check.onnx");
    std::fs::write(&path, onnx::encode(&graph)).map_err(|source| Error::Write {
        path: path.clone(),
        source,
    })?;
    let engine = Engine::load(&path);
    let _ = std::fs::remove_file(&path);
    let engine = engine?;
    let mut worst = 0f32;
    // A handful of samples is enough to catch a wiring error; the reference is slow.
    for (text, sample) in samples::TEXTS.iter().zip(samples).take(4) {
        let expected = reference::forward(weights, config, pooling, &sample.ids)?;
        let outputs = engine.run_all(&TokenBatch::from_encoded(std::slice::from_ref(sample), 0))?;
        for (name, reference) in [
            ("last_hidden_state", &expected.hidden),
            ("logits", &expected.logits),
        ] {
            let found = outputs
                .iter()
                .find(|o| o.name == name)
                .ok_or(Error::MissingOutput { name })?;
            let diff = reference
                .iter()
                .zip(&found.values)
                .fold(0f32, |m, (a, b)| max_or_nan(m, (a - b).abs()));
            if diff.is_nan() || diff > REFERENCE_TOLERANCE {
                return Err(Error::ReferenceMismatch {
                    output: name,
                    diff,
                    tolerance: REFERENCE_TOLERANCE,
                    sample: text.to_string(),
                });
            }
            worst = worst.max(diff);
        }
    }
    Ok(worst)
}

/// Label agreement and probability drift of `candidate` against the f32 graph, batched as served.
pub fn measure_parity(
    reference: &Path,
    candidate: &Path,
    samples: &[Encoded],
    pad_id: u32,
) -> Result<Parity, Error> {
    let batch = TokenBatch::from_encoded(samples, pad_id);
    let expected = Engine::load(reference)?.classify(&batch)?;
    let found = Engine::load(candidate)?.classify(&batch)?;
    let mut agree = 0;
    let mut max_diff = 0f64;
    for (e, f) in expected.iter().zip(found.iter()) {
        agree += usize::from(argmax(e) == argmax(f));
        let diff = e
            .iter()
            .zip(f)
            .fold(0f32, |m, (a, b)| max_or_nan(m, (a - b).abs()));
        max_diff = f64::from(max_or_nan(max_diff as f32, diff));
    }
    Ok(Parity {
        graph: candidate
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        texts: samples.len(),
        label_agreement: agree as f64 / samples.len().max(1) as f64,
        max_probability_diff: max_diff,
    })
}

fn model_name(out: &Path) -> String {
    out.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

fn architecture(config: &BertConfig) -> String {
    format!(
        "bert: {} layers, hidden {}, {} heads, ffn {}, vocab {}",
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
        config.vocab_size
    )
}

fn digest(path: &Path) -> Result<manifest::FileDigest, Error> {
    manifest::digest_file(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Digests of every regular file in `dir` except `model.json`.
fn directory_digests(
    dir: &Path,
) -> Result<std::collections::BTreeMap<String, manifest::FileDigest>, Error> {
    let io = |source: std::io::Error| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map_err(io)?.is_file() && name != manifest::MANIFEST_FILE {
            files.insert(name, digest(&entry.path())?);
        }
    }
    Ok(files)
}
