//! Text → token ids for BERT-family classifiers, with head+tail truncation.
//!
//! Owns the WordPiece tokenizer (loaded from `tokenizer.json`, or built from a bare `vocab.txt`
//! the way 2020-era checkpoints such as TinyBERT ship it) and the truncation policy shared by
//! training, the build step and the daemon. Batching and padding live in [`TokenBatch`];
//! running the model is the `engine`'s job.
//!
//! ```no_run
//! use sentimq::tokenizer::{TextTokenizer, Truncation};
//! let tokenizer = TextTokenizer::from_dir("models/imdb-minilm".as_ref(), Truncation::head_tail(256, 128))?;
//! let encoded = tokenizer.encode("A wonderful film.")?;
//! assert_eq!(encoded.ids.first(), Some(&tokenizer.cls_id()));
//! # Ok::<(), sentimq::tokenizer::Error>(())
//! ```

mod batch;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

pub use batch::TokenBatch;

/// Errors of loading a tokenizer or encoding text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `tokenizer.json` nor `vocab.txt` is in the directory.
    #[error("{dir}: no tokenizer.json or vocab.txt found")]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
    },
    /// The tokenizer file exists but cannot be read or parsed.
    #[error("{path}: unreadable tokenizer")]
    Unreadable {
        /// The file that failed.
        path: PathBuf,
        /// What the tokenizers crate, the JSON parser or the file system said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `vocab.txt` holds no token.
    #[error("{path}: the vocabulary is empty")]
    EmptyVocabulary {
        /// The vocabulary file.
        path: PathBuf,
    },
    /// A special token that BERT classification needs is not in the vocabulary.
    #[error("{path}: the vocabulary has no {token} token")]
    MissingSpecialToken {
        /// The tokenizer file.
        path: PathBuf,
        /// The token, e.g. `[CLS]`.
        token: &'static str,
    },
    /// The truncation policy cannot hold `[CLS]`, `[SEP]` and one token, or exceeds
    /// [`MAX_WINDOW_TOKENS`].
    #[error("invalid truncation: max_tokens {max_tokens} must be 3 to 8192 and head_tokens {head_tokens} at most max_tokens - 2")]
    BadTruncation {
        /// Requested maximum sequence length.
        max_tokens: usize,
        /// Requested number of head tokens.
        head_tokens: usize,
    },
    /// The tokenizer failed on a text (should not happen for valid UTF-8).
    #[error("tokenizing failed")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Writing `tokenizer.json` failed.
    #[error("{path}: cannot write tokenizer")]
    Save {
        /// The destination.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How a text longer than the model's window is cut.
///
/// Keeps the first `head_tokens` and the last `max_tokens - 2 - head_tokens` word pieces:
/// reviews tend to state their verdict at the start and at the end, so head+tail beats
/// keeping the head alone (Sun et al., 2019, "How to Fine-Tune BERT for Text Classification?").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// Maximum sequence length including `[CLS]` and `[SEP]`.
    pub max_tokens: usize,
    /// Word pieces kept from the start of the text; the rest of the budget goes to the end.
    pub head_tokens: usize,
}

impl Truncation {
    /// Head+tail truncation to `max_tokens` keeping `head_tokens` from the start.
    pub fn head_tail(max_tokens: usize, head_tokens: usize) -> Self {
        Truncation {
            max_tokens,
            head_tokens,
        }
    }

    /// Plain head truncation (what Hugging Face tokenizers do by default).
    pub fn head_only(max_tokens: usize) -> Self {
        Truncation {
            max_tokens,
            head_tokens: max_tokens.saturating_sub(2),
        }
    }

    /// Checks that the window holds `[CLS]`, `[SEP]` and at least one word piece.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_tokens < 3
            || self.max_tokens > MAX_WINDOW_TOKENS
            || self.head_tokens > self.max_tokens - 2
        {
            return Err(Error::BadTruncation {
                max_tokens: self.max_tokens,
                head_tokens: self.head_tokens,
            });
        }
        Ok(())
    }

    fn body_tokens(&self) -> usize {
        self.max_tokens - 2
    }

    fn tail_tokens(&self) -> usize {
        self.body_tokens() - self.head_tokens
    }
}

/// One encoded text, ready to be batched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, starting with `[CLS]` and ending with `[SEP]`.
    pub ids: Vec<u32>,
    /// Whether word pieces were dropped to fit the window.
    pub is_truncated: bool,
}

/// A BERT WordPiece tokenizer with a fixed truncation policy.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    truncation: Truncation,
    cls_id: u32,
    sep_id: u32,
    pad_id: u32,
}

/// Bytes of text per window token above which long texts are tokenized only near their ends.
/// English WordPiece averages ~4–5 bytes per piece; 16 leaves a wide margin, and
/// [`TextTokenizer::encode`] widens the windows if one turns out too short.
const WINDOW_BYTES_PER_TOKEN: usize = 16;

/// The longest window a [`Truncation`] may ask for (BERT checkpoints read at most 512).
pub const MAX_WINDOW_TOKENS: usize = 8192;

impl TextTokenizer {
    /// Loads `tokenizer.json` from `dir`, or builds one from `vocab.txt` (+ `tokenizer_config.json`).
    pub fn from_dir(dir: &Path, truncation: Truncation) -> Result<Self, Error> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json, truncation);
        }
        let vocab = dir.join("vocab.txt");
        if vocab.is_file() {
            let lowercase = read_do_lower_case(&dir.join("tokenizer_config.json"))?;
            return Self::from_vocab(&vocab, lowercase, truncation);
        }
        Err(Error::NotFound {
            dir: dir.to_path_buf(),
        })
    }

    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_tokenizer_json(path: &Path, truncation: Truncation) -> Result<Self, Error> {
        let inner = Tokenizer::from_file(path).map_err(unreadable(path))?;
        Self::wrap(inner, path, truncation)
    }

    /// Builds the standard BERT tokenizer (BertNormalizer, BertPreTokenizer, WordPiece,
    /// `[CLS] … [SEP]`) from a `vocab.txt`, as `BertTokenizerFast` does.
    pub fn from_vocab(path: &Path, lowercase: bool, truncation: Truncation) -> Result<Self, Error> {
        let vocab = WordPiece::read_file(&path.to_string_lossy()).map_err(unreadable(path))?;
        if vocab.is_empty() {
            return Err(Error::EmptyVocabulary {
                path: path.to_path_buf(),
            });
        }
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .map_err(unreadable(path))?;
        let mut inner = Tokenizer::new(model);
        let cls = inner.token_to_id("[CLS]");
        let sep = inner.token_to_id("[SEP]");
        let (Some(cls), Some(sep)) = (cls, sep) else {
            let token = if cls.is_none() { "[CLS]" } else { "[SEP]" };
            return Err(Error::MissingSpecialToken {
                path: path.to_path_buf(),
                token,
            });
        };
        // strip_accents None follows `lowercase`, exactly as BertTokenizerFast.
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .map_err(unreadable(path))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        inner.with_decoder(Some(WordPieceDecoder::default()));
        Self::wrap(inner, path, truncation)
    }

    fn wrap(mut inner: Tokenizer, path: &Path, truncation: Truncation) -> Result<Self, Error> {
        truncation.validate()?;
        let special = |token: &'static str| {
            inner.token_to_id(token).ok_or(Error::MissingSpecialToken {
                path: path.to_path_buf(),
                token,
            })
        };
        let cls_id = special("[CLS]")?;
        let sep_id = special("[SEP]")?;
        let pad_id = special("[PAD]").unwrap_or(0);
        // Truncation and padding are ours (head+tail, pad to the batch's longest).
        inner.with_padding(None);
        inner.with_truncation(None).map_err(unreadable(path))?;
        Ok(TextTokenizer {
            inner,
            truncation,
            cls_id,
            sep_id,
            pad_id,
        })
    }

    /// The truncation policy in force.
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }

    /// The same tokenizer with another truncation policy.
    pub fn with_truncation(mut self, truncation: Truncation) -> Result<Self, Error> {
        truncation.validate()?;
        self.truncation = truncation;
        Ok(self)
    }

    /// Id of `[CLS]`.
    pub fn cls_id(&self) -> u32 {
        self.cls_id
    }

    /// Id of `[SEP]`.
    pub fn sep_id(&self) -> u32 {
        self.sep_id
    }

    /// Id of `[PAD]` (0 when the vocabulary has none).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of entries in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// One past the largest id the tokenizer can give (special and added tokens included):
    /// the rows an embedding table needs, which a vocabulary with gaps in its ids exceeds.
    pub fn id_bound(&self) -> usize {
        let largest = self.inner.get_vocab(true).into_values().max();
        largest.map_or(0, |id| id as usize + 1)
    }

    /// Encodes one text: `[CLS]` + head + tail + `[SEP]`, at most `max_tokens` ids.
    ///
    /// Very long texts (a 1 MB payload, say) are tokenized only near their two ends, cut
    /// where BERT's pre-tokenizer always splits ([`is_split_char`]), so the word pieces are
    /// exactly those of the whole text. A window that holds too few pieces (words of hundreds
    /// of bytes) is widened fourfold until it fills or the two windows cover the text: the
    /// whole text is tokenized only when it has few pieces for its size, which keeps the
    /// memory of one text bounded (a megabyte of "a," is half a million pieces).
    pub fn encode(&self, text: &str) -> Result<Encoded, Error> {
        let mut window_bytes = self
            .truncation
            .max_tokens
            .saturating_mul(WINDOW_BYTES_PER_TOKEN);
        while text.len() / 2 > window_bytes {
            if let Some(encoded) = self.encode_ends(text, window_bytes)? {
                return Ok(encoded);
            }
            window_bytes = window_bytes.saturating_mul(4);
        }
        self.encode_whole(text)
    }

    /// [`encode`](Self::encode) tokenizing all of `text`, whatever its length.
    pub(crate) fn encode_whole(&self, text: &str) -> Result<Encoded, Error> {
        let pieces = self.word_pieces(text)?;
        Ok(self.assemble(&pieces, &[], pieces.len()))
    }

    /// Word-piece ids of `text`, no special tokens, no truncation.
    pub fn word_pieces(&self, text: &str) -> Result<Vec<u32>, Error> {
        let encoding = self.inner.encode_fast(text, false).map_err(Error::Encode)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokenizes a head window and a tail window of a long text; `None` when the windows
    /// meet or one holds too few pieces to fill its share (the caller then widens them).
    fn encode_ends(&self, text: &str, window_bytes: usize) -> Result<Option<Encoded>, Error> {
        let tail_limit = text.len().saturating_sub(window_bytes);
        let head_end = split_before(text, window_bytes).or_else(|| split_after(text, window_bytes));
        let tail_start = split_after(text, tail_limit).or_else(|| split_before(text, tail_limit));
        let (Some(head_end), Some(tail_start)) = (head_end, tail_start) else {
            return Ok(None);
        };
        if head_end >= tail_start {
            return Ok(None);
        }
        let head = self.word_pieces(&text[..head_end])?;
        let tail = self.word_pieces(&text[tail_start..])?;
        if head.len() < self.truncation.head_tokens || tail.len() < self.truncation.tail_tokens() {
            return Ok(None);
        }
        // The middle holds at least one more word, so the text is truncated for sure.
        Ok(Some(self.assemble(&head, &tail, usize::MAX)))
    }

    /// Builds `[CLS] head… tail… [SEP]` from the head pieces and (optionally separate) tail pieces.
    fn assemble(&self, head: &[u32], tail: &[u32], total_pieces: usize) -> Encoded {
        let body = self.truncation.body_tokens();
        let mut ids = Vec::with_capacity(body.min(head.len() + tail.len()) + 2);
        ids.push(self.cls_id);
        let is_truncated = total_pieces > body || head.len() + tail.len() > body;
        if !is_truncated {
            ids.extend_from_slice(head);
            ids.extend_from_slice(tail);
        } else if tail.is_empty() {
            let tail_len = self.truncation.tail_tokens();
            ids.extend_from_slice(&head[..self.truncation.head_tokens]);
            ids.extend_from_slice(&head[head.len() - tail_len..]);
        } else {
            let tail_len = self.truncation.tail_tokens();
            ids.extend_from_slice(&head[..self.truncation.head_tokens]);
            ids.extend_from_slice(&tail[tail.len() - tail_len..]);
        }
        ids.push(self.sep_id);
        Encoded { ids, is_truncated }
    }

    /// Writes the tokenizer as `tokenizer.json`, without truncation or padding settings.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        self.inner.save(path, true).map_err(|source| Error::Save {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Whether BERT's pre-tokenizer splits before and after `c` whatever surrounds it:
/// whitespace, ASCII punctuation and CJK ideographs (each its own word, as BERT's normalizer
/// pads them with spaces). Unicode punctuation splits too, but a subset is enough to cut at.
fn is_split_char(c: char) -> bool {
    c.is_whitespace() || c.is_ascii_punctuation() || is_cjk_ideograph(c)
}

/// The CJK ranges BERT's normalizer (`handle_chinese_chars`) isolates.
fn is_cjk_ideograph(c: char) -> bool {
    matches!(u32::from(c),
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// Whether the text splits into words at byte `i`: a character boundary strictly inside
/// `text` next to a [split character](is_split_char), so `text[..i]` and `text[i..]`
/// tokenize into exactly the pieces of `text`. Never just inside brackets: BERT's special
/// tokens (`[SEP]`, `[MASK]`, …) are matched in the raw text before it is split.
fn is_cut(text: &str, i: usize) -> bool {
    if i == 0 || i >= text.len() || !text.is_char_boundary(i) {
        return false;
    }
    let before = text[..i].chars().next_back();
    let after = text[i..].chars().next();
    if before == Some('[') || after == Some(']') {
        return false;
    }
    before.is_some_and(is_split_char) || after.is_some_and(is_split_char)
}

/// The last cut at or before `limit`.
fn split_before(text: &str, limit: usize) -> Option<usize> {
    (1..=limit.min(text.len())).rev().find(|&i| is_cut(text, i))
}

/// The first cut at or after `start`.
fn split_after(text: &str, start: usize) -> Option<usize> {
    (start.max(1)..text.len()).find(|&i| is_cut(text, i))
}

/// `map_err` adapter: `path` could not be read or parsed ([`Error::Unreadable`]).
fn unreadable<E>(path: &Path) -> impl FnOnce(E) -> Error + '_
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |error| Error::Unreadable {
        path: path.to_path_buf(),
        source: error.into(),
    }
}

/// `do_lower_case` from `tokenizer_config.json`; true (uncased BERT) when the file is absent.
fn read_do_lower_case(path: &Path) -> Result<bool, Error> {
    #[derive(Deserialize)]
    struct TokenizerConfig {
        #[serde(default = "default_true")]
        do_lower_case: bool,
    }
    fn default_true() -> bool {
        true
    }
    if !path.is_file() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(path).map_err(unreadable(path))?;
    let config: TokenizerConfig = serde_json::from_str(&text).map_err(unreadable(path))?;
    Ok(config.do_lower_case)
}

#[cfg(test)]
mod tests;
