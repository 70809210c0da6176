//! sentimq: a fine-tuned BERT sentiment classifier for small ARM devices, fed from MQTT.
//!
//! The library is cut by pipeline stage (see `ARCHITECTURE.md`): [`tokenizer`] and
//! [`checkpoint`] serve everyone; [`export`] turns a checkpoint and adapter into ONNX graphs;
//! [`engine`] runs them with tract; [`classifier`] ties a built model directory together
//! (and `eval` scores one on labelled data);
//! [`daemon`] serves it over MQTT (`sentimqd`); `train` (feature `train`) fine-tunes the
//! classifier with candle.
//! Workstation-only modules sit behind the `workstation` feature, so the daemon stays small.
#![warn(missing_docs)]

#[cfg(feature = "workstation")]
pub mod adapter;
pub mod allocator;
#[cfg(feature = "workstation")]
pub mod bench;
#[cfg(feature = "workstation")]
pub mod calibration;
#[cfg(feature = "workstation")]
pub mod checkpoint;
pub mod classifier;
pub mod daemon;
#[cfg(feature = "workstation")]
pub mod data;
pub mod engine;
pub mod error_text;
#[cfg(feature = "workstation")]
pub mod eval;
#[cfg(feature = "workstation")]
pub mod export;
#[cfg(any(all(test, feature = "workstation"), feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "workstation")]
mod hub;
pub mod manifest;
pub mod metrics;
pub mod pooling;
pub mod rng;
#[cfg(test)]
mod test_inputs;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;
