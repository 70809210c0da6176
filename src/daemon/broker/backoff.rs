//! Reconnect delays: capped exponential backoff with jitter.

use std::time::Duration;

use crate::rng::SplitMix64;

/// Delays of successive reconnect attempts: `initial · 2ⁿ`, capped at `max`, each drawn
/// uniformly from its upper half so that many daemons restarted together spread out.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff between `initial` and `max`, seeded from the clock and process id.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(0.5 + 0.5 * self.rng.uniform())
    }

    /// A connection succeeded: start from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_caps_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let ceiling = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(1));
            assert!(*d >= ceiling / 2 && *d <= ceiling, "attempt {i}: {d:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
