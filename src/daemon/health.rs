//! Liveness and readiness: systemd notifications, the watchdog, the `<base>/info` message.
//!
//! `READY=1` is sent once the model is loaded and the broker has acknowledged the
//! subscriptions; the watchdog is fed only while the event loop shows progress (every poll
//! returns at least once per keep-alive), never by a free-running timer. Without
//! `NOTIFY_SOCKET` (not under systemd) the notifications do nothing. A model reload is framed by
//! `RELOADING=1` and `READY=1` (`systemctl status` shows it; `systemctl reload` returns once the
//! signal is sent).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sd_notify::NotifyState;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, error, warn};

/// Progress and readiness, shared by the event loop and the watchdog.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    last_progress_ms: AtomicU64,
    is_ready: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            last_progress_ms: AtomicU64::new(0),
            is_ready: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// The event loop made progress (an event or a connection attempt).
    pub fn progress(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_progress_ms.store(now, Ordering::Relaxed);
    }

    /// Time since the last progress.
    pub fn since_progress(&self) -> Duration {
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Whether systemd was told the daemon is ready.
    pub fn is_ready(&self) -> bool {
        self.is_ready.load(Ordering::Relaxed)
    }

    /// Subscriptions are acknowledged: tell systemd (once).
    pub fn mark_ready(&self) {
        if !self.is_ready.swap(true, Ordering::Relaxed) {
            notify(&[NotifyState::Ready, NotifyState::Status("classifying")]);
        }
    }
}

/// Tells systemd a model reload started (until [`notify_reloaded`]).
pub fn notify_reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the model"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// Tells systemd the reload is over (swapped in or refused) and the daemon classifies again.
pub fn notify_reloaded() {
    notify(&[NotifyState::Ready, NotifyState::Status("classifying")]);
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify systemd: {e}");
    }
}

/// Feeds systemd's watchdog every half period while the event loop progressed within
/// `stale_after`; returns at once when the watchdog is off. Stops when `stopping` is set.
pub async fn watchdog(
    health: std::sync::Arc<Health>,
    stale_after: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    // WATCHDOG_USEC=0 (set by hand; systemd never sends it) means no watchdog too.
    let Some(period) = sd_notify::watchdog_enabled().filter(|period| !period.is_zero()) else {
        return;
    };
    debug!(period_ms = period.as_millis() as u64, "systemd watchdog on");
    if period < stale_after {
        warn!(
            "WatchdogSec ({} s) is shorter than the event loop's quiet time ({} s: mqtt.keep_alive_secs + mqtt.connect_timeout_secs + mqtt.reconnect_max_ms); the watchdog may fire on an idle daemon",
            period.as_secs(),
            stale_after.as_secs()
        );
    }
    let mut ticker = tokio::time::interval(period / 2);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if health.since_progress() <= stale_after {
            notify(&[NotifyState::Watchdog]);
        } else {
            error!(
                quiet_s = health.since_progress().as_secs(),
                "the MQTT event loop has made no progress; not feeding the watchdog"
            );
        }
    }
}

/// The retained `<base>/info` payload.
#[derive(Debug, Serialize)]
pub struct Info<'a> {
    /// sentimq version.
    pub version: &'static str,
    /// `<name>@<sha12>` of the graph served.
    pub model: &'a str,
    /// Class labels, in output order.
    pub labels: &'a [String],
    /// The graph file served.
    pub graph: &'a str,
    /// `int8`, `f16` or `f32`, from the graph file name.
    pub quantization: &'a str,
    /// Token window and head of head+tail truncation.
    pub max_tokens: usize,
    /// Inference threads.
    pub workers: usize,
    /// Threads per matrix product.
    pub intra_op_threads: usize,
    /// Batch size limit.
    pub max_batch: usize,
    /// Batch wait.
    pub max_wait_ms: u64,
    /// Subscribed filters.
    pub inputs: &'a [String],
    /// JSON text field.
    pub text_field: &'a str,
    /// Payload limit.
    pub max_payload_bytes: u64,
    /// Whether results echo the text.
    pub echo_text: bool,
    /// Results whose top score is below this carry the label `uncertain` (0: off).
    pub uncertain_below: f64,
    /// Unix milliseconds at start.
    pub started_at: u64,
}

impl Info<'_> {
    /// Serialized.
    pub fn to_bytes(&self) -> Bytes {
        serde_json::to_vec(self)
            .expect("info serializes to memory")
            .into()
    }
}

/// `int8`, `f16` or `f32` from a graph file name (`model.int8.onnx`, …).
pub fn quantization_of(graph: &str) -> &'static str {
    if graph.contains("int8") {
        "int8"
    } else if graph.contains("f16") {
        "f16"
    } else {
        "f32"
    }
}
