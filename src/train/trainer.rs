//! The training run: set-up (base, data, parameters, optimizer, or a checkpoint to resume),
//! the loop over epochs and updates, evaluation after each epoch, and the run's outputs.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::calibration::Calibration;
use crate::checkpoint::{resolve_base, Checkpoint};
use crate::tokenizer::{TextTokenizer, TokenBatch, Truncation};

use super::batches::{epoch_batches, to_device, EncodedSet};
use super::checkpoint::{self as run_checkpoint, RunState};
use super::dataset::{self, RunData};
use super::dropout::{DropoutMasks, Mode};
use super::error::TensorContext;
use super::model::{BertClassifier, BertClassifierConfig};
use super::optimizer::{AdamW, AdamWConfig};
use super::output;
use super::params::Parameters;
use super::report::{
    self, evaluate, EvalSummary, ExampleCounts, FinalReport, MetricsLog, StepRecord,
};
use super::schedule::LinearSchedule;
use super::{lora, memory, plot, Error, TrainConfig};

/// Output classes: negative, positive.
const LABELS: usize = 2;

/// What [`run`] did.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The final report; `None` when the run stopped early at `stop_after`.
    pub report: Option<FinalReport>,
    /// Updates done in total.
    pub steps: usize,
}

/// A model ready to train: parameters, the model over them, and what built them.
pub struct Setup {
    /// The base checkpoint.
    pub base: Checkpoint,
    /// Its tokenizer, with the run's truncation.
    pub tokenizer: TextTokenizer,
    /// Frozen and trainable tensors.
    pub params: Parameters,
    /// The classifier.
    pub model: BertClassifier,
    /// The device.
    pub device: Device,
}

/// Loads the base, adds a head (where the base has none for two labels) and LoRA adapters,
/// starts the trainable tensors from `config.init_from` where given, and builds the model in
/// `dtype`. Everything random is seeded from `config.seed`.
pub fn build_model(config: &TrainConfig, dtype: DType) -> Result<Setup, Error> {
    let device = config.device.open()?;
    if device.is_cpu() {
        sentimq_train_kernels::retain_freed_buffers();
    }
    let resolved = resolve_base(&config.base)?;
    let base = Checkpoint::load(&resolved.dir)?;
    let tokenizer = TextTokenizer::from_dir(
        &resolved.dir,
        Truncation::head_tail(config.max_len, config.head_len),
    )?;
    let mut weights = base.tensors.clone();
    let has_head = weights
        .get("classifier.weight")
        .is_some_and(|w| w.shape.first() == Some(&LABELS));
    if !has_head {
        crate::checkpoint::insert_random_head(&mut weights, &base.config, LABELS, config.seed);
    }
    if !config.full {
        let modules = config
            .lora
            .modules(&base.config)
            .map_err(|name| Error::UnknownLoraTarget { name })?;
        lora::init_adapters(&mut weights, &modules, config.lora.r, config.seed);
    }
    let full = config.full;
    let is_trainable = |name: &str| {
        full || name.contains(".lora_")
            || name.starts_with("pooler.")
            || name.starts_with("classifier.")
    };
    if let Some(dir) = &config.init_from {
        super::init::apply(&mut weights, &is_trainable, dir, config, &base.config)?;
    }
    let params = Parameters::new(&weights, is_trainable, dtype, &device)
        .context("uploading the parameters")?;
    let model_config = BertClassifierConfig {
        bert: base.config.clone(),
        lora: config.lora.clone(),
        labels: LABELS,
        pooling: config.pooling,
    };
    let model =
        BertClassifier::load(params.var_builder(), &model_config).context("building the model")?;
    Ok(Setup {
        base,
        tokenizer,
        params,
        model,
        device,
    })
}

/// Sum of the cross-entropy of `logits (batch, labels)` against `labels (batch)` u32.
pub fn cross_entropy_sum(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    log_probs.gather(&labels.unsqueeze(1)?, 1)?.sum_all()?.neg()
}

/// Runs (or resumes) the training run `config` describes.
///
/// Errors: see [`Error`]; everything about the inputs is checked before training starts.
pub fn run(config: &TrainConfig) -> Result<TrainOutcome, Error> {
    config.validate()?;
    let run_dir = config.out.as_path();
    if !config.resume && run_dir.join("metrics.jsonl").exists() {
        return Err(Error::OutputExists {
            dir: run_dir.to_path_buf(),
        });
    }
    let resumed = if config.resume {
        Some(run_checkpoint::load(run_dir)?)
    } else {
        None
    };
    let setup = build_model(config, DType::F32)?;
    check_memory(config, &setup)?;
    let base_sha256 = crate::manifest::digest_file(&setup.base.weights_file)
        .map_err(|source| Error::Read {
            path: setup.base.weights_file.clone(),
            source,
        })?
        .sha256;
    if let Some(saved) = &resumed {
        run_checkpoint::check_compatible(run_dir, &saved.state, config, &base_sha256)?;
    }
    let data = dataset::prepare(config, &setup.tokenizer)?;
    std::fs::create_dir_all(run_dir).map_err(|source| Error::Write {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let mut optimizer = AdamW::new(
        setup.params.trainable(),
        AdamWConfig {
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        },
    )
    .context("creating the optimizer")?;
    let micro_batches = data.train.len().div_ceil(config.batch);
    let steps_per_epoch = micro_batches.div_ceil(config.grad_accum);
    let mut state = match resumed {
        Some(saved) => {
            let corrupt = |error: super::RestoreError| Error::CorruptCheckpoint {
                path: run_dir.join(run_checkpoint::DIR),
                source: error.into(),
            };
            setup
                .params
                .restore_trainable(&saved.trainable)
                .map_err(corrupt)?;
            optimizer
                .restore(&saved.moments, saved.state.step)
                .map_err(corrupt)?;
            // The same flags over other data (the file at --data changed) would resume at a
            // position of another schedule.
            let total = steps_per_epoch * config.epochs;
            if saved.state.steps_per_epoch != steps_per_epoch || saved.state.step > total {
                return Err(Error::ResumeMismatch {
                    dir: run_dir.join(run_checkpoint::DIR),
                    field: "updates per epoch (the training data changed)".to_string(),
                    saved: format!(
                        "{} (at update {})",
                        saved.state.steps_per_epoch, saved.state.step
                    ),
                    now: steps_per_epoch.to_string(),
                });
            }
            saved.state
        }
        None => RunState {
            step: 0,
            steps_per_epoch,
            best: None,
            evals: Vec::new(),
            metrics_bytes: 0,
            base_sha256,
            config: config.clone(),
        },
    };
    let mut trainer = Trainer {
        config,
        setup: &setup,
        data: &data,
        schedule: LinearSchedule::new(
            config.peak_lr(),
            config.warmup_ratio,
            steps_per_epoch * config.epochs,
        ),
        optimizer,
        log: MetricsLog::open(&run_dir.join("metrics.jsonl"), state.metrics_bytes)?,
        steps: Vec::new(),
        trained_samples: 0,
        trained_seconds: 0.0,
    };
    trainer.steps = read_step_records(&run_dir.join("metrics.jsonl"))?;
    let finished = trainer.train(&mut state, micro_batches)?;
    if !finished {
        return Ok(TrainOutcome {
            report: None,
            steps: state.step,
        });
    }
    let report = trainer.finish(&state)?;
    Ok(TrainOutcome {
        report: Some(report),
        steps: state.step,
    })
}

/// Refuses a `--batch` whose activations would not fit in memory (CPU; GPUs report their own
/// out-of-memory errors); warns above half of it.
fn check_memory(config: &TrainConfig, setup: &Setup) -> Result<(), Error> {
    if !setup.device.is_cpu() {
        return Ok(());
    }
    let needed = memory::activation_bytes(&setup.base.config, config.batch, config.max_len);
    let Some(available) = memory::available_bytes() else {
        return Ok(());
    };
    let mib = |bytes: u64| bytes >> 20;
    if needed > available {
        return Err(Error::BatchTooLarge {
            batch: config.batch,
            max_len: config.max_len,
            needed_mib: mib(needed),
            available_mib: mib(available),
        });
    }
    if needed > available / 2 {
        tracing::warn!(
            "--batch {} at --max-len {} needs about {} MiB of the {} MiB available; lower --batch if the machine starts swapping",
            config.batch,
            config.max_len,
            mib(needed),
            mib(available)
        );
    }
    Ok(())
}

/// The loop's state that is not checkpointed.
struct Trainer<'a> {
    config: &'a TrainConfig,
    setup: &'a Setup,
    data: &'a RunData,
    schedule: LinearSchedule,
    optimizer: AdamW,
    log: MetricsLog,
    /// Every update's record, for the curve (earlier sessions' read back from the log).
    steps: Vec<StepRecord>,
    trained_samples: usize,
    trained_seconds: f64,
}

impl Trainer<'_> {
    /// Trains from `state.step` to the end (true) or to `--stop-after` (false).
    fn train(&mut self, state: &mut RunState, micro_batches: usize) -> Result<bool, Error> {
        let config = self.config;
        let total = self.schedule.total;
        let progress = progress_bar(config.progress, total, state.step);
        let lengths = self.data.train.lengths();
        let mut scratch = TokenBatch::default();
        for epoch in state.step / state.steps_per_epoch..config.epochs {
            let batches = epoch_batches(&lengths, config.batch, config.seed, epoch);
            let first = state.step - epoch * state.steps_per_epoch;
            for (update, group) in batches.chunks(config.grad_accum).enumerate().skip(first) {
                let started = Instant::now();
                let examples: usize = group.iter().map(Vec::len).sum();
                let mut loss_sum = 0.0;
                for (j, indices) in group.iter().enumerate() {
                    let position = epoch * micro_batches + update * config.grad_accum + j;
                    loss_sum += self.micro_step(indices, position, examples, &mut scratch)?;
                }
                state.step += 1;
                let lr = self.schedule.rate(state.step);
                let clip = (config.max_grad_norm > 0.0).then_some(config.max_grad_norm);
                let grad_norm = self.optimizer.step(lr, clip).context("optimizer step")?;
                let loss = loss_sum / examples as f64;
                if !loss.is_finite() {
                    return Err(Error::Diverged {
                        step: state.step,
                        loss: loss as f32,
                    });
                }
                let seconds = started.elapsed().as_secs_f64();
                self.trained_samples += examples;
                self.trained_seconds += seconds;
                let record = StepRecord {
                    kind: "step".into(),
                    step: state.step,
                    epoch: state.step as f64 / state.steps_per_epoch as f64,
                    loss,
                    lr,
                    grad_norm,
                    samples_per_s: examples as f64 / seconds.max(1e-9),
                };
                self.log.write(&record)?;
                progress.set_position(state.step as u64);
                progress.set_message(format!(
                    "loss {loss:.4}  lr {lr:.2e}  {:.1} samples/s",
                    record.samples_per_s
                ));
                self.steps.push(record);
                if state.step.is_multiple_of(state.steps_per_epoch) {
                    self.end_epoch(state, epoch + 1, &progress)?;
                }
                let checkpoint_due = config
                    .checkpoint_every
                    .is_some_and(|every| state.step.is_multiple_of(every));
                let stop = config.stop_after == Some(state.step) && state.step < total;
                if checkpoint_due || stop {
                    self.save_checkpoint(state)?;
                }
                if stop {
                    progress.abandon_with_message(format!("stopped after step {}", state.step));
                    return Ok(false);
                }
            }
        }
        progress.finish_and_clear();
        Ok(true)
    }

    /// Forward and backward of one micro-batch; gradients scaled so that the update averages
    /// over all `update_examples` of its accumulation group. Returns the summed loss.
    fn micro_step(
        &mut self,
        indices: &[usize],
        position: usize,
        update_examples: usize,
        scratch: &mut TokenBatch,
    ) -> Result<f64, Error> {
        let setup = self.setup;
        let batch = to_device(
            &self.data.train,
            indices,
            setup.tokenizer.pad_id(),
            scratch,
            &setup.device,
        )
        .context("uploading a batch")?;
        let (seed, position) = (self.config.seed, position as u64);
        let masks = if self.config.host_dropout_masks {
            DropoutMasks::on_host(seed, position, &setup.device)
        } else {
            DropoutMasks::new(seed, position, &setup.device).context("seeding dropout")?
        };
        let logits = setup
            .model
            .forward_t(&batch.ids, &batch.mask, Mode::Train(&masks))
            .context("forward pass")?;
        let loss_sum = cross_entropy_sum(&logits, &batch.labels).context("loss")?;
        let scaled = (&loss_sum / update_examples as f64).context("loss")?;
        let grads = scaled.backward().context("backward pass")?;
        self.optimizer
            .accumulate(&grads)
            .context("accumulating gradients")?;
        loss_sum
            .to_dtype(DType::F64)
            .and_then(|l| l.to_scalar::<f64>())
            .context("reading the loss")
    }

    /// Evaluates on the validation set and keeps the model if it is the best so far (or, with
    /// no validation set, always).
    fn end_epoch(
        &mut self,
        state: &mut RunState,
        epoch: usize,
        progress: &ProgressBar,
    ) -> Result<(), Error> {
        let setup = self.setup;
        let dir = output::model_dir(&self.config.out, self.config);
        if self.data.validation.is_empty() {
            return output::save_model(&dir, &setup.params, self.config, &setup.base);
        }
        let (metrics, loss) = evaluate(
            &setup.model,
            &self.data.validation,
            self.config.batch,
            setup.tokenizer.pad_id(),
            &setup.device,
        )?;
        let summary = EvalSummary {
            epoch,
            step: state.step,
            loss,
            accuracy: metrics.accuracy(),
            true_positive: metrics.true_positive,
            false_positive: metrics.false_positive,
            true_negative: metrics.true_negative,
            false_negative: metrics.false_negative,
        };
        self.log.write(&EvalRecord {
            kind: "eval",
            split: "validation",
            summary: &summary,
        })?;
        let is_best = state
            .best
            .as_ref()
            .is_none_or(|best| summary.accuracy > best.accuracy);
        progress.suspend(|| {
            tracing::info!(
                "epoch {epoch}: validation accuracy {:.4}, loss {loss:.4}{}",
                summary.accuracy,
                if is_best { " (best so far, kept)" } else { "" }
            )
        });
        if is_best {
            output::save_model(&dir, &setup.params, self.config, &setup.base)?;
            state.best = Some(summary.clone());
        }
        state.evals.push(summary);
        Ok(())
    }

    fn save_checkpoint(&mut self, state: &mut RunState) -> Result<(), Error> {
        state.metrics_bytes = self.log.bytes();
        let trainable = self
            .setup
            .params
            .trainable_to_host()
            .context("downloading trainable tensors")?;
        let moments = self
            .optimizer
            .moments_to_host()
            .context("downloading optimizer moments")?;
        run_checkpoint::save(&self.config.out, state, &trainable, &moments)
    }

    /// Fits the kept model's temperature on the validation set, evaluates it on the test
    /// sample, draws the curve, writes the report.
    fn finish(&mut self, state: &RunState) -> Result<FinalReport, Error> {
        let (config, setup) = (self.config, self.setup);
        let dir = output::model_dir(&config.out, config);
        let validation = &self.data.validation;
        if !validation.is_empty() || self.data.test.is_some() {
            let kept = output::load_model(&dir, config)?;
            setup
                .params
                .restore_trainable(&kept)
                .map_err(|error| Error::CorruptCheckpoint {
                    path: dir.clone(),
                    source: error.into(),
                })?;
        }
        let logits = |set: &EncodedSet| {
            report::logits(
                &setup.model,
                set,
                config.batch,
                setup.tokenizer.pad_id(),
                &setup.device,
            )
        };
        let calibration = if !validation.is_empty() {
            let rows = logits(validation)?;
            let fitted = Calibration::fit(&rows, &validation.labels, "validation");
            fitted.write(&dir)?;
            let pairs = |t| crate::calibration::top_labels(&rows, &validation.labels, t).collect();
            let path = config.out.join("reliability.png");
            let (before, after): (Vec<_>, Vec<_>) = (pairs(1.0), pairs(fitted.temperature));
            let bins = crate::metrics::CALIBRATION_BINS;
            if let Err(error) =
                plot::draw_reliability(&path, &before, &after, fitted.temperature, bins)
            {
                tracing::warn!(
                    "skipping reliability.png: {}",
                    crate::error_text::describe(&error)
                );
            }
            Some(fitted)
        } else {
            None
        };
        let (test, test_ece) = match &self.data.test {
            Some(test) => {
                let (metrics, _) = evaluate(
                    &setup.model,
                    test,
                    config.batch,
                    setup.tokenizer.pad_id(),
                    &setup.device,
                )?;
                let rows = logits(test)?;
                let temperature = calibration.as_ref().map_or(1.0, |c| c.temperature);
                let ece = [
                    crate::calibration::ece(&rows, &test.labels, 1.0),
                    crate::calibration::ece(&rows, &test.labels, temperature),
                ];
                (Some(metrics.report()), Some(ece))
            }
            None => (None, None),
        };
        let curve = config.out.join("curve.png");
        if let Err(error) = plot::draw_curve(&curve, &self.steps, &state.evals) {
            tracing::warn!(
                "skipping curve.png: {}",
                crate::error_text::describe(&error)
            );
        }
        let report = FinalReport {
            config: config.clone(),
            examples: ExampleCounts {
                train: self.data.train.len(),
                validation: self.data.validation.len(),
                test: self.data.test.as_ref().map_or(0, EncodedSet::len),
            },
            truncated: self.data.truncated,
            steps: state.step,
            best_epoch: state.best.as_ref().map(|b| b.epoch),
            validation: state.best.as_ref().map(|b| b.metrics().report()),
            test,
            output: dir,
            samples_per_s: self.trained_samples as f64 / self.trained_seconds.max(1e-9),
            calibration,
            test_ece,
        };
        report.write(&config.out)?;
        Ok(report)
    }
}

/// An evaluation line of `metrics.jsonl`.
#[derive(Serialize)]
struct EvalRecord<'a> {
    kind: &'static str,
    split: &'static str,
    #[serde(flatten)]
    summary: &'a EvalSummary,
}

/// The update records already in `metrics.jsonl` (a resumed run's earlier sessions).
fn read_step_records(path: &Path) -> Result<Vec<StepRecord>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<StepRecord>(line).ok())
        .filter(|record| record.kind == "step")
        .collect())
}

fn progress_bar(visible: bool, total: usize, position: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total as u64),
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .expect("static progress template"),
    );
    bar.set_position(position as u64);
    bar
}
