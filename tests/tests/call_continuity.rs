//! Restarting the daemon without losing calls: 50 SIP calls with media through the sbc, the
//! daemon killed with SIGKILL and started again; media keeps flowing throughout (the kernel
//! relays it), and every call is re-INVITEd and hung up afterwards through the new daemon,
//! with one correct end event each.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc::{
    events::{CallEnd, CallEnded, Event, Kind},
    media::EndReason,
    proxy::core::calls::CallState,
};
use sbc_tests::{
    calls::answered_calls,
    daemon::DaemonOptions,
    lab::{CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    rtp::Traffic,
    scripted,
    sipp::{self, CallKind},
};

const CALLS: u32 = 50;
/// At most this much media may be lost per call and direction (the acceptance bound).
const MAX_MEDIA_LOSS: Duration = Duration::from_millis(100);

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
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
        let calls = answered_calls(&daemon, CALLS as usize, Duration::from_secs(15));
        let traffic = Traffic::start(&lab, &calls, Duration::from_secs(7));
        std::thread::sleep(Duration::from_secs(2));
        daemon.kill9();
        std::thread::sleep(Duration::from_millis(500));
        daemon.spawn(&[]).expect("the daemon starts again");
        let report = traffic.finish().expect("media");
        report.assert_loss_within(MAX_MEDIA_LOSS, "across the restart");
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
    let mut ends: BTreeMap<String, Vec<&CallEnded>> = BTreeMap::new();
    for event in &events {
        if let Event::CallEnded(ended) = event {
            ends.entry(ended.call_id.clone()).or_default().push(ended);
        }
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
        assert_eq!(
            (event.reason, event.final_code),
            (CallEnd::Bye, Some(200)),
            "{event:?}"
        );
        assert!(
            event.duration_ms.is_some_and(|d| d >= 12_000),
            "the duration spans the restart: {event:?}"
        );
        let relayed = event.rtp_packets.map_or(0, |p| p.caller_to_callee);
        assert!(
            relayed >= 300,
            "media counted across the restart: {event:?}"
        );
    }
    let started = events
        .iter()
        .filter(|e| matches!(e, Event::CallStarted(_)))
        .count();
    assert_eq!(started, CALLS as usize, "no call was started twice");
    let left = daemon.calls().expect("calls");
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(daemon.sessions().expect("sessions").len(), 0);
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
            let calls = daemon.calls().expect("GET /v1/calls");
            if calls.len() == RINGING_CALLS as usize
                && calls.iter().all(|c| c.state == CallState::Ringing)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "calls not all ringing: {calls:?}"
            );
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
        |name: &str| -> Vec<&Event> { events.iter().filter(|e| e.name() == name).collect() };
    let ended: Vec<&CallEnded> = events.iter().filter_map(CallEnded::of_ref).collect();
    assert_eq!(ended.len(), RINGING_CALLS as usize, "{ended:?}");
    for event in &ended {
        assert_eq!(
            (event.reason, event.final_code),
            (CallEnd::Bye, Some(200)),
            "{event:?}"
        );
    }
    assert_eq!(named("call_answered").len(), RINGING_CALLS as usize);
    assert_eq!(
        named("call_started").len(),
        RINGING_CALLS as usize,
        "no call started twice"
    );
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::MediaSessionEnded(ended) if ended.reason == EndReason::Orphaned
        )),
        "a call's media was taken for an orphan"
    );
    let left = daemon.calls().expect("calls");
    assert!(left.is_empty(), "{left:?}");
    let sessions = daemon.sessions().expect("sessions");
    assert!(sessions.is_empty(), "{sessions:?}");
}

#[test]
fn calls_ringing_through_kill_9_are_answered_anchored_and_hung_up_by_the_caller() {
    calls_ringing_through_kill_9("ringing", HangsUp::Caller);
}

#[test]
fn calls_ringing_through_kill_9_are_answered_anchored_and_hung_up_by_the_callee() {
    calls_ringing_through_kill_9("ringing-callee", HangsUp::Callee);
}
