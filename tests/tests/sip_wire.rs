//! The SIP wire layer on every message of the conformance corpus (`sbc_tests::conformance`):
//! each is sorted as its index says. No privileges needed.
use sbc::sip::inbound::{self, Inbound};
use sbc_tests::conformance::{ALL, Wire, corpus};

fn outcome(bytes: &[u8]) -> (Wire, String) {
    match inbound::datagram(bytes) {
        Inbound::Request(..) | Inbound::Response(..) => (Wire::Accept, String::new()),
        Inbound::Refuse { rejection, .. } => (Wire::Refuse(rejection.status), rejection.reason),
        Inbound::Drop(why) => (Wire::Drop, why),
        Inbound::KeepAlive => (Wire::Drop, "keep-alive".into()),
    }
}

#[test]
fn every_message_is_sorted_as_its_index_says() {
    let mut failures = Vec::new();
    for set in ALL {
        set.assert_complete();
        for case in set.cases {
            let (got, detail) = outcome(&set.read(case));
            if got != case.wire {
                failures.push(format!(
                    "{}: expected {:?}, got {got:?} {detail}",
                    case.file, case.wire
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
                        !["c=", "m=", "a=rtcp:", "o="]
                            .iter()
                            .any(|rewritten| l.starts_with(rewritten))
                    })
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(
                kept(&before),
                kept(&after),
                "{}: lines other than c=/o=/m=/a=rtcp changed",
                path.display()
            );
            // The origin names the anchor once a stream is anchored; an odd one stays.
            let origins = |text: &str| -> Vec<String> {
                text.lines()
                    .filter(|l| l.starts_with("o="))
                    .map(str::to_owned)
                    .collect()
            };
            for (old, new) in origins(&before).iter().zip(origins(&after)) {
                let anchored = anchors.iter().any(Option::is_some);
                assert!(
                    new == *old || (anchored && new.ends_with(" IN IP4 198.18.2.1")),
                    "{}: origin {old:?} became {new:?}",
                    path.display()
                );
            }
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
