//! Sentiment datasets: loading, cleaning and sampling labeled reviews.
//!
//! [`load`] reads binary sentiment data (label 0 = negative, 1 = positive) from
//! one of these sources, picked from the path:
//!
//! * a directory in the original aclImdb layout, `<path>/{train,test}/{pos,neg}/<id>_<rating>.txt`
//!   or the same below `<path>/aclImdb/`;
//! * the original archive `aclImdb_v1.tar.gz` (or any `.tar.gz` / `.tgz` in that layout), streamed
//!   in one pass without extracting it;
//! * a `.parquet` file, a `.csv` file with a header row, or a `.jsonl` file with one object per
//!   line, each with a text field (`text`, `review` or `sentence`) and a label field (`label` or
//!   `sentiment`).
//!
//! * `imdb` or `hf:<owner/name>[@revision]` (when no such path exists): a dataset on the Hugging
//!   Face Hub, `imdb` being `stanfordnlp/imdb`, whose split's parquet files are downloaded once
//!   into the Hugging Face cache (see [`IMDB`] and the `hub` module).
//!
//! Texts come back raw; [`clean_text`] removes the HTML line breaks of the IMDB reviews.
//! [`shuffle`], [`take_balanced`] and [`train_validation_split`] are deterministic given a seed.
//! [`Spans`] and [`random_span`] cut short texts (sentences, fragments) from reviews, each
//! with its review's label.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::str::FromStr;

mod error;
#[cfg(test)]
mod fixtures;
mod hub;
mod imdb;
mod parquet;
mod sample;
mod spans;
mod table;
mod text;

pub use error::Error;
pub use hub::IMDB;
pub use sample::{shuffle, take_balanced, train_validation_split};
pub use spans::{first_chars, random_opening, random_span, sentences, Spans, MIN_SENTENCE_WORDS};
pub use text::clean_text;

/// One of the two splits of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

impl Split {
    /// The split's name as used in paths: `"train"` or `"test"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = Error;

    /// Parses `"train"` or `"test"`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.eq_ignore_ascii_case("train") {
            Ok(Split::Train)
        } else if s.eq_ignore_ascii_case("test") {
            Ok(Split::Test)
        } else {
            Err(Error::UnknownSplit {
                found: s.to_owned(),
            })
        }
    }
}

/// One labeled review.
#[derive(Clone, Debug)]
pub struct Example {
    /// The review as found in the source, not cleaned (see [`clean_text`]).
    pub text: String,
    /// 0 = negative, 1 = positive.
    pub label: u8,
    /// Where the example comes from: `"train/pos/123_9.txt"` for aclImdb data,
    /// `"<file name>:<line>"` (e.g. `"reviews.csv:17"`) for CSV and JSON Lines, and
    /// `"<file name>:<row>"` (from 1) for parquet.
    pub source: String,
}

/// The file formats [`load`] reads, besides directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    TarGz,
    Csv,
    JsonLines,
    Parquet,
}

impl Format {
    /// Detects the format from the file name's extension, ignoring ASCII case.
    fn detect(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        [
            (".tar.gz", Format::TarGz),
            (".tgz", Format::TarGz),
            (".csv", Format::Csv),
            (".jsonl", Format::JsonLines),
            (".parquet", Format::Parquet),
        ]
        .into_iter()
        .find(|(extension, _)| name.ends_with(extension))
        .map(|(_, format)| format)
    }
}

/// Loads the `split` of the binary sentiment dataset at `path`.
///
/// The format is detected from the path (see the [module documentation](self)). For
/// aclImdb data the label comes from the folder (`pos` = 1, `neg` = 0), and the
/// examples are ordered negatives first, then positives, each by numeric review
/// id. A single parquet, CSV or JSON Lines file holds one split only: `split` is then
/// ignored (except in error messages) and the rows keep the file's order. A Hub dataset
/// (`imdb`, `hf:<owner/name>`) gives the split's parquet files in name order.
///
/// # Errors
///
/// Fails when the path is missing or has an unknown extension, on unreadable or
/// malformed data (see [`Error`]), when a Hub dataset can neither be downloaded nor found in
/// the cache ([`Error::HubUnavailable`], [`Error::HubOffline`], [`Error::HubNoSplit`]), when
/// the split holds no examples ([`Error::EmptySplit`]) and when it lacks one of the two classes
/// ([`Error::MissingClass`]).
pub fn load(path: &Path, split: Split) -> Result<Vec<Example>, Error> {
    if !path.exists() {
        if let Some(dataset) = path.to_str().and_then(hub::HubDataset::parse) {
            let examples = dataset.load(split)?;
            check_both_classes(path, split, &examples)?;
            return Ok(examples);
        }
    }
    let metadata = fs::metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_owned(),
        },
        _ => Error::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    let examples = if metadata.is_dir() {
        imdb::load_dir(path, split)?
    } else {
        match Format::detect(path) {
            Some(Format::TarGz) => imdb::load_archive(path, split)?,
            Some(Format::Csv) => table::load_csv(path)?,
            Some(Format::JsonLines) => table::load_jsonl(path)?,
            Some(Format::Parquet) => parquet::load_parquet(path)?,
            None => {
                return Err(Error::UnknownFormat {
                    path: path.to_owned(),
                })
            }
        }
    };
    check_both_classes(path, split, &examples)?;
    Ok(examples)
}

/// Fails unless `examples` holds at least one negative and one positive example.
fn check_both_classes(path: &Path, split: Split, examples: &[Example]) -> Result<(), Error> {
    if examples.is_empty() {
        return Err(Error::EmptySplit {
            path: path.to_owned(),
            split,
        });
    }
    for label in [0, 1] {
        if !examples.iter().any(|example| example.label == label) {
            return Err(Error::MissingClass {
                path: path.to_owned(),
                split,
                label,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fixtures::write_file;
    use super::*;

    #[test]
    fn split_names() {
        assert_eq!("train".parse::<Split>().ok(), Some(Split::Train));
        assert_eq!("Test".parse::<Split>().ok(), Some(Split::Test));
        assert_eq!(Split::Train.to_string(), "train");
        let error = "validation".parse::<Split>().expect_err("unknown split");
        assert!(matches!(&error, Error::UnknownSplit { found } if found == "validation"));
    }

    #[test]
    fn format_from_extension() {
        let detect = |name: &str| Format::detect(Path::new(name));
        assert_eq!(detect("aclImdb_v1.tar.gz"), Some(Format::TarGz));
        assert_eq!(detect("data/IMDB.TGZ"), Some(Format::TarGz));
        assert_eq!(detect("reviews.csv"), Some(Format::Csv));
        assert_eq!(detect("reviews.jsonl"), Some(Format::JsonLines));
        assert_eq!(detect("train-00000.parquet"), Some(Format::Parquet));
        assert_eq!(detect("reviews.tar"), None);
        assert_eq!(detect("reviews.json"), None);
    }

    #[test]
    fn missing_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nowhere.csv");
        match load(&path, Split::Train) {
            Err(Error::NotFound { path: missing }) => assert_eq!(missing, path),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn unknown_extension() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("reviews.txt");
        write_file(&path, b"text,label\nfine,1\n");
        let error = load(&path, Split::Train).expect_err("unknown format");
        assert!(matches!(error, Error::UnknownFormat { .. }), "{error:?}");
    }
}
