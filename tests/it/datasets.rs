//! Datasets as users bring them: parquet written by pyarrow (the Hugging Face Hub's format)
//! holds the same real IMDB reviews as the original archive, `eval` scores both alike, and
//! `--data imdb` fetches the split's parquet file over the Hub's HTTP protocol (from a
//! loopback server, the Hub being out of reach here), then serves it offline from the cache.
//! Needs Python with `pyarrow` (`.ci/run` installs it).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use sentimq::data::{self, Example, Split};

use crate::util::{minilm_random_model, python, shared};

/// 100 negative and 100 positive test reviews from the archive, in its order.
fn imdb_sample(archive: &Path) -> Vec<Example> {
    let test = data::load(archive, Split::Test).expect("imdb test split");
    let negatives = test.iter().filter(|e| e.label == 0).take(100);
    let positives = test.iter().filter(|e| e.label == 1).take(100);
    negatives.chain(positives).cloned().collect()
}

fn write_jsonl(path: &Path, examples: &[Example]) {
    let lines: String = examples
        .iter()
        .map(|e| serde_json::json!({ "text": e.text, "label": e.label }).to_string() + "\n")
        .collect();
    std::fs::write(path, lines).expect("writing jsonl");
}

fn write_parquet_with_pyarrow(jsonl: &Path, parquet: &Path, compression: &str) {
    python(
        "write_parquet.py",
        &[
            &jsonl.to_string_lossy(),
            &parquet.to_string_lossy(),
            compression,
        ],
        "pyarrow",
    );
}

/// The JSON report of `sentimq eval --data <data> --limit <limit>` on `model`, run with `env`
/// (the Hugging Face variables are cleared unless `env` sets them).
fn eval_report(model: &Path, data: &str, limit: usize, env: &[(&str, &str)]) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sentimq"));
    command
        .args(["eval", "--model", &model.to_string_lossy(), "--data", data])
        .args(["--limit", &limit.to_string(), "--json"])
        .env_remove("HF_HOME")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_ENDPOINT")
        .envs(env.iter().copied());
    let output = command.output().expect("running sentimq");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    serde_json::from_slice(&output.stdout).expect("JSON report")
}

/// The sample in `dir` as `test.jsonl` and as `test.parquet` (pyarrow, snappy).
fn sample_files(archive: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let (jsonl, parquet) = (dir.join("test.jsonl"), dir.join("test.parquet"));
    write_jsonl(&jsonl, &imdb_sample(archive));
    write_parquet_with_pyarrow(&jsonl, &parquet, "snappy");
    (jsonl, parquet)
}

#[test]
fn pyarrow_parquet_holds_the_archive_reviews() {
    let archive = shared("data/imdb/aclImdb_v1_labeled.tar.gz");
    let expected = imdb_sample(&archive);
    let dir = tempfile::tempdir().expect("temp dir");
    let jsonl = dir.path().join("test.jsonl");
    write_jsonl(&jsonl, &expected);
    for compression in ["snappy", "zstd", "gzip", "lz4", "none"] {
        let parquet = dir
            .path()
            .join(format!("test-00000-of-00001.{compression}.parquet"));
        write_parquet_with_pyarrow(&jsonl, &parquet, compression);
        let loaded = data::load(&parquet, Split::Test).expect("loading pyarrow parquet");
        assert_eq!(loaded.len(), expected.len(), "{compression}");
        for (row, (got, want)) in loaded.iter().zip(&expected).enumerate() {
            assert_eq!(got.text, want.text, "{compression} row {}", row + 1);
            assert_eq!(got.label, want.label, "{compression} row {}", row + 1);
        }
        assert_eq!(
            loaded[199].source,
            format!("test-00000-of-00001.{compression}.parquet:200")
        );
    }
}

#[test]
fn eval_scores_parquet_and_jsonl_alike() {
    let (model, archive) = (
        minilm_random_model(),
        shared("data/imdb/aclImdb_v1_labeled.tar.gz"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (jsonl, parquet) = sample_files(&archive, dir.path());
    let report = |data: &Path| eval_report(model, &data.to_string_lossy(), 24, &[]);
    let from_parquet = report(&parquet);
    assert_eq!(from_parquet["examples"], 24);
    assert_eq!(from_parquet, report(&jsonl));
}

#[test]
fn an_unreachable_hub_dataset_names_the_local_alternatives() {
    // Port 9 (discard) on loopback refuses at once; an empty cache has nothing to fall back on.
    let cache = tempfile::tempdir().expect("temp dir");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imdb-minilm");
    let output = Command::new(env!("CARGO_BIN_EXE_sentimq"))
        .args([
            "eval",
            "--model",
            &model.to_string_lossy(),
            "--data",
            "imdb",
            "--limit",
            "4",
        ])
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", cache.path())
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("running sentimq");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot download dataset \"stanfordnlp/imdb\" from the Hugging Face Hub"),
        "{stderr}"
    );
    assert!(stderr.contains("pass a local copy with --data"), "{stderr}");
}

/// A loopback server speaking the part of the Hugging Face Hub's HTTP protocol that hf-hub
/// uses: the repository listing (`/api/datasets/<id>/revision/<rev>`) and ranged file
/// downloads (`/datasets/<id>/resolve/<rev>/<file>`) with the commit and etag headers.
struct LoopbackHub {
    endpoint: String,
    /// The request lines served, in order.
    requests: Arc<Mutex<Vec<String>>>,
}

impl LoopbackHub {
    const COMMIT: &'static str = "e6281661ce1c48d982bc483cf8a173c1bbeb5d31";

    /// Serves `files` (repository path, local file) of the dataset `id` at revision `main`.
    fn start(id: &str, files: Vec<(String, PathBuf)>) -> LoopbackHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the loopback hub");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (id, log) = (id.to_string(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve(stream, &id, &files, &log);
            }
        });
        LoopbackHub { endpoint, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("request log").clone()
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(stream: TcpStream, id: &str, files: &[(String, PathBuf)], log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("stream"));
    let mut request = String::new();
    reader.read_line(&mut request).expect("request line");
    let path = request
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    // `Range: bytes=A-B` or `bytes=A-`: hf-hub asks for `0-0` to learn the size and commit,
    // then for the file from an offset.
    let mut range: Option<(usize, Option<usize>)> = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        if header.trim().is_empty() {
            break;
        }
        if let Some(spec) = header
            .to_ascii_lowercase()
            .trim()
            .strip_prefix("range: bytes=")
        {
            let (first, last) = spec.split_once('-').unwrap_or((spec, ""));
            range = first.parse().ok().map(|first| (first, last.parse().ok()));
        }
    }
    log.lock().expect("request log").push(path.clone());
    let listing = format!("/api/datasets/{id}/revision/main");
    let resolve = format!("/datasets/{id}/resolve/main/");
    let (status, headers, body) = if path == listing {
        let siblings: Vec<_> = files
            .iter()
            .map(|(name, _)| serde_json::json!({ "rfilename": name }))
            .collect();
        let info = serde_json::json!({ "sha": LoopbackHub::COMMIT, "siblings": siblings });
        ("200 OK", String::new(), info.to_string().into_bytes())
    } else if let Some((_, file)) = path
        .strip_prefix(&resolve)
        .and_then(|name| files.iter().find(|(n, _)| n == name))
    {
        let bytes = std::fs::read(file).expect("served file");
        let (first, last) = range.unwrap_or((0, None));
        let last = last.unwrap_or(bytes.len() - 1).min(bytes.len() - 1);
        let headers = format!(
            "ETag: \"{:x}\"\r\nX-Repo-Commit: {}\r\nContent-Range: bytes {first}-{last}/{}\r\n",
            bytes.len(),
            LoopbackHub::COMMIT,
            bytes.len()
        );
        (
            "206 Partial Content",
            headers,
            bytes[first.min(last + 1)..=last].to_vec(),
        )
    } else {
        ("404 Not Found", String::new(), b"not found".to_vec())
    };
    let mut stream = reader.into_inner();
    let head = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body));
}

#[test]
fn imdb_from_the_hub_is_downloaded_once_then_served_offline() {
    let (model, archive) = (
        minilm_random_model(),
        shared("data/imdb/aclImdb_v1_labeled.tar.gz"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, parquet) = sample_files(&archive, dir.path());
    // The repository as stanfordnlp/imdb lays it out; only the test split is fetched.
    let files = [
        "README.md",
        "plain_text/test-00000-of-00001.parquet",
        "plain_text/train-00000-of-00001.parquet",
        "plain_text/unsupervised-00000-of-00001.parquet",
    ]
    .iter()
    .map(|name| (name.to_string(), parquet.clone()))
    .collect();
    let hub = LoopbackHub::start(data::IMDB, files);
    let home = dir.path().join("hf-home");
    let home_var = home.to_string_lossy();
    let eval = |env: &[(&str, &str)]| {
        eval_report(
            model,
            "imdb",
            8,
            &[&[("HF_HOME", &*home_var)], env].concat(),
        )
    };
    let online = eval(&[("HF_ENDPOINT", &hub.endpoint)]);
    assert_eq!(online["examples"], 8);
    let requests = hub.requests();
    assert_eq!(
        requests[0], "/api/datasets/stanfordnlp/imdb/revision/main",
        "{requests:?}"
    );
    assert!(
        requests[1..]
            .iter()
            .all(|r| r.ends_with("/plain_text/test-00000-of-00001.parquet")),
        "{requests:?}"
    );
    let cached = home
        .join("hub/datasets--stanfordnlp--imdb/snapshots")
        .join(LoopbackHub::COMMIT);
    let cached = cached.join("plain_text/test-00000-of-00001.parquet");
    assert_eq!(
        std::fs::read(&cached).expect("cached file"),
        std::fs::read(&parquet).expect("served file")
    );
    // Offline, and with the endpoint gone: the cache serves the same reviews.
    let offline = eval(&[
        ("HF_HUB_OFFLINE", "1"),
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
    ]);
    assert_eq!(offline, online);
}
