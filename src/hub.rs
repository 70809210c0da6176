//! What base models and datasets share about the Hugging Face Hub: repository id syntax,
//! `HF_HUB_OFFLINE`, and a client that honours `HF_ENDPOINT` and `HF_HOME`.
//!
//! Downloads go through `hf-hub`'s blocking client into the standard Hugging Face cache
//! (`HF_HOME`, default `~/.cache/huggingface`), so the Python tools and sentimq share files.

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::Cache;

/// A client on `cache`, from `HF_ENDPOINT` if set (as `ApiBuilder::from_env`, with the cache
/// kept at hand by the caller for its offline fallback).
pub(crate) fn api(cache: &Cache) -> Result<Api, ApiError> {
    let mut builder = ApiBuilder::from_cache(cache.clone());
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    builder.build()
}

/// `HF_HUB_OFFLINE` set to a true value, as `huggingface_hub` reads it.
pub(crate) fn is_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|value| {
        matches!(
            value.to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

/// `name` or `owner/name`, each part of ASCII letters, digits, `-`, `_` and `.`, not starting or
/// ending with `-` or `.`, without `--` or `..`, at most 96 characters: the Hub's own rule
/// (`validate_repo_id` in `huggingface_hub`).
pub(crate) fn is_repo_id(id: &str) -> bool {
    let is_part = |part: &str| {
        !part.is_empty()
            && part.len() <= 96
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !part.starts_with(['-', '.'])
            && !part.ends_with(['-', '.'])
            && !part.contains("--")
            && !part.contains("..")
    };
    match id.split_once('/') {
        Some((owner, name)) => is_part(owner) && is_part(name),
        None => is_part(id),
    }
}

/// Splits `id@revision`; `None` when the revision after `@` is empty.
pub(crate) fn split_revision(spec: &str) -> Option<(&str, Option<&str>)> {
    match spec.split_once('@') {
        Some((_, "")) => None,
        Some((id, revision)) => Some((id, Some(revision))),
        None => Some((spec, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_id_syntax() {
        for id in [
            "bert-base-uncased",
            "huawei-noah/TinyBERT_General_4L_312D",
            "a/b.c",
        ] {
            assert!(is_repo_id(id), "{id}");
        }
        for id in [
            "",
            "/abs/path",
            "./rel",
            "a/b/c",
            "a//b",
            "-a/b",
            "a/b.",
            "a--b/c",
            "a b/c",
            "owner/",
        ] {
            assert!(!is_repo_id(id), "{id}");
        }
    }

    #[test]
    fn revisions() {
        assert_eq!(split_revision("a/b"), Some(("a/b", None)));
        assert_eq!(split_revision("a/b@v1"), Some(("a/b", Some("v1"))));
        assert_eq!(split_revision("a/b@"), None);
    }
}
