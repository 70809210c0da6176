//! Reader for PyTorch `pytorch_model.bin` files, in both serialisations `torch.save` has used.
//!
//! - The zip format (PyTorch ≥ 1.6): `<prefix>/data.pkl` holds the state dict, each storage
//!   is the raw entry `<prefix>/data/<key>`; see [`archive`].
//! - The legacy format (earlier, and still on the Hub for 2019–2020 uploads such as TinyBERT):
//!   a stream of pickles followed by the raw storages; see [`legacy`].
//!
//! Both decode their pickles with the non-executing VM in [`pickle`] and hand the state dict to
//! [`read_state_dict`], which turns `_rebuild_tensor_v2(storage, offset, size, stride, ..)`
//! calls into row-major f32 tensors, gathering non-contiguous views. Only the keys the caller
//! keeps are decoded; the rest are listed but never touched.

mod archive;
mod legacy;
mod pickle;

use std::io::Read;
use std::path::{Path, PathBuf};

use self::pickle::{ObjId, Object, Pickle, PickleError};
use super::dtype::{DType, StridedView};
use super::{Error, FileTensors, Tensor};

/// Wrappers around tensors (`Parameter`, tensor subclasses) nest at most this deep.
const MAX_REBUILD_DEPTH: usize = 8;

/// Reads the tensors of `path` (zip or legacy format) whose key `keep` accepts.
pub(crate) fn read(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<FileTensors, Error> {
    let read_error = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut head = [0; 4];
    let head_len = std::fs::File::open(path)
        .and_then(|file| file.take(4).read(&mut head))
        .map_err(read_error)?;
    match &head[..head_len] {
        b"PK\x03\x04" => archive::read(path, keep),
        [0x80, ..] => {
            let bytes = std::fs::read(path).map_err(read_error)?;
            legacy::read(path, &bytes, keep)
        }
        _ => Err(Error::NotTorchFile {
            path: path.to_path_buf(),
        }),
    }
}

/// Where the raw bytes of storages come from: zip entries or legacy records.
trait StorageSource {
    /// All bytes of the storage `key`, at least `len` of them.
    fn bytes(&mut self, key: &str, len: usize) -> Result<&[u8], Error>;
}

/// A storage as a persistent id names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StorageRef {
    key: String,
    dtype: DType,
    /// Elements in the storage.
    numel: usize,
    /// Legacy format only: this storage is `(offset, len)` elements of storage `key`.
    view: Option<(usize, usize)>,
}

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// Decodes the kept tensors of the state dict `pickle`, reading storages from `storages`.
fn read_state_dict(
    path: &Path,
    pickle: &Pickle,
    keep: &dyn Fn(&str) -> bool,
    storages: &mut dyn StorageSource,
) -> Result<FileTensors, Error> {
    let reader = StateDict { path, pickle };
    let entries = reader.entries()?;
    let mut tensors = Vec::new();
    for (name, id) in entries.iter().filter(|(name, _)| keep(name)) {
        let tensor = reader.tensor(name, *id)?;
        let storage = &tensor.storage;
        let size = storage.dtype.size();
        let declared = storage.numel.checked_mul(size).ok_or_else(|| {
            reader.unexpected(
                format!("the storage of tensor {name}"),
                "a storage that fits in memory",
                format!("{} elements", storage.numel),
            )
        })?;
        let bytes = storages.bytes(&storage.key, declared)?;
        let bytes = match storage.view {
            None => &bytes[..declared],
            Some((offset, len)) => {
                let range = offset
                    .checked_add(len)
                    .filter(|&end| end <= storage.numel)
                    .map(|end| offset * size..end * size);
                let Some(range) = range else {
                    return Err(Error::StorageSize {
                        path: path.to_path_buf(),
                        key: storage.key.clone(),
                        expected: (offset as u64).saturating_add(len as u64) * size as u64,
                        found: declared as u64,
                    });
                };
                &bytes[range]
            }
        };
        let view = StridedView {
            offset: tensor.offset,
            shape: &tensor.shape,
            stride: &tensor.stride,
        };
        let data = view
            .gather(storage.dtype, bytes)
            .map_err(|e| Error::TensorOutOfBounds {
                path: path.to_path_buf(),
                name: name.clone(),
                needed: e.needed,
                available: e.available,
            })?;
        tensors.push((
            name.clone(),
            Tensor {
                shape: tensor.shape,
                data,
            },
        ));
    }
    let keys = entries.into_iter().map(|(name, _)| name).collect();
    Ok(FileTensors { keys, tensors })
}

/// Interprets a decoded state-dict pickle.
struct StateDict<'a> {
    path: &'a Path,
    pickle: &'a Pickle,
}

impl StateDict<'_> {
    /// The `(key, value)` pairs of the root dict.
    fn entries(&self) -> Result<Vec<(String, ObjId)>, Error> {
        let root = self.pickle.root();
        let Object::Dict(pairs) = self.pickle.get(root) else {
            return Err(self.unexpected_object("the state dict".into(), "a dict", root));
        };
        pairs
            .iter()
            .map(|&(key, value)| match self.pickle.get(key) {
                Object::Str(name) => Ok((name.clone(), value)),
                _ => Err(self.unexpected_object("a state dict key".into(), "a str", key)),
            })
            .collect()
    }

    /// Follows the value of key `name` to the `_rebuild_tensor_v2` call that makes it.
    fn tensor(&self, name: &str, id: ObjId) -> Result<TensorRef, Error> {
        let Object::Reduce { callable, args, .. } = self.pickle.get(id) else {
            return Err(self.unexpected_object(format!("tensor {name}"), "a tensor", id));
        };
        self.call(name, *callable, *args, 0)
    }

    fn call(
        &self,
        name: &str,
        callable: ObjId,
        args: ObjId,
        depth: usize,
    ) -> Result<TensorRef, Error> {
        let what = || format!("tensor {name}");
        let not_a_tensor =
            || self.unexpected_object(what(), "a torch tensor rebuild call", callable);
        let (
            Object::Global {
                module,
                name: function,
            },
            Object::Tuple(args),
        ) = (self.pickle.get(callable), self.pickle.get(args))
        else {
            return Err(not_a_tensor());
        };
        if depth >= MAX_REBUILD_DEPTH {
            return Err(self.unexpected(
                what(),
                "a shallow tensor wrapper",
                format!("{depth} nested wrappers"),
            ));
        }
        let arg = |index: usize| {
            args.get(index).copied().ok_or_else(|| {
                self.unexpected(
                    what(),
                    "more rebuild arguments",
                    format!("{} of them", args.len()),
                )
            })
        };
        match (module.as_str(), function.as_str()) {
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => {
                let Object::PersistentId(pid) = self.pickle.get(arg(0)?) else {
                    return Err(self.unexpected_object(what(), "a storage persistent id", arg(0)?));
                };
                let shape = self.indices(&format!("the size of {}", what()), arg(2)?)?;
                let stride = self.indices(&format!("the stride of {}", what()), arg(3)?)?;
                if stride.len() != shape.len() {
                    return Err(self.unexpected(
                        format!("the stride of {}", what()),
                        "one stride per dimension",
                        format!("{} strides for {} dimensions", stride.len(), shape.len()),
                    ));
                }
                Ok(TensorRef {
                    storage: self.storage(name, *pid)?,
                    offset: self.index(&format!("the storage offset of {}", what()), arg(1)?)?,
                    shape,
                    stride,
                })
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match self.pickle.get(arg(0)?) {
                    Object::Reduce { callable, args, .. } => {
                        self.call(name, *callable, *args, depth + 1)
                    }
                    _ => Err(self.unexpected_object(
                        what(),
                        "a tensor inside the parameter",
                        arg(0)?,
                    )),
                }
            }
            // Tensor subclasses: _rebuild_from_type_v2(func, new_type, args, state).
            ("torch._tensor", "_rebuild_from_type_v2") => {
                self.call(name, arg(0)?, arg(2)?, depth + 1)
            }
            _ => Err(not_a_tensor()),
        }
    }

    /// Parses `('storage', storage_type, key, location, numel[, view_metadata])`.
    fn storage(&self, tensor: &str, pid: ObjId) -> Result<StorageRef, Error> {
        let what = || format!("the storage of tensor {tensor}");
        let malformed =
            || self.unexpected_object(what(), "('storage', type, key, location, numel)", pid);
        let Object::Tuple(fields) = self.pickle.get(pid) else {
            return Err(malformed());
        };
        let field = |index: usize| fields.get(index).map(|&id| self.pickle.get(id));
        let (
            Some(Object::Str(tag)),
            Some(Object::Global {
                module,
                name: class,
            }),
            Some(key),
        ) = (field(0), field(1), field(2))
        else {
            return Err(malformed());
        };
        let key = match key {
            Object::Str(key) => key.clone(),
            Object::Int(key) => key.to_string(),
            _ => return Err(malformed()),
        };
        if tag != "storage" || !module.starts_with("torch") {
            return Err(malformed());
        }
        let dtype = DType::from_torch_storage(class).ok_or_else(|| Error::UnsupportedDType {
            path: self.path.to_path_buf(),
            name: tensor.to_string(),
            dtype: format!("{module}.{class}"),
        })?;
        let numel = self.index(
            &format!("the element count of {}", what()),
            *fields.get(4).ok_or_else(malformed)?,
        )?;
        let view = match field(5) {
            None | Some(Object::None) => None,
            // (view_key, offset, size), offset and size in elements of the root storage.
            Some(Object::Tuple(view)) if view.len() == 3 => Some((
                self.index(&format!("the view offset of {}", what()), view[1])?,
                self.index(&format!("the view size of {}", what()), view[2])?,
            )),
            Some(_) => return Err(malformed()),
        };
        Ok(StorageRef {
            key,
            dtype,
            numel,
            view,
        })
    }

    fn index(&self, what: &str, id: ObjId) -> Result<usize, Error> {
        match self.pickle.get(id) {
            Object::Int(value) => usize::try_from(*value)
                .map_err(|_| self.unexpected_object(what.to_string(), "a non-negative int", id)),
            _ => Err(self.unexpected_object(what.to_string(), "an int", id)),
        }
    }

    fn indices(&self, what: &str, id: ObjId) -> Result<Vec<usize>, Error> {
        match self.pickle.get(id) {
            Object::Tuple(items) => items.iter().map(|&item| self.index(what, item)).collect(),
            _ => Err(self.unexpected_object(what.to_string(), "a tuple of ints", id)),
        }
    }

    fn unexpected_object(&self, what: String, expected: &'static str, found: ObjId) -> Error {
        self.unexpected(what, expected, self.pickle.get(found).describe())
    }

    fn unexpected(&self, what: String, expected: &'static str, found: String) -> Error {
        Error::UnexpectedObject {
            path: self.path.to_path_buf(),
            what,
            expected,
            found,
        }
    }
}

/// Attaches the file (or `file/entry`) a pickle came from to a pickle error.
fn pickle_error(path: PathBuf, error: PickleError) -> Error {
    Error::Pickle {
        path,
        offset: error.offset as u64,
        reason: error.reason,
    }
}

#[cfg(test)]
mod tests;
