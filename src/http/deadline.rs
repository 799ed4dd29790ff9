//! Slow and idle clients (SPEC §9): one coarse deadline per connection instead of a timer per
//! request.
//!
//! hyper's own `header_read_timeout` arms a timer for every request, which cost about 10% of
//! the lookup's throughput (load-tests/RESULTS.md). Here each connection has a
//! [`ConnectionClock`]: one atomic deadline that the request path moves with a clock read and
//! a store at its phase changes —
//! - waiting for a request's headers (a new connection, or a keep-alive one after an answer):
//!   `server.header_read_timeout_ms` from then, so it bounds idle connections too;
//! - reading a request's body (from the parsed headers to the body's end):
//!   `server.body_read_timeout_ms` from the headers, however the body trickles in;
//! - handling (body read, answer not yet given): no deadline here (the request timeout and
//!   the lookup deadline bound handlers).
//!
//! and one [`watchdog`] per connection that sleeps until the deadline, looks again (the
//! deadline has usually moved on), and ends the connection once it has passed. A busy
//! keep-alive connection re-arms its watchdog's timer about once per deadline period, not
//! once per request. A connection cut off this way is closed without an answer: hyper owns
//! the response side of a request still being read, so there is no 408 to send.
//!
//! The watchdogs wake on a coarse grid ([`ReadDeadlines::grain_ms`]: 1/40 of the shortest
//! deadline, at most 250 ms), not at each connection's own millisecond: every watchdog due
//! in the same slot wakes in the same timer tick, so the runtime wakes a few times a second
//! to cut off however many slow clients are due, rather than once per client (2,000 slow
//! clients against the 10 s default are 200 cut-offs a second; waking for each one cost
//! callgate more than serving their trickled headers: load-tests/RESULTS.md). A client is
//! therefore cut off between its deadline and one slot (2.5%) later, never earlier.

use std::{
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::body::{Body, Frame, SizeHint};

/// No deadline (handling a request).
const NONE: u64 = u64::MAX;

/// The clock of every deadline starts at its first use.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`].
fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(NONE - 1)
}

/// The watchdogs' grid: this fraction of the shortest deadline ...
const GRAIN_DIVISOR: u64 = 40;
/// ... but never coarser than this, in milliseconds.
const MAX_GRAIN_MS: u64 = 250;

/// The two read deadlines; a zero duration is no bound.
#[derive(Debug, Clone, Copy)]
pub struct ReadDeadlines {
    pub header: Duration,
    pub body: Duration,
}

impl ReadDeadlines {
    fn any(&self) -> bool {
        !self.header.is_zero() || !self.body.is_zero()
    }

    /// How often a watchdog with nothing to watch looks again.
    fn recheck(&self) -> Duration {
        match (self.header.is_zero(), self.body.is_zero()) {
            (false, false) => self.header.min(self.body),
            (false, true) => self.header,
            _ => self.body,
        }
    }

    /// The watchdogs' grid in milliseconds (module docs): 1/40 of the shortest deadline,
    /// between 1 and 250 ms.
    fn grain_ms(&self) -> u64 {
        let shortest = u64::try_from(self.recheck().as_millis()).unwrap_or(u64::MAX);
        (shortest / GRAIN_DIVISOR).clamp(1, MAX_GRAIN_MS)
    }

    /// `ms` rounded up to the grid.
    fn on_grid(&self, ms: u64) -> u64 {
        ms.div_ceil(self.grain_ms()).saturating_mul(self.grain_ms())
    }
}

/// One connection's deadline (see the module docs).
#[derive(Debug)]
pub struct ConnectionClock {
    deadlines: ReadDeadlines,
    deadline_ms: AtomicU64,
}

impl ConnectionClock {
    /// A new connection, waiting for its first request's headers.
    pub fn new(deadlines: ReadDeadlines) -> Arc<Self> {
        let clock = Arc::new(ConnectionClock {
            deadlines,
            deadline_ms: AtomicU64::new(NONE),
        });
        clock.expect_headers();
        clock
    }

    fn arm(&self, within: Duration) {
        let deadline = if within.is_zero() {
            NONE
        } else {
            now_ms().saturating_add(u64::try_from(within.as_millis()).unwrap_or(NONE))
        };
        self.deadline_ms.store(deadline, Ordering::Relaxed);
    }

    /// Waiting for the next request's headers (after an answer, or on a new connection).
    pub fn expect_headers(&self) {
        self.arm(self.deadlines.header);
    }

    /// Headers read: the body must arrive within the body deadline (an empty body is done).
    pub fn expect_body(&self, body_done: bool) {
        if body_done {
            self.handling();
        } else {
            self.arm(self.deadlines.body);
        }
    }

    /// The request is read; its handler bounds itself.
    pub fn handling(&self) {
        self.deadline_ms.store(NONE, Ordering::Relaxed);
    }

    /// `Ok` once the deadline has passed, else when to look again (ms since [`epoch`], on
    /// the grid).
    fn expired(&self) -> Result<(), u64> {
        let deadline = self.deadline_ms.load(Ordering::Relaxed);
        let now = now_ms();
        if deadline != NONE && deadline <= now {
            return Ok(());
        }
        // Never past the shortest deadline (to the grid): one set while the watchdog sleeps
        // is at least that far away, so the watchdog is never more than a slot late for it.
        let recheck = u64::try_from(self.deadlines.recheck().as_millis()).unwrap_or(NONE);
        Err(self
            .deadlines
            .on_grid(deadline.min(now.saturating_add(recheck))))
    }
}

/// Ends (returns) once `clock`'s deadline has passed; never, when no deadline is configured.
pub async fn watchdog(clock: Arc<ConnectionClock>) {
    if !clock.deadlines.any() {
        return std::future::pending().await;
    }
    while let Err(wake_ms) = clock.expired() {
        // The same instant for every watchdog due in a slot: one timer tick wakes them all.
        let wake = epoch() + Duration::from_millis(wake_ms);
        tokio::time::sleep_until(wake.into()).await;
    }
}

/// A request body that tells its connection's clock when it has been read to the end.
pub struct ClockedBody<B> {
    inner: B,
    clock: Arc<ConnectionClock>,
}

impl<B> ClockedBody<B> {
    pub fn new(inner: B, clock: Arc<ConnectionClock>) -> Self {
        ClockedBody { inner, clock }
    }
}

impl<B: Body + Unpin> Body for ClockedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.clock.handling();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: ReadDeadlines = ReadDeadlines {
        header: Duration::from_millis(10_000),
        body: Duration::from_millis(5_000),
    };

    /// How far `clock`'s watchdog would sleep from now, in ms; checks it wakes on the grid.
    fn wait_ms(clock: &ConnectionClock) -> u64 {
        let wake = clock.expired().unwrap_err();
        assert_eq!(
            wake % clock.deadlines.grain_ms(),
            0,
            "{wake} is off the grid"
        );
        wake - now_ms()
    }

    #[test]
    fn each_phase_sets_its_own_deadline() {
        // 5 s is the shortest deadline: a 125 ms grid.
        assert_eq!(BOTH.grain_ms(), 125);
        let clock = ConnectionClock::new(BOTH);
        // The header deadline is 10 s away, but the watchdog looks again after 5 s (to the
        // grid), the shortest deadline: a body deadline armed meanwhile is at least that far.
        let wait = wait_ms(&clock);
        assert!((5_000..5_000 + 125).contains(&wait), "{wait}");
        clock.expect_body(false);
        let wait = wait_ms(&clock);
        assert!((4_000..5_000 + 125).contains(&wait), "{wait}");
        clock.handling();
        // Nothing to watch: look again after the shorter deadline.
        let wait = wait_ms(&clock);
        assert!((5_000..5_000 + 125).contains(&wait), "{wait}");
        clock.expect_body(true);
        let wait = wait_ms(&clock);
        assert!((5_000..5_000 + 125).contains(&wait), "{wait}");
    }

    #[test]
    fn the_grid_is_a_fortieth_of_the_shortest_deadline_within_bounds() {
        let grain = |header, body| {
            ReadDeadlines {
                header: Duration::from_millis(header),
                body: Duration::from_millis(body),
            }
            .grain_ms()
        };
        assert_eq!(grain(10_000, 10_000), 250);
        assert_eq!(grain(600_000, 0), 250);
        assert_eq!(grain(200, 0), 5);
        assert_eq!(grain(0, 1_000), 25);
        assert_eq!(grain(10, 0), 1);
        assert_eq!(BOTH.on_grid(0), 0);
        assert_eq!(BOTH.on_grid(1), 125);
        assert_eq!(BOTH.on_grid(125), 125);
        assert_eq!(BOTH.on_grid(126), 250);
    }

    #[test]
    fn a_passed_deadline_has_expired_and_zero_means_none() {
        let clock = ConnectionClock::new(BOTH);
        clock.deadline_ms.store(0, Ordering::Relaxed);
        assert_eq!(clock.expired(), Ok(()));
        let off = ConnectionClock::new(ReadDeadlines {
            header: Duration::ZERO,
            body: Duration::from_millis(100),
        });
        assert_eq!(off.deadline_ms.load(Ordering::Relaxed), NONE);
    }
}
