//! One module per endpoint group.

pub mod health;
pub mod route;
pub mod user_status;
