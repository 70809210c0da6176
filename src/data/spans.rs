//! Short texts cut from reviews, carrying their review's label: the kind of text MQTT carries.
//!
//! [`sentences`] splits a cleaned review into sentences; [`Spans`] turns reviews into the
//! evaluation sets `sentimq eval --spans` scores (every sentence of each review, or its first
//! characters); [`random_span`] draws the spans `sentimq train --spans-per-review` adds to the
//! training data (a sentence, a few sentences, or a fragment of words), [`random_opening`] the
//! openings `--openings-per-review` adds (a review cut off after its first words, as a
//! truncated message arrives).

use std::fmt;
use std::str::FromStr;

use crate::rng::SplitMix64;

use super::{clean_text, Example};

/// Words a sentence needs to count as one (shorter pieces are headings, ratings, "Why?").
pub const MIN_SENTENCE_WORDS: usize = 3;

/// Abbreviations whose period does not end a sentence (compared lower-case, without the period).
const ABBREVIATIONS: [&str; 17] = [
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "vol", "prof",
    "mt", "ft", "approx",
];

/// The sentences of `text` (cleaned, see [`clean_text`]), trimmed, in order. A sentence ends
/// at `.`, `!` or `?` (runs of them, and closing quotes or brackets after them) followed by a
/// space, unless the word before a single `.` is a known abbreviation or one letter (an
/// initial). Text after the last end mark is a sentence too.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if matches!(c, '.' | '!' | '?') {
            let mut j = i;
            while j + 1 < chars.len() && matches!(chars[j + 1].1, '.' | '!' | '?') {
                j += 1;
            }
            while j + 1 < chars.len()
                && matches!(chars[j + 1].1, '"' | '\'' | ')' | ']' | '”' | '’')
            {
                j += 1;
            }
            let next_is_space = chars.get(j + 1).is_none_or(|&(_, n)| n.is_whitespace());
            let single_period = c == '.' && j == i;
            if next_is_space && !(single_period && is_abbreviation(&text[start..at])) {
                let end = chars.get(j + 1).map_or(text.len(), |&(e, _)| e);
                push_trimmed(&mut out, &text[start..end]);
                start = end;
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    push_trimmed(&mut out, &text[start..]);
    out
}

fn push_trimmed<'a>(out: &mut Vec<&'a str>, piece: &'a str) {
    let piece = piece.trim();
    if !piece.is_empty() {
        out.push(piece);
    }
}

/// Whether the word `before` ends with (the text before a period) is an abbreviation or an
/// initial.
fn is_abbreviation(before: &str) -> bool {
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"')
        .next()
        .unwrap_or("");
    let lower = word.to_lowercase();
    (word.chars().count() == 1 && word.chars().all(char::is_alphabetic))
        || ABBREVIATIONS.contains(&lower.as_str())
}

/// How `sentimq eval --spans` cuts each review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spans {
    /// Every sentence of at least [`MIN_SENTENCE_WORDS`] words.
    Sentences,
    /// The first `n` characters, cut back to a word boundary.
    First(usize),
}

impl Spans {
    /// The short texts of `examples`, each with its review's label and a source naming the
    /// review and the piece (`train/pos/1_9.txt#3` = its fourth sentence).
    pub fn cut(self, examples: &[Example]) -> Vec<Example> {
        let mut out = Vec::new();
        for example in examples {
            let text = clean_text(&example.text);
            match self {
                Spans::Sentences => {
                    let kept = sentences(&text)
                        .into_iter()
                        .filter(|s| s.split_whitespace().count() >= MIN_SENTENCE_WORDS);
                    for (n, sentence) in kept.enumerate() {
                        out.push(Example {
                            text: sentence.to_string(),
                            label: example.label,
                            source: format!("{}#{n}", example.source),
                        });
                    }
                }
                Spans::First(chars) => out.push(Example {
                    text: first_chars(&text, chars).to_string(),
                    label: example.label,
                    source: format!("{}#first{chars}", example.source),
                }),
            }
        }
        out
    }
}

impl fmt::Display for Spans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spans::Sentences => f.write_str("sentences"),
            Spans::First(n) => write!(f, "first:{n}"),
        }
    }
}

impl FromStr for Spans {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "sentences" => Ok(Spans::Sentences),
            Some(("first", n)) => n
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .map(Spans::First)
                .ok_or_else(|| format!("{s:?}: first:<characters> takes a positive number")),
            _ => Err(format!(
                "{s:?}: expected `sentences` or `first:<characters>`"
            )),
        }
    }
}

/// The first `chars` characters of `text`, cut back to the last whole word (all of a first word
/// longer than that).
pub fn first_chars(text: &str, chars: usize) -> &str {
    let Some((cut, _)) = text.char_indices().nth(chars) else {
        return text;
    };
    match text[..cut].rfind(' ') {
        Some(space) if !text[cut..].starts_with(' ') => text[..space].trim_end(),
        _ => text[..cut].trim_end(),
    }
}

/// A random contiguous span of a cleaned review, as training adds them: with probability 1/2
/// one sentence, 3/10 two or three consecutive sentences, 1/5 a fragment of 4 to 30 consecutive
/// words from anywhere. Sentences shorter than [`MIN_SENTENCE_WORDS`] are skipped; `None` for a
/// review with no sentence that long.
pub fn random_span(text: &str, rng: &mut SplitMix64) -> Option<String> {
    let all = sentences(text);
    let long: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].split_whitespace().count() >= MIN_SENTENCE_WORDS)
        .collect();
    if long.is_empty() {
        return None;
    }
    let draw = rng.uniform();
    if draw < 0.5 {
        return Some(all[long[rng.below(long.len())]].to_string());
    }
    if draw < 0.8 {
        let first = long[rng.below(long.len())];
        let count = 2 + rng.below(2);
        let last = (first + count).min(all.len());
        return Some(all[first..last].join(" "));
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let length = (4 + rng.below(27)).min(words.len());
    let start = rng.below(words.len() - length + 1);
    Some(words[start..start + length].join(" "))
}

/// Fewest and most words [`random_opening`] keeps.
const OPENING_WORDS: std::ops::RangeInclusive<usize> = 5..=60;

/// The opening of a cleaned review: its first `k` words, `k` uniform in 5 to 60 (all of a
/// shorter review), as a message cut off after a few sentences or mid-sentence reads. `None`
/// for a review of fewer than 5 words.
pub fn random_opening(text: &str, rng: &mut SplitMix64) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() < *OPENING_WORDS.start() {
        return None;
    }
    let span = OPENING_WORDS.end() - OPENING_WORDS.start() + 1;
    let length = (OPENING_WORDS.start() + rng.below(span)).min(words.len());
    Some(words[..length].join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_end_at_marks_but_not_at_abbreviations_or_initials() {
        let text = "I loved it! Mr. Smith was great, as was J. R. Jones... Why? \
                    \"Best film of the year.\" The end";
        assert_eq!(
            sentences(text),
            [
                "I loved it!",
                "Mr. Smith was great, as was J. R. Jones...",
                "Why?",
                "\"Best film of the year.\"",
                "The end"
            ]
        );
        assert_eq!(
            sentences("3.5 out of 10. Avoid."),
            ["3.5 out of 10.", "Avoid."]
        );
        assert!(sentences("  ").is_empty());
    }

    #[test]
    fn spans_keep_labels_and_name_their_source() {
        let example = Example {
            text: "Great acting.<br /><br />Terrible plot, though. Ok.".into(),
            label: 1,
            source: "test/pos/1_9.txt".into(),
        };
        let cut = Spans::Sentences.cut(std::slice::from_ref(&example));
        let texts: Vec<&str> = cut.iter().map(|e| e.text.as_str()).collect();
        // "Great acting." and "Ok." have fewer than three words.
        assert_eq!(texts, ["Terrible plot, though."]);
        assert_eq!(
            (cut[0].label, cut[0].source.as_str()),
            (1, "test/pos/1_9.txt#0")
        );
        let first = Spans::First(20).cut(&[example]);
        assert_eq!(first[0].text, "Great acting.");
        assert_eq!("first:200".parse(), Ok(Spans::First(200)));
        assert_eq!("sentences".parse(), Ok(Spans::Sentences));
        assert!("first:0".parse::<Spans>().is_err() && "words".parse::<Spans>().is_err());
    }

    #[test]
    fn first_chars_cuts_at_a_word_boundary() {
        assert_eq!(first_chars("one two three", 7), "one two");
        assert_eq!(first_chars("one two three", 8), "one two");
        assert_eq!(first_chars("one two", 50), "one two");
        assert_eq!(first_chars("unbelievable", 4), "unbe");
    }

    #[test]
    fn random_spans_are_contiguous_pieces_of_the_review() {
        let text = "The first act is slow. Then it catches fire and never lets go. \
                    The cast is superb throughout. I would watch it again tomorrow.";
        let mut rng = SplitMix64::new(3);
        let mut kinds = [0usize; 3];
        for _ in 0..300 {
            let span = random_span(text, &mut rng).expect("a span");
            let words: Vec<&str> = span.split_whitespace().collect();
            assert!(
                text.contains(&span) || text.contains(words.join(" ").as_str()),
                "{span}"
            );
            let sentences_in = sentences(&span).len();
            kinds[(sentences_in.min(3) - 1).min(2)] += 1;
        }
        assert!(kinds.iter().all(|&k| k > 0), "{kinds:?}");
        assert_eq!(random_span("Ok. Fine.", &mut rng), None);
    }

    #[test]
    fn random_openings_start_the_review_and_keep_5_to_60_words() {
        let text = (1..=100)
            .map(|n| format!("w{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut rng = SplitMix64::new(7);
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let opening = random_opening(&text, &mut rng).expect("an opening");
            assert!(text.starts_with(&opening) && text[opening.len()..].starts_with(' '));
            lengths.insert(opening.split_whitespace().count());
        }
        assert_eq!(lengths, (5..=60).collect());
        assert_eq!(random_opening("two words", &mut rng), None);
        assert_eq!(
            random_opening("only five words in here", &mut rng).as_deref(),
            Some("only five words in here")
        );
    }
}
