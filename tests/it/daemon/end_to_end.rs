//! The MQTT contract end to end: raw and JSON inputs, id echo, wildcard filters, v5 request /
//! response, a v3.1.1 client, retained status and info, shared subscriptions, SIGTERM.

use serde_json::Value;
use std::collections::BTreeMap;

use super::client::TestClient;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use super::harness::{
    daemon_config, sentimqd_command, set, wait_until, Broker, BrokerOptions, Daemon,
};
use super::{assert_result_matches, setup, REPLY, START};

#[test]
fn contract_end_to_end() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let client = TestClient::v5(broker.port, "e2e-client");
    for filter in ["sentimq/#", "chat/+/reply", "reply/#"] {
        client.subscribe(filter);
    }
    let mut config = daemon_config(broker.port, "e2e-daemon", "sentimq", model);
    set(
        &mut config,
        "mqtt.inputs",
        vec!["sentimq/classify/#", "chat/+/message"],
    );
    // systemd's notification socket, with a 1 s watchdog.
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut daemon = Daemon::spawn_with_env(
        dir.path(),
        "e2e",
        &config,
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    client.wait_for_payload("sentimq/status", "online", START);
    daemon.wait_for_log("ready", START);
    let mut notified = String::new();
    let read_notifications = |notified: &mut String| {
        let mut buffer = [0u8; 512];
        while let Ok(n) = notify.recv(&mut buffer) {
            notified.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    };
    wait_until(
        "READY=1 and WATCHDOG=1 on NOTIFY_SOCKET",
        START,
        || {
            read_notifications(&mut notified);
            (notified.contains("READY=1") && notified.contains("WATCHDOG=1")).then_some(())
        },
        String::new,
    );

    // `validate` reaches the live broker without disturbing the daemon's session.
    let config_file = dir.path().join("e2e.toml");
    let output = sentimqd_command()
        .args(["validate", "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("config ok"), "{out}");

    // Retained status and info, seen by a client that subscribes afterwards.
    let late = TestClient::v5(broker.port, "e2e-late");
    late.subscribe("sentimq/status");
    late.subscribe("sentimq/info");
    late.wait_for_payload("sentimq/status", "online", REPLY);
    let info = late.wait_on("sentimq/info", REPLY);
    assert!(info.retain, "info is retained");
    let info = info.json();
    let identity = info["model"].as_str().expect("info.model").to_string();
    assert!(
        identity.starts_with("minilm-random@") && identity.len() == "minilm-random@".len() + 12,
        "{info}"
    );
    assert_eq!(info["labels"], serde_json::json!(["negative", "positive"]));
    assert_eq!(info["quantization"], "int8");
    assert_eq!(info["graph"], "model.int8.onnx");

    // Raw text.
    let raw = "What a wonderful, moving film.";
    client.publish("sentimq/classify/raw", raw);
    let result = client
        .wait_on("sentimq/result/sentimq/classify/raw", REPLY)
        .json();
    assert_eq!(result["id"], Value::Null);
    assert_eq!(result["source_topic"], "sentimq/classify/raw");
    assert_eq!(result["model"], identity.as_str());
    assert!(
        result.get("text").is_none(),
        "text is not echoed by default"
    );
    assert!(result["latency_ms"].as_f64().unwrap() >= 0.0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    assert!(
        (now_ms - result["ts"].as_f64().unwrap()).abs() < 60_000.0,
        "ts is unix ms"
    );
    assert_result_matches(model, &result, raw);

    // JSON with id, and with transaction.
    client.publish(
        "sentimq/classify/json",
        r#"{"id": "a1", "text": "Dull and far too long."}"#,
    );
    client.publish(
        "sentimq/classify/txn",
        r#"{"transaction": 42, "text": "Fine."}"#,
    );
    let result = client
        .wait_on("sentimq/result/sentimq/classify/json", REPLY)
        .json();
    assert_eq!(result["id"], "a1");
    assert_result_matches(model, &result, "Dull and far too long.");
    let result = client
        .wait_on("sentimq/result/sentimq/classify/txn", REPLY)
        .json();
    assert_eq!(result["id"], 42);

    // QoS 0 inputs are answered too (not redelivered after a crash, though).
    client.publish_qos0("sentimq/classify/q0", "quick one");
    client.wait_on("sentimq/result/sentimq/classify/q0", REPLY);

    // A `+` wildcard filter.
    client.publish("chat/room-7/message", "I loved every minute of it");
    let result = client
        .wait_on("sentimq/result/chat/room-7/message", REPLY)
        .json();
    assert_eq!(result["source_topic"], "chat/room-7/message");

    // MQTT v5 request/response: the reply goes to the Response Topic with the Correlation
    // Data, instead of the result topic. The marker published after it proves no result for
    // the request went to sentimq/result/… (replies leave in order).
    client.request(
        "chat/rpc/message",
        r#"{"id": 5, "text": "Not bad"}"#,
        "reply/me",
        b"corr-1",
    );
    let reply = client.wait_on("reply/me", REPLY);
    assert_eq!(reply.correlation.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(reply.json()["id"], 5);
    client.request("chat/rpc/message", "{broken", "reply/me", b"corr-2");
    let error = client.wait_for("error on reply/me", REPLY, |all| {
        all.iter()
            .find(|m| m.topic == "reply/me" && m.correlation.as_deref() == Some(&b"corr-2"[..]))
            .cloned()
    });
    assert_eq!(error.json()["error"], "bad_json");
    client.publish("chat/marker/message", "marker");
    client.wait_on("sentimq/result/chat/marker/message", REPLY);
    assert!(client.on("sentimq/result/chat/rpc/message").is_empty());
    assert!(client.on("sentimq/error").is_empty());

    // An MQTT v3.1.1 client.
    let old = TestClient::v311(broker.port, "e2e-v311");
    old.subscribe("sentimq/result/v311/#");
    old.publish("v311/ignored", "not subscribed by the daemon");
    old.publish(
        "sentimq/classify/v311",
        r#"{"id": 1, "text": "Great acting"}"#,
    );
    let result = client
        .wait_on("sentimq/result/sentimq/classify/v311", REPLY)
        .json();
    assert_eq!(result["id"], 1);

    // Stats arrive every second and count what happened.
    let stats = client.wait_for("stats with 8 results", REPLY, |all| {
        all.iter()
            .filter(|m| m.topic == "sentimq/stats")
            .map(|m| m.json())
            .find(|s| s["processed"].as_u64() >= Some(8))
    });
    assert_eq!(stats["errors"], 1, "{stats}");
    assert_eq!(stats["errors_by_code"]["bad_json"], 1, "{stats}");

    // SIGTERM: clean exit, retained offline.
    let status = daemon.terminate();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        daemon.log()
    );
    client.wait_for_payload("sentimq/status", "offline", REPLY);
    let log = daemon.log();
    assert!(log.contains("published offline"), "{log}");
    read_notifications(&mut notified);
    assert!(notified.contains("STOPPING=1"), "{notified}");
    let late = TestClient::v5(broker.port, "e2e-after");
    late.subscribe("sentimq/status");
    late.wait_for_payload("sentimq/status", "offline", REPLY);
    drop(broker);
}

/// Two daemons in one shared-subscription group: every message is answered exactly once.
#[test]
fn shared_subscription_answers_each_message_once() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let client = TestClient::v5(broker.port, "shared-client");
    client.subscribe("+/result/#");
    client.subscribe("+/status");
    let mut daemons: Vec<Daemon> = ["g1", "g2"]
        .iter()
        .map(|base| {
            let mut config = daemon_config(broker.port, &format!("shared-{base}"), base, model);
            set(&mut config, "mqtt.inputs", vec!["$share/workers/jobs/#"]);
            Daemon::spawn(dir.path(), base, &config)
        })
        .collect();
    for base in ["g1", "g2"] {
        client.wait_for_payload(&format!("{base}/status"), "online", START);
    }
    for daemon in &daemons {
        daemon.wait_for_log("ready", START);
    }
    const N: usize = 100;
    for i in 0..N {
        client.publish(
            &format!("jobs/{}", i % 4),
            format!(r#"{{"id": {i}, "text": "review number {i}"}}"#),
        );
    }
    client.wait_for("a result for every job", REPLY * 3, |all| {
        let ids: std::collections::BTreeSet<u64> = all
            .iter()
            .filter(|m| m.topic.contains("/result/"))
            .filter_map(|m| m.json()["id"].as_u64())
            .collect();
        (ids.len() == N).then_some(())
    });
    // Drain both daemons: anything still in flight is published before `offline`.
    for daemon in &mut daemons {
        assert!(daemon.terminate().success(), "{}", daemon.log());
    }
    for base in ["g1", "g2"] {
        client.wait_for_payload(&format!("{base}/status"), "offline", REPLY);
    }
    let mut per_id: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_daemon: BTreeMap<String, usize> = BTreeMap::new();
    for m in client
        .received()
        .iter()
        .filter(|m| m.topic.contains("/result/"))
    {
        *per_id.entry(m.json()["id"].as_u64().unwrap()).or_default() += 1;
        *per_daemon
            .entry(m.topic.split('/').next().unwrap().into())
            .or_default() += 1;
    }
    let repeated: Vec<_> = per_id.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "answered more than once: {repeated:?}");
    assert_eq!(per_id.len(), N);
    assert_eq!(
        per_daemon.len(),
        2,
        "both daemons took work: {per_daemon:?}"
    );
}
