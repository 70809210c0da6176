//! PyTorch's zip serialisation (`torch.save` since 1.6).
//!
//! The archive holds one top-level folder, `<prefix>/`, with `data.pkl` (the state dict, whose
//! persistent ids name storages), `data/<key>` (each storage's raw little-endian bytes), and
//! optionally `byteorder` (`little` or `big`) and `version`. Storage entries are read once,
//! on demand, and only for the tensors the caller keeps.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use zip::ZipArchive;

use super::{pickle, pickle_error, read_state_dict, StorageSource};
use crate::checkpoint::{Error, FileTensors};

/// `data.pkl` larger than this is refused: a BERT state dict's is a few KiB.
const MAX_PICKLE_BYTES: u64 = 64 << 20;

type Archive = ZipArchive<BufReader<File>>;

/// Reads the kept tensors of the zip-format checkpoint at `path`.
pub(super) fn read(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<FileTensors, Error> {
    let file = File::open(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_error(path, e))?;

    let pickle_entry = archive
        .file_names()
        .filter_map(Result::ok)
        .find(|name| name.ends_with("/data.pkl") && name.matches('/').count() == 1)
        .map(String::from)
        .ok_or_else(|| Error::MissingArchiveEntry {
            path: path.to_path_buf(),
            entry: "<prefix>/data.pkl".to_string(),
        })?;
    let prefix = pickle_entry
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();

    let byteorder = format!("{prefix}byteorder");
    if archive.index_for_name(&byteorder).is_some() {
        let order = read_entry(&mut archive, path, &byteorder, 16)?;
        if order.trim_ascii() == b"big" {
            return Err(Error::BigEndian {
                path: path.to_path_buf(),
            });
        }
    }

    let pickle_bytes = read_entry(&mut archive, path, &pickle_entry, MAX_PICKLE_BYTES + 1)?;
    if pickle_bytes.len() as u64 > MAX_PICKLE_BYTES {
        return Err(Error::Pickle {
            path: path.join(&pickle_entry),
            offset: MAX_PICKLE_BYTES,
            reason: format!("state dict pickle is larger than {MAX_PICKLE_BYTES} bytes"),
        });
    }
    let state =
        pickle::load(&pickle_bytes, 0).map_err(|e| pickle_error(path.join(&pickle_entry), e))?;

    let mut storages = ArchiveStorages {
        path,
        archive,
        prefix,
        cache: HashMap::new(),
    };
    read_state_dict(path, &state, keep, &mut storages)
}

/// Storages read from `<prefix>/data/<key>` entries, each at most once.
struct ArchiveStorages<'a> {
    path: &'a Path,
    archive: Archive,
    prefix: String,
    cache: HashMap<String, Vec<u8>>,
}

impl StorageSource for ArchiveStorages<'_> {
    fn bytes(&mut self, key: &str, len: usize) -> Result<&[u8], Error> {
        if !self.cache.contains_key(key) {
            let entry = format!("{}data/{key}", self.prefix);
            // Tied weights share a storage: read it once.
            let bytes = read_entry(&mut self.archive, self.path, &entry, len as u64)?;
            self.cache.insert(key.to_string(), bytes);
        }
        let bytes = &self.cache[key];
        if bytes.len() < len {
            return Err(Error::StorageSize {
                path: self.path.to_path_buf(),
                key: key.to_string(),
                expected: len as u64,
                found: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }
}

/// Reads at most `limit` bytes of `entry`.
fn read_entry(
    archive: &mut Archive,
    path: &Path,
    entry: &str,
    limit: u64,
) -> Result<Vec<u8>, Error> {
    let file = archive.by_name(entry).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => Error::MissingArchiveEntry {
            path: path.to_path_buf(),
            entry: entry.to_string(),
        },
        other => zip_error(path, other),
    })?;
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|source| zip_error(path, zip::result::ZipError::Io(source)))?;
    Ok(bytes)
}

fn zip_error(path: &Path, source: zip::result::ZipError) -> Error {
    Error::Zip {
        path: path.to_path_buf(),
        source,
    }
}
