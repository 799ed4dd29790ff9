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

/// Milliseconds since the first use, the clock of every deadline.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = EPOCH.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(NONE - 1)
}

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

    fn expired(&self) -> Result<(), Duration> {
        let deadline = self.deadline_ms.load(Ordering::Relaxed);
        let now = now_ms();
        if deadline == NONE {
            Err(self.deadlines.recheck())
        } else if deadline <= now {
            Ok(())
        } else {
            // Never past the shortest deadline: one set while the watchdog sleeps is at
            // least that far away, so the watchdog is never late for it.
            Err(Duration::from_millis(deadline - now).min(self.deadlines.recheck()))
        }
    }
}

/// Ends (returns) once `clock`'s deadline has passed; never, when no deadline is configured.
pub async fn watchdog(clock: Arc<ConnectionClock>) {
    if !clock.deadlines.any() {
        return std::future::pending().await;
    }
    while let Err(wait) = clock.expired() {
        tokio::time::sleep(wait).await;
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

    #[test]
    fn each_phase_sets_its_own_deadline() {
        let clock = ConnectionClock::new(BOTH);
        // The header deadline is 10 s away, but the watchdog looks again after 5 s, the
        // shortest deadline: a body deadline armed meanwhile is at least that far.
        assert_eq!(clock.expired(), Err(Duration::from_millis(5_000)));
        clock.expect_body(false);
        let wait = clock.expired().unwrap_err();
        assert!(
            wait <= Duration::from_millis(5_000) && wait > Duration::from_millis(4_000),
            "{wait:?}"
        );
        clock.handling();
        // Nothing to watch: look again after the shorter deadline.
        assert_eq!(clock.expired(), Err(Duration::from_millis(5_000)));
        clock.expect_body(true);
        assert_eq!(clock.expired(), Err(Duration::from_millis(5_000)));
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
