//! Dialogs through the proxy with scripted SIPp peers (`tests/scenarios`): CANCEL while
//! ringing, re-INVITE to hold and back, and a silent call ended with BYE to both sides.
use std::time::Duration;

use sbc::events::{CallEnd, MediaSessionCreated};
use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::Lab,
    privileges::require_lab_privileges,
    scripted,
    sipp::Backend,
};

/// The lab, a scripted backend and the daemon routing to it.
fn setup(
    tag: &str,
    backend_scenario: &str,
    calls: u32,
    options: DaemonOptions,
) -> (Lab, Backend, Daemon) {
    require_lab_privileges();
    let lab = Lab::up(tag).expect("lab");
    let (backend, daemon) = scripted::start(&lab, backend_scenario, calls, options);
    (lab, backend, daemon)
}

/// Nothing left behind: no media session, no port.
fn assert_no_leaks(daemon: &Daemon) {
    let stats = daemon.stats().unwrap();
    assert_eq!(stats.sessions, 0, "media sessions leaked: {stats:?}");
    assert!(
        stats.ports.iter().all(|pool| pool.in_use == 0),
        "ports leaked: {stats:?}"
    );
}

#[test]
fn cancel_while_ringing_reaches_the_backend_and_leaks_nothing() {
    let (lab, mut backend, daemon) = setup("cancel", "cancel_uas", 5, DaemonOptions::default());
    // The caller gets 200 for CANCEL and 487; the backend sees CANCEL and the ACK of its 487.
    let ended = scripted::play(&lab, &mut backend, &daemon, "cancel_uac", 5);
    for event in &ended {
        assert_eq!(
            (event.reason, event.final_code),
            (CallEnd::Cancelled, Some(487)),
            "{event:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_no_leaks(&daemon);
}

#[test]
fn reinvite_to_hold_and_back_keeps_media_flowing() {
    let (lab, mut backend, daemon) = setup("reinvite", "reinvite_uas", 3, DaemonOptions::default());
    let ended = scripted::play(&lab, &mut backend, &daemon, "reinvite_uac", 3);
    for event in &ended {
        assert_eq!(event.reason, CallEnd::Bye, "{event:?}");
        // 236 packets of G.711 go out through hold and back; the backend echoes them.
        let packets = event.rtp_packets.expect("RTP counted");
        assert!(
            packets.caller_to_callee >= 230 && packets.callee_to_caller >= 230,
            "{packets:?} packets in {event:?}"
        );
    }
    // Each call kept its one media session through both re-INVITEs.
    let sessions = daemon.events_of::<MediaSessionCreated>().len();
    assert_eq!(
        sessions, 3,
        "re-INVITEs must reuse the call's media session"
    );
    assert_no_leaks(&daemon);
}

#[test]
fn a_call_without_media_is_ended_with_bye_to_both_sides() {
    let options = DaemonOptions {
        media_timeout_secs: 2,
        ..Default::default()
    };
    let (lab, mut backend, daemon) = setup("silent", "silent_uas", 2, options);
    // Both scripts wait for a BYE with the Reason header.
    let ended = scripted::play(&lab, &mut backend, &daemon, "silent_uac", 2);
    for event in &ended {
        assert_eq!(event.reason, CallEnd::MediaTimeout, "{event:?}");
    }
    assert_no_leaks(&daemon);
}
