//! Test support shared by callgate's own tests and by the load-test binary.
//!
//! Compiled only with the `testing` cargo feature: `cargo test` turns it on (callgate is its
//! own dev-dependency with the feature) and so does the load generator (`load-tests/`).
//! The product (`cargo build --release`) contains none of it.
//!
//! - [`fake_retailcrm`]: a strict, stateful fake of retailCRM API v5 served over real HTTP
//!   on `127.0.0.1:0`, with fault injection and rate limiting.
//! - [`fake_ringostat`]: a strict fake of the Ringostat REST API (`calls/list`,
//!   `callback/outward_call`) on `127.0.0.1:0`, recording every request.
//! - [`eventually`]: the bounded poll every test uses instead of sleeping.

pub mod fake_retailcrm;
pub mod fake_ringostat;

use std::{future::Future, time::Duration};

/// Pause between two polls of [`eventually`].
const POLL_EVERY: Duration = Duration::from_millis(5);

/// Polls `check` until it yields `Some`, for at most `within`; panics naming `what` when the
/// time runs out. The one way tests wait for something asynchronous: no sleeps as
/// synchronization.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}
