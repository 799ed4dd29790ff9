//! Failed sign-ins per source (SPEC §9): after [`MAX_FAILURES`] wrong tokens from one client
//! address within [`WINDOW`], that address's sign-ins answer 429 until the window ends,
//! without the token being checked (so guessing on stops telling right from wrong).
//!
//! The client address is the one the public guard uses ([`crate::http::guard::client_ip`]:
//! forwarding headers only from `server.trusted_proxies`). Counts live in this instance's
//! memory, bounded by [`MAX_SOURCES`]: with the table full of live windows, an address not in
//! it is refused as if over its limit (fail closed), until windows end.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Wrong tokens allowed per source within [`WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window failures are counted in, from a source's first failure.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most sources tracked at once.
pub const MAX_SOURCES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// Failed sign-ins by source.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl SignInLimiter {
    /// How long `source` must wait before its next sign-in is checked; `None` when it may
    /// sign in now.
    pub fn blocked(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().expect("sign-in limiter poisoned");
        match failures.get(&source) {
            Some(f) if f.count >= MAX_FAILURES => {
                let ends = f.since + WINDOW;
                (ends > now).then(|| ends - now)
            }
            Some(_) => None,
            None if failures.len() >= MAX_SOURCES => {
                // Full: the earliest window's end is when a place frees up at the latest.
                let ends = failures.values().map(|f| f.since + WINDOW).min()?;
                (ends > now).then(|| ends - now)
            }
            None => None,
        }
    }

    /// Counts a wrong token from `source`.
    pub fn failed(&self, source: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().expect("sign-in limiter poisoned");
        if failures.len() >= MAX_SOURCES && !failures.contains_key(&source) {
            failures.retain(|_, f| f.since + WINDOW > now);
            if failures.len() >= MAX_SOURCES {
                return;
            }
        }
        let f = failures.entry(source).or_insert(Failures {
            since: now,
            count: 0,
        });
        if f.since + WINDOW <= now {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
    }

    /// A right token: `source`'s failures are forgotten.
    pub fn succeeded(&self, source: IpAddr) {
        self.failures
            .lock()
            .expect("sign-in limiter poisoned")
            .remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_source_is_blocked_after_its_failures_until_the_window_ends() {
        let limiter = SignInLimiter::default();
        let start = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(limiter.blocked(ip(1), start), None, "failure {i}");
            limiter.failed(ip(1), start);
        }
        assert_eq!(limiter.blocked(ip(1), start), Some(WINDOW));
        assert_eq!(limiter.blocked(ip(2), start), None, "per source");
        let later = start + WINDOW - Duration::from_secs(1);
        assert_eq!(limiter.blocked(ip(1), later), Some(Duration::from_secs(1)));
        let after = start + WINDOW;
        assert_eq!(limiter.blocked(ip(1), after), None);
        limiter.failed(ip(1), after);
        assert_eq!(
            limiter.blocked(ip(1), after),
            None,
            "a new window counts anew"
        );
    }

    #[test]
    fn success_forgets_the_failures() {
        let limiter = SignInLimiter::default();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            limiter.failed(ip(1), now);
        }
        limiter.succeeded(ip(1));
        limiter.failed(ip(1), now);
        assert_eq!(limiter.blocked(ip(1), now), None);
    }

    #[test]
    fn a_full_table_refuses_new_sources_until_windows_end() {
        let limiter = SignInLimiter::default();
        let now = Instant::now();
        for n in 0..MAX_SOURCES as u32 {
            limiter.failed(ip(n), now);
        }
        let newcomer = ip(MAX_SOURCES as u32 + 1);
        assert_eq!(limiter.blocked(newcomer, now), Some(WINDOW));
        assert_eq!(limiter.blocked(ip(0), now), None, "known sources go on");
        let after = now + WINDOW;
        assert_eq!(limiter.blocked(newcomer, after), None);
        limiter.failed(newcomer, after);
        assert_eq!(
            limiter.failures.lock().expect("lock").len(),
            1,
            "ended windows were dropped to make room"
        );
    }
}
