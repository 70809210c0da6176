//! PyTorch's legacy serialisation (`torch.save` before 1.6, or `_use_new_zipfile_serialization=False`).
//!
//! The file is five pickles back to back, then the storages:
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c`;
//! 2. the protocol version, `1001`;
//! 3. `sys_info`, a dict whose `little_endian` says the byte order;
//! 4. the state dict, whose persistent ids are
//!    `('storage', storage_type, key, location, numel, view_metadata)`;
//! 5. the list of storage keys, in the order their data follows;
//!
//! then, per key in that order, a little-endian `u64` element count and the raw elements.
//! This mirrors `_legacy_save` and `_legacy_load` in PyTorch's `torch/serialization.py`
//! (<https://github.com/pytorch/pytorch/blob/v2.1.0/torch/serialization.py>).

use std::collections::HashMap;
use std::path::Path;

use super::pickle::{self, Object, Pickle};
use super::{pickle_error, read_state_dict, StateDict, StorageSource};
use crate::checkpoint::dtype::DType;
use crate::checkpoint::{Error, FileTensors};

/// `0x1950a86a20f9469cfc6c` as the little-endian bytes `LONG1` stores.
const MAGIC_NUMBER: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

/// Reads the kept tensors of a legacy checkpoint whose whole content is `bytes`.
pub(super) fn read(
    path: &Path,
    bytes: &[u8],
    keep: &dyn Fn(&str) -> bool,
) -> Result<FileTensors, Error> {
    let load = |start| pickle::load(bytes, start).map_err(|e| pickle_error(path.to_path_buf(), e));
    let unexpected = |what: &str, expected, pickle: &Pickle| Error::UnexpectedObject {
        path: path.to_path_buf(),
        what: what.to_string(),
        expected,
        found: pickle.get(pickle.root()).describe(),
    };

    let magic = load(0)?;
    if !matches!(magic.get(magic.root()), Object::BigInt(b) if b[..] == MAGIC_NUMBER) {
        return Err(unexpected(
            "the magic number",
            "0x1950a86a20f9469cfc6c",
            &magic,
        ));
    }
    let version = load(magic.end())?;
    if version.get(version.root()) != &Object::Int(PROTOCOL_VERSION) {
        return Err(unexpected("the protocol version", "1001", &version));
    }
    let sys_info = load(version.end())?;
    if is_big_endian(&sys_info) {
        return Err(Error::BigEndian {
            path: path.to_path_buf(),
        });
    }
    let state = load(sys_info.end())?;
    let key_list = load(state.end())?;
    let keys: Option<Vec<&str>> = match key_list.get(key_list.root()) {
        Object::List(ids) => ids
            .iter()
            .map(|&id| match key_list.get(id) {
                Object::Str(key) => Some(key.as_str()),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    let Some(keys) = keys else {
        return Err(unexpected(
            "the storage key list",
            "a list of str",
            &key_list,
        ));
    };

    let storages = split_storages(path, &state, &keys, &bytes[key_list.end()..])?;
    read_state_dict(path, &state, keep, &mut LegacyStorages { path, storages })
}

/// `sys_info['little_endian'] is False`; absent means little-endian, as PyTorch assumes.
fn is_big_endian(sys_info: &Pickle) -> bool {
    let Object::Dict(pairs) = sys_info.get(sys_info.root()) else {
        return false;
    };
    pairs.iter().any(|&(key, value)| {
        sys_info.get(key) == &Object::Str("little_endian".into())
            && sys_info.get(value) == &Object::Bool(false)
    })
}

/// Cuts the storage records after the pickles into one byte slice per key.
///
/// A record's length depends on its element size, which only the persistent ids in the state
/// dict tell, so every key must be the storage of some tensor.
fn split_storages<'a>(
    path: &Path,
    state: &Pickle,
    keys: &[&str],
    mut records: &'a [u8],
) -> Result<HashMap<String, &'a [u8]>, Error> {
    // Entries that are not tensors are skipped here; if their storages cannot be sized
    // without them, the first such entry's error explains why.
    let reader = StateDict {
        path,
        pickle: state,
    };
    let mut dtypes: HashMap<String, DType> = HashMap::new();
    let mut first_error = None;
    for (name, id) in reader.entries()? {
        match reader.tensor(&name, id) {
            Ok(tensor) => {
                dtypes.insert(tensor.storage.key, tensor.storage.dtype);
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }

    let mut storages = HashMap::with_capacity(keys.len());
    for &key in keys {
        let Some(dtype) = dtypes.get(key) else {
            return Err(first_error.unwrap_or_else(|| Error::UnexpectedObject {
                path: path.to_path_buf(),
                what: format!("storage {key}"),
                expected: "a storage used by a tensor of the state dict",
                found: "no tensor using it".to_string(),
            }));
        };
        let truncated = |expected: u64| Error::StorageSize {
            path: path.to_path_buf(),
            key: key.to_string(),
            expected,
            found: records.len().saturating_sub(8) as u64,
        };
        let Some((count, rest)) = records.split_first_chunk::<8>() else {
            return Err(truncated(8));
        };
        let count = u64::from_le_bytes(*count);
        let len = count.saturating_mul(dtype.size() as u64);
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= rest.len())
            .ok_or_else(|| truncated(len))?;
        let (data, rest) = rest.split_at(len);
        storages.insert(key.to_string(), data);
        records = rest;
    }
    Ok(storages)
}

/// Storage records, already cut out of the file.
struct LegacyStorages<'a> {
    path: &'a Path,
    storages: HashMap<String, &'a [u8]>,
}

impl StorageSource for LegacyStorages<'_> {
    fn bytes(&mut self, key: &str, len: usize) -> Result<&[u8], Error> {
        let size_error = |found: usize| Error::StorageSize {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            expected: len as u64,
            found: found as u64,
        };
        match self.storages.get(key) {
            Some(bytes) if bytes.len() >= len => Ok(bytes),
            Some(bytes) => Err(size_error(bytes.len())),
            None => Err(Error::UnexpectedObject {
                path: self.path.to_path_buf(),
                what: format!("storage {key}"),
                expected: "a key of the storage key list",
                found: "a key missing from it".to_string(),
            }),
        }
    }
}
