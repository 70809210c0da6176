//! With no `model.path` anywhere, the daemon serves the shipped model, `models/imdb-minilm`.

use super::client::TestClient;
use super::harness::{daemon_config, Broker, BrokerOptions, Daemon};
use super::{assert_result_matches, REPLY, START};
use crate::default_model::default_model;

#[test]
fn daemon_without_a_model_setting_serves_the_shipped_model() {
    let model = default_model();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let client = TestClient::v5(broker.port, "default-model-client");
    client.subscribe("sentimq/#");
    let mut config = daemon_config(broker.port, "default-model-daemon", "sentimq", &model);
    config.remove("model");
    // The default path is relative to the working directory, the repository root here.
    let _daemon = Daemon::spawn(dir.path(), "default-model", &config);
    client.wait_for_payload("sentimq/status", "online", START);
    let info = client.wait_on("sentimq/info", REPLY).json();
    let identity = info["model"].as_str().expect("info.model");
    assert!(identity.starts_with("imdb-minilm@"), "{info}");

    for (topic, text, label) in [
        (
            "good",
            "A wonderful, moving film; the cast is superb and I would watch it again.",
            "positive",
        ),
        (
            "bad",
            "Dull, far too long, and the plot makes no sense. A waste of two hours.",
            "negative",
        ),
    ] {
        client.publish(&format!("sentimq/classify/{topic}"), text);
        let result = client
            .wait_on(&format!("sentimq/result/sentimq/classify/{topic}"), REPLY)
            .json();
        assert_eq!(result["label"], label, "{result}");
        assert_eq!(result["model"], identity);
        assert_result_matches(&model, &result, text);
    }
}
