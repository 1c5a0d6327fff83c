//! Media hijack and injection, from the attacker's side: before a call's first packet (the
//! moment a first-source-wins relay hands the call to whoever sprays its ports) and after the
//! legs have latched ("RTP bleed"), nothing another host sends may reach anyone, the attacker
//! receives nothing, and every refused packet is counted.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sbc::media::session::LegInfo;
use sbc_common::flow::PeerMatch;
use sbc_tests::{
    calls::open_calls,
    daemon::{Daemon, DaemonOptions},
    lab::{Lab, PRIVATE_ROGUE, ROGUE},
    privileges::require_lab_privileges,
    rtp::{Call, Spray, Traffic, TrafficReport},
};

/// Each call's relay ports on one side, RTP and RTCP.
fn ports(calls: &[Call], sbc_side: impl Fn(&Call) -> SocketAddr) -> Vec<SocketAddr> {
    calls
        .iter()
        .flat_map(|c| {
            let rtp = sbc_side(c);
            [rtp, SocketAddr::new(rtp.ip(), rtp.port() + 1)]
        })
        .collect()
}

fn assert_media_clean(report: &TrafficReport) {
    for (name, direction) in [
        ("callee", report.caller_to_callee()),
        ("caller", report.callee_to_caller()),
    ] {
        assert_eq!(
            direction.foreign, 0,
            "the {name} received injected packets: {direction:?}"
        );
        assert!(
            direction.delivered() >= 0.999,
            "the {name} lost media: {direction:?}"
        );
    }
}

/// Every leg of every session, RTP and RTCP counters side by side.
fn legs(daemon: &Daemon) -> Vec<LegInfo> {
    daemon
        .sessions()
        .expect("sessions")
        .into_iter()
        .flat_map(|s| s.legs)
        .collect()
}

/// The attackers (one on the Internet side, one on the backends' network) spray every RTP and
/// RTCP port of the sessions from before the peers' first packet until after they stop. The
/// peers still latch as their SDP says, nothing of the spray reaches them, and nothing of the
/// calls reaches the attackers.
#[test]
fn a_spray_before_the_first_packet_hijacks_nothing() {
    require_lab_privileges();
    let lab = Lab::up("hijack").expect("lab");
    let daemon = Daemon::start(&lab, &DaemonOptions::default()).expect("daemon");
    let calls: Vec<_> = open_calls(&daemon, 0..6, false)
        .expect("sessions")
        .into_iter()
        .map(|(_, call)| call)
        .collect();
    let spray = Duration::from_secs(6);
    let public = Spray::start(
        &lab.rogue,
        IpAddr::V4(ROGUE),
        ports(&calls, |c| c.caller_sends_to),
        spray,
    );
    let private = Spray::start(
        &lab.callee,
        IpAddr::V4(PRIVATE_ROGUE),
        ports(&calls, |c| c.callee_sends_to),
        spray,
    );
    // The calls' ports have been open to the sprays for a while before their peers send.
    std::thread::sleep(Duration::from_millis(1500));
    let traffic = Traffic::start(&lab, &calls, Duration::from_secs(3));
    let report = traffic.finish().expect("traffic");
    let (public, private) = (
        public.finish().expect("spray"),
        private.finish().expect("spray"),
    );

    assert_media_clean(&report);
    for (side, spray) in [("public", public), ("private", private)] {
        assert!(spray.sent > 1000, "the {side} attacker sent only {spray:?}");
        assert_eq!(
            spray.received, 0,
            "media reached the {side} attacker: {spray:?}"
        );
    }
    for leg in legs(&daemon) {
        let streams = [
            ("rtp", leg.latch, Some(leg.rtp)),
            ("rtcp", leg.rtcp_latch, leg.rtcp),
        ];
        for (stream, latch, counters) in streams {
            let latch = latch.unwrap_or_else(|| panic!("{stream} of {leg:?} not latched"));
            assert_eq!(
                (latch.matched, latch.locked),
                (PeerMatch::Sdp, true),
                "{stream} of {leg:?}"
            );
            assert!(
                counters.is_some_and(|c| c.unsignalled_dropped > 0),
                "the spray before latching was not counted on {stream}: {leg:?}"
            );
        }
    }
}

#[test]
fn injected_media_never_reaches_the_peers() {
    require_lab_privileges();
    let lab = Lab::up("inject").expect("lab");
    let daemon = Daemon::start(&lab, &DaemonOptions::default()).expect("daemon");
    let calls: Vec<_> = open_calls(&daemon, 0..4, false)
        .expect("sessions")
        .into_iter()
        .map(|(_, call)| call)
        .collect();
    let traffic = Traffic::start(&lab, &calls, Duration::from_secs(4));
    std::thread::sleep(Duration::from_secs(1));

    // The rogue host, on the Internet side, aims at every public RTP and RTCP port (the private
    // side is not routed from the Internet).
    let targets = ports(&calls, |c| c.caller_sends_to);
    let dropped_before = daemon.xdp_reason("drop_foreign_source").expect("counter");
    let spray = Spray::start(
        &lab.rogue,
        IpAddr::V4(ROGUE),
        targets,
        Duration::from_secs(2),
    )
    .finish()
    .expect("inject");
    let report = traffic.finish().expect("traffic");
    let dropped = daemon.xdp_reason("drop_foreign_source").expect("counter") - dropped_before;

    assert_media_clean(&report);
    assert_eq!(spray.received, 0, "media reached the rogue: {spray:?}");
    let injected = spray.sent;
    assert!(injected > 1000, "the rogue sent only {injected} packets");
    // A few of the first packets may wait on ARP in the rogue's router; all others must die in XDP.
    assert!(
        dropped >= injected * 95 / 100 && dropped <= injected,
        "XDP dropped {dropped} of {injected} injected packets"
    );
    let per_flow: u64 = legs(&daemon)
        .into_iter()
        .flat_map(|leg| std::iter::once(leg.rtp).chain(leg.rtcp))
        .map(|counters| counters.foreign_dropped)
        .sum();
    assert_eq!(
        per_flow, dropped,
        "per-flow drop counters disagree with the reason counter"
    );
}
