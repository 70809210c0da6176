//! 10,000 QoS 1 inputs published in one burst, far more than the daemon takes at once: the
//! broker holds the rest (a broker configured without a queue cap, as the README asks) and
//! every input gets exactly one answer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::client::{Received, TestClient};
use super::harness::{daemon_config, set, wait_until, Broker, BrokerOptions, Daemon};
use super::{setup, START};

const INPUTS: usize = 10_000;

#[test]
fn a_burst_of_10000_qos1_inputs_is_answered_in_full() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(
        dir.path(),
        BrokerOptions {
            in_memory: true,
            ..BrokerOptions::default()
        },
    );
    let collector = TestClient::v5_session(broker.port, "burst-collector", true);
    collector.subscribe("burst/result/#");
    collector.subscribe("burst/error");
    let publisher = TestClient::v5(broker.port, "burst-publisher");
    let mut config = daemon_config(broker.port, "burst-daemon", "burst", model);
    set(&mut config, "pipeline.workers", 2);
    set(&mut config, "pipeline.max_batch", 32);
    let daemon = Daemon::spawn(dir.path(), "burst", &config);
    daemon.wait_for_log("ready", START);

    let started = Instant::now();
    for i in 0..INPUTS {
        publisher.publish(
            &format!("burst/classify/{}", i % 8),
            format!(
                r#"{{"id": {i}, "text": "review {i}: {}"}}"#,
                ["a great film", "an awful mess", "fine, I suppose"][i % 3]
            ),
        );
    }
    wait_until(
        "the broker to acknowledge every input",
        Duration::from_secs(120),
        || (publisher.pubacks() >= INPUTS).then_some(()),
        || format!("{} of {INPUTS} acknowledged", publisher.pubacks()),
    );
    let published = started.elapsed();

    let answers = |received: &[Received]| {
        received
            .iter()
            .filter(|m| m.topic.starts_with("burst/result/") || m.topic == "burst/error")
            .count()
    };
    collector.wait_for(
        &format!("answers to all {INPUTS} inputs"),
        Duration::from_secs(600),
        |received| (answers(received) >= INPUTS).then_some(()),
    );
    let took = started.elapsed();
    let received = collector.received();
    let errors: Vec<&Received> = received
        .iter()
        .filter(|m| m.topic == "burst/error")
        .collect();
    assert!(
        errors.is_empty(),
        "error replies: {:?}",
        errors.first().map(|m| m.json())
    );
    let ids: BTreeSet<u64> = received
        .iter()
        .filter(|m| m.topic.starts_with("burst/result/"))
        .filter_map(|m| m.json()["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), INPUTS, "distinct ids answered");
    assert_eq!(answers(&received), INPUTS, "an input was answered twice");
    eprintln!(
        "{INPUTS} QoS 1 inputs published in {:.1} s, all answered in {:.1} s ({:.0} messages/s)",
        published.as_secs_f64(),
        took.as_secs_f64(),
        INPUTS as f64 / took.as_secs_f64()
    );
}
