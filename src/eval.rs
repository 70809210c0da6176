//! Scoring a built model on labelled reviews, as `sentimq eval` does: accuracy, precision,
//! recall, F1, the confusion matrix, accuracy by review length, and one [`Prediction`] per
//! review.
//!
//! Reading the data is `data`'s job and the counting `metrics`'; this module runs the model
//! over the reviews (cleaned as training cleaned them, shortest first in batches so padding
//! stays small) and takes the model's last label (`model.json`'s `labels`) as the positive
//! class, label 1 of the data.
//!
//! ```no_run
//! use std::path::Path;
//! use sentimq::classifier::Classifier;
//! use sentimq::data::{self, Split};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let classifier = Classifier::load(Path::new("models/imdb-minilm"), None)?;
//! let examples = data::load(Path::new("aclImdb"), Split::Test)?;
//! let evaluation = sentimq::eval::evaluate(&classifier, &examples, 16, |_| {})?;
//! println!("{}", evaluation.overall);
//! # Ok(())
//! # }
//! ```

use serde::Serialize;

use crate::classifier::{self, Classifier};
use crate::data::{self, Example};
use crate::metrics::{
    expected_calibration_error, BinaryMetrics, LengthBucketReport, MetricsByLength, MetricsReport,
    CALIBRATION_BINS,
};
use crate::tokenizer::TokenBatch;

/// Errors of an evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A review could not be tokenized, e.g. because it is empty once cleaned.
    #[error("review {source_name}: cannot tokenize it")]
    Encode {
        /// Where the review comes from ([`Example::source`]).
        source_name: String,
        /// The tokenizer's error.
        #[source]
        source: classifier::Error,
    },
    /// The model failed to run.
    #[error("running the model")]
    Classify(#[source] classifier::Error),
}

/// The model's verdict on one review.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// Index of the review in the evaluated examples.
    pub index: usize,
    /// Its label in the data: 0 = negative, 1 = positive.
    pub truth: u8,
    /// The model's label, on the same scale.
    pub predicted: u8,
    /// Probability of the model's positive (last) label.
    pub positive_probability: f32,
    /// Words (whitespace-separated) of the cleaned review.
    pub words: usize,
    /// Whether the review was cut to the model's window (head+tail truncation).
    pub truncated: bool,
}

/// The outcome of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// Metrics over every review.
    #[serde(flatten)]
    pub overall: MetricsReport,
    /// Reviews cut to the model's window (head+tail truncation).
    pub truncated: usize,
    /// Accuracy per review length.
    pub by_length: Vec<LengthBucketReport>,
    /// Expected calibration error of the top label's probability, 15 equal-width bins
    /// ([`crate::metrics::expected_calibration_error`]).
    pub ece: f64,
    /// One prediction per review, in the order of the examples.
    #[serde(skip)]
    pub predictions: Vec<Prediction>,
}

/// Classifies every example, `batch` reviews at a time, and scores the predictions against
/// the examples' labels; `on_batch` is called with the number of reviews each batch finished
/// (for a progress bar).
///
/// Errors: [`Error::Encode`] naming the first review that cannot be tokenized,
/// [`Error::Classify`] when the model fails to run.
pub fn evaluate(
    classifier: &Classifier,
    examples: &[Example],
    batch: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Evaluation, Error> {
    let texts: Vec<String> = examples.iter().map(|e| data::clean_text(&e.text)).collect();
    let encoded = texts
        .iter()
        .zip(examples)
        .map(|(text, example)| {
            classifier.encode(text).map_err(|source| Error::Encode {
                source_name: example.source.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| encoded[i].ids.len());

    let labels = &classifier.manifest().labels;
    let positive = labels.len() - 1;
    let mut metrics = BinaryMetrics::default();
    let mut by_length = MetricsByLength::default();
    let mut predictions = Vec::with_capacity(examples.len());
    let mut session = classifier
        .engine()
        .session()
        .map_err(|e| Error::Classify(e.into()))?;
    let mut scratch = TokenBatch::default();
    for chunk in order.chunks(batch.max(1)) {
        let items: Vec<_> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let results = classifier
            .classify_encoded(&mut session, &items, &mut scratch)
            .map_err(Error::Classify)?;
        for (&i, result) in chunk.iter().zip(&results) {
            let predicted = u8::from(result.label == labels[positive]);
            let words = texts[i].split_whitespace().count();
            metrics.record(examples[i].label, predicted);
            by_length.record(words, examples[i].label, predicted);
            predictions.push(Prediction {
                index: i,
                truth: examples[i].label,
                predicted,
                positive_probability: result.scores[positive].1,
                words,
                truncated: result.truncated,
            });
        }
        on_batch(chunk.len());
    }
    predictions.sort_by_key(|p| p.index);
    let ece = expected_calibration_error(
        predictions.iter().map(|p| {
            let positive = f64::from(p.positive_probability);
            (positive.max(1.0 - positive), p.predicted == p.truth)
        }),
        CALIBRATION_BINS,
    );
    Ok(Evaluation {
        ece,
        overall: metrics.report(),
        truncated: predictions.iter().filter(|p| p.truncated).count(),
        by_length: by_length.report(),
        predictions,
    })
}
