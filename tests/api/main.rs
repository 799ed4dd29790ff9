//! Black-box tests: callgate spawned on 127.0.0.1:0, talking real HTTP to a strict fake
//! retailCRM (or running on its sandbox CRM).

mod calls;
mod crm_callbacks;
mod dashboard;
mod facts;
mod guarantees;
mod hardening;
mod helpers;
mod lookup;
mod make_call;
mod mirror;
mod operator;
mod proxies;
mod reconcile;
mod rules;
mod server;
mod shared_redis;
mod worker_leases;

#[path = "../support/redis.rs"]
mod redis_support;

#[path = "../support/operator_seed.rs"]
mod operator_seed;
