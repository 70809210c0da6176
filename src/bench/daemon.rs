//! `sentimq bench --mqtt`: the daemon end to end through a real broker, against the engine
//! alone on the same cores.
//!
//! 1. The engine: the same texts tokenized and classified in batches of `max_batch` on
//!    `threads` threads (texts/s), and one at a time (model time per text, p50).
//! 2. `sentimqd` is started against the broker (a private mosquitto on a free loopback port
//!    unless `server` is given): time from spawn to its retained `online` status.
//! 3. The first answer: one input right after `online`, publish to result (what warm start,
//!    `model.warm_up_tokens`, is for), against the steady p50 of step 5.
//! 4. Throughput: `messages` JSON inputs published at QoS 1 as fast as the broker takes them,
//!    with at most [`WINDOW`] unanswered at a time; texts/s from the first publish to the last
//!    result.
//! 5. Latency: `latency_samples` inputs one at a time; end-to-end p50 minus the model p50 is
//!    what MQTT, batching and JSON add.
//! 6. The daemon's resident memory (now and peak) against the model file's size.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Event, MqttOptions};
use serde::Serialize;

use crate::classifier::Classifier;
use crate::error_text::describe;
use crate::manifest::ModelManifest;
use crate::metrics::percentile;
use crate::tokenizer::TokenBatch;

/// What to measure.
#[derive(Clone, Debug)]
pub struct DaemonBenchOptions {
    /// Model directory served by the daemon.
    pub model: PathBuf,
    /// The `sentimqd` binary.
    pub sentimqd: PathBuf,
    /// Broker host and port; `None` starts a private `mosquitto`.
    pub server: Option<(String, u16)>,
    /// The `mosquitto` binary, when one is started.
    pub mosquitto: PathBuf,
    /// Texts to classify (cycled).
    pub texts: Vec<String>,
    /// Messages in the throughput run.
    pub messages: usize,
    /// Messages in the one-at-a-time latency run.
    pub latency_samples: usize,
    /// Inference threads (the daemon: one worker with this many intra-op threads).
    pub threads: usize,
    /// The daemon's `pipeline.max_batch`, and the engine's batch size.
    pub max_batch: usize,
}

/// Measured figures.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonBenchReport {
    /// Messages in the throughput run.
    pub messages: usize,
    /// Of those, answered with a result.
    pub results: usize,
    /// Of those, answered with an error.
    pub errors: usize,
    /// Texts per second: the engine alone, batched.
    pub engine_texts_per_s: f64,
    /// Texts per second through the broker and the daemon.
    pub daemon_texts_per_s: f64,
    /// `daemon_texts_per_s / engine_texts_per_s` (goal ≥ 0.9).
    pub throughput_ratio: f64,
    /// Model time per text, one at a time (tokenize + classify), p50.
    pub model_p50_ms: f64,
    /// Publish to result, one at a time, p50.
    pub end_to_end_p50_ms: f64,
    /// Publish to result, one at a time, p95.
    pub end_to_end_p95_ms: f64,
    /// `end_to_end_p50_ms - model_p50_ms` (goal ≤ 1 ms).
    pub added_p50_ms: f64,
    /// Spawn to the retained `online` status.
    pub start_to_ready_ms: f64,
    /// Publish to result of the first input after `online`.
    pub first_answer_ms: f64,
    /// `first_answer_ms / end_to_end_p50_ms`.
    pub first_answer_vs_p50: f64,
    /// The same first text sent again after the other runs, one at a time: the median of 5.
    pub first_text_steady_ms: f64,
    /// `first_answer_ms / first_text_steady_ms`: what the first answer costs over the same text
    /// answered later (goal ≤ 1.5 with warm start); unlike `first_answer_vs_p50` it does not
    /// depend on how long the first text is.
    pub first_answer_vs_steady: f64,
    /// Resident memory after the runs (`VmRSS`), serving, with the plans of every length bucket
    /// the daemon warmed up.
    pub rss_mib: f64,
    /// Peak resident memory over the daemon's life (`VmHWM`): loading the model and building
    /// its plans included.
    pub peak_rss_mib: f64,
    /// The served graph's file size.
    pub model_file_mib: f64,
    /// `rss_mib - model_file_mib` (goal ≤ 40 MiB).
    pub rss_over_model_mib: f64,
    /// `peak_rss_mib - model_file_mib` (goal ≤ 40 MiB).
    pub peak_rss_over_model_mib: f64,
}

/// Errors of the daemon benchmark.
#[derive(Debug, thiserror::Error)]
pub enum DaemonBenchError {
    /// Starting or talking to a process or the broker failed.
    #[error("{0}")]
    Setup(String),
    /// The model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] crate::classifier::Error),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

const BASE_TOPIC: &str = "sentimq-bench";
const DEADLINE: Duration = Duration::from_secs(300);
/// Most inputs published and not yet answered. A broker holds only so many messages for a
/// subscriber that is behind (mosquitto's `max_queued_messages`, 1,000 by default) and drops
/// further QoS 1 messages for it without telling anyone; publishing the whole run at once made
/// every run over ~1,250 messages wait forever for answers that were never delivered. The
/// window stays well below that limit and well above what the daemon holds (its
/// `receive_maximum` of 256 plus the pipeline), so the daemon never waits for input.
const WINDOW: usize = 768;

/// Runs the benchmark.
pub fn run(options: &DaemonBenchOptions) -> Result<DaemonBenchReport, DaemonBenchError> {
    if options.texts.is_empty() {
        return Err(DaemonBenchError::Setup("no texts to classify".into()));
    }
    let (engine_texts_per_s, model_p50_ms) = measure_engine(options)?;
    let manifest = ModelManifest::read(&options.model)
        .map_err(|e| DaemonBenchError::Setup(format!("reading model.json: {}", describe(&e))))?;
    let model_file = std::fs::metadata(options.model.join(&manifest.default_graph))?.len();

    let dir = ScratchDir::new()?;
    let _broker;
    let (host, port) = match &options.server {
        Some(server) => server.clone(),
        None => {
            let port = free_port()?;
            _broker = Mosquitto::start(&options.mosquitto, dir.path(), port)?;
            ("127.0.0.1".to_string(), port)
        }
    };
    let client = BenchClient::connect(&host, port)?;
    // Not the inputs: only what the daemon publishes.
    for filter in ["result/#", "error", "status"] {
        client.subscribe(&format!("{BASE_TOPIC}/{filter}"))?;
    }
    // A retained status from an earlier run must not count as this daemon's.
    client.drain(Duration::from_millis(300));

    let spawned = Instant::now();
    let mut daemon = Daemon::spawn(options, dir.path(), &host, port)?;
    client.wait_for(DEADLINE, |m| {
        m.topic == format!("{BASE_TOPIC}/status") && m.payload == b"online"
    })?;
    let start_to_ready_ms = ms(spawned.elapsed());
    let texts = &options.texts;

    // The first answer. Its id lies past the throughput and latency runs' ids.
    let first = options.messages + options.latency_samples;
    let sent = Instant::now();
    client.publish(&input_topic(first), input_payload(first, &texts[0]))?;
    wait_for_result(&client, first)?;
    let first_answer_ms = ms(sent.elapsed());

    // Throughput.
    let started = Instant::now();
    let (mut published, mut results, mut errors) = (0, 0, 0);
    let result_prefix = format!("{BASE_TOPIC}/result/");
    let error_topic = format!("{BASE_TOPIC}/error");
    while results + errors < options.messages {
        while published < options.messages && published - (results + errors) < WINDOW {
            let i = published;
            client.publish(&input_topic(i), input_payload(i, &texts[i % texts.len()]))?;
            published += 1;
        }
        let message = client.next(DEADLINE).map_err(|e| {
            DaemonBenchError::Setup(format!(
                "{e}: {results} results and {errors} errors of {published} inputs published"
            ))
        })?;
        if message.topic.starts_with(&result_prefix) {
            results += 1;
        } else if message.topic == error_topic {
            errors += 1;
        }
    }
    let daemon_texts_per_s = options.messages as f64 / started.elapsed().as_secs_f64();

    // Latency, one message at a time.
    let mut latencies = Vec::with_capacity(options.latency_samples);
    for j in 0..options.latency_samples {
        let i = options.messages + j;
        let sent = Instant::now();
        client.publish(&input_topic(i), input_payload(i, &texts[j % texts.len()]))?;
        wait_for_result(&client, i)?;
        latencies.push(ms(sent.elapsed()));
    }
    latencies.sort_by(f64::total_cmp);
    let end_to_end_p50_ms = percentile(&latencies, 0.50).unwrap_or(f64::NAN);

    // The first text again, now that the daemon is warm.
    let mut again = Vec::with_capacity(5);
    for k in 1..=5 {
        let i = first + k;
        let sent = Instant::now();
        client.publish(&input_topic(i), input_payload(i, &texts[0]))?;
        wait_for_result(&client, i)?;
        again.push(ms(sent.elapsed()));
    }
    again.sort_by(f64::total_cmp);
    let first_text_steady_ms = percentile(&again, 0.50).unwrap_or(f64::NAN);

    let (rss, peak_rss) = daemon.memory()?;
    daemon.stop();
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    Ok(DaemonBenchReport {
        messages: options.messages,
        results,
        errors,
        engine_texts_per_s,
        daemon_texts_per_s,
        throughput_ratio: daemon_texts_per_s / engine_texts_per_s,
        model_p50_ms,
        end_to_end_p50_ms,
        end_to_end_p95_ms: percentile(&latencies, 0.95).unwrap_or(f64::NAN),
        added_p50_ms: end_to_end_p50_ms - model_p50_ms,
        start_to_ready_ms,
        first_answer_ms,
        first_answer_vs_p50: first_answer_ms / end_to_end_p50_ms,
        first_text_steady_ms,
        first_answer_vs_steady: first_answer_ms / first_text_steady_ms,
        rss_mib: mib(rss),
        peak_rss_mib: mib(peak_rss),
        model_file_mib: mib(model_file),
        rss_over_model_mib: mib(rss) - mib(model_file),
        peak_rss_over_model_mib: mib(peak_rss) - mib(model_file),
    })
}

/// Waits for the result of input `i`.
fn wait_for_result(client: &BenchClient, i: usize) -> Result<(), DaemonBenchError> {
    let topic = format!("{BASE_TOPIC}/result/{}", input_topic(i));
    client.wait_for(DEADLINE, |m| {
        m.topic == topic
            && serde_json::from_slice::<serde_json::Value>(&m.payload).is_ok_and(|v| v["id"] == i)
    })?;
    Ok(())
}

/// The engine alone: batched texts/s and the one-at-a-time p50 (ms), tokenizing included.
fn measure_engine(options: &DaemonBenchOptions) -> Result<(f64, f64), DaemonBenchError> {
    crate::engine::set_intra_op_threads(options.threads);
    let classifier = Classifier::load(&options.model, None)?;
    let mut session = classifier
        .engine()
        .session()
        .map_err(crate::classifier::Error::from)?;
    let mut scratch = TokenBatch::default();
    let texts: Vec<&str> = (0..options.messages)
        .map(|i| options.texts[i % options.texts.len()].as_str())
        .collect();
    let mut classify = |chunk: &[&str]| -> Result<(), DaemonBenchError> {
        let encoded = chunk
            .iter()
            .map(|text| classifier.encode(text))
            .collect::<Result<Vec<_>, _>>()?;
        classifier.classify_encoded(&mut session, &encoded, &mut scratch)?;
        Ok(())
    };
    // Warm-up: plans for the sequence lengths in use.
    for chunk in texts.chunks(options.max_batch).take(4) {
        classify(chunk)?;
    }
    let started = Instant::now();
    for chunk in texts.chunks(options.max_batch.max(1)) {
        classify(chunk)?;
    }
    let texts_per_s = texts.len() as f64 / started.elapsed().as_secs_f64();
    let mut singles = Vec::with_capacity(options.latency_samples);
    for text in texts.iter().take(options.latency_samples) {
        let started = Instant::now();
        classify(std::slice::from_ref(text))?;
        singles.push(ms(started.elapsed()));
    }
    singles.sort_by(f64::total_cmp);
    Ok((texts_per_s, percentile(&singles, 0.50).unwrap_or(f64::NAN)))
}

fn input_topic(i: usize) -> String {
    format!("{BASE_TOPIC}/classify/{}", i % 8)
}

fn input_payload(i: usize, text: &str) -> Vec<u8> {
    serde_json::json!({ "id": i, "text": text })
        .to_string()
        .into_bytes()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn free_port() -> Result<u16, DaemonBenchError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until a TCP connection to `port` succeeds.
fn wait_for_port(port: u16, deadline: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A directory for the broker's and the daemon's config files, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<Self, DaemonBenchError> {
        let path = std::env::temp_dir().join(format!("sentimq-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private mosquitto, killed on drop.
struct Mosquitto(Child);

impl Mosquitto {
    fn start(binary: &Path, dir: &Path, port: u16) -> Result<Self, DaemonBenchError> {
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            // set_tcp_nodelay: mosquitto's default leaves Nagle's algorithm on, adding ~40 ms
            // per forwarded message; brokers serving sentimqd should set it too.
            // max_queued_messages 0: no cap on what waits for the daemon (see WINDOW).
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 set_tcp_nodelay true\nmax_queued_messages 0\n"
            ),
        )?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                DaemonBenchError::Setup(format!(
                    "cannot start {} ({e}); install mosquitto or pass --server",
                    binary.display()
                ))
            })?;
        let broker = Mosquitto(child);
        if !wait_for_port(port, Duration::from_secs(10)) {
            return Err(DaemonBenchError::Setup(format!(
                "mosquitto did not listen on port {port}"
            )));
        }
        Ok(broker)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon under test, killed on drop.
struct Daemon(Option<Child>);

impl Daemon {
    fn spawn(
        options: &DaemonBenchOptions,
        dir: &Path,
        host: &str,
        port: u16,
    ) -> Result<Self, DaemonBenchError> {
        let config = dir.join("sentimqd.toml");
        let mut file = std::fs::File::create(&config)?;
        write!(
            file,
            "[mqtt]\nserver = \"mqtt://{host}:{port}\"\nclient_id = \"sentimq-bench-daemon\"\n\
             base_topic = \"{BASE_TOPIC}\"\nreceive_maximum = 256\n\
             [model]\npath = {model:?}\n\
             [pipeline]\nworkers = 1\nintra_op_threads = {threads}\nmax_batch = {batch}\n\
             queue_capacity = 512\n\
             [stats]\ninterval_secs = 0\n[log]\nlevel = \"warn\"\n",
            model = options.model.display().to_string(),
            threads = options.threads,
            batch = options.max_batch,
        )?;
        let child = Command::new(&options.sentimqd)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("SENTIMQ_CONFIG")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                DaemonBenchError::Setup(format!(
                    "cannot start {} ({e}); build it (cargo build --release) or pass --sentimqd",
                    options.sentimqd.display()
                ))
            })?;
        Ok(Daemon(Some(child)))
    }

    /// `VmRSS` and `VmHWM` in bytes.
    fn memory(&self) -> Result<(u64, u64), DaemonBenchError> {
        let child = self
            .0
            .as_ref()
            .ok_or_else(|| DaemonBenchError::Setup("daemon gone".into()))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// SIGTERM, then a bounded wait.
    fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One received message.
struct Message {
    topic: String,
    payload: Vec<u8>,
}

/// A v5 client whose event loop runs on a thread and forwards publishes to a channel.
struct BenchClient {
    client: Client,
    messages: mpsc::Receiver<Message>,
}

impl BenchClient {
    fn connect(host: &str, port: u16) -> Result<Self, DaemonBenchError> {
        let mut options = MqttOptions::new("sentimq-bench-client", host, port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(4 * 1024 * 1024))
            .set_outgoing_inflight_upper_limit(256);
        let mut network = options.network_options();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        let (client, mut connection) = Client::new(options, 1024);
        let (tx, messages) = mpsc::channel();
        let (connected_tx, connected) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let message = Message {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                        };
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = connected_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        connected
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| DaemonBenchError::Setup(format!("cannot connect to {host}:{port}")))?;
        Ok(BenchClient { client, messages })
    }

    fn subscribe(&self, filter: &str) -> Result<(), DaemonBenchError> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .map_err(|e| DaemonBenchError::Setup(format!("subscribe: {e}")))
    }

    fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), DaemonBenchError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| DaemonBenchError::Setup(format!("publish: {e}")))
    }

    fn next(&self, deadline: Duration) -> Result<Message, DaemonBenchError> {
        self.messages
            .recv_timeout(deadline)
            .map_err(|_| DaemonBenchError::Setup("no message from the broker in time".into()))
    }

    fn wait_for(
        &self,
        deadline: Duration,
        mut wanted: impl FnMut(&Message) -> bool,
    ) -> Result<Message, DaemonBenchError> {
        let started = Instant::now();
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            let message = self.next(left)?;
            if wanted(&message) {
                return Ok(message);
            }
        }
    }

    fn drain(&self, quiet: Duration) {
        while self.messages.recv_timeout(quiet).is_ok() {}
    }
}
