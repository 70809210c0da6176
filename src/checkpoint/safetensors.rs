//! Reader for `model.safetensors`, the Hugging Face Hub's default weights format.
//!
//! The header is parsed and bounds-checked by the `safetensors` crate; this module only
//! converts the tensors the caller keeps to f32. It also reads and writes whole files under
//! their stored keys, for the other safetensors files the crate handles (LoRA adapters).

use std::path::Path;

use ::safetensors::tensor::TensorView;
use ::safetensors::Dtype;

use super::dtype::DType;
use super::{Error, FileTensors, Tensor, TensorMap};

/// Reads the tensors of the safetensors file `path` whose key `keep` accepts.
pub(crate) fn read(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<FileTensors, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file =
        ::safetensors::SafeTensors::deserialize(&bytes).map_err(|source| Error::Safetensors {
            path: path.to_path_buf(),
            source,
        })?;

    // The header is a JSON object, so the crate's order is arbitrary: sort for stable messages.
    let mut entries = file.tensors();
    entries.sort_by(|(a, _), (b, _)| a.cmp(b));
    let mut tensors = Vec::new();
    for (name, view) in entries.iter().filter(|(name, _)| keep(name)) {
        let dtype =
            DType::from_safetensors(view.dtype()).ok_or_else(|| Error::UnsupportedDType {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: view.dtype().to_string(),
            })?;
        let tensor = Tensor {
            shape: view.shape().to_vec(),
            data: dtype.to_f32(view.data()),
        };
        tensors.push((name.clone(), tensor));
    }
    let keys = entries.into_iter().map(|(name, _)| name).collect();
    Ok(FileTensors { keys, tensors })
}

/// Reads every tensor of the safetensors file `path` as f32, under its key as stored (no
/// renaming or filtering; for LoRA adapters and other non-checkpoint files).
///
/// Errors: [`Error::Read`], [`Error::Safetensors`] for a corrupt file,
/// [`Error::UnsupportedDType`] for a tensor that has no f32 meaning.
pub fn read_safetensors(path: &Path) -> Result<TensorMap, Error> {
    let file = read(path, &|_| true)?;
    Ok(file.tensors.into_iter().collect())
}

/// Writes `tensors` as f32 to the safetensors file `path`, under the keys given.
///
/// Errors: [`Error::Safetensors`] if a tensor's data does not fill its shape,
/// [`Error::Write`] if the file cannot be written.
pub fn write_safetensors(tensors: &[(String, &Tensor)], path: &Path) -> Result<(), Error> {
    let invalid = |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, tensor)| tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, tensor), bytes)| {
            TensorView::new(Dtype::F32, tensor.shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let file = ::safetensors::serialize(views, None).map_err(invalid)?;
    std::fs::write(path, file).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adapter_model.safetensors");
        let a = Tensor {
            shape: vec![2, 3],
            data: vec![1.0, -2.0, 3.5, 0.0, 1e-8, -0.25],
        };
        let b = Tensor {
            shape: vec![1],
            data: vec![7.0],
        };
        write_safetensors(&[("x.lora_A.weight".into(), &a), ("y".into(), &b)], &path).unwrap();
        let read = read_safetensors(&path).unwrap();
        assert_eq!(read.keys().collect::<Vec<_>>(), ["x.lora_A.weight", "y"]);
        assert_eq!((&read["x.lora_A.weight"], &read["y"]), (&a, &b));

        let ragged = Tensor {
            shape: vec![2, 2],
            data: vec![1.0],
        };
        let error = write_safetensors(&[("r".into(), &ragged)], &path).unwrap_err();
        assert!(matches!(error, Error::Safetensors { .. }), "{error}");
        let error = write_safetensors(&[], &dir.path().join("no/such/dir/file")).unwrap_err();
        assert!(matches!(error, Error::Write { .. }), "{error}");
    }
}
