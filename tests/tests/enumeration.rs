//! User enumeration and topology leaks, from the scanner's side: a scanner that does not say
//! what it is (a browser's User-Agent) goes through a word list of extensions with REGISTER.
//! Existing and missing users get the same answer, nothing names the backend's software, and
//! after a handful of missing users the scanner is blocked. An office registering many
//! existing phones from one address is not.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sbc::events::SourceBlocked;
use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, ROGUE, SBC_PUBLIC},
    netns::Netns,
    privileges::require_lab_privileges,
    responder::{Reply, Responder, method, to_user},
    sip_probe,
};

const SBC: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(SBC_PUBLIC), 5060);

/// Extensions 100-199 exist and are challenged; anything else is 404. Every answer names the
/// backend's software, as Asterisk's do.
fn pbx(request: &str) -> Option<Reply> {
    let server = "Server: Asterisk PBX 20.1.0".to_owned();
    match method(request) {
        "REGISTER" if to_user(request).parse::<u16>().is_ok_and(|n| (100..200).contains(&n)) => {
            Some(Reply {
                code: 401,
                headers: vec![
                    "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"5f2b1c0a7d3e9f11\", algorithm=MD5"
                        .to_owned(),
                    server,
                ],
                body: String::new(),
            })
        }
        "REGISTER" => Some(Reply {
            code: 404,
            headers: vec![server],
            body: String::new(),
        }),
        "ACK" => None,
        _ => Some(Reply {
            code: 200,
            headers: vec![server],
            body: String::new(),
        }),
    }
}

/// A REGISTER for `user` from `ns`; the answer's status line and header names (values of
/// the challenge aside), or `None` when nothing came back.
fn register(
    ns: &Netns,
    source: std::net::Ipv4Addr,
    port: u16,
    user: &str,
) -> Option<(String, Vec<String>)> {
    let local = SocketAddr::new(source.into(), port);
    let request = String::from_utf8(sip_probe::request(
        "REGISTER",
        local,
        SBC,
        &format!("enum-{user}-{port}"),
    ))
    .unwrap()
    // A REGISTER's Request-URI is the domain; From, To and Contact name the user.
    .replacen("REGISTER sip:probe@", "REGISTER sip:", 1)
    .replace("<sip:probe@", &format!("<sip:{user}@"))
    // Not a scanner by its User-Agent.
    .replace(
        "\r\n\r\n",
        "\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0)\r\n\r\n",
    );
    let answers = sip_probe::send_waiting(
        ns,
        local,
        SBC,
        request.as_bytes(),
        Duration::from_millis(700),
    )
    .expect("send");
    let last = answers.into_iter().rfind(|a| !a.starts_with("SIP/2.0 1"))?;
    let mut lines = last.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let names = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    assert!(
        !last.contains("Asterisk"),
        "the backend's software leaked: {last}"
    );
    Some((status, names))
}

#[test]
fn a_scanner_cannot_tell_users_apart_and_is_blocked() {
    require_lab_privileges();
    let lab = Lab::up("enum").expect("lab");
    let backend = SocketAddr::new(CALLEE.into(), 5060);
    let _pbx = Responder::start(&lab.callee, backend, pbx).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            ..Default::default()
        },
    )
    .expect("daemon");

    // An office behind one address registers 15 existing phones: challenged, never blocked.
    for (n, user) in (100..115).enumerate() {
        let answer = register(&lab.caller, CALLER, 6000 + n as u16, &user.to_string());
        assert!(answer.is_some_and(|(status, _)| status.starts_with("SIP/2.0 401")));
    }

    let existing = register(&lab.rogue, ROGUE, 7000, "150").expect("an answer");
    let missing = register(&lab.rogue, ROGUE, 7001, "admin").expect("an answer");
    assert_eq!(
        existing, missing,
        "an existing and a missing user answered differently"
    );
    let words = [
        "test",
        "guest",
        "operator",
        "info",
        "sales",
        "support",
        "root",
        "user",
        "1000",
        "office",
        "reception",
        "voip",
    ];
    let answered = words
        .iter()
        .enumerate()
        .map_while(|(n, user)| register(&lab.rogue, ROGUE, 7002 + n as u16, user))
        .count();
    // "admin" and 9 of the word list make 10 missing users: the 10th is answered, then nothing.
    assert_eq!(
        answered, 9,
        "the scanner got {answered} answers from its word list"
    );
    let blocks = daemon.blocks().expect("blocks");
    assert!(
        blocks
            .iter()
            .any(|b| b.address == IpAddr::V4(ROGUE) && b.reason == "scanner"),
        "{blocks:?}"
    );
    assert!(
        !blocks.iter().any(|b| b.address == IpAddr::V4(CALLER)),
        "the office was blocked: {blocks:?}"
    );
    let blocked: Vec<SourceBlocked> = daemon.events_of();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].detail, "enumerating users");
}
