//! The daemon's configuration: one [`Config`] for `run` and `validate`.
//!
//! Layers, lowest first: built-in defaults < TOML file < `SENTIMQ_*` environment < flags, merged
//! by [`load`]. Every key is listed once in [`keys::KEYS`] (type, range, environment variable,
//! documentation); the file is read strictly (unknown keys are errors naming the key path).
//! Secrets ([`Secret`]) never come from the TOML file: the MQTT password comes from
//! `mqtt.password_file` or `SENTIMQ_MQTT_PASSWORD` and prints as `***`.
//!
//! ```
//! use sentimq::daemon::config::{self, Sources};
//! let loaded = config::load(Sources {
//!     env: vec![("SENTIMQ_MQTT_SERVER".into(), "mqtt://broker.lan:1883".into())],
//!     ..Sources::default()
//! })?;
//! assert_eq!(loaded.config.mqtt.server, "mqtt://broker.lan:1883");
//! assert_eq!(loaded.config.input_filters(), ["sentimq/classify/#"]);
//! # Ok::<(), sentimq::daemon::config::ConfigError>(())
//! ```

mod check;
mod flags;
pub mod keys;
mod load;
mod server;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use flags::{Flags, LogFormatFlag};
#[cfg(any(all(test, feature = "workstation"), feature = "fuzzing"))]
pub(crate) use load::load_text;
pub use load::{load, ConfigError, ConfigLayer, Loaded, Override, Sources};
pub(crate) use server::{ServerAddress, ServerError};

/// Everything `sentimqd` needs to run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Broker connection and topics.
    pub mqtt: MqttConfig,
    /// How input payloads are read.
    pub input: InputConfig,
    /// The model directory.
    pub model: ModelConfig,
    /// Batching, threads and queues.
    pub pipeline: PipelineConfig,
    /// The periodic statistics message.
    pub stats: StatsConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[mqtt]`: the broker, the session and the topics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker URL: `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    pub server: String,
    /// Client id; also names the persistent session, so keep it stable. Default
    /// `sentimqd-<hostname>`.
    pub client_id: Option<String>,
    /// Prefix of every topic the daemon publishes to.
    pub base_topic: String,
    /// Subscription filters to classify; default `<base_topic>/classify/#`.
    pub inputs: Option<Vec<String>>,
    /// User name for the broker.
    pub username: Option<String>,
    /// File holding the password (first line); or set `SENTIMQ_MQTT_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// The password, from `SENTIMQ_MQTT_PASSWORD` or `password_file` (never from the TOML).
    #[serde(skip)]
    pub password: Option<Secret>,
    /// MQTT keep-alive interval.
    pub keep_alive_secs: u64,
    /// How long the broker keeps the session (and queues inputs) while the daemon is away.
    pub session_expiry_secs: u64,
    /// Unacknowledged QoS 1 inputs the broker may send at once (MQTT v5 Receive Maximum).
    pub receive_maximum: u64,
    /// Largest packet accepted from the broker (MQTT v5 Maximum Packet Size).
    pub max_packet_bytes: u64,
    /// Timeout of one connection attempt (TCP, TLS and CONNACK).
    pub connect_timeout_secs: u64,
    /// First reconnect delay; doubles per failed attempt, with jitter.
    pub reconnect_initial_ms: u64,
    /// Longest reconnect delay.
    pub reconnect_max_ms: u64,
    /// Subscribe to `<base_topic>/command/reload` (QoS 0): a message there reloads the model.
    pub reload_command: bool,
    /// TLS files, used with `mqtts://`.
    pub tls: TlsConfig,
}

/// `[mqtt.tls]`: PEM files for `mqtts://` connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificate(s) to trust; the system's roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain, for brokers that require client certificates.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// `[input]`: what an input payload looks like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Field holding the text in JSON payloads.
    pub text_field: String,
    /// Payloads larger than this get a `too_long` error.
    pub max_payload_bytes: u64,
    /// Include the input text in results.
    pub echo_text: bool,
}

/// `[model]`: the model directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model directory (`model.json`, `tokenizer.json`, graphs); relative to the working dir.
    pub path: PathBuf,
    /// Graph file inside the directory; default the manifest's `default_graph`.
    pub graph: Option<String>,
    /// Most shape-specialised plans kept (each holds packed weights).
    pub plans: u64,
    /// Most word pieces read per text (head+tail); 0 = the model's window.
    pub max_tokens: u64,
    /// Plans for every length bucket up to this many tokens are built before going online;
    /// 0 = built on first use.
    pub warm_up_tokens: u64,
    /// The plans of the remaining buckets up to the window are built on a low-priority thread
    /// after start-up (and after each reload).
    pub warm_up_background: bool,
    /// Results whose top score is below this are published as `uncertain`; 0 = off.
    pub uncertain_below: f64,
    /// A reload may swap in a model whose labels differ from the served one's.
    pub allow_label_change: bool,
}

/// `[pipeline]`: batching, threads, queues and shutdown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Inference threads, each with its own session; 0 = one per core.
    pub workers: u64,
    /// Threads per matrix product; 0 = cores / workers.
    pub intra_op_threads: u64,
    /// Most texts classified together.
    pub max_batch: u64,
    /// While every inference thread is busy, how long the first text of a batch waits for company.
    pub max_wait_ms: u64,
    /// Capacity of each queue between stages.
    pub queue_capacity: u64,
    /// Recent inputs remembered to recognise redeliveries (0 = off).
    pub dedup_window: u64,
    /// How long a SIGTERM may take to finish in-flight work before exiting anyway.
    pub shutdown_timeout_secs: u64,
}

/// `[stats]`: the periodic statistics message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Seconds between `<base>/stats` messages; 0 = never.
    pub interval_secs: u64,
}

/// `[log]`: log format and level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `sentimq=debug,rumqttc=warn`, …
    pub level: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// A secret string; `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The default base topic.
pub const DEFAULT_BASE_TOPIC: &str = "sentimq";

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            server: "mqtt://localhost:1883".into(),
            client_id: None,
            base_topic: DEFAULT_BASE_TOPIC.into(),
            inputs: None,
            username: None,
            password_file: None,
            password: None,
            keep_alive_secs: 30,
            session_expiry_secs: 86_400,
            receive_maximum: 64,
            max_packet_bytes: 2 * 1024 * 1024,
            connect_timeout_secs: 10,
            reconnect_initial_ms: 250,
            reconnect_max_ms: 30_000,
            reload_command: false,
            tls: TlsConfig::default(),
        }
    }
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            text_field: "text".into(),
            max_payload_bytes: 1024 * 1024,
            echo_text: false,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            path: PathBuf::from("models/imdb-minilm"),
            graph: None,
            plans: 16,
            max_tokens: 0,
            warm_up_tokens: 512,
            warm_up_background: true,
            uncertain_below: 0.0,
            allow_label_change: false,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 0,
            intra_op_threads: 0,
            max_batch: 16,
            max_wait_ms: 5,
            queue_capacity: 256,
            dedup_window: 10_000,
            shutdown_timeout_secs: 10,
        }
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig { interval_secs: 60 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl Config {
    /// The parsed `mqtt.server` (checked by [`load`]).
    pub(crate) fn server(&self) -> Result<ServerAddress, ServerError> {
        self.mqtt.server.parse()
    }

    /// The subscription filters: `mqtt.inputs`, or `<base_topic>/classify/#`.
    pub fn input_filters(&self) -> Vec<String> {
        match &self.mqtt.inputs {
            Some(inputs) => inputs.clone(),
            None => vec![format!("{}/classify/#", self.mqtt.base_topic)],
        }
    }

    /// `mqtt.client_id`, or `sentimqd-<hostname>`.
    pub fn client_id(&self) -> String {
        self.mqtt.client_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            if host.is_empty() {
                "sentimqd".into()
            } else {
                format!("sentimqd-{host}")
            }
        })
    }

    /// Inference threads after resolving 0 = one per core.
    pub(crate) fn workers(&self) -> usize {
        match self.pipeline.workers {
            0 => available_cores(),
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

    /// Intra-op threads after resolving 0 = cores / workers (at least 1; always 1 in a build
    /// without intra-op threads, see [`crate::engine::HAS_INTRA_OP_THREADS`]).
    pub(crate) fn intra_op_threads(&self) -> usize {
        match self.pipeline.intra_op_threads {
            0 if !crate::engine::HAS_INTRA_OP_THREADS => 1,
            0 => (available_cores() / self.workers()).max(1),
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

    /// `pipeline.max_wait_ms` as a duration.
    pub(crate) fn batch_window(&self) -> Duration {
        Duration::from_millis(self.pipeline.max_wait_ms)
    }
}

/// Cores this process may use.
pub(crate) fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
