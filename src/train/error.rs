//! The errors of `sentimq train`: each variant names what failed and what to do about it.

use std::path::PathBuf;

/// Errors of preparing, running, checkpointing or reporting a training run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base checkpoint could not be resolved or loaded.
    #[error("loading the base model")]
    Checkpoint(#[from] crate::checkpoint::Error),
    /// The tokenizer next to the base checkpoint could not be loaded, or a text not encoded.
    #[error("tokenizer of the base model")]
    Tokenizer(#[from] crate::tokenizer::Error),
    /// The dataset could not be read (missing directory, empty split, bad labels, ...).
    #[error("reading the training data")]
    Data(#[from] crate::data::Error),
    /// A flag value is out of range.
    #[error("--{flag} {value}: {requirement}")]
    InvalidFlag {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is expected instead, e.g. `must be at least 1`.
        requirement: String,
    },
    /// `--device` names a device backend this build does not have.
    #[error("--device {device}: {detail}")]
    DeviceUnavailable {
        /// The device as given.
        device: String,
        /// Why it cannot be used, and what to do.
        detail: &'static str,
    },
    /// `--device` names a device this machine does not have, or that fails to open.
    #[error("--device {device}: cannot open the device")]
    DeviceOpen {
        /// The device as given.
        device: String,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
    /// `--lora-targets` names a projection the model does not have.
    #[error("--lora-targets: unknown module {name:?} (expected some of query, key, value, attention.output.dense, intermediate.dense, output.dense)")]
    UnknownLoraTarget {
        /// The name given.
        name: String,
    },
    /// Too few examples to train on after `--limit` and the validation split.
    #[error("only {found} training examples after --limit and --validation-fraction; at least {needed} needed")]
    TooFewExamples {
        /// Examples left for training.
        found: usize,
        /// The minimum.
        needed: usize,
    },
    /// The fitted temperature could not be written next to the model.
    #[error("writing the calibration")]
    Calibration(#[from] crate::calibration::Error),
    /// `--throughput` found too few training reviews that fill the window.
    #[error("--throughput: only {found} training reviews fill --max-len {max_len} tokens, {needed} (--batch) needed")]
    TooFewFullLength {
        /// Reviews found at full length.
        found: usize,
        /// `--batch`.
        needed: usize,
        /// `--max-len`.
        max_len: usize,
    },
    /// The estimated training memory exceeds what the machine has.
    #[error("--batch {batch} at --max-len {max_len} needs about {needed_mib} MiB for activations, but only {available_mib} MiB are available: lower --batch (and raise --grad-accum to keep the effective batch) or --max-len")]
    BatchTooLarge {
        /// The batch size.
        batch: usize,
        /// The maximum sequence length.
        max_len: usize,
        /// Estimated need.
        needed_mib: u64,
        /// Available memory.
        available_mib: u64,
    },
    /// `--resume` found no checkpoint to resume from.
    #[error("--resume: no checkpoint in {dir} (runs write one every --checkpoint-every steps)")]
    NoCheckpoint {
        /// The checkpoint directory searched.
        dir: PathBuf,
    },
    /// `--resume` with settings that differ from the checkpoint's run.
    #[error("--resume: the checkpoint in {dir} was made with {field} = {saved}, this run has {now}; resume with the same settings or start a new --out")]
    ResumeMismatch {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The differing setting.
        field: String,
        /// Its value in the checkpoint.
        saved: String,
        /// Its value now.
        now: String,
    },
    /// `--init-from` names a kept model that does not fit this run's model.
    #[error("--init-from {dir}: {reason}; it must come from a run with the same base, --full, --lora-r, --lora-alpha and --lora-targets")]
    InitMismatch {
        /// The kept model's directory.
        dir: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The output directory already holds a run and `--resume` was not given.
    #[error(
        "{dir} already holds a training run; pass --resume to continue it or choose another --out"
    )]
    OutputExists {
        /// The output directory.
        dir: PathBuf,
    },
    /// A checkpoint, state or kept-model file is unreadable, or does not fit the model.
    #[error("{path}: corrupt or mismatched checkpoint")]
    CorruptCheckpoint {
        /// The file (or the checkpoint directory).
        path: PathBuf,
        /// What is wrong: the JSON or safetensors error, or a [`RestoreError`].
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing an output file failed.
    #[error("{path}: cannot write")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a safetensors file (checkpoint or kept model) failed.
    #[error("{path}: cannot write tensors")]
    WriteTensors {
        /// The file.
        path: PathBuf,
        /// The I/O or safetensors error (boxed: it is large).
        #[source]
        source: Box<crate::checkpoint::Error>,
    },
    /// Reading an output or checkpoint file failed.
    #[error("{path}: cannot read")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading, merging or saving a LoRA adapter failed.
    #[error("the LoRA adapter (reading, merging or saving it)")]
    Adapter(#[from] crate::adapter::Error),
    /// A tensor operation failed (shape bug, device error, out of device memory).
    #[error("{context}")]
    Tensor {
        /// What was being computed.
        context: &'static str,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
    /// The loss stopped being a finite number.
    #[error("the loss became {loss} at step {step}: lower --lr or --max-grad-norm")]
    Diverged {
        /// The optimizer step.
        step: usize,
        /// The loss value.
        loss: f32,
    },
    /// Drawing the training curve failed.
    #[error("{path}: cannot draw the training curve")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// The drawing backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why saved tensors cannot be restored into the model or optimizer (resuming, or reloading
/// the kept model); the cause of an [`Error::CorruptCheckpoint`].
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A tensor the model or optimizer needs is not in the file.
    #[error("no tensor {name}")]
    Missing {
        /// The tensor.
        name: String,
    },
    /// A tensor's shape differs from the model's.
    #[error("tensor {name} is {found:?}, the model has {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The model's shape.
        expected: Vec<usize>,
    },
    /// The tensor could not be placed on the device.
    #[error("cannot load tensor {name} onto the device")]
    Upload {
        /// The tensor.
        name: String,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
}

/// Adds the step being computed to candle's errors.
pub(crate) trait TensorContext<T> {
    /// Wraps a candle error into [`Error::Tensor`] with `context`.
    fn context(self, context: &'static str) -> Result<T, Error>;
}

impl<T> TensorContext<T> for candle_core::Result<T> {
    fn context(self, context: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::Tensor { context, source })
    }
}
