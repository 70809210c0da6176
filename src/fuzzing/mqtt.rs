//! An MQTT input as the daemon's worker reads it and the reply it publishes.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use super::{fields, flags, shipped_model};
use crate::classifier::{Classification, Classifier};
use crate::daemon::config::InputConfig;
use crate::daemon::contract::{publish_size, Replier};
use crate::daemon::{read_input, topic_matches, validate_topic_name};
use crate::daemon::{Completion, Inbound, InputAck, ResponseRoute};

/// The broker packet limit of bit 5: a few echoed texts, ids or topics exceed it.
const REPLY_LIMIT: u32 = 512;

/// The input filters of the fuzzed daemon: a reply must never land on one of them.
const INPUTS: &[&str] = &["sentimq/in/#", "+/text"];

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| {
        Classifier::load(&shipped_model(), None)
            .expect("the shipped model loads (models/imdb-minilm)")
    })
}

/// `flags · topic · 0xFF · response topic · 0xFF · correlation data · 0xFF · payload`.
///
/// Flags: bit 0 echoes the text, bit 1 gives the input a v5 response route (its topic and
/// correlation data), bit 2 makes it QoS 1, bit 3 caps payloads at 64 bytes (else 64 KiB),
/// bit 4 reads JSON texts from `message` (else `text`), bit 5 gives the connection a broker
/// Maximum Packet Size of [`REPLY_LIMIT`] bytes.
///
/// Invariants: the input gets exactly one reply (a result or an error), on a valid topic name
/// that no input filter matches, no larger than the broker's packet limit, whose payload is a
/// JSON object naming the input's topic (or, replacing a reply over the limit, its start) and
/// either a label or an error code; a QoS 1 input's reply completes its acknowledgement;
/// correlation data goes back only on the response topic; a result reports at most the model's
/// window of tokens.
pub fn mqtt_input(data: &[u8]) {
    let (flags, data) = flags(data);
    let [topic, response_topic, correlation, payload] = fields::<4>(data);
    let input = Inbound {
        topic: String::from_utf8_lossy(topic).into_owned(),
        payload: Bytes::copy_from_slice(payload),
        response: (flags & 2 != 0).then(|| ResponseRoute {
            topic: String::from_utf8_lossy(response_topic).into_owned(),
            correlation: (!correlation.is_empty()).then(|| Bytes::copy_from_slice(correlation)),
        }),
        ack: (flags & 4 != 0).then_some(InputAck { epoch: 1, pkid: 7 }),
        received: Instant::now(),
        is_redelivery: false,
        reply_limit: (flags & 32 != 0).then_some(REPLY_LIMIT),
    };
    let input_config = InputConfig {
        text_field: if flags & 16 != 0 { "message" } else { "text" }.into(),
        max_payload_bytes: if flags & 8 != 0 { 64 } else { 64 * 1024 },
        echo_text: flags & 1 != 0,
    };
    let inputs: Vec<String> = INPUTS.iter().map(|f| f.to_string()).collect();
    let replier = Replier::new(
        "sentimq",
        "imdb-minilm@0123456789ab",
        input_config.echo_text,
        &inputs,
    );
    let classifier = classifier();
    let mut buffer = Vec::new();

    let reply = match read_input(&replier, &input_config, classifier, &input) {
        Ok((encoded, id, text)) => {
            let window = classifier.max_tokens();
            let tokens = encoded.ids.len();
            assert!(
                (3..=window).contains(&tokens),
                "{tokens} tokens, window {window}"
            );
            assert_eq!(text.is_some(), input_config.echo_text);
            let labels = &classifier.manifest().labels;
            let verdict = Classification {
                label: labels[0].clone(),
                score: 1.0,
                scores: labels.iter().map(|l| (l.clone(), 0.5)).collect(),
                tokens,
                truncated: encoded.is_truncated,
            };
            replier.result(
                &input,
                id.as_ref(),
                text.as_deref().unwrap_or(""),
                &verdict,
                &mut buffer,
            )
        }
        Err(rejection) => {
            assert!(
                !rejection.detail.is_empty(),
                "an error reply says what is wrong"
            );
            replier.error(&input, &rejection, &mut buffer)
        }
    };

    validate_topic_name(&reply.topic)
        .unwrap_or_else(|e| panic!("reply topic {:?} is invalid: {e}", reply.topic));
    for filter in &inputs {
        assert!(
            !topic_matches(filter, &reply.topic),
            "reply topic {:?} matches the input filter {filter:?}",
            reply.topic
        );
    }
    if let Some(limit) = input.reply_limit {
        assert!(
            publish_size(&reply) <= limit as usize,
            "the broker takes the reply"
        );
    }
    let message: Value = serde_json::from_slice(&reply.payload).expect("replies are JSON");
    let object = message.as_object().expect("replies are JSON objects");
    let source_topic = object
        .get("source_topic")
        .and_then(Value::as_str)
        .expect("replies name the input's topic");
    if object.get("error").and_then(Value::as_str) == Some("reply_too_large") {
        assert!(input.topic.starts_with(source_topic));
    } else {
        assert_eq!(source_topic, input.topic);
    }
    assert!(
        object.contains_key("label") != object.contains_key("error"),
        "a reply is a result or an error: {message}"
    );
    match input.ack {
        Some(ack) => assert_eq!(reply.completion, Completion::Input(ack)),
        None => assert_eq!(reply.completion, Completion::Nothing),
    }
    if reply.correlation.is_some() {
        let route = input
            .response
            .as_ref()
            .expect("correlation data only comes from a route");
        assert_eq!(
            route.topic, reply.topic,
            "correlation data only on the response topic"
        );
        assert_eq!(route.correlation, reply.correlation);
    }
}
