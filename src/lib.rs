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
//! - [`call_trail`]: each call's decision trail (the lookup's decision, plans, CRM actions,
//!   retries, dead letters).
//! - [`lookup`]: the pre-call lookup service (owner mirror, owner index, single flight,
//!   deadline).
//! - [`sync`]: flow F — the owner mirror's first import, `customers/history` and `users`
//!   followed, the Redis poll lease and change stream.
//! - [`reconcile`]: flow E, Ringostat's call log → calls that never arrived into the queue.
//! - [`register`]: `callgate register`, the telephony integration module in retailCRM.
//! - [`ringostat`]: the Ringostat REST client (`calls/list`, `callback/outward_call`).
//! - [`http`]: the axum router and handlers.
//! - [`worker`]: the queue's task format ([`worker::task`]: the stored webhook and its
//!   dedupe key), gathering CRM facts, [`domain::plan::decide`], idempotent execution,
//!   retries.
//! - [`rules`]: loading and reloading `routing-rules/` (the live rule set).
//! - [`config`], [`telemetry`], [`metrics`]: operations; [`latency_ring`]: the lookup's
//!   per-minute latency over the last hour, for the operator page's chart.
//! - [`startup`]: the one place that wires adapters together (`Application`).
#![forbid(unsafe_code)]

pub mod admin_client;
pub mod call_trail;
pub mod config;
pub mod credential;
pub mod crm;
pub mod domain;
pub mod http;
pub mod latency_ring;
pub mod lookup;
pub mod metrics;
pub mod reconcile;
pub mod register;
pub mod ringostat;
pub mod rules;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
/// Test doubles used by the test suite and the load tests (only with the `testing` feature,
/// which `cargo test` and the load generator turn on; never in the product).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod worker;
