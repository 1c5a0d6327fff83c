//! The daemon in front of one scripted SIPp backend (a scenario of `tests/scenarios`) at
//! 198.18.2.2:5060, as the dialog, admission, continuity and no-audio tests use it.
use std::net::SocketAddr;

use crate::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, Lab},
    sipp::{self, Backend},
};

pub const BACKEND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(CALLEE), 5060);

/// Starts the backend playing `scenario` for `calls` calls, then the daemon with it as its
/// only backend. OPTIONS probes are off: a scripted backend would take one for a call.
pub fn start(lab: &Lab, scenario: &str, calls: u32, options: DaemonOptions) -> (Backend, Daemon) {
    let backend =
        Backend::start_scenario(&lab.callee, BACKEND, &sipp::scenario(scenario), Some(calls))
            .expect("backend");
    let daemon = Daemon::start(
        lab,
        &DaemonOptions {
            sip_backends: vec![BACKEND],
            health_probes: false,
            ..options
        },
    )
    .expect("daemon");
    (backend, daemon)
}
