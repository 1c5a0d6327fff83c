//! SIP over TLS from a carrier: the public side's TLS listener (`[sip.tls]`, rustls) with a
//! certificate read from files. The carrier is SIPp over TCP through stunnel, which speaks
//! TLS to the sbc and checks its certificate and name (Debian's SIPp is built without TLS).
//! 200 calls go through one TLS connection; a certificate replaced on disk and SIGHUP is
//! what new connections get, while the calls up on the old connection go on to their end.
//! And the other way: a backend over TLS (stunnel in front of a SIPp over TCP), whose
//! certificate must be for the configured name.
use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    sipp::{self, Backend, CallKind, CallerResult},
    tls::{self, Tunnel},
};

/// The name the sbc's certificates are for, and the carrier checks.
const HOST: &str = "sbc.lab.test";

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn all_succeeded(result: &CallerResult, calls: u64, daemon: &Daemon, tunnel: &Tunnel) {
    assert_eq!(
        (result.successful, result.failed),
        (calls, 0),
        "{}\n{}\n{}",
        result.output,
        daemon.log(),
        tunnel.log()
    );
}

#[test]
fn calls_over_tls_go_through_and_a_new_certificate_serves_new_connections_after_reload() {
    require_lab_privileges();
    let lab = Lab::up("tls").expect("lab");
    let dir = tempfile::tempdir().expect("a directory");
    let first = tls::certificate(dir.path(), "first", HOST).expect("certificate");
    // The files the daemon reads, replaced in place for the reload.
    let (cert, key) = (dir.path().join("sbc.pem"), dir.path().join("sbc.key"));
    std::fs::copy(&first.cert, &cert).expect("copied");
    std::fs::copy(&first.key, &key).expect("copied");
    let backend = addr(CALLEE, 5060);
    let _backend = Backend::start(&lab.callee, backend).expect("backend");
    let listener = addr(SBC_PUBLIC, 5061);
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            extra_config: format!(
                "[sip.tls]\nlisten = \"{listener}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
                cert.display(),
                key.display()
            ),
            ..Default::default()
        },
    )
    .expect("daemon");
    let tunnel_end = addr(CALLER, 5090);
    let tunnel =
        Tunnel::start(&lab.caller, tunnel_end, listener, (&first.ca, HOST)).expect("stunnel");
    let calls = |local: u16, tunnel_end, kind, count: u32| {
        sipp::place_calls_over_tcp(
            &lab.caller,
            addr(CALLER, local),
            listener,
            tunnel_end,
            kind,
            // Within a source's default INVITE rate ([admission]): over TCP a refused INVITE
            // is not retried, and SIPp's scripted call would wait on it.
            (count, 20),
            Duration::from_secs(60),
        )
        .expect("SIPp caller")
    };
    let result = calls(5060, tunnel_end, CallKind::Short, 200);
    all_succeeded(&result, 200, &daemon, &tunnel);
    assert_eq!(
        tls::offered(&lab.caller, listener, HOST).expect("s_client"),
        tls::fingerprint(&first.cert).expect("fingerprint")
    );

    // A new certificate while calls are up on the connection made with the old one.
    let second = tls::certificate(dir.path(), "second", HOST).expect("certificate");
    let wanted = tls::fingerprint(&second.cert).expect("fingerprint");
    let held = std::thread::scope(|scope| {
        let held =
            scope.spawn(|| calls(5062, tunnel_end, CallKind::Held(Duration::from_secs(4)), 20));
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::copy(&second.cert, &cert).expect("copied");
        std::fs::copy(&second.key, &key).expect("copied");
        daemon.signal(libc::SIGHUP).expect("SIGHUP");
        let deadline = Instant::now() + Duration::from_secs(5);
        while tls::offered(&lab.caller, listener, HOST).unwrap_or_default() != wanted {
            assert!(
                Instant::now() < deadline,
                "the new certificate is not offered:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        held.join().expect("the held calls")
    });
    all_succeeded(&held, 20, &daemon, &tunnel);

    // A carrier that trusts only the new certificate connects and calls.
    let second_end = addr(CALLER, 5091);
    let tunnel =
        Tunnel::start(&lab.caller, second_end, listener, (&second.ca, HOST)).expect("stunnel");
    let result = calls(5064, second_end, CallKind::Short, 10);
    all_succeeded(&result, 10, &daemon, &tunnel);
}

/// A daemon whose one backend is `backend` over TLS, checked for `name` against `ca`
/// (probed with OPTIONS every second with `probes`).
fn with_a_tls_backend(
    lab: &Lab,
    backend: SocketAddr,
    (name, ca): (&str, &std::path::Path),
    probes: bool,
) -> Daemon {
    Daemon::start(
        lab,
        &DaemonOptions {
            backend_tables: format!(
                "[[sip.backends]]\naddress = \"{backend}\"\ntransport = \"tls\"\n\
                 server_name = \"{name}\"\ntls_ca = \"{}\"\n",
                ca.display()
            ),
            health_probes: probes,
            ..Default::default()
        },
    )
    .expect("daemon")
}

#[test]
fn calls_reach_a_backend_over_tls_only_when_its_certificate_is_for_its_name() {
    require_lab_privileges();
    let lab = Lab::up("tlsout").expect("lab");
    let dir = tempfile::tempdir().expect("a directory");
    let pbx = tls::certificate(dir.path(), "pbx", "pbx.lab.test").expect("certificate");
    let (sipp_at, tls_at) = (addr(CALLEE, 5070), addr(CALLEE, 5061));
    let _backend = Backend::start_tcp(&lab.callee, sipp_at).expect("backend");
    let tunnel =
        Tunnel::serve(&lab.callee, tls_at, sipp_at, (&pbx.cert, &pbx.key)).expect("stunnel");
    let daemon = with_a_tls_backend(&lab, tls_at, ("pbx.lab.test", &pbx.ca), false);
    let result = sipp::place_calls(
        &lab.caller,
        addr(CALLER, 5060),
        addr(SBC_PUBLIC, 5060),
        CallKind::Short,
        (20, 10),
        Duration::from_secs(20),
    )
    .expect("SIPp caller");
    all_succeeded(&result, 20, &daemon, &tunnel);
    drop(daemon);

    // A certificate for another name than the one configured: refused at the handshake, the
    // backend's probes (over TLS) never reach it.
    let daemon = with_a_tls_backend(&lab, tls_at, ("other.lab.test", &pbx.ca), true);
    let lost = || {
        daemon
            .metrics()
            .expect("metrics")
            .get("sbc_sip_tcp_peers_lost_total")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while lost() < 2.0 {
        assert!(
            Instant::now() < deadline,
            "handshakes not refused:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        // rustls answers a certificate for another name with a bad_certificate alert.
        tunnel.log().contains("alert bad certificate"),
        "the sbc did not refuse the certificate:\n{}",
        tunnel.log()
    );
}
