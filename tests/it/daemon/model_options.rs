//! `[model]` options that change how the daemon runs its model: warm start (the plans of the
//! configured length buckets are built before the daemon says it is ready, the rest on a
//! background thread after it, so its first answers wait for no plan optimization), a
//! window shorter than the model's, and the `uncertain` label below a configured score.

use sentimq::classifier::Classifier;

use super::client::TestClient;
use super::harness::{daemon_config, set, Broker, BrokerOptions, Daemon};
use super::{assert_result_matches, expected, setup, REPLY, START};

const WARM_LOG: &str = "plans built before going online";
const BACKGROUND_LOG: &str = "plans built in the background";

/// A ready daemon serving the test model, its broker and a client subscribed to its results and
/// `info`; fields drop in order, the daemon first.
struct Running {
    daemon: Daemon,
    client: TestClient,
    _broker: Broker,
    _dir: tempfile::TempDir,
}

/// Starts a broker and a daemon under topic base `base` with the `[model]` `settings` applied,
/// and waits until it is ready.
fn start_with(base: &str, settings: &[(&str, toml::Value)]) -> Running {
    let model = setup();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), BrokerOptions::default());
    let client = TestClient::v5(broker.port, &format!("{base}-client"));
    client.subscribe(&format!("{base}/result/#"));
    client.subscribe(&format!("{base}/info"));
    let mut config = daemon_config(broker.port, &format!("{base}-daemon"), base, model);
    for (key, value) in settings {
        set(&mut config, key, value.clone());
    }
    let daemon = Daemon::spawn(dir.path(), base, &config);
    daemon.wait_for_log("ready", START);
    Running {
        daemon,
        client,
        _broker: broker,
        _dir: dir,
    }
}

/// Starts a daemon with `model.warm_up_tokens = tokens` and `model.warm_up_background =
/// background`, sends one text once it is ready, waits for `wait_for` in its log if given, and
/// returns the log (checking the answer on the way).
fn start_and_answer_once(
    tokens: i64,
    background: bool,
    wait_for: Option<&str>,
    base: &str,
) -> String {
    let model = setup();
    let Running { daemon, client, .. } = &start_with(
        base,
        &[
            ("model.warm_up_tokens", tokens.into()),
            ("model.warm_up_background", background.into()),
        ],
    );
    let text = "A warm welcome: the first review of the day, and a fine one.";
    client.publish(
        &format!("{base}/classify"),
        format!(r#"{{"id": 1, "text": "{text}"}}"#),
    );
    let result = client.wait_on(&format!("{base}/result/{base}/classify"), REPLY);
    assert_result_matches(model, &result.json(), text);
    if let Some(needle) = wait_for {
        daemon.wait_for_log(needle, START);
    }
    daemon.log()
}

/// The first line of `log` containing `needle`.
fn line_with<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} line; log:\n{log}"))
}

#[test]
fn plans_up_to_the_configured_length_are_built_before_ready_the_rest_after() {
    let log = start_and_answer_once(64, true, Some(BACKGROUND_LOG), "warm");
    let warm = log
        .find(WARM_LOG)
        .unwrap_or_else(|| panic!("no warm-up line; log:\n{log}"));
    let ready = log
        .find("subscribed; ready")
        .unwrap_or_else(|| panic!("never ready; log:\n{log}"));
    assert!(warm < ready, "warmed up after ready; log:\n{log}");
    // 16-token buckets: 16, 32, 48, 64.
    let line = line_with(&log, WARM_LOG);
    assert!(
        line.contains("plans=4") && line.contains("up_to_tokens=64"),
        "{line}"
    );
    // Then the test model's whole 128-token window: 80, 96, 112 and 128 too.
    let background = log.find(BACKGROUND_LOG).expect("waited for it");
    assert!(
        ready < background,
        "built in the background before ready; log:\n{log}"
    );
    let line = line_with(&log, BACKGROUND_LOG);
    assert!(
        line.contains("plans=8") && line.contains("up_to_tokens=128"),
        "{line}"
    );
}

#[test]
fn warm_up_stops_at_the_window_and_can_be_turned_off() {
    // The default: every bucket of the test model's 128-token window (8 plans) before ready,
    // and nothing left for the background.
    let log = start_and_answer_once(4096, true, None, "window");
    let line = line_with(&log, WARM_LOG);
    assert!(
        line.contains("plans=8") && line.contains("up_to_tokens=128"),
        "{line}"
    );
    assert!(!log.contains(BACKGROUND_LOG), "{log}");

    let log = start_and_answer_once(0, false, None, "cold");
    assert!(!log.contains(WARM_LOG), "warmed up with 0; log:\n{log}");
    assert!(
        !log.contains(BACKGROUND_LOG),
        "background build when off; log:\n{log}"
    );
}

#[test]
fn a_shorter_window_reads_head_and_tail_of_that_length() {
    let model = setup();
    let Running { client, .. } = &start_with("short", &[("model.max_tokens", 32.into())]);
    assert_eq!(client.wait_on("short/info", REPLY).json()["max_tokens"], 32);

    let text = "The opening was slow and the middle dragged on and on, scene after scene of \
                people talking in rooms about nothing in particular, but the last half hour \
                was wonderful, moving and beautifully acted: I loved the ending.";
    client.publish(
        "short/classify",
        format!(r#"{{"id": 1, "text": "{text}"}}"#),
    );
    let result = client.wait_on("short/result/short/classify", REPLY).json();
    let want = Classifier::load(model, None)
        .and_then(|c| c.with_max_tokens(32))
        .expect("test model with a 32-token window")
        .classify(&[text])
        .expect("classifies")
        .remove(0);
    assert_eq!(result["tokens"], 32, "{result}");
    assert_eq!(result["truncated"], true, "{result}");
    assert_eq!(result["label"], want.label.as_str(), "{result}");
    let score = result["score"].as_f64().expect("score");
    assert!(
        (score - f64::from(want.score)).abs() <= 1e-3,
        "{result} vs {want:?}"
    );
}

/// With `model.uncertain_below` between the scores of two texts, the less certain one is
/// published as `uncertain` (with the model's score and scores), the other with its label.
#[test]
fn results_below_the_configured_score_are_uncertain() {
    let model = setup();
    let texts = [
        "A fine film, warm and funny, with a cast that clearly enjoyed every scene.",
        "The worst hour and a half I have spent in a cinema: dull, loud and stupid.",
        "It is a film about a family that moves to a new town.",
        "Brilliant, moving and beautifully shot; I loved every minute of it.",
        "Awful acting, a plot full of holes and an ending that made no sense at all.",
    ];
    let mut scored: Vec<(f32, &str)> = texts
        .iter()
        .map(|t| (expected(model, t).score, *t))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ((low, unsure), (high, sure)) = (scored[0], scored[scored.len() - 1]);
    assert!(
        high - low > 0.002,
        "the test model scores these texts too alike to place a threshold between them: {scored:?}"
    );
    let threshold = f64::from((low + high) / 2.0);

    let Running { client, .. } =
        &start_with("unsure", &[("model.uncertain_below", threshold.into())]);
    let info = client.wait_on("unsure/info", REPLY).json();
    assert_eq!(info["uncertain_below"], threshold, "{info}");
    for (id, text) in [(1, unsure), (2, sure)] {
        client.publish(
            &format!("unsure/classify/{id}"),
            format!(r#"{{"id": {id}, "text": "{text}"}}"#),
        );
        let result = client
            .wait_on(&format!("unsure/result/unsure/classify/{id}"), REPLY)
            .json();
        assert_eq!(result["id"], id, "{result}");
        let want = expected(model, text);
        let label = if id == 1 {
            "uncertain"
        } else {
            want.label.as_str()
        };
        assert_eq!(result["label"], label, "threshold {threshold}: {result}");
        let score = result["score"].as_f64().expect("score");
        assert!(
            (score - f64::from(want.score)).abs() <= 1e-3,
            "{result} vs {want:?}"
        );
        assert_eq!(
            result["scores"].as_object().map(|o| o.len()),
            Some(2),
            "{result}"
        );
    }
}
