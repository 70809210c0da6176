//! `sentimq train --throughput N`: the training step alone, timed, at the run's settings.
//!
//! One micro-batch of `--batch` training reviews that each fill `--max-len` tokens (no
//! padding, as `benches/peft_throughput.py` feeds PyTorch), one warm-up update, then `N`
//! updates of forward, backward and AdamW with clipping, each phase timed. The loss is read
//! back inside the forward phase, so device work is finished within each timing.

use std::time::{Duration, Instant};

use candle_core::DType;
use serde::Serialize;

use super::batches::{to_device, EncodedSet};
use super::dropout::{DropoutMasks, Mode};
use super::error::TensorContext;
use super::optimizer::{AdamW, AdamWConfig};
use super::{build_model, cross_entropy_sum, dataset, Error, TrainConfig};
use crate::data::{self, Split};
use crate::tokenizer::TokenBatch;

/// Measured training-step figures.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    /// Training examples per second over the timed updates.
    pub samples_per_s: f64,
    /// Mean wall time of one update.
    pub ms_per_step: f64,
    /// Of which the forward pass and loss.
    pub forward_ms: f64,
    /// The backward pass.
    pub backward_ms: f64,
    /// Gradient accumulation, clipping and the AdamW update.
    pub optimizer_ms: f64,
    /// Reviews per update.
    pub batch: usize,
    /// Tokens per review.
    pub seq: usize,
    /// Timed updates.
    pub steps: usize,
    /// Trainable parameters.
    pub trainable: usize,
    /// Threads of the CPU kernels (rayon's pool).
    pub threads: usize,
    /// Peak resident memory of the process, MiB (`VmHWM`; absent off Linux).
    pub peak_rss_mib: Option<f64>,
}

/// Measures `steps` updates at `config`'s model, LoRA and batch settings.
///
/// Errors: the model or data cannot be loaded, fewer than `--batch` training reviews fill
/// `--max-len` tokens, or a tensor operation fails.
pub fn measure(config: &TrainConfig, steps: usize) -> Result<Throughput, Error> {
    let setup = build_model(config, DType::F32)?;
    let examples = data::load(&config.data, Split::Train)?;
    // Encode reviews a slice at a time until `batch` of them fill the window.
    let mut full = EncodedSet::default();
    for slice in examples.chunks(256) {
        let set = dataset::encode(slice, &setup.tokenizer, &mut 0)?;
        for (item, label) in set.items.into_iter().zip(set.labels) {
            if item.ids.len() == config.max_len && full.len() < config.batch {
                full.items.push(item);
                full.labels.push(label);
            }
        }
        if full.len() == config.batch {
            break;
        }
    }
    if full.len() < config.batch {
        return Err(Error::TooFewFullLength {
            found: full.len(),
            needed: config.batch,
            max_len: config.max_len,
        });
    }
    let indices: Vec<usize> = (0..full.len()).collect();
    let batch = to_device(
        &full,
        &indices,
        setup.tokenizer.pad_id(),
        &mut TokenBatch::default(),
        &setup.device,
    )
    .context("uploading the batch")?;
    let trainable = setup.params.trainable();
    let parameters = trainable.values().map(|v| v.elem_count()).sum();
    let mut optimizer = AdamW::new(trainable, AdamWConfig::default()).context("optimizer")?;
    let mut phases = [Duration::ZERO; 3];
    let mut update = |position: u64, phases: &mut [Duration; 3]| -> Result<(), Error> {
        let started = Instant::now();
        let masks =
            DropoutMasks::new(config.seed, position, &setup.device).context("seeding dropout")?;
        let logits = setup
            .model
            .forward_t(&batch.ids, &batch.mask, Mode::Train(&masks))
            .context("forward pass")?;
        let loss = (cross_entropy_sum(&logits, &batch.labels).context("loss")?
            / config.batch as f64)
            .context("loss")?;
        loss.to_dtype(DType::F64)
            .and_then(|l| l.to_scalar::<f64>())
            .context("reading the loss")?;
        let forward_done = Instant::now();
        let grads = loss.backward().context("backward pass")?;
        let backward_done = Instant::now();
        optimizer
            .accumulate(&grads)
            .context("accumulating gradients")?;
        let clip = (config.max_grad_norm > 0.0).then_some(config.max_grad_norm);
        optimizer.step(1e-4, clip).context("optimizer step")?;
        phases[0] += forward_done - started;
        phases[1] += backward_done - forward_done;
        phases[2] += backward_done.elapsed();
        Ok(())
    };
    update(0, &mut [Duration::ZERO; 3])?;
    let started = Instant::now();
    for position in 1..=steps as u64 {
        update(position, &mut phases)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_step = |d: Duration| d.as_secs_f64() * 1e3 / steps.max(1) as f64;
    Ok(Throughput {
        samples_per_s: (config.batch * steps) as f64 / seconds,
        ms_per_step: seconds * 1e3 / steps.max(1) as f64,
        forward_ms: per_step(phases[0]),
        backward_ms: per_step(phases[1]),
        optimizer_ms: per_step(phases[2]),
        batch: config.batch,
        seq: config.max_len,
        steps,
        trainable: parameters,
        threads: sentimq_train_kernels::threads(),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// `VmHWM` from `/proc/self/status`, in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
