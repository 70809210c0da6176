//! Every configuration key, once: its type and range, its environment variable, its docs.
//!
//! The loader checks file values against this table (so errors name the key path), parses
//! environment variables with it, and the README's config table is tested against it.

/// The type of a key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// A file system path.
    Path,
    /// `true` or `false`.
    Bool,
    /// An integer in `min..=max`.
    Int {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A list of strings (comma-separated in the environment).
    List,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A probability: a number from 0 up to (not including) 1.
    Probability,
}

impl Kind {
    /// What a value of this kind looks like, for error messages.
    pub(crate) fn expected(&self) -> String {
        match self {
            Kind::Str => "a string".into(),
            Kind::Path => "a path (string)".into(),
            Kind::Bool => "true or false".into(),
            Kind::Int { min, max } => format!("an integer in {min}..={max}"),
            Kind::List => "a list of strings".into(),
            Kind::Choice(options) => format!("one of {}", options.join(", ")),
            Kind::Probability => "a number from 0 up to (not including) 1".into(),
        }
    }
}

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Dotted path in the TOML file, e.g. `mqtt.tls.ca_file`.
    pub path: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The default, as written in the README.
    pub default: &'static str,
    /// The flag that sets it, if any.
    pub flag: Option<&'static str>,
    /// One line of documentation.
    pub doc: &'static str,
}

impl Key {
    /// The environment variable: `SENTIMQ_` + the path in upper case with `_` for `.`.
    pub fn env_var(&self) -> String {
        env_var(self.path)
    }
}

/// The environment variable of a key path.
pub(crate) fn env_var(path: &str) -> String {
    format!("SENTIMQ_{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Environment variable holding the MQTT password (a secret, so it has no TOML key).
pub const PASSWORD_ENV: &str = "SENTIMQ_MQTT_PASSWORD";

/// Environment variable naming the config file (same as `--config`).
pub(crate) const CONFIG_ENV: &str = "SENTIMQ_CONFIG";

/// Sections of the file (tables that hold keys).
pub(crate) const SECTIONS: &[&str] = &[
    "mqtt", "mqtt.tls", "input", "model", "pipeline", "stats", "log",
];

const U16: u64 = u16::MAX as u64;
const U32: u64 = u32::MAX as u64;

/// All keys, in README order.
pub const KEYS: &[Key] = &[
    Key { path: "mqtt.server", kind: Kind::Str, default: "mqtt://localhost:1883", flag: Some("--server"), doc: "broker URL, `mqtt://host[:port]` or `mqtts://host[:port]` (TLS, default port 8883)" },
    Key { path: "mqtt.client_id", kind: Kind::Str, default: "sentimqd-<hostname>", flag: Some("--client-id"), doc: "client id; names the persistent session, so keep it stable and unique per daemon" },
    Key { path: "mqtt.base_topic", kind: Kind::Str, default: "sentimq", flag: Some("--base-topic"), doc: "prefix of every topic the daemon publishes to (no wildcards)" },
    Key { path: "mqtt.inputs", kind: Kind::List, default: "[\"<base_topic>/classify/#\"]", flag: Some("--input"), doc: "subscription filters to classify; wildcards and `$share/<group>/<filter>` allowed" },
    Key { path: "mqtt.username", kind: Kind::Str, default: "none", flag: Some("--username"), doc: "user name for the broker" },
    Key { path: "mqtt.password_file", kind: Kind::Path, default: "none", flag: Some("--password-file"), doc: "file whose first line is the password (or set `SENTIMQ_MQTT_PASSWORD`); warned about when its group or others have any permission on it" },
    Key { path: "mqtt.keep_alive_secs", kind: Kind::Int { min: 5, max: U16 }, default: "30", flag: None, doc: "MQTT keep-alive" },
    Key { path: "mqtt.session_expiry_secs", kind: Kind::Int { min: 0, max: U32 }, default: "86400", flag: None, doc: "how long the broker keeps the session and queues inputs while the daemon is away" },
    Key { path: "mqtt.receive_maximum", kind: Kind::Int { min: 1, max: U16 }, default: "64", flag: None, doc: "unacknowledged QoS 1 inputs the broker may send at once (flow control); at most `pipeline.queue_capacity`, whose other slots take QoS 0 inputs" },
    Key { path: "mqtt.max_packet_bytes", kind: Kind::Int { min: 1024, max: 268_435_455 }, default: "2097152", flag: None, doc: "largest packet accepted from the broker; the broker drops larger messages, so keep it above `input.max_payload_bytes`" },
    Key { path: "mqtt.connect_timeout_secs", kind: Kind::Int { min: 1, max: 600 }, default: "10", flag: None, doc: "timeout of one connection attempt (TCP, TLS, CONNACK)" },
    Key { path: "mqtt.reconnect_initial_ms", kind: Kind::Int { min: 10, max: 600_000 }, default: "250", flag: None, doc: "first reconnect delay; doubles per failure, with jitter" },
    Key { path: "mqtt.reconnect_max_ms", kind: Kind::Int { min: 100, max: 3_600_000 }, default: "30000", flag: None, doc: "longest reconnect delay" },
    Key { path: "mqtt.reload_command", kind: Kind::Bool, default: "false", flag: None, doc: "subscribe to `<base_topic>/command/reload` (QoS 0): any message there reloads the model as SIGHUP does; protect the topic with a broker ACL (see Model reload)" },
    Key { path: "mqtt.tls.ca_file", kind: Kind::Path, default: "system roots", flag: Some("--tls-ca-file"), doc: "PEM CA certificate(s) to trust (`mqtts://` only)" },
    Key { path: "mqtt.tls.cert_file", kind: Kind::Path, default: "none", flag: Some("--tls-cert-file"), doc: "PEM client certificate chain" },
    Key { path: "mqtt.tls.key_file", kind: Kind::Path, default: "none", flag: Some("--tls-key-file"), doc: "PEM client private key (PKCS#8, PKCS#1 or SEC1)" },
    Key { path: "input.text_field", kind: Kind::Str, default: "text", flag: None, doc: "field holding the text in JSON payloads" },
    Key { path: "input.max_payload_bytes", kind: Kind::Int { min: 1, max: 268_435_455 }, default: "1048576", flag: None, doc: "larger payloads get a `too_long` error" },
    Key { path: "input.echo_text", kind: Kind::Bool, default: "false", flag: None, doc: "copy the input text into results (`text`)" },
    Key { path: "model.path", kind: Kind::Path, default: "models/imdb-minilm", flag: Some("--model"), doc: "model directory (relative to the working directory)" },
    Key { path: "model.graph", kind: Kind::Str, default: "the manifest's `default_graph`", flag: Some("--graph"), doc: "graph file inside the model directory, e.g. `model.f16.onnx`" },
    Key { path: "model.plans", kind: Kind::Int { min: 1, max: 64 }, default: "16", flag: None, doc: "most shape-specialised tract plans kept: one per length bucket in use (every 16 tokens up to 128, every 32 up to 256, every 64 up to 512: 16 buckets for a 512-token window); all plans share one packed copy of the weights, so a plan costs only its graph and run state; a text whose bucket is not cached costs a re-optimization (50–250 ms)" },
    Key { path: "model.max_tokens", kind: Kind::Int { min: 0, max: 8192 }, default: "0", flag: None, doc: "most word pieces read per text, `[CLS]` and `[SEP]` included (head+tail, the head at most half); 0 = the model's window (`model.json`'s `truncation.max_tokens`), which is also the upper bound. Lower it to bound the latency of long texts on slow devices; short texts are unaffected" },
    Key { path: "model.warm_up_tokens", kind: Kind::Int { min: 0, max: 8192 }, default: "512", flag: None, doc: "plans for every length bucket up to this many tokens (at most `model.plans` of them, never past the model's window) are built at start, before the daemon goes online, so the first texts of those lengths answer as fast as the rest: about 0.1 s per plan on x86, 16 plans for a 512-token window; 0 = none before going online" },
    Key { path: "model.warm_up_background", kind: Kind::Bool, default: "true", flag: None, doc: "after going online (and after each reload), a lowest-priority thread builds the plans of the buckets past `model.warm_up_tokens` up to the window (at most `model.plans`), shortest first; a text whose plan it is building waits for it. Lets a slow device go online after its short buckets and warm the rest while it serves; false = those plans are built on first use" },
    Key { path: "model.uncertain_below", kind: Kind::Probability, default: "0.0", flag: None, doc: "a result whose top score is below this is published with the label `uncertain` (its `score` and `scores` unchanged), so consumers can route neutral, mixed or non-English text instead of trusting a near coin flip; the shipped model's scores are calibrated (a score of 0.8 is right about 80 % of the time), and `models/README.md` lists how many texts each threshold holds back; 0 = off" },
    Key { path: "model.allow_label_change", kind: Kind::Bool, default: "false", flag: None, doc: "a reload may swap in a model whose labels differ from the served model's (consumers parse labels, so a change is refused by default)" },
    Key { path: "pipeline.workers", kind: Kind::Int { min: 0, max: 256 }, default: "0", flag: Some("--workers"), doc: "inference threads, each with its own session; 0 = one per core" },
    Key { path: "pipeline.intra_op_threads", kind: Kind::Int { min: 0, max: 256 }, default: "0", flag: Some("--intra-op-threads"), doc: "threads per matrix product; 0 = cores / workers (1 with the default workers); above 1 only in builds with the `intra-op-threads` feature (a default one; the device packages, built with `--no-default-features`, refuse it)" },
    Key { path: "pipeline.max_batch", kind: Kind::Int { min: 1, max: 1024 }, default: "16", flag: Some("--max-batch"), doc: "most texts classified in one batch" },
    Key { path: "pipeline.max_wait_ms", kind: Kind::Int { min: 0, max: 10_000 }, default: "5", flag: Some("--max-wait-ms"), doc: "while every inference thread is busy, how long the first text of a batch waits for more (an idle thread gets it at once)" },
    Key { path: "pipeline.queue_capacity", kind: Kind::Int { min: 1, max: 1 << 20 }, default: "256", flag: None, doc: "capacity of the intake queue (inputs waiting for the batcher) and of the reply queue; the batch queue holds one batch per inference thread, the MQTT client's request queue `max(queue_capacity, 64)`" },
    Key { path: "pipeline.dedup_window", kind: Kind::Int { min: 0, max: 1 << 24 }, default: "10000", flag: None, doc: "recent inputs remembered to count redeliveries (0 = off)" },
    Key { path: "pipeline.shutdown_timeout_secs", kind: Kind::Int { min: 1, max: 3600 }, default: "10", flag: None, doc: "longest graceful shutdown before exiting anyway" },
    Key { path: "stats.interval_secs", kind: Kind::Int { min: 0, max: 86_400 }, default: "60", flag: Some("--stats-interval-secs"), doc: "seconds between `<base>/stats` messages; 0 = never" },
    Key { path: "log.format", kind: Kind::Choice(&["human", "json"]), default: "human", flag: Some("--log-format"), doc: "`human` lines or one JSON object per line" },
    Key { path: "log.level", kind: Kind::Str, default: "info", flag: Some("--log-level"), doc: "a tracing filter: `info`, `debug`, `sentimq=debug,rumqttc=warn`" },
];

/// The key at `path`.
pub(crate) fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// The known key closest to an unknown one, for "did you mean" hints: the same leaf name in
/// another section (`mqtt.ca_file` → `mqtt.tls.ca_file`), else the key sharing most words of
/// its leaf, preferring the same section (`pipeline.batch_size` → `pipeline.max_batch`).
pub(crate) fn closest(path: &str) -> Option<&'static str> {
    let (section, leaf) = path.rsplit_once('.').unwrap_or(("", path));
    if let Some(key) = KEYS
        .iter()
        .find(|k| k.path.rsplit('.').next() == Some(leaf))
    {
        return Some(key.path);
    }
    let words: Vec<&str> = leaf.split('_').collect();
    KEYS.iter()
        .filter_map(|k| {
            let (key_section, key_leaf) = k.path.rsplit_once('.')?;
            let shared = key_leaf.split('_').filter(|w| words.contains(w)).count();
            let score = 2 * shared + usize::from(key_section == section);
            (shared > 0).then_some((score, k.path))
        })
        .max_by_key(|(score, path)| (*score, std::cmp::Reverse(path.len())))
        .map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The table and the `Config` struct name the same keys.
    #[test]
    fn table_matches_the_config_struct() {
        let mut config = super::super::Config::default();
        config.mqtt.client_id = Some("x".into());
        config.mqtt.inputs = Some(vec![]);
        config.mqtt.username = Some("u".into());
        config.mqtt.password_file = Some("p".into());
        config.mqtt.tls.ca_file = Some("c".into());
        config.mqtt.tls.cert_file = Some("c".into());
        config.mqtt.tls.key_file = Some("k".into());
        config.model.graph = Some("g".into());
        let value = toml::Value::try_from(&config).expect("serializes");
        let mut found = BTreeSet::new();
        fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
            if let toml::Value::Table(table) = value {
                for (k, v) in table {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if SECTIONS.contains(&path.as_str()) {
                        walk(&path, v, out);
                    } else {
                        out.insert(path);
                    }
                }
            }
        }
        walk("", &value, &mut found);
        let listed: BTreeSet<String> = KEYS.iter().map(|k| k.path.to_string()).collect();
        assert_eq!(found, listed);
    }

    #[test]
    fn env_vars_are_unique_and_derived_from_paths() {
        let vars: BTreeSet<String> = KEYS.iter().map(Key::env_var).collect();
        assert_eq!(vars.len(), KEYS.len());
        assert_eq!(
            find("mqtt.tls.ca_file").unwrap().env_var(),
            "SENTIMQ_MQTT_TLS_CA_FILE"
        );
        assert!(!vars.contains(PASSWORD_ENV));
    }

    #[test]
    fn closest_suggests_a_key() {
        assert_eq!(closest("mqtt.ca_file"), Some("mqtt.tls.ca_file"));
        assert_eq!(closest("pipeline.batch"), Some("pipeline.max_batch"));
        assert_eq!(closest("pipeline.batch_size"), Some("pipeline.max_batch"));
        assert_eq!(closest("mqtt.zzz"), None);
    }
}
