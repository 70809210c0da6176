//! Bad input: every rejected message gets one error reply with its code, good messages in the
//! same stream get correct results, and the daemon stays up through a 10,000-message burst.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::TestClient;
use super::harness::{daemon_config, set, Broker, BrokerOptions, Daemon};
use super::{assert_result_matches, setup, REPLY, START};

const LIMIT: i64 = 2048;

fn start(
    name: &str,
) -> (
    tempfile::TempDir,
    Broker,
    TestClient,
    Daemon,
    &'static std::path::Path,
) {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let client = TestClient::v5(broker.port, &format!("{name}-client"));
    client.subscribe("bad/#");
    client.subscribe("reply/#");
    let mut config = daemon_config(broker.port, name, "bad", model);
    set(&mut config, "mqtt.inputs", vec!["in/#"]);
    set(&mut config, "input.max_payload_bytes", LIMIT);
    set(&mut config, "mqtt.receive_maximum", 100);
    let daemon = Daemon::spawn(dir.path(), name, &config);
    client.wait_for_payload("bad/status", "online", START);
    daemon.wait_for_log("ready", START);
    (dir, broker, client, daemon, model)
}

#[test]
fn each_bad_input_gets_its_error_code() {
    let (_dir, _broker, client, mut daemon, _model) = start("bad-codes");
    let cases: Vec<(&str, Vec<u8>, &str, Value)> = vec![
        ("utf8", b"caf\xc3 \xff".to_vec(), "bad_utf8", Value::Null),
        ("json", b"{\"text\": ".to_vec(), "bad_json", Value::Null),
        (
            "missing",
            br#"{"id": "m1", "body": "x"}"#.to_vec(),
            "missing_field",
            "m1".into(),
        ),
        (
            "field",
            br#"{"id": 2, "text": 5}"#.to_vec(),
            "bad_field",
            2.into(),
        ),
        ("empty", b"  \n ".to_vec(), "empty", Value::Null),
        (
            "empty-json",
            br#"{"id": 3, "text": ""}"#.to_vec(),
            "empty",
            3.into(),
        ),
        (
            "long",
            vec![b'a'; LIMIT as usize + 1],
            "too_long",
            Value::Null,
        ),
    ];
    for (name, payload, _, _) in &cases {
        client.publish(&format!("in/{name}"), payload.clone());
    }
    client.publish("in/good", "A good film");
    client.wait_on("bad/result/in/good", REPLY);
    let errors = client.wait_for("an error per bad input", REPLY, |all| {
        let errors: Vec<Value> = all
            .iter()
            .filter(|m| m.topic == "bad/error")
            .map(|m| m.json())
            .collect();
        (errors.len() >= cases.len()).then_some(errors)
    });
    assert_eq!(errors.len(), cases.len(), "{errors:?}");
    for (name, _, code, id) in &cases {
        let topic = format!("in/{name}");
        let error = errors
            .iter()
            .find(|e| e["source_topic"] == topic.as_str())
            .unwrap_or_else(|| panic!("no error for {topic}: {errors:?}"));
        assert_eq!(error["error"], *code, "{error}");
        assert_eq!(error["id"], *id, "{error}");
        assert!(!error["detail"].as_str().unwrap().is_empty());
    }

    // A v5 request gets its error on its response topic, with its correlation data.
    client.request("in/rpc", b"\xff".to_vec(), "reply/rpc", b"c-9");
    let reply = client.wait_on("reply/rpc", REPLY);
    assert_eq!(reply.correlation.as_deref(), Some(&b"c-9"[..]));
    assert_eq!(reply.json()["error"], "bad_utf8");
    // A response topic the daemon would read back is refused, on the error topic.
    client.request("in/loop", "fine text", "in/loop-reply", b"c-10");
    let error = client.wait_for("bad_topic error", REPLY, |all| {
        all.iter()
            .filter(|m| m.topic == "bad/error")
            .map(|m| m.json())
            .find(|e| e["source_topic"] == "in/loop")
    });
    assert_eq!(error["error"], "bad_topic", "{error}");
    assert!(daemon.is_running());
}

/// 10,000 messages at once, 9 in 10 of them bad: one reply each, correct results, still up.
#[test]
fn burst_of_10000_mixed_messages() {
    let (_dir, _broker, client, mut daemon, model) = start("bad-burst");
    const N: usize = 10_000;
    let texts = [
        "An absolute triumph of a film.",
        "Boring, predictable and far too long.",
        "It was fine, I suppose.",
    ];
    let long = "x".repeat(LIMIT as usize + 10);
    let started = Instant::now();
    for i in 0..N {
        let topic = format!("in/{i}");
        let payload: Vec<u8> = match i % 10 {
            0 => format!(
                r#"{{"id": {i}, "text": "{}"}}"#,
                texts[i / 10 % texts.len()]
            )
            .into_bytes(),
            1 | 6 => vec![0xc3, 0x28],
            2 | 7 => b"{\"id\":".to_vec(),
            3 | 8 => format!(r#"{{"id": {i}}}"#).into_bytes(),
            4 => b" ".to_vec(),
            _ => long.clone().into_bytes(),
        };
        client.publish(&topic, payload);
    }
    let replies = client.wait_for(
        "a reply for each of the 10,000 inputs",
        Duration::from_secs(150),
        |all| {
            let replies: Vec<_> = all
                .iter()
                .filter(|m| m.topic == "bad/error" || m.topic.starts_with("bad/result/"))
                .collect();
            (replies.len() >= N).then(|| replies.into_iter().cloned().collect::<Vec<_>>())
        },
    );
    let elapsed = started.elapsed();
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for reply in &replies {
        let json = reply.json();
        let source = json["source_topic"].as_str().expect("source_topic");
        let i: usize = source
            .trim_start_matches("in/")
            .parse()
            .expect("numbered topic");
        *seen.entry(i).or_default() += 1;
        if reply.topic == "bad/error" {
            assert_ne!(i % 10, 0, "a good input was rejected: {json}");
            *codes
                .entry(json["error"].as_str().unwrap().into())
                .or_default() += 1;
        } else {
            assert_eq!(i % 10, 0, "a bad input was classified: {json}");
            assert_eq!(json["id"], i);
            assert_result_matches(model, &json, texts[i / 10 % texts.len()]);
        }
    }
    assert_eq!(seen.len(), N, "inputs without a reply: {}", N - seen.len());
    assert!(
        seen.values().all(|n| *n == 1),
        "some inputs got several replies"
    );
    let expected: BTreeMap<String, usize> = [
        ("bad_utf8", 2000),
        ("bad_json", 2000),
        ("missing_field", 2000),
        ("empty", 1000),
        ("too_long", 2000),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(codes, expected);
    eprintln!("10,000 mixed messages answered in {elapsed:?}");
    assert!(daemon.is_running(), "daemon died: {}", daemon.log());
    client.publish("in/after", "still here?");
    client.wait_on("bad/result/in/after", REPLY);
}

/// A reply larger than the Maximum Packet Size the broker announces (mosquitto's
/// `max_packet_size`) goes out as a `reply_too_large` error instead: the input is answered and
/// the daemon keeps serving. Published as it was, the reply would be refused by the client
/// library, the connection dropped, and the same reply retried on every reconnect.
#[test]
fn a_reply_over_the_brokers_packet_limit_becomes_an_error_reply() {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let options = BrokerOptions {
        max_packet_size: Some(4096),
        ..BrokerOptions::default()
    };
    let broker = Broker::start(dir.path(), options);
    let client = TestClient::v5(broker.port, "big-client");
    client.subscribe("big/#");
    let mut config = daemon_config(broker.port, "big-reply", "big", model);
    set(&mut config, "mqtt.inputs", vec!["in/#"]);
    set(&mut config, "input.echo_text", true);
    let mut daemon = Daemon::spawn(dir.path(), "big-reply", &config);
    client.wait_for_payload("big/status", "online", START);

    // 1,012 bytes in; echoed, each control character is written as `\u0001` (6 bytes).
    let text = format!("A fine film.{}", "\u{1}".repeat(1_000));
    client.publish("in/big", text);
    client.publish("in/ok", "Great acting and a moving story.");
    let error = client.wait_on("big/error", REPLY).json();
    assert_eq!(error["error"], "reply_too_large", "{error}");
    assert_eq!(error["source_topic"], "in/big");
    let detail = error["detail"].as_str().unwrap();
    assert!(
        detail.contains("maximum packet size of 4096 bytes"),
        "{detail}"
    );
    let result = client.wait_on("big/result/in/ok", REPLY).json();
    assert_result_matches(model, &result, "Great acting and a moving story.");
    assert_eq!(result["text"], "Great acting and a moving story.");
    assert!(daemon.is_running());
    assert!(
        !daemon.log().contains("reconnecting"),
        "the connection stayed up:\n{}",
        daemon.log()
    );
}
