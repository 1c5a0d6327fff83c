//! SIP over TCP towards the backends: a request too large for UDP goes by TCP (RFC 3261
//! 18.1.1), whole; a backend configured for TCP is reached over a connection the sbc keeps
//! and reuses; and a backend that restarts, or vanishes without closing its connection, costs
//! no call: its connection's end is known (at once, or within seconds by the CRLF keep-alive
//! and `dead_after_ms`) and its calls go to the next backend, never a 480 to the caller.
use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    sipp::{self, Backend, CallKind},
};

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Places `calls` short calls from the carrier and asserts that every one succeeded.
fn every_call_succeeds(lab: &Lab, daemon: &Daemon, kind: CallKind, calls: u32, when: &str) {
    let result = sipp::place_calls(
        &lab.caller,
        addr(CALLER, 5060),
        addr(SBC_PUBLIC, 5060),
        kind,
        (calls, 10),
        Duration::from_secs(40),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.successful, result.failed),
        (u64::from(calls), 0),
        "{when}:\n{}\n{}",
        result.output,
        daemon.log()
    );
}

fn peers_lost(daemon: &Daemon) -> f64 {
    daemon
        .metrics()
        .expect("metrics")
        .get("sbc_sip_tcp_peers_lost_total")
}

#[test]
fn a_3_kb_invite_from_a_udp_carrier_reaches_the_backend_by_tcp_whole() {
    require_lab_privileges();
    let lab = Lab::up("tcpbig").expect("lab");
    let backend = addr(CALLEE, 5060);
    // The backend listens on TCP only, and checks each INVITE's 2,800-byte header: a call
    // succeeds only if its INVITE came by TCP, whole (over UDP it would meet a closed port).
    let scenario = sipp::scenario("large_invite_uas");
    let mut tcp = Backend::start_tcp_scenario(&lab.callee, backend, &scenario).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            health_probes: false,
            ..Default::default()
        },
    )
    .expect("daemon");
    let result = sipp::place_calls(
        &lab.caller,
        addr(CALLER, 5060),
        addr(SBC_PUBLIC, 5060),
        CallKind::Scenario("large_invite_uac"),
        (20, 10),
        Duration::from_secs(40),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.successful, result.failed),
        (20, 0),
        "3 kB INVITEs by TCP:\n{}\n{}\n{}",
        result.output,
        daemon.log(),
        tcp.output()
    );
    // One connection carried them all, and it is still open.
    assert_eq!(peers_lost(&daemon), 0.0);
    tcp.kill();
}

#[test]
fn a_tcp_backend_that_restarts_or_vanishes_costs_no_call() {
    require_lab_privileges();
    let lab = Lab::up("tcpdead").expect("lab");
    let (over_tcp, over_udp) = (addr(CALLEE, 5070), addr(CALLEE, 5060));
    let mut tcp = Backend::start_tcp(&lab.callee, over_tcp).expect("TCP backend");
    let _udp = Backend::start(&lab.callee, over_udp).expect("UDP backend");
    let dead_after = Duration::from_millis(1000);
    let keepalive = Duration::from_secs(1);
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![over_udp],
            tcp_backends: vec![over_tcp],
            // Only the connection tells the TCP backend's death here, not probes.
            health_probes: false,
            extra_config: format!(
                "[sip.tcp]\nkeepalive_secs = {}\ndead_after_ms = {}\n",
                keepalive.as_secs(),
                dead_after.as_millis()
            ),
            ..Default::default()
        },
    )
    .expect("daemon");
    every_call_succeeds(&lab, &daemon, CallKind::Short, 10, "both backends up");

    // A restart: the old process's connection closes, the next call opens a new one.
    tcp.kill();
    tcp = Backend::start_tcp(&lab.callee, over_tcp).expect("TCP backend again");
    every_call_succeeds(&lab, &daemon, CallKind::Short, 10, "after a restart");
    let lost_before = peers_lost(&daemon);
    assert!(lost_before >= 1.0, "the restart closed a connection");

    // Vanished without a word (its host gone, its NAT state lost): nothing it receives is
    // acknowledged. The keep-alive ping goes unacknowledged, and the connection ends.
    lab.callee
        .exec(
            "nft",
            &["add table inet vanish; \
                 add chain inet vanish input { type filter hook input priority 0; }; \
                 add rule inet vanish input tcp dport 5070 drop"],
        )
        .expect("nft (cargo xtask setup installs nftables)");
    let vanished = Instant::now();
    let limit = keepalive + dead_after + Duration::from_secs(3);
    while peers_lost(&daemon) <= lost_before {
        assert!(
            vanished.elapsed() < limit,
            "a vanished backend's connection still open after {limit:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "a vanished TCP backend was known {} ms after it went silent (keep-alive {} s, dead after {} ms)",
        vanished.elapsed().as_millis(),
        keepalive.as_secs(),
        dead_after.as_millis()
    );
    // Its calls go to the other backend: the caller never hears of it.
    every_call_succeeds(
        &lab,
        &daemon,
        CallKind::Short,
        10,
        "with a backend vanished",
    );
    tcp.kill();
}
