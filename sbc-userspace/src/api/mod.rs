//! The control API: JSON over HTTP/1.1 on a Unix socket (and optionally on a TCP address).
//! Tests, the demo and the `sbc` commands use it; the admin API grows from it.
mod admission;
pub mod client;
pub mod contract;
mod metrics;
mod operations;
pub mod server;
pub mod standby;
mod state;

pub use client::ApiClient;
