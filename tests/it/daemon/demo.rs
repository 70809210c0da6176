//! `sentimqd demo`, the README's first run: the daemon with the shipped model, an in-process
//! broker when none is configured, sample reviews published and their results printed.

use std::process::Output;

use super::client::TestClient;
use super::harness::{sentimqd_command, Broker, BrokerOptions};
use super::REPLY;

const GOOD: &str = "A wonderful, moving film; the cast is superb and I would watch it again.";
const BAD: &str = "Dull, far too long, and the plot makes no sense. A waste of two hours.";

/// Runs `sentimqd demo` from the repository root (the default model path is relative to it).
fn demo(args: &[&str]) -> (Output, Vec<serde_json::Value>) {
    let output = sentimqd_command()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("demo")
        .args(args)
        .output()
        .expect("running sentimqd demo");
    // Replies print as they arrive; order them by the text they answer.
    let mut replies: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON reply per line"))
        .collect();
    replies.sort_by_key(|reply| reply["source_topic"].as_str().map(str::to_string));
    (output, replies)
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn demo_without_a_broker_starts_its_own_and_prints_every_reply() {
    let (output, replies) = demo(&["--timeout", "60", GOOD, BAD, ""]);
    let described = describe(&output);
    assert!(output.status.success(), "{described}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("embedded MQTT broker on 127.0.0.1:"),
        "{described}"
    );
    assert_eq!(replies.len(), 3, "{described}");
    assert_eq!(replies[0]["label"], "positive", "{described}");
    assert_eq!(replies[1]["label"], "negative", "{described}");
    assert!(replies[0]["model"]
        .as_str()
        .is_some_and(|m| m.starts_with("imdb-minilm@")));
    // The empty text gets the contract's error reply, not silence.
    assert_eq!(replies[2]["error"], "empty", "{described}");
    assert_eq!(replies[2]["source_topic"], "sentimq/classify/demo/2");
    // The daemon stopped as on SIGTERM, and never lost the embedded broker: rumqttd drops a
    // client whose acks come out of order, as the empty text's would without `AckOrder`.
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("published offline"), "{described}");
    assert!(!log.contains(" lost: "), "{described}");
}

#[test]
fn demo_with_a_configured_broker_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let watcher = TestClient::v5(broker.port, "demo-watcher");
    watcher.subscribe("sentimq/result/#");
    let server = format!("mqtt://127.0.0.1:{}", broker.port);
    let (output, replies) = demo(&["--server", &server, "--client-id", "demo-daemon", GOOD]);
    let described = describe(&output);
    assert!(output.status.success(), "{described}");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("embedded MQTT broker"),
        "{described}"
    );
    assert_eq!(replies.len(), 1, "{described}");
    assert_eq!(replies[0]["label"], "positive");
    // The same result went through mosquitto.
    let seen = watcher
        .wait_on("sentimq/result/sentimq/classify/demo/0", REPLY)
        .json();
    assert_eq!(seen["score"], replies[0]["score"]);
}
