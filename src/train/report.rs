//! Evaluation and what a run writes about itself: `metrics.jsonl` (one JSON object per
//! update, one per evaluation), `report.json` and `report.txt` (accuracy, precision, recall,
//! F1 and confusion matrix of the best model on the validation set, and on test reviews with
//! `--eval-test`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::calibration::Calibration;
use crate::metrics::{argmax, BinaryMetrics, MetricsReport};
use crate::tokenizer::TokenBatch;

use super::batches::{eval_batches, to_device, EncodedSet};
use super::dropout::Mode;
use super::error::TensorContext;
use super::model::BertClassifier;
use super::{Error, TrainConfig};

/// One evaluation, as recorded in `metrics.jsonl` and the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct EvalSummary {
    /// The epoch just finished (1-based).
    pub epoch: usize,
    /// Updates done.
    pub step: usize,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction correct.
    pub accuracy: f64,
    /// Predicted positive, truly positive.
    pub true_positive: usize,
    /// Predicted positive, truly negative.
    pub false_positive: usize,
    /// Predicted negative, truly negative.
    pub true_negative: usize,
    /// Predicted negative, truly positive.
    pub false_negative: usize,
}

impl EvalSummary {
    /// The counts as [`BinaryMetrics`].
    pub fn metrics(&self) -> BinaryMetrics {
        BinaryMetrics {
            true_positive: self.true_positive,
            false_positive: self.false_positive,
            true_negative: self.true_negative,
            false_negative: self.false_negative,
        }
    }
}

/// The logits of `model` in eval mode for every example of `set`, in the set's order.
pub fn logits(
    model: &BertClassifier,
    set: &EncodedSet,
    batch: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Vec<f32>>, Error> {
    let mut out = vec![Vec::new(); set.len()];
    let mut scratch = TokenBatch::default();
    for indices in eval_batches(&set.lengths(), batch) {
        let batch = to_device(set, &indices, pad_id, &mut scratch, device)
            .context("uploading an evaluation batch")?;
        let rows = model
            .forward_t(&batch.ids, &batch.mask, Mode::Eval)
            .and_then(|l| l.to_dtype(candle_core::DType::F32))
            .and_then(|l| l.to_vec2::<f32>())
            .context("evaluating")?;
        for (&i, row) in indices.iter().zip(rows) {
            out[i] = row;
        }
    }
    Ok(out)
}

/// Runs `model` in eval mode over `set`; returns the metrics and the mean cross-entropy.
pub fn evaluate(
    model: &BertClassifier,
    set: &EncodedSet,
    batch: usize,
    pad_id: u32,
    device: &Device,
) -> Result<(BinaryMetrics, f64), Error> {
    let mut metrics = BinaryMetrics::default();
    let mut loss_sum = 0.0;
    for (row, &truth) in logits(model, set, batch, pad_id, device)?
        .iter()
        .zip(&set.labels)
    {
        metrics.record(truth, u8::from(argmax(row) == 1));
        let probabilities = crate::calibration::probabilities(row, 1.0);
        loss_sum -= probabilities[usize::from(truth)]
            .max(f64::MIN_POSITIVE)
            .ln();
    }
    let count = metrics.total().max(1) as f64;
    Ok((metrics, loss_sum / count))
}

/// `metrics.jsonl`, appended one line per record.
pub(crate) struct MetricsLog {
    file: File,
    path: PathBuf,
    bytes: u64,
}

impl MetricsLog {
    /// Opens `path` for appending, first truncating it to `keep_bytes` (what a checkpoint
    /// recorded; 0 for a new run).
    pub fn open(path: &Path, keep_bytes: u64) -> Result<Self, Error> {
        let write_err = |source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(write_err)?;
        file.set_len(keep_bytes).map_err(write_err)?;
        Ok(MetricsLog {
            file,
            path: path.to_path_buf(),
            bytes: keep_bytes,
        })
    }

    /// Appends one JSON line.
    pub fn write(&mut self, record: &impl Serialize) -> Result<(), Error> {
        let mut line = serde_json::to_vec(record).expect("metrics records serialize");
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// One line of `metrics.jsonl` for an optimizer update.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StepRecord {
    /// `"step"`.
    pub kind: String,
    /// Updates done, this one included.
    pub step: usize,
    /// Fractional epoch: 1.5 = half-way through the second epoch.
    pub epoch: f64,
    /// Mean training cross-entropy over the update's examples.
    pub loss: f64,
    /// Learning rate of the update.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Training throughput of the update (forward + backward + step), examples per second.
    pub samples_per_s: f64,
}

/// `report.json`: the run's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct FinalReport {
    /// The run's settings.
    pub config: TrainConfig,
    /// Examples trained on, held out for validation, and test examples evaluated.
    pub examples: ExampleCounts,
    /// Texts cut to `--max-len`.
    pub truncated: usize,
    /// Updates done.
    pub steps: usize,
    /// The epoch whose model was kept (best validation accuracy), 1-based.
    pub best_epoch: Option<usize>,
    /// The kept model on the validation set.
    pub validation: Option<MetricsReport>,
    /// The kept model on `--eval-test` test reviews.
    pub test: Option<MetricsReport>,
    /// Where the kept model is.
    pub output: PathBuf,
    /// Mean training throughput over this session's updates, examples per second.
    pub samples_per_s: f64,
    /// The temperature fitted on the validation set (also in the model directory's
    /// `calibration.json`), with its effect there.
    pub calibration: Option<Calibration>,
    /// Expected calibration error on the test sample at `T = 1` and at the fitted `T`.
    pub test_ece: Option<[f64; 2]>,
}

/// Sizes of the run's sets.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ExampleCounts {
    /// Training.
    pub train: usize,
    /// Validation.
    pub validation: usize,
    /// Test (`--eval-test`).
    pub test: usize,
}

impl FinalReport {
    /// Writes `report.json` and `report.txt` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let json_path = dir.join("report.json");
        let json = serde_json::to_string_pretty(self).expect("report serializes");
        std::fs::write(&json_path, json + "\n").map_err(|source| Error::Write {
            path: json_path,
            source,
        })?;
        let text_path = dir.join("report.txt");
        std::fs::write(&text_path, self.to_string()).map_err(|source| Error::Write {
            path: text_path,
            source,
        })
    }
}

impl std::fmt::Display for FinalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "base       {}", self.config.base)?;
        writeln!(
            f,
            "examples   {} train, {} validation, {} test ({} truncated to {} tokens)",
            self.examples.train,
            self.examples.validation,
            self.examples.test,
            self.truncated,
            self.config.max_len
        )?;
        writeln!(
            f,
            "steps      {} ({:.1} samples/s)",
            self.steps, self.samples_per_s
        )?;
        if let Some(epoch) = self.best_epoch {
            writeln!(f, "kept       epoch {epoch} (best validation accuracy)")?;
        }
        writeln!(f, "output     {}", self.output.display())?;
        if let Some(c) = &self.calibration {
            writeln!(
                f,
                "calibrated temperature {:.3} on {} {} examples: ECE {:.4} -> {:.4}, NLL {:.4} -> {:.4}",
                c.temperature, c.examples, c.fitted_on, c.ece_before, c.ece_after, c.nll_before, c.nll_after
            )?;
        }
        if let Some([before, after]) = self.test_ece {
            writeln!(f, "test ECE   {before:.4} -> {after:.4} (15 bins)")?;
        }
        for (name, report) in [("validation", &self.validation), ("test", &self.test)] {
            if let Some(report) = report {
                writeln!(f, "\n{name}\n{report}")?;
            }
        }
        Ok(())
    }
}
