//! Test fixtures: small files and `.tar.gz` archives written into temporary directories.

use std::fs;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

/// Writes `bytes` to `path`, creating the parent directories.
pub(super) fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create fixture directory");
    }
    fs::write(path, bytes).expect("write fixture file");
}

/// Writes a gzip-compressed tar archive holding `entries` (path, contents) to `path`.
pub(super) fn write_tar_gz(path: &Path, entries: &[(&str, &[u8])]) {
    let file = fs::File::create(path).expect("create fixture archive");
    let mut builder = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    for (name, contents) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, *contents)
            .expect("append fixture entry");
    }
    builder
        .into_inner()
        .and_then(GzEncoder::finish)
        .expect("finish fixture archive");
}

/// One column of a parquet fixture; `None` is a null (the column must be `optional`).
pub(super) enum Column<'a> {
    /// A `binary` column (annotated `(STRING)` or not, as the schema says).
    Bytes(Vec<Option<&'a str>>),
    /// An `int64` column.
    Long(Vec<Option<i64>>),
}

/// Writes a parquet file with `schema` (message type syntax) and `columns` in schema order,
/// `rows_per_group` rows per row group, compressed with `compression`.
pub(super) fn write_parquet(
    path: &Path,
    schema: &str,
    columns: &[Column],
    rows_per_group: usize,
    compression: parquet::basic::Compression,
) {
    use std::sync::Arc;

    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;

    let schema = Arc::new(parquet::schema::parser::parse_message_type(schema).expect("schema"));
    let descriptor = parquet::schema::types::SchemaDescriptor::new(schema.clone());
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(compression)
            .build(),
    );
    let file = fs::File::create(path).expect("create fixture parquet file");
    let mut writer = SerializedFileWriter::new(file, schema, properties).expect("parquet writer");
    let rows = match &columns[0] {
        Column::Bytes(values) => values.len(),
        Column::Long(values) => values.len(),
    };
    // Definition levels: 1 for a value, 0 for a null (ignored by required columns).
    fn split<T: Clone>(values: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
        let present = values.iter().flatten().cloned().collect();
        let levels = values.iter().map(|v| i16::from(v.is_some())).collect();
        (present, levels)
    }
    for start in (0..rows).step_by(rows_per_group.max(1)) {
        let end = (start + rows_per_group).min(rows);
        let mut group = writer.next_row_group().expect("row group");
        for (index, column) in columns.iter().enumerate() {
            let mut writer = group.next_column().expect("column").expect("schema column");
            let optional = descriptor.column(index).max_def_level() > 0;
            match column {
                Column::Bytes(values) => {
                    let (present, levels) = split(&values[start..end]);
                    let present: Vec<ByteArray> =
                        present.into_iter().map(ByteArray::from).collect();
                    writer
                        .typed::<ByteArrayType>()
                        .write_batch(&present, optional.then_some(&levels[..]), None)
                        .expect("write text column");
                }
                Column::Long(values) => {
                    let (present, levels) = split(&values[start..end]);
                    writer
                        .typed::<Int64Type>()
                        .write_batch(&present, optional.then_some(&levels[..]), None)
                        .expect("write label column");
                }
            }
            writer.close().expect("close column");
        }
        group.close().expect("close row group");
    }
    writer.close().expect("close parquet file");
}
