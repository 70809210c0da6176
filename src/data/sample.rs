//! Deterministic shuffling, balanced sampling and stratified splitting.
//!
//! All randomness comes from [`SplitMix64`], the crate's one seeded generator,
//! so the same seed and input always give the same result on every platform.

use std::collections::BTreeMap;

use super::Example;
use crate::rng::SplitMix64;

/// Shuffles `items` in place with a Fisher–Yates shuffle driven by SplitMix64
/// seeded with `seed`: the same seed and length always give the same permutation.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    SplitMix64::new(seed).shuffle(items);
}

/// Takes at most `limit` examples, half negative (label 0) and half positive
/// (any other label), in shuffled order; deterministic given `seed`.
///
/// The examples are shuffled first, so which ones are taken depends on the
/// seed. With an odd `limit` the extra example is positive. When one class has
/// fewer than its half, all of it is taken and the other class fills the rest,
/// so the result has `min(limit, examples.len())` examples.
pub fn take_balanced(mut examples: Vec<Example>, limit: usize, seed: u64) -> Vec<Example> {
    let mut rng = SplitMix64::new(seed);
    rng.shuffle(&mut examples);
    let (negatives, positives): (Vec<_>, Vec<_>) =
        examples.into_iter().partition(|example| example.label == 0);
    let negative_count = negatives.len().min(limit / 2);
    let positive_count = positives.len().min(limit - negative_count);
    let negative_count = negatives.len().min(limit - positive_count);
    let mut taken: Vec<Example> = negatives
        .into_iter()
        .take(negative_count)
        .chain(positives.into_iter().take(positive_count))
        .collect();
    rng.shuffle(&mut taken);
    taken
}

/// Splits `examples` into `(train, validation)`, stratified by label and
/// deterministic given `seed`.
///
/// Each label contributes `round(count × validation_fraction)` of its examples,
/// chosen at random, to the validation set; the rest go to training. The
/// fraction is clamped to `0.0..=1.0` (NaN counts as 0). Both sets come back
/// shuffled.
pub fn train_validation_split(
    examples: Vec<Example>,
    validation_fraction: f64,
    seed: u64,
) -> (Vec<Example>, Vec<Example>) {
    let fraction = if validation_fraction.is_nan() {
        0.0
    } else {
        validation_fraction.clamp(0.0, 1.0)
    };
    let mut by_label: BTreeMap<u8, Vec<Example>> = BTreeMap::new();
    for example in examples {
        by_label.entry(example.label).or_default().push(example);
    }
    let mut rng = SplitMix64::new(seed);
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for mut class in by_label.into_values() {
        rng.shuffle(&mut class);
        let count = ((class.len() as f64 * fraction).round() as usize).min(class.len());
        validation.extend(class.drain(..count));
        train.append(&mut class);
    }
    rng.shuffle(&mut train);
    rng.shuffle(&mut validation);
    (train, validation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(negatives: usize, positives: usize) -> Vec<Example> {
        (0..negatives + positives)
            .map(|i| Example {
                text: format!("review {i}"),
                label: u8::from(i >= negatives),
                source: format!("test:{i}"),
            })
            .collect()
    }

    fn sources(examples: &[Example]) -> Vec<&str> {
        examples.iter().map(|e| e.source.as_str()).collect()
    }

    fn count(examples: &[Example], label: u8) -> usize {
        examples.iter().filter(|e| e.label == label).count()
    }

    #[test]
    fn shuffle_is_a_deterministic_permutation() {
        let original: Vec<u32> = (0..100).collect();
        let mut a = original.clone();
        let mut b = original.clone();
        shuffle(&mut a, 42);
        shuffle(&mut b, 42);
        assert_eq!(a, b);
        assert_ne!(a, original);
        let mut c = original.clone();
        shuffle(&mut c, 43);
        assert_ne!(a, c);
        // Pinned, so that a change of generator or algorithm cannot go unnoticed.
        let mut pinned: Vec<u32> = (0..10).collect();
        shuffle(&mut pinned, 42);
        assert_eq!(pinned, [8, 3, 6, 5, 4, 0, 9, 2, 1, 7]);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, original);
        let mut empty: [u8; 0] = [];
        shuffle(&mut empty, 1);
        let mut one = [7];
        shuffle(&mut one, 1);
        assert_eq!(one, [7]);
    }

    #[test]
    fn take_balanced_halves_and_is_deterministic() {
        let taken = take_balanced(examples(300, 100), 60, 7);
        assert_eq!(taken.len(), 60);
        assert_eq!(count(&taken, 0), 30);
        assert_eq!(count(&taken, 1), 30);
        let again = take_balanced(examples(300, 100), 60, 7);
        assert_eq!(sources(&taken), sources(&again));
        let other = take_balanced(examples(300, 100), 60, 8);
        assert_ne!(sources(&taken), sources(&other));
        // Shuffled, not grouped by class.
        let first_half_positives = count(&taken[..30], 1);
        assert!((5..=25).contains(&first_half_positives));
    }

    #[test]
    fn take_balanced_fills_from_the_larger_class() {
        let taken = take_balanced(examples(100, 10), 50, 1);
        assert_eq!((count(&taken, 0), count(&taken, 1)), (40, 10));
        let taken = take_balanced(examples(3, 100), 50, 1);
        assert_eq!((count(&taken, 0), count(&taken, 1)), (3, 47));
        let taken = take_balanced(examples(10, 10), 7, 1);
        assert_eq!((count(&taken, 0), count(&taken, 1)), (3, 4));
        let taken = take_balanced(examples(4, 5), 100, 1);
        assert_eq!(taken.len(), 9);
        assert!(take_balanced(examples(4, 5), 0, 1).is_empty());
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        let (train, validation) = train_validation_split(examples(800, 200), 0.1, 3);
        assert_eq!((count(&validation, 0), count(&validation, 1)), (80, 20));
        assert_eq!((count(&train, 0), count(&train, 1)), (720, 180));
        let (train_again, validation_again) = train_validation_split(examples(800, 200), 0.1, 3);
        assert_eq!(sources(&train), sources(&train_again));
        assert_eq!(sources(&validation), sources(&validation_again));
        let (_, other) = train_validation_split(examples(800, 200), 0.1, 4);
        assert_ne!(sources(&validation), sources(&other));
        let mut all: Vec<&str> = sources(&train);
        all.extend(sources(&validation));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 1000);
    }

    #[test]
    fn split_fraction_edges() {
        let (train, validation) = train_validation_split(examples(5, 5), 0.0, 1);
        assert_eq!((train.len(), validation.len()), (10, 0));
        let (train, validation) = train_validation_split(examples(5, 5), 1.0, 1);
        assert_eq!((train.len(), validation.len()), (0, 10));
        let (train, validation) = train_validation_split(examples(5, 5), f64::NAN, 1);
        assert_eq!((train.len(), validation.len()), (10, 0));
        let (train, validation) = train_validation_split(examples(5, 5), 7.0, 1);
        assert_eq!((train.len(), validation.len()), (0, 10));
    }
}
