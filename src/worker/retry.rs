//! Retry delays (SPEC §6): exponential from `base`, capped at `max`, ±20% jitter; a
//! rate-limited failure waits at least what the CRM asked for (clamped to `[base, max]`).

use std::time::Duration;

use rand::Rng;

/// Jitter applied to every delay: ±20%.
pub const JITTER: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    pub base: Duration,
    pub max: Duration,
}

impl RetrySchedule {
    /// The delay before attempt `attempt + 1` (attempt counts failures so far, from 0),
    /// before jitter.
    pub fn nominal(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
        let mut delay = exp.min(self.max);
        if let Some(asked) = retry_after {
            delay = delay.max(asked.clamp(self.base, self.max));
        }
        delay
    }

    /// The delay with ±20% jitter, never above `max`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let nominal = self.nominal(attempt, retry_after).as_secs_f64();
        let factor = rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER));
        Duration::from_secs_f64(nominal * factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: RetrySchedule = RetrySchedule {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn doubles_per_attempt_and_caps() {
        let secs: Vec<u64> = (0..8).map(|a| S.nominal(a, None).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(S.nominal(500, None), Duration::from_secs(60));
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        assert_eq!(
            S.nominal(0, Some(Duration::from_secs(10))),
            Duration::from_secs(10)
        );
        assert_eq!(
            S.nominal(0, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        assert_eq!(
            S.nominal(3, Some(Duration::from_millis(1))),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_the_cap() {
        for attempt in 0..10 {
            let nominal = S.nominal(attempt, None).as_secs_f64();
            for _ in 0..50 {
                let d = S.delay(attempt, None).as_secs_f64();
                assert!(d >= nominal * 0.8 - 1e-9 && d <= (nominal * 1.2).min(60.0) + 1e-9);
            }
        }
    }
}
