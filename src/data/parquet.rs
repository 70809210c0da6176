//! Parquet files, as the Hugging Face Hub serves datasets (`stanfordnlp/imdb`:
//! `plain_text/train-00000-of-00001.parquet`, columns `text` and `label`).
//!
//! The text and label columns are found by name as in CSV files (see [`super::table`]); only
//! those two columns are decoded. Text columns are UTF-8 strings; labels are integers (0/1),
//! booleans, or strings spelled as in CSV files. Compression: snappy (pyarrow's default), zstd
//! (polars' default), gzip, LZ4 or none; brotli is refused with the codec named.

use std::path::Path;

use parquet::errors::ParquetError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use super::table::{file_name, find_field, open, parse_label, LABEL_FIELDS, TEXT_FIELDS};
use super::{Error, Example};

/// Loads every row of a parquet file.
pub(super) fn load_parquet(path: &Path) -> Result<Vec<Example>, Error> {
    let reader =
        SerializedFileReader::new(open(path)?).map_err(|source| parquet_error(path, source))?;
    let schema = reader.metadata().file_metadata().schema();
    let columns = schema.get_fields();
    let column = |names, field| {
        let names_in_file = columns.iter().map(|column| column.name());
        find_field(names_in_file, names, field, path, None).map(|index| columns[index].clone())
    };
    let text_column = column(TEXT_FIELDS, "text")?;
    let label_column = column(LABEL_FIELDS, "label")?;
    let (text_name, label_name) = (
        text_column.name().to_owned(),
        label_column.name().to_owned(),
    );
    // Decode only the two columns, in this order.
    let projection = Type::group_type_builder(schema.name())
        .with_fields(vec![text_column, label_column])
        .build()
        .map_err(|source| parquet_error(path, source))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|source| parquet_error(path, source))?;

    let file_name = file_name(path);
    // Not sized from the footer's row count: a corrupt one would be trusted with an allocation.
    let mut examples = Vec::new();
    for (index, row) in rows.enumerate() {
        // Rows are numbered from 1, as lines are in CSV and JSON Lines sources.
        let number = index as u64 + 1;
        let row = row.map_err(|source| parquet_error(path, source))?;
        let mut fields = row.into_columns().into_iter().map(|(_, field)| field);
        let (Some(text), Some(label)) = (fields.next(), fields.next()) else {
            return Err(Error::MissingField {
                path: path.to_owned(),
                line: Some(number),
                field: "text",
            });
        };
        let Field::Str(text) = text else {
            return Err(Error::NotText {
                path: path.to_owned(),
                line: number,
                field: text_name,
            });
        };
        let label = field_label(&label).ok_or_else(|| Error::BadLabel {
            path: path.to_owned(),
            line: number,
            found: match &label {
                Field::Null => format!("null in column `{label_name}`"),
                other => other.to_string(),
            },
        })?;
        examples.push(Example {
            text,
            label,
            source: format!("{file_name}:{number}"),
        });
    }
    Ok(examples)
}

/// 0 or 1 from an integer, boolean or string label; `None` for anything else.
fn field_label(field: &Field) -> Option<u8> {
    let integer = match field {
        Field::Bool(positive) => Some(i64::from(*positive)),
        Field::Byte(v) => Some(i64::from(*v)),
        Field::Short(v) => Some(i64::from(*v)),
        Field::Int(v) => Some(i64::from(*v)),
        Field::Long(v) => Some(*v),
        Field::UByte(v) => Some(i64::from(*v)),
        Field::UShort(v) => Some(i64::from(*v)),
        Field::UInt(v) => Some(i64::from(*v)),
        Field::ULong(v) => i64::try_from(*v).ok(),
        Field::Str(label) => return parse_label(label),
        _ => None,
    };
    match integer {
        Some(0) => Some(0),
        Some(1) => Some(1),
        _ => None,
    }
}

/// Maps a parquet reader error to [`Error::Parquet`].
fn parquet_error(path: &Path, source: ParquetError) -> Error {
    Error::Parquet {
        path: path.to_owned(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use parquet::basic::{Compression, GzipLevel, ZstdLevel};

    use super::*;
    use crate::data::fixtures::{write_file, write_parquet, Column};
    use crate::data::{load, Split};

    const IMDB_SCHEMA: &str =
        "message schema { required binary text (STRING); required int64 label; }";

    fn texts(examples: &[Example]) -> Vec<&str> {
        examples.iter().map(|e| e.text.as_str()).collect()
    }

    fn labels(examples: &[Example]) -> Vec<u8> {
        examples.iter().map(|e| e.label).collect()
    }

    #[test]
    fn hub_layout_with_every_codec() {
        let rows = [
            "A gem.",
            "Dull <br /><br />and long.",
            "Loved it",
            "Ünïcödé, terrible",
        ];
        let columns = [
            Column::Bytes(rows.iter().map(|t| Some(*t)).collect()),
            Column::Long(vec![Some(1), Some(0), Some(1), Some(0)]),
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        for compression in [
            Compression::SNAPPY,
            Compression::ZSTD(ZstdLevel::default()),
            Compression::GZIP(GzipLevel::default()),
            Compression::LZ4_RAW,
            Compression::UNCOMPRESSED,
        ] {
            let path = dir.path().join("train-00000-of-00001.parquet");
            // Three row groups: rows continue across them.
            write_parquet(&path, IMDB_SCHEMA, &columns, 2, compression);
            let examples = load(&path, Split::Train).expect("load parquet");
            assert_eq!(texts(&examples), rows, "{compression}");
            assert_eq!(labels(&examples), [1, 0, 1, 0], "{compression}");
            assert_eq!(examples[3].source, "train-00000-of-00001.parquet:4");
        }
    }

    #[test]
    fn columns_by_name_and_string_labels() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("reviews.parquet");
        let schema = "message m { required int64 idx; required binary Sentiment (STRING); \
                      required binary review (STRING); }";
        let columns = [
            Column::Long(vec![Some(7), Some(8)]),
            Column::Bytes(vec![Some("POS"), Some(" negative ")]),
            Column::Bytes(vec![Some("fine"), Some("bad")]),
        ];
        write_parquet(&path, schema, &columns, 10, Compression::SNAPPY);
        let examples = load(&path, Split::Test).expect("load parquet");
        assert_eq!(texts(&examples), ["fine", "bad"]);
        assert_eq!(labels(&examples), [1, 0]);
    }

    #[test]
    fn missing_column_lists_the_accepted_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.parquet");
        let schema = "message m { required binary text (STRING); required int64 stars; }";
        let columns = [Column::Bytes(vec![Some("a")]), Column::Long(vec![Some(1)])];
        write_parquet(&path, schema, &columns, 10, Compression::SNAPPY);
        let error = load(&path, Split::Train).expect_err("no label column");
        assert!(
            matches!(
                error,
                Error::MissingField {
                    line: None,
                    field: "label",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .ends_with("missing label field (expected one of: label, sentiment)"),
            "{error}"
        );
    }

    #[test]
    fn bad_and_null_labels_name_the_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.parquet");
        let schema = "message m { required binary text (STRING); optional int64 label; }";
        for (label, found) in [(Some(2), "2"), (None, "null in column `label`")] {
            let columns = [
                Column::Bytes(vec![Some("good"), Some("bad")]),
                Column::Long(vec![Some(1), label]),
            ];
            write_parquet(&path, schema, &columns, 10, Compression::SNAPPY);
            let error = load(&path, Split::Train).expect_err("bad label");
            match &error {
                Error::BadLabel {
                    line: 2, found: f, ..
                } => assert_eq!(f, found),
                other => panic!("expected BadLabel at row 2, got {other:?}"),
            }
        }
    }

    #[test]
    fn binary_text_is_not_text() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.parquet");
        let schema = "message m { required binary text; required int64 label; }";
        let columns = [
            Column::Bytes(vec![Some("raw bytes")]),
            Column::Long(vec![Some(1)]),
        ];
        write_parquet(&path, schema, &columns, 10, Compression::SNAPPY);
        let error = load(&path, Split::Train).expect_err("binary text");
        assert!(
            matches!(&error, Error::NotText { line: 1, field, .. } if field == "text"),
            "{error:?}"
        );
    }

    #[test]
    fn corrupt_and_truncated_files_are_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = dir.path().join("good.parquet");
        let columns = [
            Column::Bytes(vec![Some("fine"), Some("bad")]),
            Column::Long(vec![Some(1), Some(0)]),
        ];
        write_parquet(&good, IMDB_SCHEMA, &columns, 10, Compression::SNAPPY);
        let bytes = std::fs::read(&good).expect("read fixture");
        let path = dir.path().join("bad.parquet");
        for corrupt in [
            b"PAR1 not really".to_vec(),
            bytes[..bytes.len() / 2].to_vec(),
            Vec::new(),
        ] {
            write_file(&path, &corrupt);
            let error = load(&path, Split::Train).expect_err("corrupt parquet");
            assert!(matches!(error, Error::Parquet { .. }), "{error:?}");
            assert!(
                crate::error_text::describe(&error).contains("bad.parquet: cannot read parquet: "),
                "{error}"
            );
        }
    }
}
