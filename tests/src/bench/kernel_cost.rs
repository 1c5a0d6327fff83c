//! The XDP program's own cost per packet: the kernel runs the real program (BPF_PROG_TEST_RUN)
//! many times on one frame, with maps filled as the daemon fills them, and reports the
//! average. This is the program alone, without the driver and the redirect that follow.
//!
//! A relayed frame is rewritten in place, so a repeated run would time the program on its own
//! output: those frames run once per call instead, and the kernel's per-call timing overhead
//! (one clock read, found by timing the unchanged pass-through frame both ways) is taken off.
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context as _, ensure};
use sbc_common::{
    Block, FlowKey, GuardConfig, IpAddress, PacketLimit, SourceLimit,
    flow::{LEG_A, STREAM_RTP},
    guard::{BLOCK_RATE, GUARD_ON},
    sip_forward::corpus,
};

use super::report::Measurement;
use crate::{
    frames::UdpFrame,
    netns, sip_probe,
    xdp_fixture::{
        CALLEE, CALLER, FlowSpec, PRIVATE, PUBLIC, Program, ROGUE, XDP_DROP, XDP_PASS,
        XDP_REDIRECT, corpus_fixture, corpus_frame, corpus_program, fixture, flow,
    },
};

const SECTION: &str = "In-kernel cost";
const SEED: u64 = 0x5eed;

/// One frame to time, and the verdict it must get (else the bench times the wrong path).
struct Case {
    subject: &'static str,
    frame: Vec<u8>,
    /// Where it arrives.
    interface: &'static str,
    verdict: u32,
    /// The program rewrites this frame in place: a repeated run would see its own output.
    rewritten: bool,
}

fn sip_frame(from: Ipv4Addr, call_id: &str) -> Vec<u8> {
    let local = SocketAddr::new(from.into(), 5060);
    let target = SocketAddr::new(PUBLIC.into(), 5060);
    UdpFrame {
        payload: sip_probe::invite(local, target, call_id),
        ..UdpFrame::rtp((from, 5060), (PUBLIC, 5060))
    }
    .bytes()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            subject: "RTP frame of a latched flow (relayed)",
            frame: UdpFrame::rtp((CALLER, 40000), (PUBLIC, 20000)).bytes(),
            interface: "pub0",
            verdict: XDP_REDIRECT,
            rewritten: true,
        },
        Case {
            subject: "UDP frame of no flow (passed)",
            interface: "pub0",
            frame: UdpFrame::rtp((CALLER, 40000), (PUBLIC, 9999)).bytes(),
            verdict: XDP_PASS,
            rewritten: false,
        },
        Case {
            subject: "SIP INVITE, new call (Call-ID scan, bucket)",
            frame: sip_frame(CALLER, "new-call-0123456789@198.18.1.2"),
            interface: "pub0",
            verdict: XDP_PASS,
            rewritten: false,
        },
        Case {
            subject: "SIP request of a known dialog",
            frame: sip_frame(CALLER, "known-call-0123456789@198.18.1.2"),
            interface: "pub0",
            verdict: XDP_PASS,
            rewritten: false,
        },
        Case {
            subject: "SIP INVITE from a blocked source with no call (dropped unread)",
            frame: sip_frame(ROGUE, "flood-0123456789@203.0.113.66"),
            interface: "pub0",
            verdict: XDP_DROP,
            rewritten: false,
        },
    ]
}

/// Nanoseconds per run for each case, `repeat` runs each: the relay and the guard in one
/// namespace, the forwarding of an established call's SIP in another (the corpus's, whose
/// messages name its addresses).
pub fn measure(repeat: u32) -> anyhow::Result<Vec<Measurement>> {
    let mut measurements = measure_relay_and_guard(repeat)?;
    measurements.extend(measure_forwarding(repeat)?);
    Ok(measurements)
}

fn measure_relay_and_guard(repeat: u32) -> anyhow::Result<Vec<Measurement>> {
    let fixture = fixture();
    let namespace = fixture.sbc.name.clone();
    std::thread::spawn(move || -> anyhow::Result<Vec<Measurement>> {
        netns::enter(&namespace)?;
        let mut program = Program::load();
        program.allow_egress("pub0");
        program.allow_egress("priv0");
        let (key, value) = flow(&FlowSpec {
            local: (PUBLIC, 20000),
            peer: Some((CALLER, 40000)),
            send_from: (PRIVATE, 30000),
            send_to: Some((CALLEE, 50000)),
            leg: LEG_A,
            stream: STREAM_RTP,
        });
        program.install(key, value);
        program.listen_sip(FlowKey::udp(
            IpAddress::from_ipv4(PUBLIC.octets()),
            5060u16.to_be(),
        ));
        program.configure_guard(never_limited());
        program.add_dialog("known-call-0123456789@198.18.1.2", SEED);
        program.set_party(CALLER, 1);
        let never_ends = Block {
            until_ns: u64::MAX,
            reason: BLOCK_RATE,
            ..Block::default()
        };
        program
            .blocks()
            .insert(IpAddress::from_ipv4(ROGUE.octets()), never_ends, 0)
            .context("blocking the flooding source")?;
        time_cases(&mut program, &cases(), repeat)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the test-run thread panicked"))?
    .context("timing the XDP program")
}

/// The guard's limits, for a source the runs never take every token of: the cost of taking
/// one, not of dropping.
fn never_limited() -> GuardConfig {
    GuardConfig {
        default_limit: SourceLimit {
            packets: PacketLimit {
                rate: 10_000_000,
                burst: 10_000_000,
            },
            invites: PacketLimit {
                rate: 10_000_000,
                burst: 10_000_000,
            },
        },
        block_after_drops: 0,
        flags: GUARD_ON,
        block_ns: 0,
        dialog_seed: SEED,
    }
}

/// The SIP of an established call (the differential corpus's): a request and a response
/// forwarded, and a request passed up (an SDP body is the daemon's).
fn measure_forwarding(repeat: u32) -> anyhow::Result<Vec<Measurement>> {
    let fixture = corpus_fixture();
    let namespace = fixture.sbc.name.clone();
    std::thread::spawn(move || -> anyhow::Result<Vec<Measurement>> {
        netns::enter(&namespace)?;
        let mut program = corpus_program(SEED);
        program.configure_guard(never_limited());
        let case = |name: &str| {
            corpus::CASES
                .iter()
                .find(|case| case.name == name)
                .expect("a corpus case")
        };
        let frame = |name: &str| corpus_frame(case(name)).bytes();
        let cases = [
            Case {
                subject: "SIP BYE of an established call, forwarded (SIPp's)",
                frame: frame("sipp_bye"),
                interface: "pub0",
                verdict: XDP_REDIRECT,
                rewritten: true,
            },
            Case {
                subject: "SIP 200 to a BYE, forwarded",
                frame: frame("backend_200_to_a_bye"),
                interface: "priv0",
                verdict: XDP_REDIRECT,
                rewritten: true,
            },
            Case {
                subject: "SIP re-INVITE with SDP of an established call (passed up)",
                frame: frame("reinvite_with_sdp"),
                interface: "pub0",
                verdict: XDP_PASS,
                rewritten: false,
            },
        ];
        time_cases(&mut program, &cases, repeat)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the test-run thread panicked"))?
    .context("timing the XDP program's SIP forwarding")
}

/// Times each case; frames the program rewrites run once per call, less the kernel's
/// per-call timing overhead (found by timing a frame that is not rewritten both ways).
fn time_cases(
    program: &mut Program,
    cases: &[Case],
    repeat: u32,
) -> anyhow::Result<Vec<Measurement>> {
    let runs = |program: &mut Program, case: &Case, repeated: bool| -> anyhow::Result<f64> {
        let (verdict, per_run) = if repeated {
            let (verdict, _, per_run) = program.run_repeated(&case.frame, case.interface, repeat);
            (verdict, per_run.as_nanos() as f64)
        } else {
            // The median of single runs: the mean would carry every interrupt that fell into
            // one of them, and one run is short enough for those to weigh.
            let mut verdict = 0;
            let mut times = Vec::with_capacity(repeat as usize);
            for _ in 0..repeat {
                let (v, _, per_run) = program.run_repeated(&case.frame, case.interface, 1);
                verdict = v;
                times.push(per_run.as_nanos() as f64);
            }
            times.sort_by(f64::total_cmp);
            (verdict, times[times.len() / 2])
        };
        ensure!(
            verdict == case.verdict,
            "{}: verdict {verdict}, expected {}",
            case.subject,
            case.verdict
        );
        Ok(per_run)
    };
    let calibration = cases
        .iter()
        .find(|case| !case.rewritten)
        .context("a frame that is not rewritten")?;
    let overhead =
        (runs(program, calibration, false)? - runs(program, calibration, true)?).max(0.0);
    let mut measurements = Vec::new();
    for case in cases {
        let mut ns = runs(program, case, !case.rewritten)?;
        let mut note = format!("{} bytes, {repeat} runs", case.frame.len());
        if case.rewritten {
            ns -= overhead;
            note += &format!(", one per call less {overhead:.0} ns of timing");
        }
        measurements
            .push(Measurement::new(SECTION, case.subject, "time per packet", ns, "ns").note(note));
    }
    Ok(measurements)
}
