//! Which input each of our QoS 1 publishes completes, so inputs are acknowledged only after
//! the broker has acknowledged their reply.
//!
//! rumqttc assigns packet ids inside its event loop and reports them as
//! `Outgoing::Publish(pkid)` events in request order; the broker's PUBACKs carry the same ids.
//! The outbox [`register`](Ledger::register)s a [`Completion`] right before handing each QoS 1
//! publish to the client, so completions wait in the same order as the requests; the event loop
//! binds the oldest waiting completion to the next new packet id and releases it on PUBACK.
//!
//! On a connection loss rumqttc moves unsent requests (packet id 0) into its pending queue, and
//! on a reconnect without a session it discards that queue and every retransmission; the ledger
//! mirrors that (see [`Ledger::connection_lost`] and [`Ledger::connected`]) so its order never
//! drifts from rumqttc's.

use std::collections::{HashMap, VecDeque};

use crate::daemon::message::Completion;

/// Completions of QoS 1 publishes in flight.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Registered, no packet id yet: in the client's request queue or rumqttc's pending queue.
    waiting: VecDeque<Completion>,
    /// Sent with a packet id, awaiting PUBACK.
    sent: HashMap<u16, Completion>,
    /// At the last connection loss: how many of `waiting` sat in rumqttc's pending queue.
    pending_unsent: usize,
}

impl Ledger {
    /// Records the completion of a QoS 1 publish about to be handed to the client.
    pub fn register(&mut self, completion: Completion) {
        self.waiting.push_back(completion);
    }

    /// Forgets the last registration: its publish never reached the client.
    pub fn unregister_last(&mut self) {
        self.waiting.pop_back();
    }

    /// `Outgoing::Publish(pkid)`: a publish went out. New ids bind the oldest waiting
    /// completion; ids already bound are retransmissions; id 0 is QoS 0.
    pub fn published(&mut self, pkid: u16) {
        if pkid == 0 || self.sent.contains_key(&pkid) {
            return;
        }
        if let Some(completion) = self.waiting.pop_front() {
            self.sent.insert(pkid, completion);
        }
    }

    /// `Incoming::PubAck(pkid)`: the broker has the publish; returns what it completes.
    pub fn acknowledged(&mut self, pkid: u16) -> Option<Completion> {
        self.sent.remove(&pkid)
    }

    /// The connection failed; `pending_unsent` is the number of QoS 1 publishes with packet
    /// id 0 in rumqttc's pending queue (taken from the request queue, never sent).
    pub fn connection_lost(&mut self, pending_unsent: usize) {
        self.pending_unsent = pending_unsent.min(self.waiting.len());
    }

    /// CONNACK. Without a session rumqttc drops its pending queue: the retransmissions (all of
    /// `sent`) and the never-sent publishes at the front of `waiting`. Returns the completions
    /// dropped; their inputs went with the broker's session, so there is nothing to ack.
    pub fn connected(&mut self, session_present: bool) -> Vec<Completion> {
        let unsent = std::mem::take(&mut self.pending_unsent);
        if session_present {
            return Vec::new();
        }
        let mut dropped: Vec<Completion> = self.sent.drain().map(|(_, c)| c).collect();
        dropped.extend(self.waiting.drain(..unsent));
        dropped
    }

    /// Completions not yet acknowledged by the broker.
    pub fn outstanding(&self) -> usize {
        self.waiting.len() + self.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::message::InputAck;

    fn input(pkid: u16) -> Completion {
        Completion::Input(InputAck { epoch: 1, pkid })
    }

    #[test]
    fn completions_follow_request_order() {
        let mut ledger = Ledger::default();
        ledger.register(input(100));
        ledger.register(input(101));
        ledger.published(0); // a QoS 0 stats message in between
        ledger.published(1);
        ledger.published(2);
        assert_eq!(ledger.acknowledged(2), Some(input(101)));
        assert_eq!(ledger.acknowledged(1), Some(input(100)));
        assert_eq!(
            ledger.acknowledged(1),
            None,
            "a second PUBACK completes nothing"
        );
        assert_eq!(ledger.outstanding(), 0);
    }

    #[test]
    fn retransmissions_keep_their_completion() {
        let mut ledger = Ledger::default();
        ledger.register(input(100));
        ledger.register(input(101));
        ledger.published(1);
        ledger.connection_lost(1); // input 101's publish was still queued
        assert!(ledger.connected(true).is_empty());
        ledger.published(1); // retransmission of 100's reply
        ledger.published(2); // 101's reply, sent for the first time
        assert_eq!(ledger.acknowledged(1), Some(input(100)));
        assert_eq!(ledger.acknowledged(2), Some(input(101)));
    }

    #[test]
    fn a_lost_session_drops_what_rumqttc_drops() {
        let mut ledger = Ledger::default();
        ledger.register(input(100)); // sent, will be dropped as a retransmission
        ledger.register(input(101)); // in rumqttc's pending queue, dropped
        ledger.register(input(102)); // still in the client's request queue, survives
        ledger.published(1);
        ledger.connection_lost(1);
        let dropped = ledger.connected(false);
        assert_eq!(dropped, vec![input(100), input(101)]);
        ledger.published(1);
        assert_eq!(ledger.acknowledged(1), Some(input(102)));
        assert_eq!(ledger.outstanding(), 0);
    }

    #[test]
    fn unregister_undoes_a_failed_hand_off() {
        let mut ledger = Ledger::default();
        ledger.register(input(100));
        ledger.register(input(101));
        ledger.unregister_last();
        ledger.published(3);
        assert_eq!(ledger.acknowledged(3), Some(input(100)));
        assert_eq!(ledger.outstanding(), 0);
    }
}
