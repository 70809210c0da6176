//! Counters behind `<base>/stats`, the latency window and the redelivery window.
//!
//! [`Stats`] is shared (`Arc`) by every stage; counters are atomics, the latency ring a short
//! mutex. [`DuplicateWindow`] belongs to the batcher alone.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::contract::ErrorCode;
use super::message::Inbound;
use crate::metrics::percentile;

/// Latencies kept for the percentiles: the most recent ones.
const LATENCY_WINDOW: usize = 4096;

/// Daemon-wide counters.
pub struct Stats {
    started: Instant,
    received: AtomicU64,
    results: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    duplicates: AtomicU64,
    redelivered: AtomicU64,
    unanswered: AtomicU64,
    publish_refused: AtomicU64,
    /// Results per label name: every model served since start (a reload may change labels).
    label_counts: Mutex<BTreeMap<String, u64>>,
    latencies_us: Mutex<VecDeque<u64>>,
}

/// The `<base>/stats` payload.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Seconds since start.
    pub uptime_s: u64,
    /// Inputs received.
    pub received: u64,
    /// Inputs classified (results produced).
    pub processed: u64,
    /// Inputs rejected (error replies produced).
    pub errors: u64,
    /// Error replies per code (codes with 0 are left out).
    pub errors_by_code: BTreeMap<&'static str, u64>,
    /// Inputs seen before within `pipeline.dedup_window`.
    pub duplicates: u64,
    /// Inputs the broker flagged as redeliveries (DUP).
    pub redelivered: u64,
    /// QoS 0 inputs dropped without a reply because even the error queue was full.
    pub unanswered: u64,
    /// Replies the broker refused (PUBACK with an error reason).
    pub publish_refused: u64,
    /// Inputs received and not yet answered.
    pub queue_depth: u64,
    /// Replies handed to the broker and not yet acknowledged.
    pub awaiting_ack: u64,
    /// Latency from receipt to reply over the most recent inputs.
    pub latency_ms: Percentiles,
    /// Results per label.
    pub labels: BTreeMap<String, u64>,
    /// Unix milliseconds.
    pub ts: u64,
}

/// Median and 95th percentile.
#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
}

impl Stats {
    /// Counters for a model with these labels.
    pub fn new(labels: &[String]) -> Self {
        Stats {
            started: Instant::now(),
            received: AtomicU64::new(0),
            results: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            duplicates: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
            publish_refused: AtomicU64::new(0),
            label_counts: Mutex::new(labels.iter().map(|l| (l.clone(), 0)).collect()),
            latencies_us: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
        }
    }

    /// An input arrived.
    pub fn received(&self, input: &Inbound) {
        self.received.fetch_add(1, Relaxed);
        if input.is_redelivery {
            self.redelivered.fetch_add(1, Relaxed);
        }
    }

    /// An input was seen before.
    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Relaxed);
    }

    /// A result labelled `label` after `latency`.
    pub fn result(&self, label: &str, latency: Duration) {
        self.results.fetch_add(1, Relaxed);
        {
            let mut counts = self.label_counts.lock().expect("stats lock");
            match counts.get_mut(label) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(label.to_string(), 1);
                }
            }
        }
        let mut window = self.latencies_us.lock().expect("stats lock");
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(latency.as_micros() as u64);
    }

    /// An error reply with `code`.
    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].fetch_add(1, Relaxed);
    }

    /// A QoS 0 input dropped with no reply possible.
    pub fn unanswered(&self) {
        self.unanswered.fetch_add(1, Relaxed);
    }

    /// The broker refused one of our publishes.
    pub fn publish_refused(&self) {
        self.publish_refused.fetch_add(1, Relaxed);
    }

    /// Current values; `awaiting_ack` comes from the broker I/O stage.
    pub fn snapshot(&self, awaiting_ack: u64) -> Snapshot {
        let errors_by_code: BTreeMap<&'static str, u64> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str(), self.errors[c.index()].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let errors: u64 = errors_by_code.values().sum();
        let processed = self.results.load(Relaxed);
        let received = self.received.load(Relaxed);
        let answered = processed + errors + self.unanswered.load(Relaxed);
        Snapshot {
            uptime_s: self.started.elapsed().as_secs(),
            received,
            processed,
            errors,
            errors_by_code,
            duplicates: self.duplicates.load(Relaxed),
            redelivered: self.redelivered.load(Relaxed),
            unanswered: self.unanswered.load(Relaxed),
            publish_refused: self.publish_refused.load(Relaxed),
            queue_depth: received.saturating_sub(answered),
            awaiting_ack,
            latency_ms: self.percentiles(),
            labels: self.label_counts.lock().expect("stats lock").clone(),
            ts: super::contract::unix_ms(),
        }
    }

    fn percentiles(&self) -> Percentiles {
        let mut sorted: Vec<u64> = self
            .latencies_us
            .lock()
            .expect("stats lock")
            .iter()
            .copied()
            .collect();
        sorted.sort_unstable();
        // Microseconds to milliseconds with two decimals.
        let at = |q: f64| percentile(&sorted, q).map(|us| (us as f64 / 10.0).round() / 100.0);
        match (at(0.5), at(0.95)) {
            (Some(p50), Some(p95)) => Percentiles { p50, p95 },
            _ => Percentiles::default(),
        }
    }
}

/// The last `capacity` input fingerprints (topic, payload, correlation data), to recognise
/// redeliveries. Duplicates are counted, not suppressed: every delivery is answered
/// (at-least-once), and consumers deduplicate by `id`.
pub struct DuplicateWindow {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl DuplicateWindow {
    /// A window over the last `capacity` inputs (0 = never report duplicates).
    pub fn new(capacity: usize) -> Self {
        DuplicateWindow {
            seen: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    /// Records `input`; returns whether it was already in the window.
    pub fn observe(&mut self, input: &Inbound) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let key = fingerprint(input);
        if self.seen.contains(&key) {
            return true;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(key);
        self.seen.insert(key);
        false
    }
}

fn fingerprint(input: &Inbound) -> u64 {
    // SipHash with fixed keys: stable within the process, which is all the window needs.
    let mut hasher = std::hash::DefaultHasher::new();
    input.topic.hash(&mut hasher);
    input.payload.hash(&mut hasher);
    if let Some(route) = &input.response {
        route.topic.hash(&mut hasher);
        route.correlation.hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn input(payload: &'static str) -> Inbound {
        Inbound {
            topic: "t".into(),
            payload: Bytes::from_static(payload.as_bytes()),
            response: None,
            ack: None,
            received: Instant::now(),
            is_redelivery: false,
            reply_limit: None,
        }
    }

    #[test]
    fn window_forgets_the_oldest() {
        let mut window = DuplicateWindow::new(2);
        assert!(!window.observe(&input("a")));
        assert!(window.observe(&input("a")));
        assert!(!window.observe(&input("b")));
        assert!(!window.observe(&input("c")));
        assert!(!window.observe(&input("a")), "a fell out of the window");
    }

    #[test]
    fn snapshot_counts_and_percentiles() {
        let stats = Stats::new(&["neg".into(), "pos".into()]);
        for ms in 1..=100 {
            stats.received(&input("x"));
            stats.result("pos", Duration::from_millis(ms));
        }
        stats.received(&input("x"));
        stats.error(ErrorCode::Empty);
        stats.received(&input("x"));
        let s = stats.snapshot(3);
        assert_eq!((s.processed, s.errors, s.queue_depth), (100, 1, 1));
        assert_eq!((s.labels["neg"], s.labels["pos"]), (0, 100));
        assert_eq!(s.errors_by_code["empty"], 1);
        assert_eq!((s.latency_ms.p50, s.latency_ms.p95), (51.0, 95.0));
    }
}
