//! The one error type of the dataset loaders.

use std::io;
use std::path::PathBuf;

use super::Split;

/// Everything that can go wrong while loading a sentiment dataset.
///
/// Every variant names the file (or directory) it is about, and where it can,
/// the line, archive entry or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path given to [`load`](super::load) does not exist.
    #[error("{}: no such file or directory", .path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },

    /// Reading a file or directory failed.
    #[error("{}: cannot read", .path.display())]
    Io {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// The file name does not end in a known extension.
    #[error(
        "{}: unknown dataset format (expected an aclImdb directory, .tar.gz, .tgz, .parquet, .csv or .jsonl)",
        .path.display()
    )]
    UnknownFormat {
        /// The file whose format is unknown.
        path: PathBuf,
    },

    /// A parquet file could not be read: not parquet, corrupt, or compressed with a codec this
    /// build lacks (brotli).
    #[error("{}: cannot read parquet", .path.display())]
    Parquet {
        /// The parquet file.
        path: PathBuf,
        /// The error reported by the parquet reader.
        #[source]
        source: Box<parquet::errors::ParquetError>,
    },

    /// A directory that holds neither `train/` nor `test/` (nor `aclImdb/`).
    #[error(
        "{}: not an aclImdb directory (expected train/ and test/ or aclImdb/train/ and aclImdb/test/)",
        .path.display()
    )]
    NotImdbDirectory {
        /// The directory.
        path: PathBuf,
    },

    /// A review file in the aclImdb layout not named `<id>_<rating>.txt`.
    #[error("{}: {entry}: review file name is not <id>_<rating>.txt", .path.display())]
    BadFileName {
        /// The directory or archive.
        path: PathBuf,
        /// The offending entry, relative to the dataset root (e.g. `train/pos/x.txt`).
        entry: String,
    },

    /// The `.tar.gz` archive is corrupt or truncated.
    #[error("{}: corrupt or truncated archive", .path.display())]
    Archive {
        /// The archive.
        path: PathBuf,
        /// The error reported by the gzip or tar reader.
        #[source]
        source: io::Error,
    },

    /// A review is not valid UTF-8.
    #[error("{}: {entry}: review is not valid UTF-8", .path.display())]
    BadUtf8 {
        /// The directory, archive or file.
        path: PathBuf,
        /// The entry (`train/pos/123_9.txt`) or line (`line 17`) at fault.
        entry: String,
    },

    /// A CSV file could not be parsed.
    #[error("{}{}: malformed CSV", .path.display(), at_line(.line))]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// The line of the malformed record, when known.
        line: Option<u64>,
        /// The error reported by the CSV reader.
        #[source]
        source: csv::Error,
    },

    /// A line of a JSON Lines file is not a JSON object.
    #[error("{}:{line}: malformed JSON", .path.display())]
    Json {
        /// The JSON Lines file.
        path: PathBuf,
        /// The malformed line (1-based).
        line: u64,
        /// The error reported by the JSON parser.
        #[source]
        source: serde_json::Error,
    },

    /// The text or label column (CSV header, parquet schema) or field (JSON object) is missing.
    #[error(
        "{}{}: missing {field} field (expected one of: {})",
        .path.display(),
        at_line(.line),
        accepted_names(.field)
    )]
    MissingField {
        /// The CSV, JSON Lines or parquet file.
        path: PathBuf,
        /// The line (row) of the record lacking the field; `None` for a header or schema.
        line: Option<u64>,
        /// Which field is missing: `"text"` or `"label"`.
        field: &'static str,
    },

    /// The text field of a JSON object (parquet row) is not a string.
    #[error("{}:{line}: field `{field}` is not a string", .path.display())]
    NotText {
        /// The JSON Lines or parquet file.
        path: PathBuf,
        /// The line (row) of the record (1-based).
        line: u64,
        /// The name of the field as it appears in the file.
        field: String,
    },

    /// A label that is neither 0/1 nor neg/pos/negative/positive.
    #[error(
        "{}:{line}: bad label {found:?} (expected 0, 1, neg, pos, negative or positive)",
        .path.display()
    )]
    BadLabel {
        /// The CSV, JSON Lines or parquet file.
        path: PathBuf,
        /// The line (row) of the record (1-based).
        line: u64,
        /// The label as found in the file.
        found: String,
    },

    /// The dataset holds no examples for the requested split.
    #[error("{}: no {split} examples", .path.display())]
    EmptySplit {
        /// The dataset.
        path: PathBuf,
        /// The requested split.
        split: Split,
    },

    /// The dataset holds examples of one class only.
    #[error(
        "{}: no {} (label {label}) examples in the {split} split; a binary task needs both classes",
        .path.display(),
        class_name(*.label)
    )]
    MissingClass {
        /// The dataset.
        path: PathBuf,
        /// The requested split.
        split: Split,
        /// The label with no examples (0 = negative, 1 = positive).
        label: u8,
    },

    /// The Hub could not be reached (and the cache lacks the files), or lacks the dataset.
    #[error(
        "cannot download dataset \"{id}\" from the Hugging Face Hub (pass a local copy with \
         --data: an aclImdb directory, aclImdb_v1.tar.gz, .parquet, .csv or .jsonl)"
    )]
    HubUnavailable {
        /// The dataset's repository id.
        id: String,
        /// What hf-hub reported.
        #[source]
        source: Box<hf_hub::api::sync::ApiError>,
    },

    /// `HF_HUB_OFFLINE` is set and the cache lacks the split.
    #[error(
        "HF_HUB_OFFLINE is set and the Hugging Face cache has no {split} parquet files of \"{id}\": \
         download them once online, or pass a local copy with --data"
    )]
    HubOffline {
        /// The dataset's repository id.
        id: String,
        /// The split asked for.
        split: Split,
    },

    /// The dataset repository has no parquet files for the split.
    #[error(
        "dataset \"{id}\" on the Hugging Face Hub has no {split} split in parquet \
         (<split>-*.parquet, <split>.parquet or <split>/*.parquet){}",
        listed(.parquet)
    )]
    HubNoSplit {
        /// The dataset's repository id.
        id: String,
        /// The split asked for.
        split: Split,
        /// The parquet files the repository has.
        parquet: Vec<String>,
    },

    /// A split name other than `train` or `test`.
    #[error("unknown split {found:?} (expected \"train\" or \"test\")")]
    UnknownSplit {
        /// The name that was given.
        found: String,
    },
}

/// `"; it has: a, b"`, or `"; it has none"`.
fn listed(files: &[String]) -> String {
    if files.is_empty() {
        "; it has none".to_string()
    } else {
        format!("; it has: {}", files.join(", "))
    }
}

/// `":17"` for `Some(17)`, nothing for `None`.
fn at_line(line: &Option<u64>) -> String {
    line.map(|line| format!(":{line}")).unwrap_or_default()
}

/// The column names accepted for a field, as listed in error messages.
fn accepted_names(field: &str) -> String {
    let names = match field {
        "text" => super::table::TEXT_FIELDS,
        _ => super::table::LABEL_FIELDS,
    };
    names.join(", ")
}

/// `"negative"` for label 0, `"positive"` otherwise.
fn class_name(label: u8) -> &'static str {
    if label == 0 {
        "negative"
    } else {
        "positive"
    }
}
