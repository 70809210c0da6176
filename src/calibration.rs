//! Temperature scaling (Guo et al., 2017): one scalar `T` that divides the logits, fitted on
//! held-out data by minimising the negative log-likelihood, so that a probability of 0.9 is
//! right about 90 % of the time. It never changes a verdict (the argmax), only the scores.
//!
//! `sentimq train` fits it on the validation set of the kept model and writes
//! [`FILE`] next to the adapter; `sentimq build` folds `1/T` into the classifier's weight and
//! bias (so every runtime's probabilities are the calibrated ones) and records `T` in
//! `model.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metrics::{expected_calibration_error, CALIBRATION_BINS};

/// The file a fitted temperature is stored in, next to the adapter (or full model).
pub const FILE: &str = "calibration.json";

/// Temperatures searched: far beyond what a fine-tuned classifier needs either way.
const RANGE: (f64, f64) = (0.05, 20.0);

/// A fitted temperature and what it changed on the data it was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Logits are divided by this.
    pub temperature: f64,
    /// What it was fitted on, e.g. `validation`.
    pub fitted_on: String,
    /// Examples it was fitted on.
    pub examples: usize,
    /// Mean negative log-likelihood at `T = 1`.
    pub nll_before: f64,
    /// Mean negative log-likelihood at the fitted `T`.
    pub nll_after: f64,
    /// Expected calibration error (15 bins) at `T = 1`.
    pub ece_before: f64,
    /// Expected calibration error (15 bins) at the fitted `T`.
    pub ece_after: f64,
}

/// Errors of reading or writing [`FILE`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written.
    #[error("{path}: cannot {action} the calibration")]
    Io {
        /// The file.
        path: PathBuf,
        /// `read` or `write`.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a calibration, or its temperature is not a positive number.
    #[error("{path}: not a valid calibration")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Calibration {
    /// Fits `T` on `logits` (one row per example) and `labels` (the true class of each).
    pub fn fit(logits: &[Vec<f32>], labels: &[u8], fitted_on: &str) -> Self {
        let temperature = fit_temperature(logits, labels);
        Calibration {
            temperature,
            fitted_on: fitted_on.to_string(),
            examples: logits.len(),
            nll_before: nll(logits, labels, 1.0),
            nll_after: nll(logits, labels, temperature),
            ece_before: ece(logits, labels, 1.0),
            ece_after: ece(logits, labels, temperature),
        }
    }

    /// Reads `dir`'s [`FILE`], `None` when there is none.
    ///
    /// Errors: the file exists but cannot be read, is not a calibration, or holds a
    /// temperature that is not a positive finite number.
    pub fn read(dir: &Path) -> Result<Option<Self>, Error> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    path,
                    action: "read",
                    source,
                })
            }
        };
        let calibration: Calibration =
            serde_json::from_str(&text).map_err(|source| Error::Invalid {
                path: path.clone(),
                source: source.into(),
            })?;
        if !(calibration.temperature.is_finite() && calibration.temperature > 0.0) {
            return Err(Error::Invalid {
                path,
                source: format!("temperature {}", calibration.temperature).into(),
            });
        }
        Ok(Some(calibration))
    }

    /// Writes `dir`'s [`FILE`].
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(FILE);
        let json = serde_json::to_string_pretty(self).map_err(|source| Error::Invalid {
            path: path.clone(),
            source: source.into(),
        })?;
        std::fs::write(&path, json + "\n").map_err(|source| Error::Io {
            path,
            action: "write",
            source,
        })
    }
}

/// `softmax(row / temperature)`.
pub fn probabilities(row: &[f32], temperature: f64) -> Vec<f64> {
    let scaled: Vec<f64> = row.iter().map(|&z| f64::from(z) / temperature).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scaled.iter().map(|z| (z - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Mean negative log-likelihood of `labels` under `softmax(logits / temperature)`.
pub fn nll(logits: &[Vec<f32>], labels: &[u8], temperature: f64) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(row, &label)| {
            let p = probabilities(row, temperature);
            -p.get(usize::from(label))
                .copied()
                .unwrap_or(0.0)
                .max(1e-300)
                .ln()
        })
        .sum();
    total / logits.len().max(1) as f64
}

/// Expected calibration error (15 bins, top-label probability) at `temperature`.
pub fn ece(logits: &[Vec<f32>], labels: &[u8], temperature: f64) -> f64 {
    expected_calibration_error(top_labels(logits, labels, temperature), CALIBRATION_BINS)
}

/// `(top-label probability, whether the top label is the true one)` of each row at
/// `temperature`: what calibration error and reliability diagrams are made of.
pub fn top_labels<'a>(
    logits: &'a [Vec<f32>],
    labels: &'a [u8],
    temperature: f64,
) -> impl Iterator<Item = (f64, bool)> + 'a {
    logits.iter().zip(labels).map(move |(row, &label)| {
        let p = probabilities(row, temperature);
        let top = crate::metrics::argmax(&p);
        (p[top], top == usize::from(label))
    })
}

/// The temperature in [`RANGE`] with the lowest NLL: golden-section search on `ln T` (the NLL
/// is convex in `1/T`, so unimodal there); 1 for no examples.
pub fn fit_temperature(logits: &[Vec<f32>], labels: &[u8]) -> f64 {
    if logits.is_empty() {
        return 1.0;
    }
    let loss = |log_t: f64| nll(logits, labels, log_t.exp());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut lo, mut hi) = (RANGE.0.ln(), RANGE.1.ln());
    let (mut a, mut b) = (hi - ratio * (hi - lo), lo + ratio * (hi - lo));
    let (mut fa, mut fb) = (loss(a), loss(b));
    for _ in 0..60 {
        if fa < fb {
            hi = b;
            (b, fb) = (a, fa);
            a = hi - ratio * (hi - lo);
            fa = loss(a);
        } else {
            lo = a;
            (a, fa) = (b, fb);
            b = lo + ratio * (hi - lo);
            fb = loss(b);
        }
    }
    ((lo + hi) / 2.0).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overconfident_logits_get_a_temperature_above_one_and_a_lower_ece() {
        // Logits that say 0.9999 for examples that are right 80 % of the time.
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for i in 0..500 {
            let positive = i % 2 == 0;
            logits.push(if positive {
                vec![-4.6, 4.6]
            } else {
                vec![4.6, -4.6]
            });
            let right = i % 5 != 0;
            labels.push(u8::from(positive == right));
        }
        let fitted = Calibration::fit(&logits, &labels, "validation");
        // softmax(9.2 / T) = 0.8 at T = 9.2 / ln 4.
        let want = 9.2 / 4f64.ln();
        assert!((fitted.temperature - want).abs() < 1e-3, "{fitted:?}");
        assert!(
            fitted.ece_after < 1e-3 && fitted.ece_before > 0.19,
            "{fitted:?}"
        );
        assert!(fitted.nll_after < fitted.nll_before);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Calibration::read(dir.path()).unwrap(), None);
        fitted.write(dir.path()).unwrap();
        let read = Calibration::read(dir.path()).unwrap().expect("written");
        assert!((read.temperature - fitted.temperature).abs() < 1e-12);
        assert_eq!(
            (read.examples, read.fitted_on.as_str()),
            (500, "validation")
        );
        std::fs::write(dir.path().join(FILE), r#"{"temperature": -1}"#).unwrap();
        assert!(Calibration::read(dir.path()).is_err());
    }
}
