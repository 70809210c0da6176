//! The one error type of the `checkpoint` module.
//!
//! Every variant names the file (or hub id) involved and, where it applies, the tensor or key
//! and what was expected versus found, so a message alone tells the user what to fix.

use std::path::PathBuf;

/// Everything that can go wrong while resolving, reading or checking a BERT checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The checkpoint path does not exist or is not a directory.
    #[error("{}: not a directory; a checkpoint is a directory holding config.json and weights", path.display())]
    NotADirectory {
        /// The path that was given.
        path: PathBuf,
    },

    /// The checkpoint directory has no `config.json`.
    #[error("{}: not found; a BERT checkpoint directory needs its config.json", path.display())]
    MissingConfig {
        /// Where `config.json` was looked for.
        path: PathBuf,
    },

    /// A file exists but could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `config.json` is not valid JSON or has a field of the wrong type.
    #[error("{}: not a valid BERT config", path.display())]
    ParseConfig {
        /// The config file.
        path: PathBuf,
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// `config.json` parsed but describes a model this crate cannot build.
    #[error("config.json: {field} is {found}, expected {expected}")]
    InvalidConfig {
        /// The offending config key, as spelled in `config.json`.
        field: &'static str,
        /// What a valid value looks like.
        expected: String,
        /// The value found.
        found: String,
    },

    /// The checkpoint directory holds no weights file in a supported format.
    #[error(
        "{}: no model.safetensors or pytorch_model.bin{}; supported weights are model.safetensors \
         and pytorch_model.bin (PyTorch zip or legacy format): re-save the model with \
         transformers' save_pretrained()",
        dir.display(),
        found_formats(found)
    )]
    NoWeights {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Weight files of unsupported formats that are present (`tf_model.h5`, ...).
        found: Vec<String>,
    },

    /// A safetensors file is corrupt (bad header, truncated data, ...), or tensors to write
    /// do not fill their shapes.
    #[error("{}: invalid safetensors data", path.display())]
    Safetensors {
        /// The weights file.
        path: PathBuf,
        /// The safetensors error.
        #[source]
        source: safetensors::SafeTensorError,
    },

    /// `pytorch_model.bin` starts like a zip archive but cannot be read as one.
    #[error("{}: corrupt PyTorch zip archive", path.display())]
    Zip {
        /// The weights file.
        path: PathBuf,
        /// The zip error.
        #[source]
        source: zip::result::ZipError,
    },

    /// `pytorch_model.bin` is neither a zip archive nor a legacy PyTorch pickle stream.
    #[error("{}: not a PyTorch checkpoint (neither a zip archive nor a legacy pickle stream)", path.display())]
    NotTorchFile {
        /// The weights file.
        path: PathBuf,
    },

    /// An entry a PyTorch zip archive must contain is absent.
    #[error("{}: PyTorch archive has no entry {entry}", path.display())]
    MissingArchiveEntry {
        /// The weights file.
        path: PathBuf,
        /// The missing entry (`<prefix>/data.pkl`, `<prefix>/data/<key>`).
        entry: String,
    },

    /// A pickle inside a PyTorch checkpoint is malformed or uses an unsupported opcode.
    #[error("{}: malformed pickle at byte {offset}: {reason}", path.display())]
    Pickle {
        /// The weights file, or `<file>/<entry>` for a pickle inside a zip archive.
        path: PathBuf,
        /// Byte offset of the offending opcode within that file or entry.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },

    /// A pickle decoded, but an object in it is not what a PyTorch state dict holds.
    #[error("{}: {what} is {found}, expected {expected}", path.display())]
    UnexpectedObject {
        /// The weights file.
        path: PathBuf,
        /// Which object (`the state dict`, `tensor bert.pooler.dense.weight`, ...).
        what: String,
        /// What PyTorch writes there.
        expected: &'static str,
        /// A short description of what was found.
        found: String,
    },

    /// A storage's raw bytes are shorter than the storage it is declared to be.
    #[error("{}: storage {key} holds {found} bytes, expected {expected}", path.display())]
    StorageSize {
        /// The weights file.
        path: PathBuf,
        /// The storage key.
        key: String,
        /// Bytes the pickle declares.
        expected: u64,
        /// Bytes present.
        found: u64,
    },

    /// A tensor's offset, shape and strides reach outside its storage.
    #[error(
        "{}: tensor {name} needs {needed} elements of its storage, which holds {available}",
        path.display()
    )]
    TensorOutOfBounds {
        /// The weights file.
        path: PathBuf,
        /// The tensor, as named in the file.
        name: String,
        /// Elements the view spans (or holds, for overlapping views).
        needed: u64,
        /// Elements in the storage.
        available: u64,
    },

    /// A tensor's element type cannot be converted to f32.
    #[error("{}: tensor {name} has dtype {dtype}, which cannot be read as f32", path.display())]
    UnsupportedDType {
        /// The weights file.
        path: PathBuf,
        /// The tensor, as named in the file.
        name: String,
        /// The dtype as the file spells it.
        dtype: String,
    },

    /// The checkpoint was written on a big-endian machine.
    #[error("{}: saved in big-endian byte order; re-save it on a little-endian machine", path.display())]
    BigEndian {
        /// The weights file.
        path: PathBuf,
    },

    /// Two keys of the file map to the same canonical tensor name.
    #[error("{}: keys {first} and {second} both map to tensor {name}", path.display())]
    DuplicateTensor {
        /// The weights file.
        path: PathBuf,
        /// The canonical name.
        name: String,
        /// The first key seen.
        first: String,
        /// The second key seen.
        second: String,
    },

    /// A tensor's shape differs from what `config.json` implies.
    #[error("{}: tensor {name} is {found:?}, config.json implies {expected:?}", path.display())]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The canonical tensor name.
        name: String,
        /// The shape implied by `config.json`.
        expected: Vec<usize>,
        /// The shape in the weights file.
        found: Vec<usize>,
    },

    /// `config.json`'s layer count differs from the layers the weights hold.
    #[error("{}: config.json has num_hidden_layers = {config} but the weights hold {weights} encoder layers", path.display())]
    LayerCount {
        /// The weights file.
        path: PathBuf,
        /// `num_hidden_layers`.
        config: usize,
        /// Layers `encoder.layer.N.…` in the weights (the highest N + 1).
        weights: usize,
    },

    /// A required tensor is absent.
    #[error("{}: tensor {name} not found", path.display())]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The canonical tensor name.
        name: String,
    },

    /// No BERT encoder tensor was found under any known naming scheme.
    #[error(
        "{}: no BERT encoder tensors found (keys look like {sample_keys:?}); expected keys such \
         as embeddings.word_embeddings.weight, optionally prefixed with bert.",
        path.display()
    )]
    UnknownKeyLayout {
        /// The weights file.
        path: PathBuf,
        /// A few keys that the file does contain.
        sample_keys: Vec<String>,
    },

    /// `--base` is neither an existing directory nor a well-formed hub id.
    #[error(
        "\"{base}\" is neither a local directory nor a Hugging Face Hub id (owner/name[@revision])"
    )]
    BaseNotFound {
        /// The string given.
        base: String,
    },

    /// Downloading from the Hugging Face Hub failed (no network, unknown repository, ...).
    #[error(
        "cannot download \"{id}\" from the Hugging Face Hub (pass a local directory with --base)"
    )]
    HubUnavailable {
        /// The hub id, without revision.
        id: String,
        /// What hf-hub reported.
        #[source]
        source: Box<hf_hub::api::sync::ApiError>,
    },

    /// `HF_HUB_OFFLINE` is set and the local hub cache lacks a file.
    #[error(
        "HF_HUB_OFFLINE is set and \"{id}\" has no {file} in the local Hugging Face cache: pass a \
         local directory with --base"
    )]
    HubOffline {
        /// The hub id, without revision.
        id: String,
        /// The file that is not cached.
        file: String,
    },
}

fn found_formats(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (found {})", found.join(", "))
    }
}
