//! `sentimqd demo`: a first run with nothing set up. Starts the daemon with its configuration
//! (the shipped model unless `model.path` says otherwise) and, when no broker is configured, an
//! MQTT broker inside the process (rumqttd, feature `embedded-broker`) on a free loopback port.
//! Then a client publishes a few reviews to the daemon's input topics, prints each result as
//! the daemon publishes it, and stops the daemon the way SIGTERM does (`offline`, disconnect).
//!
//! Everything goes through real MQTT: the same daemon, topics and payloads as in production.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use tokio::sync::oneshot;

use super::broker::{self, Topics};
use super::config::Loaded;
use super::{service, tls, Error};

/// Reviews the demo classifies when given no texts: two clear positives, two clear negatives.
pub(crate) const SAMPLE_REVIEWS: [&str; 4] = [
    "A wonderful, moving film. The cast is superb and the last act had me in tears.",
    "Dull, far too long, and the plot makes no sense. I checked my watch every ten minutes.",
    "I expected little and came out delighted: sharp writing, great pacing, real heart.",
    "The acting is wooden and the dialogue painful. A waste of two hours and a good premise.",
];

/// What to publish and how long to wait.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Texts to classify, one message each.
    pub texts: Vec<String>,
    /// Longest wait for the daemon to come online, and then for all replies.
    pub timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            texts: SAMPLE_REVIEWS.iter().map(|t| t.to_string()).collect(),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Where the demo's messages went and what came back.
#[derive(Clone, Debug, Default)]
pub struct DemoReport {
    /// `Some(address)` when the demo started its own broker.
    pub embedded_broker: Option<SocketAddr>,
    /// One entry per text, in order: the topic it was published to and the JSON reply (a
    /// result or an error reply), `None` if none came within the timeout.
    pub replies: Vec<(String, Option<String>)>,
}

impl DemoReport {
    /// Whether every text got a reply.
    pub(crate) fn is_complete(&self) -> bool {
        self.replies.iter().all(|(_, reply)| reply.is_some())
    }
}

/// Errors of the demo's own client (the daemon's are [`Error`]).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded broker could not start.
    #[error("cannot start the embedded MQTT broker: {0}")]
    Broker(String),
    /// The daemon did not publish `online` in time.
    #[error("sentimqd did not come online within {0:?} (see its log above)")]
    NotOnline(Duration),
    /// The demo's client lost the broker.
    #[error("the demo's MQTT client failed: {0}")]
    Client(String),
    /// The daemon stopped with an error.
    #[error(transparent)]
    Daemon(#[from] Error),
}

/// Runs the demo: broker (unless configured), daemon, client; `on_reply` sees each reply as it
/// arrives (`index` into the texts, topic, payload). Returns once every text has a reply or
/// the timeout has passed, after the daemon has stopped.
pub fn run(
    mut loaded: Loaded,
    options: DemoOptions,
    mut on_reply: impl FnMut(usize, &str) + Send,
) -> Result<DemoReport, DemoError> {
    let mut report = DemoReport::default();
    if !loaded.server_is_set {
        let address = start_embedded_broker(loaded.config.mqtt.max_packet_bytes)?;
        loaded.config.mqtt.server = format!("mqtt://{address}");
        report.embedded_broker = Some(address);
    }
    let config = loaded.config.clone();
    let inputs: Vec<String> = (0..options.texts.len())
        .map(|i| input_topic(&config.input_filters(), i))
        .collect();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let daemon = std::thread::Builder::new()
        .name("sentimqd".into())
        .spawn(move || {
            service::run_until(loaded, async {
                let _ = stop_rx.await;
                "demo finished"
            })
        })
        .map_err(|e| DemoError::Daemon(Error::Thread(e)))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DemoError::Daemon(Error::Runtime(e)))?;
    let client_result = runtime.block_on(exchange(
        &config,
        &options,
        &inputs,
        &mut report,
        &mut on_reply,
        &daemon,
    ));
    let _ = stop_tx.send(());
    let daemon_result = daemon
        .join()
        .map_err(|_| DemoError::Daemon(Error::Task("the daemon thread panicked".into())))?;
    daemon_result?;
    client_result?;
    Ok(report)
}

/// The demo client: waits for `online`, publishes the texts, collects one reply per text.
async fn exchange(
    config: &super::config::Config,
    options: &DemoOptions,
    inputs: &[String],
    report: &mut DemoReport,
    on_reply: &mut (impl FnMut(usize, &str) + Send),
    daemon: &std::thread::JoinHandle<Result<(), Error>>,
) -> Result<(), DemoError> {
    let server = config
        .server()
        .map_err(|e| DemoError::Client(e.to_string()))?;
    let tls = if server.is_tls {
        Some(tls::client_config(&config.mqtt.tls).map_err(Error::from)?)
    } else {
        None
    };
    let client_id = format!("{}-demo", config.client_id());
    let options_mqtt = broker::connect_options(config, &server, &client_id, tls);
    let (client, mut eventloop) = AsyncClient::new(options_mqtt, 64);
    let topics = Topics::new(&config.mqtt.base_topic);
    let result_prefix = format!("{}/result/", config.mqtt.base_topic);
    let error_topic = format!("{}/error", config.mqtt.base_topic);
    for filter in [
        topics.status.clone(),
        format!("{result_prefix}#"),
        error_topic.clone(),
    ] {
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .map_err(|e| DemoError::Client(e.to_string()))?;
    }
    report.replies = inputs.iter().map(|t| (t.clone(), None)).collect();

    let mut deadline = Instant::now() + options.timeout;
    let mut published = false;
    loop {
        if report.is_complete() && published {
            return Ok(());
        }
        if daemon.is_finished() {
            // It stopped on its own: its error is reported by `run`.
            return Ok(());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return if published {
                Ok(())
            } else {
                Err(DemoError::NotOnline(options.timeout))
            };
        }
        // Short polls, so a daemon that fails to start is noticed.
        let event =
            match tokio::time::timeout(remaining.min(Duration::from_millis(200)), eventloop.poll())
                .await
            {
                Err(_) => continue,
                Ok(Err(e)) => {
                    // The broker may still be starting, or the daemon's broker is down: retry.
                    tracing::debug!("demo client: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Ok(Ok(event)) => event,
            };
        let Event::Incoming(Packet::Publish(publish)) = event else {
            continue;
        };
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let payload = String::from_utf8_lossy(&publish.payload).into_owned();
        if topic == topics.status {
            if payload == "online" && !published {
                for (topic, text) in inputs.iter().zip(&options.texts) {
                    client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, text.clone())
                        .await
                        .map_err(|e| DemoError::Client(e.to_string()))?;
                }
                published = true;
                deadline = Instant::now() + options.timeout;
            }
        } else if let Some(index) = reply_index(
            &topic,
            &payload,
            &result_prefix,
            &error_topic,
            &report.replies,
        ) {
            on_reply(index, &payload);
            report.replies[index].1 = Some(payload);
        }
    }
}

/// Which text a reply answers: a result on `<base>/result/<input topic>`, or an error reply
/// whose `source_topic` is that input topic; the first unanswered text of that topic.
fn reply_index(
    topic: &str,
    payload: &str,
    result_prefix: &str,
    error_topic: &str,
    replies: &[(String, Option<String>)],
) -> Option<usize> {
    let source = if let Some(source) = topic.strip_prefix(result_prefix) {
        source.to_string()
    } else if topic == error_topic {
        let reply: serde_json::Value = serde_json::from_str(payload).ok()?;
        reply.get("source_topic")?.as_str()?.to_string()
    } else {
        return None;
    };
    replies
        .iter()
        .position(|(input, reply)| *input == source && reply.is_none())
}

/// A concrete topic that the first input filter matches, for text `index`: `+` levels become
/// `demo`, a trailing `#` becomes `demo/<index>`, and a `$share/<group>/` prefix is dropped.
/// (Filters without `#` give every text the same topic; replies are then matched in order.)
pub(crate) fn input_topic(filters: &[String], index: usize) -> String {
    let filter = filters
        .first()
        .map(String::as_str)
        .unwrap_or("sentimq/classify/#");
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
        None => filter,
    };
    filter
        .split('/')
        .map(|level| match level {
            "+" => "demo".to_string(),
            "#" => format!("demo/{index}"),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Starts rumqttd (MQTT v5, loopback only, no authentication) on a free port, in its own
/// threads for the rest of the process; returns once it accepts connections.
fn start_embedded_broker(max_packet_bytes: u64) -> Result<SocketAddr, DemoError> {
    use std::collections::HashMap;

    use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

    let address = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map_err(|e| DemoError::Broker(format!("no free loopback port: {e}")))?;
    let server = ServerSettings {
        name: "sentimq-demo".into(),
        listen: address,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: usize::try_from(max_packet_bytes).unwrap_or(usize::MAX),
            max_inflight_count: 256,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        router: RouterConfig {
            max_connections: 16,
            max_outgoing_packet_count: 256,
            max_segment_size: 16 << 20,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v5: Some(HashMap::from([("v5".to_string(), server)])),
        ..Config::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(|e| DemoError::Broker(e.to_string()))?;
    let started = Instant::now();
    while TcpStream::connect(address).is_err() {
        if started.elapsed() > Duration::from_secs(5) {
            return Err(DemoError::Broker(format!(
                "it does not listen on {address}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::input_topic;

    fn filters(f: &str) -> Vec<String> {
        vec![f.to_string()]
    }

    #[test]
    fn input_topics_match_the_first_filter() {
        assert_eq!(
            input_topic(&filters("sentimq/classify/#"), 2),
            "sentimq/classify/demo/2"
        );
        assert_eq!(
            input_topic(&filters("chat/+/message"), 1),
            "chat/demo/message"
        );
        assert_eq!(
            input_topic(&filters("$share/g/reviews/#"), 0),
            "reviews/demo/0"
        );
        assert_eq!(input_topic(&filters("exact/topic"), 3), "exact/topic");
        assert_eq!(input_topic(&[], 0), "sentimq/classify/demo/0");
    }
}
