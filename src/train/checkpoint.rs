//! Resumable checkpoints: `runs/<name>/checkpoint/` holds `state.json` (position in the
//! schedule, best validation result, the run's settings and base digest),
//! `trainable.safetensors` (every trainable tensor, canonical names) and
//! `optimizer.safetensors` (AdamW moments `m.<name>`, `v.<name>`).
//!
//! No random-generator state needs saving: the data order of an epoch is a function of
//! `(seed, epoch)` and each micro-batch's dropout masks of `(seed, its index in the run)`, so
//! `(seed, step)` is the whole state, and a resumed run continues bit for bit.
//! A checkpoint is written into `checkpoint.tmp/` and renamed into place, so an interruption
//! while writing leaves the previous one intact.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{read_safetensors, write_safetensors, TensorMap};

use super::report::EvalSummary;
use super::{Error, TrainConfig};

/// Directory name of the checkpoint inside the run directory.
pub const DIR: &str = "checkpoint";
const STATE_FILE: &str = "state.json";
const TRAINABLE_FILE: &str = "trainable.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Where a run stands, and what it must match when resumed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer updates done.
    pub step: usize,
    /// Updates per epoch (fixed for a run).
    pub steps_per_epoch: usize,
    /// The best validation result so far (its adapter is in `adapter/`).
    pub best: Option<EvalSummary>,
    /// Every validation result so far, one per finished epoch.
    pub evals: Vec<EvalSummary>,
    /// Bytes of `metrics.jsonl` written up to this checkpoint; a resumed run truncates the
    /// file there, so no line is written twice.
    pub metrics_bytes: u64,
    /// sha256 of the base weights file.
    pub base_sha256: String,
    /// The run's settings.
    pub config: TrainConfig,
}

/// A loaded training checkpoint: what a resumed run restores.
pub struct RunCheckpoint {
    /// The state.
    pub state: RunState,
    /// Trainable tensors by canonical name.
    pub trainable: TensorMap,
    /// AdamW moments.
    pub moments: TensorMap,
}

/// Writes a checkpoint into `run_dir/checkpoint/`, replacing the previous one.
pub fn save(
    run_dir: &Path,
    state: &RunState,
    trainable: &TensorMap,
    moments: &TensorMap,
) -> Result<(), Error> {
    let final_dir = run_dir.join(DIR);
    let tmp = run_dir.join(format!("{DIR}.tmp"));
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(write_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(write_err(&tmp))?;
    let safetensors = |map: &TensorMap, file: &str| -> Result<(), Error> {
        let path = tmp.join(file);
        let tensors: Vec<(String, &crate::checkpoint::Tensor)> =
            map.iter().map(|(k, v)| (k.clone(), v)).collect();
        write_safetensors(&tensors, &path).map_err(|source| Error::WriteTensors {
            path: path.clone(),
            source: Box::new(source),
        })
    };
    safetensors(trainable, TRAINABLE_FILE)?;
    safetensors(moments, OPTIMIZER_FILE)?;
    let state_path = tmp.join(STATE_FILE);
    let json = serde_json::to_string_pretty(state).expect("run state serializes");
    std::fs::write(&state_path, json + "\n").map_err(write_err(&state_path))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(write_err(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(write_err(&final_dir))
}

/// Reads the checkpoint of `run_dir`.
///
/// Errors: [`Error::NoCheckpoint`] when there is none; [`Error::CorruptCheckpoint`] when a
/// file is unreadable.
pub fn load(run_dir: &Path) -> Result<RunCheckpoint, Error> {
    let dir = run_dir.join(DIR);
    let state_path = dir.join(STATE_FILE);
    if !state_path.is_file() {
        return Err(Error::NoCheckpoint { dir });
    }
    let corrupt = |path: &PathBuf, source: Box<dyn std::error::Error + Send + Sync>| {
        Error::CorruptCheckpoint {
            path: path.clone(),
            source,
        }
    };
    let text = std::fs::read_to_string(&state_path).map_err(|source| Error::Read {
        path: state_path.clone(),
        source,
    })?;
    let state: RunState =
        serde_json::from_str(&text).map_err(|e| corrupt(&state_path, e.into()))?;
    let read = |file: &str| {
        let path = dir.join(file);
        read_safetensors(&path).map_err(|e| corrupt(&path, e.into()))
    };
    Ok(RunCheckpoint {
        state,
        trainable: read(TRAINABLE_FILE)?,
        moments: read(OPTIMIZER_FILE)?,
    })
}

/// Fails with [`Error::ResumeMismatch`] naming the first setting or base that differs.
pub fn check_compatible(
    run_dir: &Path,
    saved: &RunState,
    config: &TrainConfig,
    base_sha256: &str,
) -> Result<(), Error> {
    let mismatch = |field: &str, saved: &str, now: &str| Error::ResumeMismatch {
        dir: run_dir.join(DIR),
        field: field.to_string(),
        saved: saved.to_string(),
        now: now.to_string(),
    };
    for ((flag, old), (_, new)) in saved
        .config
        .schedule_fields()
        .into_iter()
        .zip(config.schedule_fields())
    {
        if old != new {
            return Err(mismatch(flag, &old, &new));
        }
    }
    if saved.base_sha256 != base_sha256 {
        return Err(mismatch(
            "the base weights (sha256)",
            &saved.base_sha256,
            base_sha256,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Tensor;

    #[test]
    fn round_trip_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig::new("base", "data.csv", dir.path());
        let state = RunState {
            step: 3,
            steps_per_epoch: 5,
            best: None,
            evals: vec![],
            metrics_bytes: 120,
            base_sha256: "ab".into(),
            config: config.clone(),
        };
        let mut tensors = TensorMap::new();
        tensors.insert(
            "classifier.bias".into(),
            Tensor {
                shape: vec![2],
                data: vec![0.5, -0.5],
            },
        );
        assert!(matches!(load(dir.path()), Err(Error::NoCheckpoint { .. })));
        save(dir.path(), &state, &tensors, &tensors).unwrap();
        save(dir.path(), &state, &tensors, &tensors).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.state, state);
        assert_eq!(loaded.trainable, tensors);
        check_compatible(dir.path(), &state, &config, "ab").unwrap();
        let other = TrainConfig {
            batch: 8,
            ..config.clone()
        };
        let error = check_compatible(dir.path(), &state, &other, "ab").unwrap_err();
        assert!(error.to_string().contains("--batch = 16"), "{error}");
        let error = check_compatible(dir.path(), &state, &config, "cd").unwrap_err();
        assert!(error.to_string().contains("base weights"), "{error}");
    }
}
