//! Dialogs through the proxy with scripted SIPp peers (`tests/scenarios`): CANCEL while
//! ringing, re-INVITE to hold and back, and a silent call ended with BYE to both sides.
use std::{net::SocketAddr, time::Duration};

use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    scripted,
    sipp::{self, Backend, CallKind},
};
use serde_json::Value;

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

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

/// Runs `calls` calls of the caller scenario against the scripted backend; both must play
/// their script through. Returns the call end events.
fn play(
    lab: &Lab,
    backend: &mut Backend,
    daemon: &Daemon,
    scenario: &'static str,
    calls: u32,
) -> Vec<Value> {
    let result = sipp::place_calls(
        &lab.caller,
        addr(CALLER, 5060),
        addr(SBC_PUBLIC, 5060),
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
    let ended: Vec<Value> = daemon
        .events()
        .into_iter()
        .filter(|e| e["event"] == "call_ended")
        .collect();
    assert_eq!(ended.len(), calls as usize, "one end event per call");
    ended
}

/// Nothing left behind: no media session, no port.
fn assert_no_leaks(daemon: &Daemon) {
    let stats = daemon.api.get("/v1/stats").unwrap().body;
    assert_eq!(stats["sessions"], 0, "media sessions leaked: {stats}");
    for pool in stats["ports"].as_array().unwrap() {
        assert_eq!(pool["in_use"], 0, "ports leaked: {stats}");
    }
}

#[test]
fn cancel_while_ringing_reaches_the_backend_and_leaks_nothing() {
    let (lab, mut backend, daemon) = setup("cancel", "cancel_uas", 5, DaemonOptions::default());
    // The caller gets 200 for CANCEL and 487; the backend sees CANCEL and the ACK of its 487.
    let ended = play(&lab, &mut backend, &daemon, "cancel_uac", 5);
    for event in &ended {
        assert_eq!(
            (&event["reason"], &event["final_code"]),
            (&Value::from("cancelled"), &Value::from(487)),
            "{event}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_no_leaks(&daemon);
}

#[test]
fn reinvite_to_hold_and_back_keeps_media_flowing() {
    let (lab, mut backend, daemon) = setup("reinvite", "reinvite_uas", 3, DaemonOptions::default());
    let ended = play(&lab, &mut backend, &daemon, "reinvite_uac", 3);
    for event in &ended {
        assert_eq!(event["reason"], "bye", "{event}");
        // 236 packets of G.711 go out through hold and back; the backend echoes them.
        for direction in ["caller_to_callee", "callee_to_caller"] {
            let packets = event["rtp_packets"][direction].as_u64().unwrap();
            assert!(packets >= 230, "{direction}: {packets} packets in {event}");
        }
    }
    // Each call kept its one media session through both re-INVITEs.
    let sessions = daemon
        .events()
        .into_iter()
        .filter(|e| e["event"] == "media_session_created")
        .count();
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
    let ended = play(&lab, &mut backend, &daemon, "silent_uac", 2);
    for event in &ended {
        assert_eq!(event["reason"], "media_timeout", "{event}");
    }
    assert_no_leaks(&daemon);
}
