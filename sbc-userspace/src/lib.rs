//! sbc: the daemon (`sbc run`) and its operator commands, as a library so that integration
//! tests and the lab drive the same code.
pub mod admission;
pub mod advertise;
pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod config_error;
pub mod daemon;
pub mod dataplane;
pub mod drain;
pub mod events;
pub mod fleet;
pub mod logging;
pub mod maps_report;
pub mod media;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod sdp;
pub mod side;
pub mod sip;
