//! PyTorch reader tests: hand-built archives for the corner cases, and never-panic loops over
//! truncated and corrupted copies of the shared fixtures.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::*;
use crate::test_inputs::shared;

fn keep_all(_: &str) -> bool {
    true
}

/// Appends a `BINUNICODE` opcode.
fn push_str(pickle: &mut Vec<u8>, text: &str) {
    pickle.push(b'X');
    pickle.extend((text.len() as u32).to_le_bytes());
    pickle.extend(text.as_bytes());
}

/// `{name: Parameter(tensor)}` as `torch.save` pickles it (protocol 2), the tensor being
/// `storage[offset:]` viewed with `shape` and `stride`.
fn state_dict_pickle(
    name: &str,
    storage_class: &str,
    numel: u8,
    offset: u8,
    shape: &[u8],
    stride: &[u8],
) -> Vec<u8> {
    let mut pickle = vec![0x80, 2, b'}'];
    push_str(&mut pickle, name);
    pickle.extend(b"ctorch._utils\n_rebuild_parameter\n(ctorch._utils\n_rebuild_tensor_v2\n((");
    push_str(&mut pickle, "storage");
    pickle.extend(format!("ctorch\n{storage_class}\n").as_bytes());
    push_str(&mut pickle, "0");
    push_str(&mut pickle, "cpu");
    pickle.extend([b'K', numel, b't', b'Q', b'K', offset, b'(']);
    for &size in shape {
        pickle.extend([b'K', size]);
    }
    pickle.extend(b"t(");
    for &step in stride {
        pickle.extend([b'K', step]);
    }
    pickle.extend(b"t\x89ccollections\nOrderedDict\n)RtR\x88ccollections\nOrderedDict\n)RtRs.");
    pickle
}

fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut zip = ZipWriter::new(File::create(path).unwrap());
    for (name, bytes) in entries {
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn zip_format_gathers_a_transposed_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_model.bin");
    let pickle = state_dict_pickle("w", "FloatStorage", 7, 1, &[3, 2], &[1, 3]);
    let storage = f32_bytes(&[9.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    write_zip(
        &path,
        &[
            ("archive/data.pkl", &pickle),
            ("archive/byteorder", b"little"),
            ("archive/data/0", &storage),
        ],
    );

    let file = read(&path, &keep_all).unwrap();
    assert_eq!(file.keys, ["w"]);
    let (name, tensor) = &file.tensors[0];
    assert_eq!(name, "w");
    assert_eq!(
        tensor,
        &Tensor {
            shape: vec![3, 2],
            data: vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        }
    );
}

#[test]
fn zip_format_converts_half_precision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_model.bin");
    let pickle = state_dict_pickle("h", "HalfStorage", 2, 0, &[2], &[1]);
    let storage: Vec<u8> = [0.5f32, -4.0]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    write_zip(&path, &[("m/data.pkl", &pickle), ("m/data/0", &storage)]);
    assert_eq!(
        read(&path, &keep_all).unwrap().tensors[0].1.data,
        [0.5, -4.0]
    );
}

#[test]
fn zip_format_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_model.bin");
    let pickle = state_dict_pickle("w", "FloatStorage", 4, 0, &[2, 2], &[2, 1]);
    let storage = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);

    write_zip(&path, &[("archive/data.pkl", b"\x80\x02}q\x00(\xff")]);
    let error = read(&path, &keep_all).unwrap_err();
    let Error::Pickle {
        path: entry,
        offset,
        reason,
    } = &error
    else {
        panic!("{error:?}")
    };
    assert!(
        entry.ends_with("pytorch_model.bin/archive/data.pkl"),
        "{error}"
    );
    assert_eq!(*offset, 6, "{reason}");

    write_zip(&path, &[("archive/data.pkl", &pickle)]);
    let error = read(&path, &keep_all).unwrap_err();
    assert!(
        matches!(&error, Error::MissingArchiveEntry { entry, .. } if entry == "archive/data/0"),
        "{error}"
    );

    write_zip(
        &path,
        &[
            ("archive/data.pkl", &pickle),
            ("archive/data/0", &storage[..12]),
        ],
    );
    let error = read(&path, &keep_all).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::StorageSize {
                expected: 16,
                found: 12,
                ..
            }
        ),
        "{error}"
    );

    write_zip(
        &path,
        &[("archive/byteorder", b"big"), ("archive/data.pkl", &pickle)],
    );
    assert!(matches!(
        read(&path, &keep_all),
        Err(Error::BigEndian { .. })
    ));

    write_zip(&path, &[("archive/version", b"3\n")]);
    assert!(matches!(
        read(&path, &keep_all),
        Err(Error::MissingArchiveEntry { .. })
    ));

    let complex = state_dict_pickle("c", "ComplexFloatStorage", 1, 0, &[1], &[1]);
    write_zip(
        &path,
        &[("archive/data.pkl", &complex), ("archive/data/0", &storage)],
    );
    let error = read(&path, &keep_all).unwrap_err();
    assert!(
        matches!(&error, Error::UnsupportedDType { dtype, .. } if dtype == "torch.ComplexFloatStorage"),
        "{error}"
    );

    let past_end = state_dict_pickle("w", "FloatStorage", 4, 1, &[2, 2], &[2, 1]);
    write_zip(
        &path,
        &[
            ("archive/data.pkl", &past_end),
            ("archive/data/0", &storage),
        ],
    );
    let error = read(&path, &keep_all).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::TensorOutOfBounds {
                needed: 5,
                available: 4,
                ..
            }
        ),
        "{error}"
    );

    let not_a_dict = b"\x80\x02]q\x00.";
    write_zip(&path, &[("archive/data.pkl", not_a_dict)]);
    let error = read(&path, &keep_all).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: the state dict is a list of 0, expected a dict",
            path.display()
        )
    );
}

/// Lends zeroed storages of any requested size (up to 64 MiB), so that corrupted pickles reach
/// tensor materialisation without a zip archive around them.
struct ZeroStorages(Vec<u8>);

impl StorageSource for ZeroStorages {
    fn bytes(&mut self, key: &str, len: usize) -> Result<&[u8], Error> {
        if len > 64 << 20 {
            let path = Path::new("zeros").to_path_buf();
            return Err(Error::StorageSize {
                path,
                key: key.into(),
                expected: len as u64,
                found: 0,
            });
        }
        if self.0.len() < len {
            self.0.resize(len, 0);
        }
        Ok(&self.0)
    }
}

/// xorshift64: deterministic positions and values for the corruption loops.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Small tensors only, so each iteration stays cheap.
fn keep_small(key: &str) -> bool {
    !key.contains("word_embeddings") && !key.contains("position_embeddings")
}

#[test]
fn corrupted_legacy_files_never_panic() {
    let fixture = shared("fixtures/tinybert-format-legacy/pytorch_model.bin");
    let mut bytes = std::fs::read(&fixture).unwrap();
    let path = Path::new("legacy.bin");
    legacy::read(path, &bytes, &keep_small).unwrap();
    // The five pickles end a little after 6 KB; past them come the storage records.
    let pickles_end = 6041;
    let (mut successes, mut failures) = (0, 0);
    let mut tally = |result: Result<FileTensors, Error>| match result {
        Ok(_) => successes += 1,
        Err(error) => {
            failures += 1;
            assert!(!error.to_string().is_empty());
        }
    };

    for len in (0..pickles_end + 64)
        .step_by(3)
        .chain((pickles_end..bytes.len()).step_by(4099))
    {
        tally(legacy::read(path, &bytes[..len], &keep_small));
    }
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        // Mostly the pickles, sometimes the storage records (their u64 element counts).
        let position = if round % 10 == 0 {
            noise.below(bytes.len())
        } else {
            noise.below(pickles_end)
        };
        let original = bytes[position];
        bytes[position] = if round % 2 == 0 {
            original ^ (1 << noise.below(8))
        } else {
            noise.next() as u8
        };
        tally(legacy::read(path, &bytes, &keep_small));
        bytes[position] = original;
    }
    assert!(
        successes > 0 && failures > 0,
        "{successes} loads, {failures} errors"
    );
}

#[test]
fn corrupted_zip_pickles_never_panic() {
    let fixture = shared("fixtures/tinybert-format/pytorch_model.bin");
    let mut archive = zip::ZipArchive::new(File::open(fixture).unwrap()).unwrap();
    let mut pickle = Vec::new();
    archive
        .by_name("pytorch_model/data.pkl")
        .unwrap()
        .read_to_end(&mut pickle)
        .unwrap();
    let path = Path::new("data.pkl");
    let mut storages = ZeroStorages(Vec::new());
    let mut decode = |bytes: &[u8]| -> Result<FileTensors, Error> {
        let state = pickle::load(bytes, 0).map_err(|e| pickle_error(path.to_path_buf(), e))?;
        read_state_dict(path, &state, &keep_small, &mut storages)
    };
    assert_eq!(decode(&pickle).unwrap().keys.len(), 41);

    for len in 0..pickle.len() {
        assert!(
            decode(&pickle[..len]).is_err(),
            "a {len}-byte prefix decoded"
        );
    }
    let mut noise = Noise(0x0123_4567_89ab_cdef);
    for position in 0..pickle.len() {
        let original = pickle[position];
        pickle[position] ^= 1 << noise.below(8);
        let _ = decode(&pickle);
        pickle[position] = noise.next() as u8;
        let _ = decode(&pickle);
        pickle[position] = original;
    }
}
