//! The wire layer on the RFC 4475 torture messages and RFC 5118 IPv6 messages
//! (`../shared/conformance`): each is sorted as its INDEX.tsv says a proxy must handle it.
//! Application-level answers that need routing (483 for Max-Forwards 0, dropping a response
//! to a broadcast Via) belong to the proxy and are tested there.
use std::path::PathBuf;

use sbc::sip::inbound::{self, Inbound};

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Accept,
    Refuse(u16),
    Drop,
}

fn corpus(dir: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance")
        .join(dir);
    assert!(
        path.is_dir(),
        "the conformance corpus is missing at {} (the shared/ folder beside the repository)",
        path.display()
    );
    path
}

fn outcome(bytes: &[u8]) -> Expect {
    match inbound::datagram(bytes) {
        Inbound::Request(..) | Inbound::Response(..) => Expect::Accept,
        Inbound::Refuse { rejection, .. } => Expect::Refuse(rejection.status),
        Inbound::Drop(_) | Inbound::KeepAlive => Expect::Drop,
    }
}

/// Checks every file listed in `index_dir`'s INDEX.tsv, read from `files_dir` with `suffix`.
fn run(index_dir: &str, files_dir: &str, suffix: &str, expectations: &[(&str, Expect)]) {
    let index = std::fs::read_to_string(corpus(index_dir).join("INDEX.tsv")).unwrap();
    let dir = corpus(files_dir);
    let listed: Vec<&str> = index
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .collect();
    let mut failures = Vec::new();
    for (file, expected) in expectations {
        assert!(listed.contains(file), "{file} is not in the index");
        let name = format!("{file}{suffix}");
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        let got = outcome(&bytes);
        if &got != expected {
            let detail = match inbound::datagram(&bytes) {
                Inbound::Refuse { rejection, .. } => rejection.reason,
                Inbound::Drop(why) => why,
                _ => String::new(),
            };
            failures.push(format!(
                "{name}: expected {expected:?}, got {got:?} {detail}"
            ));
        }
    }
    let unchecked: Vec<_> = listed
        .iter()
        .filter(|f| !expectations.iter().any(|(e, _)| e == *f) && **f != "test.dat")
        .collect();
    assert!(
        unchecked.is_empty(),
        "index entries without an expectation: {unchecked:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rfc4475_torture_messages() {
    use Expect::*;
    run(
        "rfc4475",
        "rfc4475",
        "",
        &[
            // 3.1.1: valid, must be accepted.
            ("wsinv.dat", Accept),
            ("intmeth.dat", Accept),
            ("esc01.dat", Accept),
            ("escnull.dat", Accept),
            ("esc02.dat", Accept),
            ("lwsdisp.dat", Accept),
            ("longreq.dat", Accept),
            ("dblreq.dat", Accept),
            ("semiuri.dat", Accept),
            ("transports.dat", Accept),
            ("mpart01.dat", Accept),
            ("unreason.dat", Accept),
            ("noreason.dat", Accept),
            // 3.1.2: invalid.
            ("badinv01.dat", Refuse(400)),
            ("clerr.dat", Refuse(400)),
            ("ncl.dat", Refuse(400)),
            ("scalar02.dat", Refuse(400)),
            ("scalarlg.dat", Drop),
            ("quotbal.dat", Refuse(400)),
            ("ltgtruri.dat", Refuse(400)),
            ("lwsruri.dat", Refuse(400)),
            ("lwsstart.dat", Refuse(400)),
            ("trws.dat", Refuse(400)),
            ("escruri.dat", Refuse(400)),
            // A bad Date does not matter to a proxy: ignored, as the RFC allows.
            ("baddate.dat", Accept),
            ("regbadct.dat", Refuse(400)),
            ("badaspec.dat", Refuse(400)),
            ("baddn.dat", Refuse(400)),
            ("badvers.dat", Refuse(505)),
            ("mismatch01.dat", Refuse(400)),
            ("mismatch02.dat", Refuse(400)),
            ("bigcode.dat", Drop),
            // 3.2-3.4: they parse; the semantics are answered by the proxy or the endpoint.
            ("badbranch.dat", Accept),
            ("insuf.dat", Refuse(400)),
            ("unkscm.dat", Refuse(416)),
            ("novelsc.dat", Refuse(416)),
            ("unksm2.dat", Accept),
            ("bext01.dat", Refuse(420)),
            ("invut.dat", Accept),
            ("regaut01.dat", Accept),
            ("multi01.dat", Refuse(400)),
            ("mcl01.dat", Drop),
            ("bcast.dat", Accept),
            ("zeromf.dat", Accept),
            ("cparam01.dat", Accept),
            ("cparam02.dat", Accept),
            ("regescrt.dat", Accept),
            ("sdp01.dat", Accept),
            ("inv2543.dat", Accept),
        ],
    );
}

#[test]
fn rfc5118_ipv6_messages() {
    use Expect::*;
    run(
        "rfc5118",
        "rfc5118-wire",
        ".sip",
        &[
            ("ipv6-good", Accept),
            ("ipv6-bad", Refuse(400)),
            ("port-ambiguous", Accept),
            ("port-unambiguous", Accept),
            ("via-received-param-with-delim", Accept),
            ("via-received-param-no-delim", Accept),
            ("ipv6-in-sdp", Accept),
            ("mult-ip-in-header", Accept),
            ("mult-ip-in-sdp", Accept),
            ("ipv4-mapped-ipv6", Accept),
            ("ipv6-bug-abnf-3-colons", Accept),
            ("ipv6-correct-abnf-2-colons", Accept),
        ],
    );
}

#[test]
fn the_refusals_can_be_answered() {
    // A 400 needs the request's Via, From, To, Call-ID and CSeq: every refused torture message
    // that has them must come back with its parsed headers.
    for file in [
        "lwsstart.dat",
        "trws.dat",
        "badinv01.dat",
        "clerr.dat",
        "ncl.dat",
        "scalar02.dat",
        "badvers.dat",
        "bext01.dat",
        "unkscm.dat",
    ] {
        let bytes = std::fs::read(corpus("rfc4475").join(file)).unwrap();
        match inbound::datagram(&bytes) {
            Inbound::Refuse {
                message: Some(m), ..
            } => {
                assert!(
                    m.header("via").is_some() && m.header("call-id").is_some(),
                    "{file}"
                )
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn sdp_of_every_message_is_read_and_rewritten_line_for_line() {
    use sbc::{
        sdp::{self, Anchor},
        sip::{Message, framing},
    };
    let mut rewritten = 0;
    for dir in ["rfc4475", "rfc5118-wire"] {
        for entry in std::fs::read_dir(corpus(dir)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let Ok(Some(framed)) = framing::datagram(&bytes) else {
                continue;
            };
            let Ok(message) = Message::parse(framed.to_vec()) else {
                continue;
            };
            if !message.has_sdp() {
                continue;
            }
            // Bad SDP is an error, never a panic; good SDP is rewritten line for line.
            let Ok(streams) = sdp::streams(message.body()) else {
                continue;
            };
            let anchors: Vec<Option<Anchor>> = streams
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    (s.port != 0).then_some(Anchor {
                        rtp_port: 20000 + 2 * i as u16,
                        rtcp_port: None,
                    })
                })
                .collect();
            let out =
                sdp::rewrite(message.body(), "198.18.2.1".parse().unwrap(), &anchors).unwrap();
            let (before, after) = (
                String::from_utf8_lossy(message.body()),
                String::from_utf8(out).unwrap(),
            );
            let kept = |text: &str| -> Vec<String> {
                text.lines()
                    .filter(|l| {
                        !l.starts_with("c=") && !l.starts_with("m=") && !l.starts_with("a=rtcp:")
                    })
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(
                kept(&before),
                kept(&after),
                "{}: lines other than c=/m=/a=rtcp changed",
                path.display()
            );
            assert_eq!(
                sdp::streams(after.as_bytes()).unwrap().len(),
                streams.len(),
                "{}",
                path.display()
            );
            for (stream, anchor) in sdp::streams(after.as_bytes()).unwrap().iter().zip(&anchors) {
                if let Some(anchor) = anchor {
                    assert_eq!(stream.port, anchor.rtp_port, "{}", path.display());
                    if !stream.on_hold() {
                        assert_eq!(
                            stream.address,
                            Some("198.18.2.1".parse().unwrap()),
                            "{}",
                            path.display()
                        );
                    }
                }
            }
            rewritten += 1;
        }
    }
    assert!(
        rewritten >= 8,
        "only {rewritten} corpus messages carried SDP that was rewritten"
    );
}
