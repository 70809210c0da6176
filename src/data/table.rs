//! Single-file datasets: CSV with a header row, and JSON Lines.
//!
//! Both carry a text field and a label field, found by name (ignoring ASCII case and
//! surrounding whitespace); when several names match, the earlier one in
//! [`TEXT_FIELDS`] / [`LABEL_FIELDS`] wins. Labels are `0`/`1` or
//! `neg`/`pos`/`negative`/`positive` in any case; JSON labels may be numbers or strings.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::{Map, Value};

use super::{Error, Example};

/// The accepted names of the text field, most preferred first.
pub(super) const TEXT_FIELDS: &[&str] = &["text", "review", "sentence"];

/// The accepted names of the label field, most preferred first.
pub(super) const LABEL_FIELDS: &[&str] = &["label", "sentiment"];

/// The byte order mark some tools write at the start of UTF-8 files.
const BOM: &str = "\u{feff}";

/// Loads every row of a CSV file with a header row.
pub(super) fn load_csv(path: &Path) -> Result<Vec<Example>, Error> {
    let file = open(path)?;
    let mut reader = csv::Reader::from_reader(file);
    let headers = reader
        .headers()
        .map_err(|source| csv_error(path, source))?
        .clone();
    let column = |names, field| find_field(headers.iter(), names, field, path, None);
    let text_column = column(TEXT_FIELDS, "text")?;
    let label_column = column(LABEL_FIELDS, "label")?;

    let file_name = file_name(path);
    let mut record = csv::StringRecord::new();
    let mut examples = Vec::new();
    while reader
        .read_record(&mut record)
        .map_err(|source| csv_error(path, source))?
    {
        let line = record.position().map_or(0, csv::Position::line);
        let field = |column, field| {
            record.get(column).ok_or_else(|| Error::MissingField {
                path: path.to_owned(),
                line: Some(line),
                field,
            })
        };
        let text = field(text_column, "text")?;
        let label = field(label_column, "label")?;
        let label = parse_label(label).ok_or_else(|| Error::BadLabel {
            path: path.to_owned(),
            line,
            found: label.to_owned(),
        })?;
        examples.push(Example {
            text: text.to_owned(),
            label,
            source: format!("{file_name}:{line}"),
        });
    }
    Ok(examples)
}

/// Loads every non-blank line of a JSON Lines file, each a JSON object.
pub(super) fn load_jsonl(path: &Path) -> Result<Vec<Example>, Error> {
    let mut reader = BufReader::new(open(path)?);
    let file_name = file_name(path);
    let mut buffer = Vec::new();
    let mut examples = Vec::new();
    for line in 1.. {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
        if read == 0 {
            break;
        }
        let text = std::str::from_utf8(&buffer).map_err(|_| Error::BadUtf8 {
            path: path.to_owned(),
            entry: format!("line {line}"),
        })?;
        let text = text.strip_prefix(BOM).unwrap_or(text).trim();
        if text.is_empty() {
            continue;
        }
        let object: Map<String, Value> =
            serde_json::from_str(text).map_err(|source| Error::Json {
                path: path.to_owned(),
                line,
                source,
            })?;
        examples.push(json_example(object, path, line, &file_name)?);
    }
    Ok(examples)
}

/// The example held by one JSON object, read from `line` of `path`.
fn json_example(
    mut object: Map<String, Value>,
    path: &Path,
    line: u64,
    file_name: &str,
) -> Result<Example, Error> {
    let mut take = |names, field| {
        let keys = object.keys().map(String::as_str);
        let index = find_field(keys, names, field, path, Some(line))?;
        let key = object.keys().nth(index).expect("found above").clone();
        let value = object.remove(&key).expect("found above");
        Ok((key, value))
    };
    let (text_key, text) = take(TEXT_FIELDS, "text")?;
    let (_, label) = take(LABEL_FIELDS, "label")?;
    let Value::String(text) = text else {
        return Err(Error::NotText {
            path: path.to_owned(),
            line,
            field: text_key,
        });
    };
    let label = match &label {
        Value::Number(number) => number.as_u64().and_then(|n| u8::try_from(n).ok()),
        Value::String(label) => parse_label(label),
        _ => None,
    }
    .filter(|label| *label <= 1)
    .ok_or_else(|| Error::BadLabel {
        path: path.to_owned(),
        line,
        found: match label {
            Value::String(label) => label,
            other => other.to_string(),
        },
    })?;
    Ok(Example {
        text,
        label,
        source: format!("{file_name}:{line}"),
    })
}

/// Parses `0`/`1`/`neg`/`pos`/`negative`/`positive` (any case, surrounding whitespace ignored).
pub(super) fn parse_label(raw: &str) -> Option<u8> {
    let raw = raw.trim();
    let is = |names: [&str; 3]| names.iter().any(|name| raw.eq_ignore_ascii_case(name));
    if is(["0", "neg", "negative"]) {
        Some(0)
    } else if is(["1", "pos", "positive"]) {
        Some(1)
    } else {
        None
    }
}

/// Where among `keys` (CSV headers, parquet columns, JSON keys) the first of `names` that
/// occurs stands, compared with [`is_named`]: earlier names win over earlier keys.
///
/// Errors: [`Error::MissingField`] naming `field` (and `line` of `path`) when none occurs.
pub(super) fn find_field<'k>(
    keys: impl Iterator<Item = &'k str> + Clone,
    names: &[&str],
    field: &'static str,
    path: &Path,
    line: Option<u64>,
) -> Result<usize, Error> {
    names
        .iter()
        .find_map(|name| keys.clone().position(|key| is_named(key, name)))
        .ok_or_else(|| Error::MissingField {
            path: path.to_owned(),
            line,
            field,
        })
}

/// Whether a CSV header or JSON key is `name`, ignoring ASCII case, whitespace and a BOM.
fn is_named(key: &str, name: &str) -> bool {
    key.strip_prefix(BOM)
        .unwrap_or(key)
        .trim()
        .eq_ignore_ascii_case(name)
}

/// Opens `path` for reading.
pub(super) fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The file name used in [`Example::source`].
pub(super) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Maps a CSV reader error to [`Error::BadUtf8`] or [`Error::Csv`].
fn csv_error(path: &Path, source: csv::Error) -> Error {
    let line = source.position().map(csv::Position::line);
    if let csv::ErrorKind::Utf8 { .. } = source.kind() {
        return Error::BadUtf8 {
            path: path.to_owned(),
            entry: line.map_or_else(|| "header".to_owned(), |line| format!("line {line}")),
        };
    }
    Error::Csv {
        path: path.to_owned(),
        line,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::write_file;
    use crate::data::{load, Split};

    fn labels(examples: &[Example]) -> Vec<u8> {
        examples.iter().map(|e| e.label).collect()
    }

    #[test]
    fn csv_with_every_label_spelling() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("reviews.csv");
        let csv = "id,Review,sentiment\n\
                   1,good,1\n\
                   2,bad,0\n\
                   3,\"so, so\nbad\",neg\n\
                   4,great,POS\n\
                   5,awful, Negative \n\
                   6,lovely,positive\n";
        write_file(&path, csv.as_bytes());
        let examples = load(&path, Split::Test).expect("load csv");
        assert_eq!(labels(&examples), [1, 0, 0, 1, 0, 1]);
        assert_eq!(examples[2].text, "so, so\nbad");
        let sources: Vec<&str> = examples.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "reviews.csv:2",
                "reviews.csv:3",
                "reviews.csv:4",
                "reviews.csv:6",
                "reviews.csv:7",
                "reviews.csv:8"
            ]
        );
    }

    #[test]
    fn csv_column_preference_and_bom() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sst.csv");
        write_file(
            &path,
            "\u{feff}sentence,label,text\nignored,0,kept\nignored,1,also kept\n".as_bytes(),
        );
        let examples = load(&path, Split::Train).expect("load csv");
        assert_eq!(examples[0].text, "kept");
        let path = dir.path().join("bom.csv");
        write_file(&path, "\u{feff}label,sentence\n0,meh\n1,yay\n".as_bytes());
        let examples = load(&path, Split::Train).expect("load csv with BOM");
        assert_eq!(labels(&examples), [0, 1]);
    }

    #[test]
    fn jsonl_with_every_label_spelling() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("reviews.jsonl");
        let jsonl = "{\"text\": \"good\", \"label\": 1}\n\
                     {\"text\": \"bad\", \"label\": 0}\n\
                     \n\
                     {\"review\": \"meh\", \"sentiment\": \"neg\"}\r\n\
                     {\"sentence\": \"yay\", \"label\": \"POS\"}\n\
                     {\"Text\": \"no\", \"Label\": \"negative\", \"extra\": [1]}\n\
                     {\"text\": \"yes\", \"label\": \"Positive\"}\n\
                     {\"text\": \"one\", \"label\": \"1\"}";
        write_file(&path, jsonl.as_bytes());
        let examples = load(&path, Split::Train).expect("load jsonl");
        assert_eq!(labels(&examples), [1, 0, 0, 1, 0, 1, 1]);
        assert_eq!(examples[2].text, "meh");
        assert_eq!(examples[2].source, "reviews.jsonl:4");
        assert_eq!(examples[6].source, "reviews.jsonl:8");
    }

    #[test]
    fn bad_labels_name_the_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases: [(&str, &str, u64, &str); 5] = [
            ("a.csv", "text,label\nok,1\nhm,2\n", 3, "2"),
            ("b.csv", "text,label\nok,1\nhm,maybe\n", 3, "maybe"),
            (
                "c.jsonl",
                "{\"text\":\"ok\",\"label\":0}\n{\"text\":\"hm\",\"label\":2}\n",
                2,
                "2",
            ),
            (
                "d.jsonl",
                "{\"text\":\"hm\",\"label\":\"neutral\"}\n",
                1,
                "neutral",
            ),
            ("e.jsonl", "{\"text\":\"hm\",\"label\":true}\n", 1, "true"),
        ];
        for (name, contents, expected_line, expected_found) in cases {
            let path = dir.path().join(name);
            write_file(&path, contents.as_bytes());
            match load(&path, Split::Train) {
                Err(Error::BadLabel {
                    path: at,
                    line,
                    found,
                }) => {
                    assert_eq!(at, path);
                    assert_eq!((line, found.as_str()), (expected_line, expected_found));
                }
                other => panic!("{name}: expected BadLabel, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_fields() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases: [(&str, &str, Option<u64>, &str); 4] = [
            ("a.csv", "body,label\nok,1\n", None, "text"),
            ("b.csv", "text,stars\nok,1\n", None, "label"),
            (
                "c.jsonl",
                "{\"text\":\"a\",\"label\":0}\n{\"label\":1}\n",
                Some(2),
                "text",
            ),
            ("d.jsonl", "{\"text\":\"a\"}\n", Some(1), "label"),
        ];
        for (name, contents, expected_line, expected_field) in cases {
            let path = dir.path().join(name);
            write_file(&path, contents.as_bytes());
            match load(&path, Split::Train) {
                Err(Error::MissingField { line, field, .. }) => {
                    assert_eq!((line, field), (expected_line, expected_field), "{name}");
                }
                other => panic!("{name}: expected MissingField, got {other:?}"),
            }
        }
        let error = Error::MissingField {
            path: "x.csv".into(),
            line: None,
            field: "text",
        };
        assert_eq!(
            error.to_string(),
            "x.csv: missing text field (expected one of: text, review, sentence)"
        );
    }

    #[test]
    fn malformed_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ragged.csv");
        write_file(&path, b"text,label\nok,1\ntoo,many,fields\n");
        let error = load(&path, Split::Train).expect_err("ragged csv");
        assert!(
            matches!(error, Error::Csv { line: Some(3), .. }),
            "{error:?}"
        );

        let path = dir.path().join("broken.jsonl");
        write_file(&path, b"{\"text\":\"ok\",\"label\":1}\n{\"text\": oops}\n");
        let error = load(&path, Split::Train).expect_err("broken json");
        assert!(matches!(error, Error::Json { line: 2, .. }), "{error:?}");

        let path = dir.path().join("array.jsonl");
        write_file(&path, b"[\"ok\", 1]\n");
        let error = load(&path, Split::Train).expect_err("not an object");
        assert!(matches!(error, Error::Json { line: 1, .. }), "{error:?}");

        let path = dir.path().join("number.jsonl");
        write_file(&path, b"{\"review\": 5, \"label\": 1}\n");
        match load(&path, Split::Train) {
            Err(Error::NotText { line, field, .. }) => {
                assert_eq!((line, field.as_str()), (1, "review"))
            }
            other => panic!("expected NotText, got {other:?}"),
        }
    }

    #[test]
    fn bad_utf8_names_the_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latin1.csv");
        write_file(&path, b"text,label\nok,1\ncaf\xe9,0\n");
        let error = load(&path, Split::Train).expect_err("latin-1 csv");
        assert!(
            matches!(&error, Error::BadUtf8 { entry, .. } if entry == "line 3"),
            "{error:?}"
        );
        let path = dir.path().join("latin1.jsonl");
        write_file(&path, b"{\"text\":\"caf\xe9\",\"label\":0}\n");
        let error = load(&path, Split::Train).expect_err("latin-1 jsonl");
        assert!(
            matches!(&error, Error::BadUtf8 { entry, .. } if entry == "line 1"),
            "{error:?}"
        );
    }

    #[test]
    fn empty_and_one_class_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("header_only.csv");
        write_file(&path, b"text,label\n");
        let error = load(&path, Split::Train).expect_err("no rows");
        assert!(matches!(error, Error::EmptySplit { .. }), "{error:?}");
        let path = dir.path().join("empty.jsonl");
        write_file(&path, b"\n\n");
        let error = load(&path, Split::Test).expect_err("no lines");
        assert!(
            matches!(
                error,
                Error::EmptySplit {
                    split: Split::Test,
                    ..
                }
            ),
            "{error:?}"
        );
        let path = dir.path().join("positive.jsonl");
        write_file(
            &path,
            b"{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\",\"label\":\"pos\"}\n",
        );
        let error = load(&path, Split::Train).expect_err("one class");
        assert!(
            matches!(error, Error::MissingClass { label: 0, .. }),
            "{error:?}"
        );
    }
}
