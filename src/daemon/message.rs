//! What travels between the daemon's stages: a received input and a reply to publish.

use std::time::Instant;

use bytes::Bytes;

use super::contract::ErrorCode;

/// How to acknowledge one QoS 1 input: its packet id on the connection it arrived on.
///
/// The epoch counts connections; an ack is only sent on the connection the input came in on.
/// After a reconnect the broker redelivers unacknowledged inputs with the same packet id, and
/// an ack from an older epoch could hit a different message that reuses the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputAck {
    /// Connection number (incremented on every connection loss).
    pub epoch: u64,
    /// MQTT packet identifier.
    pub pkid: u16,
}

/// An MQTT v5 request/response route: reply on `topic` with this correlation data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseRoute {
    /// The request's Response Topic.
    pub topic: String,
    /// The request's Correlation Data, returned unchanged.
    pub correlation: Option<Bytes>,
}

/// One received input message.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The topic it was published to.
    pub topic: String,
    /// The raw payload.
    pub payload: Bytes,
    /// MQTT v5 Response Topic and Correlation Data, when the sender asked for a direct reply.
    pub response: Option<ResponseRoute>,
    /// How to acknowledge it (QoS 1), or `None` (QoS 0, or received while reconnecting).
    pub ack: Option<InputAck>,
    /// When the event loop received it.
    pub received: Instant,
    /// The broker marked it as a redelivery (DUP flag).
    pub is_redelivery: bool,
    /// The broker's Maximum Packet Size (CONNACK) on the connection it arrived on: a reply
    /// larger than that would be refused, so it is replaced by a `reply_too_large` error.
    pub reply_limit: Option<u32>,
}

/// What a publish completes when the broker acknowledges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Acknowledge this input (its result or error is now with the broker).
    Input(InputAck),
    /// Nothing to acknowledge (QoS 0 input, status, info).
    Nothing,
}

/// The Content Type property of every reply.
pub const CONTENT_TYPE: &str = "application/json";

/// One message to publish at QoS 1: a result or an error reply.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// Destination topic (validated: no wildcards).
    pub topic: String,
    /// JSON payload.
    pub payload: Bytes,
    /// Correlation Data for MQTT v5 responses.
    pub correlation: Option<Bytes>,
    /// What the broker's PUBACK completes.
    pub completion: Completion,
    /// The code of an error reply; `None` for a result (or a reload outcome).
    pub error: Option<ErrorCode>,
}
