//! Model reload without a restart (SIGHUP and `<base>/command/reload`): under load every input
//! is answered once and later ones name the new model; a corrupt model and one with other
//! labels are refused while the old model keeps serving.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::client::{Received, TestClient};
use super::harness::{daemon_config, set, Broker, BrokerOptions, Daemon};
use super::{assert_result_matches, setup, REPLY, START};

/// Deadline for a reload: load, warm-up and self-test of the test model, in a debug build.
const RELOAD: Duration = Duration::from_secs(60);

/// A private copy of the test model (the daemon serves it; the test then changes it).
fn copy_model(model: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join("model");
    fs::create_dir(&copy).expect("creating the model copy");
    for entry in fs::read_dir(model).expect("reading the test model") {
        let entry = entry.expect("a directory entry");
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::copy(entry.path(), copy.join(entry.file_name())).expect("copying a model file");
        }
    }
    copy
}

/// Rewrites `model.json` of `dir` through `change`.
fn edit_manifest(dir: &Path, change: impl FnOnce(&mut Value)) {
    let path = dir.join("model.json");
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(&path).expect("reading model.json")).expect("JSON");
    change(&mut manifest);
    fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).expect("writing model.json");
}

/// The `n`-th message on `topic` (1-based), once it arrived.
fn nth_on(client: &TestClient, topic: &str, n: usize) -> Value {
    client
        .wait_for(&format!("message {n} on {topic}"), RELOAD, |all| {
            all.iter().filter(|m| m.topic == topic).nth(n - 1).cloned()
        })
        .json()
}

/// The model named by the latest `<base>/info` among `received`.
fn info_model(received: &[Received], base: &str) -> Option<String> {
    let topic = format!("{base}/info");
    let last = received.iter().rev().find(|m| m.topic == topic)?;
    Some(
        last.json()["model"]
            .as_str()
            .expect("info names the model")
            .to_string(),
    )
}

#[test]
fn reload_under_load_answers_every_input_once_and_later_inputs_name_the_new_model() {
    const INPUTS: usize = 3_000;
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let served = copy_model(model, dir.path());
    let broker = Broker::start(
        dir.path(),
        BrokerOptions {
            in_memory: true,
            ..BrokerOptions::default()
        },
    );
    let collector = TestClient::v5(broker.port, "hup-collector");
    collector.subscribe("hup/result/#");
    collector.subscribe("hup/error");
    collector.subscribe("hup/reload");
    collector.subscribe("hup/info");
    let publisher = TestClient::v5(broker.port, "hup-publisher");
    let config = daemon_config(broker.port, "hup-daemon", "hup", &served);
    let daemon = Daemon::spawn(dir.path(), "hup", &config);
    daemon.wait_for_log("ready", START);
    assert!(
        daemon
            .log()
            .contains("self-test passed: probabilities well-formed; labels not checked (model.json: random_head)"),
        "{}",
        daemon.log()
    );
    let old = collector.wait_for("the info message", REPLY, |all| info_model(all, "hup"));

    for i in 0..INPUTS {
        publisher.publish(
            "hup/classify/load",
            format!(r#"{{"id": {i}, "text": "review {i}: a fine and moving film"}}"#),
        );
    }
    let results = |all: &[Received]| {
        all.iter()
            .filter(|m| m.topic == "hup/result/hup/classify/load")
            .count()
    };
    collector.wait_for("the first results", REPLY, |all| {
        (results(all) >= 50).then_some(())
    });
    // The new model: the same directory now serving its f32 graph (another graph digest).
    edit_manifest(&served, |m| m["default_graph"] = "model.onnx".into());
    daemon.signal("HUP");
    let outcome = nth_on(&collector, "hup/reload", 1);
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(outcome["trigger"], "SIGHUP");
    assert_eq!(outcome["previous"], old.as_str());
    let new = outcome["model"].as_str().expect("model").to_string();
    assert_ne!(new, old, "the f32 graph has another digest");

    // Inputs sent after the outcome are classified by the new model.
    for i in INPUTS..INPUTS + 20 {
        publisher.publish(
            "hup/classify/load",
            format!(r#"{{"id": {i}, "text": "review {i}: after the reload"}}"#),
        );
    }
    collector.wait_for("every answer", Duration::from_secs(300), |all| {
        (results(all) >= INPUTS + 20).then_some(())
    });
    let received = collector.received();
    assert!(
        collector.on("hup/error").is_empty(),
        "error replies: {:?}",
        collector.on("hup/error").first().map(Received::json)
    );
    let mut by_id: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for m in received
        .iter()
        .filter(|m| m.topic == "hup/result/hup/classify/load")
    {
        let json = m.json();
        by_id
            .entry(json["id"].as_u64().expect("id"))
            .or_default()
            .push(json["model"].as_str().expect("model").to_string());
    }
    assert_eq!(by_id.len(), INPUTS + 20, "distinct inputs answered");
    let twice: Vec<_> = by_id
        .iter()
        .filter(|(_, models)| models.len() > 1)
        .collect();
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    let on_old = by_id.values().filter(|m| m[0] == old).count();
    let on_new = by_id.values().filter(|m| m[0] == new).count();
    assert_eq!(
        on_old + on_new,
        INPUTS + 20,
        "results name only the two models"
    );
    let burst_on_new = by_id
        .range(..INPUTS as u64)
        .filter(|(_, m)| m[0] == new)
        .count();
    assert!(
        on_old >= 50 && burst_on_new > 0,
        "old {on_old}, new {on_new} ({burst_on_new} of the burst): the reload must land mid-burst (raise INPUTS if the burst was over first)"
    );
    for id in INPUTS as u64..INPUTS as u64 + 20 {
        assert_eq!(by_id[&id][0], new, "input {id} was sent after the reload");
    }
    // Once an input names the new model, none after it in the queue names the old one.
    let first_new = by_id
        .iter()
        .find(|(_, m)| m[0] == new)
        .map(|(id, _)| *id)
        .unwrap();
    let late_old: Vec<u64> = by_id
        .iter()
        .filter(|(id, m)| **id > first_new + 64 && m[0] == old)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        late_old.is_empty(),
        "old-model results long after the swap: {late_old:?}"
    );
    collector.wait_for("info naming the new model", REPLY, |all| {
        (info_model(all, "hup").as_deref() == Some(new.as_str())).then_some(())
    });
    assert!(
        daemon
            .log()
            .contains("model reloaded; serving it from the next batch"),
        "{}",
        daemon.log()
    );
}

#[test]
fn reload_to_a_corrupt_model_is_refused_and_the_old_model_keeps_serving() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let served = copy_model(model, dir.path());
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let client = TestClient::v5(broker.port, "corrupt-client");
    client.subscribe("corrupt/result/#");
    client.subscribe("corrupt/reload");
    client.subscribe("corrupt/info");
    let mut config = daemon_config(broker.port, "corrupt-daemon", "corrupt", &served);
    set(&mut config, "mqtt.reload_command", true);
    let daemon = Daemon::spawn(dir.path(), "corrupt", &config);
    daemon.wait_for_log("ready", START);
    let old = client.wait_for("the info message", REPLY, |all| info_model(all, "corrupt"));

    // One byte of the graph changed, as a bad copy would.
    let graph = served.join("model.int8.onnx");
    let mut bytes = fs::read(&graph).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&graph, bytes).unwrap();
    client.publish("corrupt/command/reload", "now");
    let outcome = nth_on(&client, "corrupt/reload", 1);
    assert_eq!(outcome["ok"], false, "{outcome}");
    assert_eq!(outcome["trigger"], "mqtt");
    assert_eq!(outcome["model"], old.as_str());
    let error = outcome["error"].as_str().expect("error");
    assert!(
        error.contains("model.int8.onnx does not match its sha256"),
        "{error}"
    );
    assert!(
        daemon
            .log()
            .contains("model reload refused, still serving the old model"),
        "{}",
        daemon.log()
    );

    let text = "Still here, still classifying with the model that passed its checks.";
    client.publish("corrupt/classify/after", format!(r#"{{"text": "{text}"}}"#));
    let result = client
        .wait_on("corrupt/result/corrupt/classify/after", REPLY)
        .json();
    assert_eq!(result["model"], old.as_str());
    assert_result_matches(model, &result, text);
}

#[test]
fn reload_to_a_model_with_other_labels_is_refused_unless_allowed() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let client = TestClient::v5(broker.port, "labels-client");
    client.subscribe("labels/#");
    let relabel = |m: &mut Value| m["labels"] = serde_json::json!(["bad", "good"]);

    // Refused by default.
    let refusing_dir = tempfile::tempdir().unwrap();
    let served = copy_model(model, refusing_dir.path());
    let config = daemon_config(broker.port, "labels-daemon", "labels", &served);
    let mut daemon = Daemon::spawn(dir.path(), "labels", &config);
    daemon.wait_for_log("ready", START);
    edit_manifest(&served, relabel);
    daemon.signal("HUP");
    let outcome = nth_on(&client, "labels/reload", 1);
    assert_eq!(outcome["ok"], false, "{outcome}");
    let error = outcome["error"].as_str().expect("error");
    assert!(
        error.contains("differ from the served model's")
            && error.contains("model.allow_label_change"),
        "{error}"
    );
    client.publish("labels/classify/a", "A text after the refused reload.");
    let result = client
        .wait_on("labels/result/labels/classify/a", REPLY)
        .json();
    assert!(
        ["negative", "positive"].contains(&result["label"].as_str().unwrap()),
        "{result}"
    );
    daemon.terminate();

    // Accepted with model.allow_label_change.
    let accepting_dir = tempfile::tempdir().unwrap();
    let served = copy_model(model, accepting_dir.path());
    let mut config = daemon_config(broker.port, "labels-daemon-2", "labels", &served);
    set(&mut config, "model.allow_label_change", true);
    let daemon = Daemon::spawn(dir.path(), "labels-2", &config);
    daemon.wait_for_log("ready", START);
    edit_manifest(&served, relabel);
    daemon.signal("HUP");
    let outcome = nth_on(&client, "labels/reload", 2);
    assert_eq!(outcome["ok"], true, "{outcome}");
    client.publish("labels/classify/b", "A text after the accepted reload.");
    let result = client
        .wait_on("labels/result/labels/classify/b", REPLY)
        .json();
    assert!(
        ["bad", "good"].contains(&result["label"].as_str().unwrap()),
        "{result}"
    );
    let scores = result["scores"].as_object().expect("scores");
    assert!(
        scores.contains_key("bad") && scores.contains_key("good"),
        "{result}"
    );
}
