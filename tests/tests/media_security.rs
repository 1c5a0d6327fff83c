//! RTP injection ("RTP bleed"): once a leg has latched its peer, nothing another host sends to
//! that port may reach anyone, and the kernel counts what it dropped.
use std::{net::SocketAddr, time::Duration};

use sbc_tests::{
    calls::open_calls,
    daemon::{Daemon, DaemonOptions},
    lab::Lab,
    privileges::require_lab_privileges,
    rtp::{Traffic, inject},
};

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
    let targets: Vec<SocketAddr> = calls
        .iter()
        .flat_map(|c| {
            let rtp = c.caller_sends_to;
            [rtp, SocketAddr::new(rtp.ip(), rtp.port() + 1)]
        })
        .collect();
    let dropped_before = daemon.xdp_reason("drop_foreign_source").expect("counter");
    let injected = inject(&lab.rogue, targets, Duration::from_secs(2)).expect("inject");
    let report = traffic.finish().expect("traffic");
    let dropped = daemon.xdp_reason("drop_foreign_source").expect("counter") - dropped_before;

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
    assert!(injected > 1000, "the rogue sent only {injected} packets");
    // A few of the first packets may wait on ARP in the rogue's router; all others must die in XDP.
    assert!(
        dropped >= injected * 95 / 100 && dropped <= injected,
        "XDP dropped {dropped} of {injected} injected packets"
    );
    let sessions = daemon.api.get("/v1/sessions").expect("sessions").body;
    let per_flow: u64 = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["legs"].as_array().unwrap().clone())
        .flat_map(|leg| {
            [
                leg["rtp"]["foreign_dropped"].clone(),
                leg["rtcp"]["foreign_dropped"].clone(),
            ]
        })
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(
        per_flow, dropped,
        "per-flow drop counters disagree with the reason counter"
    );
}
