//! Datasets on the Hugging Face Hub: `--data imdb` (the original IMDB reviews,
//! `stanfordnlp/imdb`) or `--data hf:<owner/name>[@revision]` for another binary sentiment
//! dataset stored as parquet with text and label columns.
//!
//! A split's files are the parquet files named `<split>-*.parquet` or `<split>.parquet`, or
//! lying in a `<split>/` folder (the Hub's own layouts), downloaded once into the Hugging Face
//! cache. With `HF_HUB_OFFLINE=1`, or when the Hub cannot be reached, the cached files of the
//! revision serve.

use std::fs;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::Api;
use hf_hub::{Cache, Repo, RepoType};

use super::parquet::load_parquet;
use super::{Error, Example, Split};
use crate::hub::{api, is_offline, is_repo_id, split_revision};

/// `--data imdb`: the IMDB dataset's repository on the Hub.
pub const IMDB: &str = "stanfordnlp/imdb";

/// The prefix of `--data hf:<owner/name>[@revision]`.
const PREFIX: &str = "hf:";

/// A dataset repository on the Hub, named by `--data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HubDataset {
    /// `owner/name`.
    id: String,
    /// Branch, tag or commit; `None` is `main`.
    revision: Option<String>,
}

impl HubDataset {
    /// `imdb`, or `hf:` followed by a repository id and an optional `@revision`; `None` for
    /// anything else (a path).
    pub(super) fn parse(spec: &str) -> Option<HubDataset> {
        let spec = if spec == "imdb" {
            IMDB
        } else {
            spec.strip_prefix(PREFIX)?
        };
        let (id, revision) = split_revision(spec).filter(|(id, _)| is_repo_id(id))?;
        Some(HubDataset {
            id: id.to_string(),
            revision: revision.map(str::to_string),
        })
    }

    fn repo(&self) -> Repo {
        match &self.revision {
            Some(revision) => {
                Repo::with_revision(self.id.clone(), RepoType::Dataset, revision.clone())
            }
            None => Repo::new(self.id.clone(), RepoType::Dataset),
        }
    }

    /// Loads `split`: its parquet files in name order, downloaded first if needed.
    pub(super) fn load(&self, split: Split) -> Result<Vec<Example>, Error> {
        let cache = Cache::from_env();
        let files = if is_offline() {
            self.cached_files(&cache, split)?
        } else {
            let api = api(&cache).map_err(|source| self.unavailable(source))?;
            self.download(&api, &cache, split)?
        };
        let mut examples = Vec::new();
        for file in files {
            examples.extend(load_parquet(&file)?);
        }
        Ok(examples)
    }

    /// Fetches the split's files (each once); when the Hub cannot be reached, the cached files
    /// of the revision serve.
    fn download(&self, api: &Api, cache: &Cache, split: Split) -> Result<Vec<PathBuf>, Error> {
        let remote = api.repo(self.repo());
        let listing = match remote.info() {
            Ok(info) => info.siblings,
            Err(error) => {
                return self
                    .cached_files(cache, split)
                    .map_err(|_| self.unavailable(error))
            }
        };
        let names: Vec<&str> = listing.iter().map(|s| s.rfilename.as_str()).collect();
        let files = split_files(&names, split);
        if files.is_empty() {
            return Err(Error::HubNoSplit {
                id: self.id.clone(),
                split,
                parquet: names
                    .iter()
                    .filter(|name| name.ends_with(".parquet"))
                    .map(|name| name.to_string())
                    .collect(),
            });
        }
        files
            .into_iter()
            .map(|file| remote.get(file).map_err(|source| self.unavailable(source)))
            .collect()
    }

    /// The split's files in the local cache: the snapshot of the revision (a branch or tag
    /// resolved through `refs/`, or a commit).
    fn cached_files(&self, cache: &Cache, split: Split) -> Result<Vec<PathBuf>, Error> {
        let offline = || Error::HubOffline {
            id: self.id.clone(),
            split,
        };
        let repo = self.repo();
        let folder = cache.path().join(repo.folder_name());
        let revision = repo.revision();
        let commit = fs::read_to_string(folder.join("refs").join(revision))
            .map(|commit| commit.trim().to_string())
            .unwrap_or_else(|_| revision.to_string());
        let snapshot = folder.join("snapshots").join(commit);
        let mut names = Vec::new();
        walk(&snapshot, &snapshot, &mut names);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let files: Vec<PathBuf> = split_files(&names, split)
            .into_iter()
            .map(|name| snapshot.join(name))
            .collect();
        if files.is_empty() {
            Err(offline())
        } else {
            Ok(files)
        }
    }

    fn unavailable(&self, source: hf_hub::api::sync::ApiError) -> Error {
        Error::HubUnavailable {
            id: self.id.clone(),
            source: Box::new(source),
        }
    }
}

/// The parquet files of `split` among a repository's `files` (paths with `/`), sorted.
fn split_files<'a>(files: &[&'a str], split: Split) -> Vec<&'a str> {
    let split = split.as_str();
    let mut found: Vec<&str> = files
        .iter()
        .copied()
        .filter(|path| {
            let Some(stem) = path.strip_suffix(".parquet") else {
                return false;
            };
            let mut parts = stem.rsplit('/');
            let name = parts.next().unwrap_or_default();
            name == split
                || name.starts_with(&format!("{split}-"))
                || parts.any(|folder| folder == split)
        })
        .collect();
    found.sort_unstable();
    found
}

/// Collects the paths of the files below `dir`, relative to `root`, with `/` separators.
fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, found);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let parts: Vec<_> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect();
            found.push(parts.join("/"));
        }
    }
}

#[cfg(test)]
mod tests {
    use ::parquet::basic::Compression;
    use hf_hub::api::sync::ApiBuilder;

    use super::*;
    use crate::data::fixtures::{write_parquet, Column};

    #[test]
    fn specs() {
        let dataset = |id: &str, revision: Option<&str>| {
            Some(HubDataset {
                id: id.to_string(),
                revision: revision.map(str::to_string),
            })
        };
        assert_eq!(HubDataset::parse("imdb"), dataset(IMDB, None));
        assert_eq!(
            HubDataset::parse("hf:stanfordnlp/sst2"),
            dataset("stanfordnlp/sst2", None)
        );
        assert_eq!(
            HubDataset::parse("hf:rotten_tomatoes@v2"),
            dataset("rotten_tomatoes", Some("v2"))
        );
        for path in [
            "IMDB",
            "data/imdb",
            "hf:",
            "hf:a/b/c",
            "hf:a@",
            "reviews.csv",
        ] {
            assert_eq!(HubDataset::parse(path), None, "{path}");
        }
    }

    #[test]
    fn split_files_follow_the_hub_layouts() {
        let files = [
            "README.md",
            "plain_text/unsupervised-00000-of-00001.parquet",
            "plain_text/test-00000-of-00001.parquet",
            "plain_text/train-00001-of-00002.parquet",
            "plain_text/train-00000-of-00002.parquet",
            "default/test/0000.parquet",
            "data/test.parquet",
            "trainer.parquet",
            "train/notes.txt",
        ];
        assert_eq!(
            split_files(&files, Split::Train),
            [
                "plain_text/train-00000-of-00002.parquet",
                "plain_text/train-00001-of-00002.parquet"
            ]
        );
        assert_eq!(
            split_files(&files, Split::Test),
            [
                "data/test.parquet",
                "default/test/0000.parquet",
                "plain_text/test-00000-of-00001.parquet"
            ]
        );
    }

    /// A cache laid out as hf-hub and `huggingface_hub` leave it after a download of `main`.
    fn cached_imdb(cache: &Path) {
        let folder = cache.join("datasets--stanfordnlp--imdb");
        let commit = "e6281661ce1c48d982bc483cf8a173c1bbeb5d31";
        fs::create_dir_all(folder.join("refs")).expect("refs");
        fs::write(folder.join("refs/main"), commit).expect("ref");
        let dir = folder.join("snapshots").join(commit).join("plain_text");
        fs::create_dir_all(&dir).expect("snapshot");
        let schema = "message schema { optional binary text (STRING); optional int64 label; }";
        for (split, texts) in [
            ("train", ["Great.", "Awful."]),
            ("test", ["Fine film.", "Boring."]),
        ] {
            let columns = [
                Column::Bytes(texts.iter().map(|t| Some(*t)).collect()),
                Column::Long(vec![Some(1), Some(0)]),
            ];
            let path = dir.join(format!("{split}-00000-of-00001.parquet"));
            write_parquet(&path, schema, &columns, 10, Compression::SNAPPY);
        }
    }

    /// A client of a hub that refuses at once: port 9 (discard) on loopback, so tests fail fast
    /// and offline.
    fn unreachable_hub(cache: &Cache) -> Api {
        ApiBuilder::from_cache(cache.clone())
            .with_endpoint("http://127.0.0.1:9".to_string())
            .with_progress(false)
            .build()
            .expect("client")
    }

    #[test]
    fn cached_files_serve_when_the_hub_is_unreachable() {
        let cache = tempfile::tempdir().expect("temp dir");
        cached_imdb(cache.path());
        let cache = Cache::new(cache.path().to_path_buf());
        let api = unreachable_hub(&cache);
        let imdb = HubDataset::parse("imdb").expect("spec");
        let files = imdb
            .download(&api, &cache, Split::Test)
            .expect("cached test split");
        let examples: Vec<Example> = files
            .iter()
            .flat_map(|file| load_parquet(file).expect("cached parquet"))
            .collect();
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["Fine film.", "Boring."]);
        assert_eq!(examples[0].source, "test-00000-of-00001.parquet:1");
    }

    #[test]
    fn unreachable_hub_without_a_cache_says_to_pass_a_local_copy() {
        let cache = tempfile::tempdir().expect("temp dir");
        let cache = Cache::new(cache.path().to_path_buf());
        let api = unreachable_hub(&cache);
        let imdb = HubDataset::parse("imdb").expect("spec");
        let error = imdb
            .download(&api, &cache, Split::Train)
            .expect_err("no hub, no cache");
        let message = error.to_string();
        assert!(matches!(error, Error::HubUnavailable { .. }), "{message}");
        assert!(
            message.starts_with(
                "cannot download dataset \"stanfordnlp/imdb\" from the Hugging Face Hub ("
            ),
            "{message}"
        );
        assert!(
            message.contains("pass a local copy with --data"),
            "{message}"
        );
        let error = imdb
            .cached_files(&cache, Split::Train)
            .expect_err("empty cache");
        assert!(
            error.to_string().starts_with(
                "HF_HUB_OFFLINE is set and the Hugging Face cache has no train parquet files of \"stanfordnlp/imdb\""
            ),
            "{error}"
        );
    }
}
