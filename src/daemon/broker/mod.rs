//! Broker I/O: the MQTT v5 session, the event-loop task and the outbox task.
//!
//! [`EventLoopTask`] owns rumqttc's `EventLoop` and only polls and forwards: inputs go to the
//! batcher's queue (never awaited: a full queue must not stop polling, because polling is what
//! drains the client's request queue), PUBACKs release input acknowledgements through the
//! [`Ledger`], in arrival order ([`AckOrder`]), CONNACKs are announced to the [`Outbox`]. The outbox is the only task that
//! awaits client requests: it publishes replies, status, info and stats, and (re)subscribes on
//! every connection.

mod ack_order;
mod backoff;
mod event_loop;
mod ledger;
mod outbox;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::LastWill;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::MqttOptions;
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::watch;

pub use ack_order::AckOrder;
pub use backoff::Backoff;
pub use event_loop::{describe_connection_error, EventLoopTask};
pub use ledger::Ledger;
pub use outbox::Outbox;

use super::config::{Config, ServerAddress};

/// The topics the daemon publishes to, all under `mqtt.base_topic`.
#[derive(Clone, Debug)]
pub struct Topics {
    /// `<base>/status`: retained `online` / `offline`, also the Last Will.
    pub status: String,
    /// `<base>/info`: retained description of the daemon and its model.
    pub info: String,
    /// `<base>/stats`: periodic counters.
    pub stats: String,
    /// `<base>/reload`: the outcome of each model reload.
    pub reload: String,
    /// `<base>/command/reload`: a message there asks for a reload (`mqtt.reload_command`).
    pub reload_command: String,
}

impl Topics {
    /// The topics under `base`.
    pub fn new(base: &str) -> Self {
        Topics {
            status: format!("{base}/status"),
            info: format!("{base}/info"),
            stats: format!("{base}/stats"),
            reload: format!("{base}/reload"),
            reload_command: format!("{base}/command/reload"),
        }
    }
}

/// A connection the broker accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connected {
    /// Connection number.
    pub epoch: u64,
    /// Whether the broker resumed the previous session.
    pub session_present: bool,
}

/// State shared by the event loop and the outbox.
#[derive(Debug)]
pub struct Link {
    ledger: Mutex<Ledger>,
    ack_backlog: AtomicUsize,
    outstanding: watch::Sender<usize>,
    /// The connection up now, if any: set on CONNACK, cleared when it is lost.
    connection: watch::Sender<Option<Connected>>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            ledger: Mutex::default(),
            ack_backlog: AtomicUsize::new(0),
            outstanding: watch::Sender::new(0),
            connection: watch::Sender::new(None),
        }
    }
}

impl Link {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("ledger lock")
    }

    /// Publishes the number of replies and acks not yet with the broker.
    fn refresh_outstanding(&self, ledger: &Ledger) {
        let n = ledger.outstanding() + self.ack_backlog.load(Ordering::Relaxed);
        self.outstanding
            .send_if_modified(|old| std::mem::replace(old, n) != n);
    }

    /// Replies handed to the client and not yet acknowledged by the broker.
    pub fn awaiting_ack(&self) -> usize {
        self.ledger().outstanding()
    }

    /// Resolves once no connection to the broker is up (at once if none is now).
    pub async fn disconnected(&self) {
        let mut connection = self.connection.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let _ = connection.wait_for(Option::is_none).await;
    }

    /// Waits until every reply is acknowledged and every input ack is queued for sending.
    pub async fn drained(&self) {
        let mut outstanding = self.outstanding.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let _ = outstanding.wait_for(|n| *n == 0).await;
    }
}

/// The rumqttc options for serving: MQTT v5, persistent session, manual acks, flow control,
/// retained `offline` Last Will, plus everything in [`connect_options`].
pub fn mqtt_options(
    config: &Config,
    server: &ServerAddress,
    client_id: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> MqttOptions {
    let mqtt = &config.mqtt;
    let mut options = connect_options(config, server, client_id, tls);
    let receive_maximum = u16::try_from(mqtt.receive_maximum).unwrap_or(u16::MAX);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(saturate_u32(mqtt.session_expiry_secs)))
        .set_manual_acks(true)
        .set_receive_maximum(Some(receive_maximum))
        // Bounds rumqttc's table of unacknowledged publishes (its default sizes it for 65,535).
        .set_outgoing_inflight_upper_limit(receive_maximum)
        .set_last_will(LastWill::new(
            Topics::new(&mqtt.base_topic).status,
            "offline",
            QoS::AtLeastOnce,
            true,
            None,
        ));
    options
}

/// Options every connection needs: address, keep-alive, explicit packet size, timeout,
/// credentials, TLS. Used alone by `validate`'s broker probe (clean session, no will).
pub fn connect_options(
    config: &Config,
    server: &ServerAddress,
    client_id: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> MqttOptions {
    let mqtt = &config.mqtt;
    let mut options = MqttOptions::new(client_id, server.host.clone(), server.port);
    options
        .set_keep_alive(Duration::from_secs(mqtt.keep_alive_secs))
        // rumqttc's default of 10 KiB would refuse long texts (and drop the connection).
        .set_max_packet_size(Some(saturate_u32(mqtt.max_packet_bytes)))
        .set_connection_timeout(mqtt.connect_timeout_secs);
    // Results are small packets written one by one: without TCP_NODELAY, Nagle's algorithm
    // holds each until the broker's delayed ACK (~40 ms per message).
    let mut network = options.network_options();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    if let Some(username) = &mqtt.username {
        let password = mqtt.password.as_ref().map_or("", |p| p.expose());
        options.set_credentials(username.clone(), password);
    }
    if let Some(tls) = tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    options
}

fn saturate_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
