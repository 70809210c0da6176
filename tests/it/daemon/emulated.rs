//! The daemon built for a Raspberry Pi, run under qemu-user (`cross/check.sh`), answers 20
//! messages through a native mosquitto with the x86_64 engine's verdicts.

use std::path::Path;
use std::time::Duration;

use super::assert_result_matches;
use super::client::TestClient;
use super::harness::{daemon_config, Broker, BrokerOptions, Daemon, DAEMON_UNDER_TEST};

/// Emulation is 5–20× slower than native: loading and planning the model takes a while.
const EMULATED_START: Duration = Duration::from_secs(600);
const EMULATED_REPLY: Duration = Duration::from_secs(120);

#[test]
#[ignore = "runs the sentimqd named by SENTIMQ_TEST_SENTIMQD; cross/check.sh sets it"]
fn emulated_daemon_answers_20_messages() {
    let command = std::env::var(DAEMON_UNDER_TEST)
        .unwrap_or_else(|_| panic!("set {DAEMON_UNDER_TEST} to the daemon's command line"));
    super::harness::mosquitto();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imdb-minilm");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let client = TestClient::v5(broker.port, "emulated-client");
    client.subscribe("sentimq/#");
    let mut config = daemon_config(broker.port, "emulated-daemon", "sentimq", &model);
    // The device build has no intra-op threads: its workers run in parallel instead.
    super::harness::set(&mut config, "pipeline.workers", 2);
    let daemon = Daemon::spawn(dir.path(), "emulated", &config);
    client.wait_for_payload("sentimq/status", "online", EMULATED_START);
    daemon.wait_for_log("ready", EMULATED_START);

    let texts: Vec<String> = (0..20)
        .map(|i| match i % 4 {
            0 => format!("Review {i}: a wonderful, moving film with a superb cast."),
            1 => format!("Review {i}: dull, far too long, and the plot makes no sense."),
            2 => format!("Review {i}: I laughed, I cried, I would watch it again tomorrow."),
            _ => format!("Review {i}: a waste of two hours; the acting is wooden."),
        })
        .collect();
    for (i, text) in texts.iter().enumerate() {
        client.publish(&format!("sentimq/classify/emulated/{i}"), text.as_str());
    }
    for (i, text) in texts.iter().enumerate() {
        let result = client
            .wait_on(
                &format!("sentimq/result/sentimq/classify/emulated/{i}"),
                EMULATED_REPLY,
            )
            .json();
        assert_result_matches(&model, &result, text);
    }
    assert!(
        client.on("sentimq/error").is_empty(),
        "no error replies expected: {:?}",
        client
            .on("sentimq/error")
            .iter()
            .map(|r| r.json())
            .collect::<Vec<_>>()
    );
    eprintln!("{command}: 20 of 20 messages answered, verdicts equal to x86_64's");
}
