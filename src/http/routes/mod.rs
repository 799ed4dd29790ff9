//! One module per endpoint group.

pub mod admin;
pub mod health;
pub mod make_call;
pub mod route;
pub mod user_status;
pub mod webhook;
