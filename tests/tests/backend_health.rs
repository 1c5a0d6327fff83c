//! A backend's health is its own doing: what an outsider's requests provoke (a MESSAGE the
//! backend ignores, a REGISTER it rejects with 500) never marks it down, while its probes keep
//! it up.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    responder::{Responder, method},
    sip_probe,
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
        let down: Vec<_> = daemon
            .events()
            .into_iter()
            .filter(|e| e["event"] == "backend_down")
            .collect();
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
    let backends = daemon.api.get("/v1/backends").expect("backends").body;
    let only = &backends["backends"][0];
    assert_eq!(only["healthy"], true, "{backends}");
    assert_eq!(only["failure_ratio"], 0.0, "{backends}");
}
