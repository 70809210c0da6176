//! SIGTERM: prompt when there is nothing to wait for, complete when there is.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::client::{Received, TestClient};
use super::harness::{daemon_config, free_port, set, Broker, BrokerOptions, Daemon};
use super::{setup, REPLY, START};

/// What "promptly" means for systemd's stop: the issue's bound.
const PROMPT: Duration = Duration::from_secs(1);

/// Sends SIGTERM and returns how long the process took to exit (successfully).
fn time_terminate(daemon: &mut Daemon) -> Duration {
    let started = Instant::now();
    let status = daemon.terminate();
    let took = started.elapsed();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        daemon.log()
    );
    took
}

#[test]
fn sigterm_without_a_broker_exits_at_once() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port: the daemon loads its model and keeps retrying.
    let config = daemon_config(free_port(), "lonely-daemon", "lonely", model);
    let mut daemon = Daemon::spawn(dir.path(), "lonely", &config);
    daemon.wait_for_log("cannot reach the broker", START);
    let took = time_terminate(&mut daemon);
    assert!(
        took <= PROMPT,
        "exit took {took:?} with no broker; log:\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("stopped without a connection to the broker"),
        "{}",
        daemon.log()
    );
}

#[test]
fn sigterm_when_idle_exits_at_once_and_says_offline() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let watcher = TestClient::v5(broker.port, "idle-watcher");
    watcher.subscribe("idle/status");
    let config = daemon_config(broker.port, "idle-daemon", "idle", model);
    let mut daemon = Daemon::spawn(dir.path(), "idle", &config);
    daemon.wait_for_log("ready", START);
    watcher.wait_for_payload("idle/status", "online", REPLY);
    let took = time_terminate(&mut daemon);
    assert!(
        took <= PROMPT,
        "exit took {took:?} while idle; log:\n{}",
        daemon.log()
    );
    watcher.wait_for_payload("idle/status", "offline", REPLY);
    assert!(
        daemon.log().contains("published offline"),
        "{}",
        daemon.log()
    );
}

/// Work in flight at SIGTERM is answered and acknowledged before the exit, or left
/// unacknowledged for the next run: after a restart every input has its result.
#[test]
fn sigterm_with_work_in_flight_loses_nothing() {
    const INPUTS: usize = 300;
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let collector = TestClient::v5_session(broker.port, "busy-collector", true);
    collector.subscribe("busy/result/#");
    let publisher = TestClient::v5(broker.port, "busy-publisher");
    let mut config = daemon_config(broker.port, "busy-daemon", "busy", model);
    set(&mut config, "pipeline.max_batch", 8);
    let mut daemon = Daemon::spawn(dir.path(), "busy", &config);
    daemon.wait_for_log("ready", START);
    for i in 0..INPUTS {
        publisher.publish(
            "busy/classify",
            format!(r#"{{"id": {i}, "text": "review {i}: a fine film"}}"#),
        );
    }
    // `wait_for` hands over the received messages under its lock: read them from there.
    let answered = |received: &[Received]| -> BTreeSet<u64> {
        received
            .iter()
            .filter(|m| m.topic == "busy/result/busy/classify")
            .filter_map(|m| m.json()["id"].as_u64())
            .collect()
    };
    collector.wait_for("a first result", REPLY, |received| {
        (!answered(received).is_empty()).then_some(())
    });
    time_terminate(&mut daemon);
    let before_restart = answered(&collector.received()).len();
    daemon.start();
    collector.wait_for(
        &format!("results for all {INPUTS} inputs"),
        START,
        |received| (answered(received).len() == INPUTS).then_some(()),
    );
    eprintln!(
        "{before_restart} of {INPUTS} answered before the SIGTERM exit, the rest after the restart"
    );
}
