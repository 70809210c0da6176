//! A test MQTT client (rumqttc, v5 or v3.1.1) that records everything it receives.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::Value;

use super::harness::wait_until;

/// One received message.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub correlation: Option<Vec<u8>>,
    pub retain: bool,
}

impl Received {
    /// The payload as JSON (panics with the payload when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{} payload is not JSON ({e}): {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    connacks: AtomicUsize,
    subacks: AtomicUsize,
    pubacks: AtomicUsize,
    stop: AtomicBool,
}

enum Handle {
    V5(rumqttc::v5::Client),
    V311(rumqttc::Client),
}

/// A connected test client; its event loop runs on a thread until drop.
pub struct TestClient {
    handle: Handle,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    pub id: String,
}

impl TestClient {
    /// MQTT v5, clean start.
    pub fn v5(port: u16, id: &str) -> TestClient {
        Self::v5_session(port, id, false)
    }

    /// MQTT v5; with `persistent`, a session that outlives disconnects (for fault tests).
    pub fn v5_session(port: u16, id: &str, persistent: bool) -> TestClient {
        let mut options = Self::v5_options(port, id);
        options.set_clean_start(!persistent);
        if persistent {
            options.set_session_expiry_interval(Some(600));
        }
        Self::v5_connect(options)
    }

    /// MQTT v5 with a user name and password.
    pub fn v5_with_login(port: u16, id: &str, username: &str, password: &str) -> TestClient {
        let mut options = Self::v5_options(port, id);
        options.set_credentials(username, password);
        Self::v5_connect(options)
    }

    fn v5_options(port: u16, id: &str) -> rumqttc::v5::MqttOptions {
        let mut options = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(Some(4 * 1024 * 1024));
        options
    }

    fn v5_connect(options: rumqttc::v5::MqttOptions) -> TestClient {
        let id = options.client_id();
        let (client, mut connection) = rumqttc::v5::Client::new(options, 1000);
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            while !state.stop.load(Ordering::Relaxed) {
                match connection.recv_timeout(Duration::from_millis(50)) {
                    Ok(Ok(rumqttc::v5::Event::Incoming(packet))) => match packet {
                        Packet::Publish(p) => state.received.lock().unwrap().push(Received {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            correlation: p
                                .properties
                                .and_then(|props| props.correlation_data)
                                .map(|c| c.to_vec()),
                            retain: p.retain,
                        }),
                        Packet::ConnAck(_) => {
                            state.connacks.fetch_add(1, Ordering::Relaxed);
                        }
                        Packet::SubAck(_) => {
                            state.subacks.fetch_add(1, Ordering::Relaxed);
                        }
                        Packet::PubAck(_) => {
                            state.pubacks.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    },
                    Ok(Ok(_)) | Err(rumqttc::v5::RecvTimeoutError::Timeout) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                    Err(rumqttc::v5::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        let client = TestClient {
            handle: Handle::V5(client),
            shared,
            thread: Some(thread),
            id,
        };
        client.wait_connected();
        client
    }

    /// MQTT v3.1.1, clean session.
    pub fn v311(port: u16, id: &str) -> TestClient {
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
        let (client, mut connection) = rumqttc::Client::new(options, 1000);
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            while !state.stop.load(Ordering::Relaxed) {
                match connection.recv_timeout(Duration::from_millis(50)) {
                    Ok(Ok(rumqttc::Event::Incoming(packet))) => match packet {
                        rumqttc::Packet::Publish(p) => {
                            state.received.lock().unwrap().push(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                correlation: None,
                                retain: p.retain,
                            })
                        }
                        rumqttc::Packet::ConnAck(_) => {
                            state.connacks.fetch_add(1, Ordering::Relaxed);
                        }
                        rumqttc::Packet::SubAck(_) => {
                            state.subacks.fetch_add(1, Ordering::Relaxed);
                        }
                        rumqttc::Packet::PubAck(_) => {
                            state.pubacks.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    },
                    Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        let client = TestClient {
            handle: Handle::V311(client),
            shared,
            thread: Some(thread),
            id: id.to_string(),
        };
        client.wait_connected();
        client
    }

    fn wait_connected(&self) {
        wait_until(
            &format!("CONNACK for {}", self.id),
            Duration::from_secs(10),
            || (self.shared.connacks.load(Ordering::Relaxed) > 0).then_some(()),
            || "no CONNACK".into(),
        );
    }

    /// Subscribes at QoS 1 and waits for the SUBACK.
    pub fn subscribe(&self, filter: &str) {
        let before = self.shared.subacks.load(Ordering::Relaxed);
        match &self.handle {
            Handle::V5(c) => c.subscribe(filter, QoS::AtLeastOnce).expect("subscribe"),
            Handle::V311(c) => c
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .expect("subscribe"),
        }
        wait_until(
            &format!("SUBACK for {filter}"),
            Duration::from_secs(10),
            || (self.shared.subacks.load(Ordering::Relaxed) > before).then_some(()),
            || "no SUBACK".into(),
        );
    }

    /// Publishes at QoS 1 (not retained).
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        let payload: Vec<u8> = payload.into();
        match &self.handle {
            Handle::V5(c) => c
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .expect("publish"),
            Handle::V311(c) => c
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .expect("publish"),
        }
    }

    /// Publishes at QoS 0.
    pub fn publish_qos0(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        let Handle::V5(c) = &self.handle else {
            panic!("QoS 0 publishing is only wired for v5 test clients")
        };
        c.publish(topic, QoS::AtMostOnce, false, payload.into())
            .expect("publish");
    }

    /// An MQTT v5 request: Response Topic and Correlation Data.
    pub fn request(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        response: &str,
        correlation: &[u8],
    ) {
        let Handle::V5(c) = &self.handle else {
            panic!("requests need MQTT v5")
        };
        let properties = PublishProperties {
            response_topic: Some(response.into()),
            correlation_data: Some(Bytes::copy_from_slice(correlation)),
            ..PublishProperties::default()
        };
        c.publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), properties)
            .expect("publish");
    }

    /// PUBACKs received for our publishes.
    pub fn pubacks(&self) -> usize {
        self.shared.pubacks.load(Ordering::Relaxed)
    }

    /// CONNACKs received (1 + reconnections).
    pub fn connacks(&self) -> usize {
        self.shared.connacks.load(Ordering::Relaxed)
    }

    /// A copy of everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Messages received on `topic`.
    pub fn on(&self, topic: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits until `found` picks something out of the received messages.
    pub fn wait_for<T>(
        &self,
        what: &str,
        deadline: Duration,
        found: impl Fn(&[Received]) -> Option<T>,
    ) -> T {
        wait_until(
            what,
            deadline,
            || found(&self.shared.received.lock().unwrap()),
            || {
                let received = self.shared.received.lock().unwrap();
                let tail: Vec<String> = received
                    .iter()
                    .rev()
                    .take(5)
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                    .collect();
                format!("{} messages, last: {tail:?}", received.len())
            },
        )
    }

    /// Waits for a message on `topic` and returns the first one.
    pub fn wait_on(&self, topic: &str, deadline: Duration) -> Received {
        self.wait_for(&format!("a message on {topic}"), deadline, |all| {
            all.iter().find(|m| m.topic == topic).cloned()
        })
    }

    /// Waits until `topic` holds `payload` (e.g. the retained `online`).
    pub fn wait_for_payload(&self, topic: &str, payload: &str, deadline: Duration) {
        self.wait_for(&format!("{payload:?} on {topic}"), deadline, |all| {
            all.iter()
                .any(|m| m.topic == topic && m.payload == payload.as_bytes())
                .then_some(())
        })
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        match &self.handle {
            Handle::V5(c) => {
                let _ = c.try_disconnect();
            }
            Handle::V311(c) => {
                let _ = c.try_disconnect();
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
