//! Backends named by host (`[[sip.backend_hosts]]`), found by DNS as RFC 3263 says: a dnsmasq
//! in the backends' namespace serves a NAPTR record of `pbx.lab` naming the SRV name
//! `_sip._udp.media.pbx.lab` for UDP (not the default `_sip._udp.pbx.lab`, which has no
//! records), whose two SRV targets (two SIPp backends) have weights 3 and 1, all with a TTL of
//! one second. Calls go to them by weight; when one
//! dies, calls fail over to the other and none fails; when DNS stops naming one, the next
//! calls go only to the other once the TTL has passed. A trunk named by host
//! (`sip.trunk_host`): a backend's calls to numbers at `carrier.lab` reach the carrier's live
//! target after its first SRV target, where nothing answers, fails. A backend named by host
//! over TLS: its `_sips._tcp` SRV target reached through stunnel, its certificate checked for
//! the host's name.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    dns_server::{DnsServer, Naptr, Srv, Zone},
    lab::{CALLEE, CALLER, Lab, SBC_PRIVATE, SBC_PUBLIC},
    privileges::require_lab_privileges,
    sipp::{self, Backend, CallKind},
    tls::{self, Tunnel},
};

const HEAVY: u16 = 5060;
const LIGHT: u16 = 5070;

fn zone(targets: &[(&'static str, u16, u16)]) -> Zone {
    Zone {
        naptr: vec![
            Naptr {
                name: "pbx.lab",
                order: 10,
                preference: 10,
                service: "SIP+D2U",
                replacement: "_sip._udp.media.pbx.lab",
            },
            // Another transport's: not for UDP backends.
            Naptr {
                name: "pbx.lab",
                order: 5,
                preference: 10,
                service: "SIP+D2T",
                replacement: "_sip._tcp.elsewhere.pbx.lab",
            },
        ],
        srv: targets
            .iter()
            .map(|&(target, port, weight)| Srv {
                name: "_sip._udp.media.pbx.lab",
                target,
                port,
                priority: 10,
                weight,
            })
            .collect(),
        hosts: vec![
            ("heavy.pbx.lab", IpAddr::V4(CALLEE)),
            ("light.pbx.lab", IpAddr::V4(CALLEE)),
        ],
        ttl_secs: 1,
    }
}

/// INVITEs each backend answered 2xx, by port.
fn answered(daemon: &Daemon, port: u16) -> f64 {
    let metrics = daemon.metrics().expect("metrics");
    metrics.sum(
        "sbc_backend_answers_total",
        &[
            &format!("backend=\"{CALLEE}:{port}\""),
            "method=\"INVITE\"",
            "class=\"2xx\"",
        ],
    )
}

fn place(lab: &Lab, daemon: &Daemon, calls: u32) {
    let result = sipp::place_calls(
        &lab.caller,
        SocketAddr::new(CALLER.into(), 5060),
        SocketAddr::new(SBC_PUBLIC.into(), 5060),
        CallKind::Short,
        (calls, 10),
        Duration::from_secs(60),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.exit_code, result.successful, result.failed),
        (Some(0), u64::from(calls), 0),
        "not every call succeeded:\n{}\n{}",
        result.output,
        daemon.log()
    );
}

#[test]
fn srv_targets_take_calls_by_weight_fail_over_and_follow_the_ttl() {
    require_lab_privileges();
    let lab = Lab::up("dns").expect("lab");
    let dns_address = IpAddr::V4(CALLEE);
    let mut dns = DnsServer::start(
        &lab.callee,
        dns_address,
        &zone(&[("heavy.pbx.lab", HEAVY, 3), ("light.pbx.lab", LIGHT, 1)]),
    )
    .expect("DNS server");
    let mut heavy =
        Backend::start(&lab.callee, SocketAddr::new(CALLEE.into(), HEAVY)).expect("backend");
    let _light =
        Backend::start(&lab.callee, SocketAddr::new(CALLEE.into(), LIGHT)).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_keys: "policy = \"weighted\"\n".to_owned(),
            backend_tables: format!(
                "[[sip.backend_hosts]]\nhost = \"pbx.lab\"\n\
                 [sip.dns]\nservers = [\"{dns_address}:53\"]\n"
            ),
            health_interval_ms: 500,
            ..Default::default()
        },
    )
    .expect("daemon");
    // Both targets found (and probed) before the first call.
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.backends().map_or(0, |b| b.len()) < 2 {
        assert!(
            Instant::now() < deadline,
            "DNS targets not found:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Weights 3 and 1: the heavy target takes three calls in four.
    place(&lab, &daemon, 40);
    let (to_heavy, to_light) = (answered(&daemon, HEAVY), answered(&daemon, LIGHT));
    eprintln!("by weight: {to_heavy} to the heavy target, {to_light} to the light one");
    assert_eq!(to_heavy + to_light, 40.0);
    assert!((27.0..=33.0).contains(&to_heavy), "{to_heavy} of 40");

    // The heavy target dies: every call still succeeds (the INVITE fails over to the other
    // SRV target, and the dead one is marked down).
    heavy.kill();
    place(&lab, &daemon, 20);
    assert_eq!(answered(&daemon, LIGHT), to_light + 20.0);

    // DNS stops naming the heavy target (it comes back to life meanwhile): once the TTL has
    // passed, it is retired and takes no more calls.
    drop(dns);
    dns = DnsServer::start(
        &lab.callee,
        dns_address,
        &zone(&[("light.pbx.lab", LIGHT, 1)]),
    )
    .expect("DNS server");
    let _heavy =
        Backend::start(&lab.callee, SocketAddr::new(CALLEE.into(), HEAVY)).expect("backend");
    std::thread::sleep(Duration::from_secs(3));
    let backends = daemon.backends().expect("backends");
    let heavy_now = backends
        .iter()
        .find(|b| b.address.port() == HEAVY)
        .expect("the heavy target is still listed");
    assert!(
        heavy_now.retired && heavy_now.host.as_deref() == Some("pbx.lab"),
        "{backends:?}"
    );
    let before = answered(&daemon, HEAVY);
    place(&lab, &daemon, 20);
    assert_eq!(
        answered(&daemon, HEAVY),
        before,
        "a retired target took calls"
    );
    drop(dns);
}

#[test]
fn a_trunk_named_by_host_is_reached_at_its_next_srv_target_when_the_first_fails() {
    require_lab_privileges();
    let lab = Lab::up("dnstrunk").expect("lab");
    let dns_address = IpAddr::V4(CALLEE);
    // The carrier's first target (priority 10) has nothing listening; the second is SIPp.
    let (dead, live) = (5080, 5060);
    let _dns = DnsServer::start(
        &lab.callee,
        dns_address,
        &Zone {
            naptr: Vec::new(),
            srv: vec![
                Srv {
                    name: "_sip._udp.carrier.lab",
                    target: "edge1.carrier.lab",
                    port: dead,
                    priority: 10,
                    weight: 1,
                },
                Srv {
                    name: "_sip._udp.carrier.lab",
                    target: "edge2.carrier.lab",
                    port: live,
                    priority: 20,
                    weight: 1,
                },
            ],
            hosts: vec![
                ("edge1.carrier.lab", IpAddr::V4(CALLER)),
                ("edge2.carrier.lab", IpAddr::V4(CALLER)),
            ],
            ttl_secs: 60,
        },
    )
    .expect("DNS server");
    let _carrier =
        Backend::start(&lab.caller, SocketAddr::new(CALLER.into(), live)).expect("carrier");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![SocketAddr::new(CALLEE.into(), 5070)],
            health_probes: false,
            sip_keys: "trunk_host = \"carrier.lab\"\n".to_owned(),
            backend_tables: format!("[sip.dns]\nservers = [\"{dns_address}:53\"]\n"),
            ..Default::default()
        },
    )
    .expect("daemon");
    std::thread::sleep(Duration::from_millis(500));
    let result = sipp::place_calls_through(
        &lab.callee,
        SocketAddr::new(CALLEE.into(), 5060),
        SocketAddr::new(SBC_PRIVATE.into(), 5060),
        Some(SocketAddr::new(SBC_PRIVATE.into(), 5060)),
        CallKind::Scenario("trunk_uac"),
        (5, 5),
        Duration::from_secs(60),
    )
    .expect("SIPp backend calling out");
    assert_eq!(
        (result.exit_code, result.successful, result.failed),
        (Some(0), 5, 0),
        "{}\n{}",
        result.output,
        daemon.log()
    );
    // Each call tried the lower priority first, and failed over from it.
    let failovers = daemon
        .log()
        .matches("failing over to the next target")
        .count();
    assert!(failovers >= 5, "{failovers} failovers:\n{}", daemon.log());
}

#[test]
fn a_backend_named_by_host_is_reached_over_tls_with_its_certificate_checked_for_the_name() {
    require_lab_privileges();
    let lab = Lab::up("dnstls").expect("lab");
    let dir = tempfile::tempdir().expect("a directory");
    let host = "pbx.lab.test";
    let pbx = tls::certificate(dir.path(), "pbx", host).expect("certificate");
    let (sipp_at, tls_at) = (
        SocketAddr::new(CALLEE.into(), 5070),
        SocketAddr::new(CALLEE.into(), 5061),
    );
    let _backend = Backend::start_tcp(&lab.callee, sipp_at).expect("backend");
    let tunnel =
        Tunnel::serve(&lab.callee, tls_at, sipp_at, (&pbx.cert, &pbx.key)).expect("stunnel");
    let dns_address = IpAddr::V4(CALLEE);
    let _dns = DnsServer::start(
        &lab.callee,
        dns_address,
        &Zone {
            naptr: Vec::new(),
            srv: vec![Srv {
                name: "_sips._tcp.pbx.lab.test",
                target: "edge.pbx.lab.test",
                port: tls_at.port(),
                priority: 10,
                weight: 1,
            }],
            hosts: vec![("edge.pbx.lab.test", dns_address)],
            ttl_secs: 60,
        },
    )
    .expect("DNS server");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            health_probes: false,
            backend_tables: format!(
                "[[sip.backend_hosts]]\nhost = \"{host}\"\ntransport = \"tls\"\n\
                 tls_ca = \"{}\"\n[sip.dns]\nservers = [\"{dns_address}:53\"]\n",
                pbx.ca.display()
            ),
            ..Default::default()
        },
    )
    .expect("daemon");
    std::thread::sleep(Duration::from_millis(500));
    let result = sipp::place_calls(
        &lab.caller,
        SocketAddr::new(CALLER.into(), 5060),
        SocketAddr::new(SBC_PUBLIC.into(), 5060),
        CallKind::Short,
        (10, 10),
        Duration::from_secs(20),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.successful, result.failed),
        (10, 0),
        "{}\n{}\n{}",
        result.output,
        daemon.log(),
        tunnel.log()
    );
}
