//! callgate: a low-latency gateway between Ringostat (call tracking / virtual PBX) and
//! retailCRM (API v5).
//!
//! Module tour:
//! - [`domain`]: pure types and decisions — phone numbers, managers, the lookup decision,
//!   call events, the action planner, routing rules. No I/O.
//! - [`crm`]: the `Crm` port and its adapters (retailCRM over HTTP, the embedded sandbox).
//! - [`store`]: the `Store` port and its backends (embedded redb file; Redis).
//! - [`call_trail`]: each call's decision trail (plans, CRM actions, retries, dead letters).
//! - [`lookup`]: the pre-call lookup service (owner index, single flight, deadline).
//! - [`http`]: the axum router and handlers.
//! - [`rules`]: loading and reloading `routing-rules/` (the live rule set).
//! - [`config`], [`telemetry`], [`metrics`]: operations.
//! - [`startup`]: the one place that wires adapters together (`Application`).
#![forbid(unsafe_code)]

pub mod admin_client;
pub mod call_trail;
pub mod config;
pub mod crm;
pub mod domain;
pub mod http;
pub mod lookup;
pub mod metrics;
pub mod rules;
pub mod startup;
pub mod store;
pub mod telemetry;
/// Test doubles used by the test suite and the load tests (only with the `testing` feature,
/// which `cargo test` and the load generator turn on; never in the product).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod worker;
