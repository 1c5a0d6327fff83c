//! Calls from a SIPp caller through the sbc to SIPp backends, with RTP: the proxy, the media
//! anchoring, the events, and failover when a backend dies.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc::events::{CallEnd, CallEnded, Event};
use sbc_tests::{
    calls::ended_pcap_calls,
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PRIVATE, SBC_PUBLIC},
    privileges::require_lab_privileges,
    sip_probe,
    sipp::{self, Backend, CallKind},
};

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn events_named<'a>(events: &'a [Event], name: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.name() == name).collect()
}

#[test]
fn five_hundred_calls_with_media_through_the_sbc() {
    require_lab_privileges();
    let lab = Lab::up("calls").expect("lab");
    let backend_address = addr(CALLEE, 5060);
    let _backend = Backend::start(&lab.callee, backend_address).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend_address],
            ..Default::default()
        },
    )
    .expect("daemon");

    let result = sipp::place_calls(
        &lab.caller,
        addr(CALLER, 5060),
        addr(SBC_PUBLIC, 5060),
        CallKind::WithMedia,
        (500, 20),
        Duration::from_secs(90),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.exit_code, result.successful, result.failed),
        (Some(0), 500, 0),
        "not every call succeeded:\n{}\n{}",
        result.output,
        daemon.log()
    );

    let (events, share) = ended_pcap_calls(&daemon, 500);
    assert_eq!(events_named(&events, "call_started").len(), 500);
    assert_eq!(events_named(&events, "call_answered").len(), 500);
    assert!(
        share >= 0.98,
        "only {share:.4} of RTP relayed in the kernel"
    );
}

#[test]
fn calls_fail_over_when_a_backend_dies_and_503_when_none_is_left() {
    require_lab_privileges();
    let lab = Lab::up("failover").expect("lab");
    let (first, second) = (addr(CALLEE, 5060), addr(CALLEE, 5070));
    let interval = Duration::from_millis(1000);
    let mut a = Backend::start(&lab.callee, first).expect("backend a");
    let mut b = Backend::start(&lab.callee, second).expect("backend b");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![first, second],
            health_interval_ms: interval.as_millis() as u64,
            health_failure_threshold: 1,
            ..Default::default()
        },
    )
    .expect("daemon");
    std::thread::sleep(Duration::from_millis(1500));

    // Calls keep coming while backend a dies.
    let (result, killed) = std::thread::scope(|scope| {
        let calls = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                addr(CALLER, 5060),
                addr(SBC_PUBLIC, 5060),
                // Short calls: the ones set up on the dying backend cannot survive it.
                CallKind::Short,
                (200, 20),
                Duration::from_secs(60),
            )
        });
        std::thread::sleep(Duration::from_secs(3));
        a.kill();
        let killed = sbc::clock::unix_ms();
        (calls.join().unwrap(), killed)
    });
    let result = result.expect("SIPp caller");
    let total = result.successful + result.failed;
    assert!(
        total == 200 && result.successful as f64 >= 0.995 * total as f64,
        "{} of {total} calls succeeded:\n{}",
        result.successful,
        result.output
    );
    let down: Vec<(u64, SocketAddr)> = daemon
        .event_lines()
        .into_iter()
        .filter_map(|line| match line.event {
            Event::BackendDown(down) => Some((line.ts_ms, down.backend)),
            _ => None,
        })
        .collect();
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(down[0].1, first);
    let after = down[0].0.saturating_sub(killed);
    assert!(
        after <= 2 * interval.as_millis() as u64,
        "marked down {after} ms after it died (probe interval {interval:?})"
    );

    // It comes back: marked up again.
    let a_again = Backend::start(&lab.callee, first).expect("backend a again");
    let deadline = Instant::now() + 4 * interval;
    while events_named(&daemon.events(), "backend_up").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        events_named(&daemon.events(), "backend_up").len(),
        1,
        "backend a not back up"
    );

    // With every backend down, callers hear 503 with Retry-After at once.
    drop(a_again);
    b.kill();
    let deadline = Instant::now() + 4 * interval;
    while events_named(&daemon.events(), "backend_down").len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (local, sbc) = (addr(CALLER, 5099), addr(SBC_PUBLIC, 5060));
    let answers = sip_probe::send(
        &lab.caller,
        local,
        sbc,
        &sip_probe::invite(local, sbc, "all-down"),
    )
    .expect("an answer");
    let last = answers.last().expect("an answer");
    assert!(last.starts_with("SIP/2.0 503"), "{answers:?}");
    assert!(last.contains("Retry-After: 5"), "{last}");
}

#[test]
fn calls_from_the_private_side_go_to_their_request_uri() {
    require_lab_privileges();
    let lab = Lab::up("outbound").expect("lab");
    // A carrier on the public side, reached by a backend that uses the sbc as outbound proxy.
    let carrier = addr(CALLER, 5060);
    let _carrier = Backend::start(&lab.caller, carrier).expect("carrier");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![addr(CALLEE, 5070)],
            health_probes: false,
            ..Default::default()
        },
    )
    .expect("daemon");
    let result = sipp::place_calls_through(
        &lab.callee,
        addr(CALLEE, 5060),
        carrier,
        Some(addr(SBC_PRIVATE, 5060)),
        CallKind::WithMedia,
        (10, 5),
        Duration::from_secs(60),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.exit_code, result.successful),
        (Some(0), 10),
        "{}\n{}",
        result.output,
        daemon.log()
    );
    let ended: Vec<CallEnded> = daemon.events_of();
    assert_eq!(ended.len(), 10);
    for event in &ended {
        assert_eq!(event.reason, CallEnd::Bye, "{event:?}");
        let packets = event.rtp_packets.expect("RTP counted");
        assert!(
            packets.caller_to_callee >= 230 && packets.callee_to_caller >= 230,
            "{event:?}"
        );
    }
}
