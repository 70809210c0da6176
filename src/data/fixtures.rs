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
