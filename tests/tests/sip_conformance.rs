//! The proxy on the RFC 4475 and RFC 5118 messages (`sbc_tests::conformance`), sent over UDP
//! and over TCP from the caller's namespace: each is forwarded to the backend, answered with the
//! status the index calls for, or dropped; and the proxy still answers OPTIONS after every one.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sbc_tests::{
    conformance::{ALL, AtProxy, Wire},
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    netns::Netns,
    privileges::require_lab_privileges,
    sip_probe,
};

/// A backend that only records what reaches it, over UDP or TCP (requests over 1300 bytes
/// come by TCP, RFC 3261 18.1.1).
struct Sink {
    received: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    fn start(ns: &Netns, address: SocketAddr) -> Self {
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
        let udp = ns.spawn(move || {
            let socket = UdpSocket::bind(address)?;
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut buf = [0u8; 65_536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                    if let Some(reply) = take_request(&r, text) {
                        let _ = socket.send_to(reply.as_bytes(), from);
                    }
                }
            }
            Ok(())
        });
        std::mem::drop(udp);
        let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
        let tcp = ns.spawn(move || {
            let listener = TcpListener::bind(address)?;
            listener.set_nonblocking(true)?;
            while !s.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_millis(50)))?;
                serve_connection(stream, &r, &s);
            }
            Ok(())
        });
        std::mem::drop(tcp);
        std::thread::sleep(Duration::from_millis(100));
        Self { received, stop }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Records a request and says what to answer it: every request gets a final answer at once
/// (200 to health probes, 404 to the rest), so no transaction lingers into the next case.
/// Responses and ACKs get nothing.
fn take_request(received: &std::sync::Mutex<Vec<String>>, text: String) -> Option<String> {
    if text.starts_with("ACK ") || text.starts_with("SIP/2.0") {
        return None;
    }
    let probe = text.starts_with("OPTIONS sip:") && text.contains(";tag=hc");
    let reply = answer(&text, if probe { "200 OK" } else { "404 Not Found" });
    if !probe {
        received.lock().unwrap().push(text);
    }
    Some(reply)
}

/// Reads messages from one TCP connection (framed as the proxy frames them) and answers each
/// on it, until it closes or the sink stops.
fn serve_connection(
    mut stream: std::net::TcpStream,
    received: &std::sync::Mutex<Vec<String>>,
    stop: &AtomicBool,
) {
    use sbc::sip::framing::{StreamFrame, stream as frame};
    let (mut buffer, mut chunk) = (Vec::new(), [0u8; 16 * 1024]);
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
        loop {
            match frame(&buffer) {
                Ok(StreamFrame::Message(len)) => {
                    let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
                    buffer.drain(..len);
                    if let Some(reply) = take_request(received, text) {
                        let _ = stream.write_all(reply.as_bytes());
                    }
                }
                Ok(StreamFrame::KeepAlive { len, .. }) => {
                    buffer.drain(..len);
                }
                Ok(StreamFrame::Incomplete) => break,
                Err(_) => return,
            }
        }
    }
}

/// A response to `request`: its Via, From, To, Call-ID and CSeq copied as they are.
fn answer(request: &str, status: &str) -> String {
    let mut reply = format!("SIP/2.0 {status}\r\n").into_bytes();
    if let Ok(message) = sbc::sip::Message::parse(request.as_bytes().to_vec()) {
        for header in &message.headers {
            if ["via", "from", "to", "call-id", "cseq"].contains(&header.name.as_str()) {
                reply.extend_from_slice(&message.bytes()[header.span.clone()]);
            }
        }
    }
    reply.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    String::from_utf8_lossy(&reply).into_owned()
}

fn options_to_proxy(n: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:{SBC_PUBLIC}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER}:5098;branch=z9hG4bKalive{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@{CALLER}>;tag=a{n}\r\nTo: <sip:{SBC_PUBLIC}>\r\nCall-ID: alive{n}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Over {
    Udp,
    Tcp,
}

fn check(
    lab: &Lab,
    sink: &Sink,
    over: Over,
    name: &str,
    bytes: &[u8],
    expected: AtProxy,
    n: usize,
) -> Option<String> {
    let proxy = SocketAddr::new(SBC_PUBLIC.into(), 5060);
    // A port per case, so late answers to one case never count for the next.
    let local = SocketAddr::new(CALLER.into(), 30_000 + n as u16);
    let (answers, finals): (Vec<String>, Vec<u16>) = match over {
        Over::Udp => {
            let answers = sip_probe::send(&lab.caller, local, proxy, bytes).expect("send");
            let finals = answers
                .iter()
                .filter_map(|a| a.get(8..11)?.parse().ok())
                .filter(|code| *code >= 200)
                .collect();
            (answers, finals)
        }
        Over::Tcp => {
            let codes = sip_probe::send_tcp(&lab.caller, proxy, bytes).expect("send over TCP");
            let finals = codes.iter().copied().filter(|code| *code >= 200).collect();
            (codes.iter().map(u16::to_string).collect(), finals)
        }
    };
    std::thread::sleep(Duration::from_millis(100));
    let forwarded = sink.take();
    let got = match (forwarded.is_empty(), finals.first()) {
        (false, _) => AtProxy::Forwarded,
        (true, Some(&code)) => AtProxy::Answered(code),
        (true, None) => AtProxy::Silent,
    };
    let alive = sip_probe::send(
        &lab.caller,
        SocketAddr::new(CALLER.into(), 5098),
        proxy,
        &options_to_proxy(n),
    )
    .expect("send OPTIONS");
    let mut problems = Vec::new();
    if got != expected {
        problems.push(format!(
            "expected {expected:?}, got {got:?} {answers:?} {forwarded:?}"
        ));
    }
    if !alive.iter().any(|a| a.starts_with("SIP/2.0 200")) {
        problems.push("the proxy did not answer OPTIONS afterwards".into());
    }
    (!problems.is_empty()).then(|| format!("{name}: {}", problems.join("; ")))
}

#[test]
fn torture_messages_over_udp() {
    torture_messages(Over::Udp);
}

#[test]
fn torture_messages_over_tcp() {
    torture_messages(Over::Tcp);
}

fn torture_messages(over: Over) {
    require_lab_privileges();
    let lab = Lab::up("conformance").expect("lab");
    let backend = SocketAddr::new(CALLEE.into(), 5060);
    let sink = Sink::start(&lab.callee, backend);
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            ..Default::default()
        },
    )
    .expect("daemon");
    std::thread::sleep(Duration::from_millis(300));

    // On a stream, framing is by Content-Length alone (RFC 3261 18.3): a message that claims
    // more than it sends waits for the rest, and one whose length cannot be known (none,
    // two, no end of headers) ends the connection without an answer.
    let unframeable_on_a_stream = ["clerr.dat", "mcl01.dat", "baddn.dat", "inv2543.dat"];
    let mut failures = Vec::new();
    let mut n = 0;
    for set in ALL {
        set.assert_complete();
        for case in set.cases {
            n += 1;
            let bytes = set.read(case);
            let expected = match over {
                Over::Tcp if unframeable_on_a_stream.contains(&case.file) => AtProxy::Silent,
                _ => case.proxy(&bytes),
            };
            failures.extend(check(&lab, &sink, over, case.file, &bytes, expected, n));
        }
    }
    assert!(
        failures.is_empty(),
        "{} messages mishandled:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        daemon.log()
    );
    // The corpus is full of control characters (intmeth.dat's To has BEL, NUL and DEL): none
    // reaches the log raw.
    let log = daemon.log();
    let raw = log
        .lines()
        .filter(|l| l.bytes().any(|b| b.is_ascii_control()))
        .count();
    assert_eq!(raw, 0, "log lines with raw control characters:\n{log}");
    if over == Over::Udp {
        // Every refusal and every drop was counted.
        let count = |wanted: fn(Wire) -> bool| {
            ALL.iter()
                .flat_map(|set| set.cases)
                .filter(|case| wanted(case.wire))
                .count() as u64
        };
        let sip = || daemon.stats().unwrap().sip.expect("the proxy's counters");
        let counters = sip();
        assert_eq!(
            counters.refused,
            count(|w| matches!(w, Wire::Refuse(_))),
            "{counters:?}"
        );
        assert!(
            counters.dropped >= count(|w| w == Wire::Drop),
            "{counters:?}"
        );
        // A Via host of 400 bytes (it crashed SIPp) is refused with 400, not forwarded.
        let oversized_before = sip().oversized;
        let local = SocketAddr::new(CALLER.into(), 29_998);
        let sbc = SocketAddr::new(SBC_PUBLIC.into(), 5060);
        let request = String::from_utf8(sip_probe::request("MESSAGE", local, sbc, "long-via"))
            .unwrap()
            .replacen(
                &format!("Via: SIP/2.0/UDP {local}"),
                &format!(
                    "Via: SIP/2.0/UDP {}.example.com:{}",
                    "h".repeat(388),
                    local.port()
                ),
                1,
            );
        let answers = sip_probe::send(&lab.caller, local, sbc, request.as_bytes()).expect("send");
        assert!(
            answers.iter().any(|a| a.starts_with("SIP/2.0 400")),
            "{answers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            sink.take(),
            Vec::<String>::new(),
            "the oversized request reached the backend"
        );
        assert_eq!(sip().oversized, oversized_before + 1);

        // A request too broken to answer (no start line, no header) is dropped and counted
        // once, as dropped: never also as answered.
        let before = sip();
        let local = SocketAddr::new(CALLER.into(), 29_999);
        let unanswerable = b"INVITE\r\nno header here\r\n\r\n";
        let answers = sip_probe::send_waiting(
            &lab.caller,
            local,
            SocketAddr::new(SBC_PUBLIC.into(), 5060),
            unanswerable,
            Duration::from_millis(300),
        )
        .expect("send");
        assert!(answers.is_empty(), "{answers:?}");
        let after = sip();
        assert_eq!(
            after.refused, before.refused,
            "an unanswered datagram counted as answered"
        );
        assert_eq!(after.dropped, before.dropped + 1);
    }
}
