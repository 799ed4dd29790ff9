//! Test support shared by callgate's own tests and by the load-test binary.
//!
//! Compiled always (not only under `cfg(test)`), because `load-tests/` links against it.
//! Nothing here is used by the production gateway.
//!
//! - [`fake_retailcrm`]: a strict, stateful fake of retailCRM API v5 served over real HTTP
//!   on `127.0.0.1:0`, with fault injection and rate limiting.

pub mod fake_retailcrm;
