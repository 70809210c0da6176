//! The MQTT contract: how inputs are read and what results and error replies look like.
//!
//! An input payload is either raw UTF-8 text or, when it starts with `{`, a JSON object with the
//! text in [`InputConfig::text_field`](crate::daemon::config::InputConfig) and an optional `id`
//! (or `transaction`) that is echoed back. Results go to `<base>/result/<input topic>`, error
//! replies to `<base>/error`; an MQTT v5 request with a Response Topic gets either on that topic,
//! with its Correlation Data. Every rejected input gets exactly one error reply with a stable
//! [`ErrorCode`]; the README's tables document both shapes.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::message::{Completion, Inbound, Outbound, CONTENT_TYPE};
use super::topic;
use crate::classifier::Classification;

/// Why an input was rejected: the `error` field of an error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The payload is not valid UTF-8.
    BadUtf8,
    /// The payload starts with `{` but is not a JSON object.
    BadJson,
    /// The JSON object has no text field.
    MissingField,
    /// The text field is not a string, or `id` is not a string or number.
    BadField,
    /// The text is empty, only whitespace, or only characters the tokenizer drops.
    Empty,
    /// The payload is larger than `input.max_payload_bytes`.
    TooLong,
    /// The reply topic cannot be published to (bad v5 Response Topic, or too long).
    BadTopic,
    /// The queues are full and the input was sent at QoS 0 (QoS 1 inputs wait instead).
    Overloaded,
    /// The model failed on the batch (a bug or a resource problem; see the daemon's log).
    InferenceFailed,
    /// The reply would exceed the broker's Maximum Packet Size (an echoed text, a long id or
    /// topic): this error goes out in its place.
    ReplyTooLarge,
}

impl ErrorCode {
    /// Every code, in README order.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadUtf8,
        ErrorCode::BadJson,
        ErrorCode::MissingField,
        ErrorCode::BadField,
        ErrorCode::Empty,
        ErrorCode::TooLong,
        ErrorCode::BadTopic,
        ErrorCode::Overloaded,
        ErrorCode::InferenceFailed,
        ErrorCode::ReplyTooLarge,
    ];

    /// The snake_case code published in `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadUtf8 => "bad_utf8",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::BadField => "bad_field",
            ErrorCode::Empty => "empty",
            ErrorCode::TooLong => "too_long",
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::InferenceFailed => "inference_failed",
            ErrorCode::ReplyTooLarge => "reply_too_large",
        }
    }

    /// Position in [`ErrorCode::ALL`] (for per-code counters).
    pub(crate) fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|c| *c == self)
            .expect("ALL lists every code")
    }
}

/// An input that cannot be classified: the code, a human detail and the `id` if one was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The stable code.
    pub code: ErrorCode,
    /// What exactly is wrong, for humans.
    pub detail: String,
    /// The input's `id`, when the payload got far enough to have one.
    pub id: Option<Value>,
}

impl Rejection {
    /// A rejection without an id.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Rejection {
            code,
            detail: detail.into(),
            id: None,
        }
    }
}

/// A readable input: the text to classify and the id to echo.
#[derive(Clone, Debug, PartialEq)]
pub struct Request<'a> {
    /// The `id` (or `transaction`) of a JSON input.
    pub id: Option<Value>,
    /// The text.
    pub text: std::borrow::Cow<'a, str>,
}

/// Reads one payload: size limit, UTF-8, raw text or JSON object, text field, id.
pub fn parse_input<'a>(
    payload: &'a [u8],
    text_field: &str,
    max_bytes: usize,
) -> Result<Request<'a>, Rejection> {
    if payload.len() > max_bytes {
        return Err(Rejection::new(
            ErrorCode::TooLong,
            format!(
                "payload is {} bytes, the limit is {max_bytes} (input.max_payload_bytes)",
                payload.len()
            ),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            ErrorCode::BadUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let request = if text.trim_start().starts_with('{') {
        parse_json(text, text_field)?
    } else {
        Request {
            id: None,
            text: text.into(),
        }
    };
    if request.text.trim().is_empty() {
        return Err(Rejection {
            code: ErrorCode::Empty,
            detail: "the text is empty".into(),
            id: request.id,
        });
    }
    Ok(request)
}

fn parse_json<'a>(text: &str, text_field: &str) -> Result<Request<'a>, Rejection> {
    let mut object: serde_json::Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| Rejection::new(ErrorCode::BadJson, format!("not a JSON object: {e}")))?;
    let id = match object.remove("id").or_else(|| object.remove("transaction")) {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
        Some(other) => {
            return Err(Rejection::new(
                ErrorCode::BadField,
                format!(
                    "\"id\" must be a string or a number, found {}",
                    kind(&other)
                ),
            ))
        }
    };
    match object.remove(text_field) {
        Some(Value::String(text)) => Ok(Request {
            id,
            text: text.into(),
        }),
        Some(other) => Err(Rejection {
            code: ErrorCode::BadField,
            detail: format!("{text_field:?} must be a string, found {}", kind(&other)),
            id,
        }),
        None => Err(Rejection {
            code: ErrorCode::MissingField,
            detail: format!("the JSON object has no {text_field:?} field (input.text_field)"),
            id,
        }),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON published for a classified input.
#[derive(Serialize)]
struct ResultMessage<'a> {
    id: Option<&'a Value>,
    source_topic: &'a str,
    label: &'a str,
    score: f32,
    scores: Scores<'a>,
    model: &'a str,
    tokens: usize,
    truncated: bool,
    latency_ms: f64,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

/// The JSON published for a rejected input.
#[derive(Serialize)]
struct ErrorMessage<'a> {
    id: Option<&'a Value>,
    source_topic: &'a str,
    error: &'static str,
    detail: &'a str,
    ts: u64,
}

/// Label → probability as a JSON object, in the model's label order.
struct Scores<'a>(&'a [(String, f32)]);

impl Serialize for Scores<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (label, p) in self.0 {
            map.serialize_entry(label, p)?;
        }
        map.end()
    }
}

/// Builds the replies of one daemon: topics, payloads, completions.
#[derive(Clone, Debug)]
pub(crate) struct Replier {
    base_topic: String,
    model: String,
    echo_text: bool,
    inputs: Vec<String>,
    uncertain_below: f32,
}

impl Replier {
    /// A replier publishing under `base_topic` and naming `model` (`<name>@<sha12>`);
    /// `inputs` are the subscribed filters, which a response topic must not match.
    pub fn new(base_topic: &str, model: &str, echo_text: bool, inputs: &[String]) -> Self {
        Replier {
            base_topic: base_topic.to_string(),
            model: model.to_string(),
            echo_text,
            inputs: inputs.to_vec(),
            uncertain_below: 0.0,
        }
    }

    /// Results whose top score is below `below` carry
    /// [`UNCERTAIN_LABEL`](crate::classifier::UNCERTAIN_LABEL) (0: none do).
    pub fn with_uncertain_below(mut self, below: f32) -> Self {
        self.uncertain_below = below;
        self
    }

    /// The label published for `verdict`: the model's, or
    /// [`UNCERTAIN_LABEL`](crate::classifier::UNCERTAIN_LABEL) when its score is below
    /// `model.uncertain_below`.
    pub fn label<'a>(&self, verdict: &'a Classification) -> &'a str {
        verdict.label_unless_below(self.uncertain_below)
    }

    /// The result of a classified input. `text` is echoed when `input.echo_text` is on.
    pub fn result(
        &self,
        input: &Inbound,
        id: Option<&Value>,
        text: &str,
        verdict: &Classification,
        buffer: &mut Vec<u8>,
    ) -> Outbound {
        let topic = match &input.response {
            Some(route) => route.topic.clone(),
            None => format!("{}/result/{}", self.base_topic, input.topic),
        };
        if let Err(e) = topic::validate_name(&topic) {
            return self.error(
                input,
                &Rejection {
                    code: ErrorCode::BadTopic,
                    detail: format!("reply topic {e}"),
                    id: id.cloned(),
                },
                buffer,
            );
        }
        let message = ResultMessage {
            id,
            source_topic: &input.topic,
            label: self.label(verdict),
            score: verdict.score,
            scores: Scores(&verdict.scores),
            model: &self.model,
            tokens: verdict.tokens,
            truncated: verdict.truncated,
            latency_ms: latency_ms(input.received),
            ts: unix_ms(),
            text: self.echo_text.then_some(text),
        };
        let reply = self.outbound(input, topic, &message, None, buffer);
        self.within_limit(input, reply, id, buffer)
    }

    /// The error reply of a rejected input: on its response topic (v5) or `<base>/error`.
    pub fn error(&self, input: &Inbound, rejection: &Rejection, buffer: &mut Vec<u8>) -> Outbound {
        let on_route = rejection.code != ErrorCode::BadTopic;
        let reply = self.error_reply(input, rejection, &input.topic, on_route, buffer);
        self.within_limit(input, reply, rejection.id.as_ref(), buffer)
    }

    /// `reply` when the broker takes it (its Maximum Packet Size on the input's connection),
    /// else a `reply_too_large` error in its place: with the input's id, or without it, or at
    /// last on `<base>/error` with the first [`SHORT_SOURCE_TOPIC`] bytes of the input's
    /// topic, whichever fits first. A broker whose limit cannot hold even that (a few hundred
    /// bytes) gets it anyway.
    fn within_limit(
        &self,
        input: &Inbound,
        reply: Outbound,
        id: Option<&Value>,
        buffer: &mut Vec<u8>,
    ) -> Outbound {
        let Some(limit) = input.reply_limit.map(|limit| limit as usize) else {
            return reply;
        };
        let size = publish_size(&reply);
        if size <= limit {
            return reply;
        }
        let mut rejection = Rejection {
            code: ErrorCode::ReplyTooLarge,
            detail: format!(
                "the reply is {size} bytes, more than the broker's maximum packet size of {limit} bytes"
            ),
            id: id.cloned(),
        };
        let fallback = self.error_reply(input, &rejection, &input.topic, true, buffer);
        if publish_size(&fallback) <= limit {
            return fallback;
        }
        rejection.id = None;
        let fallback = self.error_reply(input, &rejection, &input.topic, true, buffer);
        if publish_size(&fallback) <= limit {
            return fallback;
        }
        let short = prefix_at_char_boundary(&input.topic, SHORT_SOURCE_TOPIC);
        self.error_reply(input, &rejection, short, false, buffer)
    }

    /// An error reply naming `source_topic`: on the input's response topic when `on_route`
    /// and the route is usable, else on `<base>/error`.
    fn error_reply(
        &self,
        input: &Inbound,
        rejection: &Rejection,
        source_topic: &str,
        on_route: bool,
        buffer: &mut Vec<u8>,
    ) -> Outbound {
        let topic = match &input.response {
            Some(route) if on_route && self.check_route(input).is_none() => route.topic.clone(),
            _ => format!("{}/error", self.base_topic),
        };
        let message = ErrorMessage {
            id: rejection.id.as_ref(),
            source_topic,
            error: rejection.code.as_str(),
            detail: &rejection.detail,
            ts: unix_ms(),
        };
        self.outbound(input, topic, &message, Some(rejection.code), buffer)
    }

    /// The rejection of an input whose v5 Response Topic is unusable, if it is: not a valid
    /// topic name, or one the daemon subscribes to (its reply would be classified in turn).
    pub fn check_route(&self, input: &Inbound) -> Option<Rejection> {
        let route = input.response.as_ref()?;
        if let Err(e) = topic::validate_name(&route.topic) {
            return Some(Rejection::new(
                ErrorCode::BadTopic,
                format!("response topic {:?} {e}", route.topic),
            ));
        }
        let filter = self
            .inputs
            .iter()
            .find(|f| topic::matches(f, &route.topic))?;
        Some(Rejection::new(
            ErrorCode::BadTopic,
            format!(
                "response topic {:?} matches the input filter {filter:?}; the reply would be classified again",
                route.topic
            ),
        ))
    }

    fn outbound(
        &self,
        input: &Inbound,
        topic: String,
        message: &impl Serialize,
        error: Option<ErrorCode>,
        buffer: &mut Vec<u8>,
    ) -> Outbound {
        buffer.clear();
        serde_json::to_writer(&mut *buffer, message).expect("replies serialize to memory");
        let correlation = input
            .response
            .as_ref()
            .filter(|route| route.topic == topic)
            .and_then(|route| route.correlation.clone());
        Outbound {
            topic,
            // One copy per reply: the payload must outlive the reused buffer.
            payload: Bytes::copy_from_slice(buffer),
            correlation,
            completion: input.ack.map_or(Completion::Nothing, Completion::Input),
            error,
        }
    }
}

/// Bytes of the input topic a `reply_too_large` error names when the whole one does not fit.
const SHORT_SOURCE_TOPIC: usize = 128;

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn prefix_at_char_boundary(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Bytes of `reply` as a QoS 1 PUBLISH with the properties the outbox sets, counting the
/// variable-length fields at their longest (so never less than the real size).
pub(crate) fn publish_size(reply: &Outbound) -> usize {
    // Fixed header with the longest remaining length, topic, packet id, properties' length.
    let headers = 1 + 4 + (2 + reply.topic.len()) + 2 + 4;
    // Content Type (id, length, value) and Correlation Data (id, length, value).
    let properties = 3
        + CONTENT_TYPE.len()
        + reply
            .correlation
            .as_ref()
            .map_or(0, |correlation| 3 + correlation.len());
    headers + properties + reply.payload.len()
}

/// Milliseconds since `start`, rounded to 0.01 ms.
fn latency_ms(start: Instant) -> f64 {
    (start.elapsed().as_micros() as f64 / 10.0).round() / 100.0
}

/// Milliseconds since the Unix epoch (the `ts` field).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::UNCERTAIN_LABEL;
    use crate::daemon::message::{InputAck, ResponseRoute};

    fn parse(payload: &[u8]) -> Result<Request<'_>, Rejection> {
        parse_input(payload, "text", 64)
    }

    #[test]
    fn raw_and_json_inputs() {
        let raw = parse(b"A fine film").unwrap();
        assert_eq!((raw.id, raw.text.as_ref()), (None, "A fine film"));
        let json = parse(br#"{"id": 7, "text": "ok"}"#).unwrap();
        assert_eq!(json.id, Some(Value::from(7)));
        assert_eq!(json.text, "ok");
        let transaction = parse(br#" {"transaction": "t1", "text": "ok"}"#).unwrap();
        assert_eq!(transaction.id, Some(Value::from("t1")));
    }

    #[test]
    fn every_bad_input_has_its_code() {
        let code = |payload: &[u8]| parse(payload).unwrap_err().code;
        assert_eq!(code(b"\xff\xfe"), ErrorCode::BadUtf8);
        assert_eq!(code(b"{not json"), ErrorCode::BadJson);
        assert_eq!(code(b"{\"text\": 1}"), ErrorCode::BadField);
        assert_eq!(code(b"{\"id\": [1], \"text\": \"x\"}"), ErrorCode::BadField);
        assert_eq!(code(b"{\"body\": \"x\"}"), ErrorCode::MissingField);
        assert_eq!(code(b"   "), ErrorCode::Empty);
        assert_eq!(code(b"{\"id\": 1, \"text\": \" \"}"), ErrorCode::Empty);
        assert_eq!(code(&[b'a'; 65]), ErrorCode::TooLong);
        let missing = parse(br#"{"id": "x", "body": "t"}"#).unwrap_err();
        assert_eq!(missing.id, Some(Value::from("x")), "id kept for the reply");
    }

    /// Outside bytes never panic the parser: random payloads, half of them JSON-looking.
    #[test]
    fn random_payloads_never_panic() {
        let mut rng = crate::rng::SplitMix64::new(7);
        let alphabet = b"{}[]\":,0123456789 abtexid\\\xc3\xa9\xff\n";
        for round in 0..20_000 {
            let len = rng.below(48);
            let mut payload: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            if round % 2 == 0 {
                payload.insert(0, b'{');
            }
            match parse_input(&payload, "text", 40) {
                Ok(request) => assert!(!request.text.trim().is_empty()),
                Err(rejection) => assert!(!rejection.detail.is_empty()),
            }
        }
    }

    #[test]
    fn codes_are_snake_case_and_distinct() {
        let names: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i);
        }
    }

    /// A 4-token verdict: positive at `score`.
    fn positive(score: f32) -> Classification {
        Classification {
            label: "positive".into(),
            score,
            scores: vec![("negative".into(), 1.0 - score), ("positive".into(), score)],
            tokens: 4,
            truncated: false,
        }
    }

    fn inbound(response: Option<ResponseRoute>) -> Inbound {
        Inbound {
            topic: "chat/1/message".into(),
            payload: Bytes::new(),
            response,
            ack: Some(InputAck { epoch: 1, pkid: 5 }),
            received: Instant::now(),
            is_redelivery: false,
            reply_limit: None,
        }
    }

    #[test]
    fn scores_below_the_threshold_are_published_as_uncertain() {
        let replier = Replier::new("sentimq", "m@abc", false, &[]).with_uncertain_below(0.7);
        let mut buffer = Vec::new();
        let publish = |score: f32, buffer: &mut Vec<u8>| -> Value {
            let out = replier.result(&inbound(None), None, "hi", &positive(score), buffer);
            serde_json::from_slice(&out.payload).unwrap()
        };
        let unsure = publish(0.69, &mut buffer);
        assert_eq!(unsure["label"], UNCERTAIN_LABEL);
        assert_eq!(unsure["score"], 0.69, "the model's score is kept");
        assert_eq!(unsure["scores"]["positive"], 0.69);
        assert_eq!(publish(0.7, &mut buffer)["label"], "positive");
        assert_eq!(replier.label(&positive(0.5)), UNCERTAIN_LABEL);
        let off = Replier::new("sentimq", "m@abc", false, &[]);
        assert_eq!(off.label(&positive(0.5)), "positive", "off by default");
    }

    #[test]
    fn replies_over_the_brokers_packet_limit_become_errors_that_fit() {
        let replier = Replier::new("sentimq", "m@abc", true, &[]);
        let verdict = positive(0.9);
        let text = "\u{1}".repeat(2_000);
        let id = Value::String("i".repeat(600));
        let mut buffer = Vec::new();
        let reply = |input: &Inbound, buffer: &mut Vec<u8>| {
            let out = replier.result(input, Some(&id), &text, &verdict, buffer);
            let json: Value = serde_json::from_slice(&out.payload).unwrap();
            (out, json)
        };

        let mut input = inbound(None);
        let (whole, json) = reply(&input, &mut buffer);
        assert_eq!(json["label"], "positive", "no limit: the echo goes out");
        assert!(
            publish_size(&whole) > 12_000,
            "control characters are escaped 6-fold"
        );

        input.reply_limit = Some(1_000);
        let (out, json) = reply(&input, &mut buffer);
        assert!(publish_size(&out) <= 1_000);
        assert_eq!(out.topic, "sentimq/error");
        assert_eq!(json["error"], "reply_too_large");
        assert_eq!(json["id"], id, "the id still fits");
        assert_eq!(json["source_topic"], "chat/1/message");
        assert_eq!(out.completion, whole.completion, "it completes the input");
        assert_eq!(
            (whole.error, out.error),
            (None, Some(ErrorCode::ReplyTooLarge))
        );

        input.reply_limit = Some(400);
        let (out, json) = reply(&input, &mut buffer);
        assert!(publish_size(&out) <= 400);
        assert_eq!(
            json["id"],
            Value::Null,
            "an id that does not fit is left out"
        );

        input.topic = format!("chat/{}/message", "é".repeat(3_000));
        let (out, json) = reply(&input, &mut buffer);
        assert!(publish_size(&out) <= 400, "{}", publish_size(&out));
        let source = json["source_topic"].as_str().unwrap();
        assert!(input.topic.starts_with(source) && source.len() <= SHORT_SOURCE_TOPIC);

        input.reply_limit = Some(u32::MAX);
        assert_eq!(reply(&input, &mut buffer).1["label"], "positive");
    }

    #[test]
    fn results_and_errors_are_routed() {
        let replier = Replier::new("sentimq", "m@abc", false, &["chat/+/message".into()]);
        let verdict = positive(0.9);
        let mut buffer = Vec::new();
        let out = replier.result(&inbound(None), None, "hi", &verdict, &mut buffer);
        assert_eq!(out.topic, "sentimq/result/chat/1/message");
        assert_eq!(
            out.completion,
            Completion::Input(InputAck { epoch: 1, pkid: 5 })
        );
        let json: Value = serde_json::from_slice(&out.payload).unwrap();
        assert_eq!(
            json["scores"]["positive"], 0.9,
            "f32 written in its shortest form"
        );
        assert_eq!(json["id"], Value::Null);
        assert!(json.get("text").is_none());

        let route = ResponseRoute {
            topic: "reply/here".into(),
            correlation: Some(Bytes::from_static(b"c1")),
        };
        let out = replier.result(&inbound(Some(route)), None, "hi", &verdict, &mut buffer);
        assert_eq!(out.topic, "reply/here");
        assert_eq!(out.correlation.as_deref(), Some(&b"c1"[..]));

        let bad_route = ResponseRoute {
            topic: "reply/#".into(),
            correlation: None,
        };
        let input = inbound(Some(bad_route));
        let rejection = replier.check_route(&input).unwrap();
        let out = replier.error(&input, &rejection, &mut buffer);
        assert_eq!(out.topic, "sentimq/error");
        let json: Value = serde_json::from_slice(&out.payload).unwrap();
        assert_eq!(json["error"], "bad_topic");
        assert_eq!(json["source_topic"], "chat/1/message");

        let looping = inbound(Some(ResponseRoute {
            topic: "chat/2/message".into(),
            correlation: None,
        }));
        assert_eq!(
            replier.check_route(&looping).map(|r| r.code),
            Some(ErrorCode::BadTopic)
        );
    }
}
