//! Log output: `tracing` to stderr, human lines or JSON objects, filtered by `log.level`.
//!
//! The daemon logs one line per lifecycle event at `info` (start, connect, subscribe, ready,
//! reconnect, shutdown), problems at `warn`/`error`, and nothing per message above `debug`
//! except warnings that go through a [`Throttle`] (at most one line per 10 s each).
//! The `log` records of rumqttc and tract are forwarded, at `warn` and above unless `log.level`
//! names them; the embedded broker (rumqttd) is silent unless named. Colours only when stderr is a terminal.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

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

/// A warning that inputs can trigger one by one (a QoS 0 input dropped under overload): logged
/// at most once per [`Throttle::EVERY`], saying how many were held back since, so that hostile
/// or runaway traffic cannot flood the journal or wear out an SD card. The stats message counts
/// every one.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// Shortest time between two lines of one warning.
    pub(crate) const EVERY: Duration = Duration::from_secs(10);

    /// `Some(n)` when the warning may be logged now, `n` being how many were held back since
    /// the last line; `None` when this one is held back.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Self::EVERY)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_warning_logs_once_per_interval_and_counts_the_rest() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.allow(start), Some(0));
        for i in 1..=1000 {
            assert_eq!(throttle.allow(start + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.allow(start + Throttle::EVERY), Some(1000));
        assert_eq!(throttle.allow(start + Throttle::EVERY), None);
        assert_eq!(throttle.allow(start + Throttle::EVERY * 3), Some(1));
    }
}
