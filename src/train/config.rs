//! What a training run is asked to do: [`TrainConfig`], checked by [`TrainConfig::validate`]
//! before anything is loaded, and the `--device` spelling.

use std::path::PathBuf;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::lora::LoraSettings;
use super::Error;
use crate::pooling::Pooling;

/// Peak learning rate when `--lr` is not given, for LoRA.
pub const DEFAULT_LORA_LR: f64 = 5e-4;
/// Peak learning rate when `--lr` is not given, for `--full`.
pub const DEFAULT_FULL_LR: f64 = 3e-5;

/// Every setting of a run. The settings that shape the schedule are recorded in the checkpoint
/// and must match on `--resume` (`TrainConfig::schedule_fields`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Base checkpoint: a local directory or a Hugging Face id.
    pub base: String,
    /// Labelled data: aclImdb directory or archive, `.parquet`, `.csv`, `.jsonl`, or a Hub
    /// dataset (`imdb`, `hf:<owner/name>`).
    pub data: PathBuf,
    /// `cpu`, `cuda[:N]` or `metal[:N]`.
    pub device: DeviceSpec,
    /// Run directory: adapter, metrics, report, curve, checkpoint.
    pub out: PathBuf,
    /// Passes over the training examples.
    pub epochs: usize,
    /// Examples per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer update.
    pub grad_accum: usize,
    /// Peak learning rate; `None` = [`DEFAULT_LORA_LR`] or [`DEFAULT_FULL_LR`].
    pub lr: Option<f64>,
    /// Fraction of updates spent warming up.
    pub warmup_ratio: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 = off.
    pub max_grad_norm: f64,
    /// Adapter rank, scaling, dropout and targets (ignored with `full`).
    pub lora: LoraSettings,
    /// Train every weight instead of LoRA adapters.
    pub full: bool,
    /// Seed of sampling, splitting, initialisation, data order and dropout.
    pub seed: u64,
    /// Tokens per text including `[CLS]`/`[SEP]`.
    pub max_len: usize,
    /// Word pieces kept from the start of a long text; the rest of the window is its end.
    pub head_len: usize,
    /// Train on a balanced sample of this many reviews.
    pub limit: Option<usize>,
    /// Fraction of the (sampled) training reviews held out for validation, stratified.
    pub validation_fraction: f64,
    /// Which rows of the last hidden states reach the head.
    #[serde(default, skip_serializing_if = "Pooling::is_default")]
    pub pooling: Pooling,
    /// Random short spans (a sentence, a few sentences, a fragment; see
    /// [`crate::data::random_span`]) added per training and per validation review, each with its
    /// review's label. 0 = whole reviews only.
    #[serde(default)]
    pub spans_per_review: usize,
    /// Random openings (the first 5 to 60 words; see [`crate::data::random_opening`]) added per
    /// training and per validation review, each with its review's label. 0 = none.
    #[serde(default)]
    pub openings_per_review: usize,
    /// Start the trainable tensors from this earlier run's kept model (`adapter/`, or `model/`
    /// with `full`) instead of a fresh initialisation.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Write a resumable checkpoint every this many updates.
    pub checkpoint_every: Option<usize>,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Also evaluate on a balanced sample of this many test reviews at the end.
    pub eval_test: Option<usize>,
    /// Stop (as if interrupted) after this many updates, writing a checkpoint first.
    pub stop_after: Option<usize>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Draw dropout masks on the host on any device, as on the CPU: a GPU run then matches a
    /// CPU run mask for mask (slower; for checks). Off: GPUs draw their own, seeded the same
    /// way (see [`super::dropout`]).
    #[serde(default)]
    pub host_dropout_masks: bool,
}

impl TrainConfig {
    /// Defaults of `sentimq train` for `base`, `data` and `out`.
    pub fn new(base: impl Into<String>, data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        TrainConfig {
            base: base.into(),
            data: data.into(),
            device: DeviceSpec::Cpu,
            out: out.into(),
            epochs: 3,
            batch: 16,
            grad_accum: 1,
            lr: None,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            lora: LoraSettings {
                r: 8,
                alpha: 16.0,
                dropout: 0.1,
                targets: vec!["query".into(), "value".into()],
            },
            full: false,
            seed: 42,
            max_len: 256,
            head_len: 128,
            limit: None,
            validation_fraction: 0.1,
            pooling: Pooling::Cls,
            spans_per_review: 0,
            openings_per_review: 0,
            init_from: None,
            checkpoint_every: None,
            resume: false,
            eval_test: None,
            stop_after: None,
            progress: true,
            host_dropout_masks: false,
        }
    }

    /// The peak learning rate in effect.
    pub(crate) fn peak_lr(&self) -> f64 {
        self.lr.unwrap_or(if self.full {
            DEFAULT_FULL_LR
        } else {
            DEFAULT_LORA_LR
        })
    }

    /// Checks ranges, naming the flag.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |flag, value: String, requirement: &str| {
            Err(Error::InvalidFlag {
                flag,
                value,
                requirement: requirement.into(),
            })
        };
        let positive = [
            ("epochs", self.epochs),
            ("batch", self.batch),
            ("grad-accum", self.grad_accum),
        ];
        if let Some((flag, value)) = positive.iter().find(|(_, v)| *v == 0) {
            return invalid(flag, value.to_string(), "must be at least 1");
        }
        if !self.full && self.lora.r == 0 {
            return invalid("lora-r", "0".into(), "must be at least 1");
        }
        if !self.full && self.lora.targets.is_empty() {
            return invalid("lora-targets", String::new(), "name at least one module");
        }
        let lr = self.peak_lr();
        if !(lr.is_finite() && lr > 0.0) {
            return invalid("lr", lr.to_string(), "must be a positive number");
        }
        let fractions = [
            ("warmup-ratio", self.warmup_ratio, 0.0..=1.0),
            ("validation-fraction", self.validation_fraction, 0.0..=0.5),
            ("lora-dropout", self.lora.dropout, 0.0..=0.9),
            ("weight-decay", self.weight_decay, 0.0..=1.0),
        ];
        if let Some((flag, value, range)) = fractions.iter().find(|(_, v, r)| !r.contains(v)) {
            let requirement = format!("must be in {}..={}", range.start(), range.end());
            return invalid(flag, value.to_string(), &requirement);
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return invalid(
                "max-grad-norm",
                self.max_grad_norm.to_string(),
                "must be 0 (off) or positive",
            );
        }
        if self.max_len < 3 || self.head_len > self.max_len - 2 {
            return invalid(
                "head-len",
                self.head_len.to_string(),
                &format!(
                    "must be at most --max-len − 2 ({})",
                    self.max_len.saturating_sub(2)
                ),
            );
        }
        if self.checkpoint_every == Some(0) {
            return invalid("checkpoint-every", "0".into(), "must be at least 1");
        }
        if matches!(self.limit, Some(n) if n < 4) {
            return invalid("limit", format!("{:?}", self.limit), "must be at least 4");
        }
        Ok(())
    }

    /// The settings that define the run's schedule and model, as `(flag, value)`: a resumed run
    /// must have the same ones.
    pub(crate) fn schedule_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("--base", self.base.clone()),
            ("--data", self.data.display().to_string()),
            ("--epochs", self.epochs.to_string()),
            ("--batch", self.batch.to_string()),
            ("--grad-accum", self.grad_accum.to_string()),
            ("--lr", self.peak_lr().to_string()),
            ("--warmup-ratio", self.warmup_ratio.to_string()),
            ("--weight-decay", self.weight_decay.to_string()),
            ("--max-grad-norm", self.max_grad_norm.to_string()),
            ("--full", self.full.to_string()),
            ("--lora-r", self.lora.r.to_string()),
            ("--lora-alpha", self.lora.alpha.to_string()),
            ("--lora-dropout", self.lora.dropout.to_string()),
            ("--lora-targets", self.lora.targets.join(",")),
            ("--seed", self.seed.to_string()),
            ("--max-len", self.max_len.to_string()),
            ("--head-len", self.head_len.to_string()),
            ("--limit", format!("{:?}", self.limit)),
            (
                "--validation-fraction",
                self.validation_fraction.to_string(),
            ),
            ("--pooling", self.pooling.to_string()),
            ("--spans-per-review", self.spans_per_review.to_string()),
            (
                "--openings-per-review",
                self.openings_per_review.to_string(),
            ),
            (
                "--init-from",
                self.init_from
                    .as_ref()
                    .map_or_else(String::new, |dir| dir.display().to_string()),
            ),
        ]
    }
}

/// Where tensors live: `cpu`, `cuda[:N]` (needs the `cuda` feature and `nvcc` at build time),
/// `metal[:N]` (needs a candle build with Metal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA GPU number `N`.
    Cuda(usize),
    /// Metal GPU number `N`.
    Metal(usize),
}

impl DeviceSpec {
    /// Opens the device.
    ///
    /// Errors: [`Error::DeviceUnavailable`] when this build lacks the backend;
    /// [`Error::DeviceOpen`] when the device does not exist or fails to open.
    pub(crate) fn open(&self) -> Result<Device, Error> {
        let unavailable = |detail| Error::DeviceUnavailable {
            device: self.to_string(),
            detail,
        };
        let open_error = |source| Error::DeviceOpen {
            device: self.to_string(),
            source,
        };
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(unavailable(
                        "this sentimq was built without CUDA; rebuild with `--features cuda` (needs nvcc)",
                    ));
                }
                Device::new_cuda(*n).map_err(open_error)
            }
            DeviceSpec::Metal(n) => {
                if !candle_core::utils::metal_is_available() {
                    return Err(unavailable(
                        "this sentimq was built without Metal support (candle's `metal` feature, macOS only)",
                    ));
                }
                Device::new_metal(*n).map_err(open_error)
            }
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, index) = match s.split_once(':') {
            Some((kind, index)) => (
                kind,
                index
                    .parse::<usize>()
                    .map_err(|_| format!("bad device number in {s:?}"))?,
            ),
            None => (s, 0),
        };
        match kind {
            "cpu" if index == 0 => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(index)),
            "metal" => Ok(DeviceSpec::Metal(index)),
            _ => Err(format!(
                "unknown device {s:?} (expected cpu, cuda[:N] or metal[:N])"
            )),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:1".parse(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!(DeviceSpec::Metal(2).to_string(), "metal:2");
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(
            DeviceSpec::Cuda(0).open(),
            Err(Error::DeviceUnavailable { .. })
        ));
    }

    #[test]
    fn validate_names_the_flag() {
        let base = TrainConfig::new("b", "d", "o");
        base.validate().unwrap();
        assert_eq!(base.peak_lr(), DEFAULT_LORA_LR);
        let full = TrainConfig {
            full: true,
            ..base.clone()
        };
        assert_eq!(full.peak_lr(), DEFAULT_FULL_LR);
        let cases = [
            (
                TrainConfig {
                    batch: 0,
                    ..base.clone()
                },
                "batch",
            ),
            (
                TrainConfig {
                    head_len: 255,
                    ..base.clone()
                },
                "head-len",
            ),
            (
                TrainConfig {
                    validation_fraction: 0.9,
                    ..base.clone()
                },
                "validation-fraction",
            ),
            (
                TrainConfig {
                    lr: Some(-1.0),
                    ..base.clone()
                },
                "lr",
            ),
            (
                TrainConfig {
                    checkpoint_every: Some(0),
                    ..base.clone()
                },
                "checkpoint-every",
            ),
        ];
        for (config, expected) in cases {
            match config.validate() {
                Err(Error::InvalidFlag { flag, .. }) => assert_eq!(flag, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }
}
