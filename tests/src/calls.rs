//! Media sessions set up through the daemon's API for lab peers, and the media endpoints of
//! SIP calls set up through the daemon.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sbc::{
    api::contract::SessionInfo,
    events::{CallEnd, CallEnded, Event, Kind},
    media::session::Leg,
    proxy::core::calls::CallState,
};

use crate::{
    daemon::Daemon,
    lab::{CALLEE, CALLER},
    rtp::Call,
};

/// First RTP port of the lab peers (call `i` uses base + 2i, RTCP the next port).
const CALLER_PORT_BASE: u16 = 40000;
const CALLEE_PORT_BASE: u16 = 50000;

/// Creates one session per index, each with announced peers in the caller and callee namespaces
/// (call `i` uses the peers' ports base + 2i, so separate ranges never collide).
pub fn open_calls(
    daemon: &Daemon,
    indices: std::ops::Range<usize>,
    rtcp_mux: bool,
) -> anyhow::Result<Vec<(u32, Call)>> {
    indices
        .map(|i| {
            let offset = 2 * i as u16;
            let caller = SocketAddr::new(IpAddr::V4(CALLER), CALLER_PORT_BASE + offset);
            let callee = SocketAddr::new(IpAddr::V4(CALLEE), CALLEE_PORT_BASE + offset);
            let session: SessionInfo = daemon
                .create_session(caller, callee, rtcp_mux)?
                .expect(201)
                .with_context(|| format!("creating session {i}"))?;
            Ok((
                session.id,
                Call {
                    caller,
                    caller_sends_to: session.legs[Leg::A].local_rtp,
                    callee,
                    callee_sends_to: session.legs[Leg::B].local_rtp,
                    rtcp_mux,
                },
            ))
        })
        .collect()
}

/// Packets relayed so far by path, summed over all sessions and both legs: (kernel, userspace).
pub fn relayed_packets(daemon: &Daemon) -> anyhow::Result<(u64, u64)> {
    let mut totals = (0, 0);
    for session in daemon.sessions()? {
        for leg in &session.legs {
            for stream in std::iter::once(&leg.rtp).chain(&leg.rtcp) {
                totals.0 += stream.kernel_packets;
                totals.1 += stream.userspace_packets;
            }
        }
    }
    Ok(totals)
}

/// The daemon's events once `count` calls placed with SIPp's pcap scenarios have ended
/// (waiting up to 5 s for the last BYEs), each checked: ended by a BYE answered 200, with the
/// pcap's audio both ways (at least 230 of its 236 RTP packets, which the backend echoes).
/// Also returns the share of the calls' RTP relayed in the kernel.
pub fn ended_pcap_calls(daemon: &Daemon, count: usize) -> (Vec<Event>, f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = daemon.events();
    while events.iter().filter_map(CallEnded::of_ref).count() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        events = daemon.events();
    }
    let ended: Vec<&CallEnded> = events.iter().filter_map(CallEnded::of_ref).collect();
    assert_eq!(ended.len(), count, "one end event per call");
    for event in &ended {
        assert_eq!(
            (event.reason, event.final_code),
            (CallEnd::Bye, Some(200)),
            "{event:?}"
        );
        let packets = event.rtp_packets.expect("RTP counted");
        assert!(
            packets.caller_to_callee >= 230 && packets.callee_to_caller >= 230,
            "audio lost: {packets:?} RTP packets in {event:?}"
        );
    }
    let (mut kernel, mut userspace) = (0u64, 0u64);
    for event in &events {
        if let Event::MediaSessionEnded(ended) = event {
            for leg in &ended.session.as_ref().expect("its counters").legs {
                kernel += leg.rtp.kernel_packets;
                userspace += leg.rtp.userspace_packets;
            }
        }
    }
    eprintln!("RTP relayed: {kernel} in the kernel, {userspace} in userspace");
    let share = kernel as f64 / (kernel + userspace).max(1) as f64;
    (events, share)
}

/// Waits (up to `limit`) until the daemon holds `count` calls, all answered; the media
/// endpoints of each, in the daemon's order: call `i`'s peers use the lab's ports base + 2i.
pub fn answered_calls(daemon: &Daemon, count: usize, limit: Duration) -> Vec<Call> {
    answered_calls_of(daemon, count, limit, (CALLER.into(), CALLEE.into()), 0)
}

/// `answered_calls` with the peers at `caller` and `callee`, call `i` of the daemon being the
/// peers' call `first + i` (several daemons' calls, their peers' ports apart).
pub fn answered_calls_of(
    daemon: &Daemon,
    count: usize,
    limit: Duration,
    (caller, callee): (IpAddr, IpAddr),
    first: usize,
) -> Vec<Call> {
    let deadline = Instant::now() + limit;
    let calls = loop {
        let calls = daemon.calls().expect("GET /v1/calls");
        if calls.len() == count && calls.iter().all(|c| c.state == CallState::Answered) {
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "calls not all answered: {calls:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let session = call.media[0].as_ref().expect("the call's media session");
            let port = |base: u16| base + 2 * (first + i) as u16;
            Call {
                caller: SocketAddr::new(caller, port(CALLER_PORT_BASE)),
                caller_sends_to: session.legs[Leg::A].local_rtp,
                callee: SocketAddr::new(callee, port(CALLEE_PORT_BASE)),
                callee_sends_to: session.legs[Leg::B].local_rtp,
                rtcp_mux: false,
            }
        })
        .collect()
}
