//! The pure domain: phone numbers, managers, the lookup decision, calls, the action planner
//! and routing rules. Nothing here knows HTTP, Redis, redb or reqwest.

pub mod call;
pub mod call_log;
pub mod lookup;
pub mod manager;
pub mod phone_number;
pub mod plan;
pub mod reconcile;
pub mod rules;
