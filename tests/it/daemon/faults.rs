//! Crashes: the broker and the daemon are SIGKILLed and restarted while QoS 1 inputs flow.
//! Every input the broker acknowledged (and saved) gets a result; duplicates are counted.
//!
//! mosquitto sends a PUBACK before it writes the message to disk, so a PUBACK alone does not
//! mean the broker will survive a SIGKILL with the message. Before each broker kill the test
//! makes mosquitto save (SIGUSR1, then waits for the database file to change), which makes
//! "acknowledged" mean "acknowledged and on disk". The daemon, meanwhile, is mid-stream: its
//! in-flight inputs, unacknowledged replies and acks are what the kills exercise.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::client::TestClient;
use super::harness::{daemon_config, set, wait_until, Broker, BrokerOptions, Daemon};
use super::{setup, REPLY, START};

/// Inputs per round; four rounds make the 5,000 of the acceptance test.
const ROUND: usize = 1250;

#[test]
fn no_acknowledged_input_is_lost_across_crashes() {
    let model = setup();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), BrokerOptions::default());
    // Persistent sessions: results queue for the collector while anything is down.
    let collector = TestClient::v5_session(broker.port, "fault-collector", true);
    collector.subscribe("fault/result/#");
    collector.subscribe("fault/status");
    collector.subscribe("fault/stats");
    let publisher = TestClient::v5_session(broker.port, "fault-publisher", true);
    let mut config = daemon_config(broker.port, "fault-daemon", "fault", model);
    set(&mut config, "pipeline.max_batch", 32);
    let mut daemon = Daemon::spawn(dir.path(), "fault", &config);
    daemon.wait_for_log("ready", START);

    let mut published = 0;
    let mut publish_round = |publisher: &TestClient| {
        for _ in 0..ROUND {
            let i = published;
            publisher.publish(
                &format!("fault/classify/{}", i % 8),
                format!(
                    r#"{{"id": {i}, "text": "review {i}: {}"}}"#,
                    ["great", "awful", "fine"][i % 3]
                ),
            );
            published += 1;
        }
        let total = published;
        wait_until(
            "the broker to acknowledge every input",
            REPLY * 2,
            || (publisher.pubacks() >= total).then_some(()),
            || format!("{} of {total} acknowledged", publisher.pubacks()),
        );
        total
    };
    let results = |collector: &TestClient| {
        collector
            .received()
            .iter()
            .filter(|m| m.topic.starts_with("fault/result/"))
            .count()
    };

    // Round 1: kill the broker while the daemon works through the backlog.
    publish_round(&publisher);
    broker.persist();
    broker.kill();
    broker.restart();
    eprintln!(
        "round 1: broker killed with {} results out",
        results(&collector)
    );

    // Round 2: kill the daemon mid-stream.
    publish_round(&publisher);
    daemon.kill();
    eprintln!(
        "round 2: daemon killed with {} results out",
        results(&collector)
    );
    daemon.start();
    daemon.wait_for_log("ready", START);

    // Round 3: kill both.
    publish_round(&publisher);
    broker.persist();
    daemon.kill();
    broker.kill();
    broker.restart();
    daemon.start();
    eprintln!(
        "round 3: both killed with {} results out",
        results(&collector)
    );

    // Round 4: a calm one.
    let total = publish_round(&publisher);

    let per_id = collector.wait_for(
        "a result for every acknowledged input",
        Duration::from_secs(300),
        |all| {
            let mut per_id: BTreeMap<u64, usize> = BTreeMap::new();
            for m in all.iter().filter(|m| m.topic.starts_with("fault/result/")) {
                *per_id
                    .entry(m.json()["id"].as_u64().expect("id"))
                    .or_default() += 1;
            }
            (per_id.len() >= total).then_some(per_id)
        },
    );
    let missing: Vec<usize> = (0..total)
        .filter(|i| !per_id.contains_key(&(*i as u64)))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} inputs, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates: usize = per_id.values().map(|n| n - 1).sum();
    let stats = collector
        .on("fault/stats")
        .last()
        .map(|m| m.json())
        .unwrap_or_default();
    eprintln!(
        "faults: {total} inputs, 0 lost, {duplicates} duplicate results ({} inputs answered more than once); \
         last daemon stats: duplicates {} redelivered {}; broker reconnects seen by the collector: {}; took {:?}",
        per_id.values().filter(|n| **n > 1).count(),
        stats["duplicates"],
        stats["redelivered"],
        collector.connacks() - 1,
        started.elapsed()
    );
    assert!(daemon.is_running(), "{}", daemon.log());
}
