//! A built model directory, ready to classify text: manifest + tokenizer + engine.
//!
//! This is what the tool's `classify`/`eval`/`bench` and the daemon's workers hold. It adds
//! nothing numerical to the engine; it ties token ids to labels and keeps the truncation policy
//! the model was built with (or a shorter window, [`Classifier::with_max_tokens`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{self, Engine, EngineOptions, Session};
use crate::manifest::{self, ModelManifest};
use crate::metrics::argmax;
use crate::tokenizer::{self, Encoded, TextTokenizer, TokenBatch};

/// Errors of loading a model directory or classifying text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `model.json` is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
    /// `tokenizer.json` is missing or invalid.
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::Error),
    /// The graph failed to load or run.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// `tokenizer.json` gives ids past the rows of the graph's embedding table.
    #[error("{path}: tokenizer.json gives token ids up to {}, past the graph's {graph}-row embedding table", ids - 1)]
    Vocabulary {
        /// The graph file.
        path: PathBuf,
        /// One past the tokenizer's largest id.
        ids: usize,
        /// Rows of the graph's word-embedding table.
        graph: usize,
    },
    /// The graph's label count disagrees with `model.json`.
    #[error("{path}: the graph outputs {found} classes but model.json lists {expected} labels")]
    LabelCount {
        /// The graph file.
        path: PathBuf,
        /// Labels in the manifest.
        expected: usize,
        /// Columns in the graph output.
        found: usize,
    },
    /// The text has nothing to classify: empty, blank, or only characters the tokenizer drops
    /// (control and zero-width characters).
    #[error("the text is empty")]
    EmptyText,
    /// A window was asked for that the model was not built for.
    #[error("a window of {requested} tokens: the model reads at most {window} (model.json's truncation.max_tokens), and at least 3")]
    Window {
        /// The window asked for.
        requested: usize,
        /// The model's window.
        window: usize,
    },
}

/// How [`Classifier::load_warmed`] loads.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// The engine's options.
    pub engine: EngineOptions,
    /// A window shorter than the model's ([`Classifier::with_max_tokens`]); `None`: the model's.
    pub max_tokens: Option<usize>,
    /// Build the plans of the length buckets up to this many tokens (0: none).
    pub warm_up_tokens: usize,
}

/// What [`Classifier::load_warmed`] built ahead of the first text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Plans cached for the buckets warmed.
    pub plans: usize,
    /// Whether the parsed model was released (every bucket of the window has its plan).
    pub parsed_model_released: bool,
}

/// The model's truncation `built` for a window of `max_tokens`: head+tail as built, the head at
/// most half of the window. Errors: [`Error::Window`] for less than 3 or more than the model's
/// window.
fn window(built: tokenizer::Truncation, max_tokens: usize) -> Result<tokenizer::Truncation, Error> {
    if max_tokens < 3 || max_tokens > built.max_tokens {
        return Err(Error::Window {
            requested: max_tokens,
            window: built.max_tokens,
        });
    }
    let head = built.head_tokens.min((max_tokens - 2) / 2);
    Ok(tokenizer::Truncation::head_tail(max_tokens, head))
}

/// The verdict on one text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    /// The most probable label.
    pub label: String,
    /// Its probability.
    pub score: f32,
    /// Every label's probability, in the model's label order.
    pub scores: Vec<(String, f32)>,
    /// Tokens fed to the model, `[CLS]` and `[SEP]` included.
    pub tokens: usize,
    /// Whether the text was cut to fit the model's window.
    pub truncated: bool,
}

/// The label reported instead of the model's when its probability is below a threshold the
/// user chose (`sentimqd`'s `model.uncertain_below`, `sentimq classify --uncertain-below`).
pub const UNCERTAIN_LABEL: &str = "uncertain";

impl Classification {
    /// The label to report: [`UNCERTAIN_LABEL`] when the most probable label's probability is
    /// below `uncertain_below` (0: never), else that label.
    pub fn label_unless_below(&self, uncertain_below: f32) -> &str {
        if self.score < uncertain_below {
            UNCERTAIN_LABEL
        } else {
            &self.label
        }
    }
}

/// A loaded model directory.
pub struct Classifier {
    manifest: ModelManifest,
    tokenizer: TextTokenizer,
    engine: Engine,
}

impl Classifier {
    /// Loads `dir/model.json`, `dir/tokenizer.json` and the graph `graph_file` (default: the
    /// manifest's `default_graph`).
    pub fn load(dir: &Path, graph_file: Option<&str>) -> Result<Self, Error> {
        Self::load_with(dir, graph_file, EngineOptions::default())
    }

    /// [`Classifier::load`] with engine options (plan cache size, sequence bucket).
    pub fn load_with(
        dir: &Path,
        graph_file: Option<&str>,
        options: EngineOptions,
    ) -> Result<Self, Error> {
        let load = LoadOptions {
            engine: options,
            ..LoadOptions::default()
        };
        Ok(Self::load_warmed(dir, graph_file, load)?.0)
    }

    /// [`Classifier::load`] with a window of its own ([`Classifier::with_max_tokens`]) and the
    /// plans of the length buckets up to `warm_up_tokens` built ([`Classifier::warm_up`]); if
    /// that is every bucket of the window, the parsed model is released
    /// ([`Classifier::release_parsed_model`]). The plans are built before the tokenizer is
    /// read: building them is when loading holds the most memory, and a 30,000-word
    /// vocabulary's tables are 4.5 MB more of it.
    pub fn load_warmed(
        dir: &Path,
        graph_file: Option<&str>,
        options: LoadOptions,
    ) -> Result<(Self, Warmed), Error> {
        let manifest = ModelManifest::read(dir)?;
        let truncation = match options.max_tokens {
            Some(max_tokens) => window(manifest.truncation, max_tokens)?,
            None => manifest.truncation,
        };
        let graph = dir.join(graph_file.unwrap_or(&manifest.default_graph));
        let engine = Engine::load_with(&graph, options.engine)?;
        let mut warmed = Warmed::default();
        if options.warm_up_tokens > 0 {
            let tokens = options.warm_up_tokens.min(truncation.max_tokens);
            warmed.plans = engine.warm_up(tokens)?;
            warmed.parsed_model_released = engine.release_parsed_model(truncation.max_tokens);
        }
        let tokenizer =
            TextTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"), manifest.truncation)?
                .with_truncation(truncation)?;
        let classifier = Classifier {
            manifest,
            tokenizer,
            engine,
        };
        classifier.check_against_graph()?;
        Ok((classifier, warmed))
    }

    fn check_against_graph(&self) -> Result<(), Error> {
        let ids = self.tokenizer.id_bound();
        if let Some(rows) = self.engine.vocabulary().filter(|&rows| ids > rows) {
            return Err(Error::Vocabulary {
                path: self.engine.path().to_path_buf(),
                ids,
                graph: rows,
            });
        }
        let probe = self.tokenizer.encode("ok")?;
        let found = self
            .engine
            .classify(&TokenBatch::from_encoded(&[probe], self.tokenizer.pad_id()))?
            .labels();
        let expected = self.manifest.labels.len();
        if found != expected {
            return Err(Error::LabelCount {
                path: self.engine.path().to_path_buf(),
                expected,
                found,
            });
        }
        Ok(())
    }

    /// The same classifier reading at most `max_tokens` word pieces of a text, `[CLS]` and
    /// `[SEP]` included, instead of the model's window: head+tail as before, the head at most
    /// half of the new window. A shorter window bounds the cost of long texts on slow devices
    /// (the graph is the same; short texts are unaffected).
    ///
    /// Errors: [`Error::Window`] for less than 3 or more than the model's window.
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Result<Self, Error> {
        let truncation = window(self.manifest.truncation, max_tokens)?;
        self.tokenizer = self.tokenizer.with_truncation(truncation)?;
        Ok(self)
    }

    /// Most word pieces read per text, `[CLS]` and `[SEP]` included: the model's window, or
    /// the one set by [`Classifier::with_max_tokens`].
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.truncation().max_tokens
    }

    /// Builds the engine's plans for every length bucket up to `max_tokens`, capped at
    /// [`Classifier::max_tokens`] ([`Engine::warm_up`]); returns how many are warm.
    pub fn warm_up(&self, max_tokens: usize) -> Result<usize, Error> {
        self.warm_up_while(max_tokens, || true)
    }

    /// Drops the engine's parsed model once every length bucket up to
    /// [`Classifier::max_tokens`] has its plan ([`Engine::release_parsed_model`]); returns
    /// whether it did.
    pub fn release_parsed_model(&self) -> bool {
        self.engine.release_parsed_model(self.max_tokens())
    }

    /// [`Classifier::warm_up`] that asks `keep_going` before each plan it has to build
    /// ([`Engine::warm_up_while`]).
    pub fn warm_up_while(
        &self,
        max_tokens: usize,
        keep_going: impl FnMut() -> bool,
    ) -> Result<usize, Error> {
        Ok(self
            .engine
            .warm_up_while(max_tokens.min(self.max_tokens()), keep_going)?)
    }

    /// The model's manifest.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Tokenizes one text; empty (or whitespace-only) text is an error.
    pub fn encode(&self, text: &str) -> Result<Encoded, Error> {
        if text.trim().is_empty() {
            return Err(Error::EmptyText);
        }
        let encoded = self.tokenizer.encode(text)?;
        // `[CLS] [SEP]` alone: nothing but characters the tokenizer drops.
        if encoded.ids.len() <= 2 {
            return Err(Error::EmptyText);
        }
        Ok(encoded)
    }

    /// Classifies already-encoded texts as one batch, reusing the caller's session and buffer.
    pub fn classify_encoded(
        &self,
        session: &mut Session,
        items: &[Encoded],
        scratch: &mut TokenBatch,
    ) -> Result<Vec<Classification>, Error> {
        scratch.fill(items.iter(), self.tokenizer.pad_id());
        let probabilities = session.classify(scratch)?;
        let expected = self.manifest.labels.len();
        if probabilities.labels() != expected || probabilities.rows() != items.len() {
            return Err(Error::LabelCount {
                path: self.engine.path().to_path_buf(),
                expected,
                found: probabilities.labels(),
            });
        }
        Ok(items
            .iter()
            .zip(probabilities.iter())
            .map(|(item, row)| self.verdict(item, row))
            .collect())
    }

    /// Classifies texts as one batch.
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<Classification>, Error> {
        let encoded = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut session = self.engine.session()?;
        self.classify_encoded(&mut session, &encoded, &mut TokenBatch::default())
    }

    fn verdict(&self, item: &Encoded, row: &[f32]) -> Classification {
        let best = argmax(row);
        Classification {
            label: self.manifest.labels[best].clone(),
            score: row[best],
            scores: self
                .manifest
                .labels
                .iter()
                .cloned()
                .zip(row.iter().copied())
                .collect(),
            tokens: item.ids.len(),
            truncated: item.is_truncated,
        }
    }
}

#[cfg(all(test, feature = "workstation"))]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imdb-minilm")
    }

    fn window_of_64(warm_up_tokens: usize) -> LoadOptions {
        LoadOptions {
            max_tokens: Some(64),
            warm_up_tokens,
            ..LoadOptions::default()
        }
    }

    #[test]
    fn warming_every_bucket_of_the_window_releases_the_parsed_model() {
        let (_, warmed) = Classifier::load_warmed(&shipped(), None, window_of_64(32)).unwrap();
        let expected = Warmed {
            plans: 2,
            parsed_model_released: false,
        };
        assert_eq!(warmed, expected, "buckets 16 and 32 of 16, 32, 48, 64");
        let (classifier, warmed) =
            Classifier::load_warmed(&shipped(), None, window_of_64(512)).unwrap();
        let expected = Warmed {
            plans: 4,
            parsed_model_released: true,
        };
        assert_eq!(warmed, expected);
        assert_eq!(classifier.max_tokens(), 64);
        // Every text the window lets through has its plan.
        let long = "a long and winding review ".repeat(40);
        let verdicts = classifier.classify(&[&long, "fine"]).unwrap();
        assert_eq!((verdicts[0].tokens, verdicts[0].truncated), (64, true));
    }

    #[test]
    fn ids_past_the_graphs_vocabulary_are_errors_not_crashes() {
        let classifier = Classifier::load(&shipped(), None).unwrap();
        let rows = classifier.engine.vocabulary();
        assert_eq!(rows, Some(30_522), "the word-embedding table's rows");
        let past = Encoded {
            ids: vec![101, 30_522, 102],
            is_truncated: false,
        };
        let batch = TokenBatch::from_encoded(&[past], 0);
        match classifier.engine.classify(&batch) {
            Err(engine::Error::TokenOutOfRange { id, rows, .. }) => {
                assert_eq!((id, rows), (30_522, 30_522))
            }
            other => panic!("{other:?}"),
        }

        // A tokenizer whose ids run past the graph's table is refused at load: one more word,
        // or as many words with a gap in their ids.
        let dir = tempfile::tempdir().unwrap();
        for file in ["model.json", "model.int8.onnx"] {
            std::fs::copy(shipped().join(file), dir.path().join(file)).unwrap();
        }
        let json = std::fs::read_to_string(shipped().join("tokenizer.json")).unwrap();
        let shipped_tokenizer: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut one_more = shipped_tokenizer.clone();
        one_more["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": 30_522, "content": "[EXTRA]", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            }));
        let mut gap = shipped_tokenizer;
        gap["model"]["vocab"]["great"] = 999_999.into();
        for (tokenizer, bound) in [(one_more, 30_523), (gap, 1_000_000)] {
            std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
            match Classifier::load(dir.path(), None) {
                Err(Error::Vocabulary { ids, graph, .. }) => {
                    assert_eq!((ids, graph), (bound, 30_522))
                }
                other => panic!("{:?}", other.err()),
            }
        }
    }

    #[test]
    fn a_window_the_model_was_not_built_for_is_refused_before_loading() {
        for max_tokens in [2, 513] {
            let options = LoadOptions {
                max_tokens: Some(max_tokens),
                ..LoadOptions::default()
            };
            match Classifier::load_warmed(&shipped(), None, options) {
                Err(Error::Window { requested, window }) => {
                    assert_eq!((requested, window), (max_tokens, 512))
                }
                other => panic!("{max_tokens}: {:?}", other.map(|(_, warmed)| warmed)),
            }
        }
    }
}
