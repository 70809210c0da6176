//! The task that owns rumqttc's `EventLoop`: polls, forwards, never awaits a client request.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubAckReason, Publish, SubAck, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, Request, StateError};
use rumqttc::Outgoing;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use super::{AckOrder, Backoff, Connected, Link};
use crate::daemon::contract::{ErrorCode, Rejection, Replier};
use crate::daemon::health::Health;
use crate::daemon::logging::Throttle;
use crate::daemon::message::{Completion, Inbound, InputAck, Outbound, ResponseRoute};
use crate::daemon::reload::{self, Trigger};
use crate::daemon::stats::Stats;
use crate::daemon::Error;

/// Owns the `EventLoop`; see the module docs of [`broker`](super).
pub struct EventLoopTask {
    /// rumqttc's event loop.
    pub eventloop: EventLoop,
    /// A client handle, used only with non-blocking `try_*` calls.
    pub client: AsyncClient,
    /// Shared with the outbox.
    pub link: Arc<Link>,
    /// The batcher's queue. Full: QoS 0 inputs get an `overloaded` error, QoS 1 inputs wait in
    /// `overflow` (the broker's flow control bounds them by `mqtt.receive_maximum`).
    pub intake: mpsc::Sender<Inbound>,
    /// Intake slots kept free for QoS 1 inputs (`mqtt.receive_maximum`).
    pub reserved_for_qos1: usize,
    /// The outbox's queue, for `overloaded` replies; weak so it closes when the workers finish.
    pub replies: mpsc::WeakSender<Outbound>,
    /// Builds `overloaded` replies.
    pub replier: Arc<Replier>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Readiness and watchdog.
    pub health: Arc<Health>,
    /// Set on SIGTERM: stop taking inputs (the broker redelivers them to the next session).
    pub stopping: watch::Receiver<bool>,
    /// The subscribed input filters, in SUBSCRIBE order, for SUBACK messages.
    pub filters: Vec<String>,
    /// `<base>/command/reload`: never an input. Subscribed after the inputs when
    /// `mqtt.reload_command` is on; a persistent session may still hold the subscription after
    /// it was turned off, so its messages are recognised either way.
    pub command_topic: String,
    /// `mqtt.reload_command`.
    pub reload_command: bool,
    /// Reload requests from that topic.
    pub reloads: mpsc::Sender<Trigger>,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// `mqtt.server`, for log lines.
    pub server: String,
}

/// The event loop's own state, apart from its configuration.
#[derive(Default)]
struct State {
    epoch: u64,
    is_connected: bool,
    has_subscribed: bool,
    overflow: VecDeque<Inbound>,
    /// QoS 1 inputs of this connection in arrival order, until their ack may go out.
    ack_order: AckOrder,
    /// Acks released in order, waiting for room in the client's request queue.
    acks: VecDeque<InputAck>,
    last_problem: Option<String>,
    has_warned_refusal: bool,
    disconnected_at: Option<Instant>,
    /// The Maximum Packet Size the broker announced on this connection.
    reply_limit: Option<u32>,
    buffer: Vec<u8>,
    dropped_warning: Throttle,
}

impl EventLoopTask {
    /// Polls until the outbox's DISCONNECT has gone out. Returns an error only for problems
    /// that retrying cannot fix (the broker refusing the subscriptions at start).
    pub async fn run(mut self) -> Result<(), Error> {
        let mut state = State::default();
        loop {
            self.flush_overflow(&mut state);
            self.flush_acks(&mut state);
            match self.eventloop.poll().await {
                Ok(event) => {
                    self.health.progress();
                    if self.handle(event, &mut state)? {
                        info!("disconnected from broker");
                        return Ok(());
                    }
                }
                Err(error) => {
                    self.health.progress();
                    self.connection_lost(&error, &mut state);
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    /// Handles one event; returns `true` once our DISCONNECT has been sent.
    fn handle(&mut self, event: Event, state: &mut State) -> Result<bool, Error> {
        match event {
            Event::Incoming(Packet::ConnAck(connack)) => self.connected(&connack, state),
            Event::Incoming(Packet::Publish(publish)) => self.receive(publish, state),
            Event::Incoming(Packet::PubAck(puback)) => self.acknowledged(&puback, state),
            Event::Incoming(Packet::SubAck(suback)) => self.subscribed(&suback, state)?,
            Event::Incoming(Packet::Disconnect(disconnect)) => {
                debug!(reason = ?disconnect.reason_code, "broker sent DISCONNECT");
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let mut ledger = self.link.ledger();
                ledger.published(pkid);
                self.link.refresh_outstanding(&ledger);
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok(true),
            _ => {}
        }
        Ok(false)
    }

    fn connected(&mut self, connack: &ConnAck, state: &mut State) {
        state.is_connected = true;
        state.last_problem = None;
        state.reply_limit = connack.properties.as_ref().and_then(|p| p.max_packet_size);
        if connack.session_present {
            // The kept session redelivers every unacknowledged QoS 1 input: the copies of the
            // old connection still waiting here would be classified and answered twice.
            let epoch = state.epoch;
            let waiting = state.overflow.len();
            state
                .overflow
                .retain(|input| input.ack.is_none_or(|ack| ack.epoch == epoch));
            let dropped = waiting - state.overflow.len();
            if dropped > 0 {
                debug!(
                    dropped,
                    "the broker redelivers the QoS 1 inputs that were waiting for the intake"
                );
            }
        }
        self.backoff.reset();
        let dropped = {
            let mut ledger = self.link.ledger();
            let dropped = ledger.connected(connack.session_present);
            self.link.refresh_outstanding(&ledger);
            dropped
        };
        match state.disconnected_at.take() {
            None => {
                info!(server = %self.server, session_present = connack.session_present, "connected to broker")
            }
            Some(since) => info!(
                server = %self.server,
                session_present = connack.session_present,
                offline_ms = since.elapsed().as_millis() as u64,
                "reconnected to broker"
            ),
        }
        if !dropped.is_empty() {
            warn!(
                replies = dropped.len(),
                "the broker lost the session; replies in flight were discarded with their inputs (raise mqtt.session_expiry_secs or enable broker persistence)"
            );
        }
        self.link.connection.send_replace(Some(Connected {
            epoch: state.epoch,
            session_present: connack.session_present,
        }));
    }

    fn connection_lost(&mut self, error: &ConnectionError, state: &mut State) {
        if state.is_connected {
            state.disconnected_at = Some(Instant::now());
        }
        state.is_connected = false;
        state.epoch += 1;
        self.link.connection.send_replace(None);
        // Acks for the old connection would hit whatever the broker numbers next.
        state.acks.clear();
        state.ack_order.clear();
        self.link.ack_backlog.store(0, Ordering::Relaxed);
        let unsent = self
            .eventloop
            .pending
            .iter()
            .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0 && p.qos != QoS::AtMostOnce))
            .count();
        {
            let mut ledger = self.link.ledger();
            ledger.connection_lost(unsent);
            self.link.refresh_outstanding(&ledger);
        }
        let (is_refusal, problem) = describe_connection_error(error, &self.server);
        if state.last_problem.as_deref() == Some(problem.as_str()) {
            debug!("{problem}; retrying");
        } else if is_refusal {
            error!("{problem}");
        } else {
            warn!("{problem}; reconnecting");
        }
        state.last_problem = Some(problem);
    }

    fn receive(&mut self, publish: Publish, state: &mut State) {
        if publish.topic == self.command_topic.as_bytes() {
            self.command(&publish, state);
            return;
        }
        let ack = (publish.qos != QoS::AtMostOnce && state.is_connected).then_some(InputAck {
            epoch: state.epoch,
            pkid: publish.pkid,
        });
        if let Some(ack) = ack {
            // Also an input left unanswered below: nothing received after it may be acked.
            state.ack_order.received(ack.pkid);
        }
        let response = publish.properties.as_ref().and_then(|p| {
            p.response_topic.clone().map(|topic| ResponseRoute {
                topic,
                correlation: p.correlation_data.clone(),
            })
        });
        let input = Inbound {
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            payload: publish.payload,
            response,
            ack,
            received: Instant::now(),
            is_redelivery: publish.dup,
            reply_limit: state.reply_limit,
        };
        if *self.stopping.borrow() {
            debug!(topic = %input.topic, "shutting down: input left for redelivery");
            self.leave(&input);
            return;
        }
        let is_qos1 = publish.qos != QoS::AtMostOnce;
        if is_qos1 && !state.overflow.is_empty() {
            state.overflow.push_back(input);
            return;
        }
        if !is_qos1 && self.intake.capacity() <= self.reserved_for_qos1 {
            self.stats.received(&input);
            self.overloaded(&input, state);
            return;
        }
        match self.intake.try_send(input) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(input)) if is_qos1 => {
                state.overflow.push_back(input);
            }
            Err(mpsc::error::TrySendError::Full(input)) => {
                self.stats.received(&input);
                self.overloaded(&input, state);
            }
            Err(mpsc::error::TrySendError::Closed(input)) => self.leave(&input),
        }
    }

    /// A message on the reload command topic: asks for a reload. It is subscribed at QoS 0;
    /// should the broker send one at QoS 1 anyway, it is acknowledged in turn like an input.
    fn command(&mut self, publish: &Publish, state: &mut State) {
        if publish.qos != QoS::AtMostOnce && state.is_connected {
            let epoch = state.epoch;
            let acks = &mut state.acks;
            state.ack_order.received(publish.pkid);
            state.ack_order.completed(publish.pkid, |pkid| {
                acks.push_back(InputAck { epoch, pkid });
            });
            self.link
                .ack_backlog
                .store(state.acks.len(), Ordering::Relaxed);
        }
        if !self.reload_command {
            debug!("a message on the reload command topic, which mqtt.reload_command turns off: ignored");
        } else if !*self.stopping.borrow() {
            reload::request(&self.reloads, Trigger::Command);
        }
    }

    /// An input the daemon will not answer in this run: QoS 1 inputs stay unacknowledged and
    /// come back in the next session; QoS 0 ones are counted as unanswered. (Inputs that reach
    /// the intake queue are counted by the batcher.)
    fn leave(&self, input: &Inbound) {
        if input.ack.is_none() {
            self.stats.received(input);
            self.stats.unanswered();
        }
    }

    fn overloaded(&self, input: &Inbound, state: &mut State) {
        let rejection = Rejection::new(
            ErrorCode::Overloaded,
            "the daemon's queues are full; publish at QoS 1 to have inputs wait instead",
        );
        let reply = self.replier.error(input, &rejection, &mut state.buffer);
        let code = reply.error.unwrap_or(ErrorCode::Overloaded);
        let sent = self
            .replies
            .upgrade()
            .is_some_and(|replies| replies.try_send(reply).is_ok());
        if sent {
            self.stats.error(code);
        } else {
            self.stats.unanswered();
            if let Some(held_back) = state.dropped_warning.allow(Instant::now()) {
                warn!(
                    topic = %input.topic,
                    held_back,
                    "overloaded: a QoS 0 input was dropped without a reply (one line per {} s at most; held_back = drops since the last; stats count them all as unanswered)",
                    Throttle::EVERY.as_secs()
                );
            }
        }
    }

    /// Moves QoS 1 inputs that found the intake full into it, oldest first.
    fn flush_overflow(&mut self, state: &mut State) {
        while let Some(input) = state.overflow.pop_front() {
            match self.intake.try_send(input) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(input)) => {
                    state.overflow.push_front(input);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    state.overflow.clear();
                    break;
                }
            }
        }
    }

    fn acknowledged(&mut self, puback: &PubAck, state: &mut State) {
        let mut ledger = self.link.ledger();
        let completion = ledger.acknowledged(puback.pkid);
        if let Some(Completion::Input(ack)) = completion {
            if ack.epoch == state.epoch && state.is_connected {
                let epoch = state.epoch;
                let acks = &mut state.acks;
                state.ack_order.completed(ack.pkid, |pkid| {
                    acks.push_back(InputAck { epoch, pkid });
                });
                self.link
                    .ack_backlog
                    .store(state.acks.len(), Ordering::Relaxed);
            }
        }
        // After the backlog grew: the outbox must never see 0 between PUBACK and ack.
        self.link.refresh_outstanding(&ledger);
        drop(ledger);
        if !matches!(
            puback.reason,
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
        ) {
            self.stats.publish_refused();
            if !state.has_warned_refusal {
                state.has_warned_refusal = true;
                warn!(reason = ?puback.reason, "the broker refused a reply (check its access rules for mqtt.base_topic); inputs are acknowledged anyway so they do not loop; further refusals are only counted (publish_refused in stats)");
            }
        }
    }

    fn flush_acks(&mut self, state: &mut State) {
        if state.acks.is_empty() {
            return;
        }
        while let Some(ack) = state.acks.front() {
            let mut publish = Publish::new("", QoS::AtLeastOnce, Bytes::new(), None);
            publish.pkid = ack.pkid;
            if self.client.try_ack(&publish).is_err() {
                break; // request queue full: retry after the next event
            }
            state.acks.pop_front();
        }
        self.link
            .ack_backlog
            .store(state.acks.len(), Ordering::Relaxed);
        self.link.refresh_outstanding(&self.link.ledger());
    }

    fn subscribed(&mut self, suback: &SubAck, state: &mut State) -> Result<(), Error> {
        if let (true, Some(code)) = (
            self.reload_command,
            suback.return_codes.get(self.filters.len()),
        ) {
            if !matches!(code, SubscribeReasonCode::Success(_)) {
                warn!(topic = %self.command_topic, reason = ?code, "the broker refused the subscription to the reload command topic; reload with SIGHUP instead (check the broker's access rules)");
            }
        }
        let mut refused = None;
        for (filter, code) in self.filters.iter().zip(&suback.return_codes) {
            match code {
                SubscribeReasonCode::Success(QoS::AtMostOnce) => warn!(
                    filter = %filter,
                    "the broker granted only QoS 0 for this filter: inputs cannot be redelivered"
                ),
                SubscribeReasonCode::Success(_) => {}
                failure => {
                    error!(filter = %filter, reason = ?failure, "the broker refused the subscription (mqtt.inputs)");
                    refused.get_or_insert((filter.clone(), *failure));
                }
            }
        }
        if let Some((filter, code)) = refused {
            if !state.has_subscribed {
                return Err(Error::SubscriptionRefused { filter, code });
            }
        } else if !state.has_subscribed {
            state.has_subscribed = true;
            info!(inputs = ?self.filters, "subscribed; ready");
            self.health.mark_ready();
        } else {
            debug!("resubscribed");
        }
        Ok(())
    }
}

/// A one-line account of a connection error and what to check; `true` for refusals that
/// retrying will not fix without a configuration change.
pub fn describe_connection_error(error: &ConnectionError, server: &str) -> (bool, String) {
    match error {
        ConnectionError::ConnectionRefused(code) => {
            let hint = match code {
                ConnectReturnCode::BadUserNamePassword => {
                    "bad user name or password; check mqtt.username and mqtt.password_file (or SENTIMQ_MQTT_PASSWORD)"
                }
                // mosquitto answers a wrong password with "not authorized".
                ConnectReturnCode::NotAuthorized => {
                    "not authorized; check mqtt.username and mqtt.password_file (or SENTIMQ_MQTT_PASSWORD), and the broker's access rules for mqtt.client_id"
                }
                ConnectReturnCode::ClientIdentifierNotValid | ConnectReturnCode::BadClientId => {
                    "client id not accepted; set mqtt.client_id"
                }
                ConnectReturnCode::Banned => "this client is banned",
                _ => "see the broker's log",
            };
            (true, format!("the broker at {server} refused the connection ({code:?}): {hint}"))
        }
        ConnectionError::Tls(e) => (
            true,
            format!("TLS with {server} failed: {e}; check mqtt.tls.ca_file, mqtt.tls.cert_file and that the broker's certificate names the host in mqtt.server"),
        ),
        ConnectionError::Io(e) => (false, format!("cannot reach the broker at {server}: {e}")),
        ConnectionError::Timeout(_) => (
            false,
            format!("no CONNACK from {server} within mqtt.connect_timeout_secs"),
        ),
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code,
            reason_string,
        }) => (
            false,
            format!(
                "the broker closed the connection ({reason_code:?}{})",
                reason_string
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ),
        other => {
            let text = other.to_string();
            let lower = text.to_ascii_lowercase();
            // TLS 1.3 servers reject a client certificate after the client's side of the
            // handshake, so the refusal arrives as an alert on the first read.
            if lower.contains("alert") || lower.contains("certificate") {
                (
                    true,
                    format!("TLS with {server} failed: {text}; check mqtt.tls.cert_file and mqtt.tls.key_file (the broker may require a client certificate) and mqtt.tls.ca_file"),
                )
            } else {
                (false, format!("connection to {server} lost: {text}"))
            }
        }
    }
}
