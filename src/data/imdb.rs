//! The aclImdb layout (Maas et al., 2011), as a directory tree or as the original `.tar.gz`.
//!
//! Reviews live in `[aclImdb/]<split>/<class>/<id>_<rating>.txt` with class `neg` (label 0)
//! or `pos` (label 1). Everything else (the README, `imdb.vocab`, the `*.feat` files, the
//! `urls_*.txt` lists and the unlabeled `train/unsup/` reviews) is ignored.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{Error, Example, Split};

/// The class folders and their labels.
const CLASSES: [(&str, u8); 2] = [("neg", 0), ("pos", 1)];

/// The top-level folder of the original release.
const TOP_FOLDER: &str = "aclImdb";

/// The most bytes reserved up front for one archive entry, whatever its header claims.
const MAX_PREALLOCATION: u64 = 1 << 20;

/// A review with the key that orders it: negatives first, then by numeric id.
struct Review {
    id: u64,
    example: Example,
}

/// Loads `split` from an aclImdb directory tree at `path` (or at `path/aclImdb`).
pub(super) fn load_dir(path: &Path, split: Split) -> Result<Vec<Example>, Error> {
    let split_dir = find_split_dir(path, split)?;
    let mut reviews = Vec::new();
    for (class, label) in CLASSES {
        let class_dir = split_dir.join(class);
        if !class_dir.is_dir() {
            // A missing class is reported by the caller, which checks both are present.
            continue;
        }
        let io_error = |source| Error::Io {
            path: class_dir.clone(),
            source,
        };
        for entry in fs::read_dir(&class_dir).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if !file_name.ends_with(".txt") {
                continue;
            }
            let relative = format!("{split}/{class}/{file_name}");
            let id = review_id(&file_name).ok_or_else(|| Error::BadFileName {
                path: path.to_owned(),
                entry: relative.clone(),
            })?;
            let file_path = entry.path();
            let bytes = fs::read(&file_path).map_err(|source| Error::Io {
                path: file_path,
                source,
            })?;
            let text = into_text(bytes, path, &relative)?;
            reviews.push(Review {
                id,
                example: Example {
                    text,
                    label,
                    source: relative,
                },
            });
        }
    }
    Ok(in_order(reviews))
}

/// Finds `<path>/<split>` or `<path>/aclImdb/<split>`.
fn find_split_dir(path: &Path, split: Split) -> Result<PathBuf, Error> {
    let roots = [path.to_owned(), path.join(TOP_FOLDER)];
    if let Some(dir) = roots
        .iter()
        .map(|root| root.join(split.as_str()))
        .find(|dir| dir.is_dir())
    {
        return Ok(dir);
    }
    let has_other_split = roots.iter().any(|root| {
        [Split::Train, Split::Test]
            .iter()
            .any(|split| root.join(split.as_str()).is_dir())
    });
    Err(if has_other_split {
        Error::EmptySplit {
            path: path.to_owned(),
            split,
        }
    } else {
        Error::NotImdbDirectory {
            path: path.to_owned(),
        }
    })
}

/// Loads `split` from an aclImdb `.tar.gz` at `path`, in one streaming pass.
///
/// The whole gzip stream is read, so that a truncated or corrupt archive is
/// reported even when the damage lies past the last review of `split`.
pub(super) fn load_archive(path: &Path, split: Split) -> Result<Vec<Example>, Error> {
    let archive_error = |source| Error::Archive {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut reviews = Vec::new();
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Some((label, relative)) = review_entry(&entry.path_bytes(), split) else {
            continue;
        };
        let id = relative
            .rsplit('/')
            .next()
            .and_then(review_id)
            .ok_or_else(|| Error::BadFileName {
                path: path.to_owned(),
                entry: relative.clone(),
            })?;
        let capacity = entry.size().min(MAX_PREALLOCATION);
        let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        entry.read_to_end(&mut bytes).map_err(archive_error)?;
        let text = into_text(bytes, path, &relative)?;
        reviews.push(Review {
            id,
            example: Example {
                text,
                label,
                source: relative,
            },
        });
    }
    // The tar reader stops at the end-of-archive marker; read on to the gzip
    // trailer so that its checksum and length are verified.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(archive_error)?;
    Ok(in_order(reviews))
}

/// If the archive entry at `entry_path` is a review of `split`, its label and its
/// path relative to the dataset root (`train/pos/123_9.txt`).
fn review_entry(entry_path: &[u8], split: Split) -> Option<(u8, String)> {
    let entry_path = std::str::from_utf8(entry_path).ok()?;
    let entry_path = entry_path.strip_prefix("./").unwrap_or(entry_path);
    let relative = entry_path
        .strip_prefix(TOP_FOLDER)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(entry_path);
    let mut parts = relative.split('/');
    let (Some(split_name), Some(class), Some(file_name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (_, label) = CLASSES.iter().find(|(name, _)| *name == class)?;
    (split_name == split.as_str() && file_name.ends_with(".txt"))
        .then(|| (*label, relative.to_owned()))
}

/// The numeric id of a review file named `<id>_<rating>.txt`.
fn review_id(file_name: &str) -> Option<u64> {
    let (id, rating) = file_name.strip_suffix(".txt")?.split_once('_')?;
    rating.parse::<u8>().ok()?;
    id.parse().ok()
}

/// The review's bytes as text, or [`Error::BadUtf8`] naming the entry.
fn into_text(bytes: Vec<u8>, path: &Path, entry: &str) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|_| Error::BadUtf8 {
        path: path.to_owned(),
        entry: entry.to_owned(),
    })
}

/// The examples ordered negatives first, then positives, each by numeric id.
fn in_order(mut reviews: Vec<Review>) -> Vec<Example> {
    reviews.sort_by_key(|review| (review.example.label, review.id));
    reviews.into_iter().map(|review| review.example).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{write_file, write_tar_gz};
    use crate::data::load;
    use crate::test_inputs::shared;

    fn sources(examples: &[Example]) -> Vec<&str> {
        examples.iter().map(|e| e.source.as_str()).collect()
    }

    #[test]
    fn real_archive_test_split() {
        let path = shared("data/imdb/aclImdb_v1_labeled.tar.gz");
        let start = std::time::Instant::now();
        let examples = load(&path, Split::Test).expect("load the real IMDB test split");
        eprintln!(
            "loaded {} test reviews in {:.2?}",
            examples.len(),
            start.elapsed()
        );
        assert_eq!(examples.len(), 25_000);
        let positives = examples.iter().filter(|e| e.label == 1).count();
        assert_eq!(positives, 12_500);
        for example in &examples {
            let folder = if example.label == 1 {
                "test/pos/"
            } else {
                "test/neg/"
            };
            assert!(example.source.starts_with(folder), "{}", example.source);
            assert!(!example.text.is_empty(), "{}", example.source);
        }
        assert_eq!(examples[0].source, "test/neg/0_2.txt");
        assert_eq!(examples[1].source, "test/neg/1_3.txt");
        assert_eq!(examples[12_500].source, "test/pos/0_10.txt");
        assert!(
            examples.iter().any(|e| e.text.contains("<br />")),
            "text is raw"
        );
    }

    fn write_tree(top: &Path) {
        for (name, text) in [
            ("train/pos/10_9.txt", "great"),
            ("train/pos/2_8.txt", "good"),
            ("train/neg/1_1.txt", "awful"),
            ("train/neg/0_3.txt", "bad"),
            ("train/unsup/5_0.txt", "unlabeled"),
            ("train/urls_pos.txt", "http://example.com"),
            ("train/labeledBow.feat", "0:1"),
            ("test/pos/0_7.txt", "fine"),
            ("test/neg/0_4.txt", "meh"),
            ("imdb.vocab", "the"),
        ] {
            write_file(&top.join(name), text.as_bytes());
        }
    }

    #[test]
    fn directory_in_both_layouts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let flat = dir.path().join("flat");
        write_tree(&flat);
        let nested = dir.path().join("nested");
        write_tree(&nested.join("aclImdb"));
        for root in [flat, nested] {
            let train = load(&root, Split::Train).expect("load train");
            assert_eq!(
                sources(&train),
                [
                    "train/neg/0_3.txt",
                    "train/neg/1_1.txt",
                    "train/pos/2_8.txt",
                    "train/pos/10_9.txt"
                ]
            );
            let labels: Vec<u8> = train.iter().map(|e| e.label).collect();
            assert_eq!(labels, [0, 0, 1, 1]);
            assert_eq!(train[3].text, "great");
            let test = load(&root, Split::Test).expect("load test");
            assert_eq!(sources(&test), ["test/neg/0_4.txt", "test/pos/0_7.txt"]);
        }
    }

    fn small_archive_entries() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("aclImdb/README", b"Large Movie Review Dataset"),
            ("aclImdb/imdb.vocab", b"the\nand\n"),
            ("aclImdb/test/neg/3_2.txt", b"dull<br />and long"),
            ("aclImdb/test/neg/12_1.txt", b"terrible"),
            ("aclImdb/test/pos/7_10.txt", b"wonderful"),
            ("aclImdb/test/labeledBow.feat", b"9 0:1"),
            ("aclImdb/train/neg/0_3.txt", b"bad"),
            ("aclImdb/train/pos/0_9.txt", b"good"),
            ("aclImdb/train/unsup/0_0.txt", b"unlabeled"),
            ("aclImdb/train/urls_pos.txt", b"http://example.com"),
        ]
    }

    #[test]
    fn archive_takes_only_the_requested_split() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("small.tar.gz");
        write_tar_gz(&path, &small_archive_entries());
        let test = load(&path, Split::Test).expect("load test");
        assert_eq!(
            sources(&test),
            ["test/neg/3_2.txt", "test/neg/12_1.txt", "test/pos/7_10.txt"]
        );
        assert_eq!(test[0].text, "dull<br />and long");
        assert_eq!(test.iter().map(|e| e.label).collect::<Vec<_>>(), [0, 0, 1]);
        let train = load(&path, Split::Train).expect("load train");
        assert_eq!(sources(&train), ["train/neg/0_3.txt", "train/pos/0_9.txt"]);
    }

    #[test]
    fn archive_without_top_folder_and_tgz_extension() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("small.TGZ");
        write_tar_gz(
            &path,
            &[
                ("./test/pos/1_8.txt", b"yes"),
                ("./test/neg/1_2.txt", b"no"),
            ],
        );
        let test = load(&path, Split::Test).expect("load test");
        assert_eq!(sources(&test), ["test/neg/1_2.txt", "test/pos/1_8.txt"]);
    }

    #[test]
    fn truncated_archive() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("whole.tar.gz");
        // Poorly compressible texts, so that every cut lands inside the review data.
        let mut state = 1_u64;
        let entries: Vec<(String, Vec<u8>)> = (0..40)
            .map(|id| {
                let class = if id % 2 == 0 { "pos" } else { "neg" };
                let text: String = (0..300)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1);
                        format!("{:x} ", state >> 40)
                    })
                    .collect();
                (
                    format!("aclImdb/test/{class}/{id}_5.txt"),
                    text.into_bytes(),
                )
            })
            .collect();
        let borrowed: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_slice()))
            .collect();
        write_tar_gz(&path, &borrowed);
        let bytes = fs::read(&path).expect("read archive");
        for cut in [10, bytes.len() / 2, bytes.len() - 4] {
            let truncated = dir.path().join(format!("cut{cut}.tar.gz"));
            write_file(&truncated, &bytes[..cut]);
            for split in [Split::Test, Split::Train] {
                match load(&truncated, split) {
                    Err(Error::Archive { path, .. }) => assert_eq!(path, truncated),
                    Ok(examples) => panic!("cut at {cut}, {split}: {} examples", examples.len()),
                    Err(other) => panic!("cut at {cut}, {split}: expected Archive, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn not_gzip_is_an_archive_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fake.tar.gz");
        write_file(&path, b"this is not a gzip stream at all");
        let error = load(&path, Split::Test).expect_err("garbage archive");
        assert!(matches!(error, Error::Archive { .. }), "{error:?}");
    }

    #[test]
    fn bad_utf8_names_the_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = dir.path().join("bad.tar.gz");
        write_tar_gz(
            &archive,
            &[
                ("aclImdb/test/neg/1_2.txt", b"fine"),
                ("aclImdb/test/pos/4_9.txt", b"caf\xe9"),
            ],
        );
        let tree = dir.path().join("tree");
        write_file(&tree.join("test/neg/1_2.txt"), b"fine");
        write_file(&tree.join("test/pos/4_9.txt"), b"caf\xe9");
        for path in [archive, tree] {
            match load(&path, Split::Test) {
                Err(Error::BadUtf8 { path: at, entry }) => {
                    assert_eq!(at, path);
                    assert_eq!(entry, "test/pos/4_9.txt");
                }
                other => panic!("expected BadUtf8, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_file_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_file(&dir.path().join("test/neg/1_2.txt"), b"fine");
        write_file(&dir.path().join("test/pos/best.txt"), b"great");
        match load(dir.path(), Split::Test) {
            Err(Error::BadFileName { entry, .. }) => assert_eq!(entry, "test/pos/best.txt"),
            other => panic!("expected BadFileName, got {other:?}"),
        }
    }

    #[test]
    fn empty_split_missing_class_and_foreign_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = dir.path().join("tree");
        write_file(&tree.join("train/pos/1_9.txt"), b"good");
        let error = load(&tree, Split::Test).expect_err("no test split");
        assert!(
            matches!(
                error,
                Error::EmptySplit {
                    split: Split::Test,
                    ..
                }
            ),
            "{error:?}"
        );
        let error = load(&tree, Split::Train).expect_err("no negatives");
        assert!(
            matches!(
                error,
                Error::MissingClass {
                    label: 0,
                    split: Split::Train,
                    ..
                }
            ),
            "{error:?}"
        );
        let archive = dir.path().join("train_only.tar.gz");
        write_tar_gz(&archive, &[("aclImdb/train/neg/1_2.txt", b"bad")]);
        let error = load(&archive, Split::Test).expect_err("no test entries");
        assert!(matches!(error, Error::EmptySplit { .. }), "{error:?}");
        let error = load(&archive, Split::Train).expect_err("no positives");
        assert!(
            matches!(error, Error::MissingClass { label: 1, .. }),
            "{error:?}"
        );
        let foreign = dir.path().join("foreign");
        write_file(&foreign.join("notes.txt"), b"hello");
        let error = load(&foreign, Split::Train).expect_err("not aclImdb");
        assert!(matches!(error, Error::NotImdbDirectory { .. }), "{error:?}");
    }

    #[test]
    fn archive_entry_paths() {
        let entry = |path: &str, split| review_entry(path.as_bytes(), split);
        let expected = Some((1, "test/pos/1_8.txt".to_owned()));
        assert_eq!(entry("aclImdb/test/pos/1_8.txt", Split::Test), expected);
        assert_eq!(entry("./aclImdb/test/pos/1_8.txt", Split::Test), expected);
        assert_eq!(entry("test/pos/1_8.txt", Split::Test), expected);
        assert_eq!(
            entry("aclImdb/train/neg/2_1.txt", Split::Train),
            Some((0, "train/neg/2_1.txt".to_owned()))
        );
        assert_eq!(entry("aclImdb/test/pos/1_8.txt", Split::Train), None);
        assert_eq!(entry("aclImdb/train/unsup/1_0.txt", Split::Train), None);
        assert_eq!(entry("aclImdb/train/urls_pos.txt", Split::Train), None);
        assert_eq!(entry("aclImdb/train/pos/extra/1_8.txt", Split::Train), None);
        assert_eq!(entry("aclImdb/train/pos/1_8.feat", Split::Train), None);
        assert_eq!(entry("other/train/pos/1_8.txt", Split::Train), None);
    }

    #[test]
    fn review_ids() {
        assert_eq!(review_id("123_9.txt"), Some(123));
        assert_eq!(review_id("0_10.txt"), Some(0));
        assert_eq!(review_id("123.txt"), None);
        assert_eq!(review_id("a_9.txt"), None);
        assert_eq!(review_id("1_x.txt"), None);
        assert_eq!(review_id("1_9.text"), None);
    }
}
