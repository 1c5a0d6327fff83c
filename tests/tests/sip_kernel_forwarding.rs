//! The XDP program forwarding SIP of established calls, under BPF_PROG_TEST_RUN: the
//! differential corpus (`sbc_common::sip_forward::corpus`, which the daemon's tests hold the
//! proxy core to) fed to the real program with the maps the daemon writes for its call. Every
//! request marked `Forward` must leave the kernel byte for byte as the proxy sends it, from our
//! listener on the other side to the other party, with valid checksums; every other one must
//! go up unchanged, counted under its reason.
//!
//! The program runs in a namespace of its own whose two interfaces hold the corpus's listener
//! addresses, with permanent neighbour entries for both parties (`xdp_fixture::corpus_*`).
use std::net::Ipv4Addr;

use sbc_common::{
    DialogEnded, Reason,
    call_id::call_id_hash,
    sip_forward::{
        ForwardScratch,
        corpus::{self, Expect, Sender, Topology},
        forward,
    },
};
use sbc_tests::{
    frames::{UdpFrame, internet_checksum},
    netns,
    privileges::require_lab_privileges,
    xdp_fixture::*,
};

const SEED: u64 = 0x5eed;

fn address((ip, _): ([u8; 4], u16)) -> Ipv4Addr {
    Ipv4Addr::from(ip)
}

/// What the kernel must send for a forwarded case: the proxy's bytes (its userspace run,
/// which the daemon's tests hold to the proxy core) from our listener on the other side, to
/// the other party (a request's next hop, or the party whose request a response answers), a
/// fresh TTL and every checksum computed in full.
fn expected_forward(case: &corpus::Case, topology: Topology, sent: &UdpFrame) -> Vec<u8> {
    let mut scratch = ForwardScratch::zeroed();
    let len = forward(
        case.message.as_bytes(),
        &corpus::dialog(SEED, topology),
        &corpus::selves(),
        case.arrival(SEED),
        &mut scratch,
    )
    .expect("the corpus forwards it");
    let (out_mac, next_mac, out_listener) = match case.sender {
        Sender::Carrier => (CORPUS_PRIVATE_MAC, CORPUS_BACKEND_MAC, corpus::PRIVATE),
        Sender::Backend => (CORPUS_PUBLIC_MAC, CORPUS_CARRIER_MAC, corpus::PUBLIC),
    };
    let target = case.sender.target();
    UdpFrame {
        eth_dst: next_mac,
        eth_src: out_mac,
        src: address(out_listener).into(),
        dst: address(target).into(),
        sport: out_listener.1,
        dport: target.1,
        ttl: 64,
        payload: scratch.out.bytes[..len].to_vec(),
        ..sent.clone()
    }
    .bytes()
}

/// Runs `cases` through the program, whose dialogs map holds the call as `topology` makes
/// it; what went otherwise than the case expects, by case.
fn run_cases(program: &mut Program, cases: &[corpus::Case], topology: Topology) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let sent = corpus_frame(case);
        let before = program.reasons();
        let (action, out) = program.run(&sent.bytes(), corpus_arrival(case.sender).0);
        let after = program.reasons();
        let counted: Vec<Reason> = Reason::ALL
            .iter()
            .copied()
            .filter(|r| after[*r as usize] > before[*r as usize])
            .collect();
        let outcome = match case.expect {
            Expect::Forward => {
                let expected = expected_forward(case, topology, &sent);
                let forwarded = if case.is_response() {
                    Reason::ForwardSipResponse
                } else {
                    Reason::ForwardSipRequest
                };
                if action != XDP_REDIRECT || counted != [forwarded] {
                    Some(format!("forwarded? action {action}, counted {counted:?}"))
                } else if out != expected {
                    Some(format!(
                        "different frame\n  kernel:   {:?}\n  expected: {:?}",
                        String::from_utf8_lossy(&out[42..]),
                        String::from_utf8_lossy(&expected[42..])
                    ))
                } else {
                    check_sums(&out)
                }
            }
            Expect::Pass(reason) => (action != XDP_PASS
                || counted != [reason]
                || out != sent.bytes())
            .then(|| {
                format!("expected {reason:?} up unchanged: action {action}, counted {counted:?}")
            }),
        };
        if let Some(why) = outcome {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    failures
}

/// Every case of the corpus through the kernel: forwarded byte for byte, or up for its reason.
#[test]
fn the_kernel_forwards_the_corpus_as_the_proxy_does() {
    require_lab_privileges();
    let fixture = corpus_fixture();
    netns::enter(&fixture.sbc.name).unwrap();
    let mut program = corpus_program(SEED);
    let failures = run_cases(&mut program, corpus::CASES, Topology::Open);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The kernel kept count of what it forwarded, per direction, and the highest CSeq; the
    // first BYE answered ended the dialog, recorded and reported once.
    let dialog = program.dialog(call_id_hash(corpus::CALL_ID.as_bytes(), SEED));
    let forwarded = |leg: usize, responses: bool| {
        corpus::CASES
            .iter()
            .filter(|c| c.expect == Expect::Forward && c.is_response() == responses)
            .filter(|c| c.arrival(SEED).leg == leg)
            .count() as u64
    };
    for leg in 0..2 {
        assert_eq!(
            dialog.legs[leg].requests,
            forwarded(leg, false),
            "leg {leg}"
        );
        assert_eq!(
            dialog.legs[leg].responses,
            forwarded(leg, true),
            "leg {leg}"
        );
    }
    let highest_caller_cseq = corpus::CASES
        .iter()
        .filter(|c| c.expect == Expect::Forward && !c.is_response())
        .filter(|c| c.arrival(SEED).leg == 0)
        .filter_map(|c| {
            let cseq = c.message.lines().find_map(|l| l.strip_prefix("CSeq: "))?;
            cseq.split(' ').next()?.parse::<u32>().ok()
        })
        .max();
    assert_eq!(
        Some(dialog.legs[0].cseq),
        highest_caller_cseq,
        "the highest CSeq the caller sent"
    );
    assert_eq!((dialog.ended.code, dialog.ended.by_leg), (200, 0));
    assert_ne!(dialog.ended.at_ns, 0);
    let ends = program.dialog_events();
    assert_eq!(
        ends,
        [DialogEnded {
            dialog: call_id_hash(corpus::CALL_ID.as_bytes(), SEED),
            end: dialog.ended,
        }]
    );
    // The call again, its backend hidden from the carrier (`[sip.hiding] topology`).
    let dialog_key = call_id_hash(corpus::CALL_ID.as_bytes(), SEED);
    program.set_dialog(dialog_key, corpus::dialog(SEED, Topology::Hidden));
    let failures = run_cases(&mut program, corpus::HIDDEN_CASES, Topology::Hidden);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Both checksums of a frame the kernel made verify in full.
fn check_sums(frame: &[u8]) -> Option<String> {
    if internet_checksum(0, &frame[14..34]) != 0 {
        return Some("bad IPv4 checksum".into());
    }
    let udp = &frame[34..];
    let pseudo: u32 = frame[26..34]
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum::<u32>()
        + 17
        + udp.len() as u32;
    (internet_checksum(pseudo, udp) != 0).then(|| "bad UDP checksum".into())
}
