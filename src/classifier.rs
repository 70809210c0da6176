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
        let manifest = ModelManifest::read(dir)?;
        let tokenizer =
            TextTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"), manifest.truncation)?;
        let graph = dir.join(graph_file.unwrap_or(&manifest.default_graph));
        let engine = Engine::load_with(&graph, options)?;
        let classifier = Classifier {
            manifest,
            tokenizer,
            engine,
        };
        classifier.check_labels()?;
        Ok(classifier)
    }

    fn check_labels(&self) -> Result<(), Error> {
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
        let built = self.manifest.truncation;
        if max_tokens < 3 || max_tokens > built.max_tokens {
            return Err(Error::Window {
                requested: max_tokens,
                window: built.max_tokens,
            });
        }
        let head = built.head_tokens.min((max_tokens - 2) / 2);
        self.tokenizer = self
            .tokenizer
            .with_truncation(tokenizer::Truncation::head_tail(max_tokens, head))?;
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
