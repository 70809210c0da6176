//! `sentimq train`: LoRA (or full) fine-tuning of a BERT checkpoint for binary sentiment, with
//! candle, on CPU (or CUDA with the `cuda` feature).
//!
//! This module owns the trainable model (`model`: own candle code, since candle-transformers'
//! BERT cannot train; `lora`: the adapter layers), the optimizer ([`optimizer`], `schedule`),
//! batching ([`batches`]), the loop ([`run`]), resumable
//! checkpoints and the run's outputs (adapter, `metrics.jsonl`, report, `curve.png`,
//! `reliability.png`).
//! Reading checkpoints, data and tokenizing are left to [`crate::checkpoint`],
//! [`crate::data`] and [`crate::tokenizer`]; the adapter format to [`crate::adapter`], which
//! `sentimq build` reads back.
//!
//! Everything random — the `--limit` sample, the validation split, LoRA and head
//! initialisation, the data order, dropout masks — comes from the crate's seeded
//! [`SplitMix64`](crate::rng::SplitMix64), so a run is reproducible from its `--seed` and a
//! resumed run continues exactly.
//!
//! ```no_run
//! use sentimq::train::{run, TrainConfig};
//!
//! let mut config = TrainConfig::new(
//!     "huawei-noah/TinyBERT_General_4L_312D",
//!     "aclImdb_v1.tar.gz",
//!     "runs/tinybert",
//! );
//! config.limit = Some(2000);
//! config.max_len = 128;
//! config.head_len = 64;
//! let outcome = run(&config)?;
//! if let Some(report) = outcome.report {
//!     println!("{report}");
//! }
//! # Ok::<(), sentimq::train::Error>(())
//! ```

mod adamw_cpu;
pub mod batches;
mod checkpoint;
mod config;
pub mod dataset;
pub mod dropout;
mod error;
mod fused;
mod init;
mod lora;
mod memory;
mod model;
pub mod optimizer;
pub mod output;
mod params;
mod plot;
pub mod report;
mod schedule;
pub mod throughput;
mod trainer;

pub use config::{DeviceSpec, TrainConfig, DEFAULT_FULL_LR, DEFAULT_LORA_LR};
pub use error::{Error, RestoreError};
pub use lora::LoraSettings;
pub use model::{BertClassifier, HiddenStates};
pub use params::Parameters;
pub use trainer::{build_model, cross_entropy_sum, run, Setup, TrainOutcome};

#[cfg(test)]
mod tests;
