//! The pure domain: phone numbers, managers, sites, the lookup decision, calls and their
//! types, the CRM vocabulary the planner speaks, the action planner and routing rules.
//! Nothing here knows HTTP, Redis, redb or reqwest, and nothing here imports an adapter
//! module (`crm`, `store`, `http`, `worker`, `config`): they import the domain.

pub mod call;
pub mod call_log;
pub mod call_type;
pub mod crm_model;
pub mod lookup;
pub mod manager;
pub mod mirror;
pub mod orders_mirror;
pub mod phone_number;
pub mod plan;
pub mod reconcile;
pub mod rules;
pub mod site;
