//! Restarting the daemon without losing calls: 50 SIP calls with media through the sbc, the
//! daemon killed with SIGKILL and started again; media keeps flowing throughout (the kernel
//! relays it), and every call is re-INVITEd and hung up afterwards through the new daemon,
//! with one correct end event each.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    rtp::{self, PACKET_INTERVAL, Traffic},
    scripted,
    sipp::{self, CallKind},
};
use serde_json::Value;

const CALLS: u32 = 50;
/// At most this much media may be lost per call and direction (the acceptance bound).
const MAX_MEDIA_LOSS: Duration = Duration::from_millis(100);

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn local(session: &Value, leg: usize) -> SocketAddr {
    session["legs"][leg]["local_rtp"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no local RTP address on leg {leg}: {session}"))
}

/// Waits until every call is answered; the media endpoints of each, in a stable order.
fn answered_calls(daemon: &Daemon) -> Vec<rtp::Call> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let calls = loop {
        let body = daemon.api.get("/v1/calls").expect("GET /v1/calls").body;
        let calls: Vec<Value> = body["calls"].as_array().cloned().unwrap_or_default();
        if calls.len() == CALLS as usize && calls.iter().all(|c| c["state"] == "answered") {
            break calls;
        }
        assert!(Instant::now() < deadline, "calls not all answered: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let session = &call["media"][0];
            let port = |base: u16| base + 2 * i as u16;
            rtp::Call {
                caller: addr(CALLER, port(40000)),
                caller_sends_to: local(session, 0),
                callee: addr(CALLEE, port(50000)),
                callee_sends_to: local(session, 1),
                rtcp_mux: false,
            }
        })
        .collect()
}

#[test]
fn fifty_calls_survive_kill_9_and_are_reinvited_and_ended_afterwards() {
    require_lab_privileges();
    let lab = Lab::up("continuity").expect("lab");
    let (mut backend, mut daemon) =
        scripted::start(&lab, "restart_uas", CALLS, DaemonOptions::default());

    let result = std::thread::scope(|scope| {
        // Each call: INVITE, 12 s established, re-INVITE, BYE.
        let caller = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                addr(CALLER, 5060),
                addr(SBC_PUBLIC, 5060),
                CallKind::Scenario("restart_uac"),
                (CALLS, 50),
                Duration::from_secs(60),
            )
        });
        let calls = answered_calls(&daemon);
        let traffic = Traffic::start(&lab, &calls, Duration::from_secs(7));
        std::thread::sleep(Duration::from_secs(2));
        daemon.kill9();
        std::thread::sleep(Duration::from_millis(500));
        daemon.spawn(&[]).expect("the daemon starts again");
        let report = traffic.finish().expect("media");
        let lost_bound = (MAX_MEDIA_LOSS.as_millis() / PACKET_INTERVAL.as_millis()) as u64;
        for (i, call) in report.calls.iter().enumerate() {
            for (direction, name) in call.iter().zip(["caller->callee", "callee->caller"]) {
                let lost = direction.rtp_sent - direction.rtp_received.min(direction.rtp_sent);
                assert!(
                    lost <= lost_bound,
                    "call {i} {name} lost {lost} RTP packets (over {MAX_MEDIA_LOSS:?}) across the restart: {direction:?}\n{}",
                    daemon.log()
                );
            }
        }
        caller.join().expect("caller thread").expect("SIPp caller")
    });
    assert_eq!(
        (result.successful, result.failed),
        (u64::from(CALLS), 0),
        "every call re-INVITEd and hung up after the restart:\n{}\n{}",
        result.output,
        daemon.log()
    );
    assert_eq!(
        backend.wait(Duration::from_secs(10)),
        Some(0),
        "the backend saw every call as scripted:\n{}",
        backend.output()
    );

    let events = daemon.events_once("call_ended", CALLS as usize, Duration::from_secs(10));
    let mut ends: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for event in events.iter().filter(|e| e["event"] == "call_ended") {
        ends.entry(event["call_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(event);
    }
    assert_eq!(
        ends.len(),
        CALLS as usize,
        "calls with an end event: {ends:?}"
    );
    for (call_id, events) in &ends {
        assert_eq!(
            events.len(),
            1,
            "{call_id} ended more than once: {events:?}"
        );
        let event = events[0];
        assert_eq!(event["reason"], "bye", "{event}");
        assert_eq!(event["final_code"], 200, "{event}");
        assert!(
            event["duration_ms"].as_u64().is_some_and(|d| d >= 12_000),
            "the duration spans the restart: {event}"
        );
        let relayed = event["rtp_packets"]["caller_to_callee"]
            .as_u64()
            .unwrap_or(0);
        assert!(relayed >= 300, "media counted across the restart: {event}");
    }
    let started = events
        .iter()
        .filter(|e| e["event"] == "call_started")
        .count();
    assert_eq!(started, CALLS as usize, "no call was started twice");
    let left = daemon.api.get("/v1/calls").expect("calls").body;
    assert_eq!(left["calls"].as_array().map(Vec::len), Some(0), "{left}");
    assert_eq!(
        daemon.api.get("/v1/sessions").expect("sessions").body["sessions"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

const RINGING_CALLS: u32 = 10;

/// Who ends the calls of the ringing-restart test.
#[derive(Clone, Copy)]
enum HangsUp {
    Caller,
    Callee,
}

/// `kill -9` while calls ring; the backend answers 8 s later, through the new daemon. Every
/// answer reaches its caller with the media anchored on the sbc's public address (the caller's
/// script fails a call whose SDP names anything else), the caller's ACK reaches the backend,
/// the BYE of whoever hangs up reaches the other side, every call ends once with its real
/// outcome, and nothing is left behind.
fn calls_ringing_through_kill_9(tag: &str, hangs_up: HangsUp) {
    require_lab_privileges();
    let lab = Lab::up(tag).expect("lab");
    let (uas, uac) = match hangs_up {
        HangsUp::Caller => ("ringing_uas", "ringing_uac"),
        HangsUp::Callee => ("ringing_uas_callee_hangs_up", "ringing_uac_callee_hangs_up"),
    };
    let (mut backend, mut daemon) =
        scripted::start(&lab, uas, RINGING_CALLS, DaemonOptions::default());
    let result = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                addr(CALLER, 5060),
                addr(SBC_PUBLIC, 5060),
                CallKind::Scenario(uac),
                (RINGING_CALLS, 50),
                Duration::from_secs(40),
            )
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let body = daemon.api.get("/v1/calls").expect("GET /v1/calls").body;
            let calls = body["calls"].as_array().cloned().unwrap_or_default();
            if calls.len() == RINGING_CALLS as usize
                && calls.iter().all(|c| c["state"] == "ringing")
            {
                break;
            }
            assert!(Instant::now() < deadline, "calls not all ringing: {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon.kill9();
        std::thread::sleep(Duration::from_millis(500));
        daemon.spawn(&[]).expect("the daemon starts again");
        caller.join().expect("caller thread").expect("SIPp caller")
    });
    assert_eq!(
        (result.successful, result.failed),
        (u64::from(RINGING_CALLS), 0),
        "every call answered with anchored media and hung up:\n{}\n{}",
        result.output,
        daemon.log()
    );
    assert_eq!(
        backend.wait(Duration::from_secs(10)),
        Some(0),
        "the backend did not play every call through (ACK, BYE):\n{}",
        backend.output()
    );

    let events = daemon.events_once("call_ended", RINGING_CALLS as usize, Duration::from_secs(5));
    let named =
        |name: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == name).collect() };
    let ended = named("call_ended");
    assert_eq!(ended.len(), RINGING_CALLS as usize, "{ended:?}");
    for event in &ended {
        assert_eq!(
            (event["reason"].as_str(), event["final_code"].as_u64()),
            (Some("bye"), Some(200)),
            "{event}"
        );
    }
    assert_eq!(named("call_answered").len(), RINGING_CALLS as usize);
    assert_eq!(
        named("call_started").len(),
        RINGING_CALLS as usize,
        "no call started twice"
    );
    assert!(
        named("media_session_ended")
            .iter()
            .all(|e| e["reason"] != "orphaned"),
        "a call's media was taken for an orphan"
    );
    let left = daemon.api.get("/v1/calls").expect("calls").body;
    assert_eq!(left["calls"].as_array().map(Vec::len), Some(0), "{left}");
    let sessions = daemon.api.get("/v1/sessions").expect("sessions").body;
    assert_eq!(
        sessions["sessions"].as_array().map(Vec::len),
        Some(0),
        "{sessions}"
    );
}

#[test]
fn calls_ringing_through_kill_9_are_answered_anchored_and_hung_up_by_the_caller() {
    calls_ringing_through_kill_9("ringing", HangsUp::Caller);
}

#[test]
fn calls_ringing_through_kill_9_are_answered_anchored_and_hung_up_by_the_callee() {
    calls_ringing_through_kill_9("ringing-callee", HangsUp::Callee);
}
