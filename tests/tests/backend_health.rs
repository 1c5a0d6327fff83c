//! A backend's health is its own doing: what an outsider's requests provoke (a MESSAGE the
//! backend ignores, a REGISTER it rejects with 500) never marks it down, while its probes keep
//! it up; and only its probes bring it back.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sbc::events::{BackendDown, BackendUp, Event};
use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    responder::{Reply, Responder, method},
    sip_probe,
    sipp::{self, CallKind},
};

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// RFC 3261 Timer F: when the proxy gives up on an unanswered MESSAGE (64 * T1), with slack.
const NON_INVITE_TIMEOUT: Duration = Duration::from_secs(34);

#[test]
fn what_outsiders_provoke_never_takes_a_backend_down() {
    require_lab_privileges();
    let lab = Lab::up("health").expect("lab");
    let backend = addr(CALLEE, 5060);
    let responder = Responder::start(&lab.callee, backend, |request| match method(request) {
        "MESSAGE" | "ACK" => None,
        "REGISTER" => Some(500.into()),
        _ => Some(200.into()),
    })
    .expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            // The most sensitive setting: one failure would mark it down.
            health_failure_threshold: 1,
            ..Default::default()
        },
    )
    .expect("daemon");

    let sbc = addr(SBC_PUBLIC, 5060);
    for i in 0..3u16 {
        for (n, method) in ["MESSAGE", "REGISTER"].into_iter().enumerate() {
            let local = addr(CALLER, 5100 + 2 * i + n as u16);
            let request = sip_probe::request(method, local, sbc, &format!("outsider-{method}-{i}"));
            sip_probe::send_waiting(
                &lab.caller,
                local,
                sbc,
                &request,
                Duration::from_millis(300),
            )
            .expect("send");
        }
    }
    let deadline = Instant::now() + NON_INVITE_TIMEOUT;
    while Instant::now() < deadline {
        let down: Vec<BackendDown> = daemon.events_of();
        assert!(
            down.is_empty(),
            "an outsider took the backend down: {down:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    assert!(
        responder.received("MESSAGE") >= 3 && responder.received("REGISTER") >= 3,
        "the requests did not reach the backend"
    );
    assert!(
        responder.received("OPTIONS") >= 20,
        "the backend was not probed"
    );
    let backends = daemon.backends().expect("backends");
    assert!(backends[0].healthy, "{backends:?}");
    assert_eq!(backends[0].failure_ratio, 0.0, "{backends:?}");
}

/// Only answered probes bring a down backend back (`recovery_threshold` of them): a backend
/// that stops answering probes while calls are up is marked down; the BYEs of those calls
/// still reach it and its 200s come back (calls that are up keep working), but that is no
/// recovery: it stays down, and a new call goes nowhere near it. Once it answers probes
/// again, it is back up.
#[test]
fn a_down_backend_comes_back_on_answered_probes_only() {
    const CALLS: u32 = 20;
    require_lab_privileges();
    let lab = Lab::up("recovery").expect("lab");
    let backend = addr(CALLEE, 5060);
    let answers_probes = Arc::new(AtomicBool::new(true));
    let responder = {
        let answers_probes = Arc::clone(&answers_probes);
        Responder::start(&lab.callee, backend, move |request| match method(request) {
            "OPTIONS" if answers_probes.load(Ordering::Relaxed) => Some(200.into()),
            "OPTIONS" | "ACK" => None,
            "INVITE" => Some(Reply::answer_call(backend, addr(CALLEE, 40_000))),
            _ => Some(200.into()),
        })
        .expect("backend")
    };
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            health_interval_ms: 500,
            ..Default::default()
        },
    )
    .expect("daemon");
    let sbc = addr(SBC_PUBLIC, 5060);

    let calls = std::thread::scope(|scope| {
        let calls = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                addr(CALLER, 5060),
                sbc,
                CallKind::Held(Duration::from_secs(8)),
                (CALLS, 5),
                Duration::from_secs(40),
            )
            .expect("SIPp")
        });
        // Once the calls are up, the backend stops answering probes; it is marked down
        // before the first BYE, and the BYEs span several probe intervals.
        std::thread::sleep(Duration::from_millis(4500));
        answers_probes.store(false, Ordering::Relaxed);
        let events = daemon.events_once("backend_down", 1, Duration::from_secs(5));
        assert!(
            events.iter().any(|e| matches!(e, Event::BackendDown(_))),
            "the backend was not marked down: {events:?}"
        );
        calls.join().expect("caller")
    });
    assert_eq!(
        calls.successful,
        u64::from(CALLS),
        "calls up through a down backend must end cleanly: {}",
        calls.output
    );
    assert!(
        responder.received("BYE") >= u64::from(CALLS),
        "the BYEs did not reach it"
    );

    // Probe intervals with the calls' answers behind it, and a new call offered.
    let invites = responder.received("INVITE");
    let local = addr(CALLER, 5200);
    let answers = sip_probe::send(
        &lab.caller,
        local,
        sbc,
        &sip_probe::invite(local, sbc, "new"),
    )
    .expect("send");
    assert!(
        answers.iter().any(|a| a.starts_with("SIP/2.0 503")),
        "a new call with the only backend down: {answers:?}"
    );
    assert_eq!(
        responder.received("INVITE"),
        invites,
        "an INVITE reached it"
    );
    let up = || !daemon.events_of::<BackendUp>().is_empty();
    assert!(!up(), "answers to in-dialog requests brought it back");

    answers_probes.store(true, Ordering::Relaxed);
    let events = daemon.events_once("backend_up", 1, Duration::from_secs(5));
    assert!(up(), "answered probes did not bring it back: {events:?}");
    let backends = daemon.backends().expect("backends");
    assert!(backends[0].healthy, "{backends:?}");
}
