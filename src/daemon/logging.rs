//! Log output: `tracing` to stderr, human lines or JSON objects, filtered by `log.level`.
//!
//! The daemon logs one line per lifecycle event at `info` (start, connect, subscribe, ready,
//! reconnect, shutdown), problems at `warn`/`error`, and nothing per message above `debug`.
//! The `log` records of rumqttc and tract are forwarded, at `warn` and above unless `log.level`
//! names them; the embedded broker (rumqttd) is silent unless named. Colours only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::config::{LogConfig, LogFormat};

/// Installs the global subscriber; a second call (tests, embedding) keeps the first one.
pub fn init(config: &LogConfig) {
    let mut level = config.level.clone();
    // The embedded broker of `sentimqd demo` logs a normal disconnect as an error: off unless
    // `log.level` names it.
    if !level.contains("rumqttd") {
        level = format!("{level},rumqttd=off");
    }
    for chatty in [
        "rumqttc",
        "tract_linalg",
        "tract_core",
        "tract_hir",
        "tract_onnx",
    ] {
        if !level.contains(chatty) {
            level = format!("{level},{chatty}=warn");
        }
    }
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
