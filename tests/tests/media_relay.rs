//! End-to-end: the daemon in the lab's sbc namespace relays RTP and RTCP between real sockets
//! in the caller and callee namespaces, with XDP in native mode and with the userspace dataplane.
use std::time::Duration;

use sbc_tests::{
    calls::{open_calls, relayed_packets},
    daemon::{Daemon, DaemonOptions},
    lab::Lab,
    privileges::require_lab_privileges,
    rtp::Traffic,
};

const SESSIONS: usize = 60;

fn relay_both_ways(dataplane: &'static str) {
    require_lab_privileges();
    let lab = Lab::up("relay").expect("lab");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            dataplane,
            ..Default::default()
        },
    )
    .expect("daemon");
    // Half the sessions with RTCP on port + 1, half multiplexed (RFC 5761).
    let mut calls = open_calls(&daemon, 0..SESSIONS / 2, false).expect("sessions");
    calls.extend(open_calls(&daemon, SESSIONS / 2..SESSIONS, true).expect("rtcp-mux sessions"));
    let calls: Vec<_> = calls.into_iter().map(|(_, call)| call).collect();

    let traffic = Traffic::start(&lab, &calls, Duration::from_secs(5));
    // Latching and neighbour resolution happen in the first packets; measure after them.
    std::thread::sleep(Duration::from_millis(1500));
    let warm = relayed_packets(&daemon).expect("counters");
    let report = traffic.finish().expect("traffic");
    let done = relayed_packets(&daemon).expect("counters");

    for (name, direction) in [
        ("caller->callee", report.caller_to_callee()),
        ("callee->caller", report.callee_to_caller()),
    ] {
        eprintln!("{dataplane} {name}: {direction:?}");
        assert!(direction.rtcp_received > 0, "{name}: no RTCP arrived");
        assert!(
            direction.delivered() >= 0.999,
            "{name}: only {:.4} delivered: {direction:?}\n{}",
            direction.delivered(),
            daemon.log()
        );
        assert_eq!(
            direction.foreign, 0,
            "{name}: packets from unexpected sources"
        );
        assert_eq!(direction.duplicates, 0, "{name}: duplicated packets");
    }
    let kernel = done.0 - warm.0;
    let userspace = done.1 - warm.1;
    eprintln!("{dataplane}: after latching, kernel {kernel} / userspace {userspace} packets");
    if dataplane == "xdp" {
        let share = kernel as f64 / (kernel + userspace).max(1) as f64;
        assert!(
            share >= 0.99,
            "only {:.4} of packets relayed in the kernel after latching ({kernel} kernel, {userspace} userspace)\n{}",
            share,
            daemon.log()
        );
    } else {
        assert_eq!(
            kernel, 0,
            "the userspace dataplane must not relay in the kernel"
        );
        assert!(userspace > 0);
    }
}

#[test]
fn xdp_relays_rtp_and_rtcp_both_ways_in_the_kernel() {
    relay_both_ways("xdp");
}

#[test]
fn userspace_dataplane_relays_rtp_and_rtcp_both_ways() {
    relay_both_ways("userspace");
}
