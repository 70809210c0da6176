//! `--init-from`: start a run's trainable tensors from the kept model of an earlier run instead
//! of a fresh initialisation — a second training stage (e.g. more short spans, a lower learning
//! rate) on top of a first. A `--full` run may also start from a LoRA adapter: the adapter is
//! merged into the base's weights first (`W + α/r · B·A`, its pooler and classifier as saved),
//! so full fine-tuning goes on from where the adapter's training stopped.

use std::path::Path;

use crate::checkpoint::{BertConfig, TensorMap};

use super::{output, Error, TrainConfig};

/// Replaces every trainable tensor of `weights` (names for which `is_trainable` holds) with the
/// kept model in `dir` (an `adapter/` directory, or `model/` with `--full`; with `--full`, an
/// adapter directory is merged into `weights` instead — see the module's documentation).
///
/// Errors: [`Error::InitMismatch`] when `dir` lacks one of the run's trainable tensors, holds one
/// the run does not train, has another shape, or (LoRA) another alpha — i.e. it was trained with
/// another base, `--full`, `--lora-r`, `--lora-alpha` or `--lora-targets` — or when its run held
/// out another validation split (see [`check_same_split`]); errors of reading it.
pub(crate) fn apply(
    weights: &mut TensorMap,
    is_trainable: &dyn Fn(&str) -> bool,
    dir: &Path,
    config: &TrainConfig,
    bert: &BertConfig,
) -> Result<(), Error> {
    if config.full && dir.join(crate::adapter::CONFIG_FILE).is_file() {
        check_same_split(dir, config)?;
        let adapter = crate::adapter::LoraAdapter::load(dir)?;
        return adapter.merge_into(weights, bert).map_err(Error::from);
    }
    let mismatch = |reason: String| Error::InitMismatch {
        dir: dir.to_path_buf(),
        reason,
    };
    let mut trained = if config.full {
        output::load_model(dir, config)?
    } else {
        let adapter = crate::adapter::LoraAdapter::load(dir)?;
        if adapter.config.lora_alpha != config.lora.alpha {
            return Err(mismatch(format!(
                "its lora_alpha is {}, this run has --lora-alpha {}",
                adapter.config.lora_alpha, config.lora.alpha
            )));
        }
        output::adapter_tensors(adapter)
    };
    check_same_split(dir, config)?;
    for (name, tensor) in weights.iter_mut().filter(|(name, _)| is_trainable(name)) {
        let Some(initial) = trained.remove(name) else {
            return Err(mismatch(format!("it has no tensor {name}")));
        };
        if initial.shape != tensor.shape {
            return Err(mismatch(format!(
                "its {name} is {:?}, this run's is {:?}",
                initial.shape, tensor.shape
            )));
        }
        *tensor = initial;
    }
    if let Some(extra) = trained.keys().next() {
        return Err(mismatch(format!(
            "it trains {extra}, which this run does not ({} such tensors)",
            trained.len()
        )));
    }
    Ok(())
}

/// The settings that choose a run's validation reviews.
const SPLIT_FIELDS: [&str; 4] = ["data", "limit", "seed", "validation_fraction"];

/// Where `dir` is a kept model inside a run directory (`<run>/adapter`, `<run>/model`) whose
/// `report.json` records its settings, refuses a second stage that would hold out another
/// validation split: it would train on reviews the first stage held out, and choosing on them
/// would no longer be honest. A kept model without a report (copied, or from elsewhere) cannot
/// be checked and is accepted.
fn check_same_split(dir: &Path, config: &TrainConfig) -> Result<(), Error> {
    let Some(report) = dir.parent().map(|run| run.join("report.json")) else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(&report) else {
        return Ok(());
    };
    let first: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| Error::CorruptCheckpoint {
            path: report.clone(),
            source: source.into(),
        })?;
    let now = serde_json::to_value(config).map_err(|source| Error::CorruptCheckpoint {
        path: report.clone(),
        source: source.into(),
    })?;
    for field in SPLIT_FIELDS {
        let (was, is) = (&first["config"][field], &now[field]);
        if was != is {
            return Err(Error::InitMismatch {
                dir: dir.to_path_buf(),
                reason: format!(
                    "its run ({}) held out its validation reviews with {field} = {was}, this run has {is}, so it would train on reviews the first stage held out",
                    report.display()
                ),
            });
        }
    }
    Ok(())
}
