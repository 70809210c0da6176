//! The learning-rate schedule: linear warm-up, then linear decay.
//!
//! The shape of `transformers.get_linear_schedule_with_warmup`, shifted by one so that no update
//! is wasted at rate zero: update `k` (1-based) of `total` uses
//! `peak · k/warmup` while `k ≤ warmup`, then `peak · (total − k + 1)/(total − warmup)`.

/// A warm-up + linear-decay schedule over a known number of updates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearSchedule {
    /// The rate reached at the end of warm-up.
    pub peak: f64,
    /// Updates spent warming up.
    pub warmup: usize,
    /// All updates of the run.
    pub total: usize,
}

impl LinearSchedule {
    /// A schedule of `total` updates warming up over `ceil(warmup_ratio · total)` of them.
    pub fn new(peak: f64, warmup_ratio: f64, total: usize) -> Self {
        let warmup = ((warmup_ratio * total as f64).ceil() as usize).min(total);
        LinearSchedule {
            peak,
            warmup,
            total,
        }
    }

    /// The rate of update `k` (1-based).
    pub fn rate(&self, k: usize) -> f64 {
        if k <= self.warmup {
            self.peak * k as f64 / self.warmup as f64
        } else {
            let remaining = self.total.saturating_sub(k) + 1;
            self.peak * remaining as f64 / (self.total - self.warmup).max(1) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_a_last_positive_rate() {
        let s = LinearSchedule::new(1.0, 0.1, 20);
        assert_eq!(s.warmup, 2);
        let rates: Vec<f64> = (1..=20).map(|k| s.rate(k)).collect();
        assert_eq!(rates[0], 0.5);
        assert_eq!(rates[1], 1.0);
        assert_eq!(rates[2], 1.0);
        assert!(rates[3..].windows(2).all(|w| w[1] < w[0]));
        assert!((rates[19] - 1.0 / 18.0).abs() < 1e-12);
        let flat = LinearSchedule::new(2.0, 0.0, 4);
        assert_eq!(flat.rate(1), 2.0);
        assert_eq!(flat.rate(4), 0.5);
    }
}
