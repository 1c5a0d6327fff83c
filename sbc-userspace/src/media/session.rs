//! Media sessions: what is asked for, what is held, and what is reported.
//!
//! A session anchors one media stream between two peers. Each of its two legs ("a" and "b") has
//! a local RTP port (and RTCP on port + 1 unless rtcp-mux is used) on the side's address; what
//! arrives on one leg is relayed out of the other leg's port to that leg's peer.
use std::net::{IpAddr, SocketAddr};

use sbc_common::{
    FlowKey, IpAddress,
    flow::{LEG_A, LEG_B, STREAM_RTCP, STREAM_RTP},
};
use serde::{Deserialize, Serialize};

use super::plane::PeerAnnouncement;
use crate::side::Side;

/// One leg of a session to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegSpec {
    pub side: Side,
    /// Where the peer said it receives (SDP `c=`/`m=`; RTCP on port + 1). Without it (and
    /// without `sip_source`) nothing latches the leg unless `media.latching.policy = "any"`.
    #[serde(default)]
    pub peer: Option<SocketAddr>,
    /// Where the peer's signalling comes from: a NAT'd peer may latch from this address.
    #[serde(default)]
    pub sip_source: Option<IpAddr>,
}

impl LegSpec {
    /// What the spec says about the peer, for latching (`None`: nothing).
    pub fn announcement(&self) -> Option<PeerAnnouncement> {
        self.peer.map(|rtp| PeerAnnouncement {
            rtp,
            rtcp_port: None,
            sip_source: self.sip_source,
        })
    }
}

/// A session to create (the body of `POST /v1/sessions`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// RTP and RTCP share one port (RFC 5761); otherwise RTCP uses port + 1.
    #[serde(default)]
    pub rtcp_mux: bool,
    pub a: LegSpec,
    pub b: LegSpec,
}

/// A leg as held by the media plane.
#[derive(Debug, Clone)]
pub struct Leg {
    pub side: Side,
    pub rtp: SocketAddr,
    pub rtcp: Option<SocketAddr>,
}

impl Leg {
    /// The local ports of this leg with the stream each carries.
    pub fn ports(&self) -> impl Iterator<Item = (u8, SocketAddr)> + '_ {
        std::iter::once((STREAM_RTP, self.rtp)).chain(self.rtcp.map(|rtcp| (STREAM_RTCP, rtcp)))
    }

    pub fn local(&self, stream: u8) -> Option<SocketAddr> {
        if stream == STREAM_RTP {
            Some(self.rtp)
        } else {
            self.rtcp
        }
    }
}

pub fn flow_key(local: SocketAddr) -> FlowKey {
    FlowKey::udp(IpAddress::from(local.ip()), local.port().to_be())
}

pub fn socket_addr(addr: &IpAddress, port_be: u16) -> SocketAddr {
    SocketAddr::new(addr.to_ip(), u16::from_be(port_be))
}

pub const LEG_NAMES: [&str; 2] = ["a", "b"];

pub fn leg_index(leg: u8) -> Option<usize> {
    match leg {
        LEG_A => Some(0),
        LEG_B => Some(1),
        _ => None,
    }
}

/// Counters of packets that arrived on one local port, by the path that relayed them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StreamCounters {
    pub kernel_packets: u64,
    pub kernel_bytes: u64,
    pub userspace_packets: u64,
    pub userspace_bytes: u64,
    /// Dropped because they came from someone other than the latched peer.
    pub foreign_dropped: u64,
    /// Dropped before the leg latched: the source matched nothing signalling says about the
    /// peer (a spray at the port range, for instance).
    pub unsignalled_dropped: u64,
    /// Arrived before the other leg's peer was known, so could not be relayed.
    pub undeliverable: u64,
}

impl StreamCounters {
    pub fn packets(&self) -> u64 {
        self.kernel_packets + self.userspace_packets
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LegInfo {
    pub name: &'static str,
    pub side: Side,
    pub local_rtp: SocketAddr,
    pub local_rtcp: Option<SocketAddr>,
    /// Where this leg's media is sent: the latched source, else the announced address.
    pub peer: Option<SocketAddr>,
    /// Whether the leg's RTP has a peer (locked, or chosen while learning).
    pub latched: bool,
    /// Who latched the leg's RTP, and how it matched signalling.
    pub latch: Option<LatchInfo>,
    /// The same for its RTCP port (none with rtcp-mux).
    pub rtcp_latch: Option<LatchInfo>,
    /// What arrived on this leg (and was relayed to the other).
    pub rtp: StreamCounters,
    pub rtcp: Option<StreamCounters>,
    /// Since RTP last arrived on this leg (`None`: never).
    pub rtp_idle_ms: Option<u64>,
}

/// A latched peer as the API shows it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatchInfo {
    pub peer: SocketAddr,
    /// How it matched signalling: `sdp`, `sdp-address`, `sip-source`, `unchecked` (policy
    /// `any`) or `unknown` (latched by an older daemon).
    pub matched: &'static str,
    /// false while a better-matching source may still replace it.
    pub locked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: u32,
    pub rtcp_mux: bool,
    pub age_ms: u64,
    /// Time since media last arrived on any leg (since creation when none has).
    pub idle_ms: u64,
    pub legs: [LegInfo; 2],
}
