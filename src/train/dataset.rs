//! The run's data: the training reviews (balanced `--limit` sample), the stratified validation
//! split held out from them, optionally a test sample, all cleaned and tokenized. With
//! `--spans-per-review N`, training and validation also hold N random spans of each of their
//! reviews, and with `--openings-per-review M` M random openings of each (never pieces of the
//! other split's reviews).
//!
//! Reading, sampling and splitting are [`crate::data`]'s; tokenizing is
//! [`crate::tokenizer`]'s. The test split is never used for training or model selection.

use std::path::Path;

use crate::data::{self, Example, Split};
use crate::rng::SplitMix64;
use crate::tokenizer::TextTokenizer;

use super::batches::EncodedSet;
use super::{Error, TrainConfig};

/// Fewest training examples a run accepts (one per class, and one batch to learn from).
pub(crate) const MIN_TRAIN_EXAMPLES: usize = 2;

/// The tokenized sets of one run.
pub(crate) struct RunData {
    /// What the optimizer sees.
    pub train: EncodedSet,
    /// Held out from train, evaluated after each epoch; may be empty with fraction 0.
    pub validation: EncodedSet,
    /// A balanced sample of the test split (`--eval-test`).
    pub test: Option<EncodedSet>,
    /// Texts cut to the window, over all sets.
    pub truncated: usize,
}

/// Loads, samples, splits and tokenizes the data of `config`.
///
/// Errors: [`Error::Data`] for unreadable or malformed data (missing path, empty split, labels
/// other than 0/1, one class only); [`Error::InvalidFlag`] for `--eval-test` on a source with
/// no separate test split; [`Error::TooFewExamples`].
pub(crate) fn prepare(config: &TrainConfig, tokenizer: &TextTokenizer) -> Result<RunData, Error> {
    if config.eval_test.is_some() && !has_test_split(&config.data) {
        return Err(Error::InvalidFlag {
            flag: "eval-test",
            value: format!("{:?}", config.eval_test),
            requirement: format!(
                "{} holds one split only; --eval-test needs an aclImdb directory or archive",
                config.data.display()
            ),
        });
    }
    let mut examples = data::load(&config.data, Split::Train)?;
    if let Some(limit) = config.limit {
        examples = data::take_balanced(examples, limit, config.seed);
    }
    let (mut train, mut validation) =
        data::train_validation_split(examples, config.validation_fraction, config.seed);
    if train.len() < MIN_TRAIN_EXAMPLES {
        return Err(Error::TooFewExamples {
            found: train.len(),
            needed: MIN_TRAIN_EXAMPLES,
        });
    }
    add_pieces(&mut train, config, TRAIN_SPANS, TRAIN_OPENINGS);
    add_pieces(
        &mut validation,
        config,
        VALIDATION_SPANS,
        VALIDATION_OPENINGS,
    );
    let mut truncated = 0;
    let train = encode(&train, tokenizer, &mut truncated)?;
    let validation = encode(&validation, tokenizer, &mut truncated)?;
    let test = match config.eval_test {
        Some(n) => {
            let test = data::take_balanced(data::load(&config.data, Split::Test)?, n, config.seed);
            Some(encode(&test, tokenizer, &mut truncated)?)
        }
        None => None,
    };
    Ok(RunData {
        train,
        validation,
        test,
        truncated,
    })
}

/// Seed salts of the span and opening streams, so that they differ from the sampling and split
/// streams and from each other.
const TRAIN_SPANS: u64 = 0x5350_414E_5452_4149;
const VALIDATION_SPANS: u64 = 0x5350_414E_5641_4C49;
const TRAIN_OPENINGS: u64 = 0x4F50_454E_5452_4149;
const VALIDATION_OPENINGS: u64 = 0x4F50_454E_5641_4C49;

/// Appends `config.spans_per_review` random spans ([`data::random_span`]), then
/// `config.openings_per_review` random openings ([`data::random_opening`]) of each review,
/// labelled as their review, after the whole reviews. Each kind has its own seeded stream, so a
/// run (and its resume) sees the same pieces, and adding openings leaves the spans as they were.
fn add_pieces(examples: &mut Vec<Example>, config: &TrainConfig, spans: u64, openings: u64) {
    let spans = cut_pieces(
        examples,
        config.spans_per_review,
        config.seed ^ spans,
        data::random_span,
        "span",
    );
    let openings = cut_pieces(
        examples,
        config.openings_per_review,
        config.seed ^ openings,
        data::random_opening,
        "opening",
    );
    examples.extend(spans);
    examples.extend(openings);
}

/// `per_review` pieces of each review drawn by `draw` from a stream seeded with `seed`, named
/// `<review source>#<kind><n>`.
fn cut_pieces(
    reviews: &[Example],
    per_review: usize,
    seed: u64,
    draw: fn(&str, &mut SplitMix64) -> Option<String>,
    kind: &str,
) -> Vec<Example> {
    let mut rng = SplitMix64::new(seed);
    let mut pieces = Vec::new();
    if per_review == 0 {
        return pieces;
    }
    for review in reviews {
        let text = data::clean_text(&review.text);
        for n in 0..per_review {
            if let Some(piece) = draw(&text, &mut rng) {
                pieces.push(Example {
                    text: piece,
                    label: review.label,
                    source: format!("{}#{kind}{n}", review.source),
                });
            }
        }
    }
    pieces
}

/// Cleans (`<br />` → space) and tokenizes with head+tail truncation.
pub fn encode(
    examples: &[Example],
    tokenizer: &TextTokenizer,
    truncated: &mut usize,
) -> Result<EncodedSet, Error> {
    let mut set = EncodedSet::default();
    for example in examples {
        let encoded = tokenizer.encode(&data::clean_text(&example.text))?;
        *truncated += usize::from(encoded.is_truncated);
        set.items.push(encoded);
        set.labels.push(example.label);
    }
    Ok(set)
}

/// Whether `path` has a test split apart from its train split (aclImdb layouts do; a single
/// CSV or JSON Lines file does not).
fn has_test_split(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    path.is_dir() || name.ends_with(".tar.gz") || name.ends_with(".tgz")
}
