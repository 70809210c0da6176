//! Semantic checks of a merged configuration: values that are well-typed but unusable, or
//! inconsistent with each other. No file system or network access (that is `validate`'s job).

use super::{Config, ConfigError};

/// Semantic checks that need no file system or network access.
pub(super) fn check(config: &Config, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    use crate::daemon::topic;
    let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };

    let server = config
        .server()
        .map_err(|e| invalid("mqtt.server", e.to_string()))?;
    let tls = &config.mqtt.tls;
    if !server.is_tls {
        for (key, set) in [
            ("mqtt.tls.ca_file", tls.ca_file.is_some()),
            ("mqtt.tls.cert_file", tls.cert_file.is_some()),
            ("mqtt.tls.key_file", tls.key_file.is_some()),
        ] {
            if set {
                return Err(invalid(
                    key,
                    format!(
                        "is set but mqtt.server {:?} is plain TCP; use mqtts:// to connect with TLS",
                        config.mqtt.server
                    ),
                ));
            }
        }
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        let missing = if tls.cert_file.is_some() {
            "mqtt.tls.key_file"
        } else {
            "mqtt.tls.cert_file"
        };
        return Err(invalid(
            missing,
            "a client certificate needs both mqtt.tls.cert_file and mqtt.tls.key_file".into(),
        ));
    }
    if config.mqtt.password.is_some() && config.mqtt.username.is_none() {
        return Err(invalid(
            "mqtt.username",
            "a password is set but no user name; set mqtt.username".into(),
        ));
    }

    let base = &config.mqtt.base_topic;
    topic::validate_name(base).map_err(|e| invalid("mqtt.base_topic", format!("{base:?} {e}")))?;
    if base.starts_with('$') {
        return Err(invalid(
            "mqtt.base_topic",
            format!("{base:?} starts with `$`, which brokers reserve for themselves"),
        ));
    }
    let filters = config.input_filters();
    if filters.is_empty() {
        return Err(invalid(
            "mqtt.inputs",
            "is empty; list at least one filter, e.g. [\"sentimq/classify/#\"]".into(),
        ));
    }
    let results = format!("{base}/result");
    let own_topics = [
        format!("{base}/error"),
        format!("{base}/status"),
        format!("{base}/info"),
        format!("{base}/stats"),
        format!("{base}/reload"),
        format!("{base}/command/reload"),
    ];
    for (i, filter) in filters.iter().enumerate() {
        topic::validate_filter(filter).map_err(|e| ConfigError::Invalid {
            key: "mqtt.inputs",
            message: format!("[{i}] {filter:?} {e}"),
        })?;
        let own = own_topics
            .iter()
            .find(|t| topic::matches(filter, t))
            .cloned()
            .or_else(|| topic::matches_below(filter, &results).then(|| format!("{results}/…")));
        if let Some(own) = own {
            return Err(invalid(
                "mqtt.inputs",
                format!("[{i}] {filter:?} also matches the daemon's own topic {own:?}, so it would classify its own output; narrow the filter or change mqtt.base_topic"),
            ));
        }
    }
    if config.input.text_field.is_empty() {
        return Err(invalid("input.text_field", "is empty".into()));
    }
    if config.mqtt.receive_maximum > config.pipeline.queue_capacity {
        return Err(invalid(
            "mqtt.receive_maximum",
            format!(
                "{} exceeds pipeline.queue_capacity {}; the broker could send more inputs than the daemon can queue",
                config.mqtt.receive_maximum, config.pipeline.queue_capacity
            ),
        ));
    }
    if config.mqtt.max_packet_bytes <= config.input.max_payload_bytes {
        warnings.push(format!(
            "mqtt.max_packet_bytes {} is not above input.max_payload_bytes {}: the broker drops messages too big for the daemon silently, so they cannot get a too_long error",
            config.mqtt.max_packet_bytes, config.input.max_payload_bytes
        ));
    }
    if config.mqtt.reconnect_initial_ms > config.mqtt.reconnect_max_ms {
        return Err(invalid(
            "mqtt.reconnect_initial_ms",
            "is larger than mqtt.reconnect_max_ms".into(),
        ));
    }
    let asked = config.pipeline.intra_op_threads;
    if asked > 1 && !crate::engine::HAS_INTRA_OP_THREADS {
        return Err(invalid(
            "pipeline.intra_op_threads",
            format!("is {asked}, but this sentimqd is built without intra-op threads (as the device packages are: their workers run in parallel instead); set 0 or 1 and choose pipeline.workers"),
        ));
    }
    let cores = super::available_cores();
    let threads = config.workers() * config.intra_op_threads();
    if threads > cores {
        warnings.push(format!(
            "pipeline.workers × pipeline.intra_op_threads = {threads} threads on {cores} cores; they will contend"
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        return Err(invalid("log.level", format!("{:?}: {e}", config.log.level)));
    }
    Ok(())
}
