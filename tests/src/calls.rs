//! Media sessions set up through the daemon's API for lab peers.
use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use sbc::{api::contract::SessionInfo, media::session::Leg};

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
