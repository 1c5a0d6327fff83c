//! No-audio detection: an answered call whose media is missing in a direction is reported
//! within the deadline (event with the diagnosis, and a metric), and with `action = "hangup"`
//! ended with BYE carrying a Reason.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    scripted,
    sipp::{self, Backend, CallKind},
};
use serde_json::Value;

const FIRST_PACKET_SECS: u64 = 2;

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn events_named(daemon: &Daemon, name: &str) -> Vec<Value> {
    daemon
        .events()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

fn no_audio_config(action: &str) -> String {
    format!("[media.no_audio]\nfirst_packet_secs = {FIRST_PACKET_SECS}\naction = \"{action}\"\n")
}

#[test]
fn a_backend_that_never_sends_rtp_is_reported_within_the_deadline() {
    require_lab_privileges();
    let lab = Lab::up("noaudio").expect("lab");
    let backend_address = addr(CALLEE, 5060);
    let _backend = Backend::start_silent(&lab.callee, backend_address).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend_address],
            extra_config: no_audio_config("report"),
            ..Default::default()
        },
    )
    .expect("daemon");
    const CALLS: u32 = 3;
    // The caller plays its pcap; the backend answers and stays silent.
    let result = sipp::place_calls(
        &lab.caller,
        addr(CALLER, 5060),
        addr(SBC_PUBLIC, 5060),
        CallKind::WithMedia,
        (CALLS, 10),
        Duration::from_secs(60),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.successful, result.failed),
        (u64::from(CALLS), 0),
        "reporting does not end calls:\n{}",
        result.output
    );
    let reports = events_named(&daemon, "call_no_audio");
    let answered = events_named(&daemon, "call_answered");
    assert_eq!(
        reports.len(),
        CALLS as usize,
        "one report per call: {reports:#?}"
    );
    for report in &reports {
        assert_eq!(report["direction"], "callee_to_caller", "{report}");
        assert_eq!(report["silence"], "no_media", "{report}");
        assert_eq!(report["action"], "report", "{report}");
        let legs = report["legs"].as_array().expect("legs");
        let party = |name: &str| legs.iter().find(|l| l["party"] == name).expect(name);
        let (caller, callee) = (party("caller"), party("callee"));
        assert_eq!(caller["latched"], true, "the caller's media came: {report}");
        assert!(caller["rtp_packets_in"].as_u64() > Some(0), "{report}");
        assert_eq!(callee["latched"], false, "{report}");
        assert_eq!(callee["rtp_packets_in"], 0, "{report}");
        // Within the deadline, plus the once-a-second check and some scheduling.
        let answered_at = answered
            .iter()
            .find(|a| a["call_id"] == report["call_id"])
            .and_then(|a| a["ts_ms"].as_u64())
            .expect("the call's answer");
        let after = report["ts_ms"].as_u64().unwrap() - answered_at;
        assert!(
            (FIRST_PACKET_SECS * 1000..=FIRST_PACKET_SECS * 1000 + 2000).contains(&after),
            "reported {after} ms after the answer: {report}"
        );
    }
    let metrics = daemon.metrics().expect("metrics");
    assert_eq!(
        metrics
            .get("sbc_calls_no_audio_total{direction=\"callee_to_caller\",silence=\"no_media\"}"),
        f64::from(CALLS),
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.sum(
            "sbc_calls_no_audio_total",
            &["direction=\"caller_to_callee\""]
        ),
        0.0,
        "the caller's direction was fine"
    );
}

#[test]
fn a_silent_call_is_hung_up_with_a_reason_when_configured() {
    require_lab_privileges();
    let lab = Lab::up("noaudio-bye").expect("lab");
    const CALLS: u32 = 2;
    let options = DaemonOptions {
        extra_config: no_audio_config("hangup"),
        ..Default::default()
    };
    let (mut backend, daemon) = scripted::start(&lab, "silent_uas", CALLS, options);
    let started = Instant::now();
    // Both scripts wait for a BYE whose Reason says "no audio", and must play through.
    let ended = scripted::play(&lab, &mut backend, &daemon, "silent_uac", CALLS);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "hung up by the no-audio deadline, not the media timeout"
    );
    let reports = events_named(&daemon, "call_no_audio");
    assert_eq!(
        reports.len(),
        2 * CALLS as usize,
        "both directions of each call: {reports:#?}"
    );
    for event in &ended {
        assert_eq!(event["reason"], "no_audio", "{event}");
    }
}
