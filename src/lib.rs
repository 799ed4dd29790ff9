//! callgate: a low-latency gateway between Ringostat and retailCRM.
#![forbid(unsafe_code)]

pub mod crm;
pub mod domain;
pub mod store;
pub mod testing;
