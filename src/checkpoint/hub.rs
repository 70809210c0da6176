//! Resolving `--base`: a local checkpoint directory, or a Hugging Face Hub model id.
//!
//! Hub downloads go through [`crate::hub`]'s client into the standard Hugging Face cache; files
//! already cached for the revision are not fetched again. `HF_HUB_OFFLINE=1` reads the cache
//! only, as the Python `huggingface_hub` does.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::Api;
use hf_hub::{Cache, Repo, RepoType};

use super::Error;
use crate::hub::{api, is_offline, is_repo_id, split_revision};

/// The one file a checkpoint repository must have.
const CONFIG_FILE: &str = "config.json";
/// Tokenizer files, fetched where the repository has them.
const TOKENIZER_FILES: [&str; 3] = ["vocab.txt", "tokenizer.json", "tokenizer_config.json"];
/// Weight files in order of preference; the first one the repository has is fetched.
const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// A base model resolved to a local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBase {
    /// Directory holding `config.json`, the weights and the tokenizer files.
    pub dir: PathBuf,
    /// The hub id (without revision), or the directory exactly as given.
    pub id: String,
    /// The revision after `@` in a hub id (branch, tag or commit); `None` means `main`.
    pub revision: Option<String>,
}

/// Resolves `base` to a local checkpoint directory.
///
/// An existing directory is used as is. Otherwise `base` must be a hub id, `owner/name` or
/// `name`, optionally followed by `@revision`; `config.json`, the tokenizer files that exist,
/// and `model.safetensors` (else `pytorch_model.bin`) are downloaded to the Hugging Face cache.
///
/// Errors: [`Error::BaseNotFound`] if `base` is neither; [`Error::HubUnavailable`] if the hub
/// cannot be reached or lacks the repository; [`Error::HubOffline`] if `HF_HUB_OFFLINE` is set
/// and the cache lacks a file.
pub fn resolve_base(base: &str) -> Result<ResolvedBase, Error> {
    if Path::new(base).is_dir() {
        return Ok(ResolvedBase {
            dir: PathBuf::from(base),
            id: base.to_string(),
            revision: None,
        });
    }
    let Some((id, revision)) = split_revision(base).filter(|(id, _)| is_repo_id(id)) else {
        return Err(Error::BaseNotFound {
            base: base.to_string(),
        });
    };
    let revision = revision.map(str::to_string);
    let repo = match &revision {
        Some(revision) => Repo::with_revision(id.to_string(), RepoType::Model, revision.clone()),
        None => Repo::model(id.to_string()),
    };
    let cache = Cache::from_env();
    let dir = if is_offline() {
        from_cache(&cache, id, repo)?
    } else {
        let api = api(&cache).map_err(|source| Error::HubUnavailable {
            id: id.to_string(),
            source: Box::new(source),
        })?;
        download(&api, &cache, id, repo)?
    };
    Ok(ResolvedBase {
        dir,
        id: id.to_string(),
        revision,
    })
}

/// Fetches the checkpoint files of `repo`; returns the snapshot directory holding them.
///
/// When the hub cannot be reached, a complete earlier download in `cache` still serves.
fn download(api: &Api, cache: &Cache, id: &str, repo: Repo) -> Result<PathBuf, Error> {
    let unavailable = |source| Error::HubUnavailable {
        id: id.to_string(),
        source: Box::new(source),
    };
    let remote = api.repo(repo.clone());
    let listing = match remote.info() {
        Ok(info) => info.siblings,
        Err(error) => return from_cache(cache, id, repo).map_err(|_| unavailable(error)),
    };
    let is_listed = |file: &str| listing.iter().any(|sibling| sibling.rfilename == file);
    // Without either weight file the directory is still returned: `Checkpoint::load` then
    // says which formats are supported.
    let weights = WEIGHT_FILES.into_iter().find(|file| is_listed(file));
    let optional = TOKENIZER_FILES.into_iter().filter(|file| is_listed(file));
    let config = remote.get(CONFIG_FILE).map_err(unavailable)?;
    for file in optional.chain(weights) {
        remote.get(file).map_err(unavailable)?;
    }
    Ok(snapshot_dir(config))
}

/// Finds the checkpoint files of `repo` in the local cache only.
fn from_cache(cache: &Cache, id: &str, repo: Repo) -> Result<PathBuf, Error> {
    let repo = cache.repo(repo);
    let config = repo.get(CONFIG_FILE).ok_or_else(|| Error::HubOffline {
        id: id.to_string(),
        file: CONFIG_FILE.to_string(),
    })?;
    if !WEIGHT_FILES.iter().any(|file| repo.get(file).is_some()) {
        return Err(Error::HubOffline {
            id: id.to_string(),
            file: WEIGHT_FILES.join(" or "),
        });
    }
    Ok(snapshot_dir(config))
}

/// hf-hub places every file of a revision in one `snapshots/<commit>/` directory.
fn snapshot_dir(config: PathBuf) -> PathBuf {
    config.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use hf_hub::api::sync::ApiBuilder;

    use super::*;

    #[test]
    fn existing_directory_is_used_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_str().unwrap();
        let resolved = resolve_base(base).unwrap();
        assert_eq!(
            resolved,
            ResolvedBase {
                dir: dir.path().to_path_buf(),
                id: base.to_string(),
                revision: None
            }
        );
    }

    #[test]
    fn a_missing_path_that_is_no_hub_id_is_refused() {
        for base in ["./no/such/dir", "/no/such/dir", "owner/name@"] {
            let error = resolve_base(base).unwrap_err();
            assert!(
                matches!(&error, Error::BaseNotFound { base: b } if b == base),
                "{error}"
            );
        }
    }

    #[test]
    fn unreachable_hub_says_to_pass_a_directory() {
        // Port 9 (discard) on loopback refuses at once, so this fails fast and offline.
        let cache = tempfile::tempdir().unwrap();
        let api = ApiBuilder::from_cache(Cache::new(cache.path().to_path_buf()))
            .with_endpoint("http://127.0.0.1:9".to_string())
            .with_progress(false)
            .build()
            .unwrap();
        let repo = Repo::with_revision("owner/model".into(), RepoType::Model, "v1".into());
        let error = download(
            &api,
            &Cache::new(cache.path().to_path_buf()),
            "owner/model",
            repo,
        )
        .unwrap_err();
        let message = crate::error_text::describe(&error);
        assert!(
            matches!(error, Error::HubUnavailable { ref id, .. } if id == "owner/model"),
            "{message}"
        );
        assert!(
            message.starts_with("cannot download \"owner/model\" from the Hugging Face Hub ("),
            "{message}"
        );
        assert!(
            message.contains("(pass a local directory with --base): "),
            "{message}"
        );
    }

    #[test]
    fn offline_cache_miss_names_the_file() {
        let cache = tempfile::tempdir().unwrap();
        let error = from_cache(
            &Cache::new(cache.path().to_path_buf()),
            "owner/model",
            Repo::model("owner/model".into()),
        )
        .unwrap_err();
        assert!(
            matches!(&error, Error::HubOffline { file, .. } if file == "config.json"),
            "{error}"
        );
    }
}
