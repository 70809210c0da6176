//! Command-line flags that override configuration keys (the top layer).
//!
//! Every field is an `Option` without a clap default: a default here would silently beat the
//! file and the environment. Flag help is written once, here.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Flags shared by `sentimqd run` and `sentimqd validate`.
#[derive(Args, Clone, Debug, Default)]
pub struct Flags {
    /// Config file (TOML); see the README for every key.
    #[arg(long, short = 'c', value_name = "FILE", env = "SENTIMQ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Broker URL: mqtt://host:1883 or mqtts://host:8883 (port optional) [key: mqtt.server]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// MQTT client id, also the persistent session's name [key: mqtt.client_id]
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Prefix of the topics the daemon publishes to [key: mqtt.base_topic]
    #[arg(long, value_name = "TOPIC")]
    pub base_topic: Option<String>,
    /// Subscription filter to classify; repeat for several [key: mqtt.inputs]
    #[arg(long = "input", value_name = "FILTER")]
    pub inputs: Vec<String>,
    /// User name for the broker [key: mqtt.username]
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,
    /// File whose first line is the broker password [key: mqtt.password_file]
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) for mqtts:// [key: mqtt.tls.ca_file]
    #[arg(long, value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate chain [key: mqtt.tls.cert_file]
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM client private key [key: mqtt.tls.key_file]
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Model directory [key: model.path]
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Graph file inside the model directory [key: model.graph]
    #[arg(long, value_name = "FILE")]
    pub graph: Option<String>,
    /// Inference threads, 0 = one per core [key: pipeline.workers]
    #[arg(long, value_name = "N")]
    pub workers: Option<u64>,
    /// Threads per matrix product, 0 = cores / workers; above 1 only in builds with the
    /// intra-op-threads feature (not the device packages) [key: pipeline.intra_op_threads]
    #[arg(long, value_name = "N")]
    pub intra_op_threads: Option<u64>,
    /// Most texts per batch [key: pipeline.max_batch]
    #[arg(long, value_name = "N")]
    pub max_batch: Option<u64>,
    /// While all inference threads are busy, how long a batch waits for more texts [key: pipeline.max_wait_ms]
    #[arg(long, value_name = "MS")]
    pub max_wait_ms: Option<u64>,
    /// Seconds between stats messages, 0 = never [key: stats.interval_secs]
    #[arg(long, value_name = "SECS")]
    pub stats_interval_secs: Option<u64>,
    /// Log format [key: log.format]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormatFlag>,
    /// Log filter, e.g. info or sentimq=debug [key: log.level]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// `--log-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatFlag {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl Flags {
    /// The keys these flags set: `(key path, flag, value)`.
    pub(crate) fn overrides(&self) -> Vec<(&'static str, &'static str, toml::Value)> {
        use toml::Value as V;
        let string = |s: &String| V::String(s.clone());
        let path = |p: &PathBuf| V::String(p.to_string_lossy().into_owned());
        let int = |n: &u64| V::Integer(i64::try_from(*n).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        let mut push = |key, flag, value: Option<V>| {
            if let Some(value) = value {
                out.push((key, flag, value));
            }
        };
        push("mqtt.server", "--server", self.server.as_ref().map(string));
        push(
            "mqtt.client_id",
            "--client-id",
            self.client_id.as_ref().map(string),
        );
        push(
            "mqtt.base_topic",
            "--base-topic",
            self.base_topic.as_ref().map(string),
        );
        push(
            "mqtt.inputs",
            "--input",
            (!self.inputs.is_empty()).then(|| V::Array(self.inputs.iter().map(string).collect())),
        );
        push(
            "mqtt.username",
            "--username",
            self.username.as_ref().map(string),
        );
        push(
            "mqtt.password_file",
            "--password-file",
            self.password_file.as_ref().map(path),
        );
        push(
            "mqtt.tls.ca_file",
            "--tls-ca-file",
            self.tls_ca_file.as_ref().map(path),
        );
        push(
            "mqtt.tls.cert_file",
            "--tls-cert-file",
            self.tls_cert_file.as_ref().map(path),
        );
        push(
            "mqtt.tls.key_file",
            "--tls-key-file",
            self.tls_key_file.as_ref().map(path),
        );
        push("model.path", "--model", self.model.as_ref().map(path));
        push("model.graph", "--graph", self.graph.as_ref().map(string));
        push(
            "pipeline.workers",
            "--workers",
            self.workers.as_ref().map(int),
        );
        push(
            "pipeline.intra_op_threads",
            "--intra-op-threads",
            self.intra_op_threads.as_ref().map(int),
        );
        push(
            "pipeline.max_batch",
            "--max-batch",
            self.max_batch.as_ref().map(int),
        );
        push(
            "pipeline.max_wait_ms",
            "--max-wait-ms",
            self.max_wait_ms.as_ref().map(int),
        );
        push(
            "stats.interval_secs",
            "--stats-interval-secs",
            self.stats_interval_secs.as_ref().map(int),
        );
        push(
            "log.format",
            "--log-format",
            self.log_format.map(|f| {
                V::String(match f {
                    LogFormatFlag::Human => "human".into(),
                    LogFormatFlag::Json => "json".into(),
                })
            }),
        );
        push(
            "log.level",
            "--log-level",
            self.log_level.as_ref().map(string),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::KEYS;
    use super::*;

    /// Every flag named in the key table is produced by `overrides`, and vice versa.
    #[test]
    fn flags_and_key_table_agree() {
        let all = Flags {
            config: None,
            server: Some("s".into()),
            client_id: Some("c".into()),
            base_topic: Some("b".into()),
            inputs: vec!["i".into()],
            username: Some("u".into()),
            password_file: Some("p".into()),
            tls_ca_file: Some("a".into()),
            tls_cert_file: Some("c".into()),
            tls_key_file: Some("k".into()),
            model: Some("m".into()),
            graph: Some("g".into()),
            workers: Some(1),
            intra_op_threads: Some(1),
            max_batch: Some(1),
            max_wait_ms: Some(1),
            stats_interval_secs: Some(1),
            log_format: Some(LogFormatFlag::Json),
            log_level: Some("info".into()),
        };
        let mut produced: Vec<(&str, &str)> =
            all.overrides().iter().map(|(k, f, _)| (*k, *f)).collect();
        let mut listed: Vec<(&str, &str)> = KEYS
            .iter()
            .filter_map(|k| Some((k.path, k.flag?)))
            .collect();
        produced.sort();
        listed.sort();
        assert_eq!(produced, listed);
    }
}
