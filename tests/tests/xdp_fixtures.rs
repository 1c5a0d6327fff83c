//! BPF_PROG_TEST_RUN fixtures: the kernel runs the real XDP program on crafted frames, with maps
//! filled as the daemon fills them, and every verdict, reason counter and output byte is checked.
//! Expected frames are built from scratch with checksums computed in full (`sbc_tests::frames`),
//! independently of the program's incremental updates.
//!
//! The program runs in a namespace of its own with two veth interfaces and permanent neighbour
//! entries, so `bpf_fib_lookup` answers deterministically.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use aya::programs::Xdp;
use sbc_common::{
    Block, Flow, GuardConfig, IpAddress, PacketLimit, Reason, SourceLimit, SourceRule,
    flow::{LEG_A, LEG_B, PeerMatch, STREAM_RTCP, STREAM_RTP},
    guard::{BLOCK_RATE, GUARD_ON, RULE_ALLOW, RULE_BLOCK, script},
    maps::XDP_PROGRAM,
};
use sbc_tests::{
    frames::{ETHERTYPE_ARP, PROTO_TCP, UdpFrame},
    netns,
    privileges::require_lab_privileges,
    xdp_fixture::*,
};

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    ingress: &'static str,
    action: u32,
    reason: Reason,
    /// The exact frame expected out; `None`: the input, unchanged.
    expect: Option<Vec<u8>>,
}

fn rtp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> UdpFrame {
    UdpFrame::rtp(src, dst)
}

/// What the relay must emit for `input`: same payload, IP ID and flags, new addresses, ports
/// and MACs, TTL one less, checksums recomputed from scratch.
fn relayed(
    input: &UdpFrame,
    from: (impl Into<IpAddr>, u16),
    to: (impl Into<IpAddr>, u16),
    macs: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    UdpFrame {
        eth_src: macs.0,
        eth_dst: macs.1,
        src: from.0.into(),
        sport: from.1,
        dst: to.0.into(),
        dport: to.1,
        ttl: input.ttl - 1,
        ..input.clone()
    }
    .bytes()
}

fn cases() -> Vec<Case> {
    let media_in = rtp((CALLER, 40000), (PUBLIC, 20000));
    let rtcp_in = UdpFrame {
        payload: vec![
            0x80, 200, 0, 6, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        ..rtp((CALLER, 40001), (PUBLIC, 20001))
    };
    let no_checksum = UdpFrame {
        udp_checksum: false,
        ..media_in.clone()
    };
    let hairpin_in = rtp((CALLEE, 50002), (PRIVATE, 30002));
    let provisional_in = rtp((CALLER, 40040), (PUBLIC, 20040));
    let mut vlan = media_in.clone();
    vlan.vlans = vec![100];
    let mut vlan_foreign = rtp((ROGUE, 40000), (PUBLIC, 20000));
    vlan_foreign.vlans = vec![100];
    let mut stacked = media_in.clone();
    stacked.vlans = vec![100, 200];

    let base = media_in.bytes();
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = base.clone();
        edit(&mut frame);
        frame
    };
    let ethertype = |t: u16| with(&|f: &mut Vec<u8>| f[12..14].copy_from_slice(&t.to_be_bytes()));

    vec![
        Case {
            name: "RTP of a latched flow is rewritten and redirected to the private interface",
            expect: Some(relayed(
                &media_in,
                (PRIVATE, 30000),
                (CALLEE, 50000),
                (PRIV_MAC, CALLEE_MAC),
            )),
            frame: media_in.bytes(),
            ingress: "pub0",
            action: XDP_REDIRECT,
            reason: Reason::ForwardRedirect,
        },
        Case {
            name: "RTCP on port + 1 is relayed the same way",
            expect: Some(relayed(
                &rtcp_in,
                (PRIVATE, 30001),
                (CALLEE, 50001),
                (PRIV_MAC, CALLEE_MAC),
            )),
            frame: rtcp_in.bytes(),
            ingress: "pub0",
            action: XDP_REDIRECT,
            reason: Reason::ForwardRedirect,
        },
        Case {
            name: "a zero UDP checksum stays zero",
            expect: Some(relayed(
                &no_checksum,
                (PRIVATE, 30000),
                (CALLEE, 50000),
                (PRIV_MAC, CALLEE_MAC),
            )),
            frame: no_checksum.bytes(),
            ingress: "pub0",
            action: XDP_REDIRECT,
            reason: Reason::ForwardRedirect,
        },
        Case {
            name: "a flow whose next hop is on the ingress interface goes back out with XDP_TX",
            expect: Some(relayed(
                &hairpin_in,
                (PRIVATE, 30004),
                (HAIRPIN_PEER, 50004),
                (PRIV_MAC, HAIRPIN_MAC),
            )),
            frame: hairpin_in.bytes(),
            ingress: "priv0",
            action: XDP_TX,
            reason: Reason::ForwardTx,
        },
        Case {
            name: "a port without a flow goes up",
            frame: rtp((CALLER, 40000), (PUBLIC, 29998)).bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNoFlow,
            expect: None,
        },
        Case {
            name: "a foreign source on a latched flow is dropped",
            frame: rtp((ROGUE, 40000), (PUBLIC, 20000)).bytes(),
            ingress: "pub0",
            action: XDP_DROP,
            reason: Reason::DropForeignSource,
            expect: None,
        },
        Case {
            name: "the right host from another port is foreign too",
            frame: rtp((CALLER, 40002), (PUBLIC, 20000)).bytes(),
            ingress: "pub0",
            action: XDP_DROP,
            reason: Reason::DropForeignSource,
            expect: None,
        },
        Case {
            name: "a provisional peer's RTP is relayed from its first packet",
            expect: Some(relayed(
                &provisional_in,
                (PRIVATE, 30040),
                (CALLEE, 50040),
                (PRIV_MAC, CALLEE_MAC),
            )),
            frame: provisional_in.bytes(),
            ingress: "pub0",
            action: XDP_REDIRECT,
            reason: Reason::ForwardRedirect,
        },
        Case {
            name: "another source while the peer is provisional goes up (the daemon judges it)",
            frame: rtp((ROGUE, 40040), (PUBLIC, 20040)).bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNotLatched,
            expect: None,
        },
        Case {
            name: "a flow that has not latched goes up (userspace latches it)",
            frame: rtp((CALLER, 40010), (PUBLIC, 20010)).bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNotLatched,
            expect: None,
        },
        Case {
            name: "a next hop without a neighbour entry goes up (the kernel resolves it)",
            frame: rtp((CALLER, 40020), (PUBLIC, 20020)).bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNoNeighbour,
            expect: None,
        },
        Case {
            name: "a flow whose other leg has no peer yet goes up",
            frame: rtp((CALLER, 40030), (PUBLIC, 20030)).bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNoDestination,
            expect: None,
        },
        Case {
            name: "TTL 1 goes up",
            frame: UdpFrame {
                ttl: 1,
                ..media_in.clone()
            }
            .bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassTtlExpired,
            expect: None,
        },
        Case {
            name: "a VLAN tag without room for its header is truncated Ethernet",
            frame: with(&|f| {
                f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                f.truncate(16);
            }),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassTruncatedEthernet,
            expect: None,
        },
        Case {
            name: "a frame cut inside the IPv4 header",
            frame: with(&|f| f.truncate(14 + 10)),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassTruncatedIpv4,
            expect: None,
        },
        Case {
            name: "an IPv4 total length beyond the frame",
            frame: with(&|f| f.truncate(f.len() - 20)),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassTruncatedIpv4,
            expect: None,
        },
        Case {
            name: "IP version 6 in an IPv4 frame",
            frame: with(&|f| f[14] = 0x65),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassBadIpv4,
            expect: None,
        },
        Case {
            name: "IPv4 options",
            frame: with(&|f| {
                f[14] = 0x46;
                f.splice(34..34, [1, 1, 1, 0]);
                let total = u16::from_be_bytes([f[16], f[17]]) + 4;
                f[16..18].copy_from_slice(&total.to_be_bytes());
            }),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassIpv4Options,
            expect: None,
        },
        Case {
            name: "a first fragment (more fragments)",
            frame: with(&|f| f[20] = 0x20),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassFragment,
            expect: None,
        },
        Case {
            name: "a later fragment (offset)",
            frame: with(&|f| f[21] = 0x10),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassFragment,
            expect: None,
        },
        Case {
            name: "TCP",
            frame: UdpFrame {
                protocol: PROTO_TCP,
                ..media_in.clone()
            }
            .bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNotUdp,
            expect: None,
        },
        Case {
            name: "a UDP header cut short",
            frame: with(&|f| {
                f.truncate(34 + 4);
                f[16..18].copy_from_slice(&24u16.to_be_bytes());
            }),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassTruncatedUdp,
            expect: None,
        },
        Case {
            name: "a UDP length beyond the IPv4 payload",
            frame: with(&|f| f[38..40].copy_from_slice(&4000u16.to_be_bytes())),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassTruncatedUdp,
            expect: None,
        },
        Case {
            name: "media of a known flow in a VLAN-tagged frame goes up (relayed in userspace)",
            frame: vlan.bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassVlanTagged,
            expect: None,
        },
        Case {
            name: "a VLAN-tagged foreign source is still dropped",
            frame: vlan_foreign.bytes(),
            ingress: "pub0",
            action: XDP_DROP,
            reason: Reason::DropForeignSource,
            expect: None,
        },
        Case {
            name: "two VLAN tags",
            frame: stacked.bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassStackedVlan,
            expect: None,
        },
        Case {
            name: "ARP",
            frame: ethertype(ETHERTYPE_ARP),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNotIp,
            expect: None,
        },
    ]
}

/// Runs each case through the program and fails with every case whose action, counted reason
/// (one counter moved by one, no other) or output frame is not the expected one.
fn assert_cases_pass(program: &mut Program, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let before = program.reasons();
        let (action, out) = program.run(&case.frame, case.ingress);
        let after = program.reasons();
        let expected_out = case.expect.clone().unwrap_or_else(|| case.frame.clone());
        let mut problems = Vec::new();
        if action != case.action {
            problems.push(format!("action {action}, expected {}", case.action));
        }
        for (i, reason) in Reason::ALL.iter().enumerate() {
            let delta = after[i] - before[i];
            let expected = u64::from(*reason == case.reason);
            if delta != expected {
                problems.push(format!(
                    "counter {} moved by {delta}, expected {expected}",
                    reason.name()
                ));
            }
        }
        if out != expected_out {
            problems.push(format!(
                "output differs\n   got      {}\n   expected {}",
                hex(&out),
                hex(&expected_out)
            ));
        }
        if !problems.is_empty() {
            failures.push(format!("{}:\n  {}", case.name, problems.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn xdp_verdicts_counters_and_output_bytes() {
    require_lab_privileges();
    let fixture = fixture();
    netns::enter(&fixture.sbc.name).unwrap();
    let mut program = Program::load();
    program.allow_egress("pub0");
    program.allow_egress("priv0");
    let latched = |local, peer, send_from, send_to, stream| FlowSpec {
        local,
        peer: Some(peer),
        send_from,
        send_to: Some(send_to),
        leg: LEG_A,
        stream,
    };
    for spec in [
        latched(
            (PUBLIC, 20000),
            (CALLER, 40000),
            (PRIVATE, 30000),
            (CALLEE, 50000),
            STREAM_RTP,
        ),
        latched(
            (PUBLIC, 20001),
            (CALLER, 40001),
            (PRIVATE, 30001),
            (CALLEE, 50001),
            STREAM_RTCP,
        ),
        FlowSpec {
            leg: LEG_B,
            ..latched(
                (PRIVATE, 30002),
                (CALLEE, 50002),
                (PRIVATE, 30004),
                (HAIRPIN_PEER, 50004),
                STREAM_RTP,
            )
        },
        FlowSpec {
            peer: None,
            ..latched(
                (PUBLIC, 20010),
                (CALLER, 40010),
                (PRIVATE, 30010),
                (CALLEE, 50010),
                STREAM_RTP,
            )
        },
        latched(
            (PUBLIC, 20020),
            (CALLER, 40020),
            (PRIVATE, 30020),
            (UNRESOLVED, 50020),
            STREAM_RTP,
        ),
        FlowSpec {
            send_to: None,
            ..latched(
                (PUBLIC, 20030),
                (CALLER, 40030),
                (PRIVATE, 30030),
                (CALLEE, 50030),
                STREAM_RTP,
            )
        },
    ] {
        let (key, value) = flow(&spec);
        program.install(key, value);
    }
    // Latched while learning: a better-matching source may still replace the peer.
    let (provisional_key, mut provisional) = flow(&latched(
        (PUBLIC, 20040),
        (CALLER, 40040),
        (PRIVATE, 30040),
        (CALLEE, 50040),
        STREAM_RTP,
    ));
    provisional.latch(
        provisional.peer,
        provisional.peer_port,
        PeerMatch::SipSource,
        true,
    );
    program.install(provisional_key, provisional);

    assert_cases_pass(&mut program, cases());

    // Per-flow counters of port 20000: two packets relayed (with and without UDP checksum; the
    // TTL-1 and VLAN-tagged ones went up), their 172-byte payloads, three foreign sources.
    let stats = program.flow_stats(&key(PUBLIC, 20000));
    assert_eq!(stats.packets, 2, "{stats:?}");
    assert_eq!(stats.bytes, 2 * 172, "{stats:?}");
    assert_eq!(stats.foreign_dropped, 3, "{stats:?}");
    assert!(stats.last_seen_ns > 0, "{stats:?}");
}

/// IPv6 media: relayed in the kernel between IPv6 legs (hop limit one less, the UDP checksum
/// updated for 16-byte addresses), judged by source as IPv4 is, and sent up where the kernel
/// does not relay it (a leg of the other family, an extension header, the last hop). IPv6 SIP:
/// guarded as IPv4 is, a host limited as its /64.
#[test]
fn ipv6_media_and_sip_verdicts_and_output_bytes() {
    require_lab_privileges();
    let fixture = fixture();
    netns::enter(&fixture.sbc.name).unwrap();
    let mut program = Program::load();
    program.allow_egress("pub0");
    program.allow_egress("priv0");
    let latched = |local: u16, peer: u16, send_to: (IpAddr, u16)| FlowSpec::<IpAddr> {
        local: (PUBLIC6.into(), local),
        peer: Some((CALLER6.into(), peer)),
        send_from: match send_to.0 {
            IpAddr::V6(_) => (PRIVATE6.into(), local + 10_000),
            IpAddr::V4(_) => (PRIVATE.into(), local + 10_000),
        },
        send_to: Some(send_to),
        leg: LEG_A,
        stream: STREAM_RTP,
    };
    for spec in [
        latched(20000, 40000, (CALLEE6.into(), 50000)),
        // A caller over IPv6 to a backend over IPv4: the daemon's relay translates.
        latched(20002, 40002, (CALLEE.into(), 50002)),
        FlowSpec {
            peer: None,
            ..latched(20004, 40004, (CALLEE6.into(), 50004))
        },
    ] {
        let (key, value) = flow(&spec);
        program.install(key, value);
    }

    let media_in = rtp6((CALLER6, 40000), (PUBLIC6, 20000));
    let mut hop_by_hop = media_in.bytes();
    // Next header 0: a hop-by-hop options header comes before UDP.
    hop_by_hop[20] = 0;
    let mut icmpv6 = media_in.bytes();
    icmpv6[20] = 58;
    let cases = vec![
        Case {
            name: "IPv6 RTP of a latched flow is rewritten and redirected to the private interface",
            expect: Some(relayed(
                &media_in,
                (PRIVATE6, 30000),
                (CALLEE6, 50000),
                (PRIV_MAC, CALLEE_MAC),
            )),
            frame: media_in.bytes(),
            ingress: "pub0",
            action: XDP_REDIRECT,
            reason: Reason::ForwardRedirect,
        },
        Case {
            name: "a foreign IPv6 source on a latched flow is dropped",
            frame: rtp6((ROGUE6, 40000), (PUBLIC6, 20000)).bytes(),
            ingress: "pub0",
            action: XDP_DROP,
            reason: Reason::DropForeignSource,
            expect: None,
        },
        Case {
            name: "an IPv6 flow that has not latched goes up",
            frame: rtp6((CALLER6, 40004), (PUBLIC6, 20004)).bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNotLatched,
            expect: None,
        },
        Case {
            name: "media from an IPv6 leg to an IPv4 leg goes up to be translated",
            frame: rtp6((CALLER6, 40002), (PUBLIC6, 20002)).bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassFamilyTranslation,
            expect: None,
        },
        Case {
            name: "hop limit 1 goes up",
            frame: UdpFrame {
                ttl: 1,
                ..media_in.clone()
            }
            .bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassTtlExpired,
            expect: None,
        },
        Case {
            name: "an extension header before UDP goes up",
            frame: hop_by_hop,
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassIpv6Extension,
            expect: None,
        },
        Case {
            name: "ICMPv6 (neighbour discovery) goes up as not UDP",
            frame: icmpv6,
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNotUdp,
            expect: None,
        },
        Case {
            name: "a port without a flow goes up",
            frame: rtp6((CALLER6, 40000), (PUBLIC6, 29998)).bytes(),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassNoFlow,
            expect: None,
        },
    ];
    assert_cases_pass(&mut program, cases);
    let stats = program.flow_stats(&key(PUBLIC6, 20000));
    assert_eq!((stats.packets, stats.foreign_dropped), (1, 1), "{stats:?}");

    // SIP to a listener over IPv6: the guard's decision, an IPv6 host limited as its /64 (it
    // may send from any address of it), a known dialog's SIP sent up to the daemon.
    program.listen_sip(key(PUBLIC6, SIP_PORT));
    program.configure_guard(script::config(SEED));
    program.add_dialog("known-v6@example", SEED);
    let from = |host: &str| -> IpAddr { host.parse().unwrap() };
    let options = |host: &str| {
        sip_datagram(
            (from(host), PUBLIC6.into()),
            "OPTIONS",
            "Call-ID: ood-v6@example",
        )
    };
    let burst = script::config(SEED).default_limit.packets.burst;
    let mut cases: Vec<Case> = (0..burst)
        .map(|host| Case {
            name: "IPv6 SIP within its source's limit",
            frame: options(&format!("2001:db8:66:1::{:x}", host + 1)),
            ingress: "pub0",
            action: XDP_PASS,
            reason: Reason::PassSip,
            expect: None,
        })
        .collect();
    cases.push(Case {
        name: "another address of the same /64 is the same source, over its limit",
        frame: options("2001:db8:66:1:ffff::9"),
        ingress: "pub0",
        action: XDP_DROP,
        reason: Reason::DropSipRateLimited,
        expect: None,
    });
    cases.push(Case {
        name: "another /64 is another source",
        frame: options("2001:db8:66:2::1"),
        ingress: "pub0",
        action: XDP_PASS,
        reason: Reason::PassSip,
        expect: None,
    });
    cases.push(Case {
        name: "a known dialog's SIP over IPv6 goes up to the daemon (the kernel forwards IPv4)",
        frame: sip_datagram(
            (from("2001:db8:66:1::1"), PUBLIC6.into()),
            "BYE",
            "Call-ID: known-v6@example",
        ),
        ingress: "pub0",
        action: XDP_PASS,
        reason: Reason::PassSipIpv6InDialog,
        expect: None,
    });
    assert_cases_pass(&mut program, cases);
}

fn rtp6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16)) -> UdpFrame {
    UdpFrame::rtp(src, dst)
}

const SIP_PORT: u16 = 5060;
const SEED: u64 = 0x5eed;
const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);
const TRUNK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const BLOCKLISTED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
/// A PBX allowlisted with a generous packet rate and one INVITE at a time.
const PBX: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);

fn sip_frame(src: Ipv4Addr, call_id_header: &str) -> Vec<u8> {
    sip_request(src, "OPTIONS", call_id_header)
}

fn sip_request(src: Ipv4Addr, method: &str, call_id_header: &str) -> Vec<u8> {
    sip_datagram((src.into(), PUBLIC.into()), method, call_id_header)
}

/// A SIP request from `src` to our listener at `dst` (of one family).
fn sip_datagram((src, dst): (IpAddr, IpAddr), method: &str, call_id_header: &str) -> Vec<u8> {
    let host = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let (via, sbc) = (host(src), host(dst));
    let text = format!(
        "{method} sip:sbc@{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {via}:5060;branch=z9hG4bK1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@{via}>;tag=1\r\nTo: <sip:sbc@{sbc}>\r\n\
         {call_id_header}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    UdpFrame {
        payload: text.into_bytes(),
        ..UdpFrame::rtp((src, 5060), (dst, SIP_PORT))
    }
    .bytes()
}

/// The SIP guard on crafted datagrams: each verdict and reason, in the order the checks apply,
/// and the dynamic block a source earns by exceeding its limit.
#[test]
fn sip_guard_verdicts_and_dynamic_blocks() {
    require_lab_privileges();
    let fixture = fixture();
    netns::enter(&fixture.sbc.name).unwrap();
    let mut program = Program::load();
    program.listen_sip(key(PUBLIC, SIP_PORT));
    let options = |src| sip_frame(src, "Call-ID: ood-1@198.18.1.2");
    let mut failures = Vec::new();
    let mut expect = |program: &mut Program, name: &str, frame: &[u8], action, reason: Reason| {
        let before = program.reasons();
        let (got, _) = program.run(frame, "pub0");
        let moved = program.reasons()[reason as usize] - before[reason as usize];
        if got != action || moved != 1 {
            failures.push(format!(
                "{name}: action {got} (expected {action}), {} moved by {moved}",
                reason.name()
            ));
        }
    };

    // With no configuration the guard lets everything up.
    expect(
        &mut program,
        "unguarded",
        &options(ROGUE),
        XDP_PASS,
        Reason::PassSipUnguarded,
    );

    program.configure_guard(GuardConfig {
        default_limit: SourceLimit {
            packets: PacketLimit { rate: 1, burst: 2 },
            invites: PacketLimit::UNLIMITED,
        },
        block_after_drops: 3,
        flags: GUARD_ON,
        block_ns: 3_600_000_000_000,
        dialog_seed: SEED,
    });
    program.add_rule(
        TRUNK,
        32,
        SourceRule {
            action: RULE_ALLOW,
            limit: SourceLimit {
                packets: PacketLimit { rate: 1, burst: 4 },
                invites: PacketLimit::UNLIMITED,
            },
        },
    );
    program.add_rule(
        PBX,
        32,
        SourceRule {
            action: RULE_ALLOW,
            limit: SourceLimit {
                packets: PacketLimit {
                    rate: 100,
                    burst: 100,
                },
                invites: PacketLimit { rate: 1, burst: 1 },
            },
        },
    );
    program.add_rule(
        BACKEND,
        32,
        SourceRule {
            action: RULE_ALLOW,
            limit: SourceLimit::UNLIMITED,
        },
    );
    program.add_rule(
        Ipv4Addr::new(192, 0, 2, 128),
        25,
        SourceRule {
            action: RULE_BLOCK,
            limit: SourceLimit::UNLIMITED,
        },
    );
    program.add_dialog("dialog-7@198.18.1.2", SEED);
    program.set_party(ROGUE, 1);

    // Other UDP to the SBC's address is none of the guard's business.
    let not_sip = UdpFrame {
        payload: b"x".to_vec(),
        ..rtp((ROGUE, 5060), (PUBLIC, 5070))
    }
    .bytes();
    expect(
        &mut program,
        "other port",
        &not_sip,
        XDP_PASS,
        Reason::PassNoFlow,
    );

    // The default limit: a burst of two, then drops.
    expect(
        &mut program,
        "burst 1",
        &options(ROGUE),
        XDP_PASS,
        Reason::PassSip,
    );
    expect(
        &mut program,
        "burst 2",
        &options(ROGUE),
        XDP_PASS,
        Reason::PassSip,
    );
    expect(
        &mut program,
        "over",
        &options(ROGUE),
        XDP_DROP,
        Reason::DropSipRateLimited,
    );
    // A known dialog from the limited source passes, in every spelling of the header.
    for header in [
        "Call-ID: dialog-7@198.18.1.2",
        "i:dialog-7@198.18.1.2",
        "CALL-id :  dialog-7@198.18.1.2",
    ] {
        expect(
            &mut program,
            header,
            &sip_frame(ROGUE, header),
            XDP_PASS,
            Reason::PassSipDialog,
        );
    }
    expect(
        &mut program,
        "unknown dialog",
        &sip_frame(ROGUE, "Call-ID: dialog-8@198.18.1.2"),
        XDP_DROP,
        Reason::DropSipRateLimited,
    );
    // The third drop within a second earns a block.
    expect(
        &mut program,
        "over 3",
        &options(ROGUE),
        XDP_DROP,
        Reason::DropSipRateLimited,
    );
    let rogue = IpAddress::from_ipv4(ROGUE.octets());
    let block = program
        .blocks()
        .get(&rogue, 0)
        .expect("a dynamic block for the source");
    assert_eq!(block.reason, BLOCK_RATE);
    expect(
        &mut program,
        "blocked",
        &options(ROGUE),
        XDP_DROP,
        Reason::DropSipBlocked,
    );
    expect(
        &mut program,
        "blocked, in dialog",
        &sip_frame(ROGUE, "i: dialog-7@198.18.1.2"),
        XDP_PASS,
        Reason::PassSipDialog,
    );
    // Once its call is over, a blocked source's in-dialog spelling is dropped unread.
    program.set_party(ROGUE, 0);
    expect(
        &mut program,
        "blocked, no longer a caller",
        &sip_frame(ROGUE, "i: dialog-7@198.18.1.2"),
        XDP_DROP,
        Reason::DropSipBlocked,
    );
    assert_eq!(program.blocks().get(&rogue, 0).unwrap().dropped, 2);
    // An expired block no longer applies (and the bucket has been refilling meanwhile).
    program
        .blocks()
        .insert(
            rogue,
            Block {
                until_ns: 1,
                ..block
            },
            0,
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    expect(
        &mut program,
        "block expired",
        &options(ROGUE),
        XDP_PASS,
        Reason::PassSip,
    );

    // Allowlisted sources: their own limit, never blocked; an unlimited one is not even scanned.
    for n in 1..=4 {
        expect(
            &mut program,
            &format!("trunk {n}"),
            &options(TRUNK),
            XDP_PASS,
            Reason::PassSip,
        );
    }
    for n in 0..4 {
        expect(
            &mut program,
            &format!("trunk over {n}"),
            &options(TRUNK),
            XDP_DROP,
            Reason::DropSipRateLimited,
        );
    }
    assert!(
        program
            .blocks()
            .get(&IpAddress::from_ipv4(TRUNK.octets()), 0)
            .is_err(),
        "an allowlisted source was blocked"
    );
    for _ in 0..5 {
        expect(
            &mut program,
            "backend",
            &options(BACKEND),
            XDP_PASS,
            Reason::PassSipUnlimited,
        );
    }
    // INVITEs that start calls have a rate of their own; other requests and the INVITEs of
    // known dialogs (re-INVITEs) do not spend it.
    let pbx_invite = |call_id: &str| sip_request(PBX, "INVITE", &format!("Call-ID: {call_id}"));
    expect(
        &mut program,
        "PBX INVITE",
        &pbx_invite("new-1@192.0.2.20"),
        XDP_PASS,
        Reason::PassSip,
    );
    expect(
        &mut program,
        "PBX INVITE over",
        &pbx_invite("new-2@192.0.2.20"),
        XDP_DROP,
        Reason::DropSipInviteRate,
    );
    expect(
        &mut program,
        "PBX re-INVITE",
        &pbx_invite("dialog-7@198.18.1.2"),
        XDP_PASS,
        Reason::PassSipDialog,
    );
    expect(
        &mut program,
        "PBX OPTIONS",
        &options(PBX),
        XDP_PASS,
        Reason::PassSip,
    );

    // A blocklisted range is dropped, known dialog or not.
    expect(
        &mut program,
        "blocklisted",
        &options(BLOCKLISTED),
        XDP_DROP,
        Reason::DropSipBlocklisted,
    );
    expect(
        &mut program,
        "blocklisted dialog",
        &sip_frame(BLOCKLISTED, "Call-ID: dialog-7@198.18.1.2"),
        XDP_DROP,
        Reason::DropSipBlocklisted,
    );
    // Garbage to the SIP port is limited like anything else out of dialog.
    let junk = UdpFrame {
        payload: vec![0xff; 1400],
        ..rtp((SCANNER, 5060), (PUBLIC, SIP_PORT))
    }
    .bytes();
    expect(&mut program, "junk", &junk, XDP_PASS, Reason::PassSip);

    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The guard's table of cases (`sbc_common::guard::script`), which the daemon's userspace
/// dataplane and the host's own test play too: the kernel reaches the same verdicts.
#[test]
fn the_xdp_program_plays_the_guard_script() {
    require_lab_privileges();
    let fixture = fixture();
    netns::enter(&fixture.sbc.name).unwrap();
    let mut program = Program::load();
    program.listen_sip(key(PUBLIC, SIP_PORT));
    program.configure_guard(script::config(SEED));
    for (network, prefix, action, limit) in script::RULES {
        let rule = SourceRule {
            action: *action,
            limit: *limit,
        };
        program.add_rule(Ipv4Addr::from(*network), u32::from(*prefix), rule);
    }
    program.add_dialog(script::KNOWN_CALL_ID, SEED);
    program.set_party(Ipv4Addr::from(script::KNOWN_CALLER), 1);
    let mut failures = Vec::new();
    for (n, step) in script::STEPS.iter().enumerate() {
        let source = Ipv4Addr::from(step.source);
        let frame = UdpFrame {
            payload: step.payload.to_vec(),
            ..rtp((source, 5060), (PUBLIC, SIP_PORT))
        }
        .bytes();
        let before = program.reasons()[step.reason as usize];
        let (action, _) = program.run(&frame, "pub0");
        let moved = program.reasons()[step.reason as usize] - before;
        let expected = if step.pass { XDP_PASS } else { XDP_DROP };
        if action != expected || moved != 1 {
            failures.push(format!(
                "step {n} ({}): action {action} (expected {expected}), {} moved by {moved}",
                step.what,
                step.reason.name()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Verifier stability: the program loads, and the work the verifier does on it stays far from
/// the kernel's limits (1 million processed instructions). A change that makes the verifier's
/// job explode fails here before it fails on an operator's kernel.
#[test]
fn verifier_cost_stays_within_budget() {
    require_lab_privileges();
    // About 130,500 today (103,500 before IPv6: its parser, relay and guard are paths of
    // their own, the guard's `bpf_loop` scans verified again from `sip_v6`; 96,000 before the
    // Request-URI was written from the dialog, for topology hiding), most of it the in-dialog scan (`bpf_loop` callback of some 8,500
    // instructions, verified once per state of its caller that reaches the loop and again
    // until its effect settles) and the assembly's word loops (a run's loop is followed
    // through each of its words: `RUN_BYTES` weighs here). Each such state multiplies the callback's cost, and a loop
    // inside a callback multiplies its paths: that is why the scans keep their state in map
    // memory, do one bounded piece of work per step, read a choice among candidates back
    // from memory before going on, and make numbers and texts without branching on their digits (1 million is
    // the kernel's limit; 600,000 on the way there).
    const VERIFIED_BUDGET: u32 = 140_000;
    // 157 KiB today: 135 KiB before IPv6 (its relay and guard), 127 KiB before the Request-URI written from the dialog (its sixteen
    // words are stored a byte at a time: BPF has no unaligned store LLVM will emit).
    const TRANSLATED_BUDGET_BYTES: u32 = 168 * 1024;
    let mut program = Program::load();
    let xdp: &mut Xdp = program
        .ebpf
        .program_mut(XDP_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    let info = xdp.info().expect("program info");
    let verified = info
        .verified_instruction_count()
        .expect("kernel reports verified instructions");
    let translated = info
        .size_translated()
        .expect("kernel reports the translated size");
    eprintln!(
        "sbc_xdp: {verified} instructions verified, {} translated",
        translated / 8
    );
    assert!(
        verified <= VERIFIED_BUDGET,
        "the verifier processed {verified} instructions"
    );
    assert!(
        translated <= TRANSLATED_BUDGET_BYTES,
        "the program grew to {translated} bytes"
    );
}

/// The relay remembers a flow's next hop for a moment instead of asking the FIB for every
/// packet: a neighbour change reaches the flow once the memo expires, a changed flow at once.
#[test]
fn next_hops_are_remembered_briefly_and_follow_changes() {
    require_lab_privileges();
    // The memo is per CPU: every run must see what the one before left there.
    stay_on_this_cpu();
    let fixture = fixture();
    netns::enter(&fixture.sbc.name).unwrap();
    let mut program = Program::load();
    program.allow_egress("priv0");
    let spec = |send_to| FlowSpec {
        local: (PUBLIC, 20000),
        peer: Some((CALLER, 40000)),
        send_from: (PRIVATE, 30000),
        send_to: Some(send_to),
        leg: LEG_A,
        stream: STREAM_RTP,
    };
    let (key, value) = flow(&spec((CALLEE, 50000)));
    program.install(key, value);
    let frame = rtp((CALLER, 40000), (PUBLIC, 20000)).bytes();
    let dst_mac = |program: &mut Program| {
        let (action, out) = program.run(&frame, "pub0");
        assert_eq!(action, XDP_REDIRECT);
        <[u8; 6]>::try_from(&out[..6]).unwrap()
    };
    assert_eq!(dst_mac(&mut program), CALLEE_MAC);

    let moved = [0x02, 0, 0, 0, 0x02, 0x99];
    fixture
        .sbc
        .ip(&[
            "neigh",
            "replace",
            &CALLEE.to_string(),
            "lladdr",
            &mac(moved),
            "dev",
            "priv0",
            "nud",
            "permanent",
        ])
        .unwrap();
    assert_eq!(dst_mac(&mut program), CALLEE_MAC, "remembered");
    std::thread::sleep(std::time::Duration::from_nanos(
        sbc_common::flow::NEXT_HOP_MEMO_NS + 100_000_000,
    ));
    assert_eq!(
        dst_mac(&mut program),
        moved,
        "looked up again after the memo"
    );

    // A flow re-aimed by the daemon (a re-INVITE) is looked up at once.
    let (key, value) = flow(&spec((HAIRPIN_PEER, 50004)));
    program.install(key, value);
    assert_eq!(dst_mac(&mut program), HAIRPIN_MAC);
}

/// Keeps the calling thread on the CPU it runs on (test runs execute on the caller's CPU).
fn stay_on_this_cpu() {
    // SAFETY: sched_getcpu has no preconditions; a zeroed cpu_set_t is empty and CPU_SET
    // writes within it; pid 0 is the calling thread.
    unsafe {
        let cpu = usize::try_from(libc::sched_getcpu()).expect("sched_getcpu");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The daemon rewrites flows while the program relays by them (a latch, a re-INVITE): a packet
/// is sent by the flow before or by the flow after, whole, or goes up unchanged
/// (`pass_flow_changing`), never by half of each.
#[test]
fn a_flow_rewritten_while_packets_arrive_is_never_used_half_written() {
    require_lab_privileges();
    let fixture = fixture();
    netns::enter(&fixture.sbc.name).unwrap();
    let mut program = Program::load();
    program.allow_egress("priv0");
    // Two flows that differ in every address and port they rewrite.
    let spec = |send_from, send_to| FlowSpec {
        local: (PUBLIC, 20000),
        peer: Some((CALLER, 40000)),
        send_from,
        send_to: Some(send_to),
        leg: LEG_A,
        stream: STREAM_RTP,
    };
    let one = spec((PRIVATE, 30000), (CALLEE, 50000));
    let other = spec((PUBLIC, 30002), (HAIRPIN_PEER, 50004));
    let (key, first) = flow(&one);
    let (_, second) = flow(&other);
    program.install(key, first);
    let mut publish = program.flow_writer(key);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut published = 0u64;
            while !stop.load(Ordering::Relaxed) && published < 2_000_000 {
                let flow = [second, first][published as usize % 2];
                // Each write a new generation, as the daemon's.
                publish(Flow {
                    generation: published as u16,
                    ..flow
                });
                published += 1;
            }
            published
        })
    };
    let frame = rtp((CALLER, 40000), (PUBLIC, 20000)).bytes();
    let rewritten = |spec: &FlowSpec| {
        let (from, to) = (spec.send_from, spec.send_to.unwrap());
        (from.0.octets(), to.0.octets(), from.1, to.1)
    };
    let (expected_one, expected_other) = (rewritten(&one), rewritten(&other));
    let before = program.reasons()[Reason::PassFlowChanging as usize];
    let (mut relayed, mut passed) = (0u64, 0u64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline && relayed + passed < 300_000 {
        let (action, out) = program.run(&frame, "pub0");
        match action {
            XDP_REDIRECT => {
                let seen = (
                    <[u8; 4]>::try_from(&out[26..30]).unwrap(),
                    <[u8; 4]>::try_from(&out[30..34]).unwrap(),
                    u16::from_be_bytes([out[34], out[35]]),
                    u16::from_be_bytes([out[36], out[37]]),
                );
                assert!(
                    seen == expected_one || seen == expected_other,
                    "relayed by a half-written flow: {seen:?}"
                );
                relayed += 1;
            }
            XDP_PASS => {
                assert_eq!(out, frame, "a packet passed up was changed");
                passed += 1;
            }
            other => panic!("verdict {other}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let published = writer.join().expect("the writer");
    let changing = program.reasons()[Reason::PassFlowChanging as usize] - before;
    eprintln!(
        "{published} publications; {relayed} relayed, {passed} passed up while the flow changed"
    );
    assert!(published > 1_000, "the flow was hardly rewritten");
    assert!(relayed > 1_000, "hardly anything relayed");
    assert_eq!(
        passed, changing,
        "every packet passed up is counted as such"
    );
}
