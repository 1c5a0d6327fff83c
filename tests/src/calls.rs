//! Media sessions set up through the daemon's API for lab peers.
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{
    daemon::Daemon,
    lab::{CALLEE, CALLER},
    rtp::Call,
};

/// First RTP port of the lab peers (call `i` uses base + 2i, RTCP the next port).
const CALLER_PORT_BASE: u16 = 40000;
const CALLEE_PORT_BASE: u16 = 50000;

fn local_rtp(session: &Value, leg: usize) -> anyhow::Result<SocketAddr> {
    session["legs"][leg]["local_rtp"]
        .as_str()
        .context("session without local_rtp")?
        .parse()
        .context("bad local_rtp")
}

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
            let response = daemon.create_session(caller, callee, rtcp_mux)?;
            if response.status != 201 {
                bail!(
                    "creating session {i}: HTTP {} {}",
                    response.status,
                    response.body
                );
            }
            let session = response.body;
            let id = session["id"].as_u64().context("session without id")? as u32;
            Ok((
                id,
                Call {
                    caller,
                    caller_sends_to: local_rtp(&session, 0)?,
                    callee,
                    callee_sends_to: local_rtp(&session, 1)?,
                    rtcp_mux,
                },
            ))
        })
        .collect()
}

/// Packets relayed so far by path, summed over all sessions and both legs: (kernel, userspace).
pub fn relayed_packets(daemon: &Daemon) -> anyhow::Result<(u64, u64)> {
    let response = daemon.api.get("/v1/sessions")?;
    let sessions = response.body["sessions"]
        .as_array()
        .context("no sessions in answer")?;
    let mut totals = (0, 0);
    for session in sessions {
        for leg in session["legs"].as_array().into_iter().flatten() {
            for stream in [&leg["rtp"], &leg["rtcp"]] {
                totals.0 += stream["kernel_packets"].as_u64().unwrap_or(0);
                totals.1 += stream["userspace_packets"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(totals)
}
