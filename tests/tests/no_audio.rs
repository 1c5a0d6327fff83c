//! No-audio detection: an answered call whose media is missing in a direction is reported
//! within the deadline (event with the diagnosis, and a metric), and with `action = "hangup"`
//! ended with BYE carrying a Reason.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc::{
    events::{CallAnswered, CallEnd, CallNoAudio, Direction, Event, Kind},
    media::Silence,
};
use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    scripted,
    sipp::{self, Backend, CallKind},
};

const FIRST_PACKET_SECS: u64 = 2;

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The events of one kind, with when each was written.
fn timed<T>(daemon: &Daemon, pick: impl Fn(Event) -> Option<T>) -> Vec<(u64, T)> {
    daemon
        .event_lines()
        .into_iter()
        .filter_map(|line| pick(line.event).map(|event| (line.ts_ms, event)))
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
    let reports = timed(&daemon, CallNoAudio::of);
    let answered = timed(&daemon, CallAnswered::of);
    assert_eq!(
        reports.len(),
        CALLS as usize,
        "one report per call: {reports:#?}"
    );
    for (reported_at, report) in &reports {
        assert_eq!(report.direction, Direction::CalleeToCaller, "{report:?}");
        assert_eq!(report.silence, Silence::NoMedia, "{report:?}");
        assert_eq!(report.action, "report", "{report:?}");
        let party = |name: &str| report.legs.iter().find(|l| l.party == name).expect(name);
        let (caller, callee) = (party("caller"), party("callee"));
        assert!(caller.latched, "the caller's media came: {report:?}");
        assert!(caller.rtp_packets_in > 0, "{report:?}");
        assert!(!callee.latched, "{report:?}");
        assert_eq!(callee.rtp_packets_in, 0, "{report:?}");
        // Within the deadline, plus the once-a-second check and some scheduling.
        let answered_at = answered
            .iter()
            .find(|(_, a)| a.call_id == report.call_id)
            .map(|(at, _)| *at)
            .expect("the call's answer");
        let after = reported_at - answered_at;
        assert!(
            (FIRST_PACKET_SECS * 1000..=FIRST_PACKET_SECS * 1000 + 2000).contains(&after),
            "reported {after} ms after the answer: {report:?}"
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
    let reports: Vec<CallNoAudio> = daemon.events_of();
    assert_eq!(
        reports.len(),
        2 * CALLS as usize,
        "both directions of each call: {reports:#?}"
    );
    for event in &ended {
        assert_eq!(event.reason, CallEnd::NoAudio, "{event:?}");
    }
}
