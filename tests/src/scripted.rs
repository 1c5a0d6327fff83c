//! The daemon in front of one scripted SIPp backend (a scenario of `tests/scenarios`) at
//! 198.18.2.2:5060, as the dialog, admission, continuity and no-audio tests use it.
use std::{net::SocketAddr, time::Duration};

use sbc::events::CallEnded;

use crate::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    sipp::{self, Backend, CallKind},
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

/// Runs `calls` calls of the caller scenario against the scripted backend; both must play
/// their script through. Returns the call end events.
pub fn play(
    lab: &Lab,
    backend: &mut Backend,
    daemon: &Daemon,
    scenario: &'static str,
    calls: u32,
) -> Vec<CallEnded> {
    let result = sipp::place_calls(
        &lab.caller,
        SocketAddr::new(CALLER.into(), 5060),
        SocketAddr::new(SBC_PUBLIC.into(), 5060),
        CallKind::Scenario(scenario),
        (calls, 5),
        Duration::from_secs(60),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.exit_code, result.successful),
        (Some(0), u64::from(calls)),
        "the caller's script did not play through:\n{}\n{}",
        result.output,
        daemon.log()
    );
    assert_eq!(
        backend.wait(Duration::from_secs(10)),
        Some(0),
        "the backend's script did not play through:\n{}",
        backend.output()
    );
    let ended: Vec<CallEnded> = daemon.events_of();
    assert_eq!(ended.len(), calls as usize, "one end event per call");
    ended
}
