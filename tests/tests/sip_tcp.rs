//! SIP over TCP within bounds (`[sip.tcp]`), from the attacker's side: one host cannot hold more
//! connections than its share, all hosts together no more than the total, and a client that
//! sends a message a byte at a time (which keeps any idle timer alive) is cut off.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use sbc::proxy::stats::TcpCounters;
use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, ROGUE, SBC_PUBLIC},
    netns::Netns,
    privileges::require_lab_privileges,
    sip_probe,
    sipp::Backend,
};

const SBC: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(SBC_PUBLIC), 5060);

/// Opens `count` connections from `ns` and tells, for each, whether the sbc serves it (answers
/// an OPTIONS on it); the connections stay open until the returned streams are dropped.
fn open_connections(
    ns: &Netns,
    source: std::net::Ipv4Addr,
    count: usize,
) -> (Vec<TcpStream>, usize) {
    ns.spawn(move || {
        let streams: Vec<TcpStream> = (0..count)
            .map(|_| TcpStream::connect_timeout(&SBC, Duration::from_secs(2)))
            .collect::<Result<_, _>>()?;
        // Let the daemon take (or refuse) them all before any is used.
        std::thread::sleep(Duration::from_millis(300));
        let mut served = 0;
        for (n, mut stream) in streams.iter().enumerate() {
            let local = SocketAddr::new(source.into(), stream.local_addr()?.port());
            let options = sip_probe::options(local, SBC, &format!("tcp-{source}-{n}"), "test");
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            if stream.write_all(&options).is_err() {
                continue;
            }
            let mut answer = [0u8; 64];
            if matches!(stream.read(&mut answer), Ok(len) if answer[..len].starts_with(b"SIP/2.0 200")) {
                served += 1;
            }
        }
        Ok((streams, served))
    })
    .join()
    .expect("thread")
    .expect("connections")
}

fn tcp_counters(daemon: &Daemon) -> TcpCounters {
    daemon
        .stats()
        .expect("stats")
        .sip
        .expect("the proxy's counters")
        .tcp
}

#[test]
fn connections_are_bounded_and_a_slow_message_is_cut_off() {
    require_lab_privileges();
    let lab = Lab::up("siptcp").expect("lab");
    let backend = SocketAddr::new(CALLEE.into(), 5060);
    let _backend = Backend::start(&lab.callee, backend).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            extra_config: "[sip.tcp]\nmax_connections = 8\nmax_connections_per_source = 5\n\
                           message_timeout_ms = 1000\n"
                .into(),
            ..Default::default()
        },
    )
    .expect("daemon");

    let (caller_streams, served) = open_connections(&lab.caller, CALLER, 7);
    assert_eq!(served, 5, "one host got more than its 5 connections");
    let (rogue_streams, served) = open_connections(&lab.rogue, ROGUE, 5);
    assert_eq!(served, 3, "the total of 8 connections was exceeded");
    assert_eq!(tcp_counters(&daemon).open, 8);
    assert_eq!(tcp_counters(&daemon).refused, 4);
    drop((caller_streams, rogue_streams));
    let deadline = Instant::now() + Duration::from_secs(3);
    while tcp_counters(&daemon).open > 0 {
        assert!(
            Instant::now() < deadline,
            "closed connections still counted as open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A byte every 100 ms: the idle timer never fires, the message deadline (1 s) does.
    let closed_after = lab
        .caller
        .spawn(|| {
            let mut stream = TcpStream::connect_timeout(&SBC, Duration::from_secs(2))?;
            let local = stream.local_addr()?;
            let options = sip_probe::options(local, SBC, "slowloris", "test");
            let start = Instant::now();
            for byte in options {
                if stream.write_all(&[byte]).is_err() {
                    return Ok(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(100));
                stream.set_nonblocking(true)?;
                let mut probe = [0u8; 1];
                let closed = matches!(stream.read(&mut probe), Ok(0));
                stream.set_nonblocking(false)?;
                if closed {
                    return Ok(start.elapsed());
                }
            }
            anyhow::bail!("the whole slow message was taken")
        })
        .join()
        .expect("thread")
        .expect("slow sender");
    assert!(
        closed_after < Duration::from_secs(3),
        "a slow message held its connection for {closed_after:?}"
    );
    assert_eq!(tcp_counters(&daemon).slow_closed, 1);
}
