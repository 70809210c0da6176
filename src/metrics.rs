//! Binary classification metrics: accuracy, precision, recall, F1 and the confusion matrix;
//! plus the crate's one [`argmax`] (a predicted class) and one [`percentile`] (latencies).
//!
//! Positive class = label 1. Shared by `sentimq eval`, training's validation, the build's
//! parity check, the classifier, the benches and the daemon's statistics.

use serde::Serialize;

/// Counts and derived scores of binary predictions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BinaryMetrics {
    /// Predicted positive, truly positive.
    pub true_positive: usize,
    /// Predicted positive, truly negative.
    pub false_positive: usize,
    /// Predicted negative, truly negative.
    pub true_negative: usize,
    /// Predicted negative, truly positive.
    pub false_negative: usize,
}

impl BinaryMetrics {
    /// Adds one prediction.
    pub fn record(&mut self, truth: u8, predicted: u8) {
        match (truth, predicted) {
            (1, 1) => self.true_positive += 1,
            (0, 1) => self.false_positive += 1,
            (0, _) => self.true_negative += 1,
            _ => self.false_negative += 1,
        }
    }

    /// Number of predictions recorded.
    pub fn total(&self) -> usize {
        self.true_positive + self.false_positive + self.true_negative + self.false_negative
    }

    /// Fraction correct.
    pub fn accuracy(&self) -> f64 {
        ratio(self.true_positive + self.true_negative, self.total())
    }

    /// Of predicted positives, the fraction truly positive.
    pub fn precision(&self) -> f64 {
        ratio(self.true_positive, self.true_positive + self.false_positive)
    }

    /// Of true positives, the fraction found.
    pub fn recall(&self) -> f64 {
        ratio(self.true_positive, self.true_positive + self.false_negative)
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// A JSON-friendly summary with the derived scores.
    pub fn report(&self) -> MetricsReport {
        MetricsReport {
            examples: self.total(),
            accuracy: self.accuracy(),
            precision: self.precision(),
            recall: self.recall(),
            f1: self.f1(),
            confusion: [
                [self.true_negative, self.false_positive],
                [self.false_negative, self.true_positive],
            ],
        }
    }
}

/// Derived scores plus the confusion matrix `[[tn, fp], [fn, tp]]` (rows = truth).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricsReport {
    /// Number of examples.
    pub examples: usize,
    /// Accuracy.
    pub accuracy: f64,
    /// Precision of the positive class.
    pub precision: f64,
    /// Recall of the positive class.
    pub recall: f64,
    /// F1 of the positive class.
    pub f1: f64,
    /// Rows = truth (negative, positive), columns = prediction.
    pub confusion: [[usize; 2]; 2],
}

impl std::fmt::Display for MetricsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "examples   {}", self.examples)?;
        writeln!(f, "accuracy   {:.4}", self.accuracy)?;
        writeln!(f, "precision  {:.4}", self.precision)?;
        writeln!(f, "recall     {:.4}", self.recall)?;
        writeln!(f, "f1         {:.4}", self.f1)?;
        writeln!(f, "confusion  (rows = truth, columns = predicted)")?;
        writeln!(f, "               negative  positive")?;
        writeln!(
            f,
            "  negative  {:>10} {:>9}",
            self.confusion[0][0], self.confusion[0][1]
        )?;
        write!(
            f,
            "  positive  {:>10} {:>9}",
            self.confusion[1][0], self.confusion[1][1]
        )
    }
}

/// Equal-width confidence bins of [`expected_calibration_error`], as the issue and the
/// calibration literature (Guo et al., 2017) use.
pub const CALIBRATION_BINS: usize = 15;

/// Expected calibration error of `(confidence, correct)` pairs, confidence being the
/// probability of the predicted (top) label: the pairs are binned by confidence into `bins`
/// equal-width bins `(i/bins, (i+1)/bins]` (confidence 0 in the first), and the result is
/// `Σ |accuracy(bin) − mean confidence(bin)| · size(bin) / total`. 0 for no pairs. A
/// well-calibrated model's 0.9 is right 90 % of the time: ECE near 0.
pub fn expected_calibration_error(
    predictions: impl IntoIterator<Item = (f64, bool)>,
    bins: usize,
) -> f64 {
    let bins = bins.max(1);
    // Per bin: count, correct, summed confidence.
    let mut sums = vec![(0usize, 0usize, 0f64); bins];
    for (confidence, correct) in predictions {
        let confidence = confidence.clamp(0.0, 1.0);
        let index = ((confidence * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        let bin = &mut sums[index];
        bin.0 += 1;
        bin.1 += usize::from(correct);
        bin.2 += confidence;
    }
    let total: usize = sums.iter().map(|b| b.0).sum();
    if total == 0 {
        return 0.0;
    }
    sums.iter()
        .filter(|b| b.0 > 0)
        .map(|&(n, correct, confidence)| {
            let (n_f, accuracy) = (n as f64, correct as f64 / n as f64);
            (accuracy - confidence / n_f).abs() * n_f
        })
        .sum::<f64>()
        / total as f64
}

/// Review-length buckets in words (whitespace-separated), for accuracy by length.
pub const LENGTH_BUCKETS: [(usize, Option<usize>); 4] = [
    (0, Some(100)),
    (100, Some(200)),
    (200, Some(400)),
    (400, None),
];

/// [`BinaryMetrics`] per review length ([`LENGTH_BUCKETS`]).
#[derive(Clone, Debug, Default)]
pub struct MetricsByLength {
    buckets: [BinaryMetrics; LENGTH_BUCKETS.len()],
}

impl MetricsByLength {
    /// Adds one prediction for a review of `words` words.
    pub fn record(&mut self, words: usize, truth: u8, predicted: u8) {
        let index = LENGTH_BUCKETS
            .iter()
            .position(|&(_, end)| end.is_none_or(|end| words < end))
            .unwrap_or(LENGTH_BUCKETS.len() - 1);
        self.buckets[index].record(truth, predicted);
    }

    /// One row per bucket.
    pub fn report(&self) -> Vec<LengthBucketReport> {
        LENGTH_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&(start, end), metrics)| LengthBucketReport {
                words: match end {
                    Some(end) => format!("{start}-{}", end - 1),
                    None => format!("{start}+"),
                },
                examples: metrics.total(),
                accuracy: metrics.accuracy(),
            })
            .collect()
    }
}

/// Accuracy of one review-length bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LengthBucketReport {
    /// Words, e.g. `100-199`.
    pub words: String,
    /// Reviews in the bucket.
    pub examples: usize,
    /// Their accuracy.
    pub accuracy: f64,
}

/// Index of the largest value: the predicted class of a row of scores; 0 for an empty slice.
/// Values are compared with `>`: the first of equal values wins, and a NaN neither replaces
/// the best so far nor is replaced.
pub fn argmax<T: PartialOrd>(values: &[T]) -> usize {
    (1..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

/// The `q`-quantile (`0.0..=1.0`) of ascending `sorted` values by the nearest rank
/// (`round((len − 1)·q)`), or `None` when there are none.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get((last as f64 * q).round() as usize).copied()
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_from_counts() {
        let mut m = BinaryMetrics::default();
        for (t, p) in [(1, 1), (1, 1), (1, 0), (0, 0), (0, 1)] {
            m.record(t, p);
        }
        assert_eq!(m.total(), 5);
        assert!((m.accuracy() - 0.6).abs() < 1e-12);
        assert!((m.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.report().confusion, [[1, 1], [1, 2]]);
    }

    #[test]
    fn argmax_takes_the_first_largest() {
        assert_eq!(argmax(&[0.2f32, 0.7, 0.1]), 1);
        assert_eq!(argmax(&[0.5f32, 0.5]), 0);
        assert_eq!(argmax(&[f32::NAN, 0.1, 0.3]), 0);
        assert_eq!(argmax(&[0.1f32, f32::NAN, 0.3]), 2);
        assert_eq!(argmax::<f32>(&[]), 0);
    }

    #[test]
    fn percentile_by_nearest_rank() {
        let sorted: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile(&sorted, 0.5), Some(11));
        assert_eq!(percentile(&sorted, 0.95), Some(19));
        assert_eq!(percentile(&sorted, 1.0), Some(20));
        assert_eq!(percentile(&[4.0f64], 0.95), Some(4.0));
        assert_eq!(percentile::<f64>(&[], 0.5), None);
    }

    #[test]
    fn calibration_error_weights_each_bin_by_its_size() {
        // Bin (0.8667, 0.9333]: 0.9 twice, one right: |0.5 - 0.9| · 2.
        // Bin (0.6, 0.6667]: 0.65 twice, both right: |1 - 0.65| · 2.
        let pairs = [(0.9, true), (0.9, false), (0.65, true), (0.65, true)];
        let ece = expected_calibration_error(pairs, CALIBRATION_BINS);
        assert!(
            (ece - (0.4 * 2.0 + 0.35 * 2.0) / 4.0).abs() < 1e-12,
            "{ece}"
        );
        assert_eq!(
            expected_calibration_error([(1.0, true), (0.0, false)], 15),
            0.0
        );
        assert_eq!(expected_calibration_error(std::iter::empty(), 15), 0.0);
    }

    #[test]
    fn buckets_by_length() {
        let mut m = MetricsByLength::default();
        m.record(0, 1, 1);
        m.record(99, 1, 0);
        m.record(100, 0, 0);
        m.record(5000, 0, 0);
        let report = m.report();
        assert_eq!(report[0].words, "0-99");
        assert_eq!((report[0].examples, report[0].accuracy), (2, 0.5));
        assert_eq!((report[1].examples, report[1].accuracy), (1, 1.0));
        assert_eq!(report[2].examples, 0);
        assert_eq!((report[3].words.as_str(), report[3].examples), ("400+", 1));
    }
}
