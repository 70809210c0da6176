//! The task that publishes: replies (and reload outcomes), status, info and stats; (re)subscribes
//! on every CONNACK.
//!
//! It is the only task that awaits client requests. Each QoS 1 publish is registered in the
//! [`Ledger`](super::Ledger) just before it enters the client's request queue, so the event
//! loop can tell which input a PUBACK completes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Filter, PublishProperties, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ClientError};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use super::{Link, Topics};
use crate::daemon::message::{Completion, Outbound, CONTENT_TYPE};
use crate::daemon::stats::Stats;
use crate::daemon::Error;

/// Publishes everything the daemon sends; see the module docs.
pub struct Outbox {
    /// The client handle.
    pub client: AsyncClient,
    /// Shared with the event loop.
    pub link: Arc<Link>,
    /// Replies from the workers (and `overloaded` replies from the event loop). Closes when
    /// every worker has finished, which starts the final `offline` + DISCONNECT.
    pub replies: mpsc::Receiver<Outbound>,
    /// Status, info and stats topics.
    pub topics: Topics,
    /// Input filters to subscribe to.
    pub filters: Vec<String>,
    /// `<base>/command/reload`, subscribed at QoS 0 after the inputs, when enabled.
    pub command_topic: Option<String>,
    /// The retained `<base>/info` payload; republished when a reload changes it.
    pub info: watch::Receiver<Bytes>,
    /// Counters for `<base>/stats`.
    pub stats: Arc<Stats>,
    /// Period of `<base>/stats`, if any.
    pub stats_interval: Option<Duration>,
}

impl Outbox {
    /// Runs until the replies queue closes, then publishes `offline`, waits for the broker to
    /// acknowledge everything and disconnects.
    pub async fn run(mut self) -> Result<(), Error> {
        let mut connection = self.link.connection.subscribe();
        if connection.borrow_and_update().is_some() {
            self.announce().await?;
        }
        let mut ticker = self.stats_interval.map(|period| {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        });
        loop {
            tokio::select! {
                biased;
                changed = connection.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let connected = *connection.borrow_and_update();
                    if connected.is_some() {
                        self.announce().await?;
                    }
                }
                reply = self.replies.recv() => match reply {
                    Some(reply) => self.publish(reply).await?,
                    None => break,
                },
                Ok(()) = self.info.changed() => {
                    // Seen now either way; without a connection the next `announce` sends it.
                    let info = self.info.borrow_and_update().clone();
                    if connection.borrow().is_some() {
                        self.publish_retained(self.topics.info.clone(), info).await?;
                    }
                }
                _ = tick(&mut ticker) => self.publish_stats().await?,
            }
        }
        self.publish_retained(self.topics.status.clone(), Bytes::from_static(b"offline"))
            .await?;
        debug!("waiting for the broker to acknowledge the last replies");
        self.link.drained().await;
        info!("published offline; disconnecting");
        self.client.disconnect().await.map_err(client_error)?;
        Ok(())
    }

    /// On every connection: subscribe to the inputs (and the reload command), publish `online`
    /// and the info message.
    async fn announce(&mut self) -> Result<(), Error> {
        let inputs = self.filters.iter().map(|path| Filter {
            path: path.clone(),
            qos: QoS::AtLeastOnce,
            // MQTT v5 forbids No Local on shared subscriptions.
            nolocal: !path.starts_with("$share/"),
            preserve_retain: false,
            // A resumed session keeps its subscriptions: do not replay retained inputs.
            retain_forward_rule: RetainForwardRule::OnNewSubscribe,
        });
        // QoS 0: a command needs no acknowledgement, and a lost one is simply sent again. Never
        // a retained one: that would reload on every connection.
        let command = self.command_topic.iter().map(|path| Filter {
            path: path.clone(),
            qos: QoS::AtMostOnce,
            nolocal: true,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::Never,
        });
        self.client
            .subscribe_many(inputs.chain(command))
            .await
            .map_err(client_error)?;
        self.publish_retained(self.topics.status.clone(), Bytes::from_static(b"online"))
            .await?;
        let info = self.info.borrow_and_update().clone();
        self.publish_retained(self.topics.info.clone(), info).await
    }

    async fn publish(&mut self, reply: Outbound) -> Result<(), Error> {
        let properties = PublishProperties {
            correlation_data: reply.correlation,
            content_type: Some(CONTENT_TYPE.into()),
            ..PublishProperties::default()
        };
        self.register(reply.completion);
        let sent = self
            .client
            .publish_bytes_with_properties(
                reply.topic,
                QoS::AtLeastOnce,
                false,
                reply.payload,
                properties,
            )
            .await;
        self.settle(sent)
    }

    async fn publish_retained(&mut self, topic: String, payload: Bytes) -> Result<(), Error> {
        self.register(Completion::Nothing);
        let sent = self
            .client
            .publish_bytes(topic, QoS::AtLeastOnce, true, payload)
            .await;
        self.settle(sent)
    }

    async fn publish_stats(&mut self) -> Result<(), Error> {
        let snapshot = self.stats.snapshot(self.link.awaiting_ack() as u64);
        let payload = serde_json::to_vec(&snapshot).expect("stats serialize to memory");
        // QoS 0: a lost stats message is replaced by the next one; no ledger entry.
        self.client
            .publish_bytes(
                self.topics.stats.clone(),
                QoS::AtMostOnce,
                false,
                payload.into(),
            )
            .await
            .map_err(client_error)
    }

    fn register(&self, completion: Completion) {
        let mut ledger = self.link.ledger();
        ledger.register(completion);
        self.link.refresh_outstanding(&ledger);
    }

    /// Undoes the registration of a publish that never reached the request queue.
    fn settle(&self, sent: Result<(), ClientError>) -> Result<(), Error> {
        if sent.is_err() {
            let mut ledger = self.link.ledger();
            ledger.unregister_last();
            self.link.refresh_outstanding(&ledger);
        }
        sent.map_err(client_error)
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn client_error(error: ClientError) -> Error {
    Error::ClientStopped(Box::new(error))
}
