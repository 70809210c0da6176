//! `sentimqd validate` (and `run`) name the key of each configuration problem and exit 78.

use std::path::Path;

use super::harness::{daemon_config, sentimqd_command, set};
use crate::util::minilm_random_model;

/// Runs `sentimqd <args> --config <config>`; returns (exit code, stdout + stderr).
fn sentimqd(dir: &Path, args: &[&str], config: &toml::Table) -> (i32, String) {
    let path = dir.join("sentimqd.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    let output = sentimqd_command()
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("running sentimqd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn validate(dir: &Path, config: &toml::Table) -> (i32, String) {
    sentimqd(dir, &["validate", "--offline"], config)
}

#[test]
fn validate_names_the_broken_key() {
    let model = minilm_random_model();
    let dir = tempfile::tempdir().unwrap();
    let good = daemon_config(1883, "validate", "sentimq", model);

    let (code, out) = validate(dir.path(), &good);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("config ok"), "{out}");
    assert!(out.contains("model: minilm-random@"), "{out}");

    let mut wrong_model = good.clone();
    set(&mut wrong_model, "model.path", "/nonexistent/model");
    let (code, out) = validate(dir.path(), &wrong_model);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("error: model.path:"), "{out}");

    // A corrupt graph: same size, one byte changed.
    let corrupt = dir.path().join("corrupt-model");
    std::fs::create_dir(&corrupt).unwrap();
    for file in ["model.json", "tokenizer.json", "model.int8.onnx"] {
        std::fs::copy(model.join(file), corrupt.join(file)).unwrap();
    }
    let mut graph = std::fs::read(corrupt.join("model.int8.onnx")).unwrap();
    let middle = graph.len() / 2;
    graph[middle] ^= 0xff;
    std::fs::write(corrupt.join("model.int8.onnx"), graph).unwrap();
    let mut corrupt_model = good.clone();
    set(&mut corrupt_model, "model.path", corrupt.to_str().unwrap());
    let (code, out) = validate(dir.path(), &corrupt_model);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("error: model.path:") && out.contains("sha256"),
        "{out}"
    );

    // A window past the model's (128 tokens for the test model).
    let mut wide = good.clone();
    set(&mut wide, "model.max_tokens", 512);
    let (code, out) = validate(dir.path(), &wide);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("error: model.max_tokens:") && out.contains("at most 128"),
        "{out}"
    );

    let mut bad_filter = good.clone();
    set(&mut bad_filter, "mqtt.inputs", vec!["reviews/#/new"]);
    let (code, out) = validate(dir.path(), &bad_filter);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("error: mqtt.inputs:"), "{out}");

    let mut missing_tls = good.clone();
    set(&mut missing_tls, "mqtt.server", "mqtts://127.0.0.1:8883");
    set(&mut missing_tls, "mqtt.tls.ca_file", "/nonexistent/ca.pem");
    let (code, out) = validate(dir.path(), &missing_tls);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("error: mqtt.tls.ca_file:"), "{out}");

    let mut unknown = good.clone();
    set(&mut unknown, "pipeline.batch_size", 8);
    let (code, out) = validate(dir.path(), &unknown);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("pipeline.batch_size") && out.contains("did you mean"),
        "{out}"
    );

    // `run` fails the same way, before touching the network.
    let (code, out) = sentimqd(dir.path(), &["run"], &wrong_model);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("model.path"), "{out}");

    // --print shows the merged config and never the password.
    let mut with_password = good.clone();
    set(&mut with_password, "mqtt.username", "user");
    let secret = dir.path().join("password");
    std::fs::write(&secret, "hunter2\n").unwrap();
    set(
        &mut with_password,
        "mqtt.password_file",
        secret.to_str().unwrap(),
    );
    let (code, out) = sentimqd(
        dir.path(),
        &["validate", "--offline", "--print"],
        &with_password,
    );
    assert!(out.contains("base_topic = \"sentimq\""), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    // The password file is readable by others (umask 022): a warning, fatal with
    // --deny-warnings.
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: mqtt.password_file"), "{out}");
    let (code, _) = sentimqd(
        dir.path(),
        &["validate", "--offline", "--deny-warnings"],
        &with_password,
    );
    assert_eq!(code, 78);
}

/// Without a config file the default model path applies, and its absence is explained.
#[test]
fn default_model_path_is_named_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let output = sentimqd_command()
        .args(["validate", "--offline"])
        .current_dir(dir.path())
        .output()
        .expect("running sentimqd");
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(78), "{out}");
    assert!(
        out.contains("error: model.path: model.path models/imdb-minilm"),
        "{out}"
    );
}
