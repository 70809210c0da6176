//! The self-test a model passes before it serves a reload: known texts, expected labels.
//!
//! Four unambiguous movie reviews, two of each polarity, are classified in one batch. Every
//! answer must be a probability distribution over the model's labels (finite, summing to 1);
//! and where the labels name a polarity (a label containing `pos` and one containing `neg`,
//! case-insensitive) each review must get its polarity's label. That catches a corrupt or
//! mis-exported graph, a tokenizer from another model and swapped label order. A model whose
//! head is random (`random_head` in `model.json`, test builds) or whose labels name no polarity
//! gets only the first check, and the outcome says so.

use crate::classifier::{Classification, Classifier};

/// Reviews whose polarity no sentiment model should miss.
const PROBES: [(&str, Polarity); 4] = [
    (
        "One of the best films I have ever seen: a moving story, superb acting and a wonderful score. I loved every minute of it.",
        Polarity::Positive,
    ),
    (
        "The worst movie I have ever seen. Boring, badly acted and a complete waste of time.",
        Polarity::Negative,
    ),
    (
        "A wonderful, heartfelt movie with brilliant performances. Highly recommended.",
        Polarity::Positive,
    ),
    (
        "Awful. The plot makes no sense, the acting is wooden and I wanted my two hours back.",
        Polarity::Negative,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Polarity {
    Positive,
    Negative,
}

/// What the self-test checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Passed {
    /// Every probe got its polarity's label.
    Labels,
    /// Only well-formed probabilities: the head is random.
    RandomHead,
    /// Only well-formed probabilities: no label names a polarity.
    UnnamedLabels,
}

impl Passed {
    /// For log lines and the reload outcome.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Passed::Labels => "4 known reviews got their labels",
            Passed::RandomHead => {
                "probabilities well-formed; labels not checked (model.json: random_head)"
            }
            Passed::UnnamedLabels => {
                "probabilities well-formed; labels not checked (no label names a polarity)"
            }
        }
    }
}

/// Runs the self-test; the error says which probe failed and how.
pub(crate) fn run(classifier: &Classifier) -> Result<Passed, String> {
    let texts = PROBES.map(|(text, _)| text);
    let verdicts = classifier.classify(&texts).map_err(|e| {
        format!(
            "the known reviews could not be classified: {}",
            crate::error_text::describe(&e)
        )
    })?;
    let labels = &classifier.manifest().labels;
    for (verdict, text) in verdicts.iter().zip(texts) {
        check_distribution(verdict, labels)
            .map_err(|problem| format!("{problem} for {:?}", abbreviate(text)))?;
    }
    if classifier.manifest().random_head {
        return Ok(Passed::RandomHead);
    }
    let Some(positive) = label_of(labels, "pos") else {
        return Ok(Passed::UnnamedLabels);
    };
    let Some(negative) = label_of(labels, "neg") else {
        return Ok(Passed::UnnamedLabels);
    };
    for ((text, polarity), verdict) in PROBES.iter().zip(&verdicts) {
        let expected = match polarity {
            Polarity::Positive => positive,
            Polarity::Negative => negative,
        };
        if verdict.label != expected {
            return Err(format!(
                "{:?} was classified {:?} (score {:.3}), expected {expected:?}",
                abbreviate(text),
                verdict.label,
                verdict.score
            ));
        }
    }
    Ok(Passed::Labels)
}

fn check_distribution(verdict: &Classification, labels: &[String]) -> Result<(), String> {
    if verdict.scores.len() != labels.len() {
        return Err(format!(
            "{} scores for {} labels",
            verdict.scores.len(),
            labels.len()
        ));
    }
    if let Some((label, p)) = verdict
        .scores
        .iter()
        .find(|(_, p)| !p.is_finite() || !(0.0..=1.0).contains(p))
    {
        return Err(format!("probability {p} of {label:?}"));
    }
    let total: f32 = verdict.scores.iter().map(|(_, p)| p).sum();
    if (total - 1.0).abs() > 1e-3 {
        return Err(format!("probabilities summing to {total}"));
    }
    Ok(())
}

/// The one label containing `marker` (case-insensitive), if exactly one does.
fn label_of<'a>(labels: &'a [String], marker: &str) -> Option<&'a str> {
    let mut matching = labels.iter().filter(|l| l.to_lowercase().contains(marker));
    let first = matching.next()?;
    matching.next().is_none().then_some(first.as_str())
}

fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_model_gives_every_known_review_its_label() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imdb-minilm");
        let classifier = Classifier::load(&dir, None).expect("the shipped model loads");
        assert_eq!(run(&classifier), Ok(Passed::Labels));
    }

    #[test]
    fn polarity_labels_are_found_by_name_once() {
        let labels = ["NEGATIVE".to_string(), "Positive".to_string()];
        assert_eq!(label_of(&labels, "pos"), Some("Positive"));
        assert_eq!(label_of(&labels, "neg"), Some("NEGATIVE"));
        let unnamed = ["LABEL_0".to_string(), "LABEL_1".to_string()];
        assert_eq!(label_of(&unnamed, "pos"), None);
        let ambiguous = ["positive".to_string(), "very positive".to_string()];
        assert_eq!(label_of(&ambiguous, "pos"), None);
    }

    #[test]
    fn malformed_probabilities_are_named() {
        let labels = ["a".to_string(), "b".to_string()];
        let verdict = |scores: Vec<(String, f32)>| Classification {
            label: "a".into(),
            score: 0.5,
            scores,
            tokens: 3,
            truncated: false,
        };
        let nan = verdict(vec![("a".into(), f32::NAN), ("b".into(), 0.5)]);
        assert!(check_distribution(&nan, &labels)
            .unwrap_err()
            .contains("NaN"));
        let short = verdict(vec![("a".into(), 0.7), ("b".into(), 0.2)]);
        assert!(check_distribution(&short, &labels)
            .unwrap_err()
            .contains("summing"));
        let fine = verdict(vec![("a".into(), 0.25), ("b".into(), 0.75)]);
        assert!(check_distribution(&fine, &labels).is_ok());
    }
}
