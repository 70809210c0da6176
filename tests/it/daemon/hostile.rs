//! The CI-sized hostile run: `benches/hostile.py` (the script of the million-message run)
//! sends 3,000 generated payloads of every hostile kind, over v3.1.1 and v5 clients at QoS 0
//! and 1, through a real mosquitto to this build's `sentimqd`.

use std::process::Command;

use serde_json::Value;

use super::harness::DAEMON_UNDER_TEST;
use super::setup;
use crate::util::shared;

#[test]
fn three_thousand_hostile_messages_are_each_answered_once_and_the_daemon_survives() {
    let model = setup();
    assert!(
        std::env::var_os(DAEMON_UNDER_TEST).is_none(),
        "the hostile run needs this build's sentimqd"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/hostile.py");
    let output = Command::new("python3")
        .arg(script)
        .args(["--sentimqd", env!("CARGO_BIN_EXE_sentimqd")])
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(shared("data/imdb/aclImdb_v1_labeled.tar.gz"))
        .args([
            "--messages",
            "3000",
            "--rss-every",
            "500",
            "--timeout",
            "60",
        ])
        .output()
        .unwrap_or_else(|e| panic!("running python3 {script}: {e} (needs paho-mqtt)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no summary from hostile.py:\n{stdout}\n{stderr}"));
    assert!(
        output.status.success(),
        "hostile run failed: {summary}\n{stderr}"
    );
    assert_eq!(summary["daemon_alive"], true, "{summary}");
    assert_eq!(summary["qos1_lost"], 0, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert!(summary["qos1_sent"].as_u64().unwrap() > 2_000, "{summary}");
    assert!(
        summary["results"].as_u64().unwrap() > 300,
        "valid texts are classified: {summary}"
    );
    assert!(
        summary["error_replies"].as_u64().unwrap() > 1_000,
        "{summary}"
    );
    assert!(
        summary["daemon_warning_lines"].as_u64().unwrap() <= 10,
        "per-message warnings are throttled: {summary}"
    );
}
