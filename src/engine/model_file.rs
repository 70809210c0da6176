//! Reads an ONNX file without holding its tensor data in memory twice.
//!
//! tract decodes a whole `ModelProto` (every tensor's bytes copied out of the file) and then
//! makes its own tensors from it, so the model's weights were in memory twice, and with the
//! file's bytes three times, while it loaded (51 MB of heap for a 23 MB MiniLM graph). [`read`]
//! walks the protobuf encoding of the file instead and leaves the data of every large
//! initializer where it is: the initializer is marked as external data (ONNX's
//! `data_location = EXTERNAL`) at its offset in the model file itself, and [`ModelFile`], as
//! tract's data resolver, reads each from the file when tract makes its tensor, one at a time.
//! The engine's embedding rows ([`super::fused`]) map their table from the file instead
//! ([`ModelFile::map`]), so that table is never copied at all.
//!
//! Only the fields this walk must see are decoded here (the model's graph, the graph's
//! initializers, a tensor's `raw_data`); everything else is passed on, byte for byte, to
//! prost. Tensor data kept in other files (external data written by another tool) is refused:
//! `sentimq build` writes every tensor inside the graph file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use prost::Message;
use tract_onnx::data_resolver::ModelDataResolver;
use tract_onnx::pb::tensor_proto::DataLocation;
use tract_onnx::pb::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};
use tract_onnx::tract_core::internal::*;

/// Initializers with at least this many bytes of `raw_data` stay in the file until tract
/// makes their tensor; smaller ones (biases, scales, shapes) are decoded with the graph, where
/// the operator fusion reads their values.
const FILE_BACKED_BYTES: u64 = 64 * 1024;

/// `ModelProto.graph`, `GraphProto.initializer` and `TensorProto.raw_data` in `onnx.proto`.
const MODEL_GRAPH: u32 = 7;
const GRAPH_INITIALIZER: u32 = 5;
const TENSOR_RAW_DATA: u32 = 9;

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const FIXED32: u8 = 5;

/// Why an ONNX file could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// Opening or reading the file failed.
    #[error("cannot read the file")]
    Io(#[from] io::Error),
    /// The bytes are not a protobuf `ModelProto`.
    #[error("not an ONNX protobuf: {0}")]
    Malformed(String),
    /// A message's fields do not decode as ONNX's.
    #[error("not an ONNX protobuf")]
    Decode(#[from] prost::DecodeError),
    /// A tensor's data is in another file.
    #[error("tensor {0:?} keeps its data in another file (external data); sentimq build writes every tensor inside the graph file")]
    ExternalData(String),
}

/// The open model file: tract's data resolver for the initializers [`read`] left in it.
#[derive(Debug)]
pub(super) struct ModelFile {
    file: Mutex<File>,
    /// The file's canonical path: tract resolves the data's location against it.
    path: PathBuf,
    len: u64,
}

impl ModelFile {
    /// The directory tract resolves the data's location in (the canonical one).
    pub(super) fn directory(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// Maps `len` bytes of the file from `offset`, read only.
    pub(super) fn map(&self, offset: u64, len: usize) -> io::Result<memmap2::Mmap> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("bytes {offset}..+{len} are past the end of the file"),
            ));
        }
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: a read-only map of a file that nothing in this process writes. Another process
        // writing into the file while it is served would change what the engine reads (model
        // files are replaced by renaming a new file over them, as `dpkg` and `install` do).
        unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .map(&*file)
        }
    }
}

impl ModelDataResolver for ModelFile {
    fn read_bytes_from_path(
        &self,
        buf: &mut Vec<u8>,
        path: &Path,
        offset: usize,
        length: Option<usize>,
    ) -> TractResult<()> {
        ensure!(
            path == self.path,
            "{path:?}: tensor data is read only from the model file"
        );
        let length = length.context("file-backed tensor data without a length")?;
        ensure!(
            (offset as u64)
                .checked_add(length as u64)
                .is_some_and(|end| end <= self.len),
            "tensor data at {offset}..+{length} is past the end of the model file"
        );
        let start = buf.len();
        buf.resize(start + length, 0);
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.seek(SeekFrom::Start(offset as u64))?;
        file.read_exact(&mut buf[start..])?;
        Ok(())
    }
}

/// Decodes the ONNX file at `path`, leaving the `raw_data` of its graph's large initializers
/// in the file (marked as external data at their offset in it, read through the returned
/// [`ModelFile`]).
pub(super) fn read(path: &Path) -> Result<(ModelProto, ModelFile), ReadError> {
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::other("not a regular file").into());
    }
    let canonical = std::fs::canonicalize(path)?;
    let location = canonical
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| io::Error::other("the file name is not UTF-8"))?
        .to_string();
    let mut walk = Walk {
        reader: BufReader::new(&file),
        position: 0,
        location,
    };
    let mut model_fields = Vec::new();
    let mut graph_fields = Vec::new();
    let mut initializers = Vec::new();
    let mut has_graph = false;
    while let Some((field, wire)) = walk.key()? {
        if field == MODEL_GRAPH && wire == LENGTH_DELIMITED {
            let len = walk.varint()?;
            walk.graph(len, &mut graph_fields, &mut initializers)?;
            has_graph = true;
        } else {
            walk.copy_field(field, wire, &mut model_fields)?;
        }
    }
    let mut model = ModelProto::decode(model_fields.as_slice())?;
    if has_graph {
        let mut graph = GraphProto::decode(graph_fields.as_slice())?;
        graph.initializer = initializers;
        model.graph = Some(graph);
    }
    let file = ModelFile {
        file: Mutex::new(file),
        path: canonical,
        len: metadata.len(),
    };
    Ok((model, file))
}

/// A pass over the file's protobuf encoding.
struct Walk<R> {
    reader: BufReader<R>,
    /// Bytes consumed so far: the offset in the file.
    position: u64,
    /// The model file's name, where the large initializers' data is said to be.
    location: String,
}

impl<R: Read + Seek> Walk<R> {
    /// The next byte, `None` at the end of the file.
    fn byte(&mut self) -> io::Result<Option<u8>> {
        let Some(&byte) = self.reader.fill_buf()?.first() else {
            return Ok(None);
        };
        self.reader.consume(1);
        self.position += 1;
        Ok(Some(byte))
    }

    fn varint(&mut self) -> Result<u64, ReadError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?.ok_or_else(|| truncated(self.position))?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ReadError::Malformed(format!(
            "varint over 10 bytes at byte {}",
            self.position
        )))
    }

    /// The next field's number and wire type, `None` at the end of the file.
    fn key(&mut self) -> Result<Option<(u32, u8)>, ReadError> {
        if self.reader.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| malformed_key(key))?;
        Ok(Some((field, (key & 7) as u8)))
    }

    fn bytes(&mut self, len: u64) -> Result<Vec<u8>, ReadError> {
        let mut bytes = Vec::new();
        (&mut self.reader).take(len).read_to_end(&mut bytes)?;
        self.position += bytes.len() as u64;
        if (bytes.len() as u64) < len {
            return Err(truncated(self.position));
        }
        Ok(bytes)
    }

    /// Reads one field's value and appends the field, re-encoded, to `out`.
    fn copy_field(&mut self, field: u32, wire: u8, out: &mut Vec<u8>) -> Result<(), ReadError> {
        put_varint(out, (u64::from(field) << 3) | u64::from(wire));
        match wire {
            VARINT => {
                let value = self.varint()?;
                put_varint(out, value);
            }
            FIXED64 => out.extend(self.bytes(8)?),
            FIXED32 => out.extend(self.bytes(4)?),
            LENGTH_DELIMITED => {
                let len = self.varint()?;
                put_varint(out, len);
                out.extend(self.bytes(len)?);
            }
            _ => return Err(malformed_key((u64::from(field) << 3) | u64::from(wire))),
        }
        Ok(())
    }

    /// A `GraphProto` of `len` bytes: its initializers decoded into `initializers`, every other
    /// field appended to `fields`.
    fn graph(
        &mut self,
        len: u64,
        fields: &mut Vec<u8>,
        initializers: &mut Vec<TensorProto>,
    ) -> Result<(), ReadError> {
        let end = self
            .position
            .checked_add(len)
            .ok_or_else(|| truncated(self.position))?;
        while self.position < end {
            let (field, wire) = self.key()?.ok_or_else(|| truncated(self.position))?;
            if field == GRAPH_INITIALIZER && wire == LENGTH_DELIMITED {
                let len = self.varint()?;
                initializers.push(self.tensor(len)?);
            } else {
                self.copy_field(field, wire, fields)?;
            }
        }
        self.check_end(end)
    }

    /// A `TensorProto` of `len` bytes, its `raw_data` left in the file when it is large.
    fn tensor(&mut self, len: u64) -> Result<TensorProto, ReadError> {
        let end = self
            .position
            .checked_add(len)
            .ok_or_else(|| truncated(self.position))?;
        let mut fields = Vec::new();
        let mut in_file = None;
        while self.position < end {
            let (field, wire) = self.key()?.ok_or_else(|| truncated(self.position))?;
            if field == TENSOR_RAW_DATA && wire == LENGTH_DELIMITED {
                let len = self.varint()?;
                if len >= FILE_BACKED_BYTES {
                    in_file = Some((self.position, len));
                    let skip = i64::try_from(len).map_err(|_| truncated(self.position))?;
                    self.reader.seek_relative(skip)?;
                    self.position += len;
                    continue;
                }
                put_varint(&mut fields, (u64::from(field) << 3) | u64::from(wire));
                put_varint(&mut fields, len);
                fields.extend(self.bytes(len)?);
            } else {
                self.copy_field(field, wire, &mut fields)?;
            }
        }
        self.check_end(end)?;
        let mut tensor = TensorProto::decode(fields.as_slice())?;
        if tensor.data_location == Some(DataLocation::External as i32) && in_file.is_none() {
            return Err(ReadError::ExternalData(tensor.name));
        }
        if let Some((offset, len)) = in_file {
            let entry = |key: &str, value: String| StringStringEntryProto {
                key: key.to_string(),
                value,
            };
            tensor.data_location = Some(DataLocation::External as i32);
            tensor.external_data = vec![
                entry("location", self.location.clone()),
                entry("offset", offset.to_string()),
                entry("length", len.to_string()),
            ];
        }
        Ok(tensor)
    }

    /// Fails unless the message that was to end at `end` ended there.
    fn check_end(&self, end: u64) -> Result<(), ReadError> {
        if self.position != end {
            return Err(ReadError::Malformed(format!(
                "a field runs past the end of its message (byte {} of {end})",
                self.position
            )));
        }
        Ok(())
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn truncated(position: u64) -> ReadError {
    ReadError::Malformed(format!("the file ends inside a field (byte {position})"))
}

fn malformed_key(key: u64) -> ReadError {
    ReadError::Malformed(format!(
        "field {} has wire type {}, which ONNX does not use",
        key >> 3,
        key & 7
    ))
}

#[cfg(all(test, feature = "workstation"))]
mod tests {
    use super::*;

    fn shipped_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imdb-minilm/model.int8.onnx")
    }

    fn external(tensor: &TensorProto, key: &str) -> Option<usize> {
        let entry = tensor.external_data.iter().find(|e| e.key == key)?;
        entry.value.parse().ok()
    }

    #[test]
    fn large_initializers_stay_in_the_file_where_their_bytes_are() {
        let bytes = std::fs::read(shipped_path()).expect("the shipped graph");
        let whole = ModelProto::decode(bytes.as_slice()).expect("decodes");
        let (walked, file) = read(&shipped_path()).expect("walks");
        let mut expected = whole.clone();
        let graph = expected.graph.as_mut().expect("a graph");
        let walked_graph = walked.graph.as_ref().expect("a graph");
        let mut in_file = 0;
        for (tensor, walked) in graph.initializer.iter_mut().zip(&walked_graph.initializer) {
            if (tensor.raw_data.len() as u64) < FILE_BACKED_BYTES {
                continue;
            }
            in_file += 1;
            let (offset, length) = (external(walked, "offset"), external(walked, "length"));
            let (offset, length) = (offset.expect("an offset"), length.expect("a length"));
            assert_eq!(
                bytes[offset..offset + length],
                tensor.raw_data[..],
                "{}",
                tensor.name
            );
            let mut through_tract = Vec::new();
            file.read_bytes_from_path(&mut through_tract, &file.path, offset, Some(length))
                .expect("reads");
            assert_eq!(through_tract, tensor.raw_data, "{}", tensor.name);
            tensor.raw_data.clear();
            tensor.data_location = Some(DataLocation::External as i32);
            tensor.external_data = walked.external_data.clone();
        }
        assert!(
            in_file >= 25,
            "the embeddings and every layer's weights: {in_file}"
        );
        assert_eq!(
            walked, expected,
            "everything else decodes as prost decodes it"
        );
        let elsewhere =
            file.read_bytes_from_path(&mut Vec::new(), Path::new("/etc/hosts"), 0, Some(1));
        assert!(elsewhere.is_err(), "only the model file is read");
        let past_end = file.read_bytes_from_path(&mut Vec::new(), &file.path, bytes.len(), Some(1));
        assert!(past_end.is_err());
    }

    #[test]
    fn a_truncated_file_is_malformed_and_data_in_another_file_is_refused() {
        let bytes = std::fs::read(shipped_path()).expect("the shipped graph");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cut = dir.path().join("cut.onnx");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("writes");
        assert!(matches!(read(&cut), Err(ReadError::Malformed(_))));

        let mut model = ModelProto::decode(bytes.as_slice()).expect("decodes");
        let tensor = &mut model.graph.as_mut().expect("a graph").initializer[0];
        tensor.raw_data.clear();
        tensor.data_location = Some(DataLocation::External as i32);
        tensor.external_data = vec![StringStringEntryProto {
            key: "location".into(),
            value: "weights.bin".into(),
        }];
        let name = tensor.name.clone();
        let elsewhere = dir.path().join("elsewhere.onnx");
        std::fs::write(&elsewhere, model.encode_to_vec()).expect("writes");
        match read(&elsewhere) {
            Err(ReadError::ExternalData(refused)) => assert_eq!(refused, name),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(read(dir.path()), Err(ReadError::Io(_))),
            "a directory"
        );
    }
}
