//! `sentimqd` against a real mosquitto: the MQTT contract end to end, bad input, broker and
//! daemon crashes, TLS, model reload; plus `sentimqd validate`, `sentimqd demo` and the README's tables.

mod bad_input;
mod burst;
mod client;
mod default_model;
#[cfg(feature = "embedded-broker")]
mod demo;
mod docs;
mod emulated;
mod end_to_end;
mod faults;
mod harness;
mod hostile;
mod model_options;
mod reload;
mod shutdown;
mod tls;
mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sentimq::classifier::{Classification, Classifier};

use crate::util::minilm_random_model;

/// Generous deadline for a daemon to load the model and come online.
pub const START: Duration = Duration::from_secs(60);
/// Deadline for one reply.
pub const REPLY: Duration = Duration::from_secs(20);

/// The test model (MiniLM with a random head), after checking mosquitto is installed; panics
/// naming what is missing.
pub fn setup() -> &'static Path {
    harness::mosquitto();
    minilm_random_model()
}

/// What the in-process classifier says about `text`, for comparing with the daemon's results.
/// Each model directory is loaded once per test binary.
pub fn expected(model: &Path, text: &str) -> Classification {
    static CLASSIFIERS: OnceLock<Mutex<HashMap<PathBuf, Arc<Classifier>>>> = OnceLock::new();
    let classifier = {
        let mut loaded = CLASSIFIERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loaded
            .entry(model.to_path_buf())
            .or_insert_with(|| Arc::new(Classifier::load(model, None).expect("test model loads")))
            .clone()
    };
    classifier.classify(&[text]).expect("classifies").remove(0)
}

/// Tolerance on scores between the daemon under test and the in-process classifier:
/// `$SENTIMQ_DEVICE_TOLERANCE` for an emulated ARM daemon (set per target by
/// `cross/targets.sh`: a last-bit f32 difference can move an int8 rounding, see
/// `tests/it/device.rs`), else 1e-3.
fn tolerance() -> f32 {
    std::env::var("SENTIMQ_DEVICE_TOLERANCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1e-3)
}

/// Asserts a result JSON agrees with the in-process classifier (int8 with per-token scales is
/// batch-independent, so on the same machine the tolerance covers only float summation order).
pub fn assert_result_matches(model: &Path, result: &serde_json::Value, text: &str) {
    let want = expected(model, text);
    assert_eq!(
        result["label"],
        want.label.as_str(),
        "label of {text:?}: {result}"
    );
    let score = result["score"].as_f64().expect("score");
    let tolerance = f64::from(tolerance());
    assert!(
        (score - f64::from(want.score)).abs() <= tolerance,
        "score of {text:?}: daemon {score}, in-process {} (tolerance {tolerance})",
        want.score
    );
    assert_eq!(result["tokens"], want.tokens, "tokens of {text:?}");
    assert_eq!(result["truncated"], want.truncated);
    let total: f64 = result["scores"]
        .as_object()
        .expect("scores is an object")
        .values()
        .map(|p| p.as_f64().expect("probability"))
        .sum();
    assert!((total - 1.0).abs() < 1e-3, "scores sum to {total}");
}
