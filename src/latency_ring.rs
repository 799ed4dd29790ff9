//! The lookup's latency over the last hour, minute by minute, for the operator page's
//! p50/p99 chart: a ring of [`MINUTES`] histograms in memory, fed by the lookup's latency
//! observation ([`crate::metrics::Metrics::observe_lookup`]).
//!
//! The hot path pays one clock read and one atomic add (plus, once a minute per slot, the
//! reset of that slot): no lock, no allocation. The reset is not atomic with the adds, so a
//! lookup observed exactly while its minute's slot is being reused may be lost or counted in
//! the new minute: a chart can afford that, a counter could not (Prometheus has the exact
//! histogram, `callgate_lookup_latency_seconds`).
//!
//! Buckets grow by √2 from [`FIRST_BOUND`] (25 µs … ~37 s); a quantile is reported as the
//! upper bound of the bucket it falls in, so it is at most √2 above the true value.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Minutes kept (the chart's hour).
pub const MINUTES: usize = 60;
/// Buckets per minute; the last one also takes everything slower.
const BUCKETS: usize = 42;
/// Upper bound of the first bucket.
const FIRST_BOUND: Duration = Duration::from_micros(25);

/// One minute's histogram; `minute` says which minute (since the epoch) it holds.
struct Slot {
    minute: AtomicU64,
    counts: [AtomicU64; BUCKETS],
}

/// The last hour's lookup latencies, per minute.
pub struct LatencyRing {
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for LatencyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyRing").finish_non_exhaustive()
    }
}

impl Default for LatencyRing {
    fn default() -> Self {
        LatencyRing {
            slots: (0..MINUTES)
                .map(|_| Slot {
                    minute: AtomicU64::new(u64::MAX),
                    counts: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
        }
    }
}

/// One minute of the ring, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteLatency {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    /// Lookups observed in that minute.
    pub count: u64,
    /// Median and 99th percentile (bucket upper bounds); `None` without lookups.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

/// The minute (since the Unix epoch) of the wall clock now.
pub fn minute_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// The bucket of a latency: the first whose upper bound is at least `elapsed`.
fn bucket(elapsed: Duration) -> usize {
    let ratio = elapsed.as_secs_f64() / FIRST_BOUND.as_secs_f64();
    if ratio <= 1.0 {
        return 0;
    }
    // √2 steps: bound(i) = FIRST_BOUND × 2^(i/2).
    let i = (2.0 * ratio.log2()).ceil();
    if i >= (BUCKETS - 1) as f64 {
        BUCKETS - 1
    } else {
        i as usize
    }
}

/// The upper bound of bucket `i`.
fn bound(i: usize) -> Duration {
    FIRST_BOUND.mul_f64(2f64.powf(i as f64 / 2.0))
}

/// The upper bound of the bucket holding the `q` quantile of `counts` (`total` > 0).
fn quantile(counts: &[u64; BUCKETS], total: u64, q: f64) -> Duration {
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return bound(i);
        }
    }
    bound(BUCKETS - 1)
}

impl LatencyRing {
    /// Counts one lookup that took `elapsed`, in minute `minute` (see [`minute_now`]).
    pub fn observe(&self, elapsed: Duration, minute: u64) {
        let Some(slot) = self.slots.get((minute % MINUTES as u64) as usize) else {
            return;
        };
        let held = slot.minute.load(Relaxed);
        if held != minute
            && slot
                .minute
                .compare_exchange(held, minute, Relaxed, Relaxed)
                .is_ok()
        {
            for c in &slot.counts {
                c.store(0, Relaxed);
            }
        }
        if let Some(c) = slot.counts.get(bucket(elapsed)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The [`MINUTES`] minutes ending with `now` (a minute since the epoch), oldest first.
    pub fn last_hour(&self, now: u64) -> Vec<MinuteLatency> {
        (0..MINUTES as u64)
            .rev()
            .filter_map(|ago| now.checked_sub(ago))
            .map(|minute| {
                let mut counts = [0u64; BUCKETS];
                let slot = self.slots.get((minute % MINUTES as u64) as usize);
                if let Some(slot) = slot.filter(|s| s.minute.load(Relaxed) == minute) {
                    for (n, c) in counts.iter_mut().zip(&slot.counts) {
                        *n = c.load(Relaxed);
                    }
                }
                let count: u64 = counts.iter().sum();
                let (p50, p99) = if count == 0 {
                    (None, None)
                } else {
                    (
                        Some(quantile(&counts, count, 0.50)),
                        Some(quantile(&counts, count, 0.99)),
                    )
                };
                MinuteLatency {
                    minute,
                    count,
                    p50,
                    p99,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_latency_falls_in_the_first_bucket_whose_bound_holds_it() {
        for elapsed in [
            Duration::ZERO,
            Duration::from_micros(25),
            Duration::from_micros(26),
            MS,
            Duration::from_millis(7),
            Duration::from_secs(3),
        ] {
            let i = bucket(elapsed);
            assert!(bound(i) >= elapsed, "{elapsed:?} ≤ {:?}", bound(i));
            if i > 0 {
                assert!(bound(i - 1) < elapsed, "{elapsed:?} > {:?}", bound(i - 1));
            }
        }
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
    }

    #[test]
    fn each_minute_reports_its_own_p50_and_p99() {
        let ring = LatencyRing::default();
        let now = 29_000_000;
        // Minute now: 98 lookups of 1 ms, 2 of 50 ms → p50 ≈ 1 ms, p99 ≈ 50 ms.
        for _ in 0..98 {
            ring.observe(MS, now);
        }
        ring.observe(50 * MS, now);
        ring.observe(50 * MS, now);
        // Ten minutes ago: one lookup of 4 ms.
        ring.observe(4 * MS, now - 10);
        let hour = ring.last_hour(now);
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(hour[0].minute, now - 59);
        let last = hour[MINUTES - 1];
        assert_eq!(last.count, 100);
        let (p50, p99) = (last.p50.expect("p50"), last.p99.expect("p99"));
        assert!(p50 >= MS && p50 < MS.mul_f64(1.5), "{p50:?}");
        assert!(p99 >= 50 * MS && p99 < (50 * MS).mul_f64(1.5), "{p99:?}");
        let ten_ago = hour[MINUTES - 11];
        assert_eq!(ten_ago.count, 1);
        assert_eq!(ten_ago.p50, ten_ago.p99);
        assert!(hour[MINUTES - 2].p50.is_none(), "a minute without lookups");
    }

    #[test]
    fn a_slot_reused_an_hour_later_starts_empty() {
        let ring = LatencyRing::default();
        ring.observe(MS, 1000);
        ring.observe(MS, 1000 + MINUTES as u64);
        let hour = ring.last_hour(1000 + MINUTES as u64);
        assert_eq!(hour[MINUTES - 1].count, 1, "the old minute's count is gone");
        assert!(
            hour.iter().all(|m| m.minute > 1000),
            "the old minute is out of the hour"
        );
    }
}
