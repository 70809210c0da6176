//! The hand-read pieces of reviews in `models/eval` (the model card's "Short texts as a person
//! reads them"): every line is a sentence or an opening (first 200 characters) that `sentimq
//! eval --spans` cuts from the IMDB review it names, in the test split or in the validation part
//! training held out (`--split validation` with the shipped model's fraction and seed), the
//! review's own label is recorded faithfully, and `sentimq eval --data` reads every file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use sentimq::data::{self, Example, Spans, Split};

use crate::util::shared;

fn eval_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/eval")
}

/// One line of a hand-read file: its text, the label `sentimq eval` scores against, the label
/// of the review it was cut from, and where it was cut (`test/pos/123_9.txt#4`).
struct Reading {
    text: String,
    label: u8,
    review_label: u8,
    source: String,
}

fn label(value: &serde_json::Value, what: &str) -> u8 {
    match value.as_str() {
        Some("negative") => 0,
        Some("positive") => 1,
        other => panic!("{what}: expected \"negative\" or \"positive\", found {other:?}"),
    }
}

/// The lines of `file`; `review_label_field` names the review's label (the file without a
/// sentiment of its own is scored against it, so there it is `label`).
fn readings(file: &str, review_label_field: &str) -> Vec<Reading> {
    let path = eval_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing or unreadable: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(index, line)| {
            let what = format!("{file}:{}", index + 1);
            let object: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}"));
            let field = |name: &str| {
                object[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: no string field {name}"))
                    .to_string()
            };
            Reading {
                text: field("text"),
                label: label(&object["label"], &what),
                review_label: label(&object[review_label_field], &what),
                source: field("source"),
            }
        })
        .collect()
}

/// Checks `<set>-with-sentiment.jsonl` and `<set>-without-sentiment.jsonl` against `reviews`:
/// the counts, each line's review and piece (`#3`: the review's fourth sentence of 3+ words;
/// `#first200`: its first 200 characters, as `sentimq eval --spans` cuts them), and how many
/// pieces with a sentiment of their own read against their review's label.
fn check_set(set: &str, reviews: &[Example], counts: (usize, usize), disagreeing: usize) {
    let with_file = format!("{set}-with-sentiment.jsonl");
    let without_file = format!("{set}-without-sentiment.jsonl");
    let with = readings(&with_file, "review_label");
    let without = readings(&without_file, "label");
    assert_eq!(
        (with.len(), without.len()),
        counts,
        "{set}: the card's counts"
    );

    let by_source: HashMap<&str, &Example> =
        reviews.iter().map(|e| (e.source.as_str(), e)).collect();
    let mut seen = HashSet::new();
    for reading in with.iter().chain(&without) {
        let source = reading.source.as_str();
        assert!(seen.insert(source), "{source} is read twice");
        let (review, piece) = source
            .rsplit_once('#')
            .unwrap_or_else(|| panic!("{source}: no #piece"));
        let review = by_source
            .get(review)
            .unwrap_or_else(|| panic!("{source}: not a review of {set}'s split"));
        let spans = match piece.strip_prefix("first") {
            Some(chars) => Spans::First(chars.parse().expect("#first<characters>")),
            None => Spans::Sentences,
        };
        let cut = spans.cut(std::slice::from_ref(*review));
        assert_eq!(
            cut.iter()
                .find(|p| p.source == source)
                .map(|p| p.text.as_str()),
            Some(reading.text.as_str()),
            "{source} is that piece of the review"
        );
        assert_eq!(
            reading.review_label, review.label,
            "{source}: the review's label"
        );
    }
    assert_eq!(
        with.iter().filter(|r| r.label != r.review_label).count(),
        disagreeing,
        "{set}: the card's count of pieces read against their review's label"
    );

    // `sentimq eval --data` reads both files, with the labels above.
    for (file, lines) in [(&with_file, &with), (&without_file, &without)] {
        let loaded = data::load(&eval_dir().join(file), Split::Test).expect(file);
        let labels: Vec<u8> = loaded.iter().map(|e| e.label).collect();
        let expected: Vec<u8> = lines.iter().map(|r| r.label).collect();
        assert_eq!(labels, expected, "{file}: labels as eval reads them");
    }
}

#[test]
fn hand_read_pieces_are_cut_from_the_reviews_they_name_and_keep_those_reviews_labels() {
    let archive = shared("data/imdb/aclImdb_v1_labeled.tar.gz");
    let test = data::load(&archive, Split::Test).expect("imdb test split");
    check_set("test-sentences", &test, (295, 185), 37);
    check_set("test-openings", &test, (185, 55), 13);
    // The validation part of the shipped model's runs: train's 25,000 reviews, fraction 0.1,
    // seed 42 (`sentimq eval --split validation`'s defaults).
    let train = data::load(&archive, Split::Train).expect("imdb train split");
    let validation = data::train_validation_split(train, 0.1, 42).1;
    check_set("validation-sentences", &validation, (300, 180), 28);
}
