//! callgate: a low-latency gateway between Ringostat (call tracking / virtual PBX) and
//! retailCRM (API v5).
//!
//! Module tour:
//! - [`domain`]: pure types and decisions, no I/O — phone numbers, managers, sites
//!   ([`domain::site`]), the lookup decision, call events and the one call-type vocabulary
//!   ([`domain::call_type`]), the CRM vocabulary the planner speaks ([`domain::crm_model`]:
//!   ids, UTM, call records, create/update commands), routing rules, and the planning
//!   pipeline [`domain::plan::decide`] (site → first matching rule → plan) shared by the
//!   worker and `rules explain`. It imports no adapter module.
//! - [`crm`]: the `Crm` port and its adapters (retailCRM over HTTP, the embedded sandbox);
//!   it re-exports the domain's CRM vocabulary.
//! - [`store`]: the `Store` port and its backends (embedded redb file; Redis).
//! - [`lookup`]: the pre-call lookup service (owner index, single flight, deadline).
//! - [`http`]: the axum router and handlers.
//! - [`worker`]: the queue's task format ([`worker::task`]: the stored webhook and its
//!   dedupe key), gathering CRM facts, [`domain::plan::decide`], idempotent execution,
//!   retries.
//! - [`rules`]: loading and reloading `routing-rules/` (the live rule set).
//! - [`config`], [`telemetry`], [`metrics`]: operations.
//! - [`startup`]: the one place that wires adapters together (`Application`).
#![forbid(unsafe_code)]

pub mod admin_client;
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
